//! Shared test rig: a dev PKI in a tempdir, databases (SQLite file, or a PostgreSQL schema of its
//! own per test), an in-process ingest server, and a test gateway written with spark-proto and
//! tokio-rustls.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use spark_ingest::{Hub, Server, ServerConfig, Store};
use spark_keys::{CertificateAuthority, DevPki, DevPkiOptions, KeyAlgorithm, LeafProfile};
use spark_proto::{BootSlot, Capabilities, CodecContext, Hello, Message, Roster, Sample, Welcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_ingest=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A development PKI in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = spark_keys::init_dev(dir.path(), &DevPkiOptions::default()).unwrap();
        Pki { dir, pki }
    }

    /// A device certificate (CN = serial) from the device CA.
    pub fn device(&self, serial: &str) -> (PathBuf, PathBuf) {
        spark_keys::issue_device(self.dir.path(), serial, true).unwrap()
    }

    /// The ingest server configuration: server cert, device CA for clients.
    pub fn server_config(&self) -> ServerConfig {
        ServerConfig::from_files(
            &self.pki.server_cert(),
            &self.pki.server_key(),
            &self.pki.device_ca_cert(),
        )
        .unwrap()
    }

    /// A gateway's client configuration (trusting only the server CA).
    pub fn gateway_tls(&self, serial: &str) -> Arc<rustls::ClientConfig> {
        let (cert, key) = self.device(serial);
        self.client_tls(&cert, &key)
    }

    pub fn client_tls(
        &self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Arc<rustls::ClientConfig> {
        Arc::new(spark_tls::client_config(&self.pki.server_ca_cert(), cert, key).unwrap())
    }

    /// Writes a leaf issued by `ca` with `profile` into the PKI dir; returns (cert, key).
    pub fn issue(
        &self,
        ca: &CertificateAuthority,
        profile: &LeafProfile,
        name: &str,
    ) -> (PathBuf, PathBuf) {
        let issued = ca.issue(profile).unwrap();
        let cert = self.dir.path().join(format!("{name}.cert.pem"));
        let key = self.dir.path().join(format!("{name}.key.pem"));
        issued.write(&cert, &key, true).unwrap();
        (cert, key)
    }

    pub fn device_ca(&self) -> CertificateAuthority {
        CertificateAuthority::load(&self.pki.device_ca_cert(), &self.pki.device_ca_key()).unwrap()
    }

    pub fn server_ca(&self) -> CertificateAuthority {
        CertificateAuthority::load(&self.pki.server_ca_cert(), &self.pki.server_ca_key()).unwrap()
    }

    /// A device certificate whose validity ended yesterday.
    pub fn expired_device(&self, serial: &str) -> Arc<rustls::ClientConfig> {
        let now = time::OffsetDateTime::now_utc();
        let profile = LeafProfile {
            not_before: now - time::Duration::days(30),
            not_after: now - time::Duration::days(1),
            ..LeafProfile::device(serial)
        };
        let (cert, key) = self.issue(&self.device_ca(), &profile, &format!("expired-{serial}"));
        self.client_tls(&cert, &key)
    }

    /// A device certificate from a CA the server does not know.
    pub fn foreign_device(&self, serial: &str) -> Arc<rustls::ClientConfig> {
        let ca = CertificateAuthority::generate_root("Foreign Device CA", KeyAlgorithm::EcdsaP256)
            .unwrap();
        let (cert, key) = self.issue(
            &ca,
            &LeafProfile::device(serial),
            &format!("foreign-{serial}"),
        );
        self.client_tls(&cert, &key)
    }

    /// A client certificate for a cloud service (CN `name`) from the *server* CA.
    pub fn service_client(&self, name: &str) -> (PathBuf, PathBuf) {
        let profile = LeafProfile {
            extended_key_usages: vec![spark_keys::ExtendedKeyUsage::ClientAuth],
            ..LeafProfile::device(name)
        };
        self.issue(&self.server_ca(), &profile, &format!("service-{name}"))
    }
}

/// A database for one test: a SQLite file in a tempdir, or a PostgreSQL schema of its own.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

