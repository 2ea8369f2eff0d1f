//! The one error type of the test rig. Every variant names the step that failed and carries what a
//! test author needs to see why: the path, the command line, and the captured output of `rauc` or
//! `dbus-daemon` (a failing integration test is only as useful as its message).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Something the test rig could not do.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A file or directory of the testbed could not be created, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What we tried, e.g. "write" or "create directory".
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },

    /// A helper program (`dbus-daemon`, `rauc`, `openssl`, ...) could not be started at all.
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },

    /// The private `dbus-daemon` exited or printed no address in time.
    #[error("private dbus-daemon did not start: {reason}\n--- dbus-daemon stderr ---\n{stderr}")]
    BusStart { reason: String, stderr: String },

    /// `rauc service` exited, or did not own `de.pengutronix.rauc` on the bus in time.
    #[error("rauc service did not come up: {reason}\n--- rauc service output ---\n{stderr}")]
    ServiceStart { reason: String, stderr: String },

    /// A command (a `rauc` CLI call, or a fixture tool) exited unsuccessfully. `message` is RAUC's
    /// own explanation where it printed one (its `LastError:` line), else the last stderr line.
    #[error("`{command}` failed ({status}): {message}")]
    Command {
        command: String,
        status: String,
        message: String,
        stdout: String,
        stderr: String,
    },

    /// A command did not finish within its bound; it was killed.
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed\n--- stderr ---\n{stderr}"
    )]
    Timeout {
        command: String,
        timeout: Duration,
        stdout: String,
        stderr: String,
    },

    /// The simulated U-Boot environment file holds something the boot script cannot use.
    #[error("U-Boot environment {}: {message}", path.display())]
    BootEnv { path: PathBuf, message: String },

    /// The simulated boot script found no slot to boot even after resetting the attempt counters.
    #[error("no bootable slot: BOOT_ORDER={order:?} has no known slot")]
    NoBootableSlot { order: String },

    /// `rauc status --output-format=json` printed something we could not read.
    #[error("cannot parse `rauc status` JSON: {source}\n{json}")]
    StatusJson {
        source: serde_json::Error,
        json: String,
    },
}

impl TestbedError {
    /// The captured stderr of the failed process, if this error carries one.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::BusStart { stderr, .. }
            | Self::ServiceStart { stderr, .. }
            | Self::Command { stderr, .. }
            | Self::Timeout { stderr, .. } => Some(stderr),
            Self::Io { .. }
            | Self::Spawn { .. }
            | Self::BootEnv { .. }
            | Self::NoBootableSlot { .. }
            | Self::StatusJson { .. } => None,
        }
    }
}
