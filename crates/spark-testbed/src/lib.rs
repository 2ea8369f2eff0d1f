//! Test rig that runs the **real** `rauc service` over file-backed A/B slots and a simulated U-Boot.
//!
//! A [`Testbed`] is one simulated gateway: a temporary directory holding two slot files, a RAUC
//! `system.conf`, a U-Boot environment file with the custom backend that edits it
//! ([`Bootloader`]), a private `dbus-daemon`, and `rauc service` connected to that bus as if it were
//! the system bus. Tests install bundles through the real RAUC (`rauc install` over D-Bus), look at
//! the slot files and the boot environment, and [`Testbed::reboot`] to run the boot script and
//! restart the service on the chosen slot. No part of RAUC is mocked.
//!
//! Everything lives in the testbed's own directory (socket, mount prefix, data directory), so
//! several testbeds run side by side in one process; dropping a testbed kills its processes and
//! removes the directory (set `SPARK_TESTBED_KEEP=1` to keep it for a post-mortem).
//!
//! [`chromium`] loads web pages in headless Chromium for tests of what a person sees.
//!
//! Needs: root, `rauc` (1.8 or newer), `dbus-daemon` and `dbus-send`, `flock`, and for
//! [`fixture`] `openssl` and `mksquashfs`; the kernel needs loop and squashfs to install bundles.
//!
//! ```no_run
//! use spark_testbed::{Slot, Testbed, TestbedOptions};
//! # fn main() -> Result<(), spark_testbed::TestbedError> {
//! let mut bed = Testbed::start(TestbedOptions::new("spark-bbb", "/tmp/ca.pem"))?;
//! bed.install("/tmp/update.raucb".as_ref())?;
//! assert_eq!(bed.bootloader().boot_order()?, [Slot::B, Slot::A]);
//! assert_eq!(bed.reboot()?, Slot::B);
//! bed.mark_good()?;
//! # Ok(()) }
//! ```

mod bootloader;
mod bus;
pub mod chromium;
mod error;
pub mod fixture;
mod process;
mod status;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use crate::bootloader::{BootEnv, Bootloader, Slot};
use crate::bootloader::{write_backend, write_file};
pub use crate::bus::PrivateBus;
pub use crate::error::TestbedError;
use crate::process::{POLL, describe, kill_and_reap, run, run_checked};
pub use crate::status::{SlotStatus, SystemStatus};

/// The D-Bus name RAUC owns once its service is ready.
const RAUC_BUS_NAME: &str = "de.pengutronix.rauc";

/// How a testbed is set up.
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    /// `[system] compatible=`; bundles must carry the same string.
    pub compatible: String,
    /// The CA certificate(s) RAUC trusts (`[keyring] path=`).
    pub keyring: PathBuf,
    /// `[keyring] check-purpose=` (e.g. `codesign`); `None` leaves RAUC's default.
    pub check_purpose: Option<String>,
    /// Size in bytes of each slot file (sparse, zero-filled).
    pub slot_size: u64,
    /// U-Boot's `BOOT_x_LEFT` reset value.
    pub boot_attempts: u32,
    /// The slot the testbed boots first.
    pub booted: Slot,
    /// Appended verbatim to `system.conf` (extra sections such as `[log.install]`).
    pub extra_system_conf: String,
    /// Bound on bringing up `dbus-daemon` and `rauc service` (each).
    pub start_timeout: Duration,
    /// Bound on each `rauc` CLI call (install, info, status, mark).
    pub command_timeout: Duration,
}

impl TestbedOptions {
    /// Defaults: 16 MiB slots, 3 boot attempts, booted from A, no check-purpose, 30 s to start,
    /// 120 s per command.
    pub fn new(compatible: impl Into<String>, keyring: impl Into<PathBuf>) -> Self {
        Self {
            compatible: compatible.into(),
            keyring: keyring.into(),
            check_purpose: None,
            slot_size: 16 << 20,
            boot_attempts: 3,
            booted: Slot::A,
            extra_system_conf: String::new(),
            start_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
        }
    }
}

