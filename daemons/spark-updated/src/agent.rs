//! The update agent's state machine: offer → download → verify → install → reboot → health
//! check → commit, persisted before every step (see [`crate::store`]) so that a restart at any
//! point resumes the step or fails cleanly, and reported to the OTA server on every transition.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use hyper::Uri;
use rauc_client::RaucError;
use spark_dbus::UpdateState;
use spark_dbus::report::{Reason, StatusReport};
use spark_release::{
    Policy, ReleaseError, ReleaseManifest, SignedRelease, Timestamp, TrustedKeys, Version,
};
use tokio::sync::watch;

use crate::download::{self, DownloadError, DownloadOptions};
use crate::https::{HttpError, HttpsClient};
use crate::store::{MAX_UNSENT_REPORTS, Persisted, Phase, Store, StoreError};
use crate::system::{HealthCheck, Rauc, Reboot, RebootError, Reporter};

/// Largest signed release document the agent accepts from the server (JSON form is ~1 KiB).
const MAX_RELEASE_DOC: usize = 64 << 10;

/// What the agent shows on D-Bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: UpdateState,
    pub progress: u32,
    pub current_version: String,
    pub pending_version: String,
    pub last_error: String,
}

/// How a call into the agent ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do.
    Idle,
    /// The server offers nothing newer (or only releases already refused).
    UpToDate,
    /// A reboot was requested; the process should wait to be stopped.
    RebootRequested,
    /// The new slot is healthy and marked good.
    Committed { version: String },
    /// The update failed; the device stays on (or went back to) a good slot.
    Failed { reason: Reason, message: String },
}

/// Where an offered release came from; decides how "nothing newer" is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Pushed by uplinkd (`UpdateAvailable`): every refusal is an error the sender hears of.
    Pushed,
    /// The answer to a poll: a release that is not newer simply means "up to date".
    Polled,
    /// An offer that arrived while the agent was busy and waited on `/data`: re-checked now,
    /// and one the finished update made stale (not newer) is dropped quietly.
    Queued,
}

/// Why an offered release was refused before anything was downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Report reason (`release-rejected`).
    pub reason: Reason,
    /// The specific check that failed: `spark_release::ReleaseError::code()` (`expired`,
    /// `unknown-key`, ...), or `refused-before`.
    pub code: &'static str,
    /// The release's version, when it could be read.
    pub version: Option<String>,
    /// For people.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    /// `reason: code: message`, the form of `LastError`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.reason, self.code, self.message)
    }
}

/// The checks of an offered release that need nothing but the trusted keys, the system's
/// compatible and the running version, so that an offer can be answered at once even while
/// the agent is busy with another update.
#[derive(Debug, Clone)]
pub struct Gate {
    keys: TrustedKeys,
    compatible: String,
}

impl Gate {
    pub fn new(keys: TrustedKeys, compatible: impl Into<String>) -> Self {
        Self {
            keys,
            compatible: compatible.into(),
        }
    }

    /// Parses `signed` (wire or JSON form) and checks signature, key, expiry, compatible and
    /// that it is newer than `installed` (unless signed as an allowed downgrade).
    pub fn check(
        &self,
        signed: &[u8],
        installed: &str,
    ) -> Result<(SignedRelease, ReleaseManifest), Refusal> {
        let refuse = |e: ReleaseError, version: Option<String>| Refusal {
            reason: Reason::ReleaseRejected,
            code: e.code(),
            version,
            message: e.to_string(),
        };
        let release = SignedRelease::parse(signed).map_err(|e| refuse(e.into(), None))?;
        let mut policy = Policy::new(Timestamp::now()).with_compatible(self.compatible.clone());
        if let Ok(v) = Version::parse(installed) {
            policy = policy.with_installed_version(v);
        }
        let version = release.manifest().version.to_string();
        let manifest = release
            .verify(&self.keys, &policy)
            .map_err(|e| refuse(e, Some(version)))?
            .clone();
        Ok((release, manifest))
    }
}

