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

mod error;
mod hub;
mod server;
mod session;
pub mod store;

pub use error::{ConfigError, IngestError, StoreError};
pub use hub::Hub;
pub use server::{Server, ServerConfig};
pub use store::{Backend, CommandRecord, GatewayInfo, Store, StoredEvent, StoredReading};