/// One simulated gateway running the real `rauc service`. Dropping it kills `rauc service` and
/// `dbus-daemon` and removes its directory.
#[derive(Debug)]
pub struct Testbed {
    opts: TestbedOptions,
    system_conf: PathBuf,
    bus_address: String,
    bootloader: Bootloader,
    booted: Slot,
    booted_file: PathBuf,
    service_log: PathBuf,
    boots: u32,
    rauc: Option<Child>,
    dbus: Option<PrivateBus>,
    // Declared last so it is removed after the children are gone (fields drop in order).
    dir: TempDir,
}

impl Testbed {
    /// Creates the testbed directory, starts a private bus and `rauc service` booted from
    /// `opts.booted`, and waits (bounded) until RAUC owns its name on the bus.
    pub fn start(opts: TestbedOptions) -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("spark-testbed-")
            .tempdir()
            .map_err(|source| TestbedError::Io {
                action: "create",
                path: std::env::temp_dir().join("spark-testbed-*"),
                source,
            })?;
        let root = dir.path().to_owned();
        for sub in ["mnt", "data"] {
            create_dir(&root.join(sub))?;
        }
        for slot in Slot::ALL {
            let path = slot_file(&root, slot);
            let io = |source| TestbedError::Io {
                action: "create slot file",
                path: path.clone(),
                source,
            };
            File::create(&path)
                .and_then(|file| file.set_len(opts.slot_size))
                .map_err(io)?;
        }

        let env = root.join("uboot.env");
        let booted_file = root.join("booted");
        let bootloader = Bootloader::new(env.clone(), opts.boot_attempts);
        bootloader.init(opts.booted)?;
        write_file(&booted_file, opts.booted.bootname().as_bytes())?;
        let backend = write_backend(&root, &env, &booted_file, opts.boot_attempts)?;

        let system_conf = root.join("system.conf");
        write_file(
            &system_conf,
            system_conf_text(&opts, &root, &backend).as_bytes(),
        )?;

