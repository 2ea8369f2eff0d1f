//! The daemon: wires the config to the real systems and runs the agent loop (resume, then
//! D-Bus commands and jittered polls) until shutdown.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use rauc_client::RaucClient;
use spark_dbus::UPDATE1_NAME;
use spark_dbus::UpdateState;
use spark_release::TrustedKeys;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::{Agent, AgentError, Gate, Outcome, Refusal, Settings, Source, Status};
use crate::config::Config;
use crate::download::DownloadOptions;
use crate::https::HttpsClient;
use crate::service::{self, COMMAND_QUEUE, Command, RebootRefused};
use crate::store::{Phase, Store};
use crate::system::{
    CommandReboot, ConfiguredHealth, HealthCheck, HttpsReporter, Rauc, Reboot, Reporter,
};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tls(#[from] crate::https::TlsSetupError),
    #[error("cannot load release key: {0}")]
    Key(#[from] spark_release::KeyError),
    #[error("no release key configured: set release-keys in the config")]
    NoKeys,
    #[error("cannot reach RAUC: {0}; is rauc.service running?")]
    Rauc(#[from] rauc_client::RaucError),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Builds everything from `config` against the system bus and runs until `shutdown` resolves.
/// `ready` is called once the D-Bus service is up (sd_notify READY in `main`).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let mut client =
        HttpsClient::from_pem_files(&config.server_ca, &config.device_cert, &config.device_key)?;
    client.timeout = Duration::from_secs(60);
    let mut keys = TrustedKeys::new();
    for path in &config.release_keys {
        keys.load_pem_file(path)?;
    }
    if keys.is_empty() {
        return Err(DaemonError::NoKeys);
    }
    let rauc = RaucClient::connect_system().await?;
    let conn = rauc.connection().clone();
    let settings = Settings {
        device: config.device.clone(),
        data_dir: config.data_dir.clone(),
        server: config.server.trim_end_matches('/').to_owned(),
        factory_version: config.factory_version.clone(),
        download: DownloadOptions {
            rate_limit: config.rate_limit,
            reserve: config.reserve_bytes,
            ..DownloadOptions::default()
        },
    };
    // Reports are best effort and sent inline: a short bound keeps a dead link from holding
    // up each transition for the full download timeout.
    let mut report_client = client.clone();
    report_client.timeout = Duration::from_secs(10);
    let reporter = HttpsReporter {
        client: report_client,
        server: settings.server.clone(),
    };
    let agent = Agent::open(
        settings,
        client,
        keys,
        rauc,
        CommandReboot {
            argv: config.reboot_command.clone(),
        },
        ConfiguredHealth {
            config: config.health.clone(),
            bus: Some(conn.clone()),
        },
        reporter,
    )?;
    run_agent(agent, &conn, config.poll_interval(), shutdown, ready).await
}

/// The agent loop on `conn`: serve `io.spark.Update1`, resume, then run one step at a time
/// (a poll, an offer, the queued offer) while still answering D-Bus commands:
///
/// - an offer that arrives while a step runs is checked at once ([`Gate`]) and, if it passes,
///   queued on `/data`, replacing an older queued one; it is acted on when the current update
///   ends, or after the reboot that ends it (the Mender/hawkBit behaviour: the running update
///   is not aborted, the newest assignment follows it);
/// - a commanded reboot waits out its delay, and if RAUC is installing when it falls due,
///   until the install ends; it is refused outright while RAUC installs.
pub async fn run_agent<R: Rauc, B: Reboot + Clone, H: HealthCheck, P: Reporter>(
    mut agent: Agent<R, B, H, P>,
    conn: &zbus::Connection,
    poll: Duration,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::channel(COMMAND_QUEUE);
    let mut ctl = Control {
        gate: agent.gate().await?,
        store: agent.store().clone(),
        status: agent.subscribe(),
        rebooter: agent.rebooter(),
        reboot_at: None,
        rebooting: false,
        poll_wanted: false,
    };
    // Nothing to pick up: resuming is one RAUC call, done before the service appears so that
    // the first offer meets an idle agent. Otherwise the resumed step runs like any other.
    let mut next = Some(Step::Resume);
    if agent.persisted().phase == Phase::Idle {
        let outcome = agent.resume().await?;
        tracing::info!(?outcome, "resumed");
        next = (!agent.persisted().unsent.is_empty()).then_some(Step::SendReports);
    }
    service::serve(conn, agent.subscribe(), tx).await?;
    conn.request_name(UPDATE1_NAME).await?;
    ready();
    tokio::pin!(shutdown);

    loop {
        let step = match next.take() {
            Some(step) => step,
            None => {
                if let Some(offer) = ctl.queued_offer()? {
                    Step::Queued(offer)
                } else if std::mem::take(&mut ctl.poll_wanted) && !ctl.quiet() {
                    Step::Poll
                } else {
                    let wait = jittered(poll);
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        command = rx.recv() => match command {
                            None => return Ok(()),
                            Some(command) => match ctl.idle(command) {
                                Some(step) => step,
                                None => continue,
                            },
                        },
                        _ = tokio::time::sleep(wait), if !ctl.quiet() => Step::Poll,
                        _ = ctl.reboot_due() => {
                            ctl.reboot_now(&agent).await;
                            continue;
                        }
                    }
                }
            }
        };
        let queued = match &step {
            Step::Queued(offer) => Some(offer.clone()),
            _ => None,
        };
        // A shutdown mid-step is a power cut as far as the agent is concerned: the persisted
        // state resumes it on the next start.
        let result = {
            let run = run_step(&mut agent, step);
            tokio::pin!(run);
            let mut installing_when_due = false;
            loop {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    result = &mut run => break Some(result),
                    Some(command) = rx.recv() => ctl.busy(command),
                    _ = ctl.reboot_due(), if !installing_when_due => {
                        if ctl.status.borrow().state == UpdateState::Installing {
                            // Let RAUC finish; the reboot follows the step.
                            installing_when_due = true;
                        } else {
                            // Dropping the step is what the reboot would do to it anyway.
                            break None;
                        }
                    }
                }
            }
        };
        if let Some(offer) = queued {
            ctl.store.clear_offer(&offer).map_err(AgentError::from)?;
        }
        match result {
            // The step was cut short by a commanded reboot that fell due.
            None => ctl.reboot_now(&agent).await,
            Some(Ok(outcome)) => {
                tracing::info!(?outcome, "update step done");
                if outcome == Outcome::RebootRequested {
                    ctl.rebooting = true;
                    ctl.reboot_at = None;
                }
            }
            // The server is unreachable or refused the poll: try again at the next one.
            Some(Err(e @ (AgentError::Poll(_) | AgentError::PollStatus { .. }))) => {
                tracing::warn!(error = %e, "poll failed");
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// One unit of agent work.
enum Step {
    Resume,
    /// Reports kept from an earlier run.
    SendReports,
    Poll,
    Offer {
        signed: Vec<u8>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Queued(String),
}

async fn run_step<R: Rauc, B: Reboot, H: HealthCheck, P: Reporter>(
    agent: &mut Agent<R, B, H, P>,
    step: Step,
) -> Result<Outcome, AgentError> {
    match step {
        Step::Resume => {
            let outcome = agent.resume().await?;
            tracing::info!(?outcome, "resumed");
            // Reports a power cut or a dead link kept from the OTA server.
            agent.send_reports().await?;
            Ok(outcome)
        }
        Step::SendReports => {
            agent.send_reports().await?;
            Ok(Outcome::Idle)
        }
        Step::Poll => {
            agent.send_reports().await?;
            agent.check_now().await
        }
        Step::Offer { signed, reply } => {
            agent
                .offer_from(&signed, Source::Pushed, |verdict| {
                    let _ = reply.send(verdict);
                })
                .await
        }
        Step::Queued(release) => {
            tracing::info!("acting on the offer queued while busy");
            agent
                .offer_from(release.as_bytes(), Source::Queued, |_| {})
                .await
        }
    }
}

/// What the loop keeps beside the agent so it can answer commands while a step holds the agent.
struct Control<B> {
    gate: Gate,
    store: Store,
    status: watch::Receiver<Status>,
    rebooter: B,
    /// A commanded reboot, when it falls due.
    reboot_at: Option<tokio::time::Instant>,
    /// A reboot was requested (by the agent or a command): start nothing new.
    rebooting: bool,
    /// `CheckNow` came while a step ran.
    poll_wanted: bool,
}

impl<B: Reboot> Control<B> {
    /// No new work: the system is going down or is about to.
    fn quiet(&self) -> bool {
        self.rebooting || self.reboot_at.is_some()
    }

    fn queued_offer(&self) -> Result<Option<String>, AgentError> {
        if self.quiet() {
            return Ok(None);
        }
        Ok(self.store.queued_offer()?)
    }

    async fn reboot_due(&self) {
        match self.reboot_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// A command while no step runs: what to do next, if anything.
    fn idle(&mut self, command: Command) -> Option<Step> {
        match command {
            Command::CheckNow if !self.quiet() => Some(Step::Poll),
            Command::Offer { signed, reply } if !self.quiet() => {
                Some(Step::Offer { signed, reply })
            }
            command => {
                self.busy(command);
                None
            }
        }
    }

    /// A command while a step runs (or a reboot is due): answered without the agent.
    fn busy(&mut self, command: Command) {
        match command {
            // Polled once the running step ends (an update in progress makes it a no-op).
            Command::CheckNow => self.poll_wanted = true,
            Command::Offer { signed, reply } => {
                let _ = reply.send(self.queue_offer(&signed));
            }
            Command::Reboot { delay, reply } => {
                let verdict = if self.status.borrow().state == UpdateState::Installing {
                    Err(RebootRefused::Installing)
                } else {
                    if !self.rebooting {
                        let at = tokio::time::Instant::now() + delay;
                        self.reboot_at = Some(self.reboot_at.map_or(at, |t| t.min(at)));
                        tracing::info!(?delay, "reboot commanded");
                    }
                    Ok(())
                };
                let _ = reply.send(verdict);
            }
        }
    }

    /// Checks an offer that cannot be acted on now and queues it on `/data` for later.
    fn queue_offer(&self, signed: &[u8]) -> Result<(), Refusal> {
        let (current, pending) = {
            let status = self.status.borrow();
            (
                status.current_version.clone(),
                status.pending_version.clone(),
            )
        };
        let (release, manifest) = self.gate.check(signed, &current)?;
        let version = manifest.version.to_string();
        if version == pending {
            tracing::info!(%version, "offer of the release already in progress");
            return Ok(());
        }
        self.store
            .queue_offer(&release.to_json())
            .map_err(|e| Refusal {
                reason: spark_dbus::report::Reason::Internal,
                code: "store",
                version: Some(version.clone()),
                message: e.to_string(),
            })?;
        tracing::info!(%version, "offer queued until the current update ends");
        Ok(())
    }

    /// Carries out a commanded reboot through the agent's reboot seam.
    async fn reboot_now<R: Rauc, H: HealthCheck, P: Reporter>(
        &mut self,
        agent: &Agent<R, B, H, P>,
    ) {
        self.reboot_at = None;
        if self.rebooting {
            return;
        }
        tracing::info!("rebooting as commanded");
        match self.rebooter.reboot().await {
            Ok(()) => {
                self.rebooting = true;
                agent.publish_state(UpdateState::Rebooting);
            }
            Err(e) => tracing::error!(error = %e, "commanded reboot failed"),
        }
    }
}

/// `base` ± 20 %, so a fleet that booted together does not poll together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}
