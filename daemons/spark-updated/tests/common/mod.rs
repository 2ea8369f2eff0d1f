//! Shared test helpers: a dev PKI with a device certificate, a small HTTPS server standing in
//! for the OTA server (mutual TLS, Range support, link cuts on demand, byte counters), signed
//! releases, and RAUC bundles built by spark-image.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use spark_dbus::report::StatusReport;
use spark_keys::{DevPki, DevPkiOptions};
use spark_release::{ReleaseManifest, SignedRelease, Timestamp, Version};
use spark_updated::https::HttpsClient;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub const DEVICE: &str = "bbb-test-0001";

/// Bound on every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// A dev PKI (with a device certificate) in a scratch directory.
pub struct Pki {
    pub dir: TempDir,
    pub pki: DevPki,
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spark-updated-test-")
            .tempdir()
            .expect("scratch directory");
        let root = dir.path().join("pki");
        let pki = spark_keys::init_dev(&root, &DevPkiOptions::default()).expect("dev PKI");
        let (device_cert, device_key) =
            spark_keys::issue_device(&root, DEVICE, false).expect("device certificate");
        Self {
            dir,
            pki,
            device_cert,
            device_key,
        }
    }

    pub fn client(&self) -> HttpsClient {
        let mut client = HttpsClient::from_pem_files(
            &self.pki.server_ca_cert(),
            &self.device_cert,
            &self.device_key,
        )
        .expect("HTTPS client");
        client.timeout = Duration::from_secs(10);
        client
    }

    pub fn trusted_keys(&self) -> spark_release::TrustedKeys {
        let mut keys = spark_release::TrustedKeys::new();
        keys.load_pem_file(&self.pki.release_pub())
            .expect("release public key");
        keys
    }

    /// Signs a release for `bundle` bytes.
    pub fn sign(&self, edit: impl FnOnce(&mut ReleaseManifest), bundle: &[u8]) -> SignedRelease {
        let key = spark_release::load_signing_key(&self.pki.release_key()).expect("release key");
        let digest = spark_release::digest_reader(bundle).expect("digest");
        let now = Timestamp::now().unix();
        let mut manifest = ReleaseManifest {
            compatible: COMPATIBLE.into(),
            version: Version::new(2, 0, 0),
            bundle_sha256: digest.sha256,
            bundle_size: digest.size,
            locations: Vec::new(),
            min_version: None,
            issued_at: Timestamp::from_unix(now - 60).unwrap(),
            expires_at: Timestamp::from_unix(now + 3600).unwrap(),
            allow_downgrade: false,
            rollout: None,
        };
        edit(&mut manifest);
        SignedRelease::sign(manifest, &key).expect("sign release")
    }
}

pub const COMPATIBLE: &str = "spark-updated-test";

/// What the test server does and has seen.
#[derive(Default)]
pub struct ServerState {
    /// Path (without query) -> body.
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    /// Bytes of body to send per response before cutting the link, while `cuts_left` > 0.
    pub cut_after: AtomicU64,
    pub cuts_left: AtomicU32,
    /// Body bytes written to sockets, over all responses.
    pub served: AtomicU64,
    pub requests: AtomicU32,
    pub reports: Mutex<Vec<StatusReport>>,
}

/// The stand-in OTA server.
pub struct OtaServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtaServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn server_tls(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(pki.pki.device_ca_cert()).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.pki.server_cert())
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.pki.server_key()).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

impl OtaServer {
    pub async fn start(pki: &Pki) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(server_tls(pki));
        let state = Arc::new(ServerState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls, &state).await;
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn base(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.state.files.lock().unwrap().insert(path.into(), body);
    }

    pub fn bundle_path(bundle: &[u8]) -> String {
        let digest = spark_release::digest_reader(bundle).unwrap();
        format!("/v1/bundles/{}", hex::encode(digest.sha256))
    }

    /// Publishes `release` as this device's current release and `bundle` under its hash.
    pub fn publish(&self, release: &SignedRelease, bundle: Vec<u8>) {
        self.put(
            &format!("/v1/devices/{DEVICE}/release"),
            release.to_json().into_bytes(),
        );
        self.put(&Self::bundle_path(&bundle), bundle);
    }

    pub fn cut(&self, after: u64, times: u32) {
        self.state.cut_after.store(after, Ordering::SeqCst);
        self.state.cuts_left.store(times, Ordering::SeqCst);
    }

    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::SeqCst)
    }

    pub fn reasons(&self) -> Vec<String> {
        self.state
            .reports
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.reason.to_string())
            .collect()
    }
}

/// One request per connection (the client dials anew each time), hand-written HTTP/1.1 so the
/// test controls exactly how many body bytes go out before a cut.
async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    state: &ServerState,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte).await? == 0 || head.len() > 16 << 10 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if method == "POST" {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        tls.read_exact(&mut body).await?;
        if let Ok(report) = serde_json::from_slice::<StatusReport>(&body) {
            state.reports.lock().unwrap().push(report);
        }
        tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            .await?;
        return tls.shutdown().await;
    }
    let Some(file) = state.files.lock().unwrap().get(&path).cloned() else {
        let status = if path.ends_with("/release") {
            "204 No Content"
        } else {
            "404 Not Found"
        };
        tls.write_all(
            format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        return tls.shutdown().await;
    };
    let len = file.len() as u64;
    let start: u64 = header("range")
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or(0);
    if start >= len && len > 0 {
        tls.write_all(format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes()).await?;
        return tls.shutdown().await;
    }
    let head = if header("range").is_some() {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - start
        )
    } else {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    tls.write_all(head.as_bytes()).await?;
    let limit = if state
        .cuts_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        state.cut_after.load(Ordering::SeqCst)
    } else {
        u64::MAX
    };
    let body = &file[start as usize..];
    let send = &body[..body.len().min(limit.min(body.len() as u64) as usize)];
    for chunk in send.chunks(16 << 10) {
        tls.write_all(chunk).await?;
        state.served.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    tls.flush().await?;
    if (send.len() as u64) < body.len() as u64 {
        // A link cut: the TCP connection just goes away, no TLS close_notify.
        let (tcp, _) = tls.into_inner();
        drop(tcp);
        return Ok(());
    }
    tls.shutdown().await
}

/// `len` bytes that do not compress and differ per `seed` (xorshift).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Awaits `fut`, failing the test after [`WAIT`].
pub async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("no answer within the test's bound")
}

pub fn path_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
