//! What Spark's daemons agree on over D-Bus, in one place so that a name or a state string is
//! spelled once: well-known bus names and object paths, the update agent's [`UpdateState`], the
//! client proxies [`Update1Proxy`], [`Meters1Proxy`] (with [`MeterReading`]) and [`Uplink1Proxy`],
//! and the [`report::StatusReport`] the
//! agent sends to the OTA server on every transition.
//!
//! All daemons sit on the **system** bus. Each owns one well-known name and serves one object
//! whose path is the name with dots turned into slashes (the freedesktop convention), so a
//! `busctl introspect NAME PATH` finds it without documentation.

pub mod report;
mod state;

pub use crate::state::{UnknownState, UpdateState};

/// Bus name, object path and interface of the update agent (`spark-updated`).
pub const UPDATE1_NAME: &str = "io.spark.Update1";
/// Object path of the update agent's object.
pub const UPDATE1_PATH: &str = "/io/spark/Update1";
/// Interface name of the update agent (same as its bus name).
pub const UPDATE1_INTERFACE: &str = "io.spark.Update1";

/// D-Bus error of `Update1.UpdateAvailable` when the offered release fails a check.
pub const UPDATE1_ERROR_RELEASE_REJECTED: &str = "io.spark.Update1.Error.ReleaseRejected";
/// D-Bus error of `Update1` methods when the agent has too many requests waiting.
pub const UPDATE1_ERROR_BUSY: &str = "io.spark.Update1.Error.Busy";

/// Bus name and interface of the meter-reading daemon (`spark-meterd`).
pub const METERS1_NAME: &str = "io.spark.Meters1";
/// Object path of the meter-reading daemon.
pub const METERS1_PATH: &str = "/io/spark/Meters1";
/// Interface name of the meter-reading daemon (same as its bus name).
pub const METERS1_INTERFACE: &str = "io.spark.Meters1";

/// Bus name and interface of the cloud uplink daemon (`spark-uplinkd`), which forwards cloud
/// commands (`UpdateAvailable` to the agent, ...).
pub const UPLINK1_NAME: &str = "io.spark.Uplink1";
/// Object path of the uplink daemon.
pub const UPLINK1_PATH: &str = "/io/spark/Uplink1";
/// Interface name of the uplink daemon (same as its bus name).
pub const UPLINK1_INTERFACE: &str = "io.spark.Uplink1";

/// Most readings one `Meters1.Fetch` returns, whatever `max` asks for: ~64 KiB of D-Bus message
/// with 20-byte meter ids, far below the bus's 128 MiB message limit and small enough for a
/// 10 MB daemon.
pub const METERS1_FETCH_MAX: u32 = 2048;

/// One meter reading as `io.spark.Meters1` serves it: D-Bus signature `(tstt)`.
///
/// `position` is the reading's place in meterd's buffer: strictly increasing, never reused, kept
/// across restarts, so it works as a cursor.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, zbus::zvariant::Type,
)]
pub struct MeterReading {
    /// Position in meterd's durable buffer (cursor value of this reading).
    pub position: u64,
    /// Meter identifier as the radio reports it (serial number, ≤ 32 bytes).
    pub meter_id: String,
    /// When the meter took the reading, unix seconds.
    pub timestamp: u64,
    /// Cumulative active-energy import register, Wh (integer: floats never carry counters).
    pub wh: u64,
}

/// Client side of `io.spark.Meters1`, served by `spark-meterd`.
///
/// The cursor protocol: a reader calls `Fetch(cursor, max)` with the position of the last reading
/// it has **durably stored** (0 at first). meterd answers with readings after `cursor`, in
/// position order, at most `min(max, METERS1_FETCH_MAX)`. Calling `Fetch(c, ..)` also tells meterd
/// that everything at or before `c` is safe elsewhere, so it may drop those from its buffer; a
/// reader that crashes before storing what it fetched simply fetches again with the old cursor.
/// `ReadingsAvailable(position)` is emitted when new readings are stored, so readers need not poll.
#[zbus::proxy(
    interface = "io.spark.Meters1",
    default_service = "io.spark.Meters1",
    default_path = "/io/spark/Meters1"
)]
pub trait Meters1 {
    /// Readings after `cursor` (see the trait docs for the cursor protocol).
    fn fetch(&self, cursor: u64, max: u32) -> zbus::Result<Vec<MeterReading>>;

