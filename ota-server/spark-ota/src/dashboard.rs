//! The dashboard: server-rendered HTML pages for people, on the admin listener next to the admin
//! API. Read-only (pausing, resuming and aborting stay in the CLI and the API), plain HTML and
//! CSS, no JavaScript; every value from the database goes through [`esc`].
//!
//! ```text
//! GET  /ui                  overview: counts, rollouts in progress, bytes served
//! GET  /ui/releases         the catalog (yanked ones with their reason)
//! GET  /ui/rollouts         every rollout: state, progress, failure rate, bytes served
//! GET  /ui/rollouts/{id}    waves (progress bars, counts, failure rate, gate), pause reason, events
//! GET  /ui/devices          devices: version, attributes, last report, bytes downloaded
//! GET  /ui/login            sign-in form          POST /ui/login   token=…&next=/ui/…
//! POST /ui/logout           forget the cookie
//! ```
//!
//! Who may look: the same people as the admin API. An admin client certificate (when the
//! listener has `admin-ca`) or `Authorization: Bearer TOKEN` is accepted as there. A browser
//! without a certificate signs in like on hawkBit's or Mender's UI: a form takes an admin token
//! (`spark-ota token create`), checks it, and keeps it in a cookie ([`COOKIE`]: `HttpOnly`, so
//! page scripts cannot read it; `Secure`; `SameSite=Strict`, so other sites cannot make the browser
//! use it; `Max-Age` 8 hours). The cookie is checked against the hashed tokens on every request,
//! so a token deleted from the database ends its sessions. The cookie is only accepted on `/ui`
//! pages: the JSON API keeps asking for the bearer header, so the cookie adds no cross-site way in.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{debug, error, info, warn};

use crate::api::{AdminIdentity, AppState, token_hash};
use crate::cli::time_text;
use crate::rollouts::{RolloutError, RolloutStatus, WaveStatus};

/// The session cookie: the admin token itself. `__Host-` makes the browser insist on `Secure`,
/// `Path=/` and no `Domain`, so no other host or plain-HTTP page can plant or read it.
pub const COOKIE: &str = "__Host-spark-ota-admin";
/// How long a browser keeps a sign-in.
const SESSION_SECS: u32 = 8 * 3600;
/// Rows shown on the devices page; the CLI (`spark-ota device list`) lists them all.
const MAX_DEVICE_ROWS: usize = 2000;

/// The dashboard routes (mounted on the admin listener, see `server.rs`).
pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/releases", get(releases))
        .route("/ui/rollouts", get(rollouts))
        .route("/ui/rollouts/{id}", get(rollout))
        .route("/ui/devices", get(devices))
        .layer(axum::middleware::from_fn_with_state(state.clone(), ui_auth));
    Router::new()
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .merge(pages)
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Sign-in

/// The token in the session cookie, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Lets a page through with an admin certificate, the session cookie or a bearer token; anyone
/// else gets the sign-in form (401), which brings them back to the page they asked for.
async fn ui_auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(AdminIdentity(Some(cn))) = req.extensions().get::<AdminIdentity>() {
        debug!(admin = %cn, path = %req.uri().path(), "dashboard (certificate)");
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let path = req.uri().path().to_owned();
    let Some(token) = bearer.or_else(|| cookie_token(req.headers())) else {
        return login_page(StatusCode::UNAUTHORIZED, &path, None);
    };
    match st.store.use_token(&token_hash(&token), crate::now()).await {
        Ok(Some(name)) => {
            debug!(admin = %name, %path, "dashboard (token)");
            next.run(req).await
        }
        Ok(None) => {
            warn!(%path, "dashboard: unknown admin token in cookie or header; sign-in form shown");
            let mut r = login_page(
                StatusCode::UNAUTHORIZED,
                &path,
                Some("Your sign-in is no longer valid (the token was deleted). Sign in again."),
            );
            r.headers_mut()
                .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
            r
        }
        Err(e) => store_failed(&e.to_string()),
    }
}

const CLEAR_COOKIE: &str =
    "__Host-spark-ota-admin=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict";

/// Where to go after signing in: a dashboard path only (no open redirect).
fn safe_next(next: &str) -> &str {
    let ok = (next == "/ui" || next.starts_with("/ui/"))
        && !next.contains("//")
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.~%".contains(&b));
    if ok { next } else { "/ui" }
}

