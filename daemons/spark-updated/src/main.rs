//! `spark-updated`: reads its config, starts logging and runs the agent until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spark_daemon::Logging;

/// Spark's update agent.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "/etc/spark/updated.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    spark_daemon::init_logging(Logging::Level);
    let config = match spark_updated::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-updated", &e),
    };
    // One thread: the agent does one thing at a time and the gateway has one core. Logging is
    // a plain level (RUST_LOG), not EnvFilter directives, to keep the daemon under 6 MB.
    spark_daemon::run(
        "spark-updated",
        tokio::runtime::Builder::new_current_thread(),
        |shutdown, ready| spark_updated::daemon::run(config, shutdown, ready),
    )
}
