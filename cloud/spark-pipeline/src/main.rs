//! `spark-pipeline`: reads its config, starts logging and runs the data pipeline until SIGTERM
//! (or, with `--until-idle`, until everything stored is consumed).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Spark's data pipeline: meter readings stored by spark-ingest → hourly and daily consumption
/// and grid events, exactly once.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, default_value = "/etc/spark/pipeline.toml")]
    config: PathBuf,
    /// Consume everything stored now, then exit (a catch-up job instead of a service).
    #[arg(long)]
    until_idle: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = match spark_pipeline::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let result = runtime.block_on(async {
        let store =
            spark_pipeline::Store::connect(&config.database_url(), config.database_connections)
                .await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        if let Some(period) = watchdog_period() {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                }
            });
        }
        let stats = if args.until_idle {
            spark_pipeline::drain(store.clone(), config.pipeline).await?
        } else {
            spark_pipeline::run(store.clone(), config.pipeline, shutdown()).await?
        };
        store.close().await;
        tracing::info!(?stats, "done");
        Ok::<_, spark_pipeline::PipelineError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Half the systemd watchdog timeout, if the unit has one.
fn watchdog_period() -> Option<std::time::Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then(|| std::time::Duration::from_micros(usec / 2))
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
    let mut text = format!("spark-pipeline: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    eprintln!("{text}");
    ExitCode::FAILURE
}
