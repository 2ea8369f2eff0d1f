//! The one error type of the client. Every variant says which RAUC call failed and what to do
//! about it, because the update agent reports these strings to the cloud verbatim and whoever
//! reads them has no shell on the gateway.

use std::path::PathBuf;
use std::time::Duration;

use crate::proxy::SERVICE;

/// RAUC 1.8's reply when a method arrives while another one runs (its spelling differs between
/// methods: `InstallBundle` capitalises it, `Mark` and `GetSlotStatus` do not).
const BUSY_MESSAGE: &str = "already processing a different method";

/// Something a call to RAUC could not do.
#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    /// No connection to the bus at all.
    #[error(
        "cannot connect to the D-Bus system bus: {source} \
         (is dbus running, and is DBUS_SYSTEM_BUS_ADDRESS, if set, right?)"
    )]
    Connect { source: Box<zbus::Error> },

    /// Nobody owns RAUC's name on the bus.
    #[error(
        "RAUC is not running: nobody owns {SERVICE} on the bus \
         (start `rauc service`, e.g. `systemctl start rauc`, and check its journal)"
    )]
    NotRunning,

    /// RAUC refused the call because it is busy with another one (an install, usually).
    #[error(
        "RAUC is busy and refused {method} (\"Already processing a different method\"): \
         wait until the running install sends Completed, then retry"
    )]
    Busy { method: &'static str },

    /// RAUC answered the call with an error.
    #[error("RAUC refused {method}: {message}{}", rejected_hint(method))]
    Rejected {
        method: &'static str,
        /// RAUC's error message, verbatim.
        message: String,
    },

    /// The install ran and failed; `last_error` is RAUC's `LastError` property.
    #[error(
        "installing {} failed (RAUC Completed({result})): {last_error}{}",
        bundle.display(),
        install_hint(last_error)
    )]
    InstallFailed {
        bundle: PathBuf,
        /// The `Completed` signal's argument (non-zero).
        result: i32,
        /// RAUC's `LastError` after the failure, e.g. "Installation error: Compatible mismatch: …".
        last_error: String,
    },

    /// RAUC did not finish in time. It may still be working: this is our patience running out,
    /// not a failed install.
    #[error(
        "{operation} did not finish within {timeout:?}; RAUC may still be busy: \
         check its Operation property or journal before retrying"
    )]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },

    /// RAUC left the bus while we waited for it (crashed or restarted mid-install).
    #[error(
        "RAUC left the bus while installing {}: the install's outcome is unknown; \
         check `rauc status` and RAUC's journal, then retry",
        bundle.display()
    )]
    ServiceLost { bundle: PathBuf },

    /// The bundle path cannot be sent to RAUC.
    #[error("bundle path {}: {reason}", path.display())]
    BundlePath { path: PathBuf, reason: String },

    /// RAUC sent something that does not fit rauc 1.8's interface.
    #[error("unexpected reply from RAUC to {method}: {detail}")]
    Protocol {
        method: &'static str,
        detail: String,
    },

    /// Any other D-Bus failure (connection lost, bus refused the message, …).
    #[error("D-Bus call {method} to RAUC failed: {source}")]
    DBus {
        method: &'static str,
        // Boxed: zbus::Error is large and would make every Result of this crate large.
        source: Box<zbus::Error>,
    },
}

impl RaucError {
    /// Classifies a failed call of `method`: busy, not running, refused, or a transport error.
    pub(crate) fn from_call(method: &'static str, err: zbus::Error) -> Self {
        match err {
            zbus::Error::MethodError(name, message, _) => {
                let message = message.unwrap_or_default();
                match name.as_str() {
                    "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner" => Self::NotRunning,
                    _ if message.trim().eq_ignore_ascii_case(BUSY_MESSAGE) => Self::Busy { method },
                    _ => Self::Rejected { method, message },
                }
            }
            zbus::Error::FDO(fdo) => match *fdo {
                zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_) => {
                    Self::NotRunning
                }
                other => Self::DBus {
                    method,
                    source: Box::new(zbus::Error::FDO(Box::new(other))),
                },
            },
            source => Self::DBus {
                method,
                source: Box::new(source),
            },
        }
    }

    /// True when retrying the same call later can succeed without changing anything: RAUC was
    /// busy, not (yet) running, or we stopped waiting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Busy { .. } | Self::NotRunning | Self::Timeout { .. } | Self::ServiceLost { .. }
        )
    }
}

