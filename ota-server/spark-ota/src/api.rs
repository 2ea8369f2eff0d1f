//! The HTTP side: the device API (mutual TLS, the device is its certificate's CN) and the admin
//! API (admin token or admin client certificate), as axum routers over one [`AppState`]. Errors
//! become statuses in one exhaustive place ([`ApiError`]); every refusal is logged with who asked
//! and why, and answers `{"error": "..."}`. Database details never reach a client.
//!
//! Device API (listener `listen`):
//! ```text
//! GET  /v1/devices/{device}/release[?current-version=V&booted-slot=S&agent-state=X&compatible=C]
//! POST /v1/devices/{device}/check-in   {"current-version","booted-slot","agent-state","compatible"}
//!        200 signed release (JSON)   204 nothing to install
//! POST /v1/devices/{device}/update-status   spark_dbus::report::StatusReport   → 204
//! GET|HEAD /v1/bundles/{sha256}        Range, If-Range, If-None-Match; ETag = "<sha256>"
//! ```
//! Admin API (listener `admin-listen`): see `admin_router`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use crate::catalog::{Catalog, is_sha256_hex};
use crate::download::{self, Accounting, CountedFile, RangeSpec};
use crate::error::{ManifestError, StoreError, UploadError};
use crate::rollouts::{Action, CreateRollout, RolloutError, Rollouts};
use crate::store::{CheckIn, DeviceAttributes, Store};

/// Header carrying the signed release manifest (base64 of the JSON or wire form) on uploads.
pub const RELEASE_HEADER: &str = "spark-release";

/// Everything the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub catalog: Catalog,
    pub accounting: Accounting,
    /// Wakes the push task (a rollout was created or resumed, a wave opened).
    pub push_wake: Arc<tokio::sync::Notify>,
    /// The rollout engine's driver.
    pub rollouts: Arc<Rollouts>,
}

/// The verified device on a device-API connection (its certificate's CN).
#[derive(Debug, Clone)]
pub struct DeviceIdentity(pub Arc<str>);

/// The admin client certificate's CN on an admin-API connection, if one was presented.
#[derive(Debug, Clone)]
pub struct AdminIdentity(pub Option<Arc<str>>);

