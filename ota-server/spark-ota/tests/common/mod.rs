//! Shared test rig: a dev PKI from `spark-keys` in a tempdir, real bundles built by the
//! `spark-image` library, release manifests signed with the dev release key, databases (a SQLite
//! file, or a PostgreSQL schema of its own), the real server on 127.0.0.1:0, and a device-side
//! HTTPS client with mutual TLS.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use spark_keys::{DevPki, DevPkiOptions};
use spark_ota::client::{AdminClient, Credentials};
use spark_ota::{Config, Server, Store};
use spark_release::{ReleaseManifest, SignedRelease, Timestamp, Version};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub const COMPATIBLE: &str = "spark-bbb";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_ota=debug".into()),
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

    pub fn device(&self, serial: &str) -> (PathBuf, PathBuf) {
        spark_keys::issue_device(self.dir.path(), serial, true).unwrap()
    }

    /// A device's client TLS (trusting only the server CA).
    pub fn device_tls(&self, serial: &str) -> Arc<rustls::ClientConfig> {
        let (cert, key) = self.device(serial);
        Arc::new(spark_tls::client_config(&self.pki.server_ca_cert(), &cert, &key).unwrap())
    }

    /// Builds a plain bundle of a random `size`-byte root filesystem image, signed by this
    /// PKI's bundle signer.
    pub fn bundle(&self, version: &str, size: usize, out: &Path) {
        let image = out.with_extension("img");
        let mut data = vec![0u8; size];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
        std::fs::write(&image, &data).unwrap();
        let signer =
            spark_image::Signer::load(&self.pki.signer_cert(), &self.pki.signer_key(), &[])
                .unwrap();
        spark_image::build(
            &spark_image::BuildInput::Rootfs {
                image: image.clone(),
                slot_class: "rootfs".into(),
                compatible: COMPATIBLE.into(),
                version: version.into(),
                description: None,
                build: None,
                format: spark_image::BundleFormat::Plain,
            },
            out,
            &spark_image::BuildOptions {
                signer: &signer,
                compression: spark_image::Compression::default(),
                mtime: None,
                progress: indicatif::ProgressBar::hidden(),
            },
        )
        .unwrap();
        std::fs::remove_file(image).unwrap();
    }

    /// Builds a 20 kB bundle of `version` in `dir`, signs its release manifest and uploads both.
    pub async fn upload_release(
        &self,
        admin: &AdminClient,
        dir: &Path,
        version: &str,
    ) -> spark_ota::catalog::Uploaded {
        let bundle = dir.join(format!("{version}.raucb"));
        self.bundle(version, 20_000, &bundle);
        let rel = dir.join(format!("{version}.release.json"));
        std::fs::write(&rel, self.sign_release(&bundle, version).to_json()).unwrap();
        admin
            .upload(&bundle, &rel, &indicatif::ProgressBar::hidden())
            .await
            .unwrap()
    }

    /// A release manifest for `bundle`, signed with this PKI's release key.
    pub fn sign_release(&self, bundle: &Path, version: &str) -> SignedRelease {
        self.sign_release_with(bundle, version, &self.pki.release_key(), |_| {})
    }

    pub fn sign_release_with(
        &self,
        bundle: &Path,
        version: &str,
        key: &Path,
        edit: impl FnOnce(&mut ReleaseManifest),
    ) -> SignedRelease {
        let digest = spark_release::digest_file(bundle).unwrap();
        let now = Timestamp::now();
        let mut m = ReleaseManifest {
            compatible: COMPATIBLE.into(),
            version: Version::parse(version).unwrap(),
            bundle_sha256: digest.sha256,
            bundle_size: digest.size,
            locations: vec![],
            min_version: None,
            issued_at: now,
            expires_at: now.checked_add(spark_release::DEFAULT_VALIDITY).unwrap(),
            allow_downgrade: false,
            rollout: None,
        };
        edit(&mut m);
        let key = spark_release::load_signing_key(key).unwrap();
        SignedRelease::sign(m, &key).unwrap()
    }
}

/// A database for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub fn postgres_base() -> String {
    std::env::var("SPARK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("ota.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    schema: None,
                }
            }
            Kind::Postgres => {
                let schema = format!("ota_{:016x}", rand::random::<u64>());
                let base = postgres_base();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
                    .await
                    .expect(
                        "PostgreSQL on 127.0.0.1:5432 (db test) is needed; set SPARK_TEST_POSTGRES",
                    );
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{sep}options[search_path]={schema}"),
                    _dir: None,
                    schema: Some(schema),
                }
            }
        }
    }

    /// Drops the PostgreSQL schema (call at the end of a test).
    pub async fn drop_schema(&self) {
        if let Some(schema) = &self.schema {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&postgres_base())
                .await
                .unwrap();
            sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
}

