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
// Later flags win: ci/demo.sh and ci/chaos.sh pass their defaults first and the user's after.
#[command(
    version,
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// The chaos suite: a rollout under random kill -9, power cuts, link faults and cloud
    /// crashes, then the invariants checked (no reading lost or doubled, all on good slots).
    Chaos(ChaosArgs),
}

#[derive(Debug, clap::Args)]
#[command(args_override_self = true)]
struct ChaosArgs {
    /// Output directory; emptied first.
    #[arg(long, default_value = "out/chaos")]
    out: PathBuf,
    #[arg(long, default_value_t = 5)]
    gateways: usize,
    #[arg(long, default_value_t = 20)]
    meters: u32,
    /// Real seconds of fault injection.
    #[arg(long, default_value_t = 300)]
    secs: u64,
    /// Mean real seconds between faults.
    #[arg(long, default_value_t = 2.0)]
    every: f64,
    /// Seed of the fault schedule (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3600)]
    clock_factor: u32,
    /// Bound on settling after the faults stop, in real seconds.
    #[arg(long, default_value_t = 180)]
    settle_secs: u64,
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
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
    if let Some(Cmd::Chaos(c)) = args.command {
        return chaos(c, &stop);
    }
    let args = args.run;
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

fn chaos(c: ChaosArgs, stop: &AtomicBool) -> ExitCode {
    let seed = c.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let opts = spark_fleet::chaos::ChaosOptions {
        out: c.out,
        gateways: c.gateways.max(1),
        meters: c.meters.max(1),
        clock_factor: c.clock_factor.max(1),
        chaos: Duration::from_secs(c.secs),
        interval: Duration::from_secs_f64(c.every.max(0.1)),
        seed,
        settle: Duration::from_secs(c.settle_secs),
        bin_dir: c.bin_dir,
    };
    match spark_fleet::chaos::run(&opts, stop) {
        Ok((summary, _)) if summary.ok() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!(
                "spark-fleet chaos: invariants broken (above; seed {seed}); logs are in {}",
                opts.out.display()
            );
            ExitCode::FAILURE
        }
        Err(e @ spark_fleet::FleetError::Interrupted) => {
            eprintln!("spark-fleet chaos: {e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!(
                "spark-fleet chaos: {e} (seed {seed})\nlogs are in {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_flags_override_the_scripts_defaults() {
        let a =
            Args::try_parse_from(["spark-fleet", "--out", "out/demo/fleet", "--out", "x"]).unwrap();
        assert_eq!(a.run.out, PathBuf::from("x"));
        let a = Args::try_parse_from([
            "spark-fleet",
            "chaos",
            "--gateways",
            "10",
            "--secs",
            "600",
            "--secs",
            "20",
        ])
        .unwrap();
        match a.command {
            Some(Cmd::Chaos(c)) => assert_eq!((c.gateways, c.secs), (10, 20)),
            other => panic!("{other:?}"),
        }
    }
}
