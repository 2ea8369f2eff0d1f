//! The rollout state machine: creation, check-in decisions, status reports, gates, controls.
//!
//! One [`Rollout`] value is the whole persisted state of one rollout (serde). The server loads
//! it, calls one of the methods below with the current time, and stores it back (in one
//! transaction, holding a row lock if several server nodes share the database):
//!
//! | server event | call |
//! | --- | --- |
//! | admin creates a rollout | [`Rollout::create`] with every registered device |
//! | device checks in | [`Rollout::check_in`] → offer the release's signed manifest, or not |
//! | device reports status | [`Rollout::report`] (failure gates are checked at once) |
//! | every few seconds, per active rollout | [`Rollout::advance`] with ingest's last-seen times |
//! | admin pause / resume / abort | [`Rollout::pause`], [`Rollout::resume`], [`Rollout::abort`] |
//! | status page, CLI | [`Rollout::status`] |

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::assign::{assign, stratum_key, wave_for_late_joiner};
use crate::error::{ControlError, CreateError, ReportError, StateError};
use crate::plan::{FULL, Plan};
use crate::target::{
    DeviceInfo, Ineligible, ReleaseTarget, RolloutKind, TargetFilter, eligibility,
};
use crate::window::{MaintenanceWindow, in_window, next_open, time_zone};

/// Where the telemetry-health gate learns when each device last sent telemetry (ingest's
/// `last_seen`). The server builds one per `advance` call, e.g. a map read from ingest's
/// `GET /v1/gateways`.
pub trait Telemetry {
    /// When the device last sent telemetry, if ever.
    fn last_seen(&self, device: &str) -> Option<Timestamp>;
}

impl Telemetry for std::collections::HashMap<String, Timestamp> {
    fn last_seen(&self, device: &str) -> Option<Timestamp> {
        self.get(device).copied()
    }
}

impl Telemetry for BTreeMap<String, Timestamp> {
    fn last_seen(&self, device: &str) -> Option<Timestamp> {
        self.get(device).copied()
    }
}

/// Gate settings, the same for every wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Pause when more than this share of the devices that reported have failed (basis points).
    pub max_failure_bp: u32,
    /// Reports needed before the rate is judged and before the soak starts (fewer when fewer
    /// reachable devices are in the wave).
    pub min_sample: u32,
    /// After the sample, how long the wave runs before the next may open.
    pub soak: SignedDuration,
    /// The telemetry-health gate; `None` turns it off.
    pub telemetry: Option<TelemetryGate>,
    /// A device with no check-in and no telemetry for this long is offline: it neither counts
    /// toward the sample nor is waited for.
    pub offline_after: SignedDuration,
    /// An offered device without a final report after this long no longer holds a concurrency
    /// slot and is offered again at its next check-in; it is not counted as failed.
    pub install_timeout: SignedDuration,
}

/// Updated units must keep sending telemetry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryGate {
    /// An updated device with no telemetry for this long (counted from its update) is silent.
    pub max_silence: SignedDuration,
    /// Pause when more than this share of updated devices is silent (basis points).
    pub max_silent_bp: u32,
}

impl Gates {
    /// Gates for the weekly plan: 5 % failures, sample 20, 4 h soak, silence > 2 h on > 5 %.
    pub fn weekly() -> Gates {
        Gates {
            max_failure_bp: 500,
            min_sample: 20,
            soak: SignedDuration::from_hours(4),
            telemetry: Some(TelemetryGate {
                max_silence: SignedDuration::from_hours(2),
                max_silent_bp: 500,
            }),
            offline_after: SignedDuration::from_hours(2),
            install_timeout: SignedDuration::from_hours(6),
        }
    }

    /// Gates for the fast plan: 5 % failures, sample 10, 45 min soak, silence > 30 min on > 5 %.
    pub fn fast() -> Gates {
        Gates {
            max_failure_bp: 500,
            min_sample: 10,
            soak: SignedDuration::from_mins(45),
            telemetry: Some(TelemetryGate {
                max_silence: SignedDuration::from_mins(30),
                max_silent_bp: 500,
            }),
            offline_after: SignedDuration::from_hours(1),
            install_timeout: SignedDuration::from_hours(2),
        }
    }

    fn validate(&self) -> Result<(), CreateError> {
        let bad = |why: &str| {
            Err(CreateError::Gates {
                why: why.to_string(),
            })
        };
        if self.max_failure_bp > FULL {
            return bad("max_failure_bp must be at most 10000 (100%)");
        }
        if self.soak.is_negative() || self.offline_after.is_negative() {
            return bad("durations must not be negative");
        }
        if !self.install_timeout.is_positive() || !self.offline_after.is_positive() {
            return bad("install_timeout and offline_after must be positive");
        }
        if let Some(t) = &self.telemetry {
            if t.max_silent_bp > FULL {
                return bad("telemetry.max_silent_bp must be at most 10000 (100%)");
            }
            if !t.max_silence.is_positive() {
                return bad("telemetry.max_silence must be positive");
            }
            if t.max_silence > self.soak {
                return bad(
                    "telemetry.max_silence is longer than the soak, so the gate could not judge the sample before the next wave; raise soak or lower max_silence",
                );
            }
        }
        Ok(())
    }
}

/// Repeatedly failing devices are held back (like NervesHub's penalty box).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PenaltyPolicy {
    /// After a failure, the device is not offered again for this long.
    pub retry_after: SignedDuration,
    /// After this many failures in a row, the device goes into the penalty box.
    pub max_failures: u32,
    /// How long the penalty box lasts.
    pub duration: SignedDuration,
}

impl Default for PenaltyPolicy {
    fn default() -> PenaltyPolicy {
        PenaltyPolicy {
            retry_after: SignedDuration::from_hours(1),
            max_failures: 3,
            duration: SignedDuration::from_hours(24),
        }
    }
}

