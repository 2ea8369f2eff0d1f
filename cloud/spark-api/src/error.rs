//! The crate's errors. [`ApiError`] is what a request can fail with; its `IntoResponse` is the
//! one exhaustive mapping from error to HTTP status and RFC 9457 problem details. Database and
//! upstream failures are logged with their cause and answered with a generic detail, so nothing
//! of the database (SQL, table names, URLs) ever reaches a client.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::{error, warn};

/// The media type of problem details (RFC 9457 §3).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Failures reading the ingest database or the token database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot connect to the database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the database URL {url} is neither sqlite: nor postgres:; use sqlite://PATH or postgres://USER@HOST/DB"
    )]
    UnsupportedUrl { url: String },
    #[error(
        "the database {url} has no spark-ingest tables ({source}); start spark-ingest against it once so it creates them"
    )]
    NoIngestSchema {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply the token database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query `{what}` failed: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// Failures of the token commands and of token checks.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a token named {0:?} exists already; pick another name or revoke it first")]
    NameTaken(String),
    #[error("no token named {0:?}; `spark-api token list` shows the names")]
    NoSuchToken(String),
    #[error("unknown scope {0:?}; scopes are `read` and `command`")]
    UnknownScope(String),
    #[error("a token needs at least one scope (--scope read, --scope command)")]
    NoScope,
    #[error(
        "token name {0:?} is not allowed: use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
    )]
    BadName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reading the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("config file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Starting or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] spark_tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ingest push API URL {url:?} is not https://HOST:PORT")]
    IngestUrl { url: String },
}

/// Failures of calls to ingest's internal push API.
#[derive(Debug, thiserror::Error)]
pub enum IngestCallError {
    #[error("cannot connect to ingest at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS with ingest at {addr} failed: {source}")]
    Tls {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with ingest at {addr} failed: {source}")]
    Http {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("ingest at {addr} did not answer within {secs} s")]
    Timeout { addr: String, secs: u64 },
    #[error("ingest at {addr} answered {status} with a body that is not a command: {body}")]
    BadAnswer {
        addr: String,
        status: u16,
        body: String,
    },
}

/// Everything a request can fail with. One variant per kind of failure; [`IntoResponse`] maps
/// each to its status in one `match`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no bearer token: send `Authorization: Bearer <token>` (spark-api token create)")]
    MissingToken,
    #[error("the bearer token is unknown or revoked")]
    InvalidToken,
    #[error("this token lacks the `{needed}` scope")]
    MissingScope { needed: &'static str },
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidRange(String),
    #[error(
        "limit {got} is out of range: use 1 to {max}; for long ranges ask for application/x-ndjson"
    )]
    PageTooLarge { got: String, max: u32 },
    #[error("the cursor is not one this endpoint issued; start again without `cursor`")]
    InvalidCursor,
    #[error("{0}")]
    InvalidBody(String),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0}")]
    NotFound(String),
    #[error("no such route: {0}")]
    NoRoute(String),
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    #[error("gateway {0} is not connected to ingest; retry when it is")]
    GatewayNotConnected(String),
    #[error("gateway {0} has too many commands queued at ingest; retry later")]
    GatewayBusy(String),
    #[error("ingest refused the command: {0}")]
    IngestRefused(String),
    #[error("ingest is unreachable: {0}")]
    Ingest(#[from] IngestCallError),
    #[error("database failure: {0}")]
    Store(#[from] StoreError),
    /// A client error axum produced before our code ran (e.g. an undecodable path segment).
    #[error("{1}")]
    Framework(StatusCode, String),
}

/// An RFC 9457 problem details object.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (stable; clients may branch on it).
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
}

/// Base of our problem type URIs.
const PROBLEM_BASE: &str = "https://spark.example.invalid/problems/";

impl ApiError {
    /// Status, problem type slug and title. The one mapping of errors to statuses.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::MissingToken => (S::UNAUTHORIZED, "missing-token", "Authentication required"),
            ApiError::InvalidToken => (S::UNAUTHORIZED, "invalid-token", "Invalid bearer token"),
            ApiError::MissingScope { .. } => (S::FORBIDDEN, "missing-scope", "Insufficient scope"),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid-query", "Invalid query"),
            ApiError::InvalidRange(_) => (S::BAD_REQUEST, "invalid-range", "Invalid time range"),
            ApiError::PageTooLarge { .. } => (S::BAD_REQUEST, "invalid-limit", "Invalid page size"),
            ApiError::InvalidCursor => (S::BAD_REQUEST, "invalid-cursor", "Invalid cursor"),
            ApiError::InvalidBody(_) => (S::BAD_REQUEST, "invalid-body", "Invalid request body"),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::NoRoute(_) => (S::NOT_FOUND, "no-route", "No such route"),
            ApiError::MethodNotAllowed(_) => (
                S::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
            ),
            ApiError::GatewayNotConnected(_) => (
                S::CONFLICT,
                "gateway-not-connected",
                "Gateway not connected",
            ),
            ApiError::GatewayBusy(_) => (
                S::SERVICE_UNAVAILABLE,
                "gateway-busy",
                "Gateway command queue full",
            ),
            ApiError::IngestRefused(_) => (S::BAD_REQUEST, "command-refused", "Command refused"),
            ApiError::Ingest(_) => (S::BAD_GATEWAY, "ingest-unavailable", "Ingest unavailable"),
            ApiError::Store(_) => (
                S::SERVICE_UNAVAILABLE,
                "database-unavailable",
                "Database unavailable",
            ),
            ApiError::Framework(status, _) => (*status, "invalid-request", "Invalid request"),
        }
    }

    /// What the client is told. Server-side failures get a generic text (the cause is logged).
    fn detail(&self) -> String {
        match self {
            ApiError::Ingest(_) => "ingest's push API cannot be reached; retry later".to_owned(),
            ApiError::Store(_) => "the database is unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    /// The problem details object of this error.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.classify();
        Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: self.detail(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.classify();
        if status.is_server_error() {
            error!(error = %self, "request failed");
        } else {
            warn!(status = status.as_u16(), "request refused: {self}");
        }
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"spark-api\""),
            );
        }
        response
    }
}
