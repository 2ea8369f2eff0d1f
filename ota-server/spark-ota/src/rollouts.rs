//! Rollouts: the `spark-rollout` engine wired into the server.
//!
//! The engine decides; this module feeds it and keeps its state:
//!
//! | server event | engine call |
//! | --- | --- |
//! | `POST /v1/rollouts` | `Rollout::create` over every registered device, then `advance` (wave 1 opens) |
//! | device check-in, push round | `Rollout::check_in` → offer the signed manifest, or not |
//! | agent status report | `Rollout::report` (reason codes mapped by [`engine_report`]) |
//! | tick every `[rollouts] tick-secs` | `Rollout::advance` with ingest's last-seen times |
//! | pause / resume / abort | `Rollout::pause` / `resume` / `abort` |
//! | `GET /v1/rollouts[/{id}]`, CLI | `Rollout::status` |
//!
//! **State.** Each rollout's engine state is stored split: the header (spec, phase, waves) in
//! `rollouts.engine` and one row per device in `rollout_devices`; a call writes the header, the
//! rows of the devices it touched and its events in one transaction, conditional on the row's
//! `revision` (optimistic concurrency: with several server nodes on one database, a write based
//! on stale state fails and is retried on fresh state). Each node caches the state it last read
//! or wrote and reloads it only when the revision moved.
//!
//! **Server-side rules kept around the engine**: a yanked or expired release is offered to
//! nobody; a device that never told its `compatible` is taken to have the release's (the agent
//! checks the signed manifest's `compatible` itself); where a rollback and a forward rollout to
//! a newer version both cover a device, only the one created later is asked
//! ([`Rollouts::offer_for`]; otherwise the device would go back and forth between them).
//!
//! **Times.** The engine runs on the [`ServerClock`] (real by default); the database columns
//! `created_at`/`updated_at` stay real unix seconds; events carry the engine's time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex as SyncMutex, RwLock};

use serde::{Deserialize, Serialize};
use spark_dbus::report::Reason;
use spark_release::{SignedRelease, Version};
use spark_rollout::jiff::{SignedDuration, Timestamp};
use spark_rollout::{
    ControlError, Decision, DeviceInfo, Gates, MaintenanceWindow, PenaltyPolicy, Phase, Plan,
    ReleaseTarget, Rollout, RolloutEvent, RolloutHeader, RolloutKind, RolloutSpec,
    StatusReport as EngineReport, TargetFilter, TelemetryGate, WaitReason, WaveStage,
};
use tokio::sync::Notify;

use crate::clock::ServerClock;
use crate::error::StoreError;
use crate::store::{DeviceRecord, EngineWrite, ReleaseRecord, RolloutRecord, Store};
use crate::telemetry::{LastSeen, TelemetrySource};

/// Why a rollout operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no rollout {0:?}: list them with `spark-ota rollout status`")]
    NotFound(String),
    #[error("no release {0}: list them with `spark-ota release list`")]
    ReleaseNotFound(i64),
    #[error("release {0} is yanked: roll out another release")]
    ReleaseYanked(i64),
    #[error("a rollout {0:?} exists already: choose another --id")]
    Exists(String),
    #[error("rollout {id} is {state}: cannot {action} it")]
    BadTransition {
        id: String,
        state: String,
        action: &'static str,
    },
    #[error("rollout id {0:?} must be 1-64 characters of letters, digits, '-', '_' or '.'")]
    BadId(String),
    /// The request asks for something that cannot be done (bad plan, gates, window, time zone).
    #[error("{0}")]
    Invalid(String),
    /// The stored engine state cannot be read.
    #[error("stored state of rollout {id} is unusable: {why}")]
    Corrupt { id: String, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A release offered to a device, and the rollout offering it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub release: ReleaseRecord,
    pub rollout: String,
    /// The device's wave (0-based).
    pub wave: usize,
}