/// Errors that stop the agent itself (as opposed to failing one update, which is an
/// [`Outcome::Failed`]).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("RAUC: {0}")]
    Rauc(#[from] RaucError),
    #[error(transparent)]
    Reboot(#[from] RebootError),
    #[error("polling the OTA server: {0}")]
    Poll(#[from] HttpError),
    #[error(
        "OTA server answered {status} to {url}: check the server and this device's registration"
    )]
    PollStatus {
        url: String,
        status: hyper::StatusCode,
    },
}

/// Settings the agent needs (resolved from [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub device: String,
    pub data_dir: PathBuf,
    /// OTA server base URL, e.g. `https://ota:8443`.
    pub server: String,
    pub factory_version: String,
    pub download: DownloadOptions,
}

/// The agent. Generic over the systems it drives so tests can substitute any of them.
pub struct Agent<R, B, H, P> {
    settings: Settings,
    client: HttpsClient,
    keys: TrustedKeys,
    rauc: R,
    reboot: B,
    health: H,
    reporter: P,
    store: Store,
    persisted: Persisted,
    status: watch::Sender<Status>,
    /// Built on first use: the compatible comes from RAUC.
    gate: Option<Gate>,
}

impl<R: Rauc, B: Reboot, H: HealthCheck, P: Reporter> Agent<R, B, H, P> {
    /// Loads the persisted state from `settings.data_dir` (created if missing).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        settings: Settings,
        client: HttpsClient,
        keys: TrustedKeys,
        rauc: R,
        reboot: B,
        health: H,
        reporter: P,
    ) -> Result<Self, AgentError> {
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| StoreError::Io {
            action: "create",
            path: settings.data_dir.clone(),
            source,
        })?;
        let store = Store::new(&settings.data_dir);
        let persisted = store.load()?;
        let status = watch::Sender::new(Status {
            state: persisted.phase.state(),
            progress: 0,
            current_version: persisted
                .current_version
                .clone()
                .unwrap_or_else(|| settings.factory_version.clone()),
            pending_version: String::new(),
            last_error: persisted.last_error.clone().unwrap_or_default(),
        });
        Ok(Self {
            settings,
            client,
            keys,
            rauc,
            reboot,
            health,
            reporter,
            store,
            persisted,
            status,
            gate: None,
        })
    }

    /// Follows the agent's status (for the D-Bus service).
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// The persisted state.
    pub fn persisted(&self) -> &Persisted {
        &self.persisted
    }

    /// The state file (and the queued offer beside it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A handle on the reboot seam, for reboots commanded over D-Bus.
    pub fn rebooter(&self) -> B
    where
        B: Clone,
    {
        self.reboot.clone()
    }

    /// Publishes a state the agent's loop decided on (a commanded reboot).
    pub fn publish_state(&self, state: UpdateState) {
        self.set_state(state);
    }

    /// The offer checks, asking RAUC for the compatible the first time.
    pub async fn gate(&mut self) -> Result<Gate, AgentError> {
        if let Some(gate) = &self.gate {
            return Ok(gate.clone());
        }
        let gate = Gate::new(self.keys.clone(), self.rauc.compatible().await?);
        self.gate = Some(gate.clone());
        Ok(gate)
    }

    /// The running slot's version: what RAUC recorded for the booted slot, else what the agent
    /// last committed, else the configured factory version.
    pub async fn current_version(&self) -> Result<String, AgentError> {
        Ok(match self.rauc.booted_version().await? {
            Some(v) => v,
            None => self
                .persisted
                .current_version
                .clone()
                .unwrap_or_else(|| self.settings.factory_version.clone()),
        })
    }

    /// Picks up where the last run stopped; call once at start.
    pub async fn resume(&mut self) -> Result<Outcome, AgentError> {
        let current = self.current_version().await?;
        self.status.send_modify(|s| s.current_version = current);
        let phase = self.persisted.phase.clone();
        let Some(release_json) = phase.release().map(str::to_owned) else {
            return Ok(Outcome::Idle);
        };
        // The release passed every check when it was accepted and was stored by us; its
        // signature is checked again anyway, because /data is writable by more than the agent.
        let manifest = match SignedRelease::from_json(&release_json)
            .map_err(ReleaseError::from)
            .and_then(|r| r.verify_signature(&self.keys).cloned())
        {
            Ok(m) => m,
            Err(e) => {
                return self
                    .fail(
                        phase.state(),
                        Reason::Internal,
                        None,
                        format!("stored release unusable: {e}"),
                    )
                    .await;
            }
        };
        let version = manifest.version.to_string();
        self.status
            .send_modify(|s| s.pending_version = version.clone());
        match phase {
            Phase::Idle => Ok(Outcome::Idle),
            Phase::Installing { .. }
                if self.rauc.booted_version().await?.as_deref() == Some(version.as_str()) =>
            {
                // RAUC finished and the device rebooted before the agent recorded it (the
                // bootloader tries a freshly installed slot first): check and commit it.
                self.after_boot(&release_json, None, &manifest).await
            }
            Phase::Downloading { .. } | Phase::Installing { .. } => {
                self.report(
                    phase.state(),
                    phase.state(),
                    Reason::Resumed,
                    Some(&version),
                    None,
                )
                .await?;
                self.process(release_json, manifest).await
            }
            Phase::Installed { from_slot, .. } => {
                self.request_reboot(release_json, from_slot, &version).await
            }
            Phase::Rebooting { from_slot, .. } => {
                self.after_boot(&release_json, Some(&from_slot), &manifest)
                    .await
            }
            Phase::RollingBack { bad_slot, .. } => {
                let booted = self.rauc.booted_slot().await?;
                if booted == bad_slot {
                    // Cut between deciding to roll back and the reboot (before or after
                    // Mark(bad)): do it again; marking bad twice is harmless.
                    return self.roll_back().await;
                }
                self.persisted.phase = Phase::Idle;
                self.status.send_modify(|s| s.pending_version.clear());
                self.report(
                    UpdateState::Rebooting,
                    UpdateState::Idle,
                    Reason::RolledBack,
                    Some(&version),
                    Some(format!(
                        "slot {booted} is running again after the health check failed"
                    )),
                )
                .await?;
                Ok(Outcome::Idle)
            }
        }
    }

    /// Handles a signed release pushed by uplinkd (wire or JSON form).
    pub async fn offer(&mut self, signed: &[u8]) -> Result<Outcome, AgentError> {
        self.offer_from(signed, Source::Pushed, |_| {}).await
    }

    /// Handles an offered release. `verdict` hears whether it passed the checks as soon as they
    /// are done (before the download), so a D-Bus caller gets its answer without waiting for
    /// the update. A refusal is also recorded (`LastError`, report) unless the release is
    /// merely not newer than what runs and came from a poll or the queue.
    pub async fn offer_from(
        &mut self,
        signed: &[u8],
        source: Source,
        verdict: impl FnOnce(Result<(), Refusal>),
    ) -> Result<Outcome, AgentError> {
        if self.persisted.phase != Phase::Idle {
            verdict(Err(Refusal {
                reason: Reason::ReleaseRejected,
                code: "busy",
                version: None,
                message: "another update is in progress".into(),
            }));
            return Ok(Outcome::Idle);
        }
        let from = self.status.borrow().state;
        let current = self.current_version().await?;
        let checked = match self.gate().await {
            Ok(gate) => gate.check(signed, &current),
            Err(e) => {
                verdict(Err(Refusal {
                    reason: Reason::Internal,
                    code: "rauc",
                    version: None,
                    message: e.to_string(),
                }));
                return Err(e);
            }
        };
        let (release, manifest) = match checked {
            Ok(ok) => ok,
            Err(refusal) if refusal.code == "not-newer" && source != Source::Pushed => {
                verdict(Err(refusal));
                self.report(from, UpdateState::Idle, Reason::UpToDate, None, None)
                    .await?;
                return Ok(Outcome::UpToDate);
            }
            Err(refusal) => {
                verdict(Err(refusal.clone()));
                return self
                    .fail(
                        from,
                        refusal.reason,
                        refusal.version.as_deref(),
                        format!("{}: {}", refusal.code, refusal.message),
                    )
                    .await;
            }
        };
        let version = manifest.version.to_string();
        if self.persisted.refused.contains(&version) {
            tracing::info!(%version, "release was refused before; not trying it again");
            verdict(Err(Refusal {
                reason: Reason::ReleaseRejected,
                code: "refused-before",
                message: format!(
                    "release {version} already failed on this device; publish a newer version"
                ),
                version: Some(version),
            }));
            self.set_state(UpdateState::Idle);
            return Ok(Outcome::UpToDate);
        }
        verdict(Ok(()));
        self.persisted.phase = Phase::Downloading {
            release: release.to_json(),
        };
        self.status
            .send_modify(|s| s.pending_version = version.clone());
        self.report(
            from,
            UpdateState::Downloading,
            Reason::Offered,
            Some(&version),
            None,
        )
        .await?;
        self.process(release.to_json(), manifest).await
    }

    /// Asks the OTA server for the release meant for this device: `GET
    /// {server}/v1/devices/{device}/release` answers 200 with a signed release (JSON or wire
    /// form) or 204 when there is none.
    pub async fn check_now(&mut self) -> Result<Outcome, AgentError> {
        if self.persisted.phase != Phase::Idle {
            return Ok(Outcome::Idle);
        }
        let url = format!(
            "{}/v1/devices/{}/release",
            self.settings.server, self.settings.device
        );
        let uri: Uri = url.parse().map_err(|_| HttpError::Url {
            url: url.clone(),
            reason: "not a URI",
        })?;
        self.set_state(UpdateState::Checking);
        let answer = self.client.get_small(&uri, MAX_RELEASE_DOC).await;
        let (status, body) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.set_state(UpdateState::Idle);
                return Err(e.into());
            }
        };
        match status {
            hyper::StatusCode::OK => self.offer_from(&body, Source::Polled, |_| {}).await,
            hyper::StatusCode::NO_CONTENT | hyper::StatusCode::NOT_FOUND => {
                self.set_state(UpdateState::Idle);
                Ok(Outcome::UpToDate)
            }
            status => {
                self.set_state(UpdateState::Idle);
                Err(AgentError::PollStatus { url, status })
            }
        }
    }

    fn bundle_path(&self, manifest: &ReleaseManifest) -> PathBuf {
        // Named by content so a leftover `.part` is only ever resumed for the same bundle.
        self.settings.data_dir.join(format!(
            "bundle-{}.raucb",
            &hex::encode(manifest.bundle_sha256)[..16]
        ))
    }

    /// Download, verify, install, reboot.
    async fn process(
        &mut self,
        release_json: String,
        manifest: ReleaseManifest,
    ) -> Result<Outcome, AgentError> {
        let version = manifest.version.to_string();
        if !matches!(self.persisted.phase, Phase::Installing { .. }) {
            self.persisted.phase = Phase::Downloading {
                release: release_json.clone(),
            };
            self.store.save(&self.persisted)?;
        }
        self.set_state(UpdateState::Downloading);
        let dest = self.bundle_path(&manifest);
        let urls = self.locations(&manifest);
        let mut result = Err(DownloadError::NoLocation);
        for url in &urls {
            let status = self.status.clone();
            result = download::download(
                &self.client,
                url,
                &manifest,
                &dest,
                &self.settings.download,
                move |have, total| {
                    let percent = (have.saturating_mul(100) / total.max(1)) as u32;
                    status.send_if_modified(|s| {
                        let changed = s.progress != percent;
                        s.progress = percent;
                        changed
                    });
                },
            )
            .await;
            match &result {
                Ok(_) => break,
                // Another location may hold the right file or be reachable.
                Err(DownloadError::Exhausted { .. } | DownloadError::Status { .. }) => continue,
                Err(_) => break,
            }
        }
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                let reason = match &e {
                    DownloadError::NoSpace { .. } => Reason::NoSpace,
                    DownloadError::DigestMismatch { .. } | DownloadError::SizeMismatch { .. } => {
                        self.persisted.refused.push(version.clone());
                        Reason::DigestMismatch
                    }
                    _ => Reason::DownloadFailed,
                };
                return self
                    .fail(
                        UpdateState::Downloading,
                        reason,
                        Some(&version),
                        e.to_string(),
                    )
                    .await;
            }
        };
        tracing::info!(
            version,
            resumed_from = summary.resumed_from,
            fetched = summary.fetched,
            requests = summary.requests,
            "bundle downloaded and verified"
        );
        self.report(
            UpdateState::Downloading,
            UpdateState::Verifying,
            Reason::Downloaded,
            Some(&version),
            Some(format!(
                "resumed from {} bytes, fetched {} bytes in {} requests",
                summary.resumed_from, summary.fetched, summary.requests
            )),
        )
        .await?;

        self.persisted.phase = Phase::Installing {
            release: release_json.clone(),
        };
        self.report(
            UpdateState::Verifying,
            UpdateState::Installing,
            Reason::Verified,
            Some(&version),
            None,
        )
        .await?;
        let from_slot = self.rauc.booted_slot().await?;
        let status = self.status.clone();
        status.send_modify(|s| s.progress = 0);
        let installed = self
            .rauc
            .install(&summary.path, &mut |percent| {
                status.send_if_modified(|s| {
                    let changed = s.progress != percent;
                    s.progress = percent;
                    changed
                });
            })
            .await;
        // Installed or not, the file is of no further use and /data is small.
        let _ = tokio::fs::remove_file(&summary.path).await;
        if let Err(e) = installed {
            self.persisted.refused.push(version.clone());
            return self
                .fail(
                    UpdateState::Installing,
                    Reason::InstallFailed,
                    Some(&version),
                    e.to_string(),
                )
                .await;
        }
        self.persisted.phase = Phase::Installed {
            release: release_json.clone(),
            from_slot: from_slot.clone(),
        };
        self.report(
            UpdateState::Installing,
            UpdateState::Rebooting,
            Reason::Installed,
            Some(&version),
            None,
        )
        .await?;
        self.request_reboot(release_json, from_slot, &version).await
    }

    fn locations(&self, manifest: &ReleaseManifest) -> Vec<Uri> {
        let mut urls: Vec<Uri> = manifest
            .locations
            .iter()
            .filter_map(|l| l.parse().ok())
            .collect();
        let by_hash = format!(
            "{}/v1/bundles/{}",
            self.settings.server,
            hex::encode(manifest.bundle_sha256)
        );
        if let Ok(u) = by_hash.parse() {
            urls.push(u);
        }
        urls
    }

    async fn request_reboot(
        &mut self,
        release_json: String,
        from_slot: String,
        version: &str,
    ) -> Result<Outcome, AgentError> {
        self.persisted.phase = Phase::Rebooting {
            release: release_json,
            from_slot,
        };
        self.store.save(&self.persisted)?;
        self.set_state(UpdateState::Rebooting);
        tracing::info!(version, "rebooting into the new slot");
        self.reboot.reboot().await?;
        Ok(Outcome::RebootRequested)
    }

    /// Gives up on the booted (new) slot: `Mark(bad)`, then reboot into the old one.
    async fn roll_back(&mut self) -> Result<Outcome, AgentError> {
        self.rauc.mark_booted(false).await?;
        self.set_state(UpdateState::Rebooting);
        self.reboot.reboot().await?;
        Ok(Outcome::RebootRequested)
    }

    /// After the reboot that should have started the new slot.
    async fn after_boot(
        &mut self,
        release_json: &str,
        from_slot: Option<&str>,
        manifest: &ReleaseManifest,
    ) -> Result<Outcome, AgentError> {
        let version = manifest.version.to_string();
        let booted = self.rauc.booted_slot().await?;
        if Some(booted.as_str()) == from_slot {
            // The bootloader fell back: attempts ran out, or the slot was marked bad.
            self.persisted.refused.push(version.clone());
            return self
                .fail(
                    UpdateState::Rebooting,
                    Reason::RolledBack,
                    Some(&version),
                    format!("slot {booted} is running again: the new slot did not boot or was marked bad"),
                )
                .await;
        }
        self.report(
            UpdateState::Rebooting,
            UpdateState::CheckingHealth,
            Reason::Booted,
            Some(&version),
            Some(format!("booted slot {booted}")),
        )
        .await?;
        if let Err(why) = self.health.check().await {
            tracing::warn!(%why, "health check failed; marking the slot bad and rebooting");
            // Persisted (with the report) before Mark(bad): a cut anywhere from here on
            // resumes the rollback instead of running on, or committing, the bad slot.
            self.persisted.refused.push(version.clone());
            self.persisted.phase = Phase::RollingBack {
                release: release_json.to_owned(),
                bad_slot: booted.clone(),
            };
            self.record_failure(Reason::HealthFailed, &why);
            self.report(
                UpdateState::CheckingHealth,
                UpdateState::Failed,
                Reason::HealthFailed,
                Some(&version),
                Some(why),
            )
            .await?;
            return self.roll_back().await;
        }
        self.report(
            UpdateState::CheckingHealth,
            UpdateState::Committing,
            Reason::Healthy,
            Some(&version),
            None,
        )
        .await?;
        self.rauc.mark_booted(true).await?;
        self.persisted.phase = Phase::Idle;
        self.persisted.current_version = Some(version.clone());
        self.persisted.last_error = None;
        self.status.send_modify(|s| {
            s.current_version = version.clone();
            s.pending_version.clear();
            s.last_error.clear();
            s.progress = 100;
        });
        self.report(
            UpdateState::Committing,
            UpdateState::Idle,
            Reason::Committed,
            Some(&version),
            None,
        )
        .await?;
        Ok(Outcome::Committed { version })
    }

    /// Ends the update as failed: back to idle (persisted), error recorded and reported.
    async fn fail(
        &mut self,
        from: UpdateState,
        reason: Reason,
        version: Option<&str>,
        message: String,
    ) -> Result<Outcome, AgentError> {
        tracing::warn!(%reason, %message, "update failed");
        self.persisted.phase = Phase::Idle;
        self.record_failure(reason, &message);
        self.report(
            from,
            UpdateState::Failed,
            reason,
            version,
            Some(message.clone()),
        )
        .await?;
        Ok(Outcome::Failed { reason, message })
    }

    /// Sets `LastError` (persisted with the next save) and clears the pending version.
    fn record_failure(&mut self, reason: Reason, message: &str) {
        let last = format!("{reason}: {message}");
        self.persisted.last_error = Some(last.clone());
        self.status.send_modify(|s| {
            s.last_error = last;
            s.pending_version.clear();
        });
    }

    fn set_state(&self, state: UpdateState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    /// Persists (with the next sequence number), publishes and reports one transition. The
    /// report joins the unsent queue in the same write as the state, then the queue is sent.
    async fn report(
        &mut self,
        from: UpdateState,
        to: UpdateState,
        reason: Reason,
        version: Option<&str>,
        detail: Option<String>,
    ) -> Result<(), AgentError> {
        self.persisted.seq += 1;
        let report = StatusReport {
            device: self.settings.device.clone(),
            seq: self.persisted.seq,
            at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs(),
            from,
            to,
            reason,
            current_version: self.status.borrow().current_version.clone(),
            release_version: version.map(str::to_owned),
            detail,
        };
        tracing::info!(%from, %to, %reason, seq = report.seq, "transition");
        let unsent = &mut self.persisted.unsent;
        unsent.push(report);
        if unsent.len() > MAX_UNSENT_REPORTS {
            let dropped = unsent.len() - MAX_UNSENT_REPORTS;
            unsent.drain(..dropped);
            tracing::warn!(dropped, "report queue full; oldest reports dropped");
        }
        self.store.save(&self.persisted)?;
        self.set_state(to);
        self.send_reports().await
    }

    /// Sends queued reports in order until the first failure (the rest wait for the next
    /// transition or poll), then persists what is left.
    pub async fn send_reports(&mut self) -> Result<(), AgentError> {
        let mut sent = 0;
        for report in &self.persisted.unsent {
            match self.reporter.report(report).await {
                Ok(()) => sent += 1,
                Err(error) => {
                    tracing::warn!(seq = report.seq, %error, queued = self.persisted.unsent.len() - sent, "status report not delivered; kept for later");
                    break;
                }
            }
        }
        if sent > 0 {
            self.persisted.unsent.drain(..sent);
            self.store.save(&self.persisted)?;
        }
        Ok(())
    }
}
