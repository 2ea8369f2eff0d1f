//! `spark-fleet`: the whole of Spark on one machine (see the library's `run` module).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

/// Fleet in a box: cloud services, signed releases and simulated gateways running the real
/// daemons on the real rauc service; a time-compressed weekly rollout with one unit rolling back.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Output directory (PKI with private keys, configs, databases, logs); emptied first.
    #[arg(long, default_value = "out/fleet")]
    out: PathBuf,
    /// Number of gateways.
    #[arg(long, default_value_t = 5)]
    gateways: usize,
    /// Meters per gateway.
    #[arg(long, default_value_t = 20)]
    meters: u32,
    /// Rollout time runs this many times faster than real time (3600: a second is an hour).
    #[arg(long, default_value_t = 3600)]
    clock_factor: u32,
    /// Rollout plan: weekly, fast, or waves like "10%@0d,100%@1d".
    #[arg(long, default_value = "weekly")]
    plan: String,
    /// Give up when the rollout has not finished after this many real seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// After the summary, keep everything running (dashboard, gateways) until Ctrl-C.
    #[arg(long)]
    stay: bool,
    /// Directory of the Spark binaries (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,zbus=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let opts = spark_fleet::run::RunOptions {
        out: args.out,
        gateways: args.gateways.max(1),
        meters: args.meters.max(1),
        clock_factor: args.clock_factor.max(1),
        plan: args.plan,
        timeout: Duration::from_secs(args.timeout_secs),
        stay: args.stay,
        bin_dir: args.bin_dir,
    };
    match spark_fleet::run::run(&opts, stop) {
        Ok(summary) if summary.ok() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!(
                "spark-fleet: some checks failed (above); logs are in {}",
                opts.out.display()
            );
            ExitCode::FAILURE
        }
        Err(e @ spark_fleet::FleetError::Interrupted) => {
            eprintln!("spark-fleet: {e}");
            // 128 + SIGINT, as shells report a job ended by Ctrl-C.
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!(
                "spark-fleet: {e}\nlogs are in {} (cloud/*.log, gateways/*/logs/)",
                opts.out.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM set `stop`; the job then stops every process it started.
fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("\nstopping every process of the fleet…");
            stop.store(true, Ordering::SeqCst);
        });
    });
}
