//! The endpoints. Every route is added through [`Routes`], which also records its method and
//! path, so a test can check the committed OpenAPI document lists exactly these routes.
//!
//! Reads come from ingest's tables (`gateways`, `roster_meters`, `readings`, `events`,
//! `commands`) and the pipeline's (`consumption_hourly`, `consumption_daily`, `grid_events`);
//! commands go to gateways through ingest's push API ([`crate::ingest`]).

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::info;

use crate::db::{Arg, Cols, Db};
use crate::error::{ApiError, IngestCallError, PROBLEM_JSON, StoreError};
use crate::ingest::IngestClient;
use crate::query::{Params, encode_cursor};
use crate::tokens::{Scope, Tokens};

/// The committed OpenAPI 3 document, served at `GET /openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest page of readings or consumption rows; longer ranges stream as NDJSON.
pub const MAX_READINGS_PAGE: u32 = 10_000;
/// Largest page of gateways, meters or events.
pub const MAX_PAGE: u32 = 1_000;
/// Longest range of one request over one gateway's readings.
pub const MAX_GATEWAY_RANGE: i64 = 31 * 86_400;
/// Longest range of one request over one meter's readings, consumption or grid events.
pub const MAX_RANGE: i64 = 366 * 86_400;
/// Media type of streamed rows (one JSON object per line).
pub const NDJSON: &str = "application/x-ndjson";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub tokens: Tokens,
    pub ingest: Option<IngestClient>,
}

/// The client certificate's CN, put into each request by the connection (for the logs).
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<str>);

/// A router that remembers what it routes.
struct Routes {
    router: Router<AppState>,
    list: Vec<(Method, &'static str)>,
}

impl Routes {
    fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone())
            .unwrap_or(axum::routing::MethodFilter::GET);
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.list.push((method, path));
        self
    }
}

fn api_routes() -> Routes {
    let r = Routes {
        router: Router::new(),
        list: Vec::new(),
    };
    r.add(Method::GET, "/v1/gateways", list_gateways)
        .add(Method::GET, "/v1/gateways/{gateway}", one_gateway)
        .add(Method::GET, "/v1/gateways/{gateway}/meters", gateway_meters)
        .add(
            Method::GET,
            "/v1/gateways/{gateway}/readings",
            gateway_readings,
        )
        .add(
            Method::POST,
            "/v1/gateways/{gateway}/commands",
            post_command,
        )
        .add(Method::GET, "/v1/commands/{id}", one_command)
        .add(Method::GET, "/v1/meters", list_meters)
        .add(Method::GET, "/v1/meters/{meter}", one_meter)
        .add(Method::GET, "/v1/meters/{meter}/readings", meter_readings)
        .add(
            Method::GET,
            "/v1/meters/{meter}/consumption",
            meter_consumption,
        )
        .add(Method::GET, "/v1/grid-events", grid_events)
}

/// Every route: (method, path in OpenAPI's `{param}` form), `GET /openapi.json` included.
pub fn route_list() -> Vec<(Method, &'static str)> {
    let mut list = api_routes().list;
    list.push((Method::GET, "/openapi.json"));
    list
}

/// The application: authenticated `/v1` routes, the OpenAPI document, and problem details for
/// every error (ours and axum's own rejections).
pub fn router(state: AppState) -> Router {
    let api = api_routes()
        .router
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .merge(api)
        .route("/openapi.json", axum::routing::get(openapi))
        .fallback(no_route)
        .layer(middleware::from_fn(problems))
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::NoRoute(format!("{method} {}", uri.path()))
}

/// Turns every error response that is not already problem details (axum's rejections of
/// undecodable paths, 405s) into one, so clients see one error format.
async fn problems(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = response.headers().get(header::ALLOW).cloned();
        let mut r = ApiError::MethodNotAllowed(method.to_string()).into_response();
        if let Some(allow) = allow {
            r.headers_mut().insert(header::ALLOW, allow);
        }
        return r;
    }
    let body = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).into_owned();
    ApiError::Framework(
        status,
        if text.is_empty() {
            status.to_string()
        } else {
            text
        },
    )
    .into_response()
}