/// Everything an admin chooses when creating a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The release to install.
    pub release: ReleaseTarget,
    /// Forward or rollback.
    #[serde(default)]
    pub kind: RolloutKind,
    /// The wave plan.
    pub plan: Plan,
    /// Which devices.
    #[serde(default)]
    pub filter: TargetFilter,
    /// Health gates.
    pub gates: Gates,
    /// Maintenance windows in site-local time (empty: any time).
    #[serde(default)]
    pub windows: Vec<MaintenanceWindow>,
    /// Most devices updating at once (offered, no final report yet).
    #[serde(default)]
    pub concurrency_cap: Option<u32>,
    /// The penalty box.
    #[serde(default)]
    pub penalty: PenaltyPolicy,
    /// Tags that define strata besides the hardware revision.
    #[serde(default = "default_strata")]
    pub strata_tags: Vec<String>,
    /// When wave offsets count from (default: creation time).
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
}

fn default_strata() -> Vec<String> {
    vec!["region".to_string()]
}

impl RolloutSpec {
    /// The weekly plan and gates, no windows, no cap, default penalty box.
    pub fn weekly(release: ReleaseTarget) -> RolloutSpec {
        RolloutSpec::with(release, Plan::weekly(), Gates::weekly())
    }

    /// The fast plan and gates.
    pub fn fast(release: ReleaseTarget) -> RolloutSpec {
        RolloutSpec::with(release, Plan::fast(), Gates::fast())
    }

    /// A plan and gates of the caller's choice.
    pub fn with(release: ReleaseTarget, plan: Plan, gates: Gates) -> RolloutSpec {
        RolloutSpec {
            release,
            kind: RolloutKind::Forward,
            plan,
            filter: TargetFilter::default(),
            gates,
            windows: Vec::new(),
            concurrency_cap: None,
            penalty: PenaltyPolicy::default(),
            strata_tags: default_strata(),
            starts_at: None,
        }
    }
}

/// Where a rollout is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waves open as planned.
    Running,
    /// No new offers until resumed.
    Paused {
        /// Why (a tripped gate or an admin).
        reason: PauseReason,
    },
    /// Stopped for good.
    Aborted {
        /// When.
        at: Timestamp,
        /// The admin's note.
        note: String,
    },
    /// Every wave passed its gates. Devices that come online later are still offered the release.
    Done {
        /// When the last wave passed.
        at: Timestamp,
    },
}

impl Phase {
    /// `running`, `paused`, `aborted` or `done`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Paused { .. } => "paused",
            Phase::Aborted { .. } => "aborted",
            Phase::Done { .. } => "done",
        }
    }
}

/// Why a rollout paused: machine-readable (`cause` with `code`) and human ([`std::fmt::Display`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseReason {
    /// When it paused.
    pub at: Timestamp,
    /// The wave whose gate tripped (none for a manual pause).
    pub wave: Option<usize>,
    /// What tripped.
    pub cause: PauseCause,
}

/// What paused a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum PauseCause {
    /// Too many of the devices that reported have failed.
    FailureRate {
        /// Devices whose last report is a failure.
        failed: u32,
        /// Devices with a final report.
        reported: u32,
        /// Devices in the wave (offline ones included).
        wave_size: u32,
        /// The threshold.
        max_failure_bp: u32,
    },
    /// Too many updated devices stopped sending telemetry.
    TelemetrySilent {
        /// Silent updated devices.
        silent: u32,
        /// Updated devices judged (updated longer than `max_silence` ago).
        updated: u32,
        /// The threshold.
        max_silent_bp: u32,
        /// The silence allowed.
        max_silence: SignedDuration,
        /// Up to 10 silent devices, for the operator.
        examples: Vec<String>,
    },
    /// An admin paused it.
    Manual {
        /// The admin's note.
        note: String,
    },
}

impl PauseCause {
    /// `failure_rate`, `telemetry_silent` or `manual`.
    pub fn code(&self) -> &'static str {
        match self {
            PauseCause::FailureRate { .. } => "failure_rate",
            PauseCause::TelemetrySilent { .. } => "telemetry_silent",
            PauseCause::Manual { .. } => "manual",
        }
    }
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let wave = self
            .wave
            .map(|w| format!("wave {}: ", w + 1))
            .unwrap_or_default();
        match &self.cause {
            PauseCause::FailureRate {
                failed,
                reported,
                wave_size,
                max_failure_bp,
            } => write!(
                f,
                "{wave}{failed} of {reported} devices that reported failed (wave of {wave_size}); the limit is {}. Look at the failure reports, then resume or abort",
                crate::plan::format_share(*max_failure_bp)
            ),
            PauseCause::TelemetrySilent {
                silent,
                updated,
                max_silent_bp,
                max_silence,
                examples,
            } => write!(
                f,
                "{wave}{silent} of {updated} updated devices sent no telemetry for {max_silence:#}; the limit is {} (e.g. {}). Check those units, then resume or abort",
                crate::plan::format_share(*max_silent_bp),
                examples.join(", ")
            ),
            PauseCause::Manual { note } => write!(f, "paused by an admin: {note}"),
        }
    }
}

/// The stage of one wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum WaveStage {
    /// Not open yet.
    Pending,
    /// Open, collecting the sample.
    Open {
        /// When it opened.
        opened_at: Timestamp,
    },
    /// Sample complete; soaking.
    Soaking {
        /// When it opened.
        opened_at: Timestamp,
        /// When the sample completed.
        soak_started_at: Timestamp,
    },
    /// Soak complete with every gate passing.
    Passed {
        /// When it opened.
        opened_at: Timestamp,
        /// When it passed.
        passed_at: Timestamp,
    },
}