async fn login_form(uri: axum::http::Uri) -> Response {
    let next = form_fields(uri.query().unwrap_or("").as_bytes())
        .remove("next")
        .unwrap_or_default();
    login_page(StatusCode::OK, &next, None)
}

fn login_page(status: StatusCode, next: &str, message: Option<&str>) -> Response {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(m) = message {
        let _ = write!(body, r#"<p class="error" role="alert">{}</p>"#, esc(m));
    }
    let _ = write!(
        body,
        r#"<form method="post" action="/ui/login" class="login">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<input type="hidden" name="next" value="{}">
<button type="submit">Sign in</button>
</form>
<p class="hint">Create a token on the server with <code>spark-ota token create --name NAME</code>.
With an admin client certificate installed in the browser no sign-in is needed.</p>"#,
        esc(safe_next(next))
    );
    html(status, &layout("Sign in", "", &body, false))
}

/// Checks the token; on success sets the cookie and moves on to `next`. The move is a meta
/// refresh from this (same-site) page rather than a redirect: a `SameSite=Strict` cookie is not
/// sent on a redirect that a cross-site navigation started (a bookmark, a link in a chat), so a
/// redirect would land on the sign-in form again.
async fn login(State(st): State<AppState>, body: Bytes) -> Response {
    let mut fields = form_fields(&body);
    let token = fields.remove("token").unwrap_or_default();
    let token = token.trim();
    let next = fields.remove("next").unwrap_or_default();
    let next = safe_next(&next);
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let name = if valid {
        match st.store.use_token(&token_hash(token), crate::now()).await {
            Ok(n) => n,
            Err(e) => return store_failed(&e.to_string()),
        }
    } else {
        None
    };
    let Some(name) = name else {
        warn!("dashboard sign-in refused: unknown admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            next,
            Some(
                "Unknown admin token. Check it was copied whole, or create one with `spark-ota token create`.",
            ),
        );
    };
    info!(admin = %name, "dashboard sign-in");
    let body = format!(
        r#"<h1>Signed in</h1><p>Signed in as {}. <a href="{next}">Continue</a></p>"#,
        esc(&name),
        next = esc(next)
    );
    let head = format!(
        r#"<meta http-equiv="refresh" content="0;url={}">"#,
        esc(next)
    );
    let mut r = html(
        StatusCode::OK,
        &layout_with_head("Signed in", "", &head, &body, false),
    );
    let cookie = format!(
        "{COOKIE}={token}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict"
    );
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
        Err(e) => {
            // Unreachable: the token was checked to be alphanumeric above.
            error!("session cookie not representable: {e}");
        }
    }
    r
}

async fn logout() -> Response {
    let body = r#"<h1>Signed out</h1><p><a href="/ui/login">Sign in again</a></p>"#;
    let mut r = html(StatusCode::OK, &layout("Signed out", "", body, false));
    r.headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    r
}

/// `application/x-www-form-urlencoded` (also a query string) into a map; later keys win.
fn form_fields(body: &[u8]) -> HashMap<String, String> {
    body.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let k = percent_decode(it.next().unwrap_or_default());
            let v = percent_decode(it.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match (
            s[i],
            s.get(i + 1).copied().and_then(hex),
            s.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(h), Some(l)) => {
                // Two hex digits make one byte (at most 0xff).
                out.push((h * 16 + l) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Pages

/// A page could not be made: the status and what to tell the person.
struct PageError(StatusCode, String);

impl From<crate::error::StoreError> for PageError {
    fn from(e: crate::error::StoreError) -> Self {
        // Details stay in the log, as in the API.
        error!("dashboard: {e}");
        PageError(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is unavailable; reload the page in a moment.".into(),
        )
    }
}

impl From<RolloutError> for PageError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::NotFound(id) => PageError(
                StatusCode::NOT_FOUND,
                format!("There is no rollout {id:?}."),
            ),
            RolloutError::Store(s) => s.into(),
            other => {
                error!("dashboard: {other}");
                PageError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This rollout cannot be shown; see the server log.".into(),
                )
            }
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            r#"<h1>{}</h1><p class="error" role="alert">{}</p>"#,
            esc(self.0.canonical_reason().unwrap_or("Error")),
            esc(&self.1)
        );
        html(self.0, &layout("Error", "", &body, true))
    }
}

