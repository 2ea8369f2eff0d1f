//! `spark-webui`: reads its config, starts logging and serves the status page until SIGTERM;
//! `spark-webui set-password` sets the site password from standard input.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spark_daemon::Logging;

/// Spark's on-site status page (HTTPS).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, global = true, default_value = "/etc/spark/webui.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sets the site password: reads one line from standard input (e.g. `read -s p; echo "$p" |
    /// spark-webui set-password`) and stores its Argon2id hash in the data directory.
    SetPassword,
}

fn main() -> ExitCode {
    let args = Args::parse();
    spark_daemon::init_logging(Logging::Level);
    let config = match spark_webui::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-webui", &e),
    };
    match args.command {
        Some(Command::SetPassword) => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!(
                    "Type the new site password (at least {} characters) and press Enter:",
                    spark_webui::password::MIN_LENGTH
                );
            }
            match spark_webui::set_password(&config, &mut std::io::stdin().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => spark_daemon::fail("spark-webui set-password", &e),
            }
        }
        // One thread: a handful of browsers and a few D-Bus reads; memory is the constraint.
        None => spark_daemon::run(
            "spark-webui",
            tokio::runtime::Builder::new_current_thread(),
            |shutdown, ready| spark_webui::run(config, shutdown, ready),
        ),
    }
}
