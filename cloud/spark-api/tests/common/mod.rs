//! Shared test rig: a dev PKI in a tempdir, databases (SQLite file, or a PostgreSQL schema of its
//! own per test) with ingest's and the pipeline's tables, seed rows, the API in-process on
//! 127.0.0.1 over real mutual TLS, and an HTTPS client.

#![allow(dead_code)]

pub mod gateway;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use spark_api::db::Backend;
use spark_api::{AppState, Scope, ServeConfig, Tokens};
use spark_keys::{DevPki, DevPkiOptions};
use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;

/// 2026-11-02T00:00:00Z.
pub const T0: i64 = 1_793_577_600;
pub const DAY: i64 = 86_400;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_api=info,spark_ingest=info".into()),
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

    /// A service client certificate (CN `name`, server CA), as `spark-keys issue-service` makes.
    pub fn service(&self, name: &str) -> (PathBuf, PathBuf) {
        spark_keys::issue_service(self.dir.path(), name, true).unwrap()
    }

    /// A client config presenting the service certificate `name`, trusting the server CA.
    pub fn client_tls(&self, name: &str) -> Arc<rustls::ClientConfig> {
        let (cert, key) = self.service(name);
        Arc::new(spark_tls::client_config(&self.pki.server_ca_cert(), &cert, &key).unwrap())
    }

    pub fn server_config(&self, allowed: Vec<String>) -> ServeConfig {
        let tls = spark_tls::server_config(
            &self.pki.server_cert(),
            &self.pki.server_key(),
            &self.pki.server_ca_cert(),
        )
        .unwrap();
        ServeConfig::new(tls, allowed)
    }
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

