//! `spark-ingest`: reads its config, starts logging and runs the ingest service until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spark_daemon::Logging;

/// Spark's cloud telemetry ingest: gateways connect over mutual TLS and stream meter readings.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "/etc/spark/ingest.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    spark_daemon::init_logging(Logging::EnvFilter);
    let config = match spark_ingest::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-ingest", &e),
    };
    // Many threads: thousands of gateway connections and database commits in parallel.
    spark_daemon::run(
        "spark-ingest",
        tokio::runtime::Builder::new_multi_thread(),
        |shutdown, ready| spark_ingest::run(config, shutdown, ready),
    )
}
