//! The HTTPS server: TLS accept loop (bounded connections, handshake and header deadlines) and
//! the routes.
//!
//! ```text
//! GET  /         status page (login required; without a password set: how to set one)
//! GET  /login    login form
//! POST /login    password=…  → 303 to / with the session cookie | 401 | 429 while backing off
//! POST /logout   ends the session → 303 to /login
//! GET  /events   server-sent events: one event per page section whose HTML changed
//! ```
//!
//! CSRF: the session cookie is `SameSite=Strict`, so no other site's page can make a browser
//! send it, and every POST must carry an `Origin` equal to this server's own
//! (`https://` + `Host`), which browsers always send on a form POST; a POST without one, or from
//! anywhere else, is refused (403) before anything else happens. That covers the login form too:
//! no other page can make a visitor's browser try passwords here. Every response forbids framing
//! and caching, and carries a Content-Security-Policy allowing only our inline script and style.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State as AxumState};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Request, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::password::PasswordFile;
use crate::render;
use crate::session::{Backoff, COOKIE, Gate, Sessions};
use crate::state::{Snapshot, State};

/// Connections at once (browsers open ~6 per page; a few staff phones and laptops).
pub const MAX_CONNECTIONS: usize = 32;
/// Live pages at once; each holds a connection and re-renders on every change.
pub const MAX_EVENT_STREAMS: usize = 8;
/// Bound on the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on reading a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body (the login form).
const MAX_BODY: usize = 4096;

/// The client's address, put into each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    pub password: PasswordFile,
    pub sessions: Sessions,
    pub backoff: Backoff,
    pub state: State,
    /// The device's name for the page title.
    pub host: String,
    /// Turns true at shutdown (ends the event streams).
    pub stop: watch::Receiver<bool>,
    pub streams: Arc<Semaphore>,
}

type Shared = Arc<App>;

/// The routes.
pub fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/events", get(events))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(render::csp()),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` even on a same-origin form
    // POST, which the Origin check then refuses (found by the Chromium test).
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn page(status: StatusCode, html: String) -> Response {
    (status, Html(html)).into_response()
}

fn see_other(location: &'static str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, HeaderValue::from_static(location))],
    )
        .into_response()
}

/// The session token from the `Cookie` headers, if any.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

fn logged_in(app: &App, headers: &HeaderMap) -> bool {
    cookie_token(headers).is_some_and(|t| app.sessions.check(t))
}

/// Whether a POST comes from a page of this server (see the module docs).
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin.eq_ignore_ascii_case(&format!("https://{host}"))
}

fn forbidden_origin(peer: SocketAddr, path: &str, headers: &HeaderMap) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    tracing::warn!(client = %peer.ip(), path, ?origin, "refused a POST from another origin (or without Origin)");
    page(
        StatusCode::FORBIDDEN,
        render::message_page(
            "Refused",
            "This form must be sent from this gateway's own page. Open the page again and retry.",
        ),
    )
}

async fn index(AxumState(app): AxumState<Shared>, headers: HeaderMap) -> Response {
    if !app.password.is_set() {
        return page(StatusCode::OK, render::setup_page(&app.host));
    }
    if !logged_in(&app, &headers) {
        return see_other("/login");
    }
    let snapshot = app.state.fresh().await;
    page(StatusCode::OK, render::status_page(&app.host, &snapshot))
}

async fn login_form(AxumState(app): AxumState<Shared>, headers: HeaderMap) -> Response {
    if !app.password.is_set() {
        return page(StatusCode::OK, render::setup_page(&app.host));
    }
    if logged_in(&app, &headers) {
        return see_other("/");
    }
    page(StatusCode::OK, render::login_page(&app.host, None))
}

