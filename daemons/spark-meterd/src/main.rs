//! `spark-meterd`: reads its config, starts logging and runs the daemon until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spark_daemon::Logging;

/// Spark's meter radio daemon (io.spark.Meters1).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "/etc/spark/meterd.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    spark_daemon::init_logging(Logging::EnvFilter);
    let config = match spark_meterd::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-meterd", &e),
    };
    // One thread: a serial line and a few D-Bus calls; memory is the constraint, not CPU.
    spark_daemon::run(
        "spark-meterd",
        tokio::runtime::Builder::new_current_thread(),
        |shutdown, ready| spark_meterd::run(config, shutdown, ready),
    )
}