/// Errors of both APIs, mapped to statuses in [`IntoResponse`].
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    TooLarge(String),
    Unprocessable(String),
    Internal(String),
    Store(StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let m = e.to_string();
        match e {
            UploadError::MissingManifest
            | UploadError::ManifestEncoding(_)
            | UploadError::ManifestMalformed(_)
            | UploadError::Receive(_) => ApiError::BadRequest(m),
            UploadError::ManifestRefused(_)
            | UploadError::SizeMismatch { .. }
            | UploadError::DigestMismatch { .. }
            | UploadError::Bundle(_)
            | UploadError::VersionMismatch { .. }
            | UploadError::NoBundleVersion
            | UploadError::BundleVersionNotSemver { .. }
            | UploadError::DevSign(_) => ApiError::Unprocessable(m),
            UploadError::ReleaseExists { .. } | UploadError::DuplicateBundle { .. } => {
                ApiError::Conflict(m)
            }
            UploadError::TooLarge { .. } | UploadError::OverLimit { .. } => ApiError::TooLarge(m),
            UploadError::Io { .. } => ApiError::Internal(m),
            UploadError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> Self {
        let m = e.to_string();
        match e {
            ManifestError::Malformed(_) => ApiError::BadRequest(m),
            ManifestError::NotFound(_) => ApiError::NotFound(m),
            ManifestError::Refused(_) | ManifestError::Mismatch { .. } => {
                ApiError::Unprocessable(m)
            }
            ManifestError::Yanked { .. }
            | ManifestError::Older { .. }
            | ManifestError::RolloutsDependOn { .. }
            | ManifestError::Changed(_) => ApiError::Conflict(m),
            ManifestError::Store(s) => ApiError::Store(s),
        }
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> Self {
        let m = e.to_string();
        match e {
            RolloutError::NotFound(_) | RolloutError::ReleaseNotFound(_) => ApiError::NotFound(m),
            RolloutError::ReleaseYanked(_)
            | RolloutError::Exists(_)
            | RolloutError::BadTransition { .. } => ApiError::Conflict(m),
            RolloutError::BadId(_) => ApiError::BadRequest(m),
            RolloutError::Invalid(_) => ApiError::Unprocessable(m),
            RolloutError::Corrupt { .. } => ApiError::Internal(m),
            RolloutError::Store(s) => ApiError::Store(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::Unprocessable(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::Internal(m) => {
                error!("{m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the server log".to_owned(),
                )
            }
            ApiError::Store(e) => {
                // The details stay in our log; clients learn only that they should retry.
                error!("{e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database unavailable; retry later".to_owned(),
                )
            }
        };
        if status.is_client_error() {
            warn!(%status, "request refused: {message}");
        }
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid {what}: {e}")))
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    (status, axum::Json(value)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Device API

/// The device routes; every request carries a [`DeviceIdentity`] extension.
pub fn device_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/devices/{device}/release", get(release_get))
        .route("/v1/devices/{device}/check-in", post(check_in_post))
        .route("/v1/devices/{device}/update-status", post(update_status))
        .route("/v1/bundles/{sha256}", get(bundle).head(bundle))
        .with_state(state)
}

fn identity(req_device: &str, id: &DeviceIdentity) -> Result<(), ApiError> {
    if *id.0 != *req_device {
        return Err(ApiError::Forbidden(format!(
            "this certificate is for device {:?}, not {req_device:?}: a device may only speak for itself",
            &*id.0
        )));
    }
    Ok(())
}

/// `key=value&…` of the agent's check-in query (values are plain versions, slots and states:
/// percent-escapes are refused rather than guessed at).
fn check_in_from_query(query: Option<&str>) -> Result<CheckIn, ApiError> {
    let mut c = CheckIn::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if v.contains('%') || v.contains('+') {
            return Err(ApiError::BadRequest(format!(
                "query value of {k} must be plain (no escapes)"
            )));
        }
        let v = Some(v.to_owned()).filter(|v| !v.is_empty());
        match k {
            "current-version" => c.current_version = v,
            "booted-slot" => c.booted_slot = v,
            "agent-state" => c.agent_state = v,
            "compatible" => c.compatible = v,
            "hardware-rev" => c.hardware_rev = v,
            // Newer agents may send more; ignore what we do not know.
            _ => {}
        }
    }
    Ok(c)
}

async fn release_get(
    State(st): State<AppState>,
    id: axum::Extension<DeviceIdentity>,
    UrlPath(device): UrlPath<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    identity(&device, &id)?;
    let info = check_in_from_query(uri.query())?;
    answer_check_in(&st, &device, &info).await
}

async fn check_in_post(
    State(st): State<AppState>,
    id: axum::Extension<DeviceIdentity>,
    UrlPath(device): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    identity(&device, &id)?;
    let info: CheckIn = if body.is_empty() {
        CheckIn::default()
    } else {
        json_body(&body, "check-in")?
    };
    answer_check_in(&st, &device, &info).await
}

async fn answer_check_in(
    st: &AppState,
    device: &str,
    info: &CheckIn,
) -> Result<Response, ApiError> {
    if let Some(v) = &info.current_version
        && spark_release::Version::parse(v).is_err()
    {
        return Err(ApiError::BadRequest(format!(
            "current-version {v:?} is not a semantic version"
        )));
    }
    if let Some(h) = &info.hardware_rev
        && (h.is_empty() || h.len() > 64)
    {
        return Err(ApiError::BadRequest(format!(
            "hardware-rev {h:?} must be 1-64 characters"
        )));
    }
    let now = crate::now();
    let record = st.store.check_in(device, info, now).await?;
    match st.rollouts.offer_for(&record).await? {
        Some(offer) => {
            st.store
                .set_offered(device, offer.release.id, &offer.rollout, now)
                .await?;
            let signed = st
                .store
                .release(offer.release.id)
                .await?
                .and_then(|r| r.signed)
                .ok_or_else(|| ApiError::NotFound("release vanished".into()))?;
            info!(%device, release = offer.release.id, version = %offer.release.version, rollout = %offer.rollout, wave = offer.wave + 1, "check-in: release offered");
            Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                signed,
            )
                .into_response())
        }
        None => {
            debug!(%device, "check-in: nothing to offer");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

async fn update_status(
    State(st): State<AppState>,
    id: axum::Extension<DeviceIdentity>,
    UrlPath(device): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    identity(&device, &id)?;
    let report: spark_dbus::report::StatusReport = json_body(&body, "status report")?;
    identity(&report.device, &id)?;
    let outcome = st.store.insert_report(&report, crate::now()).await?;
    info!(%device, seq = report.seq, reason = %report.reason, to = ?report.to, ?outcome, "status report");
    if outcome == crate::store::ReportOutcome::Stored {
        // The report is stored (accepted data is never lost); the engine's view follows from it.
        // Should the engine update fail, the device's next check-in with its running version
        // still tells the engine the outcome, so the error is logged rather than returned.
        let offered = st
            .store
            .device(&device)
            .await?
            .and_then(|d| d.offered_rollout);
        if let Err(e) = st.rollouts.report(&report, offered.as_deref()).await {
            error!(%device, seq = report.seq, "status report stored but not applied to its rollout: {e}");
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn bundle(
    State(st): State<AppState>,
    id: axum::Extension<DeviceIdentity>,
    method: Method,
    UrlPath(sha): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound(format!("no bundle {sha}"));
    if !is_sha256_hex(&sha) {
        return Err(not_found());
    }
    let record = st.store.bundle(&sha).await?.ok_or_else(not_found)?;
    let path = st.catalog.blob_path(&sha);
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::Internal(format!(
            "bundle {sha} listed but unreadable at {}: {e}",
            path.display()
        ))
    })?;
    let size = u64::try_from(record.size).unwrap_or(0);
    let etag = format!("\"{sha}\"");
    let h = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    if download::none_match_hits(h(header::IF_NONE_MATCH), &etag) {
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        r.headers_mut().insert(header::ETAG, etag_value);
        return Ok(r);
    }
    let range = if download::if_range_matches(h(header::IF_RANGE), &etag) {
        download::parse_range(h(header::RANGE), size)
    } else {
        RangeSpec::Full
    };
    let (status, start, len) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, size),
        RangeSpec::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeSpec::Unsatisfiable => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            let hv = r.headers_mut();
            hv.insert(header::ETAG, etag_value);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                hv.insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    let device = &*id.0.0;
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        // Bytes count towards the rollout that offered this bundle to this device, if any.
        let rollout = match st.store.device(device).await? {
            Some(d) => match (d.offered_release, d.offered_rollout) {
                (Some(rel), Some(rollout)) => match st.store.release(rel).await? {
                    Some(r) if r.bundle_sha256 == sha => rollout,
                    _ => String::new(),
                },
                _ => String::new(),
            },
            None => String::new(),
        };
        let stream = CountedFile::open(
            file,
            start,
            len,
            device,
            &sha,
            &rollout,
            st.accounting.clone(),
        )
        .await
        .map_err(|e| ApiError::Internal(format!("reading bundle {sha}: {e}")))?;
        debug!(%device, %sha, start, len, %rollout, "serving bundle");
        Body::from_stream(stream)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let hv = r.headers_mut();
    hv.insert(header::ETAG, etag_value);
    hv.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    hv.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hv.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        hv.insert(header::CONTENT_RANGE, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Admin API

/// The admin routes, behind [`admin_auth`]:
/// ```text
/// POST /v1/releases                 body: bundle; header Spark-Release: base64(signed manifest)
///                                   (dev mode: the header may be left out; the server signs)
/// GET  /v1/releases                 GET /v1/releases/{id}        POST /v1/releases/{id}/yank
/// PUT  /v1/releases/{id}/manifest   body: a new signed manifest (JSON or wire form) for the
///                                   same compatible, version and bundle (catalog::replace_manifest)
/// GET  /v1/devices                  GET /v1/devices/{id}
/// PUT  /v1/devices/{id}/attributes  {"hardware_rev","tags":{"region":"eu"},"time_zone"}
/// POST /v1/rollouts {"release":N,"id","plan","filter","gates","windows",…}   (rollouts::CreateRollout)
/// GET  /v1/rollouts   GET /v1/rollouts/{id}   GET /v1/rollouts/{id}/events|devices
/// POST /v1/rollouts/{id}/pause|resume|abort {"reason":"…"}
/// POST /v1/rollouts/tick            evaluate gates now (also runs every `tick-secs`)
/// GET  /v1/data-cost[?by=device]    GET /v1/pushes
/// ```
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/releases", post(release_upload).get(release_list))
        .route("/v1/releases/{id}", get(release_show))
        .route("/v1/releases/{id}/yank", post(release_yank))
        .route(
            "/v1/releases/{id}/manifest",
            axum::routing::put(release_manifest),
        )
        .route("/v1/devices", get(device_list))
        .route("/v1/devices/{id}", get(device_show))
        .route(
            "/v1/devices/{id}/attributes",
            axum::routing::put(device_attributes).post(device_attributes),
        )
        .route("/v1/rollouts", post(rollout_create).get(rollout_list))
        .route("/v1/rollouts/tick", post(rollout_tick))
        .route("/v1/rollouts/{id}", get(rollout_show))
        .route(
            "/v1/rollouts/{id}/{action}",
            post(rollout_action).get(rollout_detail),
        )
        .route("/v1/data-cost", get(data_cost))
        .route("/v1/pushes", get(push_list))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_auth,
        ))
        .with_state(state)
}

/// SHA-256 (hex) of a token: what the database keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Lets a request through with a verified admin certificate or a known admin token.
pub async fn admin_auth(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(AdminIdentity(Some(cn))) = req.extensions().get::<AdminIdentity>() {
        debug!(admin = %cn, method = %req.method(), path = %req.uri().path(), "admin request (certificate)");
        return Ok(next.run(req).await);
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "missing admin token: send `Authorization: Bearer TOKEN` (spark-ota token create) or use an admin client certificate".into(),
            )
        })?;
    match st.store.use_token(&token_hash(token), crate::now()).await? {
        Some(name) => {
            debug!(admin = %name, method = %req.method(), path = %req.uri().path(), "admin request (token)");
            Ok(next.run(req).await)
        }
        None => Err(ApiError::Unauthorized(
            "unknown admin token: create one with `spark-ota token create`".into(),
        )),
    }
}

async fn release_upload(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut stream = body.into_data_stream();
    let result = async {
        // Without the header only a dev-mode catalog accepts the upload (it signs a manifest).
        let doc = match headers.get(RELEASE_HEADER) {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|e| UploadError::ManifestEncoding(e.to_string()))?,
            ),
            None => None,
        };
        st.catalog.upload(doc.as_deref(), &mut stream).await
    }
    .await;
    match result {
        Ok(uploaded) => Ok(json_response(StatusCode::CREATED, &uploaded)),
        Err(e) => {
            drain_refused_upload(&headers, &mut stream, st.catalog.max_bundle_bytes()).await;
            Err(e.into())
        }
    }
}

/// Reads and discards the rest of a refused upload before the error response goes out.
///
/// Why: an upload refused on its manifest is answered before its body is read. Closing a socket
/// with unread bytes makes the kernel send a reset, and the client, still writing, then sees
/// "connection reset" instead of the 4xx that says what was wrong (a race CI hit). Like nginx's
/// lingering close, the rest is read, but only up to the bundle size limit and for 30 s at most;
/// anything bigger or slower is cut off.
async fn drain_refused_upload<S>(headers: &HeaderMap, stream: &mut S, limit: u64)
where
    S: futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    use futures_util::StreamExt as _;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return;
    }
    let drain = async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > limit {
                break;
            }
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        debug!("refused upload still sending after 30 s: closing the connection");
    }
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::BadRequest(format!("release id {id:?} is not a number")))
}

