//! The internal API: the push channel other cloud services (the OTA server first) use to send a
//! Command to a connected gateway and learn its result, and gateway status for the OTA server's
//! telemetry-health gate. JSON over HTTP/1.1 (axum on hyper) on its own listener, mutual TLS with
//! client certificates from the *server* CA, so only cloud services can call it; gateways, whose
//! certificates come from the device CA, cannot. The endpoints are documented in the README.
//!
//! ```text
//! POST /v1/gateways/{id}/commands   {"kind":"reboot","delay_secs":5,"wait_secs":10}
//!        200 {id,status,code,detail,…}   the gateway answered within wait_secs
//!        202 {id,status:"pending",…}     sent; poll GET /v1/commands/{id}
//!        409                             the gateway is not connected to this ingest node
//! GET  /v1/commands/{id}
//! GET  /v1/gateways                  GET /v1/gateways/{id}
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use spark_proto::{Command, CommandKind, MAX_CONFIG_LEN, MAX_MANIFEST_LEN};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::error::{IngestError, StoreError};
use crate::hub::{Hub, SendError};
use crate::server::Shutdown;
use crate::store::{CommandRecord, GatewayInfo, Store};

/// Longest a POST may wait for the gateway's result (`wait_secs` is capped to it).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How the internal API listener behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requires client certificates from the server CA.
    pub tls: Arc<rustls::ServerConfig>,
    /// Client certificate CNs allowed; empty: any certificate from the server CA.
    pub allowed_clients: Vec<String>,
    pub handshake_timeout: Duration,
}

impl ApiConfig {
    /// The API's TLS from the ingest server certificate and the server CA (for clients).
    pub fn from_files(
        cert: &Path,
        key: &Path,
        server_ca: &Path,
        allowed_clients: Vec<String>,
    ) -> Result<ApiConfig, IngestError> {
        Ok(ApiConfig {
            tls: Arc::new(spark_tls::server_config(cert, key, server_ca)?),
            allowed_clients,
            handshake_timeout: Duration::from_secs(20),
        })
    }
}

#[derive(Debug, Clone)]
struct ApiState {
    hub: Hub,
    store: Store,
}

/// The routes, over the hub of a [`crate::Server`] and its store.
pub fn router(hub: Hub, store: Store) -> Router {
    Router::new()
        .route("/v1/gateways", get(list_gateways))
        .route("/v1/gateways/{id}", get(one_gateway))
        .route("/v1/gateways/{id}/commands", post(post_command))
        .route("/v1/commands/{id}", get(one_command))
        .with_state(ApiState { hub, store })
}

/// A command request body, without `wait_secs` (seconds to wait for the gateway's result;
/// absent or 0: answer 202 at once), which is taken out first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum CommandBody {
    /// A signed release manifest (spark-release), base64.
    UpdateAvailable {
        manifest_b64: String,
    },
    /// A configuration document (TOML) to apply as `config_version`, base64.
    SetConfig {
        config_version: u32,
        config_b64: String,
    },
    Reboot {
        delay_secs: u32,
    },
}

impl CommandBody {
    fn name(&self) -> &'static str {
        match self {
            CommandBody::UpdateAvailable { .. } => "update_available",
            CommandBody::SetConfig { .. } => "set_config",
            CommandBody::Reboot { .. } => "reboot",
        }
    }

    /// The protocol command (checks base64 and the protocol's size caps).
    fn to_proto(&self) -> Result<CommandKind, ApiError> {
        let b64 = |field: &str, text: &str, max: usize| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| ApiError::BadRequest(format!("{field} is not base64: {e}")))?;
            if bytes.len() > max {
                return Err(ApiError::BadRequest(format!(
                    "{field} decodes to {} bytes; the protocol carries at most {max}",
                    bytes.len()
                )));
            }
            Ok(bytes)
        };
        Ok(match self {
            CommandBody::UpdateAvailable { manifest_b64 } => CommandKind::UpdateAvailable {
                manifest: b64("manifest_b64", manifest_b64, MAX_MANIFEST_LEN)?,
            },
            CommandBody::SetConfig {
                config_version,
                config_b64,
            } => CommandKind::SetConfig {
                config_version: *config_version,
                config: b64("config_b64", config_b64, MAX_CONFIG_LEN)?,
            },
            CommandBody::Reboot { delay_secs } => CommandKind::Reboot {
                delay_secs: *delay_secs,
            },
        })
    }
}

/// A gateway as the API shows it.
#[derive(Debug, Serialize)]
struct GatewayView {
    #[serde(flatten)]
    info: GatewayInfo,
    /// Connected to this ingest node now.
    connected: bool,
}

/// Who called (the CN of the client certificate), for the logs.
#[derive(Debug, Clone)]
struct Caller(Arc<str>);