/// The engine's view of an agent report: `None` for reports that say nothing about an update
/// (poll, up to date).
pub fn engine_report(reason: Reason, stage: &str) -> Option<EngineReport> {
    use Reason::*;
    Some(match reason {
        Committed => EngineReport::Succeeded,
        ReleaseRejected | DigestMismatch | InstallFailed | HealthFailed | RolledBack => {
            EngineReport::Failed {
                code: reason.as_str().to_owned(),
            }
        }
        DownloadFailed | NoSpace | Internal => EngineReport::Interrupted {
            code: reason.as_str().to_owned(),
        },
        Offered | Downloaded | Verified | Installed | Booted | Healthy | Resumed => {
            EngineReport::Progress {
                stage: stage.to_owned(),
            }
        }
        Poll | UpToDate => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Creating a rollout: what an admin asks for.

/// `POST /v1/rollouts`. Only `release` is required: the default plan is `immediate` (one wave of
/// 100 %, opened at once) with the `fast` gates.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRollout {
    pub release: i64,
    /// Default `COMPATIBLE-VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"weekly"`, `"fast"`, `"immediate"`, a plan text (`"1%@0d,10%@1d,100%@3d"`) or a plan
    /// object (`{"name": "…", "waves": [{"share_bp": 100, "offset": "PT0S"}, …]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    /// `forward` (default) or `rollback` (needs a manifest signed as an allowed downgrade).
    #[serde(default)]
    pub kind: RolloutKind,
    /// Hardware revisions, tags, current version.
    #[serde(default)]
    pub filter: TargetFilter,
    /// Gate settings; absent ones come from the plan's preset.
    #[serde(default)]
    pub gates: GatesRequest,
    /// Maintenance windows in each site's local time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<MaintenanceWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_cap: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty: Option<PenaltyPolicy>,
    /// Tags that stratify the wave assignment besides the hardware revision (default `region`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strata_tags: Option<Vec<String>>,
    /// When wave offsets count from (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
}

/// Gate settings, each optional (the plan's preset fills the rest: `weekly` plans get
/// `Gates::weekly()`, others `Gates::fast()`). `telemetry: null` turns the telemetry gate off;
/// absent, it is on when the server can read ingest's last-seen times (`[push]` configured).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatesRequest {
    /// `weekly` or `fast`: the base the other fields override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failure_bp: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sample: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SignedDuration>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub telemetry: Option<Option<TelemetryGate>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_after: Option<SignedDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_timeout: Option<SignedDuration>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The default plan: one wave of the whole matching fleet, opened at once.
pub fn immediate_plan() -> Plan {
    // Invariant: one wave of 100 % at offset 0 is a valid plan.
    Plan::custom(
        "immediate",
        vec![spark_rollout::Wave {
            share_bp: 10_000,
            offset: SignedDuration::ZERO,
        }],
    )
    .expect("a one-wave plan of 100% is valid")
}

fn parse_plan(v: Option<&serde_json::Value>) -> Result<Plan, RolloutError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(immediate_plan()),
        Some(serde_json::Value::String(s)) if s.trim() == "immediate" => Ok(immediate_plan()),
        Some(serde_json::Value::String(s)) => Plan::parse(s)
            .map_err(|e| RolloutError::Invalid(format!("plan {s:?}: {e}"))),
        Some(other) => serde_json::from_value(other.clone()).map_err(|e| {
            RolloutError::Invalid(format!(
                "plan: {e}; give weekly, fast, immediate, a text like 1%@0d,10%@1d,100%@3d or {{\"name\",\"waves\":[{{\"share_bp\",\"offset\"}}]}}"
            ))
        }),
    }
}

fn gates(req: &GatesRequest, plan: &Plan, telemetry_known: bool) -> Result<Gates, RolloutError> {
    let mut g = match req.preset.as_deref() {
        Some("weekly") => Gates::weekly(),
        Some("fast") => Gates::fast(),
        None if plan.name() == "weekly" => Gates::weekly(),
        None => Gates::fast(),
        Some(other) => {
            return Err(RolloutError::Invalid(format!(
                "gates.preset {other:?}: use weekly or fast"
            )));
        }
    };
    if let Some(v) = req.max_failure_bp {
        g.max_failure_bp = v;
    }
    if let Some(v) = req.min_sample {
        g.min_sample = v;
    }
    if let Some(v) = req.soak {
        g.soak = v;
    }
    if let Some(v) = req.offline_after {
        g.offline_after = v;
    }
    if let Some(v) = req.install_timeout {
        g.install_timeout = v;
    }
    match &req.telemetry {
        Some(Some(_)) if !telemetry_known => {
            return Err(RolloutError::Invalid(
                "a telemetry gate needs ingest's last-seen times, and this server has no [push] ingest-url configured; configure it or send \"telemetry\": null".into(),
            ));
        }
        Some(t) => g.telemetry = t.clone(),
        None if !telemetry_known => g.telemetry = None,
        None => {}
    }
    Ok(g)
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What the engine knows of a device, for a rollout of `release`.
pub fn device_info(d: &DeviceRecord, release: &ReleaseRecord) -> DeviceInfo {
    DeviceInfo {
        id: d.device.clone(),
        // Unknown: taken to be the release's; the agent checks the signed manifest's compatible.
        compatible: d
            .compatible
            .clone()
            .unwrap_or_else(|| release.compatible.clone()),
        hardware_rev: d.hardware_rev.clone().unwrap_or_default(),
        tags: d.tags.clone(),
        version: d
            .current_version
            .as_deref()
            .and_then(|v| Version::parse(v).ok()),
        time_zone: d.time_zone.clone(),
    }
}

/// A release usable for offers now (not yanked, manifest not expired; real time).
fn offerable(release: &ReleaseRecord) -> bool {
    release.yanked_at.is_none() && release.expires_at > crate::now()
}

// ---------------------------------------------------------------------------------------------
// Status views

/// Progress of one wave.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WaveStatus {
    /// Cumulative share of the eligible fleet, whole percent (see `share_bp`).
    pub share: u32,
    /// Cumulative share in basis points (1 % = 100).
    #[serde(default)]
    pub share_bp: u32,
    /// Devices assigned to the wave.
    pub devices: u64,
    /// Offered the release at least once (check-in answer or push).
    pub offered: u64,
    /// Last final report: success.
    pub updated: u64,
    /// Last final report: failure.
    pub failed: u64,
    /// `pending`, `open`, `soaking`, `passed`.
    #[serde(default)]
    pub stage: String,
    /// Planned opening (engine time).
    #[serde(default)]
    pub planned_at: Option<Timestamp>,
    #[serde(default)]
    pub opened_at: Option<Timestamp>,
    /// Reported, or heard from recently (offline devices are not counted).
    #[serde(default)]
    pub reachable: u64,
    #[serde(default)]
    pub in_progress: u64,
    #[serde(default)]
    pub stalled: u64,
    #[serde(default)]
    pub penalty_box: u64,
    /// Updated devices silent on telemetry (of `silent_judged`).
    #[serde(default)]
    pub silent: u64,
    #[serde(default)]
    pub silent_judged: u64,
    /// Reports needed before the failure rate is judged and the soak starts.
    #[serde(default)]
    pub sample_needed: u64,
    /// Failed / reported, basis points (none before any report).
    #[serde(default)]
    pub failure_rate_bp: Option<u32>,
    /// The gate's state in words: `tripped: …`, `collecting sample 3/10`, `soaking until …`, …
    #[serde(default)]
    pub gate: String,
}

