//! Typed errors of the ingest service. Each variant names the operation that failed and carries
//! its context; the messages say what to check next.

use std::net::SocketAddr;
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
    /// The schema migrations could not be applied.
    #[error(
        "cannot apply the database migrations: {0}; was the database changed by a newer spark-ingest?"
    )]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database operation `{operation}` failed: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A value does not fit the column it goes to (a sequence or register beyond 2^63).
    #[error("{what} = {value} is out of the range the database stores (at most 2^63 - 1)")]
    OutOfRange { what: &'static str, value: u64 },
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
    #[error("invalid config file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Why the ingest service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] spark_tls::TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the local address of a listener: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The in-process pipeline (`[pipeline]`) could not open its tables.
    #[error(
        "cannot start the in-process data pipeline: {0}; fix it, or set `enabled = false` in [pipeline] if separate spark-pipeline processes run it"
    )]
    Pipeline(#[source] spark_pipeline::StoreError),
}