/// Errors of the API, mapped to statuses in one place ([`IntoResponse`]).
#[derive(Debug)]
enum ApiError {
    BadRequest(String),
    NotFound(String),
    NotConnected(String),
    Busy(String),
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::NotConnected(gw) => (
                StatusCode::CONFLICT,
                format!("gateway {gw} is not connected to this ingest node"),
            ),
            ApiError::Busy(gw) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("gateway {gw} has too many commands queued; retry later"),
            ),
            ApiError::Store(e) => {
                // The details stay in our log; callers learn only that they should retry.
                error!("internal API: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable; retry later".to_owned(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

async fn list_gateways(State(st): State<ApiState>) -> Result<Json<Vec<GatewayView>>, ApiError> {
    let connected = st.hub.connected();
    let all = st.store.gateways().await?;
    Ok(Json(
        all.into_iter()
            .map(|info| GatewayView {
                connected: connected.binary_search(&info.gateway).is_ok(),
                info,
            })
            .collect(),
    ))
}

async fn one_gateway(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<GatewayView>, ApiError> {
    let info = st
        .store
        .gateway(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no gateway {id} was ever seen")))?;
    Ok(Json(GatewayView {
        connected: st.hub.is_connected(&id),
        info,
    }))
}

async fn one_command(
    State(st): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<CommandRecord>, ApiError> {
    let n: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("command id {id:?} is not a number")))?;
    st.store
        .command(n)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no command {n}")))
}

async fn post_command(
    State(st): State<ApiState>,
    UrlPath(gateway): UrlPath<String>,
    caller: Option<axum::Extension<Caller>>,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandRecord>), ApiError> {
    let bad = |e: serde_json::Error| ApiError::BadRequest(format!("invalid command: {e}"));
    let mut json: serde_json::Value = serde_json::from_slice(&body).map_err(bad)?;
    let wait_secs = match json.as_object_mut().and_then(|o| o.remove("wait_secs")) {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::BadRequest("wait_secs must be a whole number of seconds".into())
        })?,
    };
    let command: CommandBody = serde_json::from_value(json).map_err(bad)?;
    let kind = command.to_proto()?;
    if !st.hub.is_connected(&gateway) {
        return Err(ApiError::NotConnected(gateway));
    }
    let config_version = match &command {
        CommandBody::SetConfig { config_version, .. } => Some(*config_version),
        _ => None,
    };
    let request = serde_json::to_value(&command).unwrap_or_default();
    let id = st
        .store
        .insert_command(&gateway, command.name(), &request, config_version, now())
        .await?;
    let caller = caller.map_or_else(|| "?".into(), |c| c.0.0.clone());
    info!(%gateway, command = id, kind = command.name(), %caller, "command requested");
    // Subscribe before sending so a quick answer cannot slip past.
    let mut results = st.hub.results();
    if let Err(e) = st.hub.send(&gateway, Command { id, kind }) {
        if let Some(record) = st.store.command_undelivered(id, now()).await? {
            st.hub.publish(record);
        }
        return Err(match e {
            SendError::NotConnected => ApiError::NotConnected(gateway),
            SendError::Busy => ApiError::Busy(gateway),
        });
    }
    let wait = Duration::from_secs(wait_secs).min(MAX_WAIT);
    if !wait.is_zero() {
        let waited = timeout(wait, async {
            loop {
                match results.recv().await {
                    Ok(r) if r.id == id => return Some(r),
                    Ok(_) => {}
                    // Missed some: ours may be among them; the database has the truth.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if let Ok(Some(r)) = st.store.command(id).await
                            && r.status != "pending"
                        {
                            return Some(r);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await;
        if let Ok(Some(record)) = waited {
            return Ok((StatusCode::OK, Json(record)));
        }
    }
    let record = st
        .store
        .command(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("command {id} vanished")))?;
    let status = if record.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves `app` on `listener` over mutual TLS until `shutdown` completes; then lets requests in
/// progress finish.
pub async fn serve(
    listener: TcpListener,
    config: ApiConfig,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IngestError> {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let acceptor = TlsAcceptor::from(config.tls.clone());
    let config = Arc::new(config);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "internal API listener ready");
    }
    let accept = async {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("internal API: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shutdown = Shutdown::new(notify_shutdown.subscribe());
            let (acceptor, config, app, done) = (
                acceptor.clone(),
                config.clone(),
                app.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                api_connection(acceptor, &config, app, socket, peer, shutdown).await;
                drop(done);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    drop(listener);
    drop(notify_shutdown);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

async fn api_connection(
    acceptor: TlsAcceptor,
    config: &ApiConfig,
    app: Router,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    mut shutdown: Shutdown,
) {
    let stream = match timeout(config.handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%peer, "internal API: TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            warn!(%peer, "internal API: TLS handshake timed out");
            return;
        }
    };
    let caller = match spark_tls::PeerIdentity::of_server_connection(stream.get_ref().1) {
        Ok(id) => id.common_name,
        Err(e) => {
            warn!(%peer, "internal API: unusable client certificate: {e}");
            return;
        }
    };
    if !config.allowed_clients.is_empty() && !config.allowed_clients.contains(&caller) {
        warn!(%peer, %caller, "internal API: client certificate CN not in internal-clients; closed");
        return;
    }
    let service = WithCaller {
        inner: TowerToHyperService::new(app),
        caller: Caller(caller.into()),
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                info!(%peer, "internal API connection ended: {e}");
            }
        }
        () = shutdown.recv() => {
            conn.as_mut().graceful_shutdown();
            let _ = timeout(MAX_WAIT + Duration::from_secs(5), conn).await;
        }
    }
}

/// Puts the caller's identity into each request's extensions.
#[derive(Debug, Clone)]
struct WithCaller {
    inner: TowerToHyperService<Router>,
    caller: Caller,
}

impl hyper::service::Service<Request<Incoming>> for WithCaller {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.caller.clone());
        self.inner.call(req)
    }
}
