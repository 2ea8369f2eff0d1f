//! The D-Bus face of the agent: `io.spark.Update1` at `/io/spark/Update1` on the system bus
//! (names and the client proxy live in `spark-dbus`).
//!
//! The interface object holds no agent state of its own: properties read the agent's published
//! [`Status`] and methods queue a [`Command`] for the agent's loop, so D-Bus callers never wait
//! on a download or an install and the agent stays a single task.

use spark_dbus::UPDATE1_PATH;
use tokio::sync::{mpsc, watch};

use crate::agent::Status;

/// A request from D-Bus to the agent loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Poll the OTA server now.
    CheckNow,
    /// A signed release pushed by uplinkd.
    Offer(Vec<u8>),
}

/// Commands waiting for the agent; more are refused as busy rather than queued without bound.
pub const COMMAND_QUEUE: usize = 4;

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

    fn queue(&self, command: Command) -> zbus::fdo::Result<()> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => zbus::fdo::Error::LimitsExceeded(
                "the update agent is busy with earlier requests; try again later".into(),
            ),
            mpsc::error::TrySendError::Closed(_) => {
                zbus::fdo::Error::Failed("the update agent is shutting down".into())
            }
        })
    }
}

#[zbus::interface(name = "io.spark.Update1")]
impl Update1 {
    /// Poll the OTA server now (answers at once; follow `State`).
    async fn check_now(&self) -> zbus::fdo::Result<()> {
        self.queue(Command::CheckNow)
    }

    /// Offer a signed release (wire or JSON form). Answers once queued; a refusal shows as
    /// `State` "failed" with the reason in `LastError`.
    async fn update_available(&self, signed_release: Vec<u8>) -> zbus::fdo::Result<()> {
        if signed_release.len() > spark_release::MAX_SIGNED_LEN * 4 {
            return Err(zbus::fdo::Error::InvalidArgs(
                "signed release too large".into(),
            ));
        }
        self.queue(Command::Offer(signed_release))
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
