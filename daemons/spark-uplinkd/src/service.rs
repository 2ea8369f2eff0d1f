//! The D-Bus face of the daemon: `io.spark.Uplink1` at `/io/spark/Uplink1` (names and the client
//! proxy live in `spark-dbus`). Properties read the published [`Status`]; every change emits
//! `PropertiesChanged`. The byte counters (and `BytesUsedToday`, see [`crate::usage`]) are
//! copied into the status once a second, so they change (and signal) at most once a second.

use spark_dbus::UPLINK1_PATH;
use tokio::sync::watch;

/// What the daemon publishes about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// A session with the cloud is up (Welcome received).
    pub connected: bool,
    /// Entries in the durable queue waiting for the cloud's Ack.
    pub queue_depth: u64,
    /// Bytes written to / read from the cloud link since start, TLS records included.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Highest sequence number the cloud acknowledged.
    pub last_ack_seq: u64,
    /// Bytes sent + received during the current UTC day, across restarts.
    pub bytes_used_today: u64,
}

/// The `io.spark.Uplink1` interface object.
#[derive(Debug)]
pub struct Uplink1 {
    status: watch::Receiver<Status>,
}

#[zbus::interface(name = "io.spark.Uplink1")]
impl Uplink1 {
    #[zbus(property)]
    fn connected(&self) -> bool {
        self.status.borrow().connected
    }

    #[zbus(property)]
    fn queue_depth(&self) -> u64 {
        self.status.borrow().queue_depth
    }

    #[zbus(property)]
    fn bytes_sent(&self) -> u64 {
        self.status.borrow().bytes_sent
    }

    #[zbus(property)]
    fn bytes_received(&self) -> u64 {
        self.status.borrow().bytes_received
    }

    #[zbus(property)]
    fn last_ack_seq(&self) -> u64 {
        self.status.borrow().last_ack_seq
    }

    #[zbus(property)]
    fn bytes_used_today(&self) -> u64 {
        self.status.borrow().bytes_used_today
    }
}

/// Serves `Uplink1` on `conn` and emits `PropertiesChanged` for every status change until the
/// status sender is dropped.
pub async fn serve(conn: &zbus::Connection, status: watch::Receiver<Status>) -> zbus::Result<()> {
    conn.object_server()
        .at(
            UPLINK1_PATH,
            Uplink1 {
                status: status.clone(),
            },
        )
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Uplink1>(UPLINK1_PATH)
        .await?;
    let mut status = status;
    tokio::spawn(async move {
        let mut last = status.borrow_and_update().clone();
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            let emitter = iface.signal_emitter();
            let object = iface.get().await;
            let result = async {
                if now.connected != last.connected {
                    object.connected_changed(emitter).await?;
                }
                if now.queue_depth != last.queue_depth {
                    object.queue_depth_changed(emitter).await?;
                }
                if now.bytes_sent != last.bytes_sent {
                    object.bytes_sent_changed(emitter).await?;
                }
                if now.bytes_received != last.bytes_received {
                    object.bytes_received_changed(emitter).await?;
                }
                if now.last_ack_seq != last.last_ack_seq {
                    object.last_ack_seq_changed(emitter).await?;
                }
                if now.bytes_used_today != last.bytes_used_today {
                    object.bytes_used_today_changed(emitter).await?;
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