/// What to do about a refusal, where RAUC's own message does not say.
fn rejected_hint(method: &str) -> &'static str {
    match method {
        // rauc 1.8 answers every Info failure (missing file, bad signature, busy) with the same
        // "rauc info error"; the reason is only in its journal.
        "Info" => {
            " (rauc 1.8 gives no detail: the bundle may be missing or unreadable, not signed by \
             a key in RAUC's keyring, or RAUC was busy installing; see RAUC's journal)"
        }
        "Mark" => " (slot must be `booted`, `other` or a slot name such as `rootfs.1`)",
        _ => "",
    }
}

/// What to do about a failed install, where RAUC's `LastError` does not say.
fn install_hint(last_error: &str) -> &'static str {
    if last_error.contains("exclusive bundle access") {
        // rauc 1.8 takes a read lease on the bundle, which fails while anyone has it open for
        // writing (readers are fine).
        " (close every handle that has the bundle open for writing, e.g. the downloader's, \
         then install again)"
    } else if last_error.contains("Compatible mismatch") {
        " (the bundle was built for another device type: fetch the release for this one)"
    } else if last_error.starts_with("signature verification failed") {
        " (the bundle is damaged or not signed by a key in RAUC's keyring: download it again)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use zbus::Message;
    use zbus::names::OwnedErrorName;

    use super::*;

    /// An error reply named `name` with `message`, as zbus hands it to a caller.
    fn method_error(name: &str, message: &str) -> zbus::Error {
        let call = Message::method_call("/", "Mark")
            .unwrap()
            .build(&())
            .unwrap();
        zbus::Error::MethodError(
            OwnedErrorName::try_from(name).unwrap(),
            Some(message.to_owned()),
            call,
        )
    }

    const GDBUS: &str = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30";

    #[test]
    fn busy_in_either_spelling() {
        for text in [
            "Already processing a different method",
            "already processing a different method",
        ] {
            let err = RaucError::from_call("Mark", method_error(GDBUS, text));
            assert!(matches!(err, RaucError::Busy { method: "Mark" }), "{err:?}");
        }
    }

    #[test]
    fn missing_service_is_not_running() {
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ] {
            let err = RaucError::from_call("GetPrimary", method_error(name, "no"));
            assert!(matches!(err, RaucError::NotRunning), "{err:?}");
        }
        let fdo = zbus::fdo::Error::NameHasNoOwner("de.pengutronix.rauc".into());
        let err = RaucError::from_call("GetNameOwner", fdo.into());
        assert!(matches!(err, RaucError::NotRunning), "{err:?}");
        assert!(err.to_string().contains("start `rauc service`"), "{err}");
    }

    #[test]
    fn other_replies_are_rejections_with_raucs_text() {
        let err =
            RaucError::from_call("Mark", method_error(GDBUS, "Invalid slot name format: 'x'"));
        assert!(
            matches!(&err, RaucError::Rejected { method: "Mark", message } if message == "Invalid slot name format: 'x'"),
            "{err:?}"
        );
        assert!(!err.is_transient());
        let err = RaucError::from_call("Info", zbus::Error::Failure("socket closed".into()));
        assert!(
            matches!(err, RaucError::DBus { method: "Info", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn failed_installs_say_what_to_do() {
        let failed = |last_error: &str| RaucError::InstallFailed {
            bundle: "/data/u.raucb".into(),
            result: 1,
            last_error: last_error.into(),
        };
        let text =
            failed("could not ensure exclusive bundle access (F_SETLEASE): EAGAIN").to_string();
        assert!(text.starts_with("installing /data/u.raucb failed (RAUC Completed(1)): could not"));
        assert!(text.contains("open for writing"), "{text}");
        assert!(failed("weird").to_string().ends_with("): weird"));
    }
}
