//! `spark-api`: the HTTP API internal systems (billing, operations, grid planning) use to read
//! what Spark knows and to command gateways.
//!
//! - **Transport**: HTTP/1.1 (axum on hyper) over rustls with **mutual TLS**: clients present a
//!   certificate from the server CA (`spark-keys issue-service NAME`), optionally limited to the
//!   CNs in `allowed-clients` ([`server`]).
//! - **Authorization**: on top of the certificate, a **bearer token** with scopes `read` and/or
//!   `command`, stored hashed ([`tokens`]). The certificate says which system connects, the
//!   token what it may do, and a token can be revoked without reissuing certificates.
//! - **Data**: ingest's tables and the pipeline's, read only ([`db`]); commands go through
//!   ingest's internal push API ([`ingest`]), never into its tables.
//! - **Errors**: RFC 9457 problem details from one mapping ([`error::ApiError`]).
//! - **Pages**: opaque keyset cursors and a maximum page size; long ranges of readings stream
//!   as NDJSON ([`query`], [`routes`]).
//! - The OpenAPI 3 document `openapi.json` is committed beside the crate and served at
//!   `GET /openapi.json`.

pub mod config;
pub mod db;
pub mod error;
pub mod ingest;
pub mod query;
pub mod routes;
pub mod server;
pub mod tokens;

use std::future::Future;

use tokio::net::TcpListener;
use tracing::info;

pub use config::Config;
pub use error::{ApiError, ServiceError, StoreError, TokenError};
pub use routes::{AppState, OPENAPI, route_list, router};
pub use server::{ServeConfig, serve};
pub use tokens::{Scope, TokenInfo, Tokens};

/// Opens the token database named by `config` (creating a SQLite file in the data directory).
pub async fn open_tokens(config: &Config) -> Result<Tokens, ServiceError> {
    let url = config.tokens_database_url();
    if url.starts_with("sqlite:") && config.tokens_database.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServiceError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    }
    Ok(Tokens::connect(&url, config.database_connections).await?)
}

/// Runs the service until `shutdown` completes: opens both databases, listens, calls `ready`
/// once it accepts connections, and on shutdown lets requests in progress finish.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServiceError> {
    let tokens = open_tokens(&config).await?;
    let db = db::Db::connect(&config.database, config.database_connections).await?;
    info!(backend = ?db.backend(), "ingest database open (read only)");
    let ingest = match &config.ingest {
        Some(files) => Some(ingest::IngestClient::from_files(files)?),
        None => {
            tracing::warn!(
                "no [ingest] section: POST /v1/gateways/{{id}}/commands will answer 502"
            );
            None
        }
    };
    let tls = spark_tls::server_config(&config.tls.cert, &config.tls.key, &config.tls.client_ca)?;
    let serve_config = ServeConfig::new(tls, config.allowed_clients.clone());
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServiceError::Bind {
            addr: config.listen,
            source,
        })?;
    let app = router(AppState {
        db: db.clone(),
        tokens: tokens.clone(),
        ingest,
    });
    ready();
    serve(listener, serve_config, app, shutdown).await;
    db.close().await;
    tokens.close().await;
    Ok(())
}