impl WaveStage {
    /// `pending`, `open`, `soaking`, `passed`.
    pub fn name(&self) -> &'static str {
        match self {
            WaveStage::Pending => "pending",
            WaveStage::Open { .. } => "open",
            WaveStage::Soaking { .. } => "soaking",
            WaveStage::Passed { .. } => "passed",
        }
    }

    /// When the wave opened, if it has.
    pub fn opened_at(&self) -> Option<Timestamp> {
        match *self {
            WaveStage::Pending => None,
            WaveStage::Open { opened_at }
            | WaveStage::Soaking { opened_at, .. }
            | WaveStage::Passed { opened_at, .. } => Some(opened_at),
        }
    }
}

/// Persisted state of one wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveState {
    /// Its stage.
    pub stage: WaveStage,
    /// Failures an admin accepted by resuming after a failure-rate pause.
    pub acked_failed: u32,
    /// Silent devices an admin accepted by resuming after a telemetry pause.
    pub acked_silent: u32,
}

/// Where one device stands in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Not offered yet.
    Waiting,
    /// Offered; no report yet.
    Offered {
        /// When.
        at: Timestamp,
    },
    /// The agent reported progress.
    Installing {
        /// When it was offered.
        offered_at: Timestamp,
        /// The agent's last stage (e.g. `downloading`, `installing`, `rebooting`).
        stage: String,
    },
    /// Updated.
    Succeeded {
        /// When.
        at: Timestamp,
    },
    /// The last attempt failed.
    Failed {
        /// When.
        at: Timestamp,
        /// The agent's reason code.
        code: String,
    },
    /// The last attempt stopped for a reason that is not the release's fault.
    Interrupted {
        /// When.
        at: Timestamp,
        /// The agent's reason code.
        code: String,
    },
}

/// A device's final outcome, kept while a retry is in flight so gates do not forget failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Last final report: success.
    Succeeded,
    /// Last final report: failure.
    Failed,
}

/// Persisted state of one device in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Wave index.
    pub wave: usize,
    /// Stratum key.
    pub stratum: String,
    /// Current status.
    pub status: DeviceStatus,
    /// Last final outcome.
    pub outcome: Option<Outcome>,
    /// Offers made.
    pub attempts: u32,
    /// Failures in a row.
    pub failures_in_row: u32,
    /// In the penalty box until.
    pub penalty_until: Option<Timestamp>,
    /// Last check-in with the OTA server.
    pub last_check_in: Option<Timestamp>,
}

/// What the agent reports (the server maps its protocol's reason codes onto this).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StatusReport {
    /// A step of the update (download, install, reboot).
    Progress {
        /// Stage name.
        stage: String,
    },
    /// Installed and healthy.
    Succeeded,
    /// The release failed on the device: refused, digest mismatch, install failed, health
    /// check failed, rolled back. Counts against the failure gate and toward the penalty box.
    Failed {
        /// Reason code.
        code: String,
    },
    /// The attempt stopped for a reason that says nothing about the release: download failed
    /// (flaky cellular link), no space, a local error. Not counted by the failure gate (it
    /// judges the release), but counted toward the penalty box (which judges the device), and
    /// retried after `retry_after`.
    Interrupted {
        /// Reason code.
        code: String,
    },
}

/// The answer to a check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Offer the release: answer with its signed manifest.
    Offer {
        /// The release to offer.
        release_id: String,
        /// The device's wave.
        wave: usize,
    },
    /// Nothing now.
    Wait {
        /// Why.
        reason: WaitReason,
    },
}

/// Why a device gets nothing at this check-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WaitReason {
    /// Not targeted by this rollout.
    NotTargeted {
        /// Why.
        why: Ineligible,
    },
    /// Already runs the release.
    Updated,
    /// Its wave has not opened.
    WaveNotOpen {
        /// The device's wave.
        wave: usize,
        /// The wave's planned opening (it may open later if an earlier wave is still soaking).
        planned_at: Timestamp,
    },
    /// Outside the site's maintenance windows.
    OutsideWindow {
        /// Next opening, if known.
        next_open: Option<Timestamp>,
    },
    /// Too many devices updating at once.
    ConcurrencyCap {
        /// The cap.
        cap: u32,
    },
    /// Failed too often; held back.
    PenaltyBox {
        /// Until when.
        until: Timestamp,
    },
    /// Failed recently; retry later.
    RetryLater {
        /// Not before.
        at: Timestamp,
    },
    /// The rollout is paused.
    Paused,
    /// The rollout was aborted.
    Aborted,
}

impl WaitReason {
    /// Short stable name.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::NotTargeted { .. } => "not_targeted",
            WaitReason::Updated => "updated",
            WaitReason::WaveNotOpen { .. } => "wave_not_open",
            WaitReason::OutsideWindow { .. } => "outside_window",
            WaitReason::ConcurrencyCap { .. } => "concurrency_cap",
            WaitReason::PenaltyBox { .. } => "penalty_box",
            WaitReason::RetryLater { .. } => "retry_later",
            WaitReason::Paused => "paused",
            WaitReason::Aborted => "aborted",
        }
    }
}

/// Something that happened, for the server's log and event table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RolloutEvent {
    /// A wave opened.
    WaveOpened {
        /// Wave index.
        wave: usize,
        /// When.
        at: Timestamp,
    },
    /// A wave's sample completed; soak started.
    SoakStarted {
        /// Wave index.
        wave: usize,
        /// When.
        at: Timestamp,
    },
    /// A wave passed.
    WavePassed {
        /// Wave index.
        wave: usize,
        /// When.
        at: Timestamp,
    },
    /// A gate tripped and paused the rollout.
    Paused {
        /// Why.
        reason: PauseReason,
    },
    /// Every wave passed.
    Done {
        /// When.
        at: Timestamp,
    },
}

