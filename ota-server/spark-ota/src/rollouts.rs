//! Rollouts: which release a device is offered, and the admin operations on rollouts.
//!
//! This module is the seam where the rollout engine (`spark-rollout`: waves, stable assignment,
//! gates, windows, penalty box) plugs in. The server calls only the functions below; until the
//! engine is integrated they implement the simplest rollout there is — one wave of 100 % of the
//! matching fleet, opened at creation — with the checks every engine must keep:
//!
//! - the release is not yanked and its signed manifest has not expired;
//! - the device's compatible (when it told one) is the release's;
//! - the device's running version (from check-in, status reports or ingest) is older than the
//!   release, unless the manifest is a signed allowed downgrade (and never the same version);
//! - a device that failed this release (rejected, digest mismatch, install or health failure,
//!   rolled back) is not offered it again;
//! - only `active` rollouts offer anything; pause, resume and abort change that at once.

use serde::Serialize;
use spark_dbus::report::Reason;
use spark_release::Version;

use crate::error::StoreError;
use crate::store::{DeviceRecord, ReleaseRecord, RolloutRecord, Store};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A release offered to a device, and the rollout offering it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub release: ReleaseRecord,
    pub rollout: String,
}

/// Reasons after which a device is not offered the same release again (penalty box).
pub const FAILURE_REASONS: [Reason; 5] = [
    Reason::ReleaseRejected,
    Reason::DigestMismatch,
    Reason::InstallFailed,
    Reason::HealthFailed,
    Reason::RolledBack,
];

/// Whether `device` may be offered `release` (apart from the rollout's own state).
pub async fn eligible(
    store: &Store,
    device: &DeviceRecord,
    release: &ReleaseRecord,
    now: i64,
) -> Result<bool, StoreError> {
    if release.yanked_at.is_some() || release.expires_at <= now {
        return Ok(false);
    }
    if let Some(c) = &device.compatible
        && *c != release.compatible
    {
        return Ok(false);
    }
    let Ok(offered) = Version::parse(&release.version) else {
        return Ok(false);
    };
    if let Some(current) = device
        .current_version
        .as_deref()
        .and_then(|v| Version::parse(v).ok())
    {
        let newer = offered.cmp_precedence(&current).is_gt();
        let same = offered.cmp_precedence(&current).is_eq();
        if same || (!newer && !release.allow_downgrade) {
            return Ok(false);
        }
    }
    let reasons = store
        .report_reasons(&device.device, &release.version)
        .await?;
    let failed = reasons
        .iter()
        .any(|r| FAILURE_REASONS.iter().any(|f| f.as_str() == r));
    Ok(!failed)
}

/// The release `device` should be offered now, if any: the newest eligible release among the
/// active rollouts.
pub async fn offer_for(
    store: &Store,
    device: &DeviceRecord,
    now: i64,
) -> Result<Option<Offer>, StoreError> {
    let mut best: Option<(Version, Offer)> = None;
    for (rollout, release) in store.active_rollouts().await? {
        if !eligible(store, device, &release, now).await? {
            continue;
        }
        let Ok(v) = Version::parse(&release.version) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| v.cmp_precedence(b).is_gt())
        {
            best = Some((
                v,
                Offer {
                    release,
                    rollout: rollout.id,
                },
            ));
        }
    }
    Ok(best.map(|(_, o)| o))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Creates an active rollout of `release_id`. The id defaults to `<compatible>-<version>`.
pub async fn create(
    store: &Store,
    id: Option<String>,
    release_id: i64,
    plan: Option<String>,
    now: i64,
) -> Result<RolloutRecord, RolloutError> {
    let release = store
        .release(release_id)
        .await?
        .ok_or(RolloutError::ReleaseNotFound(release_id))?;
    if release.yanked_at.is_some() {
        return Err(RolloutError::ReleaseYanked(release_id));
    }
    let id = id.unwrap_or_else(|| format!("{}-{}", release.compatible, release.version));
    if !valid_id(&id) {
        return Err(RolloutError::BadId(id));
    }
    let record = RolloutRecord {
        id: id.clone(),
        release_id,
        state: "active".into(),
        reason: None,
        plan,
        created_at: now,
        updated_at: now,
    };
    if !store.insert_rollout(&record).await? {
        return Err(RolloutError::Exists(id));
    }
    tracing::info!(rollout = %id, release = release_id, "rollout created");
    Ok(record)
}

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

/// Pauses, resumes or aborts a rollout.
pub async fn act(
    store: &Store,
    id: &str,
    action: Action,
    reason: Option<&str>,
    now: i64,
) -> Result<RolloutRecord, RolloutError> {
    let current = store
        .rollout(id)
        .await?
        .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
    let (from, to): (&[&str], &str) = match action {
        Action::Pause => (&["active"], "paused"),
        Action::Resume => (&["paused"], "active"),
        Action::Abort => (&["active", "paused"], "aborted"),
    };
    if !store
        .update_rollout(id, from, to, reason, None, now)
        .await?
    {
        return Err(RolloutError::BadTransition {
            id: id.to_owned(),
            state: current.state,
            action: action.name(),
        });
    }
    tracing::info!(rollout = %id, action = action.name(), reason = reason.unwrap_or(""), "rollout state changed");
    store
        .rollout(id)
        .await?
        .ok_or_else(|| RolloutError::NotFound(id.to_owned()))
}

/// Progress of one wave.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct WaveStatus {
    /// Share of the eligible fleet, percent.
    pub share: u32,
    /// Devices assigned to the wave.
    pub devices: u64,
    /// Offered the release (check-in answer or push).
    pub offered: u64,
    /// Running the release (committed).
    pub updated: u64,
    /// Reported a failure for the release.
    pub failed: u64,
}

/// A rollout with its release and per-wave progress.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RolloutStatus {
    pub id: String,
    pub state: String,
    pub reason: Option<String>,
    pub release: i64,
    pub compatible: String,
    pub version: String,
    pub waves: Vec<WaveStatus>,
    /// Bytes of the bundle served under this rollout.
    pub bytes_served: i64,
}

/// Status of one rollout.
pub async fn status(store: &Store, id: &str) -> Result<RolloutStatus, RolloutError> {
    let r = store
        .rollout(id)
        .await?
        .ok_or_else(|| RolloutError::NotFound(id.to_owned()))?;
    let release = store
        .release(r.release_id)
        .await?
        .ok_or(RolloutError::ReleaseNotFound(r.release_id))?;
    let mut wave = WaveStatus {
        share: 100,
        ..WaveStatus::default()
    };
    for d in store.devices().await? {
        if d.compatible
            .as_ref()
            .is_some_and(|c| *c != release.compatible)
        {
            continue;
        }
        wave.devices += 1;
        if d.offered_rollout.as_deref() == Some(id) {
            wave.offered += 1;
        }
        if d.current_version.as_deref() == Some(release.version.as_str()) {
            wave.updated += 1;
            continue;
        }
        let reasons = store.report_reasons(&d.device, &release.version).await?;
        if reasons
            .iter()
            .any(|r| FAILURE_REASONS.iter().any(|f| f.as_str() == r))
        {
            wave.failed += 1;
        }
    }
    let bytes_served = store
        .data_cost(false)
        .await?
        .into_iter()
        .find(|c| c.key == id)
        .map_or(0, |c| c.bytes);
    Ok(RolloutStatus {
        id: r.id,
        state: r.state,
        reason: r.reason,
        release: release.id,
        compatible: release.compatible,
        version: release.version,
        waves: vec![wave],
        bytes_served,
    })
}
