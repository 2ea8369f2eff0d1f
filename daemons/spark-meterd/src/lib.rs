//! `spark-meterd`: the gateway daemon that owns the meter radio module.
//!
//! It reads meter readings from the module's serial link ([`radio`] is the protocol, [`link`] the
//! byte transport), keeps them in a durable buffer on `/data` ([`store`], a `spark_journal`
//! journal), and serves them on D-Bus as `io.spark.Meters1` ([`service`]) to readers such as
//! `spark-uplinkd`, which fetch with a cursor so that neither side's crash loses or doubles a
//! reading. [`daemon::run`] ties it together; `main.rs` only reads the config and starts it.
//!
//! [`sim`] is a radio module simulator (meters with realistic load, the module's flash, faults)
//! that speaks the same frames over a Unix socket or a pty; the `spark-meter-sim` binary runs it.

pub mod config;
pub mod daemon;
pub mod link;
pub mod radio;
pub mod service;
pub mod sim;
pub mod store;

pub use crate::config::{Config, ConfigError};
pub use crate::daemon::{DaemonError, run};
