//! One simulated gateway running the real daemons: the board is a [`Testbed`] (private system
//! bus, the real `rauc service`, file-backed A/B slots, the simulated U-Boot), the meter radio is
//! `spark-meter-sim`, and `spark-meterd`, `spark-uplinkd` and `spark-updated` run as processes
//! on the board's bus with their configs and `/data` in the gateway's directory.
//!
//! A reboot is the board's part: `spark-updated` asks for one through its `reboot-command`,
//! which here drops a flag file; [`Gateway::service`] sees it, stops the daemons with SIGTERM
//! (as systemd does at shutdown), runs the boot script ([`Testbed::reboot`]) and starts the
//! daemons again on the slot U-Boot chose. The firmware version the booted slot holds is what
//! RAUC recorded for it, which is what the root filesystem's `/etc/os-release` would say.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spark_testbed::{Slot, Testbed, TestbedOptions};

use crate::cloud::{CloudLink, write};
use crate::process::{Daemon, wait_for};
use crate::{Binaries, FleetError};

/// How a gateway is set up.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Serial number: the CN of its device certificate.
    pub serial: String,
    /// Where its configs, `/data` and logs go.
    pub dir: PathBuf,
    /// `[system] compatible=` of its RAUC.
    pub compatible: String,
    /// The version of the factory image in slot A (what the agent assumes while RAUC knows
    /// none).
    pub factory_version: String,
    /// A bundle installed at the factory: through RAUC before the first boot, which then runs
    /// it (slot B) marked good, so RAUC knows the running version from the start.
    pub factory_bundle: Option<PathBuf>,
    /// Meters on its radio.
    pub meters: u32,
    /// Real milliseconds per 15-minute reading interval of the radio simulator.
    pub interval_ms: u64,
    /// Seed of the radio simulator (different gateways, different meters).
    pub seed: u64,
    /// The health check after an update fails while this version is booted (a bad build on
    /// this unit's hardware): the agent marks the slot bad and goes back.
    pub fail_health_on: Option<String>,
    /// `RUST_LOG` of the daemons.
    pub log: String,
    /// A daemon that dies is started again by [`Gateway::service`] (systemd's
    /// `Restart=on-failure`); otherwise its death is an error, which tests want to see.
    pub restart_on_failure: bool,
    /// `spark-updated`'s poll interval: the fallback when a push does not arrive.
    pub poll_interval_secs: u64,
    /// `spark-updated`'s download cap in bytes/s (a cellular link), none by default.
    pub rate_limit: Option<u64>,
    /// Also run `spark-webui` (the on-site page) on a free loopback port, with a password.
    pub webui: bool,
}

impl GatewayOptions {
    pub fn new(serial: &str, dir: impl Into<PathBuf>, compatible: &str) -> GatewayOptions {
        GatewayOptions {
            serial: serial.into(),
            dir: dir.into(),
            compatible: compatible.into(),
            factory_version: "1.0.0".into(),
            factory_bundle: None,
            meters: 20,
            interval_ms: 500,
            seed: 1,
            fail_health_on: None,
            log: "info".into(),
            restart_on_failure: false,
            poll_interval_secs: 3600,
            rate_limit: None,
            webui: false,
        }
    }
}

/// A running gateway. Dropping it kills its processes and removes the board.
#[derive(Debug)]
pub struct Gateway {
    opts: GatewayOptions,
    bins: Binaries,
    link: CloudLink,
    cert: PathBuf,
    key: PathBuf,
    // Daemons before the board: fields drop in order, and they talk to its bus.
    daemons: Vec<Daemon>,
    sim: Daemon,
    bed: Testbed,
    boots: u32,
    restarts: u32,
    booted_version: String,
    /// One `NOTIFY_SOCKET` per daemon (systemd's `Type=notify`), and which said READY=1 this boot.
    notify: Vec<(String, UnixDatagram, bool)>,
    /// This boot reached `boot-complete.target` and the slot was marked good.
    boot_complete: bool,
    /// mark-good calls RAUC refused in a row (it was busy).
    mark_good_failures: u32,
    /// `spark-webui`'s port and site password, when it runs.
    webui: Option<(u16, String)>,
}

/// A per-gateway site password for the demo (printed with the page's URL).
fn site_password(serial: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("site-{}-{:06}", serial.to_lowercase(), n % 1_000_000)
}

/// The gateway's daemons the boot health gate waits for, in start order.
pub const DAEMONS: [&str; 3] = ["spark-meterd", "spark-uplinkd", "spark-updated"];

