//! The daemon: wires the config to the queue, the bus, the puller and the link, and runs them
//! until shutdown.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use spark_proto::BootSlot;
use tokio::sync::{mpsc, watch};

use crate::commands::Commands;
use crate::config::{CloudSet, Config};
use crate::counting::Counters;
use crate::link::{HelloInfo, Link};
use crate::pull::Puller;
use crate::queue::Queue;
use crate::service::{self, Status};
use crate::store::StoreError;
use crate::tls::{self, TlsSetupError};
use crate::usage::LinkUsage;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error("cloud.server-name {name:?} is not a valid DNS name or IP address")]
    ServerName { name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("D-Bus: {0}; is the bus running (or bus-address right)?")]
    Bus(#[from] zbus::Error),
}

/// Runs the daemon until `shutdown` resolves. `ready` is called once the queue is open and
/// `io.spark.Uplink1` is on the bus (sd_notify READY in `main`).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let tls = tls::client_config(&config.cloud)?;
    let name = config.cloud.server_name();
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| DaemonError::ServerName { name })?;
    let queue = Queue::open(&config.data_dir, config.reading_interval_secs)?;
    let tunables = match CloudSet::load(&config.data_dir)? {
        Some(set) => {
            tracing::info!(
                config_version = set.config_version,
                "using the configuration the cloud set"
            );
            set.tunables
        }
        None => config.tunables(),
    };
    let conn = match &config.bus_address {
        Some(addr) => {
            zbus::connection::Builder::address(addr.as_str())?
                .build()
                .await?
        }
        None => zbus::Connection::system().await?,
    };

    let usage = Arc::new(Mutex::new(LinkUsage::load(
        &config.data_dir,
        crate::pull::unix_now(),
    )));
    let initial = Status {
        queue_depth: queue.depth(),
        last_ack_seq: queue.acked(),
        bytes_used_today: usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(crate::pull::unix_now(), 0),
        ..Status::default()
    };
    let head = queue.head();
    let queue = Arc::new(Mutex::new(queue));
    let (status_tx, status_rx) = watch::channel(initial);
    service::serve(&conn, status_rx).await?;
    conn.request_name(spark_dbus::UPLINK1_NAME).await?;

    let counters = Arc::new(Counters::default());
    let (tunables_tx, tunables_rx) = watch::channel(tunables);
    let (results_tx, results_rx) = mpsc::channel(32);
    let commands = Commands::new(
        conn.clone(),
        config.data_dir.clone(),
        tunables_tx,
        results_tx,
    );
    let (head_tx, head_rx) = watch::channel(head);
    let (stop_tx, stop_rx) = watch::channel(false);

    let puller = Puller {
        conn: conn.clone(),
        queue: queue.clone(),
        head: head_tx,
        tunables: tunables_rx.clone(),
        data_dir: config.data_dir.clone(),
        started: Instant::now(),
        counters: counters.clone(),
        usage: usage.clone(),
    };
    let link = Link {
        tls,
        address: config.cloud.address.clone(),
        server_name,
        hello: HelloInfo {
            firmware_version: firmware_version(&config),
            booted_slot: booted_slot(&config),
        },
        handshake_timeout: crate::config::secs(config.cloud.handshake_timeout_secs),
        backoff_min: crate::config::secs(config.cloud.backoff_min_secs),
        backoff_max: crate::config::secs(config.cloud.backoff_max_secs),
        max_in_flight: config.cloud.max_in_flight,
        queue: queue.clone(),
        head: head_rx,
        status: status_tx.clone(),
        counters: counters.clone(),
        tunables: tunables_rx,
        commands,
        results: results_rx,
    };
    let tasks = [
        tokio::spawn(puller.run(stop_rx.clone())),
        tokio::spawn(link.run(stop_rx.clone())),
        tokio::spawn(publish_counters(
            counters.clone(),
            queue,
            usage.clone(),
            status_tx,
            stop_rx.clone(),
        )),
    ];
    ready();
    tracing::info!(cloud = %config.cloud.address, data_dir = %config.data_dir.display(), "spark-uplinkd running");
    shutdown.await;
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    for t in tasks {
        // Each task checks the stop flag at every wait; the bound only guards against a stuck
        // fsync holding the shutdown forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // Keep today's data use for the next start.
    let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
    u.update(
        crate::pull::unix_now(),
        counters.sent() + counters.received(),
    );
    if let Err(e) = u.save() {
        tracing::warn!(error = %e, "cannot save today's link usage; the next start counts from the last health event");
    }
    Ok(())
}

/// Copies the byte counters, today's use and the queue depth into the status once a second.
/// Today's use is only counted here (in memory); it is saved with each health event and at
/// shutdown, as before.
async fn publish_counters(
    counters: Arc<Counters>,
    queue: Arc<Mutex<Queue>>,
    usage: Arc<Mutex<LinkUsage>>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let (sent, received) = (counters.sent(), counters.received());
        let depth = queue.lock().unwrap_or_else(|p| p.into_inner()).depth();
        let today = usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .update(crate::pull::unix_now(), sent + received);
        status.send_if_modified(|s| {
            let changed = (
                s.bytes_sent,
                s.bytes_received,
                s.queue_depth,
                s.bytes_used_today,
            ) != (sent, received, depth, today);
            s.bytes_sent = sent;
            s.bytes_received = received;
            s.queue_depth = depth;
            s.bytes_used_today = today;
            changed
        });
    }
}

/// The configured firmware version, else `VERSION_ID` of `/etc/os-release`, else "0.0.0".
fn firmware_version(config: &Config) -> String {
    if let Some(v) = &config.firmware_version {
        return v.clone();
    }
    os_release_version(Path::new("/etc/os-release")).unwrap_or_else(|| {
        tracing::warn!("no VERSION_ID in /etc/os-release and no firmware-version in the config; reporting 0.0.0");
        "0.0.0".into()
    })
}

fn os_release_version(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_os_release_version(&text)
}

fn parse_os_release_version(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
        .find(|v| !v.is_empty())
}

/// The configured slot, else `rauc.slot=` on the kernel command line, else A.
fn booted_slot(config: &Config) -> BootSlot {
    let text = match &config.booted_slot {
        Some(s) => Some(s.clone()),
        None => std::fs::read_to_string("/proc/cmdline")
            .ok()
            .and_then(|c| parse_cmdline_slot(&c)),
    };
    match text.as_deref() {
        Some("B" | "b") => BootSlot::B,
        Some("A" | "a") => BootSlot::A,
        other => {
            tracing::warn!(slot = ?other, "booted slot unknown (no rauc.slot= on /proc/cmdline); reporting A");
            BootSlot::A
        }
    }
}

fn parse_cmdline_slot(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("rauc.slot="))
        .map(|s| s.to_owned())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_and_slot() {
        assert_eq!(
            parse_os_release_version("NAME=\"Spark\"\nVERSION_ID=\"2026.11.3\"\n").as_deref(),
            Some("2026.11.3")
        );
        assert_eq!(parse_os_release_version("NAME=x\n"), None);
        assert_eq!(
            parse_cmdline_slot("console=ttyS0 root=/dev/mmcblk1p3 rauc.slot=B quiet").as_deref(),
            Some("B")
        );
        assert_eq!(parse_cmdline_slot("quiet"), None);
    }
}