        // From here on the struct exists, so an early return drops it and kills what started.
        let mut bed = Testbed {
            booted: opts.booted,
            opts,
            system_conf,
            bus_address: String::new(),
            bootloader,
            booted_file,
            service_log: root.join("rauc-service.log"),
            boots: 0,
            rauc: None,
            dbus: None,
            dir,
        };
        bed.start_bus()?;
        bed.start_service()?;
        tracing::debug!(root = %bed.root().display(), bus = %bed.bus_address, "testbed up");
        Ok(bed)
    }

    /// The private bus, for `DBUS_SYSTEM_BUS_ADDRESS` in other processes (or a zbus
    /// `connection::Builder::address`).
    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }

    /// The RAUC `system.conf` the service runs with.
    pub fn system_conf(&self) -> &Path {
        &self.system_conf
    }

    /// The testbed's directory (slot files, env, logs, mount prefix).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The file backing `rootfs.0` (A) or `rootfs.1` (B).
    pub fn slot_path(&self, slot: Slot) -> PathBuf {
        slot_file(self.dir.path(), slot)
    }

    /// The simulated U-Boot environment.
    pub fn bootloader(&self) -> Bootloader {
        self.bootloader.clone()
    }

    /// The slot `rauc service` currently runs as booted from.
    pub fn booted(&self) -> Slot {
        self.booted
    }

    /// What `rauc service` printed so far (all boots, each headed by a marker line).
    pub fn service_log(&self) -> String {
        fs::read_to_string(&self.service_log).unwrap_or_default()
    }

    /// A command whose D-Bus system bus is this testbed's bus, e.g. for an update agent under test.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address);
        cmd
    }

    /// Runs `rauc --conf=<system.conf> ARGS` against this testbed's service (bounded) and returns
    /// its stdout; a non-zero exit is [`TestbedError::Command`] with RAUC's message.
    pub fn rauc<I, S>(&self, args: I) -> Result<String, TestbedError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.command("rauc");
        cmd.arg(format!("--conf={}", self.system_conf.display()))
            .args(args);
        Ok(run_checked(&mut cmd, self.opts.command_timeout)?.stdout)
    }

    /// Installs `bundle` with `rauc install` through the service, as the real update path does.
    pub fn install(&self, bundle: &Path) -> Result<(), TestbedError> {
        // The service resolves the path itself, from its own working directory.
        let bundle = absolute(bundle)?;
        self.rauc([Path::new("install"), &bundle]).map(drop)
    }

    /// `rauc info --keyring=<keyring> --output-format=json BUNDLE`: verifies the signature and
    /// returns the bundle's manifest as JSON.
    pub fn info(&self, bundle: &Path) -> Result<String, TestbedError> {
        let bundle = absolute(bundle)?;
        let keyring = format!("--keyring={}", self.opts.keyring.display());
        self.rauc([
            keyring.as_ref(),
            "info".as_ref(),
            "--output-format=json".as_ref(),
            bundle.as_os_str(),
        ])
    }

    /// Raw `rauc status --detailed --output-format=json` from the service.
    pub fn slot_status(&self) -> Result<String, TestbedError> {
        self.rauc(["status", "--detailed", "--output-format=json"])
    }

    /// [`Self::slot_status`] parsed: booted slot, primary, and each slot's state and boot status.
    pub fn status(&self) -> Result<SystemStatus, TestbedError> {
        SystemStatus::parse(&self.slot_status()?)
    }

    /// `rauc status mark-good` for the booted slot, as a health check would after boot.
    pub fn mark_good(&self) -> Result<(), TestbedError> {
        self.rauc(["status", "mark-good"]).map(drop)
    }

    /// `rauc status mark-bad` for the booted slot.
    pub fn mark_bad(&self) -> Result<(), TestbedError> {
        self.rauc(["status", "mark-bad"]).map(drop)
    }

    /// Simulates a reboot: `rauc service` goes away abruptly (as on power-off), the boot script
    /// runs on the U-Boot environment ([`Bootloader::boot`]), and the service starts again booted
    /// from the chosen slot. The bus stays up so its address stays valid for clients, which must
    /// reconnect to RAUC like after a real reboot.
    pub fn reboot(&mut self) -> Result<Slot, TestbedError> {
        self.stop_service();
        let slot = self.bootloader.boot()?;
        tracing::debug!(root = %self.root().display(), %slot, "testbed reboot");
        write_file(&self.booted_file, slot.bootname().as_bytes())?;
        self.booted = slot;
        self.start_service()?;
        Ok(slot)
    }

    fn start_bus(&mut self) -> Result<(), TestbedError> {
        let bus = PrivateBus::start_in(self.dir.path(), self.opts.start_timeout)?;
        self.bus_address = bus.address().to_owned();
        self.dbus = Some(bus);
        Ok(())
    }

    fn start_service(&mut self) -> Result<(), TestbedError> {
        self.boots += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.service_log)
            .map_err(|source| TestbedError::Io {
                action: "open",
                path: self.service_log.clone(),
                source,
            })?;
        // A marker per boot tells which start a line of the log came from.
        let _ = writeln!(
            log,
            "=== spark-testbed: boot {} from slot {} ===",
            self.boots, self.booted
        );
        let stderr = log.try_clone().map_err(|source| TestbedError::Io {
            action: "duplicate handle of",
            path: self.service_log.clone(),
            source,
        })?;

        let mut cmd = self.command("rauc");
        cmd.arg(format!("--conf={}", self.system_conf.display()))
            .arg("service")
            .arg(format!("--override-boot-slot={}", self.booted.bootname()))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        let command = describe(&cmd);
        self.rauc = Some(spawn(&mut cmd)?);

        let deadline = Instant::now() + self.opts.start_timeout;
        loop {
            if let Some(status) = self.rauc.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(TestbedError::ServiceStart {
                    reason: format!("`{command}` exited with {status}"),
                    stderr: self.service_log(),
                });
            }
            if self.rauc_on_bus()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestbedError::ServiceStart {
                    reason: format!(
                        "{RAUC_BUS_NAME} not on the bus within {:?}",
                        self.opts.start_timeout
                    ),
                    stderr: self.service_log(),
                });
            }
            thread::sleep(POLL * 5);
        }
    }

    /// Asks the bus whether RAUC owns its name yet.
    fn rauc_on_bus(&self) -> Result<bool, TestbedError> {
        let mut cmd = Command::new("dbus-send");
        cmd.arg(format!("--bus={}", self.bus_address))
            .args(["--print-reply", "--dest=org.freedesktop.DBus", "/"])
            .arg("org.freedesktop.DBus.NameHasOwner")
            .arg(format!("string:{RAUC_BUS_NAME}"));
        let reply = run_checked(&mut cmd, Duration::from_secs(10))?;
        Ok(reply.stdout.contains("boolean true"))
    }

    fn stop_service(&mut self) {
        if let Some(mut rauc) = self.rauc.take() {
            kill_and_reap(&mut rauc);
        }
        // A service killed mid-install leaves its bundle mount behind; a real reboot would not.
        self.unmount_leftovers();
    }

    /// Lazily unmounts anything mounted below the testbed directory, deepest first.
    fn unmount_leftovers(&self) {
        let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let root = self.dir.path();
        let mut points: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|point| PathBuf::from(unescape_mountinfo(point)))
            .filter(|point| point.starts_with(root))
            .collect();
        points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        for point in points {
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&point);
            // Best effort during teardown: a mount we cannot remove only leaks until reboot.
            let _ = run(&mut cmd, Duration::from_secs(10));
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop_service();
        // Dropping the bus kills its dbus-daemon, after RAUC is gone.
        self.dbus.take();
        if std::env::var_os("SPARK_TESTBED_KEEP").is_some_and(|v| v == "1") {
            self.dir.disable_cleanup(true);
            eprintln!("spark-testbed: kept {}", self.dir.path().display());
        }
    }
}