fn store_failed(e: &str) -> Response {
    error!("dashboard: {e}");
    PageError(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is unavailable; reload the page in a moment.".into(),
    )
    .into_response()
}

type Page = Result<Response, PageError>;

/// Every rollout's status, newest first, with bytes counted up to now.
async fn all_rollouts(st: &AppState) -> Result<Vec<RolloutStatus>, PageError> {
    st.accounting.flush(&st.store).await?;
    let mut records = st.store.rollouts().await?;
    records.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        out.push(st.rollouts.status(&r.id).await?);
    }
    Ok(out)
}

async fn overview(State(st): State<AppState>) -> Page {
    let rollouts = all_rollouts(&st).await?;
    let releases = st.store.releases().await?;
    let devices = st.store.devices().await?;
    let yanked = releases.iter().filter(|r| r.yanked_at.is_some()).count();
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rollouts {
        *by_state.entry(r.state.as_str()).or_default() += 1;
    }
    let bytes: i64 = st
        .store
        .data_cost(false)
        .await?
        .iter()
        .map(|c| c.bytes)
        .sum();
    let now = crate::now();
    let recent = devices
        .iter()
        .filter(|d| now - d.last_seen < 86_400)
        .count();
    let mut b = String::from("<h1>Overview</h1><dl class=\"summary\">");
    let _ = write!(
        b,
        r#"<div><dt>Releases</dt><dd id="releases-count">{}</dd><dd>{} yanked</dd></div>"#,
        releases.len(),
        yanked
    );
    let states = if by_state.is_empty() {
        "none".to_owned()
    } else {
        by_state
            .iter()
            .map(|(s, n)| format!("{n} {}", esc(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = write!(
        b,
        r#"<div><dt>Rollouts</dt><dd id="rollouts-count">{}</dd><dd>{states}</dd></div>"#,
        rollouts.len()
    );
    let _ = write!(
        b,
        r#"<div><dt>Devices</dt><dd id="devices-count">{}</dd><dd>{recent} seen in the last 24 h</dd></div>"#,
        devices.len()
    );
    let _ = write!(
        b,
        r#"<div><dt>Bytes served</dt><dd id="bytes-served">{}</dd><dd>all downloads</dd></div></dl>"#,
        bytes_text(bytes)
    );
    let current: Vec<&RolloutStatus> = rollouts
        .iter()
        .filter(|r| r.state == "active" || r.state == "paused")
        .collect();
    b.push_str("<h2>Rollouts in progress</h2>");
    if current.is_empty() {
        b.push_str("<p>No rollout is active or paused.</p>");
    } else {
        rollout_table(&mut b, &current);
    }
    Ok(html(StatusCode::OK, &layout("Overview", "/ui", &b, true)))
}

async fn releases(State(st): State<AppState>) -> Page {
    let list = st.store.releases().await?;
    let mut b = String::from("<h1>Releases</h1>");
    if list.is_empty() {
        b.push_str("<p>No release yet: upload one with <code>spark-ota release upload</code>.</p>");
    } else {
        b.push_str(
            "<table><thead><tr><th>Id</th><th>Version</th><th>Compatible</th><th>Bundle</th>\
             <th>Size</th><th>Signing key</th><th>Issued</th><th>Expires</th>\
             <th>Downgrade</th><th>Status</th></tr></thead><tbody>",
        );
        for r in &list {
            let status = match (&r.yanked_at, &r.yank_reason) {
                (Some(t), reason) => format!(
                    r#"<span class="state state-yanked">yanked</span> {}: {}"#,
                    esc(&time_text(*t)),
                    esc(reason.as_deref().unwrap_or(""))
                ),
                (None, _) => r#"<span class="state state-active">available</span>"#.into(),
            };
            let _ = write!(
                b,
                r#"<tr id="release-{id}"><td>{id}</td><td class="version">{version}</td><td>{compatible}</td><td><code title="{sha}">{short}…</code></td><td>{size}</td><td><code>{key}</code></td><td>{issued}</td><td>{expires}</td><td>{down}</td><td>{status}</td></tr>"#,
                id = r.id,
                version = esc(&r.version),
                compatible = esc(&r.compatible),
                sha = esc(&r.bundle_sha256),
                short = esc(r.bundle_sha256.get(..12).unwrap_or(&r.bundle_sha256)),
                size = bytes_text(r.bundle_size),
                key = esc(&r.key_id),
                issued = esc(&time_text(r.issued_at)),
                expires = esc(&time_text(r.expires_at)),
                down = if r.allow_downgrade { "allowed" } else { "no" },
            );
        }
        b.push_str("</tbody></table>");
    }
    Ok(html(
        StatusCode::OK,
        &layout("Releases", "/ui/releases", &b, true),
    ))
}

async fn rollouts(State(st): State<AppState>) -> Page {
    let list = all_rollouts(&st).await?;
    let mut b = String::from("<h1>Rollouts</h1>");
    if list.is_empty() {
        b.push_str("<p>No rollout yet: start one with <code>spark-ota rollout create</code>.</p>");
    } else {
        rollout_table(&mut b, &list.iter().collect::<Vec<_>>());
    }
    Ok(html(
        StatusCode::OK,
        &layout("Rollouts", "/ui/rollouts", &b, true),
    ))
}

/// Sums over all waves: (devices, updated, failed, in progress).
fn totals(r: &RolloutStatus) -> (u64, u64, u64, u64) {
    r.waves.iter().fold((0, 0, 0, 0), |(d, u, f, p), w| {
        (
            d + w.devices,
            u + w.updated,
            f + w.failed,
            p + w.in_progress,
        )
    })
}

fn rollout_table(b: &mut String, list: &[&RolloutStatus]) {
    b.push_str(
        "<table><thead><tr><th>Rollout</th><th>Release</th><th>State</th><th>Progress</th>\
         <th>Updated</th><th>Failed</th><th>Failure rate</th><th>Bytes served</th></tr></thead><tbody>",
    );
    for r in list {
        let (devices, updated, failed, in_progress) = totals(r);
        let reported = updated + failed;
        let rate = (reported > 0).then(|| (failed * 10_000 / reported) as u32);
        let _ = write!(
            b,
            r#"<tr id="rollout-{id}"><td><a href="/ui/rollouts/{id}">{id}</a></td><td>{version} <small>{compatible}</small></td><td>{state}</td><td>{bar}</td><td class="updated">{updated} of {devices}</td><td class="failed">{failed}</td><td class="failure-rate">{rate}</td><td class="bytes">{bytes}</td></tr>"#,
            id = esc(&r.id),
            version = esc(&r.version),
            compatible = esc(&r.compatible),
            state = state_badge(r),
            bar = progress_bar(devices, updated, failed, in_progress),
            rate = rate_text(rate),
            bytes = bytes_text(r.bytes_served),
        );
    }
    b.push_str("</tbody></table>");
}

fn state_badge(r: &RolloutStatus) -> String {
    let mut s = format!(r#"<span class="state state-{0}">{0}</span>"#, esc(&r.state));
    if let Some(reason) = &r.reason {
        let _ = write!(s, r#" <span class="reason">{}</span>"#, esc(reason));
    }
    s
}

async fn rollout(State(st): State<AppState>, UrlPath(id): UrlPath<String>) -> Page {
    st.accounting.flush(&st.store).await?;
    let r = st.rollouts.status(&id).await?;
    let events = st.rollouts.events(&id).await?;
    let (devices, updated, failed, in_progress) = totals(&r);
    let reported = updated + failed;
    let rate = (reported > 0).then(|| (failed * 10_000 / reported) as u32);
    let mut b = format!(
        r#"<h1>Rollout <span id="rollout-id">{}</span></h1>"#,
        esc(&r.id)
    );
    if r.state == "paused" || r.state == "aborted" {
        let _ = write!(
            b,
            r#"<p class="banner banner-{state}" role="status" id="pause-reason"><strong>{title}:</strong> {reason}</p>"#,
            state = esc(&r.state),
            title = if r.state == "paused" {
                "Paused"
            } else {
                "Aborted"
            },
            reason = esc(r.reason.as_deref().unwrap_or("no reason given")),
        );
    }
    b.push_str(r#"<dl class="facts">"#);
    let mut fact = |k: &str, id: &str, v: String| {
        let _ = write!(b, r#"<div><dt>{k}</dt><dd id="{id}">{v}</dd></div>"#);
    };
    fact(
        "State",
        "state",
        format!(r#"<span class="state state-{0}">{0}</span>"#, esc(&r.state)),
    );
    fact(
        "Release",
        "release",
        format!(
            r#"<a href="/ui/releases#release-{}">{}</a> for {}"#,
            r.release,
            esc(&r.version),
            esc(&r.compatible)
        ),
    );
    fact("Kind", "kind", esc(&r.kind));
    fact("Plan", "plan", esc(&r.plan));
    fact(
        "Progress",
        "progress",
        format!(
            "{} {updated} of {devices} updated, {failed} failed, {in_progress} in progress",
            progress_bar(devices, updated, failed, in_progress)
        ),
    );
    fact("Failure rate", "failure-rate", rate_text(rate));
    fact("Bytes served", "bytes-served", bytes_text(r.bytes_served));
    if let Some(g) = &r.gates {
        let telemetry = match &g.telemetry {
            Some(t) => format!(
                "updated units silent for over {:#} must stay under {}",
                t.max_silence,
                rate_text(Some(t.max_silent_bp))
            ),
            None => "off".into(),
        };
        fact(
            "Gates",
            "gates",
            esc(&format!(
                "failure rate at most {} of devices that reported, sample of {}, soak {:#}, offline after {:#}, telemetry gate: {telemetry}",
                rate_text(Some(g.max_failure_bp)),
                g.min_sample,
                g.soak,
                g.offline_after
            )),
        );
    }
    if let Some(now) = r.now {
        fact("Rollout clock", "now", esc(&instant(now)));
    }
    b.push_str("</dl><h2>Waves</h2>");
    b.push_str(
        r#"<table class="waves"><thead><tr><th>Wave</th><th>Share</th><th>Stage</th><th>Progress</th><th>Devices</th><th>Offered</th><th>Updated</th><th>Failed</th><th>In progress</th><th>Reachable</th><th>Failure rate</th><th>Gate</th></tr></thead><tbody>"#,
    );
    for (i, w) in r.waves.iter().enumerate() {
        wave_row(&mut b, i, w);
    }
    b.push_str("</tbody></table>");
    b.push_str("<h2>Events</h2>");
    if events.is_empty() {
        b.push_str("<p>None yet.</p>");
    } else {
        b.push_str(r#"<ol class="events">"#);
        for e in &events {
            let _ = write!(b, "<li>{}</li>", esc(&event_text(e)));
        }
        b.push_str("</ol>");
    }
    let title = format!("Rollout {}", r.id);
    Ok(html(
        StatusCode::OK,
        &layout(&title, "/ui/rollouts", &b, true),
    ))
}

fn wave_row(b: &mut String, i: usize, w: &WaveStatus) {
    let share = format!("{}.{:02} %", w.share_bp / 100, w.share_bp % 100);
    let _ = write!(
        b,
        r#"<tr id="wave-{n}"><td class="wave">{n}</td><td class="share">{share}</td><td class="stage">{stage}</td><td>{bar}</td><td class="devices">{devices}</td><td class="offered">{offered}</td><td class="updated">{updated}</td><td class="failed">{failed}</td><td class="in-progress">{in_progress}</td><td class="reachable">{reachable}</td><td class="failure-rate">{rate}</td><td class="gate">{gate}</td></tr>"#,
        n = i + 1,
        stage = esc(&w.stage),
        bar = progress_bar(w.devices, w.updated, w.failed, w.in_progress),
        devices = w.devices,
        offered = w.offered,
        updated = w.updated,
        failed = w.failed,
        in_progress = w.in_progress,
        reachable = w.reachable,
        rate = rate_text(w.failure_rate_bp),
        gate = esc(&w.gate),
    );
}

fn event_text(e: &spark_rollout::RolloutEvent) -> String {
    use spark_rollout::RolloutEvent as E;
    match e {
        E::WaveOpened { wave, at } => format!("{}: wave {} opened", instant(*at), wave + 1),
        E::SoakStarted { wave, at } => format!("{}: wave {} soaking", instant(*at), wave + 1),
        E::WavePassed { wave, at } => format!("{}: wave {} passed", instant(*at), wave + 1),
        E::Done { at } => format!("{}: done", instant(*at)),
        E::Paused { reason } => format!("{}: paused: {reason}", instant(reason.at)),
    }
}

async fn devices(State(st): State<AppState>) -> Page {
    st.accounting.flush(&st.store).await?;
    let list = st.store.devices().await?;
    let bytes: HashMap<String, i64> = st
        .store
        .data_cost(true)
        .await?
        .into_iter()
        .map(|c| (c.key, c.bytes))
        .collect();
    let mut b = String::from("<h1>Devices</h1>");
    if list.is_empty() {
        b.push_str("<p>No device has checked in or been registered yet.</p>");
    } else {
        if list.len() > MAX_DEVICE_ROWS {
            let _ = write!(
                b,
                "<p>Showing the first {MAX_DEVICE_ROWS} of {} devices; <code>spark-ota device list</code> lists them all.</p>",
                list.len()
            );
        }
        b.push_str(
            "<table><thead><tr><th>Device</th><th>Version</th><th>Compatible</th><th>Hardware</th>\
             <th>Tags</th><th>Slot</th><th>Agent</th><th>Last report</th><th>Offered by</th>\
             <th>Last seen</th><th>Downloaded</th></tr></thead><tbody>",
        );
        for d in list.iter().take(MAX_DEVICE_ROWS) {
            let tags = d
                .tags
                .iter()
                .map(|(k, v)| format!(r#"<span class="tag">{}={}</span>"#, esc(k), esc(v)))
                .collect::<Vec<_>>()
                .join(" ");
            let offered = match &d.offered_rollout {
                Some(r) => format!(r#"<a href="/ui/rollouts/{0}">{0}</a>"#, esc(r)),
                None => "-".into(),
            };
            let report = match (&d.last_reason, d.last_report_at) {
                (Some(reason), Some(t)) => format!("{} at {}", esc(reason), esc(&time_text(t))),
                (Some(reason), None) => esc(reason),
                _ => "-".into(),
            };
            let _ = write!(
                b,
                r#"<tr id="device-{id}"><td class="device">{id}</td><td class="version">{version}</td><td>{compatible}</td><td>{hw}</td><td class="tags">{tags}</td><td>{slot}</td><td>{agent}</td><td class="report">{report}</td><td>{offered}</td><td>{seen}</td><td class="bytes">{bytes}</td></tr>"#,
                id = esc(&d.device),
                version = opt(&d.current_version),
                compatible = opt(&d.compatible),
                hw = opt(&d.hardware_rev),
                slot = opt(&d.booted_slot),
                agent = opt(&d.agent_state),
                seen = esc(&time_text(d.last_seen)),
                bytes = bytes_text(bytes.get(&d.device).copied().unwrap_or(0)),
            );
        }
        b.push_str("</tbody></table>");
    }
    Ok(html(
        StatusCode::OK,
        &layout("Devices", "/ui/devices", &b, true),
    ))
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(v: &Option<String>) -> String {
    v.as_deref().map_or_else(|| "-".into(), esc)
}

/// An engine timestamp to the second (UTC).
fn instant(t: spark_rollout::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Basis points as a percentage with two decimals; a dash before any report.
fn rate_text(bp: Option<u32>) -> String {
    match bp {
        Some(bp) => format!("{}.{:02} %", bp / 100, bp % 100),
        None => "-".into(),
    }
}

/// Bytes for people, with the exact count.
fn bytes_text(n: i64) -> String {
    let units = [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    match units.iter().find(|(_, size)| n as f64 >= *size) {
        Some((unit, size)) => format!("{:.1} {unit} ({n} bytes)", n as f64 / size),
        None => format!("{n} bytes"),
    }
}

/// A stacked bar: updated (green), failed (red), in progress (amber) of `devices`, plain HTML
/// and CSS, with the counts in its label for screen readers.
fn progress_bar(devices: u64, updated: u64, failed: u64, in_progress: u64) -> String {
    let pct = |n: u64| {
        if devices == 0 {
            0.0
        } else {
            n as f64 * 100.0 / devices as f64
        }
    };
    format!(
        r#"<div class="bar" role="img" aria-label="{updated} updated, {failed} failed, {in_progress} in progress of {devices}"><span class="ok" style="width:{:.2}%"></span><span class="bad" style="width:{:.2}%"></span><span class="busy" style="width:{:.2}%"></span></div>"#,
        pct(updated),
        pct(failed),
        pct(in_progress)
    )
}

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.here{color:#fff;font-weight:600}
header .brand{font-weight:700;color:#fff;margin-right:1rem}header form{margin-left:auto}
main{padding:1rem 1.2rem}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.9rem}
th,td{border-bottom:1px solid #e2e5ea;padding:.35rem .5rem;text-align:left;vertical-align:middle}
th{background:#eef0f4}td.share,td.failure-rate,td.bytes{white-space:nowrap}
.bar{display:flex;width:10rem;height:.8rem;background:#e2e5ea;border-radius:3px;overflow:hidden}
.bar .ok{background:#2e9d58}.bar .bad{background:#d23c3c}.bar .busy{background:#e8a317}
.state{padding:.05rem .4rem;border-radius:3px;font-weight:600;font-size:.85rem}
.state-active,.state-done{background:#d7f0df}.state-paused{background:#fde8c4}
.state-aborted,.state-yanked{background:#f8d3d3}
.banner{padding:.6rem .8rem;border-radius:4px}.banner-paused{background:#fde8c4}
.banner-aborted{background:#f8d3d3}
.error{color:#a11}.hint{color:#555}
dl.summary,dl.facts{display:flex;flex-wrap:wrap;gap:1rem}
dl.summary div,dl.facts div{background:#fff;padding:.5rem .8rem;border-radius:4px;min-width:10rem}
dt{font-size:.8rem;color:#555}dd{margin:0}
.tag{background:#eef0f4;border-radius:3px;padding:0 .3rem;margin-right:.2rem}
form.login{display:flex;flex-direction:column;gap:.5rem;max-width:24rem}
";

fn layout(title: &str, here: &str, body: &str, signed_in: bool) -> String {
    layout_with_head(title, here, "", body, signed_in)
}

fn layout_with_head(title: &str, here: &str, head: &str, body: &str, signed_in: bool) -> String {
    let mut nav = String::new();
    if signed_in {
        for (href, name) in [
            ("/ui", "Overview"),
            ("/ui/releases", "Releases"),
            ("/ui/rollouts", "Rollouts"),
            ("/ui/devices", "Devices"),
        ] {
            let class = if href == here { r#" class="here""# } else { "" };
            let _ = write!(nav, r#"<a href="{href}"{class}>{name}</a>"#);
        }
        nav.push_str(
            r#"<form method="post" action="/ui/logout"><button type="submit">Sign out</button></form>"#,
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{title} · spark-ota</title>{head}<style>{STYLE}</style></head>
<body><header><span class="brand">spark-ota</span>{nav}</header><main>
{body}
</main></body></html>"#,
        title = esc(title),
    )
}

/// An HTML response with headers that keep the page out of caches and frames and allow no
/// scripts at all.
fn html(status: StatusCode, page: &str) -> Response {
    let mut r = (status, page.to_owned()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<b a="1">Tom & 'Jerry'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next("/ui/rollouts/w48"), "/ui/rollouts/w48");
        assert_eq!(safe_next("https://evil.example/ui"), "/ui");
        assert_eq!(safe_next("//evil.example/ui"), "/ui");
        assert_eq!(safe_next("/ui//evil.example"), "/ui");
        assert_eq!(safe_next("/ui/\"><script>"), "/ui");
        assert_eq!(safe_next("/v1/releases"), "/ui");
    }

    #[test]
    fn form_decoding() {
        let f = form_fields(b"token=sota_ab%5Fc&next=%2Fui%2Fdevices&x=a+b&bad=%zz%4");
        assert_eq!(f["token"], "sota_ab_c");
        assert_eq!(f["next"], "/ui/devices");
        assert_eq!(f["x"], "a b");
        assert_eq!(f["bad"], "%zz%4");
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-spark-ota-admin=sota_x; b=2"),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("sota_x"));
    }
}
