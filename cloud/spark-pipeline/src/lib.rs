//! spark-pipeline: turns the meter readings spark-ingest stores into consumption per meter per
//! hour and per day, and into grid events (outages, gateway silence, meter anomalies), exactly
//! once.
//!
//! - [`Store`]: ingest's database (SQLite by default, PostgreSQL), read-only for ingest's
//!   tables, plus the pipeline's own tables (`migrations/`).
//! - [`run`]: the long-running pipeline (the `spark-pipeline` binary, or in-process beside
//!   ingest); [`drain`]: consume what is stored now and return.
//! - [`consumption`]: the rules that turn cumulative registers into hourly Wh.
//! - The cursor: per gateway, the last ingest message sequence (`received.seq`, stored on every
//!   readings row as `readings.seq`) whose readings are in the aggregates. A batch's aggregates,
//!   events, meter states and cursor are written in one transaction.

mod batch;
pub mod config;
pub mod consumption;
mod error;
mod pipeline;
mod store;

pub use batch::{BatchOutcome, run_batch};
pub use config::{Config, ConsumptionRules, EventRules, PipelineConfig};
pub use error::{ConfigError, PipelineError, StoreError};
pub use pipeline::{RunStats, drain, run};
pub use store::{Pending, Store, StoredEvent};