/// The real server on two loopback ports.
pub struct TestServer {
    pub device_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub store: Store,
    pub config: Config,
    pub rollouts: Arc<spark_ota::rollouts::Rollouts>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(pki: &Pki, db: &TestDb, extra: &str) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let text = TestServer::config_text(pki, db, data_dir.path(), extra);
        TestServer::start_with(&text, data_dir).await
    }

    pub async fn start_with(text: &str, data_dir: tempfile::TempDir) -> TestServer {
        TestServer::start_hooked(text, data_dir, None, None).await
    }

    /// The server's config text for this PKI and database, with `extra` top-level keys.
    pub fn config_text(pki: &Pki, db: &TestDb, data_dir: &Path, extra: &str) -> String {
        let p = &pki.pki;
        format!(
            r#"
            data-dir = "{data}"
            database = "{db}"
            keyring = "{keyring}"
            release-keys = ["{release}"]
            {extra}
            [tls]
            cert = "{cert}"
            key = "{key}"
            device-ca = "{device_ca}"
            admin-ca = "{server_ca}"
            "#,
            data = data_dir.display(),
            db = db.url,
            keyring = p.keyring().display(),
            release = p.release_pub().display(),
            cert = p.server_cert().display(),
            key = p.server_key().display(),
            device_ca = p.device_ca_cert().display(),
            server_ca = p.server_ca_cert().display(),
        )
    }

    /// The server with an injected rollout clock and telemetry source (`None`: as configured).
    pub async fn start_hooked(
        text: &str,
        data_dir: tempfile::TempDir,
        clock: Option<spark_ota::clock::ServerClock>,
        telemetry: Option<Option<Arc<dyn spark_ota::telemetry::TelemetrySource>>>,
    ) -> TestServer {
        let config = Config::parse(text, &data_dir.path().join("ota.toml")).unwrap();
        let server = Server::from_config_with(&config, clock, telemetry)
            .await
            .unwrap();
        let store = server.state.store.clone();
        let rollouts = server.state.rollouts.clone();
        let devices = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (device_addr, admin_addr) =
            (devices.local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(devices, admin, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            device_addr,
            admin_addr,
            data_dir,
            store,
            config,
            rollouts,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("server stops")
                .unwrap();
        }
    }

    pub fn admin_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.admin_addr.port())
    }

    /// An admin client with a fresh token.
    pub async fn admin(&self, pki: &Pki) -> AdminClient {
        let name = format!("test-{}", rand::random::<u32>());
        let token = spark_ota::tokens::create(&self.store, &name).await.unwrap();
        AdminClient::new(
            &self.admin_url(),
            &pki.pki.server_ca_cert(),
            Credentials::Token(token),
        )
        .unwrap()
    }

    /// Files in the blob store and spool (refused uploads must leave none).
    pub fn stored_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["blobs", "spool"] {
            for e in std::fs::read_dir(self.data_dir.path().join(sub)).unwrap() {
                out.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
        out
    }

    /// Row counts of the tables that hold catalog data.
    pub async fn catalog_rows(&self) -> (i64, i64) {
        let counts = self.store.counts().await.unwrap();
        let get = |t: &str| counts.iter().find(|(n, _)| n == t).unwrap().1;
        (get("bundles"), get("releases"))
    }
}

/// One HTTP/1.1 connection with a client certificate (a device), kept alive across requests.
pub struct DeviceConn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

impl DeviceConn {
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<DeviceConn> {
        let tcp = TcpStream::connect(addr).await?;
        let tls = TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(DeviceConn { sender })
    }

    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Answer, hyper::Error> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        // Keep-alive: the previous response must be fully read before the next request goes out.
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.request(Method::GET, path, headers, Bytes::new())
            .await
            .unwrap()
    }

    pub async fn post_json(&mut self, path: &str, body: &str) -> Answer {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body.to_owned(),
        )
        .await
        .unwrap()
    }
}

/// A status report as the agent sends it.
pub fn report(
    device: &str,
    seq: u64,
    reason: &str,
    to: &str,
    current: &str,
    release: &str,
) -> String {
    serde_json::json!({
        "device": device, "seq": seq, "at": 1_795_000_000u64 + seq,
        "from": "idle", "to": to, "reason": reason,
        "current-version": current, "release-version": release,
    })
    .to_string()
}
