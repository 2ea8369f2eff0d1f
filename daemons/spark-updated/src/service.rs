//! The D-Bus face of the agent: `io.spark.Update1` at `/io/spark/Update1` on the system bus
//! (names, error names and the client proxy live in `spark-dbus`).
//!
//! The interface object holds no agent state of its own: properties read the agent's published
//! [`Status`] and methods hand a [`Command`] to the agent's loop ([`crate::daemon::run_agent`]).
//! `UpdateAvailable` and `Reboot` wait for the loop's verdict, which comes within moments even
//! while an update runs (the loop checks offers with a [`crate::agent::Gate`] of its own), so
//! uplinkd learns at once whether the cloud's offer or command was taken.

use std::time::Duration;

use spark_dbus::UPDATE1_PATH;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::{Refusal, Status};

/// A request from D-Bus to the agent loop.
#[derive(Debug)]
pub enum Command {
    /// Poll the OTA server now.
    CheckNow,
    /// A signed release pushed by uplinkd; `reply` gets the verdict of the manifest checks.
    Offer {
        signed: Vec<u8>,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// Reboot the gateway after `delay` (a cloud command); `reply` says whether it is scheduled.
    Reboot {
        delay: Duration,
        reply: oneshot::Sender<Result<(), RebootRefused>>,
    },
}

/// Why a commanded reboot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebootRefused {
    /// RAUC is writing the other slot; a reboot now would throw the write away.
    #[error("an update is being installed; try again when State is no longer \"installing\"")]
    Installing,
}

/// Commands waiting for the agent loop; more are refused as busy rather than queued without bound.
pub const COMMAND_QUEUE: usize = 4;

/// Bound on waiting for the loop's verdict. The loop answers between two awaits of the running
/// step, so this only trips if the agent is wedged.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of `io.spark.Update1` methods beyond the freedesktop ones.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.spark.Update1.Error")]
pub enum Update1Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// `io.spark.Update1.Error.ReleaseRejected`: the offered release failed a check; the
    /// message starts with the reason and check codes (`release-rejected: expired: ...`).
    ReleaseRejected(String),
    /// `io.spark.Update1.Error.Busy`: the agent has too many requests waiting or is wedged.
    Busy(String),
    /// `io.spark.Update1.Error.Failed`: the agent could not check the offer (RAUC unreachable)
    /// or is shutting down.
    Failed(String),
}

/// The `io.spark.Update1` interface object.
#[derive(Debug)]
pub struct Update1 {
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
}

impl Update1 {
    pub fn new(status: watch::Receiver<Status>, commands: mpsc::Sender<Command>) -> Self {
        Self { status, commands }
    }

    fn queue(&self, command: Command) -> Result<(), Update1Error> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Update1Error::Busy(
                "the update agent is busy with earlier requests; try again later".into(),
            ),
            mpsc::error::TrySendError::Closed(_) => {
                Update1Error::Failed("the update agent is shutting down".into())
            }
        })
    }

    async fn verdict<T>(reply: oneshot::Receiver<T>) -> Result<T, Update1Error> {
        match tokio::time::timeout(VERDICT_TIMEOUT, reply).await {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(_)) => Err(Update1Error::Failed(
                "the update agent stopped before answering".into(),
            )),
            Err(_) => Err(Update1Error::Busy(format!(
                "the update agent did not answer within {VERDICT_TIMEOUT:?}"
            ))),
        }
    }
}

#[zbus::interface(name = "io.spark.Update1")]
impl Update1 {
    /// Poll the OTA server now (answers at once; follow `State`).
    async fn check_now(&self) -> Result<(), Update1Error> {
        self.queue(Command::CheckNow)
    }

