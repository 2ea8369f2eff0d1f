//! `spark-uplinkd`: reads its config, starts logging and runs the uplink until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spark_daemon::Logging;

/// Spark's store-and-forward uplink to the cloud.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "/etc/spark/uplinkd.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    spark_daemon::init_logging(Logging::EnvFilter);
    let config = match spark_uplinkd::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-uplinkd", &e),
    };
    // One thread: the gateway has one core, and one thread keeps the RSS small.
    spark_daemon::run(
        "spark-uplinkd",
        tokio::runtime::Builder::new_current_thread(),
        |shutdown, ready| spark_uplinkd::run(config, shutdown, ready),
    )
}
