//! `spark-pipeline-bench`: the data pipeline's throughput against ingest's on the same data, in
//! one run (issue 8, section 3). Runs the real binaries from the same target directory
//! (`cargo build --release -p spark-ingest -p spark-pipeline -p spark-pipeline-bench` first):
//!
//! 1. `spark-ingest` on a PostgreSQL schema of its own; N simulated gateways send M meters × I
//!    15-minute intervals over mutual TLS: ingest readings/s (first byte to last Ack).
//! 2. `spark-pipeline --until-idle` on the same database: pipeline readings/s (start to exit,
//!    migrations included), checked: every reading consumed, hourly sums = register deltas.

// The simulated gateway of bench/telemetry, shared as a source file: that crate is a binary, so it
// cannot be a dependency, and one protocol-level gateway is enough for both benchmarks.
#[path = "../../telemetry/src/gateway.rs"]
mod gateway;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use spark_proto::Message;
use sqlx::Connection;

use crate::gateway::{SimGateway, register, roster};

/// 2026-11-02T00:00:00Z.
const T0: u64 = 1_793_577_600;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "spark-pipeline readings/s against spark-ingest readings/s"
)]
struct Args {
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
    /// Pipeline workers (batches in flight).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Pipeline batch size (readings).
    #[arg(long, default_value_t = 50_000)]
    batch_readings: u64,
    /// PostgreSQL server (a schema of its own is created and dropped).
    #[arg(
        long,
        env = "SPARK_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A binary of this workspace next to this one.
fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locate the benchmark binary")?;
    let path = me.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first (cargo build --release -p {name})",
            path.display()
        );
    }
    Ok(path)
}

fn gateway_name(g: usize) -> String {
    format!("GW-{g:05}")
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let total = args.gateways as u64 * u64::from(args.meters) * args.intervals;
    println!(
        "pipeline bench: {} gateways x {} meters x {} intervals = {total} readings (PostgreSQL)",
        args.gateways, args.meters, args.intervals
    );
    let schema = format!("pbench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&args.postgres)
        .await
        .with_context(|| format!("connect to {}", args.postgres))?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await?;
    let sep = if args.postgres.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}options[search_path]={schema}", args.postgres);
    let work = tempfile::tempdir()?;
    let result = run(&args, work.path(), &url, total).await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&mut admin)
        .await?;
    result
}

async fn run(args: &Args, work: &Path, url: &str, total: u64) -> anyhow::Result<()> {
    // The PKI: server certificate and one device certificate per gateway.
    let pki_dir = work.join("pki");
    let pki = spark_keys::init_dev(&pki_dir, &spark_keys::DevPkiOptions::default())?;
    let mut clients = Vec::with_capacity(args.gateways);
    for g in 0..args.gateways {
        let serial = gateway_name(g);
        spark_keys::issue_device(&pki_dir, &serial, false)?;
        clients.push(Arc::new(spark_tls::client_config(
            &pki.server_ca_cert(),
            &pki.device_cert(&serial),
            &pki.device_key(&serial),
        )?));
    }

    // 1. Ingest.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let ingest_config = work.join("ingest.toml");
    std::fs::write(
        &ingest_config,
        format!(
            "listen = \"{addr}\"\ndata-dir = {:?}\ndatabase = {url:?}\nmax-connections = {}\n\
             [pipeline]\nenabled = false\n[tls]\ncert = {:?}\nkey = {:?}\ndevice-ca = {:?}\n",
            work.join("data"),
            args.gateways + 16,
            pki.server_cert(),
            pki.server_key(),
            pki.device_ca_cert(),
        ),
    )?;
    let log = std::fs::File::create(work.join("ingest.log"))?;
    let mut ingest = tokio::process::Command::new(workspace_binary("spark-ingest")?)
        .arg("--config")
        .arg(&ingest_config)
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("start spark-ingest")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(status) = ingest.try_wait()? {
            bail!(
                "spark-ingest exited with {status}: see {}",
                work.join("ingest.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!("spark-ingest did not listen within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut gateways = Vec::with_capacity(args.gateways);
    for (g, tls) in clients.iter().enumerate() {
        let r = roster(&gateway_name(g), args.meters as usize);
        let (gw, _) = SimGateway::open(addr, tls.clone(), &r).await?;
        gateways.push(gw);
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (g, gw) in gateways.into_iter().enumerate() {
        tasks.spawn(send_all(g, gw, args.meters, args.intervals, args.window));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let _ = ingest.start_kill();
    let _ = ingest.wait().await;

    // 2. The pipeline over the same rows.
    let pipeline_config = work.join("pipeline.toml");
    std::fs::write(
        &pipeline_config,
        format!(
            "database = {url:?}\nworkers = {}\nbatch-readings = {}\ndatabase-connections = {}\n",
            args.workers,
            args.batch_readings,
            args.workers + 2
        ),
    )?;
    let started = Instant::now();
    let status = tokio::process::Command::new(workspace_binary("spark-pipeline")?)
        .arg("--config")
        .arg(&pipeline_config)
        .arg("--until-idle")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .status()
        .await
        .context("run spark-pipeline")?;
    let pipeline_secs = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("spark-pipeline --until-idle failed: {status}");
    }

    // Checks: every reading consumed; the hourly sums are the registers' growth.
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let consumed: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(readings), 0)::bigint FROM pipeline_cursors")
            .fetch_one(&mut conn)
            .await?;
    if consumed as u64 != total {
        bail!("the pipeline consumed {consumed} readings of {total}");
    }
    let summed: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(wh), 0)::bigint FROM consumption_hourly")
            .fetch_one(&mut conn)
            .await?;
    let expected: i64 = (0..args.gateways)
        .flat_map(|g| (0..args.meters).map(move |m| (g, m)))
        .map(|(g, m)| register(g, m, args.intervals - 1) as i64 - register(g, m, 0) as i64)
        .sum();
    if summed != expected {
        bail!("hourly consumption sums to {summed} Wh, the registers grew by {expected} Wh");
    }

    let ingest_rate = total as f64 / ingest_secs;
    let pipeline_rate = total as f64 / pipeline_secs;
    println!("| stage | readings | seconds | readings/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| spark-ingest, {} gateways over mutual TLS into PostgreSQL | {total} | {ingest_secs:.2} | {ingest_rate:.0} |",
        args.gateways
    );
    println!(
        "| spark-pipeline --until-idle ({} workers, batches of {}) | {total} | {pipeline_secs:.2} | {pipeline_rate:.0} |",
        args.workers, args.batch_readings
    );
    println!(
        "\npipeline / ingest = {:.2}x (goal >= 0.5x)",
        pipeline_rate / ingest_rate
    );
    Ok(())
}

/// One gateway sending `intervals` batches with up to `window` in flight.
async fn send_all(
    g: usize,
    mut gw: SimGateway,
    meters: u32,
    intervals: u64,
    window: u64,
) -> anyhow::Result<()> {
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
    Ok(())
}