/// Counts for one wave at one instant (for gates, the CLI and the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveCounts {
    /// Devices in the wave.
    pub size: u32,
    /// Devices that reported or are online (checked in or sent telemetry within `offline_after`).
    pub reachable: u32,
    /// Devices offered at least once.
    pub offered: u32,
    /// Offered without a final report, within `install_timeout`.
    pub in_progress: u32,
    /// Offered without a final report for longer than `install_timeout`.
    pub stalled: u32,
    /// Last final report: success.
    pub succeeded: u32,
    /// Last final report: failure.
    pub failed: u32,
    /// In the penalty box now.
    pub penalty_box: u32,
    /// Updated longer than `max_silence` ago (judged by the telemetry gate).
    pub updated_judged: u32,
    /// Of those, silent.
    pub silent: u32,
    /// Reports needed for the sample: `min(min_sample, size)` during the wave's first
    /// `offline_after`, then `min(min_sample, reachable)`.
    pub sample_needed: u32,
}

/// One wave in a status view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveStatus {
    /// Wave index.
    pub index: usize,
    /// Cumulative share of the plan.
    pub share_bp: u32,
    /// Planned opening.
    pub planned_at: Timestamp,
    /// Stage.
    pub stage: WaveStage,
    /// Counts.
    pub counts: WaveCounts,
}

/// A rollout at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// Rollout id.
    pub id: String,
    /// Release.
    pub release_id: String,
    /// Phase (with the pause reason).
    pub phase: Phase,
    /// Waves.
    pub waves: Vec<WaveStatus>,
}

/// The rollout without its devices: small (a few KB), changes at most once per call. With
/// [`Rollout::header`], [`Rollout::device`] and [`Rollout::from_parts`] a server can persist a
/// rollout as one header row plus one row per device, and after a call write only the header
/// and the device the call was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHeader {
    /// Rollout id.
    pub id: String,
    /// What was asked for.
    pub spec: RolloutSpec,
    /// Creation time.
    pub created_at: Timestamp,
    /// When offsets count from.
    pub starts_at: Timestamp,
    /// Phase.
    pub phase: Phase,
    /// Wave states, one per plan wave.
    pub waves: Vec<WaveState>,
}

/// The persisted state of one rollout: the whole of it as one serde value (about 220 bytes of
/// JSON per targeted device), or split with [`Rollout::header`] / [`Rollout::from_parts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    id: String,
    spec: RolloutSpec,
    created_at: Timestamp,
    starts_at: Timestamp,
    phase: Phase,
    waves: Vec<WaveState>,
    devices: BTreeMap<String, DeviceState>,
}

