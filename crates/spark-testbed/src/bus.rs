//! A private `dbus-daemon` standing in for the gateway's system bus in tests.
//!
//! Daemon tests that need no RAUC (meterd, uplinkd, the web UI) start a [`PrivateBus`] alone and
//! point their daemons at [`PrivateBus::address`] (zbus `connection::Builder::address`, or
//! `DBUS_SYSTEM_BUS_ADDRESS` for child processes). Dropping it kills the daemon.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestbedError;
use crate::bootloader::write_file;
use crate::process::{POLL, kill_and_reap};

/// A running private `dbus-daemon`. Everyone may own any name on it: nobody else can reach its
/// socket, which lives in a directory of the test's own.
pub struct PrivateBus {
    address: String,
    child: Child,
    // Only when the bus made its own directory; dropped after the child is killed.
    _dir: Option<TempDir>,
}

impl std::fmt::Debug for PrivateBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateBus")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl PrivateBus {
    /// Starts a bus in a new temporary directory and waits (up to 10 s) until it listens.
    pub fn start() -> Result<Self, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("spark-bus-")
            .tempdir()
            .map_err(|source| TestbedError::Io {
                action: "create",
                path: std::env::temp_dir().join("spark-bus-*"),
                source,
            })?;
        let mut bus = Self::start_in(dir.path(), Duration::from_secs(10))?;
        bus._dir = Some(dir);
        Ok(bus)
    }

    /// Starts a bus whose socket, config and log live in `dir` (which must outlive it).
    pub fn start_in(dir: &Path, timeout: Duration) -> Result<Self, TestbedError> {
        let socket = dir.join("bus.sock");
        let config = dir.join("bus.conf");
        write_file(&config, bus_config(&socket).as_bytes())?;
        let address_file = dir.join("bus.address");
        let log = dir.join("dbus-daemon.log");
        let create = |path: &Path| {
            fs::File::create(path).map_err(|source| TestbedError::Io {
                action: "create",
                path: path.to_owned(),
                source,
            })
        };

        let mut cmd = Command::new("dbus-daemon");
        cmd.arg(format!("--config-file={}", config.display()))
            .args(["--print-address", "--nofork"])
            .stdin(Stdio::null())
            .stdout(create(&address_file)?)
            .stderr(create(&log)?);
        let mut child = cmd.spawn().map_err(|source| TestbedError::Spawn {
            program: "dbus-daemon".into(),
            source,
        })?;

        let deadline = Instant::now() + timeout;
        let failed = |reason: String| TestbedError::BusStart {
            reason,
            stderr: fs::read_to_string(&log).unwrap_or_default(),
        };
        loop {
            // A complete line means dbus-daemon listens: it prints after binding the socket.
            let printed = fs::read_to_string(&address_file).unwrap_or_default();
            if let Some(line) = printed.lines().next().filter(|_| printed.ends_with('\n')) {
                return Ok(Self {
                    address: line.trim().to_owned(),
                    child,
                    _dir: None,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failed(format!("dbus-daemon exited with {status}")));
            }
            if Instant::now() >= deadline {
                kill_and_reap(&mut child);
                return Err(failed(format!("no address printed within {timeout:?}")));
            }
            thread::sleep(POLL);
        }
    }

    /// The bus address (`unix:path=...,guid=...`).
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A bus that lets anyone do anything: it only exists for one test and nobody else can reach the
/// socket in our private directory. `session` type so dbus-daemon does not try to become a
/// system bus (pid file, activation helper).
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        socket = socket.display()
    )
}