/// Checks the bearer token and the scope the method needs; logs every request with the caller.
async fn authenticate(State(st): State<AppState>, request: Request, next: Next) -> Response {
    // Only POST changes anything (commands); any other method needs `read`, so a wrong method
    // with a read token is the router's 405, not a 403.
    let needed = if request.method() == Method::POST {
        Scope::Command
    } else {
        Scope::Read
    };
    let caller = request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "?".to_owned(), |c| c.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let token = match bearer(request.headers()) {
        Some(t) => t,
        None => return ApiError::MissingToken.into_response(),
    };
    let (name, scopes) = match st.tokens.check(&token).await {
        Ok(Some(found)) => found,
        Ok(None) => {
            info!(%caller, %method, %path, "unknown or revoked bearer token");
            return ApiError::InvalidToken.into_response();
        }
        Err(e) => return ApiError::Store(e).into_response(),
    };
    if !scopes.contains(&needed) {
        info!(%caller, token = %name, %method, %path, "token lacks scope {}", needed.as_str());
        return ApiError::MissingScope {
            needed: needed.as_str(),
        }
        .into_response();
    }
    let response = next.run(request).await;
    info!(%caller, token = %name, %method, %path, status = response.status().as_u16(), "request");
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Pages and streams.

/// A page of items and the cursor of the next one (absent on the last page).
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Cuts `rows` (fetched with `limit + 1`) to a page; the cursor keys the last row returned.
fn page<T, K: Serialize>(
    mut rows: Vec<T>,
    limit: u32,
    kind: &str,
    key: impl Fn(&T) -> K,
) -> Page<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| encode_cursor(kind, &key(r)))
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(NDJSON))
}

/// An NDJSON response fed by `fill`, which sends rows into a bounded channel (a slow client
/// slows the query; rows are never all in memory). A failure mid-stream aborts the chunked body
/// without its final chunk, so the client sees a truncated transfer rather than a short answer.
fn ndjson<T, F, Fut>(fill: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(mpsc::Sender<Result<T, StoreError>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Result<T, StoreError>>(1024);
    tokio::spawn(fill(tx));
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        let first = rx.recv().await?;
        let mut buf = Vec::with_capacity(64 * 1024);
        let push = |item: Result<T, StoreError>, buf: &mut Vec<u8>| -> Result<(), StoreError> {
            let row = item?;
            // Rows are plain structs of strings and integers: serializing cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &row);
            buf.push(b'\n');
            Ok(())
        };
        let mut result = push(first, &mut buf);
        while result.is_ok() && buf.len() < 60 * 1024 {
            match rx.try_recv() {
                Ok(item) => result = push(item, &mut buf),
                Err(_) => break,
            }
        }
        match result {
            Ok(()) => Some((Ok(Bytes::from(buf)), rx)),
            Err(e) => {
                tracing::error!("stream ended early: {e}");
                rx.close();
                Some((Err(std::io::Error::other("stream failed")), rx))
            }
        }
    });
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(chunks),
    )
        .into_response()
}

