//! `spark-ota`: the OTA server. It keeps the release catalog (RAUC bundles verified with
//! `spark-image`, each paired with its Ed25519-signed release manifest), answers device check-ins
//! with the signed manifest of the release meant for them, serves bundles with resumable
//! downloads, counts the bytes, pushes `UpdateAvailable` through spark-ingest, and offers an
//! admin API that the `spark-ota` CLI drives.
//!
//! | module | what |
//! | --- | --- |
//! | [`config`] | the TOML config |
//! | [`store`] | SQLite / PostgreSQL through sqlx, migrations |
//! | [`catalog`] | streamed, verified uploads into the content-addressed blob store |
//! | [`api`] | device and admin HTTP APIs (axum), errors → statuses |
//! | [`dashboard`] | server-rendered HTML pages for people on the admin listener |
//! | [`download`] | Range / ETag / If-Range, byte accounting |
//! | [`rollouts`] | the `spark-rollout` engine wired in: state in the database, check-in decisions, reports, tick |
//! | [`clock`] | the rollout clock: real, time-compressed, or injected |
//! | [`telemetry`] | ingest's last-seen times for the telemetry-health gate |
//! | [`push`] | UpdateAvailable through ingest's push channel |
//! | [`server`] | TLS listeners, identities, graceful shutdown |
//! | [`https`], [`client`] | the CLI's admin-API client |
//! | [`tokens`] | admin tokens |

pub mod api;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod download;
pub mod error;
pub mod https;
pub mod push;
pub mod rollouts;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tokens;

pub use config::Config;
pub use error::{ClientError, ConfigError, ManifestError, ServeError, StoreError, UploadError};
pub use server::{Server, run};
pub use store::Store;

/// Unix seconds now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