/// Bound on a daemon stopping after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Gateway {
    /// Issues the device certificate, brings up the board and the radio, and boots.
    pub fn start(
        bins: &Binaries,
        link: &CloudLink,
        opts: GatewayOptions,
    ) -> Result<Gateway, FleetError> {
        let mut opts = opts;
        for sub in ["", "data", "logs"] {
            let d = opts.dir.join(sub);
            std::fs::create_dir_all(&d).map_err(FleetError::io("create", &d))?;
        }
        // Absolute: the daemons resolve relative paths in their configs from the config's
        // folder.
        opts.dir =
            std::fs::canonicalize(&opts.dir).map_err(FleetError::io("resolve", &opts.dir))?;
        let (cert, key) = spark_keys::issue_device(&link.pki_dir, &opts.serial, true)?;
        let mut bed_opts = TestbedOptions::new(&opts.compatible, &link.keyring);
        bed_opts.slot_size = 64 << 20;
        let mut bed = Testbed::start(bed_opts)?;
        if let Some(bundle) = &opts.factory_bundle {
            bed.install(bundle)?;
            bed.reboot()?;
            bed.mark_good()?;
        }

        // The radio module is hardware beside the board: it keeps running across reboots.
        let radio = opts.dir.join("radio.sock");
        let mut cmd = Command::new(&bins.meter_sim);
        cmd.arg("--socket")
            .arg(&radio)
            .args(["--meters", &opts.meters.to_string()])
            .args(["--interval-ms", &opts.interval_ms.to_string()])
            .args(["--seed", &opts.seed.to_string()])
            .arg("--ledger")
            .arg(opts.dir.join("ledger.csv"))
            .arg("--stop-file")
            .arg(opts.dir.join("radio-stop"))
            .env("RUST_LOG", &opts.log);
        let mut sim = Daemon::spawn("spark-meter-sim", cmd, &opts.dir.join("logs/meter-sim.log"))?;
        wait_for(
            "the meter radio simulator's socket",
            Duration::from_secs(30),
            || sim.check_running("starting"),
            || radio.exists().then_some(()),
        )?;

        let mut gw = Gateway {
            booted_version: opts.factory_version.clone(),
            opts,
            bins: bins.clone(),
            link: link.clone(),
            cert,
            key,
            daemons: Vec::new(),
            sim,
            bed,
            boots: 0,
            restarts: 0,
            notify: Vec::new(),
            boot_complete: false,
            mark_good_failures: 0,
            webui: None,
        };
        if gw.opts.webui {
            gw.webui = Some((crate::process::free_port()?, site_password(&gw.opts.serial)));
        }
        for name in DAEMONS {
            let path = gw.notify_path(name);
            let _ = std::fs::remove_file(&path);
            let sock = UnixDatagram::bind(&path).map_err(FleetError::io("bind", &path))?;
            sock.set_nonblocking(true)
                .map_err(FleetError::io("configure", &path))?;
            gw.notify.push((name.to_owned(), sock, false));
        }
        gw.boot()?;
        Ok(gw)
    }

    pub fn serial(&self) -> &str {
        &self.opts.serial
    }

    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// The board: RAUC's view of the slots, the boot environment.
    pub fn board(&self) -> &Testbed {
        &self.bed
    }

    /// The slot the board runs from.
    pub fn booted(&self) -> Slot {
        self.bed.booted()
    }

    /// The firmware version of the booted slot.
    pub fn version(&self) -> &str {
        &self.booted_version
    }

    /// From the next boot on, the health check fails while `version` is booted (`None`: never).
    pub fn set_fail_health_on(&mut self, version: Option<String>) {
        self.opts.fail_health_on = version;
    }

    /// Boots so far (the first start included).
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Readings the radio produced so far (its ledger).
    pub fn generated(&self) -> u64 {
        std::fs::read_to_string(self.opts.dir.join("ledger.csv"))
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0)
    }

    /// Ends the radio's run: it stops generating and exits once meterd has acknowledged every
    /// reading, so the ledger ([`Self::generated`]) is final. The daemons keep running.
    pub fn finish_radio(&mut self, limit: Duration) -> Result<u64, FleetError> {
        write(&self.opts.dir.join("radio-stop"), "")?;
        self.sim
            .wait_exit("handing its last readings to spark-meterd", limit)?;
        Ok(self.generated())
    }

    /// Keeps the gateway going: fails with the log of any process that died, and carries out
    /// a reboot the agent asked for. Returns `true` when it rebooted.
    pub fn service(&mut self) -> Result<bool, FleetError> {
        if !self.opts.dir.join("radio-stop").exists() {
            self.sim.check_running("the gateway ran")?;
        }
        if self.reboot_flag().exists() {
            self.reboot()?;
            return Ok(true);
        }
        for i in 0..self.daemons.len() {
            if let Err(e) = self.daemons[i].check_running("the gateway ran") {
                if !self.opts.restart_on_failure {
                    return Err(e);
                }
                let name = self.daemons[i].name().to_owned();
                tracing::info!(gateway = %self.opts.serial, daemon = %name, "restarting after failure");
                self.daemons[i] = self.spawn_daemon(&name)?;
                self.restarts += 1;
            }
        }
        self.boot_completion()?;
        Ok(false)
    }

    /// An orderly reboot: daemons stopped with SIGTERM, the boot script picks the slot, the
    /// daemons start on it.
    pub fn reboot(&mut self) -> Result<Slot, FleetError> {
        self.shutdown();
        let _ = std::fs::remove_file(self.reboot_flag());
        self.bed.reboot()?;
        self.boot()?;
        Ok(self.bed.booted())
    }

    /// A power cut: every daemon and RAUC killed at once, then the board boots again.
    pub fn power_cut(&mut self) -> Result<Slot, FleetError> {
        for d in &mut self.daemons {
            d.kill();
        }
        self.daemons.clear();
        let _ = std::fs::remove_file(self.reboot_flag());
        self.bed.reboot()?;
        self.boot()?;
        Ok(self.bed.booted())
    }

    /// Stops the daemons (SIGTERM), leaving the board and the radio up.
    pub fn shutdown(&mut self) {
        // Reverse start order, as systemd stops dependents first.
        while let Some(mut d) = self.daemons.pop() {
            d.stop(STOP_GRACE);
        }
    }

    fn reboot_flag(&self) -> PathBuf {
        self.opts.dir.join("reboot-requested")
    }

    fn health_flag(&self) -> PathBuf {
        self.opts.dir.join("health-fails")
    }

    /// Starts the daemons on the booted slot with the configs its root filesystem implies.
    fn boot(&mut self) -> Result<(), FleetError> {
        self.boots += 1;
        let slot = self.bed.booted();
        let status = self.bed.status()?;
        self.booted_version = status
            .slot(slot)
            .and_then(|s| s.bundle_version.clone())
            .unwrap_or_else(|| self.opts.factory_version.clone());
        tracing::info!(gateway = %self.opts.serial, %slot, version = %self.booted_version, boot = self.boots, "boot");
        if self.opts.fail_health_on.as_deref() == Some(self.booted_version.as_str()) {
            write(&self.health_flag(), "this build fails on this unit\n")?;
        } else {
            let _ = std::fs::remove_file(self.health_flag());
        }
        self.write_configs(slot)?;

        self.boot_complete = false;
        let mut buf = [0u8; 512];
        for (_, sock, ready) in &mut self.notify {
            // What the previous boot's daemons said is not this boot's news.
            while sock.recv(&mut buf).is_ok() {}
            *ready = false;
        }
        for name in DAEMONS {
            let d = self.spawn_daemon(name)?;
            self.daemons.push(d);
        }
        if let Some((_, password)) = &self.webui {
            if self.boots == 1 {
                self.set_webui_password(password)?;
            }
            let d = self.spawn_daemon("spark-webui")?;
            self.daemons.push(d);
        }
        Ok(())
    }

    /// `spark-webui set-password`, as at provisioning (the password on stdin).
    fn set_webui_password(&self, password: &str) -> Result<(), FleetError> {
        use std::io::Write as _;
        let mut child = Command::new(&self.bins.webui)
            .arg("set-password")
            .arg("--config")
            .arg(self.opts.dir.join("webui.toml"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| FleetError::Spawn {
                name: "spark-webui set-password".into(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = writeln!(stdin, "{password}");
        }
        let out = child
            .wait_with_output()
            .map_err(FleetError::io("wait for", "spark-webui set-password"))?;
        if !out.status.success() {
            return Err(FleetError::Command {
                command: "spark-webui set-password".into(),
                detail: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// The on-site page's URL and site password, when `spark-webui` runs.
    pub fn webui(&self) -> Option<(String, &str)> {
        self.webui
            .as_ref()
            .map(|(port, pw)| (format!("https://127.0.0.1:{port}/"), pw.as_str()))
    }

    /// Starts one of [`DAEMONS`] on the board's bus with its config.
    fn spawn_daemon(&self, name: &str) -> Result<Daemon, FleetError> {
        let (bin, config) = match name {
            "spark-meterd" => (&self.bins.meterd, "meterd.toml"),
            "spark-uplinkd" => (&self.bins.uplinkd, "uplinkd.toml"),
            "spark-webui" => (&self.bins.webui, "webui.toml"),
            _ => (&self.bins.updated, "updated.toml"),
        };
        let dir = &self.opts.dir;
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(dir.join(config))
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bed.bus_address())
            .env("NOTIFY_SOCKET", self.notify_path(name))
            .env("RUST_LOG", &self.opts.log);
        Daemon::spawn(name, cmd, &dir.join(format!("logs/{name}.log")))
            .inspect(|_| tracing::debug!(name, boot = self.boots, "daemon started"))
    }

    /// SIGKILL to one daemon (a crash, or the kernel's OOM killer); with
    /// [`GatewayOptions::restart_on_failure`], [`Self::service`] starts it again as systemd's
    /// `Restart=on-failure` would. False when no such daemon runs.
    pub fn kill_daemon(&mut self, name: &str) -> bool {
        match self.daemons.iter_mut().find(|d| d.name() == name) {
            Some(d) if d.pid().is_some() => {
                d.kill();
                true
            }
            _ => false,
        }
    }

    /// What systemd and meta-rauc do on the device once per boot: when every daemon has said
    /// READY=1 (`spark-health.service` sees them active), `boot-complete.target` is reached and
    /// `rauc-mark-good.service` marks the booted slot good, which resets its U-Boot counter.
    /// Without it a unit that boots three times without an update would fall back.
    fn boot_completion(&mut self) -> Result<(), FleetError> {
        let mut buf = [0u8; 512];
        for (_, sock, ready) in &mut self.notify {
            while let Ok(n) = sock.recv(&mut buf) {
                if buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1") {
                    *ready = true;
                }
            }
        }
        if !self.boot_complete && self.notify.iter().all(|(_, _, r)| *r) {
            match self.bed.mark_good() {
                Ok(()) => {
                    self.boot_complete = true;
                    self.mark_good_failures = 0;
                    tracing::debug!(gateway = %self.opts.serial, slot = %self.bed.booted(), "boot complete: marked good");
                }
                // RAUC serves one such call at a time ("already processing a different
                // method" while the agent asks it something): try again next round.
                Err(e) if self.mark_good_failures < 100 => {
                    self.mark_good_failures += 1;
                    tracing::debug!(gateway = %self.opts.serial, error = %e, "mark-good refused; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether this boot reached `boot-complete.target` (its slot marked good).
    pub fn boot_complete(&self) -> bool {
        self.boot_complete
    }

    fn notify_path(&self, name: &str) -> PathBuf {
        self.opts.dir.join(format!("notify-{name}.sock"))
    }

    /// Daemons restarted after they died (with `restart_on_failure`).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    fn write_configs(&self, slot: Slot) -> Result<(), FleetError> {
        let dir = &self.opts.dir;
        let bus = self.bed.bus_address();
        let data = dir.join("data");
        if let Some((port, _)) = &self.webui {
            write(
                &dir.join("webui.toml"),
                &format!(
                    "listen = \"127.0.0.1:{port}\"\ndata-dir = \"{data}\"\nbus-address = \"{bus}\"\nrefresh-secs = 2\n",
                    data = data.join("webui").display(),
                ),
            )?;
        }
        write(
            &dir.join("meterd.toml"),
            &format!(
                "radio = \"unix:{radio}\"\ndata-dir = \"{data}\"\nbus-address = \"{bus}\"\n",
                radio = dir.join("radio.sock").display(),
                data = data.join("meterd").display(),
            ),
        )?;
        write(
            &dir.join("uplinkd.toml"),
            &format!(
                r#"data-dir = "{data}"
bus-address = "{bus}"
firmware-version = "{version}"
booted-slot = "{slot}"
batch-window-secs = 0.2
health-interval-secs = 0.5
[cloud]
address = "{ingest}"
server-name = "localhost"
server-ca = "{ca}"
device-cert = "{cert}"
device-key = "{key}"
backoff-min-secs = 0.2
backoff-max-secs = 2
"#,
                data = data.join("uplinkd").display(),
                version = self.booted_version,
                slot = slot.bootname(),
                ingest = self.link.ingest,
                ca = self.link.server_ca.display(),
                cert = self.cert.display(),
                key = self.key.display(),
            ),
        )?;
        write(
            &dir.join("updated.toml"),
            &format!(
                r#"device = "{serial}"
data-dir = "{data}"
server = "{ota}"
server-ca = "{ca}"
device-cert = "{cert}"
device-key = "{key}"
release-keys = ["{release}"]
factory-version = "{factory}"
# Pushed offers do the work; the poll is the fallback.
poll-interval-secs = {poll}
reserve-bytes = 0
{rate}reboot-command = ["touch", "{reboot}"]
[health]
commands = [["test", "!", "-e", "{health}"]]
timeout-secs = 10
uplink-connected-within-secs = 30
"#,
                serial = self.opts.serial,
                data = data.join("updated").display(),
                ota = self.link.ota,
                ca = self.link.server_ca.display(),
                cert = self.cert.display(),
                key = self.key.display(),
                release = self.link.release_pub.display(),
                factory = self.opts.factory_version,
                reboot = self.reboot_flag().display(),
                poll = self.opts.poll_interval_secs,
                rate = self
                    .opts
                    .rate_limit
                    .map(|r| format!("rate-limit = {r}\n"))
                    .unwrap_or_default(),
                health = self.health_flag().display(),
            ),
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}