async fn release_list(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &st.store.releases().await?))
}

async fn release_show(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let r = st
        .store
        .release(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no release {id}")))?;
    Ok(json_response(StatusCode::OK, &r))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn release_yank(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let body: ReasonBody = if body.is_empty() {
        ReasonBody::default()
    } else {
        json_body(&body, "yank request")?
    };
    let reason = body.reason.unwrap_or_else(|| "yanked".into());
    if !st.store.yank(id, &reason, crate::now()).await? {
        return Err(ApiError::NotFound(format!("no release {id}")));
    }
    info!(release = id, %reason, "release yanked");
    let r = st.store.release(id).await?;
    Ok(json_response(StatusCode::OK, &r))
}

/// `PUT /v1/releases/{id}/manifest`: the body is the signed manifest itself (JSON or wire
/// form, as `spark-keys sign-release` writes it), not base64 as in the upload's header.
async fn release_manifest(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let replaced = st.catalog.replace_manifest(id, &body).await?;
    Ok(json_response(StatusCode::OK, &replaced))
}

async fn device_list(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &st.store.devices().await?))
}

async fn device_show(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let d = st
        .store
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no device {id} has checked in")))?;
    let reports = st.store.reports(&id, 50).await?;
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "device": d, "reports": reports }),
    ))
}

