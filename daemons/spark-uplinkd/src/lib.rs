//! `spark-uplinkd`, the gateway's store-and-forward uplink: it pulls meter readings from
//! `spark-meterd` over D-Bus, keeps them in a durable queue on `/data`, sends them to the cloud
//! (`spark-ingest`) over one mutual-TLS connection in spark-proto's compact batches, and deletes
//! them only after the cloud's cumulative Ack. Cloud commands go to the daemon that owns them.
//!
//! ```text
//!  spark-meterd ──Meters1.Fetch(cursor)──▶ pull ──append+fsync──▶ queue (/data, journal)
//!                                                                    │ entries = seq numbers
//!  spark-updated ◀──Update1.*── commands ◀── link ◀──mTLS/spark-proto──▶ spark-ingest
//!                                             └── io.spark.Uplink1 (Connected, QueueDepth, …)
//! ```
//!
//! Modules:
//! - [`config`] — the TOML config and the settings the cloud may change;
//! - [`entry`], [`roster`], [`queue`] — what is stored on `/data` and the durability rules;
//! - [`pull`] — readings and Health events into the queue;
//! - [`usage`] — today's bytes on the cloud link, for the Health event;
//! - [`link`] — the session with the cloud, reconnects, keepalive;
//! - [`commands`] — cloud commands forwarded over D-Bus;
//! - [`service`] — `io.spark.Uplink1`;
//! - [`daemon`] — [`run`], which wires it all together.

pub mod commands;
pub mod config;
pub mod counting;
pub mod daemon;
pub mod entry;
pub mod link;
pub mod pull;
pub mod queue;
pub mod roster;
pub mod service;
pub mod store;
pub mod tls;
pub mod usage;

pub use config::Config;
pub use daemon::{DaemonError, run};
