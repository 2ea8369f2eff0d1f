//! Typed errors of the pipeline. Each variant names the operation that failed and carries its
//! context; the messages say what to check next.

use std::path::PathBuf;

/// A database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no backend we speak.
    #[error(
        "unsupported database URL {url:?}: use sqlite://PATH?mode=rwc (the default) or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl { url: String },
    /// The database could not be opened or reached.
    #[error(
        "cannot open the database {url}: {source}; check `database` in the config and that the server is reachable"
    )]
    Connect {
        /// The URL with any password removed.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The pipeline's schema migrations could not be applied.
    #[error("cannot apply the pipeline's database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Ingest's tables are missing or older than the pipeline needs.
    #[error(
        "the database has no spark-ingest tables with `readings.seq` ({source}); start spark-ingest (this version or newer) on it once so it applies its migrations"
    )]
    IngestSchema {
        #[source]
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database operation `{operation}` failed: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Attaches the operation name to a sqlx error.
pub(crate) trait QueryContext<T> {
    fn op(self, operation: &'static str) -> Result<T, StoreError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn op(self, operation: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { operation, source })
    }
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid config file {}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
}

/// The pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A batch worker panicked (a bug): the batch was rolled back.
    #[error("a batch worker for gateway {gateway} failed: {detail}")]
    Worker { gateway: String, detail: String },
}