fn refuse_paging_in_stream(p: &Params) -> Result<(), ApiError> {
    if p.get("limit").is_some() || p.get("cursor").is_some() {
        return Err(ApiError::InvalidQuery(
            "an application/x-ndjson stream returns the whole range; drop limit and cursor".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Gateways.

/// A gateway's status.
#[derive(Debug, Serialize)]
pub struct GatewayStatus {
    pub gateway: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_committed_seq: i64,
    pub firmware_version: Option<String>,
    pub booted_slot: Option<String>,
    pub protocol_version: Option<i64>,
    pub roster_version: i64,
    pub config_version: i64,
    /// Meters in the gateway's current roster.
    pub meters: i64,
    /// The latest health event, if the gateway sent one.
    pub health: Option<Health>,
}

/// From the gateway's latest `health` event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Health {
    /// When the gateway sent it, unix seconds.
    #[serde(default)]
    pub ts: i64,
    /// Messages waiting in the gateway's durable outgoing queue.
    pub queue_len: i64,
    /// Free space on the gateway's `/data`, KiB.
    pub free_data_kib: i64,
    pub uptime_secs: i64,
    pub rssi_dbm: i64,
    pub meters_seen: i64,
    /// Bytes the gateway sent and received on its cloud link during the UTC day of `ts`
    /// (cellular data used today); `null` from gateways on protocol version 1.
    #[serde(default)]
    pub bytes_used_today: Option<i64>,
}

const GATEWAY_COLUMNS: &str = "SELECT g.gateway, EPOCH(g.first_seen), EPOCH(g.last_seen), \
     CAST(g.last_committed_seq AS BIGINT), g.firmware_version, g.booted_slot, \
     CAST(g.protocol_version AS BIGINT), CAST(g.roster_version AS BIGINT), \
     CAST(g.config_version AS BIGINT), \
     (SELECT CAST(count(*) AS BIGINT) FROM roster_meters r WHERE r.gateway = g.gateway), \
     (SELECT EPOCH(e.ts) FROM events e WHERE e.gateway = g.gateway AND e.kind = 'health' \
      ORDER BY e.seq DESC LIMIT 1), \
     (SELECT CAST(e.data AS TEXT) FROM events e WHERE e.gateway = g.gateway AND e.kind = 'health' \
      ORDER BY e.seq DESC LIMIT 1) \
     FROM gateways g";

fn decode_gateway(r: &dyn Cols) -> Result<GatewayStatus, sqlx::Error> {
    let health = match (r.opt_int(10)?, r.opt_text(11)?) {
        (Some(ts), Some(data)) => serde_json::from_str::<Health>(&data)
            .ok()
            .map(|h| Health { ts, ..h }),
        _ => None,
    };
    Ok(GatewayStatus {
        gateway: r.text(0)?,
        first_seen: r.int(1)?,
        last_seen: r.int(2)?,
        last_committed_seq: r.int(3)?,
        firmware_version: r.opt_text(4)?,
        booted_slot: r.opt_text(5)?,
        protocol_version: r.opt_int(6)?,
        roster_version: r.int(7)?,
        config_version: r.int(8)?,
        meters: r.int(9)?,
        health,
    })
}

async fn list_gateways(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<GatewayStatus>>, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit", "cursor"])?;
    let limit = p.limit(100, MAX_PAGE)?;
    let after: String = p.cursor("gateways")?.unwrap_or_default();
    let sql = format!("{GATEWAY_COLUMNS} WHERE g.gateway > $1 ORDER BY g.gateway LIMIT $2");
    let rows = st
        .db
        .fetch(
            "list gateways",
            &sql,
            &[Arg::Text(after), Arg::Int(i64::from(limit) + 1)],
            decode_gateway,
        )
        .await?;
    Ok(Json(page(rows, limit, "gateways", |g| g.gateway.clone())))
}

async fn gateway_status(db: &Db, gateway: &str) -> Result<GatewayStatus, ApiError> {
    let sql = format!("{GATEWAY_COLUMNS} WHERE g.gateway = $1");
    db.fetch(
        "gateway status",
        &sql,
        &[Arg::Text(gateway.to_owned())],
        decode_gateway,
    )
    .await?
    .into_iter()
    .next()
    .ok_or_else(|| ApiError::NotFound(format!("no gateway {gateway:?} was ever seen by ingest")))
}

async fn one_gateway(
    State(st): State<AppState>,
    Path(gateway): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<GatewayStatus>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    Ok(Json(gateway_status(&st.db, &gateway).await?))
}

async fn gateway_exists(db: &Db, gateway: &str) -> Result<(), ApiError> {
    let found = db
        .fetch(
            "gateway exists",
            "SELECT CAST(count(*) AS BIGINT) FROM gateways WHERE gateway = $1",
            &[Arg::Text(gateway.to_owned())],
            |r| r.int(0),
        )
        .await?;
    if found.first().copied().unwrap_or(0) == 0 {
        return Err(ApiError::NotFound(format!(
            "no gateway {gateway:?} was ever seen by ingest"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Meters.

/// A meter in a gateway's roster.
#[derive(Debug, Serialize)]
pub struct RosterMeter {
    pub meter_id: String,
    pub gateway: String,
    /// Its index in the gateway's readings batches.
    pub position: i64,
}

fn decode_roster(r: &dyn Cols) -> Result<RosterMeter, sqlx::Error> {
    Ok(RosterMeter {
        gateway: r.text(0)?,
        position: r.int(1)?,
        meter_id: r.text(2)?,
    })
}

async fn list_meters(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<RosterMeter>>, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit", "cursor"])?;
    let limit = p.limit(100, MAX_PAGE)?;
    let (gw, pos): (String, i64) = p.cursor("meters")?.unwrap_or((String::new(), -1));
    let rows = st
        .db
        .fetch(
            "list meters",
            "SELECT gateway, CAST(position AS BIGINT), meter_id FROM roster_meters \
             WHERE (gateway, position) > ($1, $2) ORDER BY gateway, position LIMIT $3",
            &[Arg::Text(gw), Arg::Int(pos), Arg::Int(i64::from(limit) + 1)],
            decode_roster,
        )
        .await?;
    Ok(Json(page(rows, limit, "meters", |m| {
        (m.gateway.clone(), m.position)
    })))
}

async fn gateway_meters(
    State(st): State<AppState>,
    Path(gateway): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<RosterMeter>>, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit", "cursor"])?;
    let limit = p.limit(100, MAX_PAGE)?;
    let pos: i64 = p.cursor("gateway-meters")?.unwrap_or(-1);
    gateway_exists(&st.db, &gateway).await?;
    let rows = st
        .db
        .fetch(
            "gateway meters",
            "SELECT gateway, CAST(position AS BIGINT), meter_id FROM roster_meters \
             WHERE gateway = $1 AND position > $2 ORDER BY position LIMIT $3",
            &[
                Arg::Text(gateway),
                Arg::Int(pos),
                Arg::Int(i64::from(limit) + 1),
            ],
            decode_roster,
        )
        .await?;
    Ok(Json(page(rows, limit, "gateway-meters", |m| m.position)))
}

/// A meter and the gateways whose current roster lists it.
#[derive(Debug, Serialize)]
pub struct Meter {
    pub meter_id: String,
    pub gateways: Vec<MeterPlace>,
}

#[derive(Debug, Serialize)]
pub struct MeterPlace {
    pub gateway: String,
    pub position: i64,
}

async fn meter_places(db: &Db, meter: &str) -> Result<Vec<MeterPlace>, ApiError> {
    let places = db
        .fetch(
            "meter gateways",
            "SELECT gateway, CAST(position AS BIGINT) FROM roster_meters WHERE meter_id = $1 \
             ORDER BY gateway",
            &[Arg::Text(meter.to_owned())],
            |r| {
                Ok(MeterPlace {
                    gateway: r.text(0)?,
                    position: r.int(1)?,
                })
            },
        )
        .await?;
    if places.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no gateway's roster lists meter {meter:?}"
        )));
    }
    Ok(places)
}

async fn one_meter(
    State(st): State<AppState>,
    Path(meter): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Meter>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let gateways = meter_places(&st.db, &meter).await?;
    Ok(Json(Meter {
        meter_id: meter,
        gateways,
    }))
}

// ---------------------------------------------------------------------------------------------
// Readings.

/// One stored reading.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    pub gateway: String,
    pub meter_id: String,
    /// Unix seconds.
    pub ts: i64,
    /// Cumulative import register, Wh.
    pub wh: i64,
}

fn decode_reading(r: &dyn Cols) -> Result<Reading, sqlx::Error> {
    Ok(Reading {
        gateway: r.text(0)?,
        meter_id: r.text(1)?,
        ts: r.int(2)?,
        wh: r.int(3)?,
    })
}

/// One gateway's readings in `[from, to)` after (meter_id, ts), in index order.
const GATEWAY_READINGS: &str = "SELECT gateway, meter_id, EPOCH(ts), wh FROM readings \
     WHERE gateway = $1 AND ts >= TIME($2) AND ts < TIME($3) \
     AND (meter_id > $4 OR (meter_id = $4 AND ts > TIME($5))) ORDER BY meter_id, ts";

async fn gateway_readings(
    State(st): State<AppState>,
    Path(gateway): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["from", "to", "limit", "cursor"])?;
    let (from, to) = p.range(MAX_GATEWAY_RANGE)?;
    let stream = wants_stream(&headers);
    let limit = if stream {
        refuse_paging_in_stream(&p)?;
        0
    } else {
        p.limit(1000, MAX_READINGS_PAGE)?
    };
    let (meter, ts): (String, i64) = p.cursor("gateway-readings")?.unwrap_or((String::new(), 0));
    gateway_exists(&st.db, &gateway).await?;
    let args = vec![
        Arg::Text(gateway),
        Arg::Int(from),
        Arg::Int(to),
        Arg::Text(meter),
        Arg::Int(ts),
    ];
    if stream {
        let db = st.db.clone();
        return Ok(ndjson(move |tx| async move {
            db.stream_into(
                "gateway readings",
                GATEWAY_READINGS,
                args,
                decode_reading,
                &tx,
            )
            .await;
        }));
    }
    let mut args = args;
    args.push(Arg::Int(i64::from(limit) + 1));
    let rows = st
        .db
        .fetch(
            "gateway readings",
            &format!("{GATEWAY_READINGS} LIMIT $6"),
            &args,
            decode_reading,
        )
        .await?;
    Ok(Json(page(rows, limit, "gateway-readings", |r| {
        (r.meter_id.clone(), r.ts)
    }))
    .into_response())
}

/// One meter's readings under one gateway in `[from, to)` after ts, in index order.
const METER_READINGS: &str = "SELECT gateway, meter_id, EPOCH(ts), wh FROM readings \
     WHERE gateway = $1 AND meter_id = $2 AND ts >= TIME($3) AND ts < TIME($4) \
     ORDER BY ts";

async fn meter_readings(
    State(st): State<AppState>,
    Path(meter): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["from", "to", "limit", "cursor"])?;
    let (from, to) = p.range(MAX_RANGE)?;
    let stream = wants_stream(&headers);
    let limit = if stream {
        refuse_paging_in_stream(&p)?;
        0
    } else {
        p.limit(1000, MAX_READINGS_PAGE)?
    };
    let after: Option<(String, i64)> = p.cursor("meter-readings")?;
    // Readings are keyed (gateway, meter, ts): one index range per gateway listing the meter
    // (normally one; two after a meter moved), gateways in name order.
    let mut gateways: Vec<String> = meter_places(&st.db, &meter)
        .await?
        .into_iter()
        .map(|p| p.gateway)
        .collect();
    gateways.dedup();
    if stream {
        let db = st.db.clone();
        return Ok(ndjson(move |tx| async move {
            for gw in gateways {
                let args = vec![
                    Arg::Text(gw),
                    Arg::Text(meter.clone()),
                    Arg::Int(from),
                    Arg::Int(to),
                ];
                if !db
                    .stream_into("meter readings", METER_READINGS, args, decode_reading, &tx)
                    .await
                {
                    return;
                }
            }
        }));
    }
    let mut rows: Vec<Reading> = Vec::new();
    let want = limit as usize + 1;
    for gw in gateways {
        let start = match &after {
            Some((cg, _)) if gw < *cg => continue,
            Some((cg, cts)) if gw == *cg => cts.saturating_add(1).max(from),
            _ => from,
        };
        if start >= to {
            continue;
        }
        let remaining = (want - rows.len()) as i64;
        let more = st
            .db
            .fetch(
                "meter readings",
                &format!("{METER_READINGS} LIMIT $5"),
                &[
                    Arg::Text(gw),
                    Arg::Text(meter.clone()),
                    Arg::Int(start),
                    Arg::Int(to),
                    Arg::Int(remaining),
                ],
                decode_reading,
            )
            .await?;
        rows.extend(more);
        if rows.len() >= want {
            break;
        }
    }
    Ok(Json(page(rows, limit, "meter-readings", |r| {
        (r.gateway.clone(), r.ts)
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Consumption and grid events (the pipeline's tables).

/// Wh a meter consumed in one hour or day.
#[derive(Debug, Serialize)]
pub struct Consumption {
    pub gateway: String,
    pub meter_id: String,
    /// Start of the UTC hour or day, unix seconds.
    pub start: i64,
    pub wh: i64,
}

async fn meter_consumption(
    State(st): State<AppState>,
    Path(meter): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<Consumption>>, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &["resolution", "from", "to", "limit", "cursor"],
    )?;
    let (table, column) = match p.required("resolution")? {
        "hour" => ("consumption_hourly", "hour"),
        "day" => ("consumption_daily", "day"),
        other => {
            return Err(ApiError::InvalidQuery(format!(
                "resolution={:?}: use hour or day",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let (from, to) = p.range(MAX_RANGE)?;
    let limit = p.limit(1000, MAX_READINGS_PAGE)?;
    let (gw, start): (String, i64) = p.cursor(table)?.unwrap_or((String::new(), 0));
    let sql = format!(
        "SELECT gateway, meter_id, EPOCH({column}), CAST(wh AS BIGINT) FROM {table} \
         WHERE meter_id = $1 AND {column} >= TIME($2) AND {column} < TIME($3) \
         AND (gateway > $4 OR (gateway = $4 AND {column} > TIME($5))) \
         ORDER BY gateway, {column} LIMIT $6"
    );
    let rows = st
        .db
        .fetch(
            "meter consumption",
            &sql,
            &[
                Arg::Text(meter.clone()),
                Arg::Int(from),
                Arg::Int(to),
                Arg::Text(gw),
                Arg::Int(start),
                Arg::Int(i64::from(limit) + 1),
            ],
            |r| {
                Ok(Consumption {
                    gateway: r.text(0)?,
                    meter_id: r.text(1)?,
                    start: r.int(2)?,
                    wh: r.int(3)?,
                })
            },
        )
        .await?;
    if rows.is_empty() && p.get("cursor").is_none() {
        // An empty answer for a meter nobody knows would hide a typo in its id.
        meter_places(&st.db, &meter).await?;
    }
    Ok(Json(page(rows, limit, table, |c| {
        (c.gateway.clone(), c.start)
    })))
}

/// A grid-health event found by the pipeline.
#[derive(Debug, Serialize)]
pub struct GridEvent {
    pub id: i64,
    pub gateway: String,
    pub meter_id: Option<String>,
    /// `outage`, `gateway_silent`, `meter_negative_delta`, `meter_zero_usage`, `meter_reset`,
    /// `meter_rollover`.
    pub kind: String,
    pub start_ts: i64,
    /// Absent while the condition lasts.
    pub end_ts: Option<i64>,
    pub detected_at: i64,
    pub data: Value,
}

/// Kinds of grid events the pipeline writes.
pub const GRID_EVENT_KINDS: &[&str] = &[
    "outage",
    "gateway_silent",
    "meter_negative_delta",
    "meter_zero_usage",
    "meter_reset",
    "meter_rollover",
];

async fn grid_events(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Page<GridEvent>>, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &["from", "to", "gateway", "kind", "limit", "cursor"],
    )?;
    let (from, to) = p.range(MAX_RANGE)?;
    let limit = p.limit(100, MAX_PAGE)?;
    let (cts, cid): (i64, i64) = p.cursor("grid-events")?.unwrap_or((0, -1));
    let mut sql = String::from(
        "SELECT id, gateway, meter_id, kind, EPOCH(start_ts), EPOCH(end_ts), EPOCH(detected_at), \
         CAST(data AS TEXT) FROM grid_events \
         WHERE start_ts >= TIME($1) AND start_ts < TIME($2) \
         AND (start_ts > TIME($3) OR (start_ts = TIME($3) AND id > $4))",
    );
    let mut args = vec![Arg::Int(from), Arg::Int(to), Arg::Int(cts), Arg::Int(cid)];
    if let Some(gw) = p.get("gateway") {
        gateway_exists(&st.db, gw).await?;
        args.push(Arg::Text(gw.to_owned()));
        sql.push_str(&format!(" AND gateway = ${}", args.len()));
    }
    if let Some(kind) = p.get("kind") {
        if !GRID_EVENT_KINDS.contains(&kind) {
            return Err(ApiError::InvalidQuery(format!(
                "kind={:?}: use one of {}",
                kind.chars().take(40).collect::<String>(),
                GRID_EVENT_KINDS.join(", ")
            )));
        }
        args.push(Arg::Text(kind.to_owned()));
        sql.push_str(&format!(" AND kind = ${}", args.len()));
    }
    args.push(Arg::Int(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY start_ts, id LIMIT ${}", args.len()));
    let rows = st
        .db
        .fetch("grid events", &sql, &args, |r| {
            Ok(GridEvent {
                id: r.int(0)?,
                gateway: r.text(1)?,
                meter_id: r.opt_text(2)?,
                kind: r.text(3)?,
                start_ts: r.int(4)?,
                end_ts: r.opt_int(5)?,
                detected_at: r.int(6)?,
                data: serde_json::from_str(&r.text(7)?).unwrap_or(Value::Null),
            })
        })
        .await?;
    Ok(Json(page(rows, limit, "grid-events", |e| {
        (e.start_ts, e.id)
    })))
}

// ---------------------------------------------------------------------------------------------
// Commands.

/// A command body as ingest's push API takes it (checked here so a bad one is our clear 400).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
// Parsed to check it; the JSON itself is what is forwarded, so some fields are never read.
#[allow(dead_code)]
enum CommandBody {
    UpdateAvailable {
        manifest_b64: String,
    },
    SetConfig {
        config_version: u32,
        config_b64: String,
    },
    Reboot {
        delay_secs: u32,
    },
}

/// Longest a POST waits for the gateway's first result (ingest's own cap).
pub const MAX_WAIT_SECS: u64 = 60;

fn check_command(body: &[u8]) -> Result<Value, ApiError> {
    let bad = |e: serde_json::Error| ApiError::InvalidBody(format!("invalid command: {e}"));
    let mut json: Value = serde_json::from_slice(body).map_err(bad)?;
    let object = json
        .as_object_mut()
        .ok_or_else(|| ApiError::InvalidBody("a command is a JSON object".into()))?;
    let wait = match object.remove("wait_secs") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_WAIT_SECS => Some(n),
            _ => {
                return Err(ApiError::InvalidBody(format!(
                    "wait_secs must be a whole number of seconds from 0 to {MAX_WAIT_SECS}"
                )));
            }
        },
    };
    let command: CommandBody = serde_json::from_value(json.clone()).map_err(bad)?;
    let b64 = |field: &str, text: &str, max: usize| -> Result<(), ApiError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| ApiError::InvalidBody(format!("{field} is not base64: {e}")))?;
        if bytes.len() > max {
            return Err(ApiError::InvalidBody(format!(
                "{field} decodes to {} bytes; gateways take at most {max}",
                bytes.len()
            )));
        }
        Ok(())
    };
    match &command {
        CommandBody::UpdateAvailable { manifest_b64 } => {
            b64("manifest_b64", manifest_b64, spark_proto::MAX_MANIFEST_LEN)?
        }
        CommandBody::SetConfig { config_b64, .. } => {
            b64("config_b64", config_b64, spark_proto::MAX_CONFIG_LEN)?
        }
        CommandBody::Reboot { .. } => {}
    }
    if let (Some(n), Some(o)) = (wait, json.as_object_mut()) {
        o.insert("wait_secs".into(), Value::from(n));
    }
    Ok(json)
}

/// A command and its result, as ingest reports it.
type CommandJson = Value;

fn ingest_error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

async fn post_command(
    State(st): State<AppState>,
    Path(gateway): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<CommandJson>), ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        return Err(ApiError::UnsupportedMediaType);
    }
    let command = check_command(&body)?;
    gateway_exists(&st.db, &gateway).await?;
    let ingest = st.ingest.as_ref().ok_or_else(|| {
        ApiError::Ingest(IngestCallError::BadAnswer {
            addr: "(none)".into(),
            status: 0,
            body: "no [ingest] section in the config".into(),
        })
    })?;
    let path = format!(
        "/v1/gateways/{}/commands",
        form_urlencoded::byte_serialize(gateway.as_bytes()).collect::<String>()
    );
    let answer = ingest
        .call(
            "POST",
            &path,
            Some(serde_json::to_vec(&command).unwrap_or_default()),
        )
        .await?;
    match answer.status {
        200 | 202 => {
            let record: Value = serde_json::from_slice(&answer.body)
                .ok()
                .filter(|v: &Value| v.get("id").is_some_and(Value::is_u64))
                .ok_or_else(|| IngestCallError::BadAnswer {
                    addr: path.clone(),
                    status: answer.status,
                    body: String::from_utf8_lossy(&answer.body)
                        .chars()
                        .take(300)
                        .collect(),
                })?;
            let status = if answer.status == 200 {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            Ok((status, Json(record)))
        }
        400 => Err(ApiError::IngestRefused(ingest_error_text(&answer.body))),
        409 => Err(ApiError::GatewayNotConnected(gateway)),
        503 if ingest_error_text(&answer.body).contains("queued") => {
            Err(ApiError::GatewayBusy(gateway))
        }
        status => Err(ApiError::Ingest(IngestCallError::BadAnswer {
            addr: path,
            status,
            body: ingest_error_text(&answer.body),
        })),
    }
}

/// A command of the push channel and what became of it (read from ingest's `commands` table).
#[derive(Debug, Serialize)]
pub struct CommandRecord {
    pub id: i64,
    pub gateway: String,
    pub kind: String,
    pub status: String,
    pub code: i64,
    pub detail: String,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    pub updated_at: i64,
}

async fn one_command(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<CommandRecord>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let n: i64 = match id.parse::<u64>() {
        Ok(n) => i64::try_from(n).map_err(|_| ApiError::NotFound(format!("no command {id}")))?,
        Err(_) => {
            return Err(ApiError::InvalidQuery(format!(
                "command id {:?} is not a number",
                id.chars().take(40).collect::<String>()
            )));
        }
    };
    st.db
        .fetch(
            "command",
            "SELECT CAST(id AS BIGINT), gateway, kind, status, CAST(code AS BIGINT), detail, \
             EPOCH(created_at), EPOCH(delivered_at), EPOCH(updated_at) FROM commands WHERE id = $1",
            &[Arg::Int(n)],
            |r| {
                Ok(CommandRecord {
                    id: r.int(0)?,
                    gateway: r.text(1)?,
                    kind: r.text(2)?,
                    status: r.text(3)?,
                    code: r.int(4)?,
                    detail: r.text(5)?,
                    created_at: r.int(6)?,
                    delivered_at: r.opt_int(7)?,
                    updated_at: r.int(8)?,
                })
            },
        )
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no command {n}")))
}
