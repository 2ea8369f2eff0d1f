//! The D-Bus face of meterd: `io.spark.Meters1` at `/io/spark/Meters1` (names and the client
//! proxy, with the cursor protocol, live in `spark-dbus`).
//!
//! `LastReadings()` gives the newest reading of each meter for people (the web UI); it moves no
//! cursor. Besides the properties the proxy knows, the object has three counters for people and the web
//! UI: `Alarms` (meter alarms heard), `RadioErrors` (damaged or unusable frames skipped) and
//! `Dropped` (readings given up to the buffer cap or a full disk).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use spark_dbus::{METERS1_FETCH_MAX, MeterReading};
use zbus::object_server::{InterfaceRef, SignalEmitter};

use crate::store::Store;

/// State shared by the radio task and the D-Bus object.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    pub online: AtomicBool,
    pub alarms: AtomicU64,
    pub radio_errors: AtomicU64,
}

impl Shared {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Self {
            store: Mutex::new(store),
            online: AtomicBool::new(false),
            alarms: AtomicU64::new(0),
            radio_errors: AtomicU64::new(0),
        })
    }

    /// The buffer. Held only for synchronous work, never across an await.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        // Poisoned only if a store call panicked, which is a bug we want to see, not hide.
        self.store.lock().expect("reading buffer lock poisoned")
    }
}

/// The `io.spark.Meters1` object.
#[derive(Debug)]
pub struct Meters1 {
    shared: Arc<Shared>,
}

impl Meters1 {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[zbus::interface(name = "io.spark.Meters1")]
impl Meters1 {
    /// Readings after `cursor`; forgets those at or before it (see `spark_dbus::Meters1Proxy`).
    async fn fetch(
        &self,
        cursor: u64,
        max: u32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<Vec<MeterReading>> {
        let max = max.min(METERS1_FETCH_MAX);
        let (result, before, after) = {
            let mut store = self.shared.store();
            let before = store.buffered();
            let result = store.fetch(cursor, max);
            (result, before, store.buffered())
        };
        if after != before {
            let _ = self.buffered_changed(&emitter).await;
        }
        result.map_err(|e| {
            tracing::error!(error = %e, cursor, "Fetch failed");
            zbus::fdo::Error::Failed(format!("meterd cannot read its buffer: {e}"))
        })
    }

    /// The newest reading of each meter, in roster order (see `spark_dbus::Meters1Proxy`).
    async fn last_readings(&self) -> Vec<MeterReading> {
        self.shared.store().last_readings()
    }

    /// New readings are stored; `position` is the newest.
    #[zbus(signal)]
    pub async fn readings_available(emitter: &SignalEmitter<'_>, position: u64)
    -> zbus::Result<()>;

    #[zbus(property)]
    fn meters(&self) -> Vec<String> {
        self.shared.store().roster().to_vec()
    }

    #[zbus(property)]
    fn head(&self) -> u64 {
        self.shared.store().head()
    }

    #[zbus(property)]
    fn buffered(&self) -> u64 {
        self.shared.store().buffered()
    }

    #[zbus(property)]
    fn radio_online(&self) -> bool {
        self.shared.online.load(Ordering::Relaxed)
    }

    #[zbus(property)]
    fn alarms(&self) -> u64 {
        self.shared.alarms.load(Ordering::Relaxed)
    }

    #[zbus(property)]
    fn radio_errors(&self) -> u64 {
        self.shared.radio_errors.load(Ordering::Relaxed)
    }

    #[zbus(property)]
    fn dropped(&self) -> u64 {
        self.shared.store().dropped_total()
    }
}

/// What changed, for [`announce`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// New readings up to this position.
    pub stored: Option<u64>,
    pub dropped: bool,
    pub meters: bool,
    pub online: bool,
    pub alarms: bool,
    pub radio_errors: bool,
}

/// Emits the signals for `changes`; best effort (a bus hiccup must not stop the radio).
pub async fn announce(iface: Option<&InterfaceRef<Meters1>>, changes: Changes) {
    let Some(iface) = iface else { return };
    if changes == Changes::default() {
        return;
    }
    let emitter = iface.signal_emitter();
    let object = iface.get().await;
    let result = async {
        if let Some(position) = changes.stored {
            Meters1::readings_available(emitter, position).await?;
            object.head_changed(emitter).await?;
            object.buffered_changed(emitter).await?;
        }
        if changes.dropped {
            object.dropped_changed(emitter).await?;
        }
        if changes.meters {
            object.meters_changed(emitter).await?;
        }
        if changes.online {
            object.radio_online_changed(emitter).await?;
        }
        if changes.alarms {
            object.alarms_changed(emitter).await?;
        }
        if changes.radio_errors {
            object.radio_errors_changed(emitter).await?;
        }
        zbus::Result::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot emit Meters1 signals");
    }
}
