//! `spark-updated`, the update agent of a Spark gateway.
//!
//! It takes signed releases (pushed by `uplinkd` over D-Bus as `UpdateAvailable`, or found by
//! polling the OTA server over mutual-TLS HTTPS), checks them against the trusted release keys
//! and its own compatible and version, downloads the bundle to `/data` with resumable Range
//! requests ([`download`]), checks size and SHA-256 against the signed manifest, installs it
//! through RAUC, reboots, runs a health check on the new slot and marks it good, or bad and
//! reboots back. The state machine ([`agent`]) is persisted on `/data` ([`store`]) before every
//! step and every transition is reported to the OTA server ([`spark_dbus::report`]).

pub mod agent;
pub mod config;
pub mod daemon;
pub mod download;
pub mod https;
pub mod service;
pub mod store;
pub mod system;

pub use crate::agent::{Agent, AgentError, Outcome, Settings, Status};
pub use crate::config::{Config, ConfigError, HealthConfig};
