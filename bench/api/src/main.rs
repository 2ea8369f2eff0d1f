//! spark-api-bench: latency (p50/p99) of spark-api for one meter's day and one gateway's week of
//! readings, over real mutual TLS against SQLite or PostgreSQL.
//!
//! The database gets ingest's tables (`spark_ingest::Store::connect`) and readings every 15
//! minutes for `--gateways` × `--meters` meters over `--days` days, generated in SQL. The API
//! runs in-process on 127.0.0.1; one client with a kept-alive connection asks, one request at a
//! time, for a random meter's day (a JSON page of 96 readings) and a random gateway's week (the
//! NDJSON stream: meters × 672 readings), and prints the latency distribution of each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

/// spark-api latency for one meter's day and one gateway's week.
#[derive(Debug, Parser)]
struct Args {
    /// `sqlite` (a file in a tempdir) or `postgres`.
    #[arg(long, default_value = "postgres")]
    backend: String,
    /// PostgreSQL server (a schema of its own is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    #[arg(long, default_value_t = 10)]
    gateways: u32,
    #[arg(long, default_value_t = 250)]
    meters: u32,
    #[arg(long, default_value_t = 14)]
    days: u32,
    /// Requests for a meter's day.
    #[arg(long, default_value_t = 300)]
    day_requests: u32,
    /// Requests for a gateway's week.
    #[arg(long, default_value_t = 30)]
    week_requests: u32,
}

/// 2026-11-02T00:00:00Z.
const T0: i64 = 1_793_577_600;
const DAY: i64 = 86_400;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let pki = spark_keys::init_dev(dir.path(), &spark_keys::DevPkiOptions::default())?;
    let (url, schema) = match args.backend.as_str() {
        "sqlite" => (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("ingest.db").display()
            ),
            None,
        ),
        "postgres" => {
            let schema = format!("bench_{:08x}", std::process::id());
            let mut c = sqlx::PgConnection::connect(&args.postgres).await?;
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut c)
                .await?;
            let sep = if args.postgres.contains('?') {
                '&'
            } else {
                '?'
            };
            (
                format!("{}{sep}options[search_path]={schema}", args.postgres),
                Some(schema),
            )
        }
        other => bail!("--backend {other}: use sqlite or postgres"),
    };
    let result = run(&args, &url, dir.path(), &pki).await;
    if let Some(schema) = schema {
        let mut c = sqlx::PgConnection::connect(&args.postgres).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut c)
            .await?;
    }
    result
}

async fn run(
    args: &Args,
    url: &str,
    dir: &std::path::Path,
    pki: &spark_keys::DevPki,
) -> anyhow::Result<()> {
    let store = spark_ingest::Store::connect(url).await?;
    store.close().await;
    let rows = u64::from(args.gateways) * u64::from(args.meters) * u64::from(args.days) * 96;
    eprintln!(
        "loading {rows} readings ({} gateways × {} meters × {} days, every 15 min) into {}",
        args.gateways, args.meters, args.days, args.backend
    );
    let started = Instant::now();
    load(args, url).await?;
    eprintln!("loaded in {:.1} s", started.elapsed().as_secs_f64());

    let tokens_url = format!("sqlite://{}?mode=rwc", dir.join("api.db").display());
    let tokens = spark_api::Tokens::connect(&tokens_url, 2).await?;
    let (_, token) = tokens.create("bench", &[spark_api::Scope::Read]).await?;
    let db = spark_api::db::Db::connect(url, 8).await?;
    let app = spark_api::router(spark_api::AppState {
        db,
        tokens,
        ingest: None,
    });
    let tls =
        spark_tls::server_config(&pki.server_cert(), &pki.server_key(), &pki.server_ca_cert())?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(spark_api::serve(
        listener,
        spark_api::ServeConfig::new(tls, vec![]),
        app,
        std::future::pending(),
    ));
    let (cert, key) = spark_keys::issue_service(dir, "bench", true)?;
    let client_tls = Arc::new(spark_tls::client_config(
        &pki.server_ca_cert(),
        &cert,
        &key,
    )?);
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let stream = TlsConnector::from(client_tls).connect(name, tcp).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let auth = format!("Bearer {token}");

    // A small deterministic generator: the same requests every run.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % u64::from(n.max(1))) as i64
    };
    let mut get = async |path: String, accept: &'static str| -> anyhow::Result<(Duration, usize)> {
        sender.ready().await?;
        let req = hyper::Request::builder()
            .uri(&path)
            .header("host", "localhost")
            .header("authorization", &auth)
            .header("accept", accept)
            .body(Full::new(Bytes::new()))?;
        let t = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let took = t.elapsed();
        if !status.is_success() {
            bail!("{path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok((took, body.len()))
    };

    // Warm-up (connection pools, caches).
    for _ in 0..10 {
        get(
            format!("/v1/meters/MTR-0-0/readings?from={T0}&to={}", T0 + DAY),
            "application/json",
        )
        .await?;
    }
    let mut day = Vec::new();
    let mut day_rows = 0;
    for _ in 0..args.day_requests {
        let (g, m, d) = (next(args.gateways), next(args.meters), next(args.days));
        let from = T0 + d * DAY;
        let path = format!(
            "/v1/meters/MTR-{g}-{m}/readings?from={from}&to={}&limit=10000",
            from + DAY
        );
        let (took, bytes) = get(path, "application/json").await?;
        day.push(took);
        day_rows = bytes;
    }
    let mut week = Vec::new();
    let mut week_bytes = 0;
    let weeks = (args.days / 7).max(1);
    for _ in 0..args.week_requests {
        let (g, w) = (next(args.gateways), next(weeks));
        let from = T0 + w * 7 * DAY;
        let path = format!(
            "/v1/gateways/GW-{g}/readings?from={from}&to={}",
            from + 7 * DAY
        );
        let (took, bytes) = get(path, "application/x-ndjson").await?;
        week.push(took);
        week_bytes = bytes;
    }
    let week_readings = u64::from(args.meters) * 7 * 96;
    println!(
        "spark-api latency, {} backend, {rows} readings in the database, mutual TLS, one kept-alive connection",
        args.backend
    );
    println!(
        "  one meter's day   (96 readings, JSON page, {day_rows} B):          p50 {:>8.2} ms  p99 {:>8.2} ms  ({} requests)",
        pct(&mut day, 50.0),
        pct(&mut day, 99.0),
        day.len()
    );
    println!(
        "  one gateway's week ({week_readings} readings, NDJSON stream, {:.1} MB): p50 {:>8.2} ms  p99 {:>8.2} ms  ({} requests, {:.0} readings/s at p50)",
        week_bytes as f64 / 1e6,
        pct(&mut week, 50.0),
        pct(&mut week, 99.0),
        week.len(),
        week_readings as f64 / (pct(&mut week, 50.0) / 1000.0)
    );
    Ok(())
}