    /// Offer a signed release (wire or JSON form). Answers after the manifest checks: success
    /// means the release is being fetched (or, while another update runs, queued to follow it,
    /// replacing an older queued offer); a refusal is `io.spark.Update1.Error.ReleaseRejected`
    /// with `release-rejected: <check>: <message>`.
    async fn update_available(&self, signed_release: Vec<u8>) -> Result<(), Update1Error> {
        if signed_release.len() > spark_release::MAX_SIGNED_LEN * 4 {
            return Err(Update1Error::ZBus(zbus::Error::FDO(Box::new(
                zbus::fdo::Error::InvalidArgs("signed release too large".into()),
            ))));
        }
        let (reply, verdict) = oneshot::channel();
        self.queue(Command::Offer {
            signed: signed_release,
            reply,
        })?;
        match Self::verdict(verdict).await? {
            Ok(()) => Ok(()),
            Err(refusal) if refusal.reason == spark_dbus::report::Reason::ReleaseRejected => {
                Err(Update1Error::ReleaseRejected(refusal.to_string()))
            }
            Err(refusal) => Err(Update1Error::Failed(refusal.to_string())),
        }
    }

    /// Reboot the gateway after `delay_secs` (a cloud `Reboot` command forwarded by uplinkd).
    /// Refused with `org.freedesktop.DBus.Error.LimitsExceeded` while RAUC installs.
    async fn reboot(&self, delay_secs: u32) -> zbus::fdo::Result<()> {
        let (reply, verdict) = oneshot::channel();
        let to_fdo = |e: Update1Error| match e {
            Update1Error::Busy(m) => zbus::fdo::Error::LimitsExceeded(m),
            other => zbus::fdo::Error::Failed(other.to_string()),
        };
        self.queue(Command::Reboot {
            delay: Duration::from_secs(delay_secs.into()),
            reply,
        })
        .map_err(to_fdo)?;
        match Self::verdict(verdict).await.map_err(to_fdo)? {
            Ok(()) => Ok(()),
            Err(refused) => Err(zbus::fdo::Error::LimitsExceeded(refused.to_string())),
        }
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.status.borrow().state.as_str().to_owned()
    }

    #[zbus(property)]
    fn progress(&self) -> u32 {
        self.status.borrow().progress
    }

    #[zbus(property)]
    fn current_version(&self) -> String {
        self.status.borrow().current_version.clone()
    }

    #[zbus(property)]
    fn pending_version(&self) -> String {
        self.status.borrow().pending_version.clone()
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.status.borrow().last_error.clone()
    }
}

/// Serves `Update1` on `conn` and emits `PropertiesChanged` whenever the status changes, until
/// the status sender is dropped.
pub async fn serve(
    conn: &zbus::Connection,
    status: watch::Receiver<Status>,
    commands: mpsc::Sender<Command>,
) -> zbus::Result<()> {
    conn.object_server()
        .at(UPDATE1_PATH, Update1::new(status.clone(), commands))
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Update1>(UPDATE1_PATH)
        .await?;
    let mut status = status;
    tokio::spawn(async move {
        let mut last = status.borrow_and_update().clone();
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            let emitter = iface.signal_emitter();
            let object = iface.get().await;
            // Only what changed: a download moves Progress many times, nothing else.
            let result = async {
                if now.state != last.state {
                    object.state_changed(emitter).await?;
                }
                if now.progress != last.progress {
                    object.progress_changed(emitter).await?;
                }
                if now.current_version != last.current_version {
                    object.current_version_changed(emitter).await?;
                }
                if now.pending_version != last.pending_version {
                    object.pending_version_changed(emitter).await?;
                }
                if now.last_error != last.last_error {
                    object.last_error_changed(emitter).await?;
                }
                zbus::Result::Ok(())
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(error = %e, "cannot emit PropertiesChanged");
            }
            last = now;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError;

    #[test]
    fn error_names_are_the_ones_spark_dbus_publishes() {
        assert_eq!(
            Update1Error::ReleaseRejected(String::new()).name().as_str(),
            spark_dbus::UPDATE1_ERROR_RELEASE_REJECTED
        );
        assert_eq!(
            Update1Error::Busy(String::new()).name().as_str(),
            spark_dbus::UPDATE1_ERROR_BUSY
        );
    }
}