/// A rollout with its release and per-wave progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub id: String,
    /// `active`, `paused`, `aborted` or `done`.
    pub state: String,
    /// Why it is paused or aborted, in words.
    pub reason: Option<String>,
    pub release: i64,
    pub compatible: String,
    pub version: String,
    pub waves: Vec<WaveStatus>,
    /// Bytes of the bundle served under this rollout.
    pub bytes_served: i64,
    /// The plan, as text.
    #[serde(default)]
    pub plan: String,
    /// `forward` or `rollback`.
    #[serde(default)]
    pub kind: String,
    /// The engine's phase with the machine-readable pause reason (`reason.cause.code`).
    #[serde(default)]
    pub phase: Option<Phase>,
    /// The gates in force.
    #[serde(default)]
    pub gates: Option<Gates>,
    /// The rollout clock's now (a compressed clock runs ahead of real time).
    #[serde(default)]
    pub now: Option<Timestamp>,
}

fn state_name(phase: &Phase) -> &'static str {
    match phase {
        Phase::Running => "active",
        Phase::Paused { .. } => "paused",
        Phase::Aborted { .. } => "aborted",
        Phase::Done { .. } => "done",
    }
}

fn phase_reason(phase: &Phase) -> Option<String> {
    match phase {
        Phase::Paused { reason } => Some(reason.to_string()),
        Phase::Aborted { note, .. } => Some(note.clone()),
        _ => None,
    }
}