/// The `p`th percentile in milliseconds (nearest rank).
fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    let i = rank.clamp(1, samples.len()) - 1;
    samples[i].as_secs_f64() * 1000.0
}

/// Generates the rows in SQL (gateways `GW-g`, meters `MTR-g-m`, registers growing per meter).
async fn load(args: &Args, url: &str) -> anyhow::Result<()> {
    let intervals = i64::from(args.days) * 96;
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await?;
        sqlx::raw_sql("PRAGMA synchronous=OFF")
            .execute(&mut c)
            .await?;
        for g in 0..args.gateways {
            sqlx::query(
                "INSERT INTO gateways (gateway, first_seen, last_seen, firmware_version, booted_slot) \
                 VALUES (?1, ?2, ?2, '2026.11.3', 'A')",
            )
            .bind(format!("GW-{g}"))
            .bind(T0)
            .execute(&mut c)
            .await?;
            let mut tx = c.begin().await?;
            sqlx::query(
                "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i + 1 < ?2) \
                 INSERT INTO roster_meters (gateway, position, meter_id) \
                 SELECT 'GW-' || ?1, i, 'MTR-' || ?1 || '-' || i FROM m",
            )
            .bind(g)
            .bind(args.meters)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i + 1 < ?2), \
                 t(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM t WHERE j + 1 < ?3) \
                 INSERT INTO readings (gateway, meter_id, ts, wh) \
                 SELECT 'GW-' || ?1, 'MTR-' || ?1 || '-' || i, ?4 + j * 900, i * 1000000 + j * (40 + i % 7) \
                 FROM m, t ORDER BY i, j",
            )
            .bind(g)
            .bind(args.meters)
            .bind(intervals)
            .bind(T0)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        sqlx::raw_sql("ANALYZE").execute(&mut c).await?;
    } else {
        let mut c = sqlx::PgConnection::connect(url).await?;
        for g in 0..args.gateways {
            sqlx::query(
                "INSERT INTO gateways (gateway, first_seen, last_seen, firmware_version, booted_slot) \
                 VALUES ($1, to_timestamp($2), to_timestamp($2), '2026.11.3', 'A')",
            )
            .bind(format!("GW-{g}"))
            .bind(T0)
            .execute(&mut c)
            .await?;
            sqlx::query(
                "INSERT INTO roster_meters (gateway, position, meter_id) \
                 SELECT 'GW-' || $1::int, i, 'MTR-' || $1::int || '-' || i FROM generate_series(0, $2::int - 1) i",
            )
            .bind(g as i32)
            .bind(args.meters as i32)
            .execute(&mut c)
            .await?;
            sqlx::query(
                "INSERT INTO readings (gateway, meter_id, ts, wh) \
                 SELECT 'GW-' || $1::int, 'MTR-' || $1::int || '-' || i, to_timestamp($3::bigint + j * 900), \
                        i::bigint * 1000000 + j * (40 + i % 7) \
                 FROM generate_series(0, $2::int - 1) i, generate_series(0, $4::int - 1) j ORDER BY i, j",
            )
            .bind(g as i32)
            .bind(args.meters as i32)
            .bind(T0)
            .bind(intervals as i32)
            .execute(&mut c)
            .await
            .context("generating readings")?;
        }
        sqlx::raw_sql("ANALYZE").execute(&mut c).await?;
    }
    Ok(())
}