fn slot_file(root: &Path, slot: Slot) -> PathBuf {
    root.join(format!("slot-{}.img", slot.bootname().to_ascii_lowercase()))
}

fn system_conf_text(opts: &TestbedOptions, root: &Path, backend: &Path) -> String {
    let mut conf = format!(
        "[system]\n\
         compatible={compatible}\n\
         bootloader=custom\n\
         mountprefix={mnt}\n\
         data-directory={data}\n\
         \n\
         [keyring]\n\
         path={keyring}\n",
        compatible = opts.compatible,
        mnt = root.join("mnt").display(),
        data = root.join("data").display(),
        keyring = opts.keyring.display(),
    );
    if let Some(purpose) = &opts.check_purpose {
        conf.push_str(&format!("check-purpose={purpose}\n"));
    }
    conf.push_str(&format!(
        "\n[handlers]\nbootloader-custom-backend={}\n",
        backend.display()
    ));
    for slot in Slot::ALL {
        conf.push_str(&format!(
            "\n[slot.{name}]\ndevice={device}\ntype=raw\nbootname={bootname}\n",
            name = slot.rauc_name(),
            device = slot_file(root, slot).display(),
            bootname = slot.bootname(),
        ));
    }
    if !opts.extra_system_conf.is_empty() {
        conf.push('\n');
        conf.push_str(&opts.extra_system_conf);
        if !conf.ends_with('\n') {
            conf.push('\n');
        }
    }
    conf
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn absolute(path: &Path) -> Result<PathBuf, TestbedError> {
    std::path::absolute(path).map_err(|source| TestbedError::Io {
        action: "resolve",
        path: path.to_owned(),
        source,
    })
}

fn create_dir(path: &Path) -> Result<(), TestbedError> {
    fs::create_dir_all(path).map_err(|source| TestbedError::Io {
        action: "create directory",
        path: path.to_owned(),
        source,
    })
}

fn spawn(cmd: &mut Command) -> Result<Child, TestbedError> {
    cmd.spawn().map_err(|source| TestbedError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_conf_names_both_raw_slots_and_the_backend() {
        let mut opts = TestbedOptions::new("spark-bbb", "/k/ca.pem");
        opts.check_purpose = Some("codesign".into());
        opts.extra_system_conf = "[log.install]\nfilename=install.log".into();
        let conf = system_conf_text(&opts, Path::new("/t"), Path::new("/t/spark-uboot-sim"));
        for needle in [
            "compatible=spark-bbb\n",
            "bootloader=custom\n",
            "mountprefix=/t/mnt\n",
            "data-directory=/t/data\n",
            "path=/k/ca.pem\ncheck-purpose=codesign\n",
            "bootloader-custom-backend=/t/spark-uboot-sim\n",
            "[slot.rootfs.0]\ndevice=/t/slot-a.img\ntype=raw\nbootname=A\n",
            "[slot.rootfs.1]\ndevice=/t/slot-b.img\ntype=raw\nbootname=B\n",
            "[log.install]\nfilename=install.log\n",
        ] {
            assert!(conf.contains(needle), "{needle:?} missing from\n{conf}");
        }
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b\\134c"), "/tmp/a b\\c");
    }
}
