//! spark-fleet: Spark's fleet in a box. The cloud services ([`Cloud`]: `spark-ingest` and
//! `spark-ota` on SQLite and local files, with a development PKI) and simulated gateways
//! ([`Gateway`]: the real `spark-meterd`, `spark-uplinkd` and `spark-updated` on a board with
//! the real `rauc service`, file-backed A/B slots and the simulated U-Boot) as real processes on
//! one machine, and releases made as the release tooling makes them ([`ReleaseSpec`]).
//!
//! Only the hardware is simulated: the meter radio (`spark-meter-sim` speaking the module's
//! frames) and the board's reboot and bootloader (`spark-testbed`). Everything else is the
//! program that runs in the field, talking over the same D-Bus names, mutual-TLS links and
//! HTTP APIs.
//!
//! [`run`] is the main job (`spark-fleet`, the README's first command): the whole of Spark on one
//! machine, a weekly rollout carried out in minutes, with one gateway rolling itself back.
//!
//! Needs root (RAUC loop-mounts bundles), `rauc`, `dbus-daemon`, `sqlite3` and the workspace's
//! binaries ([`Binaries`]).

pub mod bins;
pub mod chaos;
pub mod cloud;
mod error;
pub mod gateway;
pub mod process;
pub mod proxy;
pub mod release;
pub mod run;

pub use bins::Binaries;
pub use cloud::{Cloud, CloudLink, CloudOptions};
pub use error::FleetError;
pub use gateway::{Gateway, GatewayOptions};
pub use release::{Release, ReleaseSpec, noise};