async fn device_attributes(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let a: DeviceAttributes = json_body(&body, "device attributes")?;
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::BadRequest(format!(
            "device id {id:?} must be 1-64 characters"
        )));
    }
    if let Some(tz) = &a.time_zone {
        spark_rollout::window::time_zone(Some(tz))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    if a.hardware_rev.as_deref() == Some("") {
        return Err(ApiError::BadRequest(
            "hardware_rev must not be empty; leave it out to keep the stored one".into(),
        ));
    }
    let d = st.store.set_attributes(&id, &a, crate::now()).await?;
    info!(device = %id, hardware_rev = ?d.hardware_rev, tags = ?d.tags, time_zone = ?d.time_zone, "device attributes set");
    Ok(json_response(StatusCode::OK, &d))
}

async fn rollout_create(State(st): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateRollout = json_body(&body, "rollout")?;
    let r = st.rollouts.create(&req).await?;
    let status = st.rollouts.status(&r.id).await?;
    Ok(json_response(StatusCode::CREATED, &status))
}

async fn rollout_tick(State(st): State<AppState>) -> Result<Response, ApiError> {
    let report = st.rollouts.tick().await?;
    let events: Vec<serde_json::Value> = report
        .events
        .iter()
        .map(|(id, e)| serde_json::json!({ "rollout": id, "event": e }))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "events": events, "telemetry_error": report.telemetry_error }),
    ))
}

