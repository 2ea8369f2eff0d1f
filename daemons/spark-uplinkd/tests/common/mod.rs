//! Shared test rig for uplinkd: a dev PKI in a tempdir, the real spark-ingest in-process (SQLite,
//! restartable on the same port, counting resumed TLS sessions), a fault-injecting TCP proxy, a
//! test `io.spark.Update1` object, and ways to run uplinkd in-process or as its binary.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use spark_ingest::{Server, ServerConfig, Store, StoredReading};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod meterd;
pub mod meters;

/// Bound on any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_uplinkd=debug,spark_ingest=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after [`WAIT`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A development PKI with one device certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub pki: spark_keys::DevPki,
    pub serial: String,
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
}

impl Pki {
    pub fn new(serial: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = spark_keys::init_dev(dir.path(), &spark_keys::DevPkiOptions::default()).unwrap();
        let (device_cert, device_key) =
            spark_keys::issue_device(dir.path(), serial, false).unwrap();
        Pki {
            dir,
            pki,
            serial: serial.to_owned(),
            device_cert,
            device_key,
        }
    }
}

/// The server's session cache, counting the sessions it hands back for resumption: each hit
/// is a resumed handshake (no certificates, no signature by the device key).
#[derive(Debug)]
struct CountingCache {
    inner: Arc<dyn rustls::server::StoresServerSessions>,
    resumed: Arc<AtomicU64>,
}

impl rustls::server::StoresServerSessions for CountingCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.get(key);
        if v.is_some() {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
        v
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let v = self.inner.take(key);
        if v.is_some() {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
        v
    }

    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The real spark-ingest, in-process, on SQLite. Restartable on the same address.
pub struct Cloud {
    pub addr: SocketAddr,
    pub db_url: String,
    pub store: Store,
    /// Handshakes that resumed a session from the server's cache.
    pub resumed: Arc<AtomicU64>,
    tls: Arc<rustls::ServerConfig>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    hub: Option<spark_ingest::Hub>,
    api: Option<(SocketAddr, JoinHandle<()>)>,
    _dir: tempfile::TempDir,
}

impl Cloud {
    pub async fn start(pki: &Pki) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ingest.db").display()
        );
        let mut tls = spark_tls::server_config(
            &pki.pki.server_cert(),
            &pki.pki.server_key(),
            &pki.pki.device_ca_cert(),
        )
        .unwrap();
        let resumed = Arc::new(AtomicU64::new(0));
        tls.session_storage = Arc::new(CountingCache {
            inner: tls.session_storage.clone(),
            resumed: resumed.clone(),
        });
        let store = Store::connect(&db_url).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut cloud = Cloud {
            addr,
            db_url,
            store,
            resumed,
            tls: Arc::new(tls),
            running: None,
            hub: None,
            api: None,
            _dir: dir,
        };
        cloud.run_on(listener).await;
        cloud
    }

    async fn run_on(&mut self, listener: TcpListener) {
        let mut config = ServerConfig::new((*self.tls).clone());
        config.idle_timeout = Duration::from_secs(60);
        let server = Server::new(config, self.store.clone()).unwrap();
        self.hub = Some(server.hub());
        if let Some((_, task)) = self.api.take() {
            task.abort();
        }
        let router = spark_ingest::api::router(server.hub(), self.store.clone());
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = api.local_addr().unwrap();
        let api_task = tokio::spawn(async move {
            let _ = axum::serve(api, router).await;
        });
        self.api = Some((api_addr, api_task));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((tx, task));
    }

    /// Graceful shutdown (ingest acks what it committed, then closes).
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }

    /// Starts again on the same address and database.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.store = Store::connect(&self.db_url).await.unwrap();
        let listener = {
            let deadline = Instant::now() + WAIT;
            loop {
                match TcpListener::bind(self.addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        assert!(
                            Instant::now() < deadline,
                            "cannot rebind {}: {e}",
                            self.addr
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        };
        self.run_on(listener).await;
    }

    /// Whether ingest has a session of `gateway`.
    pub fn is_connected(&self, gateway: &str) -> bool {
        self.hub.as_ref().is_some_and(|h| h.is_connected(gateway))
    }

    /// Readings stored for `gateway`, sorted.
    pub async fn readings(&self, gateway: &str) -> Vec<StoredReading> {
        let mut r = self.store.readings(gateway).await.unwrap();
        r.sort();
        r
    }

    /// Sends a command through ingest's internal API (its axum router, on plain HTTP here: the
    /// API's mutual TLS is ingest's own test matter) and waits up to `wait_secs` for the result.
    /// Returns the HTTP status and the JSON body.
    pub async fn command(
        &self,
        gateway: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let addr = self.api.as_ref().expect("ingest running").0;
        let body = body.to_string();
        let request = format!(
            "POST /v1/gateways/{gateway}/commands HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        http(addr, &request).await
    }
}

/// One HTTP/1.1 request with `connection: close`; returns status and JSON body.
async fn http(addr: SocketAddr, request: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let json = serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null);
    (status, json)
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.abort();
        }
        if let Some((_, task)) = self.api.take() {
            task.abort();
        }
    }
}