impl Rollout {
    /// Creates a rollout over `fleet` (every registered device; the filter picks the targets)
    /// and assigns the targets to waves. Nothing opens until [`Rollout::advance`].
    pub fn create<'a>(
        id: impl Into<String>,
        spec: RolloutSpec,
        fleet: impl IntoIterator<Item = &'a DeviceInfo>,
        now: Timestamp,
    ) -> Result<Rollout, CreateError> {
        let id = id.into();
        if id.is_empty() {
            return Err(CreateError::EmptyId);
        }
        spec.gates.validate()?;
        if spec.concurrency_cap == Some(0) {
            return Err(CreateError::Gates {
                why: "concurrency_cap 0 would never offer anything; give at least 1, or none for no cap"
                    .into(),
            });
        }
        if spec.penalty.retry_after.is_negative() || spec.penalty.duration.is_negative() {
            return Err(CreateError::Gates {
                why: "penalty durations must not be negative".into(),
            });
        }
        for w in &spec.windows {
            w.validate()?;
        }
        if spec.kind == RolloutKind::Rollback && !spec.release.allow_downgrade {
            return Err(CreateError::DowngradeNotSigned {
                release_id: spec.release.release_id.clone(),
                version: spec.release.version.to_string(),
            });
        }
        let targets: Vec<&DeviceInfo> = fleet
            .into_iter()
            .filter(|d| eligibility(d, &spec.release, spec.kind, &spec.filter).is_ok())
            .collect();
        let assignments = assign(&id, &spec.plan, targets.iter().copied(), &spec.strata_tags);
        let devices = assignments
            .into_iter()
            .map(|(device, a)| (device, DeviceState::new(a.wave, a.stratum)))
            .collect();
        let waves = spec
            .plan
            .waves()
            .iter()
            .map(|_| WaveState {
                stage: WaveStage::Pending,
                acked_failed: 0,
                acked_silent: 0,
            })
            .collect();
        let starts_at = spec.starts_at.unwrap_or(now);
        tracing::info!(rollout = %id, release = %spec.release.release_id, plan = %spec.plan, "rollout created");
        Ok(Rollout {
            id,
            spec,
            created_at: now,
            starts_at,
            phase: Phase::Running,
            waves,
            devices,
        })
    }

    /// The rollout without its devices (for split persistence).
    pub fn header(&self) -> RolloutHeader {
        RolloutHeader {
            id: self.id.clone(),
            spec: self.spec.clone(),
            created_at: self.created_at,
            starts_at: self.starts_at,
            phase: self.phase.clone(),
            waves: self.waves.clone(),
        }
    }

    /// Reassembles a rollout stored as a header and device rows.
    pub fn from_parts(
        header: RolloutHeader,
        devices: impl IntoIterator<Item = (String, DeviceState)>,
    ) -> Result<Rollout, StateError> {
        if header.waves.len() != header.spec.plan.waves().len() {
            return Err(StateError::WaveCount {
                rollout: header.id,
                waves: header.waves.len(),
                plan: header.spec.plan.waves().len(),
            });
        }
        let mut map = BTreeMap::new();
        for (id, d) in devices {
            if d.wave >= header.waves.len() {
                return Err(StateError::DeviceWave {
                    rollout: header.id,
                    device: id,
                    wave: d.wave,
                });
            }
            map.insert(id, d);
        }
        Ok(Rollout {
            id: header.id,
            spec: header.spec,
            created_at: header.created_at,
            starts_at: header.starts_at,
            phase: header.phase,
            waves: header.waves,
            devices: map,
        })
    }

    /// Rollout id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// What was asked for.
    pub fn spec(&self) -> &RolloutSpec {
        &self.spec
    }
    /// Phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }
    /// When it was created.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }
    /// When wave offsets count from.
    pub fn starts_at(&self) -> Timestamp {
        self.starts_at
    }
    /// Wave states.
    pub fn waves(&self) -> &[WaveState] {
        &self.waves
    }
    /// One device's state.
    pub fn device(&self, id: &str) -> Option<&DeviceState> {
        self.devices.get(id)
    }
    /// Every targeted device.
    pub fn devices(&self) -> impl Iterator<Item = (&str, &DeviceState)> {
        self.devices.iter().map(|(k, v)| (k.as_str(), v))
    }
    /// Planned opening of wave `k`.
    pub fn planned_at(&self, wave: usize) -> Timestamp {
        let offset = self.spec.plan.waves()[wave].offset;
        self.starts_at
            .saturating_add(offset)
            .unwrap_or(self.starts_at)
    }
    /// Whether the device is part of this rollout (targeted at creation or joined since), or in
    /// its [`scope`](crate::target::scope) (compatible, hardware revision, tags; whatever version
    /// it runs). A server deciding between rollouts that disagree about a device (a rollback and
    /// a forward rollout to a newer version) asks each whether it covers the device.
    pub fn covers(&self, device: &DeviceInfo) -> bool {
        self.devices.contains_key(&device.id)
            || crate::target::scope(device, &self.spec.release, &self.spec.filter).is_ok()
    }

    /// Whether the rollout still gives offers or may (running, paused or done; not aborted).
    pub fn is_active(&self) -> bool {
        !matches!(self.phase, Phase::Aborted { .. })
    }

    /// A device checks in: returns whether to offer it the release now. Records the check-in
    /// (it tells the gates the device is online) and, on an offer, marks the device offered.
    ///
    /// A check-in that reports the release's version after an offer counts as success even if
    /// the agent's own report was lost. A device not known to the rollout that matches its
    /// filter now (registered later, or reached the filter's version) joins it; its wave is set
    /// by its hash alone (see [`crate::assign`]).
    pub fn check_in(&mut self, device: &DeviceInfo, now: Timestamp) -> Decision {
        let release = &self.spec.release;
        let gates = &self.spec.gates;
        let state = match self.devices.get_mut(&device.id) {
            Some(s) => s,
            None => {
                if let Err(why) = eligibility(device, release, self.spec.kind, &self.spec.filter) {
                    return wait(WaitReason::NotTargeted { why });
                }
                if matches!(self.phase, Phase::Aborted { .. }) {
                    return wait(WaitReason::Aborted);
                }
                let wave = wave_for_late_joiner(&self.id, &self.spec.plan, &device.id);
                let stratum = stratum_key(device, &self.spec.strata_tags);
                tracing::info!(rollout = %self.id, device = %device.id, wave, "device joined rollout");
                self.devices
                    .entry(device.id.clone())
                    .or_insert(DeviceState::new(wave, stratum))
            }
        };
        state.last_check_in = Some(now);
        if device.version.as_ref() == Some(&release.version) {
            // Runs the release after an offer: updated, even if the agent's success report was
            // lost or an interruption it recovered from was reported. Not after a reported
            // failure: a unit whose health check failed still runs the release until the reboot
            // that rolls it back, and a check-in (or ingest's view of it) in that window must
            // not turn the failure into a success. A failed unit counts again once re-offered.
            if matches!(
                state.status,
                DeviceStatus::Offered { .. }
                    | DeviceStatus::Installing { .. }
                    | DeviceStatus::Interrupted { .. }
            ) {
                state.status = DeviceStatus::Succeeded { at: now };
                state.outcome = Some(Outcome::Succeeded);
                state.failures_in_row = 0;
            }
            return wait(WaitReason::Updated);
        }
        // Reported success, but checks in on the side of the release it came from: it fell back
        // to the old slot after the report. Count it as a failure (penalty rules apply). An
        // unknown version, or one beyond the release (a later rollout), is not a fallback.
        let fell_back = device
            .version
            .as_ref()
            .is_some_and(|v| match self.spec.kind {
                RolloutKind::Forward => *v < release.version,
                RolloutKind::Rollback => *v > release.version,
            });
        if fell_back && matches!(state.status, DeviceStatus::Succeeded { .. }) {
            let code = "reverted_after_success".to_string();
            record_failure(state, &self.spec.penalty, now, code, true);
        }
        if let DeviceStatus::Succeeded { .. } = state.status {
            return wait(WaitReason::Updated);
        }
        if matches!(self.phase, Phase::Aborted { .. }) {
            return wait(WaitReason::Aborted);
        }
        let in_flight = match state.status {
            DeviceStatus::Offered { at } => now.duration_since(at) < gates.install_timeout,
            DeviceStatus::Installing { offered_at, .. } => {
                now.duration_since(offered_at) < gates.install_timeout
            }
            _ => false,
        };
        if in_flight {
            // Idempotent: a device polling mid-update (or resuming a download) gets the same
            // offer, even while paused; pausing stops new offers only.
            return Decision::Offer {
                release_id: release.release_id.clone(),
                wave: state.wave,
            };
        }
        if state.status == DeviceStatus::Waiting {
            // Re-check the filter for devices not yet offered (their version may have changed).
            if let Err(why) = eligibility(device, release, self.spec.kind, &self.spec.filter) {
                return wait(WaitReason::NotTargeted { why });
            }
        }
        if let Phase::Paused { .. } = self.phase {
            return wait(WaitReason::Paused);
        }
        let wave = state.wave;
        if self.waves[wave].stage == WaveStage::Pending {
            let offset = self.spec.plan.waves()[wave].offset;
            return wait(WaitReason::WaveNotOpen {
                wave,
                planned_at: self
                    .starts_at
                    .saturating_add(offset)
                    .unwrap_or(self.starts_at),
            });
        }
        if let Some(until) = state.penalty_until
            && now < until
        {
            return wait(WaitReason::PenaltyBox { until });
        }
        if let DeviceStatus::Failed { at, .. } | DeviceStatus::Interrupted { at, .. } = state.status
        {
            let retry_at = at
                .saturating_add(self.spec.penalty.retry_after)
                .unwrap_or(at);
            if now < retry_at {
                return wait(WaitReason::RetryLater { at: retry_at });
            }
        }
        if !self.spec.windows.is_empty() {
            let tz = time_zone(device.time_zone.as_deref()).unwrap_or_else(|e| {
                tracing::warn!(device = %device.id, error = %e, "using UTC for maintenance windows");
                jiff::tz::TimeZone::UTC
            });
            if !in_window(&self.spec.windows, &tz, now) {
                return wait(WaitReason::OutsideWindow {
                    next_open: next_open(&self.spec.windows, &tz, now),
                });
            }
        }
        if let Some(cap) = self.spec.concurrency_cap {
            let busy = self
                .devices
                .values()
                .filter(|d| d.in_flight(now, gates.install_timeout))
                .count();
            if busy >= cap as usize {
                return wait(WaitReason::ConcurrencyCap { cap });
            }
        }
        // Invariant: the entry exists (looked up or inserted above; the borrow was released for
        // the concurrency count).
        let state = self
            .devices
            .get_mut(&device.id)
            .expect("device state exists");
        state.status = DeviceStatus::Offered { at: now };
        state.attempts += 1;
        Decision::Offer {
            release_id: release.release_id.clone(),
            wave,
        }
    }

    /// The agent reports progress or a final result. Failure gates are evaluated at once, so a
    /// bad release pauses at the report that trips the threshold; the returned events say so.
    pub fn report(
        &mut self,
        device: &str,
        report: StatusReport,
        now: Timestamp,
    ) -> Result<Vec<RolloutEvent>, ReportError> {
        let not_offered = || ReportError::NotOffered {
            device: device.to_string(),
            rollout: self.id.clone(),
        };
        let state = self.devices.get_mut(device).ok_or_else(not_offered)?;
        let offered_at = match state.status {
            DeviceStatus::Offered { at } => at,
            DeviceStatus::Installing { offered_at, .. } => offered_at,
            DeviceStatus::Waiting => return Err(not_offered()),
            // A late or repeated final report: apply it, dated now.
            DeviceStatus::Succeeded { at }
            | DeviceStatus::Failed { at, .. }
            | DeviceStatus::Interrupted { at, .. } => at,
        };
        match report {
            StatusReport::Progress { stage } => {
                if matches!(
                    state.status,
                    DeviceStatus::Offered { .. } | DeviceStatus::Installing { .. }
                ) {
                    state.status = DeviceStatus::Installing { offered_at, stage };
                }
            }
            StatusReport::Succeeded => {
                state.status = DeviceStatus::Succeeded { at: now };
                state.outcome = Some(Outcome::Succeeded);
                state.failures_in_row = 0;
            }
            StatusReport::Failed { code } => {
                tracing::info!(rollout = %self.id, device, code = %code, "update failed");
                record_failure(state, &self.spec.penalty, now, code, true);
            }
            StatusReport::Interrupted { code } => {
                tracing::info!(rollout = %self.id, device, code = %code, "update interrupted");
                record_failure(state, &self.spec.penalty, now, code, false);
            }
        }
        Ok(self.evaluate(now, None, false))
    }

    /// Moves the rollout along: evaluates every gate (the telemetry gate with `telemetry`),
    /// pauses on a trip, opens waves whose time has come and whose predecessor passed, starts
    /// and ends soaks. Call it periodically (every few seconds) for each active rollout.
    ///
    /// With `telemetry = None` the telemetry gate cannot be judged: waves then do not pass their
    /// soak while that gate is configured (better stalled than blind).
    pub fn advance(
        &mut self,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
    ) -> Vec<RolloutEvent> {
        self.evaluate(now, telemetry, true)
    }

    /// Pauses by hand.
    pub fn pause(&mut self, note: impl Into<String>, now: Timestamp) -> Result<(), ControlError> {
        match self.phase {
            Phase::Aborted { .. } => Err(ControlError::Aborted {
                id: self.id.clone(),
            }),
            Phase::Paused { .. } => Err(ControlError::AlreadyPaused {
                id: self.id.clone(),
            }),
            Phase::Running | Phase::Done { .. } => {
                self.phase = Phase::Paused {
                    reason: PauseReason {
                        at: now,
                        wave: None,
                        cause: PauseCause::Manual { note: note.into() },
                    },
                };
                tracing::info!(rollout = %self.id, "rollout paused by an admin");
                Ok(())
            }
        }
    }

    /// Resumes a paused rollout. After an automatic pause, the failures and silent devices seen
    /// so far are accepted: the gate trips again only on a *new* failure (or silent device) while
    /// the rate is still above its threshold.
    pub fn resume(
        &mut self,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
    ) -> Result<(), ControlError> {
        match self.phase {
            Phase::Aborted { .. } => Err(ControlError::Aborted {
                id: self.id.clone(),
            }),
            Phase::Running | Phase::Done { .. } => Err(ControlError::NotPaused {
                id: self.id.clone(),
                phase: self.phase.name(),
            }),
            Phase::Paused { .. } => {
                let counts = self.wave_counts(now, telemetry);
                for (w, c) in self.waves.iter_mut().zip(counts) {
                    w.acked_failed = w.acked_failed.max(c.failed);
                    w.acked_silent = w.acked_silent.max(c.silent);
                }
                self.phase = Phase::Running;
                tracing::info!(rollout = %self.id, "rollout resumed");
                Ok(())
            }
        }
    }

    /// Stops the rollout for good: no new offers. Devices already updating finish on their own.
    pub fn abort(&mut self, note: impl Into<String>, now: Timestamp) -> Result<(), ControlError> {
        if let Phase::Aborted { .. } = self.phase {
            return Err(ControlError::Aborted {
                id: self.id.clone(),
            });
        }
        self.phase = Phase::Aborted {
            at: now,
            note: note.into(),
        };
        tracing::info!(rollout = %self.id, "rollout aborted");
        Ok(())
    }

    /// The rollout at a glance.
    pub fn status(&self, now: Timestamp, telemetry: Option<&dyn Telemetry>) -> RolloutStatus {
        RolloutStatus {
            id: self.id.clone(),
            release_id: self.spec.release.release_id.clone(),
            phase: self.phase.clone(),
            waves: self
                .wave_counts(now, telemetry)
                .into_iter()
                .enumerate()
                .map(|(k, counts)| WaveStatus {
                    index: k,
                    share_bp: self.spec.plan.waves()[k].share_bp,
                    planned_at: self.planned_at(k),
                    stage: self.waves[k].stage,
                    counts,
                })
                .collect(),
        }
    }

    /// Counts for wave `k` now.
    pub fn counts(
        &self,
        k: usize,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
    ) -> WaveCounts {
        self.wave_counts(now, telemetry).swap_remove(k)
    }

    /// Counts for every wave now, in one pass over the devices.
    pub fn wave_counts(
        &self,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
    ) -> Vec<WaveCounts> {
        let g = &self.spec.gates;
        let online_since = now.saturating_sub(g.offline_after).unwrap_or(now);
        let mut all = vec![WaveCounts::default(); self.waves.len()];
        for (id, d) in &self.devices {
            let c = &mut all[d.wave];
            c.size += 1;
            let seen = telemetry.and_then(|t| t.last_seen(id));
            let online = d.last_check_in.is_some_and(|t| t >= online_since)
                || seen.is_some_and(|t| t >= online_since);
            if online || d.outcome.is_some() {
                c.reachable += 1;
            }
            if d.attempts > 0 {
                c.offered += 1;
            }
            if matches!(
                d.status,
                DeviceStatus::Offered { .. } | DeviceStatus::Installing { .. }
            ) {
                if d.in_flight(now, g.install_timeout) {
                    c.in_progress += 1;
                } else {
                    c.stalled += 1;
                }
            }
            match d.outcome {
                Some(Outcome::Succeeded) => c.succeeded += 1,
                Some(Outcome::Failed) => c.failed += 1,
                None => {}
            }
            if d.penalty_until.is_some_and(|u| u > now) {
                c.penalty_box += 1;
            }
            if telemetry.is_some()
                && let Some(silent) = self.telemetry_verdict(d, seen, now)
            {
                c.updated_judged += 1;
                c.silent += u32::from(silent);
            }
        }
        for (k, c) in all.iter_mut().enumerate() {
            // Until the wave has been open for `offline_after`, devices that are online may
            // simply not have checked in yet: the sample is then the full `min_sample` (or the
            // whole wave if smaller). After that, whoever has not been heard from is offline and
            // is not waited for.
            let settled = self.waves[k]
                .stage
                .opened_at()
                .is_some_and(|t| now.duration_since(t) >= g.offline_after);
            c.sample_needed = if settled {
                g.min_sample.min(c.reachable)
            } else {
                g.min_sample.min(c.size)
            };
        }
        all
    }

    /// The telemetry gate's view of one device: `None` when it is not judged now, else whether
    /// it is silent. A device is judged from `max_silence` after its update until `max_silence +
    /// soak` after it ("keeps reporting through the soak"); later outages are not blamed on the
    /// update.
    fn telemetry_verdict(
        &self,
        d: &DeviceState,
        seen: Option<Timestamp>,
        now: Timestamp,
    ) -> Option<bool> {
        let tg = self.spec.gates.telemetry.as_ref()?;
        let DeviceStatus::Succeeded { at } = d.status else {
            return None;
        };
        let since_update = now.duration_since(at);
        if since_update < tg.max_silence
            || since_update > tg.max_silence.saturating_add(self.spec.gates.soak)
        {
            return None;
        }
        let quiet_since = now.saturating_sub(tg.max_silence).unwrap_or(now);
        Some(seen.is_none_or(|t| t < quiet_since))
    }

    fn silent_examples(&self, k: usize, now: Timestamp, telemetry: &dyn Telemetry) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, d)| d.wave == k)
            .filter(|(id, d)| self.telemetry_verdict(d, telemetry.last_seen(id), now) == Some(true))
            .map(|(id, _)| id.clone())
            .take(10)
            .collect()
    }

    /// The gate check for wave `k`: the cause if it trips.
    fn gate(
        &self,
        k: usize,
        c: &WaveCounts,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
    ) -> Option<PauseCause> {
        let g = &self.spec.gates;
        let ack = &self.waves[k];
        // Failure rate over the devices that reported, once the sample is in; or earlier, as soon
        // as the failures exceed the threshold of the whole wave (no outcome of the rest could
        // bring the rate back under it).
        let over = |bad: u32, of: u32, bp: u32| bad as u64 * FULL as u64 > bp as u64 * of as u64;
        let reported = c.succeeded + c.failed;
        if c.failed > ack.acked_failed
            && ((reported >= c.sample_needed.max(1) && over(c.failed, reported, g.max_failure_bp))
                || over(c.failed, c.size, g.max_failure_bp))
        {
            return Some(PauseCause::FailureRate {
                failed: c.failed,
                reported,
                wave_size: c.size,
                max_failure_bp: g.max_failure_bp,
            });
        }
        if let (Some(tg), Some(t)) = (&g.telemetry, telemetry)
            && c.silent > ack.acked_silent
            && ((c.updated_judged >= c.sample_needed.max(1)
                && over(c.silent, c.updated_judged, tg.max_silent_bp))
                || over(c.silent, c.size, tg.max_silent_bp))
        {
            return Some(PauseCause::TelemetrySilent {
                silent: c.silent,
                updated: c.updated_judged,
                max_silent_bp: tg.max_silent_bp,
                max_silence: tg.max_silence,
                examples: self.silent_examples(k, now, t),
            });
        }
        None
    }

    fn evaluate(
        &mut self,
        now: Timestamp,
        telemetry: Option<&dyn Telemetry>,
        progress: bool,
    ) -> Vec<RolloutEvent> {
        let mut events = Vec::new();
        if matches!(self.phase, Phase::Aborted { .. }) {
            return events;
        }
        let counts = self.wave_counts(now, telemetry);
        // Gates: every opened wave, also after it passed (late failures still count).
        if !matches!(self.phase, Phase::Paused { .. }) {
            for (k, c) in counts.iter().enumerate() {
                if self.waves[k].stage == WaveStage::Pending {
                    continue;
                }
                if let Some(cause) = self.gate(k, c, now, telemetry) {
                    let reason = PauseReason {
                        at: now,
                        wave: Some(k),
                        cause,
                    };
                    tracing::warn!(rollout = %self.id, code = reason.cause.code(), "{reason}");
                    self.phase = Phase::Paused {
                        reason: reason.clone(),
                    };
                    events.push(RolloutEvent::Paused { reason });
                    break;
                }
            }
        }
        if !progress || self.phase != Phase::Running {
            return events;
        }
        let telemetry_blind = self.spec.gates.telemetry.is_some() && telemetry.is_none();
        for (k, c) in counts.iter().enumerate() {
            match self.waves[k].stage {
                WaveStage::Pending => {
                    let previous_passed =
                        k == 0 || matches!(self.waves[k - 1].stage, WaveStage::Passed { .. });
                    if previous_passed && now >= self.planned_at(k) {
                        self.waves[k].stage = WaveStage::Open { opened_at: now };
                        tracing::info!(rollout = %self.id, wave = k, "wave opened");
                        events.push(RolloutEvent::WaveOpened { wave: k, at: now });
                    } else {
                        break;
                    }
                }
                WaveStage::Open { opened_at } => {
                    if c.succeeded + c.failed >= c.sample_needed {
                        self.waves[k].stage = WaveStage::Soaking {
                            opened_at,
                            soak_started_at: now,
                        };
                        events.push(RolloutEvent::SoakStarted { wave: k, at: now });
                    }
                    break;
                }
                WaveStage::Soaking {
                    opened_at,
                    soak_started_at,
                } => {
                    let soaked = now.duration_since(soak_started_at) >= self.spec.gates.soak;
                    if soaked && !telemetry_blind {
                        self.waves[k].stage = WaveStage::Passed {
                            opened_at,
                            passed_at: now,
                        };
                        tracing::info!(rollout = %self.id, wave = k, "wave passed");
                        events.push(RolloutEvent::WavePassed { wave: k, at: now });
                        // Fall through to the next wave in this same call.
                    } else {
                        break;
                    }
                }
                WaveStage::Passed { .. } => {}
            }
            // A wave that just opened may also have its sample at once (e.g. all offline).
            if let WaveStage::Open { opened_at } = self.waves[k].stage {
                if c.sample_needed == 0 {
                    self.waves[k].stage = WaveStage::Soaking {
                        opened_at,
                        soak_started_at: now,
                    };
                    events.push(RolloutEvent::SoakStarted { wave: k, at: now });
                }
                break;
            }
        }
        if self
            .waves
            .iter()
            .all(|w| matches!(w.stage, WaveStage::Passed { .. }))
        {
            self.phase = Phase::Done { at: now };
            tracing::info!(rollout = %self.id, "rollout done");
            events.push(RolloutEvent::Done { at: now });
        }
        events
    }
}

