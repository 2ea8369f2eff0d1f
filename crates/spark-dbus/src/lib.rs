//! What Spark's daemons agree on over D-Bus, in one place so that a name or a state string is
//! spelled once: well-known bus names and object paths, the update agent's [`UpdateState`], the
//! client proxy [`Update1Proxy`] for `io.spark.Update1`, and the [`report::StatusReport`] the
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

/// Bus name of the meter-reading daemon (reserved; its interface is defined with that daemon).
pub const METERS1_NAME: &str = "io.spark.Meters1";
/// Object path of the meter-reading daemon.
pub const METERS1_PATH: &str = "/io/spark/Meters1";

/// Bus name of the cloud uplink daemon (`uplinkd`), which pushes `UpdateAvailable` to the agent.
pub const UPLINK1_NAME: &str = "io.spark.Uplink1";
/// Object path of the uplink daemon.
pub const UPLINK1_PATH: &str = "/io/spark/Uplink1";

/// Client side of `io.spark.Update1`, served by `spark-updated`.
///
/// Properties change with `PropertiesChanged`, so `receive_state_changed()` follows the agent
/// without polling. Methods:
/// - `CheckNow()` asks the OTA server for a release now instead of at the next poll.
/// - `UpdateAvailable(ay)` hands the agent a signed release in its wire form (what `uplinkd`
///   receives from the cloud). The call answers once the agent has queued it (or fails with
///   `LimitsExceeded` when the agent is busy); the agent verifies it before anything else, and a
///   refusal shows as `State` "failed" with the reason code first in `LastError`.
#[zbus::proxy(
    interface = "io.spark.Update1",
    default_service = "io.spark.Update1",
    default_path = "/io/spark/Update1"
)]
pub trait Update1 {
    /// Polls the OTA server now.
    fn check_now(&self) -> zbus::Result<()>;

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
