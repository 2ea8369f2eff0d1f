//! The daemon: wires the config to the real systems and runs the agent loop (resume, then
//! D-Bus commands and jittered polls) until shutdown.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use rauc_client::RaucClient;
use spark_dbus::UPDATE1_NAME;
use spark_release::TrustedKeys;
use tokio::sync::mpsc;

use crate::agent::{Agent, AgentError, Outcome, Settings};
use crate::config::Config;
use crate::download::DownloadOptions;
use crate::https::HttpsClient;
use crate::service::{self, COMMAND_QUEUE, Command};
use crate::system::{
    ConfiguredHealth, HealthCheck, HttpsReporter, Rauc, Reboot, Reporter, SystemdReboot,
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
        SystemdReboot,
        ConfiguredHealth(config.health.clone()),
        reporter,
    )?;
    run_agent(agent, &conn, config.poll_interval(), shutdown, ready).await
}

/// The agent loop on `conn`: serve `io.spark.Update1`, resume, then handle commands and polls.
pub async fn run_agent<R: Rauc, B: Reboot, H: HealthCheck, P: Reporter>(
    mut agent: Agent<R, B, H, P>,
    conn: &zbus::Connection,
    poll: Duration,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let (tx, mut rx) = mpsc::channel(COMMAND_QUEUE);
    service::serve(conn, agent.subscribe(), tx).await?;
    conn.request_name(UPDATE1_NAME).await?;
    ready();
    tokio::pin!(shutdown);

    let mut rebooting = false;
    let outcome = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        outcome = agent.resume() => outcome?,
    };
    tracing::info!(?outcome, "resumed");
    rebooting |= outcome == Outcome::RebootRequested;

    loop {
        let wait = jittered(poll);
        let command = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            command = rx.recv() => match command {
                Some(c) => c,
                None => return Ok(()),
            },
            _ = tokio::time::sleep(wait) => Command::CheckNow,
        };
        if rebooting {
            // The system is going down; starting anything new now would only be cut off.
            continue;
        }
        // A shutdown mid-step is a power cut as far as the agent is concerned: the persisted
        // state resumes it on the next start.
        let result = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            result = async {
                match command {
                    Command::CheckNow => agent.check_now().await,
                    Command::Offer(bytes) => agent.offer(&bytes).await,
                }
            } => result,
        };
        match result {
            Ok(outcome) => {
                tracing::info!(?outcome, "update step done");
                rebooting |= outcome == Outcome::RebootRequested;
            }
            // The server is unreachable or refused the poll: try again at the next one.
            Err(e @ (AgentError::Poll(_) | AgentError::PollStatus { .. })) => {
                tracing::warn!(error = %e, "poll failed");
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `base` ± 20 %, so a fleet that booted together does not poll together.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}