impl DeviceState {
    fn new(wave: usize, stratum: String) -> DeviceState {
        DeviceState {
            wave,
            stratum,
            status: DeviceStatus::Waiting,
            outcome: None,
            attempts: 0,
            failures_in_row: 0,
            penalty_until: None,
            last_check_in: None,
        }
    }

    fn in_flight(&self, now: Timestamp, timeout: SignedDuration) -> bool {
        match self.status {
            DeviceStatus::Offered { at } => now.duration_since(at) < timeout,
            DeviceStatus::Installing { offered_at, .. } => now.duration_since(offered_at) < timeout,
            _ => false,
        }
    }
}

/// A failed (`release_fault`) or interrupted attempt: both count toward the penalty box; only a
/// failure is the release's outcome on this device.
fn record_failure(
    state: &mut DeviceState,
    penalty: &PenaltyPolicy,
    now: Timestamp,
    code: String,
    release_fault: bool,
) {
    if release_fault {
        state.status = DeviceStatus::Failed { at: now, code };
        state.outcome = Some(Outcome::Failed);
    } else {
        state.status = DeviceStatus::Interrupted { at: now, code };
    }
    state.failures_in_row += 1;
    if state.failures_in_row >= penalty.max_failures.max(1) {
        state.penalty_until = Some(now.saturating_add(penalty.duration).unwrap_or(now));
        state.failures_in_row = 0;
    }
}

fn wait(reason: WaitReason) -> Decision {
    Decision::Wait { reason }
}
