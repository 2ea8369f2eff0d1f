//! Benchmarks 2 and 3 of issue 3: ingest throughput into PostgreSQL against `psql \copy`, and
//! memory per idle mutual-TLS connection. Both run the real `spark-ingest` binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use spark_proto::Message;
use sqlx::Connection;
use tokio::sync::Semaphore;

use crate::gateway::{SimGateway, register, roster};
use crate::procs::{Proc, free_port, wait_listening};

/// 2026-11-02T00:00:00Z: the simulated day starts here.
const T0: u64 = 1_793_577_600;

#[derive(Debug, clap::Args)]
pub struct RateArgs {
    /// Concurrent simulated gateways.
    #[arg(long, default_value_t = 100)]
    gateways: usize,
    /// Meters per gateway.
    #[arg(long, default_value_t = 1000)]
    meters: u32,
    /// 15-minute intervals each gateway sends (one batch per interval).
    #[arg(long, default_value_t = 24)]
    intervals: u64,
    /// Batches a gateway keeps in flight before waiting for an Ack.
    #[arg(long, default_value_t = 8)]
    window: u64,
    /// PostgreSQL server (a schema of its own is created and dropped).
    #[arg(
        long,
        env = "SPARK_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
}

#[derive(Debug, clap::Args)]
pub struct IdleArgs {
    /// Idle connections to hold open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Meters in each gateway's roster (ingest keeps per-meter codec state per connection).
    #[arg(long, default_value_t = 100)]
    meters: usize,
}

/// The dev PKI and `n` device certificates, with a client config per gateway.
struct BenchPki {
    _dir: tempfile::TempDir,
    pki: spark_keys::DevPki,
    clients: Vec<Arc<rustls::ClientConfig>>,
}

fn bench_pki(n: usize) -> anyhow::Result<BenchPki> {
    let dir = tempfile::tempdir()?;
    let pki = spark_keys::init_dev(dir.path(), &spark_keys::DevPkiOptions::default())?;
    let mut clients = Vec::with_capacity(n);
    for g in 0..n {
        let serial = gateway_name(g);
        spark_keys::issue_device(dir.path(), &serial, false)?;
        clients.push(Arc::new(spark_tls::client_config(
            &pki.server_ca_cert(),
            &pki.device_cert(&serial),
            &pki.device_key(&serial),
        )?));
    }
    Ok(BenchPki {
        _dir: dir,
        pki,
        clients,
    })
}

fn gateway_name(g: usize) -> String {
    format!("GW-{g:05}")
}

/// Starts the real spark-ingest on a free port with `database`, `max` connections.
async fn start_ingest(
    pki: &spark_keys::DevPki,
    work: &Path,
    database: Option<&str>,
    max: usize,
) -> anyhow::Result<(Proc, std::net::SocketAddr, PathBuf)> {
    let port = free_port()?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let database = database
        .map(|url| format!("database = {url:?}\n"))
        .unwrap_or_default();
    let config = format!(
        "listen = \"{addr}\"\ndata-dir = {data:?}\n{database}max-connections = {max}\n\
         [pipeline]\nenabled = false\n[tls]\ncert = {cert:?}\nkey = {key:?}\ndevice-ca = {ca:?}\n",
        data = work.join("data"),
        cert = pki.server_cert(),
        key = pki.server_key(),
        ca = pki.device_ca_cert(),
    );
    let config_path = work.join("ingest.toml");
    std::fs::write(&config_path, config)?;
    let log = work.join("ingest.log");
    let mut proc = Proc::spawn(
        "spark-ingest",
        &["--config", config_path.to_str().context("UTF-8 path")?],
        &log,
    )?;
    wait_listening(addr, &mut proc, &log).await?;
    Ok((proc, addr, log))
}

/// One gateway sending `intervals` batches with up to `window` in flight; returns readings sent.
async fn send_day(
    g: usize,
    mut gw: SimGateway,
    meters: u32,
    intervals: u64,
    window: u64,
) -> anyhow::Result<u64> {
    let (mut sent, mut acked) = (0u64, 0u64);
    while acked < intervals {
        while sent < intervals && sent - acked < window {
            let batch = gw.interval_batch(g, sent + 1, T0, sent, meters)?;
            gw.send(&batch).await?;
            sent += 1;
        }
        match gw.recv().await? {
            Some(Message::Ack(ack)) => acked = acked.max(ack.seq),
            Some(Message::Ping(p)) => {
                gw.send(&Message::Pong(spark_proto::Pong { nonce: p.nonce }))
                    .await?
            }
            Some(other) => bail!("gateway {g}: unexpected {other:?}"),
            None => bail!("gateway {g}: ingest closed the connection after ack {acked}"),
        }
    }
    Ok(intervals * u64::from(meters))
}

pub async fn rate(args: RateArgs) -> anyhow::Result<()> {
    let total = args.gateways as u64 * u64::from(args.meters) * args.intervals;
    println!(
        "ingest-rate: {} gateways x {} meters x {} intervals = {total} readings",
        args.gateways, args.meters, args.intervals
    );
    let pki = bench_pki(args.gateways)?;
    let work = tempfile::tempdir()?;

    let schema = format!("bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&args.postgres)
        .await
        .with_context(|| format!("connect to {}", args.postgres))?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let sep = if args.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}options[search_path]={schema}", args.postgres);
    let result = rate_in_schema(&args, &pki, work.path(), &url, &schema, total).await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    result
}