async fn rollout_detail(
    State(st): State<AppState>,
    UrlPath((id, what)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    match what.as_str() {
        "events" => Ok(json_response(
            StatusCode::OK,
            &st.rollouts.events(&id).await?,
        )),
        "devices" => Ok(json_response(
            StatusCode::OK,
            &st.rollouts.devices(&id).await?,
        )),
        other => Err(ApiError::NotFound(format!(
            "no rollout view {other:?}: use events or devices"
        ))),
    }
}

async fn rollout_list(State(st): State<AppState>) -> Result<Response, ApiError> {
    st.accounting.flush(&st.store).await?;
    let mut out = Vec::new();
    for r in st.store.rollouts().await? {
        out.push(st.rollouts.status(&r.id).await?);
    }
    Ok(json_response(StatusCode::OK, &out))
}

async fn rollout_show(
    State(st): State<AppState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    st.accounting.flush(&st.store).await?;
    Ok(json_response(
        StatusCode::OK,
        &st.rollouts.status(&id).await?,
    ))
}

async fn rollout_action(
    State(st): State<AppState>,
    UrlPath((id, action)): UrlPath<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "abort" => Action::Abort,
        other => {
            return Err(ApiError::NotFound(format!(
                "no rollout action {other:?}: use pause, resume or abort"
            )));
        }
    };
    let body: ReasonBody = if body.is_empty() {
        ReasonBody::default()
    } else {
        json_body(&body, "rollout action")?
    };
    st.rollouts.act(&id, action, body.reason.as_deref()).await?;
    Ok(json_response(
        StatusCode::OK,
        &st.rollouts.status(&id).await?,
    ))
}

async fn data_cost(State(st): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    st.accounting.flush(&st.store).await?;
    let by_device = match uri.query() {
        None | Some("") | Some("by=rollout") => false,
        Some("by=device") => true,
        Some(q) => {
            return Err(ApiError::BadRequest(format!(
                "unknown query {q:?}: use ?by=rollout or ?by=device"
            )));
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &st.store.data_cost(by_device).await?,
    ))
}

async fn push_list(State(st): State<AppState>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &st.store.pushes().await?))
}