/// A database for one test, with ingest's tables (applied by `spark_ingest::Store::connect`,
/// as ingest does at start-up) and the pipeline's (its migration files, applied as written).
pub struct TestDb {
    pub kind: Kind,
    pub url: String,
    /// A second database (SQLite) or schema (PostgreSQL) for the tokens.
    pub tokens_url: String,
    _dir: tempfile::TempDir,
    schemas: Vec<String>,
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let (url, tokens_url, schemas) = match kind {
            Kind::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("ingest.db").display()
                ),
                format!("sqlite://{}?mode=rwc", dir.path().join("api.db").display()),
                vec![],
            ),
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&pg_base()).await.expect(
                    "PostgreSQL on 127.0.0.1:5432 (database `test`) is needed for this test",
                );
                let mut schemas = Vec::new();
                for _ in 0..2 {
                    let schema = format!("t_{:016x}", rand::random::<u64>());
                    sqlx::query(&format!("CREATE SCHEMA {schema}"))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    schemas.push(schema);
                }
                let sep = if pg_base().contains('?') { '&' } else { '?' };
                (
                    format!("{}{sep}options[search_path]={}", pg_base(), schemas[0]),
                    format!("{}{sep}options[search_path]={}", pg_base(), schemas[1]),
                    schemas,
                )
            }
        };
        let db = TestDb {
            kind,
            url,
            tokens_url,
            _dir: dir,
            schemas,
        };
        let store = spark_ingest::Store::connect(&db.url).await.unwrap();
        store.close().await;
        db.apply_pipeline_schema().await;
        db
    }

    pub fn backend(&self) -> Backend {
        match self.kind {
            Kind::Sqlite => Backend::Sqlite,
            Kind::Postgres => Backend::Postgres,
        }
    }

    /// Runs spark-pipeline's migration files (its tables: consumption_hourly/daily, grid_events).
    async fn apply_pipeline_schema(&self) {
        let flavour = match self.kind {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../spark-pipeline/migrations")
            .join(flavour);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("spark-pipeline migrations in {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for f in files {
            let sql = std::fs::read_to_string(&f).unwrap();
            self.exec_raw(&sql).await;
        }
    }

    pub async fn exec_raw(&self, sql: &str) {
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }

    /// Executes `template` (PostgreSQL flavour with TIME($n) markers) once per row of `rows`.
    pub async fn insert(&self, template: &str, rows: &[Vec<Val>]) {
        let sql = spark_api::db::sql_for(template, self.backend());
        macro_rules! go {
            ($conn:expr) => {{
                let mut tx = $conn.begin().await.unwrap();
                for row in rows {
                    let mut q = sqlx::query(&sql);
                    for v in row {
                        q = match v {
                            Val::I(n) => q.bind(*n),
                            Val::S(s) => q.bind(s.clone()),
                            Val::NI => q.bind(Option::<i64>::None),
                            Val::NT => q.bind(Option::<String>::None),
                        };
                    }
                    q.execute(&mut *tx).await.unwrap();
                }
                tx.commit().await.unwrap();
            }};
        }
        match self.kind {
            Kind::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                go!(c)
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                go!(c)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut self.schemas);
        if schemas.is_empty() {
            return;
        }
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&pg_base()).await {
                    for s in schemas {
                        let _ = sqlx::query(&format!("DROP SCHEMA {s} CASCADE"))
                            .execute(&mut conn)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// A bound value for [`TestDb::insert`].
#[derive(Debug, Clone)]
pub enum Val {
    I(i64),
    S(String),
    /// NULL of an integer (time) parameter.
    NI,
    /// NULL of a text parameter (PostgreSQL keeps a statement's parameter types).
    NT,
}

pub fn s(v: &str) -> Val {
    Val::S(v.to_owned())
}

/// The register of `meter` (index) at `ts`: grows by a meter-dependent amount per 15 minutes.
pub fn wh(meter: i64, ts: i64) -> i64 {
    1_000_000 * meter + (ts - T0) / 900 * (40 + meter * 7)
}

/// Seeds two gateways (GW-1 with meters MTR-0..2, GW-2 with MTR-9), readings every 15 minutes
/// for `days` days from T0, a health event, consumption rows, grid events and a command.
pub async fn seed(db: &TestDb, days: i64) {
    let gw = "INSERT INTO gateways (gateway, first_seen, last_seen, last_committed_seq, \
              firmware_version, booted_slot, protocol_version, roster_version, config_version) \
              VALUES ($1, TIME($2), TIME($3), $4, $5, $6, 1, 1, 0)";
    db.insert(
        gw,
        &[
            vec![
                s("GW-1"),
                Val::I(T0),
                Val::I(T0 + days * DAY),
                Val::I(40),
                s("2026.11.3"),
                s("B"),
            ],
            vec![
                s("GW-2"),
                Val::I(T0),
                Val::I(T0 + 3600),
                Val::I(2),
                s("2026.10.1"),
                s("A"),
            ],
        ],
    )
    .await;
    db.insert(
        "INSERT INTO roster_meters (gateway, position, meter_id) VALUES ($1, $2, $3)",
        &[
            vec![s("GW-1"), Val::I(0), s("MTR-0")],
            vec![s("GW-1"), Val::I(1), s("MTR-1")],
            vec![s("GW-1"), Val::I(2), s("MTR-2")],
            vec![s("GW-2"), Val::I(0), s("MTR-9")],
        ],
    )
    .await;
    let mut rows = Vec::new();
    for (gw, meters) in [("GW-1", vec![0, 1, 2]), ("GW-2", vec![9])] {
        for m in meters {
            let mut ts = T0;
            while ts < T0 + days * DAY {
                rows.push(vec![
                    s(gw),
                    s(&format!("MTR-{m}")),
                    Val::I(ts),
                    Val::I(wh(m, ts)),
                ]);
                ts += 900;
            }
        }
    }
    db.insert(
        "INSERT INTO readings (gateway, meter_id, ts, wh) VALUES ($1, $2, TIME($3), $4)",
        &rows,
    )
    .await;
    // The older event as a protocol-1 gateway sends it, the latest with protocol 2's
    // bytes_used_today.
    let data = |q: i64| {
        let used = if q == 3 {
            r#","bytes_used_today":1234567"#
        } else {
            ""
        };
        format!(
            r#"{{"uptime_secs":3600,"queue_len":{q},"free_data_kib":524288,"rssi_dbm":-71,"meters_seen":3{used}}}"#
        )
    };
    let ev = match db.kind {
        Kind::Sqlite => {
            "INSERT INTO events (gateway, seq, ts, kind, meter_id, data) VALUES ($1, $2, TIME($3), $4, NULL, $5)"
        }
        Kind::Postgres => {
            "INSERT INTO events (gateway, seq, ts, kind, meter_id, data) VALUES ($1, $2, TIME($3), $4, NULL, CAST($5 AS JSONB))"
        }
    };
    db.insert(
        ev,
        &[
            vec![
                s("GW-1"),
                Val::I(10),
                Val::I(T0 + 600),
                s("health"),
                s(&data(7)),
            ],
            vec![
                s("GW-1"),
                Val::I(20),
                Val::I(T0 + 1200),
                s("health"),
                s(&data(3)),
            ],
            vec![
                s("GW-1"),
                Val::I(21),
                Val::I(T0 + 1300),
                s("meter_lost"),
                s(r#"{"meter_index":1}"#),
            ],
        ],
    )
    .await;
    // Consumption as the pipeline would write it for MTR-1 (hourly = 4 quarter hours).
    let mut hourly = Vec::new();
    let mut daily = Vec::new();
    for d in 0..days {
        for h in 0..24 {
            let start = T0 + d * DAY + h * 3600;
            hourly.push(vec![s("MTR-1"), s("GW-1"), Val::I(start), Val::I(4 * 47)]);
        }
        daily.push(vec![
            s("MTR-1"),
            s("GW-1"),
            Val::I(T0 + d * DAY),
            Val::I(96 * 47),
        ]);
    }
    db.insert(
        "INSERT INTO consumption_hourly (meter_id, gateway, hour, wh) VALUES ($1, $2, TIME($3), $4)",
        &hourly,
    )
    .await;
    db.insert(
        "INSERT INTO consumption_daily (meter_id, gateway, day, wh) VALUES ($1, $2, TIME($3), $4)",
        &daily,
    )
    .await;
    let ge = match db.kind {
        Kind::Sqlite => {
            "INSERT INTO grid_events (gateway, meter_id, kind, start_ts, end_ts, detected_at, data) VALUES ($1, $2, $3, TIME($4), $5, TIME($6), $7)"
        }
        Kind::Postgres => {
            "INSERT INTO grid_events (gateway, meter_id, kind, start_ts, end_ts, detected_at, data) VALUES ($1, $2, $3, TIME($4), to_timestamp($5), TIME($6), CAST($7 AS JSONB))"
        }
    };
    db.insert(
        ge,
        &[
            vec![
                s("GW-1"),
                Val::NT,
                s("outage"),
                Val::I(T0 + 7200),
                Val::I(T0 + 9000),
                Val::I(T0 + 7300),
                s(r#"{"meters":3}"#),
            ],
            vec![
                s("GW-1"),
                s("MTR-2"),
                s("meter_zero_usage"),
                Val::I(T0 + 7200),
                Val::NI,
                Val::I(T0 + 7400),
                s("{}"),
            ],
            vec![
                s("GW-2"),
                Val::NT,
                s("gateway_silent"),
                Val::I(T0 + 4 * 3600),
                Val::NI,
                Val::I(T0 + 5 * 3600),
                s("{}"),
            ],
        ],
    )
    .await;
    db.insert(
        "INSERT INTO commands (gateway, kind, request, status, code, detail, created_at, delivered_at, updated_at) \
         VALUES ($1, 'reboot', CAST($2 AS JSONB), 'succeeded', 0, '', TIME($3), TIME($3), TIME($4))"
            .replace(
                "CAST($2 AS JSONB)",
                if db.kind == Kind::Sqlite { "$2" } else { "CAST($2 AS JSONB)" },
            )
            .as_str(),
        &[vec![s("GW-1"), s(r#"{"kind":"reboot","delay_secs":5}"#), Val::I(T0), Val::I(T0 + 5)]],
    )
    .await;
}

/// The API running in-process.
pub struct Api {
    pub addr: SocketAddr,
    pub tokens: Tokens,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Api {
    /// Starts the API over `db` (tokens in `db.tokens_url`), commands to `ingest` if given.
    pub async fn start(
        pki: &Pki,
        db: &TestDb,
        allowed: Vec<String>,
        ingest: Option<spark_api::ingest::IngestClient>,
    ) -> Api {
        let tokens = Tokens::connect(&db.tokens_url, 4).await.unwrap();
        let read_db = spark_api::db::Db::connect(&db.url, 4).await.unwrap();
        let app = spark_api::router(AppState {
            db: read_db,
            tokens: tokens.clone(),
            ingest,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = pki.server_config(allowed);
        let task = tokio::spawn(spark_api::serve(listener, config, app, async {
            let _ = stopped.await;
        }));
        Api {
            addr,
            tokens,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn token(&self, name: &str, scopes: &[Scope]) -> String {
        self.tokens.create(name, scopes).await.unwrap().1
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(30), self.task.take().unwrap())
            .await
            .expect("API did not stop")
            .unwrap();
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts a problem-details answer with `status`; returns its `detail`.
    pub fn problem(&self, status: u16) -> String {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type, "application/problem+json");
        let p = self.json();
        assert_eq!(p["status"], status);
        assert!(p["type"].as_str().unwrap().starts_with("https://"));
        assert!(p["title"].is_string());
        p["detail"].as_str().unwrap().to_owned()
    }
}

/// An HTTPS client with one kept-alive connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls).connect(name, tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client { sender })
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(90), self.sender.send_request(req))
            .await
            .expect("API request timed out")?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    /// GET with a bearer token.
    pub async fn get(&mut self, path: &str, token: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.send("GET", path, &[("authorization", &auth)], None)
            .await
            .unwrap()
    }

    /// POST JSON with a bearer token.
    pub async fn post(&mut self, path: &str, token: &str, body: &str) -> Answer {
        let auth = format!("Bearer {token}");
        self.send(
            "POST",
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Some(body),
        )
        .await
        .unwrap()
    }
}