async fn login(
    AxumState(app): AxumState<Shared>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return forbidden_origin(peer, "/login", &headers);
    }
    if !app.password.is_set() {
        return page(StatusCode::FORBIDDEN, render::setup_page(&app.host));
    }
    let client: IpAddr = peer.ip();
    if let Gate::Wait(wait) = app.backoff.gate(client) {
        let secs = wait.as_secs_f64().ceil() as u64;
        tracing::info!(client = %client, wait_secs = secs, "login refused while backing off");
        let mut response = page(
            StatusCode::TOO_MANY_REQUESTS,
            render::login_page(
                &app.host,
                Some(&format!(
                    "Too many wrong passwords. Wait {secs} s, then try again."
                )),
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return response;
    }
    let password = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    match app.password.verify(&password).await {
        Ok(true) => {
            app.backoff.succeeded(client);
            let token = app.sessions.create();
            tracing::info!(client = %client, "logged in");
            let cookie = format!(
                "{COOKIE}={token}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Strict",
                app.sessions.lifetime().as_secs()
            );
            let mut response = see_other("/");
            match HeaderValue::from_str(&cookie) {
                Ok(v) => {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                // The token is base64url: always a valid header value.
                Err(e) => tracing::error!(error = %e, "session cookie not representable"),
            }
            response
        }
        Ok(false) => {
            let wait = app.backoff.failed(client);
            tracing::warn!(client = %client, next_try_in_secs = wait.as_secs(), "wrong password on the login form");
            page(
                StatusCode::UNAUTHORIZED,
                render::login_page(&app.host, Some("Wrong password.")),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot check the password");
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                render::login_page(
                    &app.host,
                    Some("The gateway cannot check passwords right now (see its log)."),
                ),
            )
        }
    }
}

async fn logout(
    AxumState(app): AxumState<Shared>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return forbidden_origin(peer, "/logout", &headers);
    }
    if let Some(token) = cookie_token(&headers) {
        app.sessions.remove(token);
    }
    tracing::info!(client = %peer.ip(), "logged out");
    let mut response = see_other("/login");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-spark-webui=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Strict",
        ),
    );
    response
}

async fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        render::message_page("Not found", "There is no such page on this gateway."),
    )
}

/// The live stream: every section once, then each section again whenever its HTML changes.
/// Ends at shutdown, and when the session ends (the page then reloads into the login form).
async fn events(AxumState(app): AxumState<Shared>, headers: HeaderMap) -> Response {
    let Some(token) = cookie_token(&headers)
        .filter(|t| app.sessions.check(t))
        .map(str::to_owned)
    else {
        return (StatusCode::UNAUTHORIZED, "log in first\n").into_response();
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        tracing::warn!("refused a live page: {MAX_EVENT_STREAMS} already open");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("30"))],
            "too many live pages open; close one\n",
        )
            .into_response();
    };
    let snapshots = app.state.subscribe();
    let stop = app.stop.clone();
    struct Stream {
        app: Shared,
        token: String,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: watch::Receiver<bool>,
        sent: Vec<String>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let start = Stream {
        app,
        token,
        snapshots,
        stop,
        sent: vec![String::new(); render::SECTIONS.len()],
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(start, |mut s| async move {
        // Each turn: the sections that changed since the last turn (all of them at first).
        loop {
            if *s.stop.borrow() || !s.app.sessions.check(&s.token) {
                return None;
            }
            let snapshot = s.snapshots.borrow_and_update().clone();
            let mut out = Vec::new();
            for (i, name) in render::SECTIONS.iter().enumerate() {
                let html = render::section(name, &snapshot);
                if html != s.sent[i] {
                    out.push(Ok::<_, Infallible>(
                        Event::default().event(*name).data(&html),
                    ));
                    s.sent[i] = html;
                }
            }
            if !out.is_empty() {
                return Some((futures_util::stream::iter(out), s));
            }
            tokio::select! {
                changed = s.snapshots.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = s.stop.changed() => return None,
            }
        }
    })
    .flatten();
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Accepts connections on `listener` until `stop` turns true, at most [`MAX_CONNECTIONS`] at
/// once; each gets its own task (TLS handshake, then HTTP/1.1 with keep-alive).
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stopped(&mut stop) => break,
        };
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = socket.set_nodelay(true);
        let (acceptor, app, stop) = (acceptor.clone(), app.clone(), stop.clone());
        tasks.spawn(async move {
            connection(acceptor, app, socket, peer, stop).await;
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow with the history.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    acceptor: TlsAcceptor,
    app: Router,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        // Browsers drop the first connection after a certificate warning: not worth a warning.
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %peer, "TLS handshake timed out");
            return;
        }
    };
    let service = WithPeer {
        inner: TowerToHyperService::new(app),
        peer: Peer(peer),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, error = %e, "connection ended");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Puts the client's address into each request.
#[derive(Debug, Clone)]
struct WithPeer {
    inner: TowerToHyperService<Router>,
    peer: Peer,
}

impl hyper::service::Service<Request<Incoming>> for WithPeer {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.peer);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=y; __Host-spark-webui=tok_en; z=1"),
        );
        assert_eq!(cookie_token(&h), Some("tok_en"));
        assert_eq!(cookie_token(&HeaderMap::new()), None);
    }

    #[test]
    fn origin_must_be_this_server() {
        let headers = |origin: Option<&'static str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("192.168.4.1"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_static(o));
            }
            h
        };
        assert!(same_origin(&headers(Some("https://192.168.4.1"))));
        assert!(!same_origin(&headers(Some("http://192.168.4.1"))));
        assert!(!same_origin(&headers(Some("https://evil.example"))));
        assert!(!same_origin(&headers(Some("null"))));
        assert!(!same_origin(&headers(None)));
    }
}
