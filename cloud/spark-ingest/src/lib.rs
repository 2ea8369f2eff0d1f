//! `spark-ingest`: the cloud end of Spark's telemetry path.
//!
//! Gateways connect over mutual TLS (client certificate from the device CA; the certificate's
//! CN is the gateway, whatever the payload says) and speak `spark-proto`. Readings batches and
//! events are committed idempotently, keyed by `(gateway, seq)`, and acknowledged only after the
//! commit ([`store`]). Storage is SQLite by default and PostgreSQL in production (monthly
//! readings partitions, binary COPY). Other cloud services reach connected gateways through the
//! push channel: a small internal HTTP API ([`api`]) over mutual TLS with server-CA client
//! certificates.
//!
//! [`run`] also runs the data pipeline ([`spark_pipeline::run`]) on the same database unless the
//! config's `[pipeline]` table says `enabled = false`: one process computes consumption by
//! default, separate `spark-pipeline` processes do it at scale.
//!
//! In-process use (tests, benchmarks):
//!
//! ```no_run
//! # async fn demo(cert: &std::path::Path, key: &std::path::Path, ca: &std::path::Path) -> Result<(), spark_ingest::IngestError> {
//! let store = spark_ingest::Store::connect("sqlite:///tmp/ingest.db?mode=rwc").await?;
//! let server = spark_ingest::Server::new(spark_ingest::ServerConfig::from_files(cert, key, ca)?, store.clone())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! tokio::spawn(server.run(listener, std::future::pending()));
//! # Ok(()) }
//! ```

pub mod api;
mod config;
mod error;
mod hub;
mod server;
mod session;
pub mod store;

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tracing::{error, info};

pub use config::{Config, EmbeddedPipeline, TlsFiles};
pub use error::{ConfigError, IngestError, StoreError};
pub use hub::Hub;
pub use server::{Server, ServerConfig};
pub use store::{Backend, CommandRecord, GatewayInfo, Store, StoredEvent, StoredReading};

/// Runs the service from its config until `shutdown` completes: opens (and migrates) the
/// database, starts the telemetry listener, if configured the internal API, and unless
/// `[pipeline] enabled = false` the data pipeline on the same database; calls `ready` once all
/// of them run, and on shutdown lets every connection finish its in-flight commit and the
/// pipeline commit (or roll back) its batches in flight.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), IngestError> {
    let url = config.database_url();
    if url.starts_with("sqlite:") && config.database.is_none() {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| IngestError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    }
    let store = match &url {
        u if u.starts_with("postgres") => {
            let options = u.parse().map_err(|source| StoreError::Connect {
                url: "postgres".into(),
                source,
            })?;
            Store::connect_postgres(options, config.database_connections).await?
        }
        u => Store::connect(u).await?,
    };
    info!(backend = ?store.backend(), "database ready");
    // After ingest's migrations: the pipeline checks ingest's tables, then adds its own.
    let pipeline_store = if config.pipeline.enabled {
        let p = spark_pipeline::Store::connect(&url, config.pipeline.database_connections)
            .await
            .map_err(IngestError::Pipeline)?;
        info!(
            workers = config.pipeline.config.workers,
            "data pipeline runs in this process"
        );
        Some(p)
    } else {
        info!("data pipeline not run here (`[pipeline] enabled = false`)");
        None
    };
    let mut server_config =
        ServerConfig::from_files(&config.tls.cert, &config.tls.key, &config.tls.device_ca)?;
    server_config.max_connections = config.max_connections;
    server_config.handshake_timeout = config.handshake_timeout();
    server_config.hello_timeout = config.hello_timeout();
    server_config.idle_timeout = config.idle_timeout();
    server_config.last_seen_interval = config.last_seen_interval();
    let server = Server::new(server_config, store.clone())?;

    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| IngestError::Bind { addr, source })
    };
    let listener = bind(config.listen).await?;
    let api = match (config.internal_listen, &config.tls.server_ca) {
        (Some(addr), Some(server_ca)) => {
            let api_config = api::ApiConfig::from_files(
                &config.tls.cert,
                &config.tls.key,
                server_ca,
                config.internal_clients.clone(),
            )?;
            Some((bind(addr).await?, api_config))
        }
        _ => None,
    };

    let (stop, _) = broadcast::channel::<()>(1);
    let stopped = |mut rx: broadcast::Receiver<()>| async move {
        let _ = rx.recv().await;
    };
    let api_task = api.map(|(listener, api_config)| {
        let app = api::router(server.hub(), store.clone());
        tokio::spawn(api::serve(
            listener,
            api_config,
            app,
            stopped(stop.subscribe()),
        ))
    });
    let telemetry = tokio::spawn(server.run(listener, stopped(stop.subscribe())));
    let pipeline_task = pipeline_store.map(|p| {
        let (config, stopped) = (config.pipeline.config.clone(), stopped(stop.subscribe()));
        tokio::spawn(async move {
            // A pipeline failure (a bug: a batch worker panicked, its batch rolled back) must
            // not stop gateways from being served: ingest goes on, and says so loudly.
            match spark_pipeline::run(p.clone(), config, stopped).await {
                Ok(stats) => info!(?stats, "data pipeline stopped"),
                Err(e) => error!(
                    error = %spark_daemon::error_chain(&e),
                    "the in-process data pipeline stopped; readings are still stored but consumption \
                     is not computed until spark-ingest is restarted (or a spark-pipeline process runs)"
                ),
            }
            p.close().await;
        })
    });
    ready();
    shutdown.await;
    info!("shutdown requested");
    let _ = stop.send(());
    let telemetry_result = telemetry.await;
    if let Some(task) = api_task {
        let _ = task.await;
    }
    if let Some(task) = pipeline_task {
        let _ = task.await;
    }
    store.close().await;
    match telemetry_result {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
