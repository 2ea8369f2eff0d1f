//! Where the telemetry-health gate learns when each gateway last sent telemetry: spark-ingest's
//! last-seen time per gateway, read through ingest's internal API (`GET /v1/gateways`, mutual TLS
//! with this service's certificate, CN `spark-ota`, as the push channel uses).
//!
//! It is behind the small [`TelemetrySource`] trait so the rollout tick can be tested with a
//! source of the test's choosing; the server's only implementation is [`IngestTelemetry`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;
use spark_rollout::jiff::Timestamp;

use crate::clock::ServerClock;
use crate::config::PushConfig;
use crate::error::{ClientError, ServeError};
use crate::https::{HttpsClient, full};

/// Last-seen times per device, on the rollout clock's timeline.
pub type LastSeen = HashMap<String, Timestamp>;

/// The future a [`TelemetrySource`] returns.
pub type LastSeenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LastSeen, ClientError>> + Send + 'a>>;

/// Ingest's view of when each gateway last sent telemetry.
pub trait TelemetrySource: Send + Sync + std::fmt::Debug {
    /// Every known gateway's last-seen time (gateways never seen are absent).
    fn last_seen(&self) -> LastSeenFuture<'_>;
}

/// A gateway as ingest's `GET /v1/gateways` shows it (the fields used here).
#[derive(Debug, Clone, Deserialize)]
struct GatewayLastSeen {
    gateway: String,
    /// Unix seconds.
    last_seen: i64,
}

/// The real source: spark-ingest's internal API.
#[derive(Debug, Clone)]
pub struct IngestTelemetry {
    client: HttpsClient,
    clock: ServerClock,
}

/// A client of ingest's internal API with this service's certificate.
pub fn ingest_client(config: &PushConfig) -> Result<HttpsClient, ServeError> {
    let tls = spark_tls::client_config(&config.ca, &config.cert, &config.key)?;
    HttpsClient::new(&config.ingest_url, tls).map_err(|e| {
        ServeError::Config(crate::error::ConfigError::Invalid {
            path: "push.ingest-url".into(),
            reason: e.to_string(),
        })
    })
}

impl IngestTelemetry {
    /// Reads ingest at `config.ingest_url`; real times are mapped onto `clock`.
    pub fn new(config: &PushConfig, clock: ServerClock) -> Result<IngestTelemetry, ServeError> {
        Ok(IngestTelemetry {
            client: ingest_client(config)?,
            clock,
        })
    }
}

impl TelemetrySource for IngestTelemetry {
    fn last_seen(&self) -> LastSeenFuture<'_> {
        Box::pin(async move {
            let gateways: Vec<GatewayLastSeen> = self
                .client
                .json(hyper::Method::GET, "/v1/gateways", &[], full(""))
                .await?;
            Ok(gateways
                .into_iter()
                .filter_map(|g| {
                    let t = Timestamp::from_second(g.last_seen).ok()?;
                    Some((g.gateway, self.clock.from_real(t)))
                })
                .collect())
        })
    }
}