async fn rate_in_schema(
    args: &RateArgs,
    pki: &BenchPki,
    work: &Path,
    url: &str,
    schema: &str,
    total: u64,
) -> anyhow::Result<()> {
    let (ingest, addr, _log) = start_ingest(&pki.pki, work, Some(url), args.gateways + 16).await?;

    // Connect everyone first: the figure is the steady-state ingest rate, not handshakes.
    let mut gateways = Vec::with_capacity(args.gateways);
    for (g, tls) in pki.clients.iter().enumerate() {
        let roster = roster(&gateway_name(g), args.meters as usize);
        let (gw, _) = SimGateway::open(addr, tls.clone(), &roster).await?;
        gateways.push(gw);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (g, gw) in gateways.into_iter().enumerate() {
        tasks.spawn(send_day(g, gw, args.meters, args.intervals, args.window));
    }
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        sent += done??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let ingest_rss = ingest.peak_rss_kib().unwrap_or(0);
    drop(ingest);

    let mut conn = sqlx::PgConnection::connect(url).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&mut conn)
        .await?;
    if stored as u64 != total || sent != total {
        bail!("ingest stored {stored} readings of {total} sent ({sent})");
    }

    // The peer: the same rows, as CSV, through psql's \copy into the same (emptied) table.
    sqlx::query("TRUNCATE readings").execute(&mut conn).await?;
    let csv = work.join("readings.csv");
    write_csv(&csv, args)?;
    let base = url.split('?').next().unwrap_or(url);
    let copy = format!(
        "\\copy readings(gateway, meter_id, ts, wh) FROM '{}' WITH (FORMAT csv)",
        csv.display()
    );
    let started = Instant::now();
    let out = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", base])
        .args(["-c", &format!("SET search_path TO {schema}"), "-c", &copy])
        .output()
        .await
        .context("run psql (Debian package postgresql-client)")?;
    let copy_secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "psql \\copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&mut conn)
        .await?;
    if copied as u64 != total {
        bail!("psql copied {copied} rows of {total}");
    }

    let ingest_rate = total as f64 / ingest_secs;
    let copy_rate = total as f64 / copy_secs;
    println!("| path | readings | seconds | readings/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| spark-ingest, {} gateways over mutual TLS | {total} | {ingest_secs:.2} | {ingest_rate:.0} |",
        args.gateways
    );
    println!("| psql \\copy (CSV) of the same rows | {total} | {copy_secs:.2} | {copy_rate:.0} |");
    println!(
        "ratio ingest / copy: {:.2}x (goal >= 0.7x); ingest peak RSS {:.1} MiB",
        ingest_rate / copy_rate,
        ingest_rss as f64 / 1024.0
    );
    Ok(())
}

fn write_csv(path: &Path, args: &RateArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for g in 0..args.gateways {
        let name = gateway_name(g);
        let roster = roster(&name, args.meters as usize);
        for i in 0..args.intervals {
            let ts = time::OffsetDateTime::from_unix_timestamp((T0 + i * 900) as i64)?;
            let ts = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
                ts.year(),
                ts.month() as u8,
                ts.day(),
                ts.hour(),
                ts.minute(),
                ts.second()
            );
            for (m, meter) in roster.meters.iter().enumerate() {
                writeln!(
                    out,
                    "{name},{},{ts},{}",
                    String::from_utf8_lossy(meter),
                    register(g, m as u32, i)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    println!(
        "idle-conns: {} mutual-TLS gateway connections, {} meters per roster, SQLite store",
        args.connections, args.meters
    );
    let pki = bench_pki(args.connections)?;
    let work = tempfile::tempdir()?;
    let (mut ingest, addr, log) =
        start_ingest(&pki.pki, work.path(), None, args.connections + 16).await?;

    // Warm-up: one gateway in and out, so lazily built state (database pool, TLS tickets) is
    // in the baseline, not charged to the connections.
    {
        let (_gw, _) =
            SimGateway::open(addr, pki.clients[0].clone(), &roster("WARM", args.meters)).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ingest.rss_kib()?;

    let limit = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for (g, tls) in pki.clients.iter().enumerate() {
        let (tls, limit) = (tls.clone(), limit.clone());
        let roster = roster(&gateway_name(g), args.meters);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let (gw, _) = SimGateway::open(addr, tls, &roster).await?;
            anyhow::Ok(gw)
        });
    }
    let mut open = Vec::with_capacity(args.connections);
    while let Some(done) = tasks.join_next().await {
        open.push(done.context("connect task")??);
    }
    // Let ingest store the rosters and settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ingest.rss_kib()?;
    let connected = open.len();
    let still_up = ingest.pid().is_ok();
    ingest.terminate().await;
    drop(open);
    if !still_up || connected != args.connections {
        bail!(
            "only {connected} connections; ingest log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / connected as f64;
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!("| ingest RSS before | {:.1} MiB |", before as f64 / 1024.0);
    println!(
        "| ingest RSS with {connected} idle connections | {:.1} MiB |",
        after as f64 / 1024.0
    );
    println!(
        "| per idle connection | {:.1} KB (goal <= 16 KB) |",
        per_conn / 1000.0
    );
    Ok(())
}