    /// The newest reading meterd has stored for each meter, in roster order; meters not read
    /// since meterd started and whose readings are no longer in its buffer are left out. Does
    /// not move any cursor (for people: the web UI's "last reading" column).
    fn last_readings(&self) -> zbus::Result<Vec<MeterReading>>;

    /// Emitted after new readings are durably stored; `position` is the newest one.
    #[zbus(signal)]
    fn readings_available(&self, position: u64) -> zbus::Result<()>;

    /// Meter ids the radio knows, in a stable order (the gateway's roster).
    #[zbus(property)]
    fn meters(&self) -> zbus::Result<Vec<String>>;

    /// Position of the newest stored reading (0 when none yet).
    #[zbus(property)]
    fn head(&self) -> zbus::Result<u64>;

    /// Readings still held in the buffer (not yet released by a reader's cursor).
    #[zbus(property)]
    fn buffered(&self) -> zbus::Result<u64>;

    /// Whether the radio module answers.
    #[zbus(property)]
    fn radio_online(&self) -> zbus::Result<bool>;
}

/// Client side of `io.spark.Uplink1`, served by `spark-uplinkd`. All properties emit
/// `PropertiesChanged` (counters at most once a second).
#[zbus::proxy(
    interface = "io.spark.Uplink1",
    default_service = "io.spark.Uplink1",
    default_path = "/io/spark/Uplink1"
)]
pub trait Uplink1 {
    /// A session with the cloud is up (handshake done).
    #[zbus(property)]
    fn connected(&self) -> zbus::Result<bool>;

    /// Entries (batches and events) in the durable queue waiting for the cloud's Ack.
    #[zbus(property)]
    fn queue_depth(&self) -> zbus::Result<u64>;

    /// Bytes written to the cloud link since start, TLS records included.
    #[zbus(property)]
    fn bytes_sent(&self) -> zbus::Result<u64>;

    /// Bytes read from the cloud link since start, TLS records included.
    #[zbus(property)]
    fn bytes_received(&self) -> zbus::Result<u64>;

    /// Highest sequence number the cloud has acknowledged (0 when none).
    #[zbus(property)]
    fn last_ack_seq(&self) -> zbus::Result<u64>;

    /// Bytes the cloud link moved (sent + received) during the current UTC day, kept across
    /// restarts: the figure the Health event reports against the data plan.
    #[zbus(property)]
    fn bytes_used_today(&self) -> zbus::Result<u64>;
}

/// Client side of `io.spark.Update1`, served by `spark-updated`.
///
/// Properties change with `PropertiesChanged`, so `receive_state_changed()` follows the agent
/// without polling. Methods:
/// - `CheckNow()` asks the OTA server for a release now instead of at the next poll.
/// - `UpdateAvailable(ay)` hands the agent a signed release in its wire form (what `uplinkd`
///   receives from the cloud). The call answers after the manifest checks (signature, key,
///   expiry, compatible, version): success means the release is being fetched, or, while
///   another update runs, queued to follow it (the newest offer replaces an older queued one).
///   A refusal is the error [`UPDATE1_ERROR_RELEASE_REJECTED`] whose message starts with the
///   reason and check codes (`release-rejected: expired: ...`); when idle it also shows as
///   `State` "failed" with the same text in `LastError`. `io.spark.Update1.Error.Busy` means too
///   many requests are waiting: try again later.
#[zbus::proxy(
    interface = "io.spark.Update1",
    default_service = "io.spark.Update1",
    default_path = "/io/spark/Update1"
)]
pub trait Update1 {
    /// Polls the OTA server now.
    fn check_now(&self) -> zbus::Result<()>;

    /// Reboots the gateway after `delay_secs` (a cloud `Reboot` command forwarded by uplinkd).
    /// Refused with `LimitsExceeded` while an update is being installed.
    fn reboot(&self, delay_secs: u32) -> zbus::Result<()>;

    /// Offers a signed release (wire form of `spark_release::SignedRelease`).
    fn update_available(&self, signed_release: &[u8]) -> zbus::Result<()>;

    /// [`UpdateState`] as its string form (`idle`, `downloading`, ...).
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    /// Percent done of the current step (download or install), 0..=100.
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<u32>;

    /// Version of the running slot.
    #[zbus(property)]
    fn current_version(&self) -> zbus::Result<String>;

    /// Version being downloaded, installed or checked; "" when none.
    #[zbus(property)]
    fn pending_version(&self) -> zbus::Result<String>;

    /// Why the last update failed (the report's reason code, a colon, the message); "" after success.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
}