/// How the proxy treats each new connection.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Cut the connection after a random number of bytes in `min..max` (both directions).
    CutAfter { min: u64, max: u64 },
    /// Accept and close at once (the cloud is unreachable).
    Refuse,
}

/// A TCP proxy in front of the cloud that drops connections to order.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    pub cuts: Arc<AtomicU64>,
    fault: Arc<Mutex<Fault>>,
    // Bumped to cut every open connection at once.
    kill: tokio::sync::watch::Sender<u64>,
    // Bumped to freeze every open connection: sockets stay open, nothing passes (a dead radio
    // link that TCP has not noticed yet).
    stall: tokio::sync::watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr, fault: Fault, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(fault));
        let connections = Arc::new(AtomicU64::new(0));
        let cuts = Arc::new(AtomicU64::new(0));
        let (f, c, k) = (fault.clone(), connections.clone(), cuts.clone());
        let (kill, kill_rx) = tokio::sync::watch::channel(0u64);
        let (stall, stall_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let fault = *f.lock().unwrap();
                let budget = match fault {
                    Fault::Pass => u64::MAX,
                    Fault::CutAfter { min, max } => rng.gen_range(min..max),
                    Fault::Refuse => {
                        drop(client);
                        continue;
                    }
                };
                let k = k.clone();
                let mut kill_rx = kill_rx.clone();
                kill_rx.mark_unchanged();
                let mut stall_rx = stall_rx.clone();
                stall_rx.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let cut = tokio::select! {
                        cut = pipe(client, upstream, budget, stall_rx) => cut,
                        _ = kill_rx.changed() => true,
                    };
                    if cut {
                        k.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        FaultProxy {
            addr,
            connections,
            cuts,
            fault,
            kill,
            stall,
            task,
        }
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap() = fault;
    }

    /// Cuts every connection open now.
    pub fn cut_all(&self) {
        self.kill.send_modify(|g| *g += 1);
    }

    /// Freezes every connection open now (new ones are not affected).
    pub fn stall_all(&self) {
        self.stall.send_modify(|g| *g += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards both ways until either side closes or `budget` bytes passed; returns whether the
/// budget cut it.
async fn pipe(
    mut client: TcpStream,
    mut upstream: TcpStream,
    mut budget: u64,
    mut stall: tokio::sync::watch::Receiver<u64>,
) -> bool {
    let mut a = vec![0u8; 8192];
    let mut b = vec![0u8; 8192];
    loop {
        let (n, to_upstream) = tokio::select! {
            r = client.read(&mut a) => (r, true),
            r = upstream.read(&mut b) => (r, false),
            // Frozen: hold both sockets open and pass nothing, until the proxy cuts or drops.
            _ = stall.changed() => std::future::pending().await,
        };
        let n = match n {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let take = (n as u64).min(budget) as usize;
        let res = if to_upstream {
            upstream.write_all(&a[..take]).await
        } else {
            client.write_all(&b[..take]).await
        };
        if res.is_err() {
            return false;
        }
        budget -= take as u64;
        if budget == 0 {
            // Abrupt: both sockets dropped mid-stream, as a radio link dies.
            return true;
        }
    }
}

/// What the test `io.spark.Update1` object was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCall {
    UpdateAvailable(Vec<u8>),
    Reboot(u32),
}

/// A test `io.spark.Update1` on the bus that records calls.
pub struct TestUpdate1 {
    pub calls: Arc<Mutex<Vec<UpdateCall>>>,
    _conn: zbus::Connection,
}

struct Update1Iface {
    calls: Arc<Mutex<Vec<UpdateCall>>>,
}

/// The errors spark-updated answers with (same names).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "io.spark.Update1.Error")]
enum Update1Error {
    #[zbus(error)]
    ZBus(zbus::Error),
    ReleaseRejected(String),
    Busy(String),
}

#[zbus::interface(name = "io.spark.Update1")]
impl Update1Iface {
    async fn check_now(&self) {}

    async fn reboot(&self, delay_secs: u32) {
        self.calls
            .lock()
            .unwrap()
            .push(UpdateCall::Reboot(delay_secs));
    }

    /// `busy` and `expired` stand for releases the agent refuses.
    async fn update_available(&self, signed_release: Vec<u8>) -> Result<(), Update1Error> {
        if signed_release == b"busy" {
            return Err(Update1Error::Busy("too many requests waiting".into()));
        }
        if signed_release == b"expired" {
            return Err(Update1Error::ReleaseRejected(
                "release-rejected: expired: the release expired on 2026-01-01".into(),
            ));
        }
        self.calls
            .lock()
            .unwrap()
            .push(UpdateCall::UpdateAvailable(signed_release));
        Ok(())
    }
}

impl TestUpdate1 {
    pub async fn start(bus: &str) -> TestUpdate1 {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let conn = zbus::connection::Builder::address(bus)
            .unwrap()
            .name(spark_dbus::UPDATE1_NAME)
            .unwrap()
            .serve_at(
                spark_dbus::UPDATE1_PATH,
                Update1Iface {
                    calls: calls.clone(),
                },
            )
            .unwrap()
            .build()
            .await
            .unwrap();
        TestUpdate1 { calls, _conn: conn }
    }
}

/// The uplinkd config for a test.
pub struct Setup<'a> {
    pub pki: &'a Pki,
    pub bus: &'a str,
    pub cloud: SocketAddr,
    pub data_dir: &'a Path,
}

impl Setup<'_> {
    /// The config with the device key from its PEM file.
    pub fn toml(&self) -> String {
        format!(
            "{}device-key = \"{}\"\n",
            self.toml_without_key(),
            self.pki.device_key.display()
        )
    }

    /// The config up to the end of `[cloud]`, without a device key (add one, or a
    /// `[cloud.pkcs11]` table).
    pub fn toml_without_key(&self) -> String {
        format!(
            r#"
data-dir = "{data}"
bus-address = "{bus}"
firmware-version = "2026.11.0-test"
booted-slot = "B"
reading-interval-secs = 900
batch-window-secs = 0.1
health-interval-secs = 1.0
keepalive-secs = 300
dead-peer-timeout-secs = 5

[cloud]
address = "{cloud}"
server-name = "localhost"
server-ca = "{ca}"
device-cert = "{cert}"
handshake-timeout-secs = 5
backoff-min-secs = 0.05
backoff-max-secs = 0.4
max-in-flight = 4
"#,
            data = self.data_dir.display(),
            bus = self.bus,
            cloud = self.cloud,
            ca = self.pki.pki.server_ca_cert().display(),
            cert = self.pki.device_cert.display(),
        )
    }

    pub fn config(&self) -> spark_uplinkd::Config {
        spark_uplinkd::Config::parse(&self.toml(), Path::new("test.toml")).unwrap()
    }
}

/// uplinkd running in this process.
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl InProcess {
    pub async fn start(config: spark_uplinkd::Config) -> InProcess {
        let (tx, rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            spark_uplinkd::run(
                config,
                async {
                    let _ = rx.await;
                },
                move || {
                    let _ = ready_tx.send(());
                },
            )
            .await
            .unwrap();
        });
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("uplinkd ready")
            .expect("uplinkd started");
        InProcess {
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Asserts `stored` holds exactly the generated readings: same multiset, no duplicates.
pub fn assert_exactly_once(generated: &[(String, u64, u64)], stored: &[StoredReading]) {
    let mut want: Vec<StoredReading> = generated
        .iter()
        .map(|(m, ts, wh)| StoredReading {
            meter_id: m.clone(),
            ts: *ts,
            wh: *wh,
        })
        .collect();
    want.sort();
    let mut dedup = stored.to_vec();
    dedup.dedup();
    assert_eq!(
        dedup.len(),
        stored.len(),
        "{} duplicate readings stored",
        stored.len() - dedup.len()
    );
    if want != stored {
        let missing = want
            .iter()
            .filter(|r| stored.binary_search(r).is_err())
            .count();
        let extra = stored
            .iter()
            .filter(|r| want.binary_search(r).is_err())
            .count();
        panic!(
            "stored {} readings, generated {}: {missing} missing, {extra} not generated",
            stored.len(),
            want.len()
        );
    }
}
