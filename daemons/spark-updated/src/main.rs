//! `spark-updated`: reads its config, starts logging and runs the agent until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

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
    // A plain level from RUST_LOG (error, warn, info, debug, trace; default info) rather than
    // tracing-subscriber's EnvFilter: its directive parser and regex engine are ~1 MiB of code
    // that would sit in the resident set of a daemon meant to stay under 6 MB.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| {
            v.trim()
                .parse::<tracing_subscriber::filter::LevelFilter>()
                .ok()
        })
        .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::fmt().with_max_level(level).init();
    let config = match spark_updated::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // One thread: the agent does one thing at a time and the gateway has one core.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        if let Some(period) = watchdog_period() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            });
        }
        spark_updated::daemon::run(config, shutdown(), || {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        })
        .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Half the systemd watchdog timeout, if the unit has one.
fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints the error with its whole chain of causes.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut text = format!("spark-updated: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{text}");
    ExitCode::FAILURE
}
