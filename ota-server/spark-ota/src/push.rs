//! Push: devices that are eligible for a release and connected to spark-ingest get an
//! `UpdateAvailable` through ingest's internal API (`POST /v1/gateways/{id}/commands`, mutual TLS
//! with this service's certificate from the server CA, CN `spark-ota`), once per device and
//! release. Polling (the agent's jittered check-in) stays the fallback for everything else: a
//! device that is offline, on another ingest node, or whose push was lost is served at its next
//! check-in.
//!
//! The push task runs every `push.interval-secs` and at once when a rollout is created or
//! resumed or a wave opens. It asks ingest which gateways are connected (one request), then asks
//! the rollout engine per device exactly as a check-in would (`Rollouts::offer_for`: wave open,
//! maintenance window, concurrency cap, penalty box, pause), so only devices eligible *now* get
//! an UpdateAvailable. The engine records the offer (it counts toward the concurrency cap); a
//! push that does not reach the device is harmless: the device gets the same offer when it polls.

use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use spark_release::SignedRelease;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::config::PushConfig;
use crate::error::{ClientError, ServeError};
use crate::https::{HttpsClient, full};
use crate::rollouts::{RolloutError, Rollouts};
use crate::store::{DeviceRecord, Store};

/// A gateway as ingest's `GET /v1/gateways` shows it (fields we use; others are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct IngestGateway {
    pub gateway: String,
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub firmware_version: Option<String>,
}

/// ingest's answer to a command.
#[derive(Debug, Clone, Deserialize)]
struct CommandRecord {
    id: i64,
    status: String,
}

/// What one push round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRound {
    /// Devices an UpdateAvailable was sent to.
    pub pushed: Vec<String>,
    /// Eligible devices ingest no longer had a connection for.
    pub not_connected: Vec<String>,
}

/// The push side of the server.
#[derive(Debug, Clone)]
pub struct Pusher {
    client: HttpsClient,
    store: Store,
    rollouts: Arc<Rollouts>,
    interval: std::time::Duration,
}

impl Pusher {
    pub fn new(
        config: &PushConfig,
        store: Store,
        rollouts: Arc<Rollouts>,
    ) -> Result<Pusher, ServeError> {
        let client: HttpsClient = crate::telemetry::ingest_client(config)?;
        Ok(Pusher {
            client,
            store,
            rollouts,
            interval: config.interval,
        })
    }

    /// Runs rounds every interval and when woken, until `stop` turns true.
    pub async fn run(self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = wake.notified() => {}
                _ = stop.changed() => return,
            }
            match self.round().await {
                Ok(r) if !r.pushed.is_empty() => {
                    info!(
                        pushed = r.pushed.len(),
                        "UpdateAvailable pushed through ingest"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    warn!("push round failed (devices still get the release when they poll): {e}")
                }
            }
        }
    }

    /// One round: every connected, eligible device not pushed this release yet gets it.
    pub async fn round(&self) -> Result<PushRound, PushError> {
        let mut out = PushRound::default();
        let live = self.store.rollouts().await?;
        if live.iter().all(|r| r.state == "aborted") {
            return Ok(out);
        }
        let gateways: Vec<IngestGateway> = self
            .client
            .json(hyper::Method::GET, "/v1/gateways", &[], full(""))
            .await?;
        let now = crate::now();
        for gw in gateways.into_iter().filter(|g| g.connected) {
            let mut device =
                self.store
                    .device(&gw.gateway)
                    .await?
                    .unwrap_or_else(|| DeviceRecord {
                        device: gw.gateway.clone(),
                        ..DeviceRecord::default()
                    });
            if device.current_version.is_none() {
                // ingest learns the running version from the gateway's Hello.
                device.current_version = gw.firmware_version.clone();
            }
            let Some(offer) = self.rollouts.offer_for(&device).await? else {
                continue;
            };
            if self.store.pushed(&gw.gateway, offer.release.id).await? {
                continue;
            }
            let Some(signed) = self
                .store
                .release(offer.release.id)
                .await?
                .and_then(|r| r.signed)
            else {
                continue;
            };
            // The wire form (~150 bytes) is what spark-proto's UpdateAvailable carries.
            let wire = SignedRelease::from_json(&signed)
                .map_err(|e| PushError::Stored(e.to_string()))?
                .to_bytes();
            let body = serde_json::json!({
                "kind": "update_available",
                "manifest_b64": base64::engine::general_purpose::STANDARD.encode(wire),
            });
            // Recorded before it is sent: a gateway acts on the push at once and may fetch
            // the bundle before ingest answers us, and its download is counted under the
            // rollout its device record names. The engine already took the offer (above).
            self.store
                .set_offered(&gw.gateway, offer.release.id, &offer.rollout, now)
                .await?;
            let path = format!("/v1/gateways/{}/commands", gw.gateway);
            let (status, bytes) = self
                .client
                .call(
                    hyper::Method::POST,
                    &path,
                    &[("content-type", "application/json".into())],
                    full(body.to_string()),
                )
                .await?;
            if status == hyper::StatusCode::CONFLICT {
                debug!(device = %gw.gateway, "not connected any more; it will poll");
                out.not_connected.push(gw.gateway);
                continue;
            }
            if !status.is_success() {
                warn!(device = %gw.gateway, %status, "ingest refused the push: {}", String::from_utf8_lossy(&bytes));
                continue;
            }
            let record: CommandRecord =
                serde_json::from_slice(&bytes).map_err(ClientError::Json)?;
            self.store
                .insert_push(
                    &gw.gateway,
                    offer.release.id,
                    &offer.rollout,
                    Some(record.id),
                    &record.status,
                    now,
                )
                .await?;
            info!(device = %gw.gateway, release = offer.release.id, rollout = %offer.rollout, command = record.id, status = %record.status, "UpdateAvailable pushed");
            out.pushed.push(gw.gateway);
        }
        Ok(out)
    }
}

/// A push round failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("ingest's internal API: {0}")]
    Ingest(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] crate::error::StoreError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    #[error("stored release unusable: {0}")]
    Stored(String),
}
