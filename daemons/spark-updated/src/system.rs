//! The external systems the agent drives, each behind a narrow trait so the same agent logic runs
//! against the real services on the device and against test doubles: RAUC ([`Rauc`]), the
//! reboot ([`Reboot`]), the health check ([`HealthCheck`]) and the OTA server's status endpoint
//! ([`Reporter`]).

use std::path::Path;
use std::time::Duration;

use rauc_client::{InstallArgs, RaucClient, RaucError};
use spark_dbus::report::StatusReport;

// The agent is generic over these traits and runs on one task; the futures need not be `Send`
// and the traits are never used as `dyn`, which is what the lint guards against.
#[allow(async_fn_in_trait)]
/// What the agent needs from RAUC.
pub trait Rauc {
    /// Bootname of the booted slot (`A`, `B`).
    async fn booted_slot(&self) -> Result<String, RaucError>;
    /// Bundle version installed in the booted slot, if RAUC recorded one.
    async fn booted_version(&self) -> Result<Option<String>, RaucError>;
    /// The system's `compatible`.
    async fn compatible(&self) -> Result<String, RaucError>;
    /// Installs the bundle, reporting percent done.
    async fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u32)) -> Result<(), RaucError>;
    /// Marks the booted slot good (commit) or bad (give up on it).
    async fn mark_booted(&self, good: bool) -> Result<(), RaucError>;
}

/// Bound on one RAUC install; a rootfs write on the BeagleBone's eMMC takes a few minutes.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl Rauc for RaucClient {
    async fn booted_slot(&self) -> Result<String, RaucError> {
        self.boot_slot().await
    }

    async fn booted_version(&self) -> Result<Option<String>, RaucError> {
        Ok(self
            .slot_status()
            .await?
            .into_iter()
            .find(|s| s.is_booted())
            .and_then(|s| s.bundle_version))
    }

    async fn compatible(&self) -> Result<String, RaucError> {
        RaucClient::compatible(self).await
    }

    async fn install(&self, bundle: &Path, progress: &mut dyn FnMut(u32)) -> Result<(), RaucError> {
        RaucClient::install(
            self,
            bundle,
            &InstallArgs::default(),
            INSTALL_TIMEOUT,
            |p| progress(p.percent.clamp(0, 100) as u32),
        )
        .await
        .map(drop)
    }

    async fn mark_booted(&self, good: bool) -> Result<(), RaucError> {
        if good {
            self.mark_good_booted().await.map(drop)
        } else {
            self.mark_bad_booted().await.map(drop)
        }
    }
}

/// A reboot that could not be requested.
#[derive(Debug, thiserror::Error)]
#[error("cannot reboot: {0}; reboot the device by hand to finish the update")]
pub struct RebootError(pub String);

#[allow(async_fn_in_trait)]
/// Restarts the device. On success the agent stops doing anything: its persisted state says
/// what to do after the boot.
pub trait Reboot {
    async fn reboot(&self) -> Result<(), RebootError>;
}

/// The configured reboot command (`reboot-command`, default `systemctl reboot`): a command that
/// exits 0 once the reboot is under way.
#[derive(Debug, Clone)]
pub struct CommandReboot {
    pub argv: Vec<String>,
}

impl Default for CommandReboot {
    fn default() -> Self {
        CommandReboot {
            argv: vec!["systemctl".into(), "reboot".into()],
        }
    }
}

impl Reboot for CommandReboot {
    async fn reboot(&self) -> Result<(), RebootError> {
        run_ok(&self.argv).await.map_err(RebootError)
    }
}

#[allow(async_fn_in_trait)]
/// Decides whether the booted new slot works. `Err` carries what failed.
pub trait HealthCheck {
    async fn check(&self) -> Result<(), String>;
}

/// The configured check: required units active and commands exiting 0, retried until the
/// timeout because units may still be starting right after boot; then, if configured, the
/// uplink must report `io.spark.Uplink1.Connected` within its own bound.
#[derive(Debug, Clone)]
pub struct ConfiguredHealth {
    pub config: crate::config::HealthConfig,
    /// The system bus, for the uplink rule (`None`: the rule fails if configured).
    pub bus: Option<zbus::Connection>,
}