fn wave_views(r: &Rollout, now: Timestamp, telemetry: Option<&LastSeen>) -> Vec<WaveStatus> {
    let tel = telemetry.map(|t| t as &dyn spark_rollout::Telemetry);
    let status = r.status(now, tel);
    let tripped = match r.phase() {
        Phase::Paused { reason } => reason.wave.map(|w| (w, reason.to_string())),
        _ => None,
    };
    let soak = r.spec().gates.soak;
    status
        .waves
        .iter()
        .map(|w| {
            let c = &w.counts;
            let reported = c.succeeded + c.failed;
            let gate = match (&tripped, w.stage) {
                (Some((k, why)), _) if *k == w.index => format!("tripped: {why}"),
                (_, WaveStage::Pending) => format!("pending until {}", w.planned_at),
                (_, WaveStage::Open { .. }) => {
                    format!("collecting sample {reported}/{}", c.sample_needed)
                }
                (
                    _,
                    WaveStage::Soaking {
                        soak_started_at, ..
                    },
                ) => format!(
                    "soaking until {}",
                    soak_started_at
                        .saturating_add(soak)
                        .unwrap_or(soak_started_at)
                ),
                (_, WaveStage::Passed { passed_at, .. }) => format!("passed at {passed_at}"),
            };
            WaveStatus {
                share: w.share_bp / 100,
                share_bp: w.share_bp,
                devices: c.size.into(),
                offered: c.offered.into(),
                updated: c.succeeded.into(),
                failed: c.failed.into(),
                stage: w.stage.name().to_owned(),
                planned_at: Some(w.planned_at),
                opened_at: w.stage.opened_at(),
                reachable: c.reachable.into(),
                in_progress: c.in_progress.into(),
                stalled: c.stalled.into(),
                penalty_box: c.penalty_box.into(),
                silent: c.silent.into(),
                silent_judged: c.updated_judged.into(),
                sample_needed: c.sample_needed.into(),
                failure_rate_bp: (reported > 0)
                    .then(|| (u64::from(c.failed) * 10_000 / u64::from(reported)) as u32),
                gate,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The engine driver

/// Manual state changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Abort,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// What a call changed: which device rows to write, and the events.
#[derive(Debug, Default)]
struct Change {
    changed: bool,
    devices: Vec<String>,
    events: Vec<RolloutEvent>,
}

#[derive(Debug)]
struct Cached {
    revision: i64,
    rollout: Rollout,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The rollouts of this server: engine state in the database, cached per rollout, one call at a
/// time per rollout on this node.
pub struct Rollouts {
    store: Store,
    clock: ServerClock,
    telemetry: Option<Arc<dyn TelemetrySource>>,
    /// The last telemetry read by the tick (status views and resume use it).
    last_telemetry: RwLock<Option<Arc<LastSeen>>>,
    slots: SyncMutex<HashMap<String, Slot>>,
    /// Woken when a wave opens or a rollout is created or resumed (the push task).
    push_wake: Arc<Notify>,
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts")
            .field("clock", &self.clock)
            .field("telemetry", &self.telemetry)
            .finish_non_exhaustive()
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default)]
pub struct TickReport {
    /// (rollout, event) for every engine event.
    pub events: Vec<(String, RolloutEvent)>,
    /// Telemetry could not be read (the telemetry gate then holds waves in their soak).
    pub telemetry_error: Option<String>,
}

impl Rollouts {
    pub fn new(
        store: Store,
        clock: ServerClock,
        telemetry: Option<Arc<dyn TelemetrySource>>,
        push_wake: Arc<Notify>,
    ) -> Rollouts {
        Rollouts {
            store,
            clock,
            telemetry,
            last_telemetry: RwLock::new(None),
            slots: SyncMutex::new(HashMap::new()),
            push_wake,
        }
    }

    /// The clock rollouts run on.
    pub fn clock(&self) -> &ServerClock {
        &self.clock
    }

    fn slot(&self, id: &str) -> Slot {
        // A poisoned lock only means a panic elsewhere mid-insert of a map entry.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(id.to_owned()).or_default().clone()
    }

    fn telemetry_snapshot(&self) -> Option<Arc<LastSeen>> {
        self.last_telemetry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn load(&self, id: &str) -> Result<Cached, RolloutError> {
        let corrupt = |why: String| RolloutError::Corrupt {
            id: id.to_owned(),
            why,
        };
        let stored = self
            .store
            .rollout_engine(id)
            .await?
            .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
        let Some(header) = stored.header else {
            return Err(corrupt(
                "it was created before the rollout engine (and aborted by migration 3); create a new rollout".into(),
            ));
        };
        let header: RolloutHeader =
            serde_json::from_str(&header).map_err(|e| corrupt(e.to_string()))?;
        let mut devices = Vec::with_capacity(stored.devices.len());
        for (device, state) in stored.devices {
            let state = serde_json::from_str(&state)
                .map_err(|e| corrupt(format!("device {device}: {e}")))?;
            devices.push((device, state));
        }
        let rollout = Rollout::from_parts(header, devices).map_err(|e| corrupt(e.to_string()))?;
        Ok(Cached {
            revision: stored.revision,
            rollout,
        })
    }

    /// Runs `f` on the current state of rollout `id` and stores what it changed, retrying on
    /// fresh state when another node wrote first.
    async fn with_rollout<T>(
        &self,
        id: &str,
        mut f: impl FnMut(&mut Rollout, Timestamp) -> Result<(T, Change), RolloutError>,
    ) -> Result<T, RolloutError> {
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        for _attempt in 0..5 {
            let revision = self
                .store
                .rollout_revision(id)
                .await?
                .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
            if guard.as_ref().map(|c| c.revision) != Some(revision) {
                *guard = Some(self.load(id).await?);
            }
            // Invariant: set just above when missing or stale.
            let cached = guard.as_mut().expect("cached rollout");
            let now = self.clock.now();
            let (out, change) = match f(&mut cached.rollout, now) {
                Ok(v) => v,
                Err(e) => {
                    // `f` may have changed the cached state before failing: read it afresh.
                    *guard = None;
                    return Err(e);
                }
            };
            if !change.changed {
                return Ok(out);
            }
            let r = &cached.rollout;
            let header = serde_json::to_string(&r.header()).map_err(|e| RolloutError::Corrupt {
                id: id.to_owned(),
                why: e.to_string(),
            })?;
            let mut devices = Vec::with_capacity(change.devices.len());
            for d in &change.devices {
                if let Some(s) = r.device(d) {
                    let json = serde_json::to_string(s).map_err(|e| RolloutError::Corrupt {
                        id: id.to_owned(),
                        why: e.to_string(),
                    })?;
                    devices.push((d.clone(), json));
                }
            }
            let events: Vec<(i64, String)> = change
                .events
                .iter()
                .map(|e| {
                    (
                        event_time(e).unwrap_or(now).as_second(),
                        serde_json::to_string(e).unwrap_or_default(),
                    )
                })
                .collect();
            let reason = phase_reason(r.phase());
            let write = EngineWrite {
                id,
                revision,
                state: state_name(r.phase()),
                reason: reason.as_deref(),
                header: &header,
                devices: &devices,
                events: &events,
            };
            match self.store.save_rollout_engine(&write, crate::now()).await {
                Ok(true) => {
                    cached.revision = revision + 1;
                    self.after_events(id, &change.events);
                    return Ok(out);
                }
                Ok(false) => {
                    tracing::debug!(rollout = %id, "rollout changed on another node; retrying on fresh state");
                    *guard = None;
                }
                Err(e) => {
                    *guard = None;
                    return Err(e.into());
                }
            }
        }
        Err(RolloutError::Store(StoreError::Corrupt {
            what: "rollout revision (changed under every retry)",
            value: id.to_owned(),
        }))
    }

    fn after_events(&self, id: &str, events: &[RolloutEvent]) {
        for e in events {
            match e {
                RolloutEvent::WaveOpened { wave, at } => {
                    tracing::info!(rollout = %id, wave = wave + 1, %at, "wave opened");
                    self.push_wake.notify_one();
                }
                RolloutEvent::SoakStarted { wave, at } => {
                    tracing::info!(rollout = %id, wave = wave + 1, %at, "wave sample complete, soak started");
                }
                RolloutEvent::WavePassed { wave, at } => {
                    tracing::info!(rollout = %id, wave = wave + 1, %at, "wave passed");
                }
                RolloutEvent::Paused { reason } => {
                    tracing::warn!(rollout = %id, code = reason.cause.code(), "rollout paused: {reason}");
                }
                RolloutEvent::Done { at } => tracing::info!(rollout = %id, %at, "rollout done"),
            }
        }
    }

    /// Creates a rollout over every registered device and opens its first wave(s).
    pub async fn create(&self, req: &CreateRollout) -> Result<RolloutRecord, RolloutError> {
        let release = self
            .store
            .release(req.release)
            .await?
            .ok_or(RolloutError::ReleaseNotFound(req.release))?;
        if release.yanked_at.is_some() {
            return Err(RolloutError::ReleaseYanked(req.release));
        }
        let id = req
            .id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", release.compatible, release.version));
        if !valid_id(&id) {
            return Err(RolloutError::BadId(id));
        }
        let signed = release.signed.as_deref().unwrap_or_default();
        // The signature was verified when the release was uploaded; only its facts are read here.
        let manifest = SignedRelease::from_json(signed).map_err(|e| RolloutError::Corrupt {
            id: id.clone(),
            why: format!("release {} manifest: {e}", release.id),
        })?;
        let plan = parse_plan(req.plan.as_ref())?;
        let gates = gates(&req.gates, &plan, self.telemetry.is_some())?;
        for d in &req.filter.hardware_revs {
            if d.is_empty() {
                return Err(RolloutError::Invalid(
                    "filter.hardware_revs holds an empty name".into(),
                ));
            }
        }
        let mut spec = RolloutSpec::with(
            ReleaseTarget::from_verified_manifest(release.id.to_string(), manifest.manifest()),
            plan,
            gates,
        );
        spec.kind = req.kind;
        spec.filter = req.filter.clone();
        spec.windows = req.windows.clone();
        spec.concurrency_cap = req.concurrency_cap;
        if let Some(p) = &req.penalty {
            spec.penalty = p.clone();
        }
        if let Some(s) = &req.strata_tags {
            spec.strata_tags = s.clone();
        }
        spec.starts_at = req.starts_at;
        let fleet: Vec<DeviceInfo> = self
            .store
            .devices()
            .await?
            .iter()
            .map(|d| device_info(d, &release))
            .collect();
        for d in &fleet {
            if let Some(tz) = &d.time_zone
                && spark_rollout::window::time_zone(Some(tz)).is_err()
            {
                tracing::warn!(device = %d.id, time_zone = %tz, "unknown time zone: maintenance windows use UTC for this device");
            }
        }
        let now = self.clock.now();
        let mut rollout = Rollout::create(id.clone(), spec, &fleet, now)
            .map_err(|e| RolloutError::Invalid(e.to_string()))?;
        let telemetry = self.telemetry_snapshot();
        let events = rollout.advance(
            now,
            telemetry
                .as_deref()
                .map(|t| t as &dyn spark_rollout::Telemetry),
        );
        let header =
            serde_json::to_string(&rollout.header()).map_err(|e| RolloutError::Corrupt {
                id: id.clone(),
                why: e.to_string(),
            })?;
        let devices: Vec<(String, String)> = rollout
            .devices()
            .map(|(d, s)| (d.to_owned(), serde_json::to_string(s).unwrap_or_default()))
            .collect();
        let ev: Vec<(i64, String)> = events
            .iter()
            .map(|e| {
                (
                    event_time(e).unwrap_or(now).as_second(),
                    serde_json::to_string(e).unwrap_or_default(),
                )
            })
            .collect();
        let real_now = crate::now();
        let record = RolloutRecord {
            id: id.clone(),
            release_id: release.id,
            state: state_name(rollout.phase()).into(),
            reason: phase_reason(rollout.phase()),
            plan: Some(rollout.spec().plan.to_string()),
            created_at: real_now,
            updated_at: real_now,
            revision: 1,
        };
        if !self
            .store
            .insert_rollout_engine(&record, &header, &devices, &ev)
            .await?
        {
            return Err(RolloutError::Exists(id));
        }
        tracing::info!(rollout = %id, release = release.id, plan = %rollout.spec().plan, targeted = devices.len(), "rollout created");
        *self.slot(&id).lock().await = Some(Cached {
            revision: 1,
            rollout,
        });
        self.after_events(&id, &events);
        self.push_wake.notify_one();
        Ok(record)
    }

    /// Rollouts that may still offer (not aborted) with offerable releases, newest version first.
    async fn live(&self) -> Result<Vec<(RolloutRecord, ReleaseRecord)>, StoreError> {
        let mut out: Vec<(Version, RolloutRecord, ReleaseRecord)> = Vec::new();
        for r in self.store.rollouts().await? {
            if r.state == "aborted" {
                continue;
            }
            let Some(rel) = self.store.release(r.release_id).await? else {
                continue;
            };
            if !offerable(&rel) {
                continue;
            }
            let Ok(v) = Version::parse(&rel.version) else {
                continue;
            };
            out.push((v, r, rel));
        }
        out.sort_by(|a, b| b.0.cmp_precedence(&a.0));
        Ok(out.into_iter().map(|(_, r, rel)| (r, rel)).collect())
    }

    /// The engine's answer to a device checking in (or being considered for a push): the newest
    /// release a live rollout offers it now, if any. Records the check-in in each rollout asked.
    pub async fn offer_for(&self, device: &DeviceRecord) -> Result<Option<Offer>, RolloutError> {
        let live = self.live().await?;
        let superseded = self.superseded(device, &live).await?;
        for (rollout, release) in live {
            if superseded.contains(&rollout.id) {
                tracing::debug!(device = %device.device, rollout = %rollout.id, "not asked: superseded for this device by a later rollout that disagrees");
                continue;
            }
            let info = device_info(device, &release);
            let decision = self
                .with_rollout(&rollout.id, |r, now| {
                    let before = r.device(&info.id).cloned();
                    let d = r.check_in(&info, now);
                    let changed = check_in_changed(
                        before.as_ref(),
                        r.device(&info.id),
                        r.spec().gates.offline_after / 10,
                    );
                    Ok((
                        d,
                        Change {
                            changed,
                            devices: vec![info.id.clone()],
                            events: Vec::new(),
                        },
                    ))
                })
                .await?;
            match decision {
                Decision::Offer { wave, .. } => {
                    return Ok(Some(Offer {
                        release,
                        rollout: rollout.id,
                        wave,
                    }));
                }
                Decision::Wait { reason } => {
                    tracing::debug!(device = %device.device, rollout = %rollout.id, wait = reason.code(), "not offered: {}", wait_text(&reason));
                }
            }
        }
        Ok(None)
    }

    /// The live rollouts that must not offer to `device` because a later rollout covering it
    /// disagrees: a rollback rollout to V and a forward rollout to a version newer than V that
    /// both cover the device (it is part of the rollout, or its compatible, hardware revision and
    /// tags match the filter, whatever version it runs). The one created later is the operator's
    /// newer decision and wins; the other is not asked at all, so it neither offers its release
    /// again (the device would go back and forth between the two) nor counts the device's move
    /// away from its release as a failure.
    async fn superseded(
        &self,
        device: &DeviceRecord,
        live: &[(RolloutRecord, ReleaseRecord)],
    ) -> Result<HashSet<String>, RolloutError> {
        let mut out = HashSet::new();
        // A rollback needs a release signed as an allowed downgrade: without one there is no
        // disagreement, and the check-in costs nothing more.
        if !live.iter().any(|(_, rel)| rel.allow_downgrade) {
            return Ok(out);
        }
        let mut covering = Vec::new();
        for (rollout, release) in live {
            let info = device_info(device, release);
            let seen = self
                .with_rollout(&rollout.id, |r, _| {
                    let view = r.covers(&info).then(|| {
                        (
                            r.spec().kind,
                            r.spec().release.version.clone(),
                            r.created_at(),
                        )
                    });
                    Ok((view, Change::default()))
                })
                .await?;
            if let Some((kind, version, created_at)) = seen {
                covering.push((rollout.id.as_str(), kind, version, created_at));
            }
        }
        for (id, kind, version, created_at) in &covering {
            let beaten = covering.iter().any(|(_, k, v, c)| {
                let disagree = match (kind, k) {
                    (RolloutKind::Rollback, RolloutKind::Forward) => v > version,
                    (RolloutKind::Forward, RolloutKind::Rollback) => version > v,
                    _ => false,
                };
                disagree && c > created_at
            });
            if beaten {
                out.insert((*id).to_owned());
            }
        }
        Ok(out)
    }

    /// Feeds an agent's status report to the rollout that offered the release it is about.
    /// Returns the engine's events (a tripped gate pauses at the report that crosses the line).
    pub async fn report(
        &self,
        report: &spark_dbus::report::StatusReport,
        offered_rollout: Option<&str>,
    ) -> Result<Vec<RolloutEvent>, RolloutError> {
        let stage = spark_rollout_stage(report);
        let Some(engine) = engine_report(report.reason, &stage) else {
            return Ok(Vec::new());
        };
        let Some(version) = report.release_version.as_deref() else {
            return Ok(Vec::new());
        };
        let mut candidates = Vec::new();
        for r in self.store.rollouts().await? {
            if r.state == "aborted" {
                continue;
            }
            let Some(rel) = self.store.release(r.release_id).await? else {
                continue;
            };
            if rel.version == version {
                candidates.push(r.id);
            }
        }
        // The rollout that offered the release to this device first.
        candidates.sort_by_key(|id| Some(id.as_str()) != offered_rollout);
        for id in candidates {
            let events = self
                .with_rollout(&id, |r, now| {
                    let Some(state) = r.device(&report.device) else {
                        return Ok((None, Change::default()));
                    };
                    if state.attempts == 0 {
                        return Ok((None, Change::default()));
                    }
                    match r.report(&report.device, engine.clone(), now) {
                        Ok(events) => Ok((
                            Some(events.clone()),
                            Change {
                                changed: true,
                                devices: vec![report.device.clone()],
                                events,
                            },
                        )),
                        Err(e) => {
                            tracing::debug!(device = %report.device, rollout = %r.id(), "report not applied: {e}");
                            Ok((None, Change::default()))
                        }
                    }
                })
                .await?;
            if let Some(events) = events {
                return Ok(events);
            }
        }
        Ok(Vec::new())
    }

    /// One tick: reads telemetry (when a source is configured), then evaluates every live
    /// rollout's gates, opens waves and starts or ends soaks. A tripped gate pauses its rollout.
    pub async fn tick(&self) -> Result<TickReport, RolloutError> {
        let mut out = TickReport::default();
        let ids: Vec<String> = self
            .store
            .rollouts()
            .await?
            .into_iter()
            .filter(|r| r.state != "aborted")
            .map(|r| r.id)
            .collect();
        if ids.is_empty() {
            return Ok(out);
        }
        let telemetry = match &self.telemetry {
            None => None,
            Some(src) => match src.last_seen().await {
                Ok(t) => {
                    let t = Arc::new(t);
                    *self
                        .last_telemetry
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
                    Some(t)
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot read ingest's last-seen times (waves with a telemetry gate stay in their soak): {e}"
                    );
                    out.telemetry_error = Some(e.to_string());
                    None
                }
            },
        };
        for id in ids {
            let events = self
                .with_rollout(&id, |r, now| {
                    let events = r.advance(
                        now,
                        telemetry
                            .as_deref()
                            .map(|t| t as &dyn spark_rollout::Telemetry),
                    );
                    Ok((
                        events.clone(),
                        Change {
                            changed: !events.is_empty(),
                            devices: Vec::new(),
                            events,
                        },
                    ))
                })
                .await;
            match events {
                Ok(events) => out
                    .events
                    .extend(events.into_iter().map(|e| (id.clone(), e))),
                // One unusable rollout must not stop the others.
                Err(e) => tracing::error!(rollout = %id, "tick failed: {e}"),
            }
        }
        Ok(out)
    }

    /// Pauses, resumes or aborts a rollout.
    pub async fn act(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
    ) -> Result<(), RolloutError> {
        let telemetry = self.telemetry_snapshot();
        let note = reason.unwrap_or("").to_owned();
        self.with_rollout(id, |r, now| {
            let state = state_name(r.phase()).to_owned();
            let result = match action {
                Action::Pause => r.pause(note.clone(), now),
                Action::Resume => r.resume(
                    now,
                    telemetry
                        .as_deref()
                        .map(|t| t as &dyn spark_rollout::Telemetry),
                ),
                Action::Abort => r.abort(note.clone(), now),
            };
            match result {
                Ok(()) => Ok((
                    (),
                    Change {
                        changed: true,
                        ..Change::default()
                    },
                )),
                Err(
                    ControlError::Aborted { .. }
                    | ControlError::NotPaused { .. }
                    | ControlError::AlreadyPaused { .. },
                ) => Err(RolloutError::BadTransition {
                    id: id.to_owned(),
                    state,
                    action: action.name(),
                }),
            }
        })
        .await?;
        tracing::info!(rollout = %id, action = action.name(), reason = reason.unwrap_or(""), "rollout state changed");
        if action == Action::Resume {
            self.push_wake.notify_one();
        }
        Ok(())
    }

    /// Status of one rollout.
    pub async fn status(&self, id: &str) -> Result<RolloutStatus, RolloutError> {
        let record = self
            .store
            .rollout(id)
            .await?
            .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
        let release = self
            .store
            .release(record.release_id)
            .await?
            .ok_or(RolloutError::ReleaseNotFound(record.release_id))?;
        let bytes_served = self
            .store
            .data_cost(false)
            .await?
            .into_iter()
            .find(|c| c.key == id)
            .map_or(0, |c| c.bytes);
        if record.revision == 0 {
            // Made before the engine (never written by it; migration 3 aborted it): what the
            // table still says.
            return Ok(RolloutStatus {
                id: record.id,
                state: record.state,
                reason: record.reason,
                release: release.id,
                compatible: release.compatible,
                version: release.version,
                waves: Vec::new(),
                bytes_served,
                plan: record.plan.unwrap_or_default(),
                kind: "forward".into(),
                phase: None,
                gates: None,
                now: Some(self.clock.now()),
            });
        }
        let telemetry = self.telemetry_snapshot();
        let (waves, phase, plan, kind, gates, now) = self
            .with_rollout(id, |r, now| {
                let waves = wave_views(r, now, telemetry.as_deref());
                let kind = match r.spec().kind {
                    RolloutKind::Forward => "forward",
                    RolloutKind::Rollback => "rollback",
                };
                Ok((
                    (
                        waves,
                        r.phase().clone(),
                        r.spec().plan.to_string(),
                        kind.to_owned(),
                        r.spec().gates.clone(),
                        now,
                    ),
                    Change::default(),
                ))
            })
            .await?;
        Ok(RolloutStatus {
            id: record.id,
            state: state_name(&phase).to_owned(),
            reason: phase_reason(&phase),
            release: release.id,
            compatible: release.compatible,
            version: release.version,
            waves,
            bytes_served,
            plan,
            kind,
            phase: Some(phase),
            gates: Some(gates),
            now: Some(now),
        })
    }

    /// A rollout's events (engine time, event), oldest first.
    pub async fn events(&self, id: &str) -> Result<Vec<RolloutEvent>, RolloutError> {
        if self.store.rollout(id).await?.is_none() {
            return Err(RolloutError::NotFound(id.to_owned()));
        }
        Ok(self
            .store
            .rollout_events(id)
            .await?
            .into_iter()
            .filter_map(|(_, e)| serde_json::from_str(&e).ok())
            .collect())
    }

    /// Where each device of a rollout stands (device → JSON `DeviceState`).
    pub async fn devices(
        &self,
        id: &str,
    ) -> Result<BTreeMap<String, spark_rollout::DeviceState>, RolloutError> {
        self.with_rollout(id, |r, _| {
            Ok((
                r.devices()
                    .map(|(d, s)| (d.to_owned(), s.clone()))
                    .collect(),
                Change::default(),
            ))
        })
        .await
    }
}

/// Whether a check-in changed the device's state enough to be written. A device polling while
/// it waits (for its wave, a window, the cap) changes only its `last_check_in`, which matters to
/// the gates at the scale of `offline_after` (it decides who is online): that alone is written at
/// most once per `refresh` (a tenth of `offline_after`), which spares a write per poll. This node
/// keeps the newer time in its cache either way.
fn check_in_changed(
    before: Option<&spark_rollout::DeviceState>,
    after: Option<&spark_rollout::DeviceState>,
    refresh: SignedDuration,
) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => {
            let mut same = b.clone();
            same.last_check_in = a.last_check_in;
            if same != *a {
                return true;
            }
            match (b.last_check_in, a.last_check_in) {
                (Some(then), Some(now)) => now.duration_since(then) >= refresh,
                (None, Some(_)) => true,
                _ => false,
            }
        }
    }
}

/// The engine's stage name for a progress report (the agent's state after the transition).
fn spark_rollout_stage(report: &spark_dbus::report::StatusReport) -> String {
    serde_json::to_value(report.to)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| report.reason.as_str().to_owned())
}

fn event_time(e: &RolloutEvent) -> Option<Timestamp> {
    match e {
        RolloutEvent::WaveOpened { at, .. }
        | RolloutEvent::SoakStarted { at, .. }
        | RolloutEvent::WavePassed { at, .. }
        | RolloutEvent::Done { at } => Some(*at),
        RolloutEvent::Paused { reason } => Some(reason.at),
    }
}

/// A wait reason in words (logs).
pub fn wait_text(reason: &WaitReason) -> String {
    match reason {
        WaitReason::NotTargeted { why } => format!("not targeted ({})", why_text(why)),
        WaitReason::Updated => "already updated".into(),
        WaitReason::WaveNotOpen { wave, planned_at } => {
            format!("wave {} not open (planned {planned_at})", wave + 1)
        }
        WaitReason::OutsideWindow { next_open } => match next_open {
            Some(t) => format!("outside its maintenance window (opens {t})"),
            None => "outside its maintenance window".into(),
        },
        WaitReason::ConcurrencyCap { cap } => format!("{cap} devices updating already"),
        WaitReason::PenaltyBox { until } => format!("in the penalty box until {until}"),
        WaitReason::RetryLater { at } => format!("failed recently; retry at {at}"),
        WaitReason::Paused => "rollout paused".into(),
        WaitReason::Aborted => "rollout aborted".into(),
    }
}

fn why_text(why: &spark_rollout::Ineligible) -> String {
    serde_json::to_value(why)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
        .unwrap_or_default()
}
