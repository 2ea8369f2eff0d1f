//! Shared rig for the web UI's tests: the daemon in-process on `127.0.0.1:0`, an HTTPS client
//! that trusts exactly the certificate the daemon made for itself, an event-stream reader, log
//! capture, the real meterd and uplinkd in-process ([`gateway`]), and a test `io.spark.Update1`
//! object ([`update1`]). [`cdp`] drives headless Chromium.

#![allow(dead_code)]

pub mod cdp;
pub mod gateway;
pub mod update1;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

/// The site password the tests set.
pub const PASSWORD: &str = "correct horse battery staple";

static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(Arc::default);

#[derive(Clone)]
struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        // Also to stderr, which the test harness shows for a failing test.
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts log capture (once per test binary).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_webui=debug,info".into()),
        )
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// Everything logged so far by this test binary.
pub fn logged() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon, in this process.
pub struct WebUi {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub client: Https,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), spark_webui::DaemonError>>>,
}

impl WebUi {
    /// Starts it with its data in `data_dir`, reading `bus` (a bus address).
    pub async fn start(bus: &str, data_dir: &Path) -> WebUi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = spark_webui::Config::with_listen(addr, data_dir.to_owned());
        config.bus_address = Some(bus.to_owned());
        config.refresh_secs = 1;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(spark_webui::run_on(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("webui ready in time")
            .expect("webui started");
        let client = Https::new(addr, &data_dir.join("tls/cert.pem"));
        WebUi {
            addr,
            data_dir: data_dir.to_owned(),
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// What `spark-webui set-password` does, with `password` typed on stdin.
    pub fn set_password(&self, password: &str) {
        let config = spark_webui::Config::with_listen(self.addr, self.data_dir.clone());
        spark_webui::set_password(&config, &mut format!("{password}\n").as_bytes()).unwrap();
    }

    /// `https://127.0.0.1:PORT`, the Origin a browser sends for this server's pages.
    pub fn origin(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Logs in over HTTP and returns the `Cookie` header value.
    pub async fn login(&self) -> String {
        let origin = self.origin();
        let reply = self
            .client
            .post("/login", &[("origin", &origin)], &form(PASSWORD))
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        reply.cookie()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("webui stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for WebUi {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `password=…` form-encoded.
pub fn form(password: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("password", password)
        .finish()
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The session cookie as a `Cookie` header value (`NAME=VALUE`), from `Set-Cookie`.
    pub fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_owned()
    }
}

/// An HTTPS client trusting only the daemon's own certificate (what a person does after
/// comparing the fingerprint on the device label).
#[derive(Clone)]
pub struct Https {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Https {
    pub fn new(addr: SocketAddr, cert: &Path) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        for c in spark_tls::load_certs(cert).unwrap() {
            roots.add(c).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(spark_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            addr,
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// A TLS connection to the daemon.
    pub async fn connect(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
        self.connector.connect(name, tcp).await.unwrap()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> hyper::Response<Incoming> {
        let tls = self.connect().await;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if !body.is_empty() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .expect("an answer in time")
            .unwrap()
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let response = self.send(method, path, headers, body).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, "").await
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        self.request("POST", path, headers, body).await
    }

    /// Opens `/events` with `cookie`; panics unless it is an event stream.
    pub async fn events(&self, cookie: &str) -> Events {
        let response = self.send("GET", "/events", &[("cookie", cookie)], "").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            body: response.into_body(),
            buffer: String::new(),
            latest: std::collections::HashMap::new(),
        }
    }

    /// Sends raw bytes over TLS and returns what comes back until the server closes (or 10 s).
    pub async fn raw(&self, bytes: &[u8]) -> String {
        let mut tls = self.connect().await;
        tls.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: String,
}

/// A reader of `/events`.
pub struct Events {
    body: Incoming,
    buffer: String,
    /// The newest data of each event name read so far.
    latest: std::collections::HashMap<String, String>,
}

impl Events {
    /// The next event (comments such as keep-alives skipped), or `None` if the stream ended or
    /// nothing came within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let event = SseEvent {
                    name,
                    data: data.join("\n"),
                };
                self.latest.insert(event.name.clone(), event.data.clone());
                return Some(event);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Ok(Some(Ok(frame))) => {
                    if let Some(bytes) = frame.data_ref() {
                        self.buffer.push_str(&String::from_utf8_lossy(bytes));
                    }
                }
                _ => return None,
            }
        }
    }

    /// Reads events until the newest one named `name` (possibly read before) satisfies `cond`;
    /// panics after `within`.
    pub async fn until(
        &mut self,
        name: &str,
        within: Duration,
        cond: impl Fn(&str) -> bool,
    ) -> SseEvent {
        if let Some(data) = self.latest.get(name).filter(|d| cond(d)) {
            return SseEvent {
                name: name.to_owned(),
                data: data.clone(),
            };
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("no `{name}` event as expected within {within:?}"));
            if event.name == name && cond(&event.data) {
                return event;
            }
        }
    }
}

/// The text of the element with `id` in `html` (tags stripped), if there is one.
pub fn by_id(html: &str, id: &str) -> Option<String> {
    let marker = format!("id=\"{id}\"");
    let at = html.find(&marker)?;
    let open_end = html[at..].find('>')? + at + 1;
    let tag_start = html[..at].rfind('<')?;
    let tag: String = html[tag_start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let close = format!("</{tag}>");
    let end = html[open_end..].find(&close)? + open_end;
    Some(spark_testbed::chromium::text(&html[open_end..end]))
}