impl HealthCheck for ConfiguredHealth {
    async fn check(&self) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        let deadline = started + Duration::from_secs(self.config.timeout_secs);
        loop {
            let result = self.once().await;
            if result.is_ok() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if let Some(within) = self.config.uplink_connected_within_secs {
            let bus = self
                .bus
                .as_ref()
                .ok_or("the uplink rule needs the system bus, which the agent has not got")?;
            // Counted from the start of the check, i.e. shortly after boot.
            uplink_connected(bus, started + Duration::from_secs(within)).await?;
        }
        Ok(())
    }
}

impl ConfiguredHealth {
    async fn once(&self) -> Result<(), String> {
        for unit in &self.config.required_units {
            run_ok(&[
                "systemctl".into(),
                "is-active".into(),
                "--quiet".into(),
                unit.clone(),
            ])
            .await
            .map_err(|e| format!("unit {unit} is not active ({e})"))?;
        }
        for command in &self.config.commands {
            run_ok(command).await?;
        }
        Ok(())
    }
}

/// How often the uplink rule reads `Connected` again besides reacting to `PropertiesChanged`:
/// covers uplinkd starting (or restarting) after the rule began to wait.
const UPLINK_RECHECK: Duration = Duration::from_secs(1);

/// Waits until `io.spark.Uplink1.Connected` is true, `Err` if it is not by `deadline`.
///
/// The property is read at once and then again on every `PropertiesChanged` of uplinkd's
/// object (and every [`UPLINK_RECHECK`], because uplinkd may not be on the bus yet).
pub async fn uplink_connected(
    bus: &zbus::Connection,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    use futures_util::StreamExt;
    let setup = async {
        let uplink = spark_dbus::Uplink1Proxy::builder(bus)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let changes = zbus::fdo::PropertiesProxy::builder(bus)
            .destination(spark_dbus::UPLINK1_NAME)?
            .path(spark_dbus::UPLINK1_PATH)?
            .build()
            .await?
            .receive_properties_changed()
            .await?;
        zbus::Result::Ok((uplink, changes))
    };
    let (uplink, mut changes) = setup
        .await
        .map_err(|e| format!("cannot follow io.spark.Uplink1 on the bus: {e}"))?;
    loop {
        let last = match uplink.connected().await {
            Ok(true) => return Ok(()),
            Ok(false) => "io.spark.Uplink1.Connected stayed false".to_owned(),
            Err(e) => {
                format!("cannot read io.spark.Uplink1.Connected ({e}); is spark-uplinkd running?")
            }
        };
        let woken = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                _ = changes.next() => {}
                _ = tokio::time::sleep(UPLINK_RECHECK) => {}
            }
        })
        .await;
        if woken.is_err() {
            return Err(format!("uplink not connected in time: {last}"));
        }
    }
}

/// Runs argv, `Err` with a description unless it exits 0 within a minute.
async fn run_ok(argv: &[String]) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(60), child).await {
        Err(_) => Err(format!("{argv:?} did not finish within 60 s")),
        Ok(Err(e)) => Err(format!("cannot run {argv:?}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "{argv:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[allow(async_fn_in_trait)]
/// Delivers one status report to the OTA server. The agent keeps undelivered reports in a
/// bounded queue on `/data` and sends them again, in order, after the next success; `Err`
/// says why this one did not arrive.
pub trait Reporter {
    async fn report(&self, report: &StatusReport) -> Result<(), String>;
}

/// POSTs reports to `{server}/v1/devices/{device}/update-status` (see [`spark_dbus::report`]).
#[derive(Debug, Clone)]
pub struct HttpsReporter {
    pub client: crate::https::HttpsClient,
    pub server: String,
}

impl Reporter for HttpsReporter {
    async fn report(&self, report: &StatusReport) -> Result<(), String> {
        let url = format!("{}/v1/devices/{}/update-status", self.server, report.device);
        let uri = url
            .parse()
            .map_err(|_| format!("report URL {url:?} is invalid"))?;
        // Serialising our own report type cannot fail.
        let json = serde_json::to_vec(report).expect("report serialises");
        match self.client.post_json(&uri, json).await {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => Err(format!("{url} answered {status}")),
            Err(e) => Err(e.to_string()),
        }
    }
}
