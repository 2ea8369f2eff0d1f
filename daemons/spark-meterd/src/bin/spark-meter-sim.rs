//! `spark-meter-sim`: a simulated meter radio module for development and tests (see
//! `spark_meterd::sim`). Serves the module's frames on a Unix socket or a pty.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use spark_meterd::sim::{self, Faults, Module, Pty, RunOptions, SimOptions, Simulator};

/// Simulated meter radio module.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Listen on this Unix socket path (one host at a time).
    #[arg(long, conflicts_with = "pty", required_unless_present = "pty")]
    socket: Option<PathBuf>,
    /// Serve on a new pseudo-terminal; its device path is printed as `pty: PATH`.
    #[arg(long)]
    pty: bool,
    /// Number of meters.
    #[arg(long, default_value_t = 100)]
    meters: usize,
    /// Seed: the same seed gives the same meters and readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop generating after this many intervals (and exit once all are acknowledged).
    #[arg(long)]
    intervals: Option<u64>,
    /// Real milliseconds per scheduled interval (the compressed clock).
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Scheduled seconds between readings (simulated time).
    #[arg(long, default_value_t = 900)]
    schedule_secs: u64,
    /// Unix time of the first reading (default 2026-01-05 00:00 UTC).
    #[arg(long)]
    start: Option<u64>,
    /// Probability that a meter's reading is missed in an interval.
    #[arg(long, default_value_t = 0.01)]
    miss_rate: f64,
    /// Probability that a meter's register resets in an interval.
    #[arg(long, default_value_t = 0.0005)]
    reset_rate: f64,
    /// Probability that a reading is a few seconds late.
    #[arg(long, default_value_t = 0.05)]
    late_rate: f64,
    /// Probability that a meter raises an alarm in an interval.
    #[arg(long, default_value_t = 0.0)]
    alarm_rate: f64,
    /// Probability that a reading frame is damaged on the line (one byte flipped).
    #[arg(long, default_value_t = 0.0)]
    corrupt_rate: f64,
    /// Probability of line noise before a reading frame.
    #[arg(long, default_value_t = 0.0)]
    noise_rate: f64,
    /// Module epoch (a new one means a new or wiped module).
    #[arg(long, default_value_t = 1)]
    epoch: u32,
    /// Append every generated reading to this CSV file (`meter_id,timestamp,wh`).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Stop generating once this file exists (and exit once all are acknowledged), for runs
    /// of open length whose ledger must end up final.
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let defaults = SimOptions::default();
    let options = RunOptions {
        sim: SimOptions {
            meters: args.meters,
            seed: args.seed,
            start: args.start.unwrap_or(defaults.start),
            schedule_secs: args.schedule_secs,
            miss_rate: args.miss_rate,
            reset_rate: args.reset_rate,
            late_rate: args.late_rate,
            alarm_rate: args.alarm_rate,
        },
        interval: Duration::from_millis(args.interval_ms.max(1)),
        intervals: args.intervals,
        stop_file: args.stop_file.clone(),
        ledger: args.ledger.clone(),
        epoch: args.epoch,
    };
    let faults = Faults::new(args.seed, args.corrupt_rate, args.noise_rate);
    let module = Module::new(
        options.epoch,
        Simulator::new(options.sim.clone()).meter_ids(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let serve = {
            let module = module.clone();
            let socket = args.socket.clone();
            let pty = if args.pty {
                let pty = Pty::open().context("cannot open a pty")?;
                println!("pty: {}", pty.slave_path.display());
                std::io::stdout().flush()?;
                Some(pty)
            } else {
                None
            };
            tokio::spawn(async move {
                match (socket, pty) {
                    (_, Some(pty)) => sim::serve_pty(module, pty, faults).await,
                    (Some(path), None) => {
                        sim::serve_unix(module, path, faults, Arc::new(Mutex::new(None))).await
                    }
                    (None, None) => Ok(()),
                }
            })
        };
        sim::generate(&module, &options)
            .await
            .context("cannot write the ledger")?;
        tracing::info!("all intervals generated; waiting until the host has acknowledged them");
        loop {
            if module.all_acked() {
                break;
            }
            if serve.is_finished() {
                serve.await??;
                anyhow::bail!("serving stopped");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let s = module.state();
        tracing::info!(
            readings = s.newest,
            sessions = s.sessions,
            "done: every reading acknowledged"
        );
        anyhow::Ok(())
    })
}