/// The PostgreSQL server tests use (trust auth, database `test`).
pub fn pg_base() -> String {
    std::env::var("SPARK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        match kind {
            Kind::Sqlite => TestDb::sqlite(),
            Kind::Postgres => TestDb::postgres().await,
        }
    }

    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ingest.db").display()
        );
        TestDb {
            url,
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A fresh schema `t_<random>` on the test server; the URL puts it first in search_path.
    pub async fn postgres() -> TestDb {
        use sqlx::Connection;
        let schema = format!("t_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(&pg_base())
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (database `test`) is needed for this test");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let sep = if pg_base().contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{}{sep}options[search_path]={schema}", pg_base()),
            _dir: None,
            schema: Some(schema),
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url).await.unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base()).await {
                        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                            .execute(&mut conn)
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// An ingest server running in-process on 127.0.0.1.
pub struct Ingest {
    pub addr: SocketAddr,
    pub store: Store,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Ingest {
    pub async fn start(config: ServerConfig, store: Store) -> Ingest {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Ingest::start_on(listener, config, store).await
    }

    pub async fn start_on(listener: TcpListener, config: ServerConfig, store: Store) -> Ingest {
        let addr = listener.local_addr().unwrap();
        let server = Server::new(config, store.clone()).unwrap();
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Ingest {
            addr,
            store,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown; returns when every connection has closed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("ingest did not stop in time")
            .unwrap();
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The roster of a test gateway: `n` meters `MTR-<prefix>-0000`…
pub fn roster(version: u32, prefix: &str, n: usize) -> Roster {
    Roster {
        version,
        meters: (0..n)
            .map(|i| format!("MTR-{prefix}-{i:04}").into_bytes())
            .collect(),
    }
}

/// Readings of `meters` meters for `intervals` 15-minute intervals from `start`, with registers
/// that grow by a meter- and interval-dependent amount.
pub fn samples(meters: u32, start: u64, intervals: u32, base: u64) -> Vec<Sample> {
    let mut out = Vec::new();
    for i in 0..intervals {
        for m in 0..meters {
            let wh = base + u64::from(m) * 1_000_000 + u64::from(i) * (50 + u64::from(m % 7) * 13);
            out.push(Sample {
                meter: m,
                timestamp: start + u64::from(i) * 900,
                wh,
            });
        }
    }
    out
}

/// 2026-11-02T00:00:00Z.
pub const T0: u64 = 1_793_577_600;

/// A test gateway: TLS client, spark-proto codec, frame reader.
pub struct Gateway {
    pub stream: TlsStream<TcpStream>,
    buf: BytesMut,
    pub codec: CodecContext,
}

impl Gateway {
    /// Connects and completes the TLS handshake.
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Gateway> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = tokio::time::timeout(WAIT, TlsConnector::from(tls).connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
        Ok(Gateway {
            stream,
            buf: BytesMut::new(),
            codec: CodecContext::new(0, 0),
        })
    }

    pub fn hello(last_acked_seq: u64, roster_version: u32) -> Hello {
        Hello {
            max_version: spark_proto::PROTOCOL_VERSION,
            min_version: spark_proto::MIN_PROTOCOL_VERSION,
            firmware_version: "2026.11.3".into(),
            booted_slot: BootSlot::B,
            last_acked_seq,
            capabilities: Capabilities::UPDATES | Capabilities::EVENTS,
            roster_version,
        }
    }

    /// Connect, Hello, Welcome; sends the roster if the cloud's version differs, and sets up
    /// the codec for it.
    pub async fn open(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        last_acked: u64,
        roster: &Roster,
    ) -> (Gateway, Welcome) {
        let mut gw = Gateway::connect(addr, tls).await.unwrap();
        gw.send(&Message::Hello(Gateway::hello(last_acked, roster.version)))
            .await
            .unwrap();
        let welcome = match gw.recv().await {
            Some(Message::Welcome(w)) => w,
            other => panic!("expected Welcome, got {other:?}"),
        };
        if welcome.roster_version != roster.version {
            gw.send(&Message::Roster(roster.clone())).await.unwrap();
        }
        gw.codec = CodecContext::new(roster.version, roster.meters.len() as u32);
        (gw, welcome)
    }

    pub async fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        let mut out = Vec::new();
        spark_proto::encode(msg, &mut out).unwrap();
        self.send_raw(&out).await
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Builds the batch `seq` from samples with the gateway's codec.
    pub fn batch(&mut self, seq: u64, start: u64, samples: &[Sample]) -> Message {
        Message::ReadingsBatch(self.codec.build_batch(seq, start, 900, samples).unwrap())
    }

    /// The next message, or `None` when the server closed the connection. Fails the test when
    /// nothing comes within [`WAIT`].
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.recv_inner())
            .await
            .expect("no message from ingest in time")
    }

    async fn recv_inner(&mut self) -> Option<Message> {
        loop {
            match spark_proto::decode(&self.buf) {
                Ok((msg, n)) => {
                    self.buf.advance(n);
                    return Some(msg);
                }
                Err(spark_proto::DecodeError::Incomplete) => {}
                Err(e) => panic!("ingest sent a bad frame: {e}"),
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until an Ack covering `seq` arrives; panics on a Nack or a close.
    pub async fn expect_ack(&mut self, seq: u64) -> u64 {
        loop {
            match self.recv().await {
                Some(Message::Ack(a)) if a.seq >= seq => return a.seq,
                Some(Message::Ack(_)) => {}
                other => panic!("expected Ack {seq}, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns what it sent before.
    pub async fn until_closed(&mut self) -> Vec<Message> {
        let mut seen = Vec::new();
        while let Some(m) = self.recv().await {
            seen.push(m);
            assert!(seen.len() < 10_000, "server keeps talking");
        }
        seen
    }
}

/// Everything logged in this test process (see [`capture_logs`]).
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs a subscriber that keeps spark-ingest's log lines in memory, so a test can check
/// that a refusal was logged with the gateway and the reason.
pub fn capture_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("spark_ingest=debug")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// Waits until one log line contains every needle; returns that line.
pub async fn wait_log(needles: &[&str]) -> String {
    for _ in 0..250 {
        {
            let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
            let text = String::from_utf8_lossy(&logs);
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    panic!(
        "no log line with {needles:?}; the log:\n{}",
        String::from_utf8_lossy(&logs)
    );
}

/// Asserts the server refuses a connection made with `tls` (handshake error, or closed before
/// any answer: with TLS 1.3 the client may finish its side before the server's verdict).
pub async fn assert_refused(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) {
    match Gateway::connect(addr, tls).await {
        Err(_) => {}
        Ok(mut gw) => {
            let _ = gw.send(&Message::Hello(Gateway::hello(0, 1))).await;
            assert!(gw.recv().await.is_none(), "connection was accepted");
        }
    }
}

/// A client of the internal API over mutual TLS (hyper HTTP/1.1 on tokio-rustls).
pub struct ApiClient {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ClientConfig>,
}

impl ApiClient {
    /// One request on a fresh connection; returns the status and the JSON body.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> std::io::Result<(u16, serde_json::Value)> {
        use http_body_util::BodyExt;
        let tcp = TcpStream::connect(self.addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(90), sender.send_request(req))
            .await
            .map_err(|_| std::io::Error::other("API request timed out"))?
            .map_err(std::io::Error::other)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }
}

/// Starts the internal API of `ingest` on 127.0.0.1; only CN `spark-ota` may call it.
pub async fn start_api(pki: &Pki, ingest: &Ingest) -> SocketAddr {
    let config = spark_ingest::api::ApiConfig::from_files(
        &pki.pki.server_cert(),
        &pki.pki.server_key(),
        &pki.pki.server_ca_cert(),
        vec!["spark-ota".to_owned()],
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = spark_ingest::api::router(ingest.hub.clone(), ingest.store.clone());
    tokio::spawn(spark_ingest::api::serve(
        listener,
        config,
        app,
        std::future::pending(),
    ));
    addr
}
