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
    spark_daemon::init_logging(spark_daemon::Logging::EnvFilter);
    let config = match spark_pipeline::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-pipeline", &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return spark_daemon::fail("spark-pipeline", &e),
    };
    let result = runtime.block_on(async {
        let store =
            spark_pipeline::Store::connect(&config.database_url(), config.database_connections)
                .await?;
        spark_daemon::notify_ready();
        spark_daemon::spawn_watchdog();
        let stats = if args.until_idle {
            spark_pipeline::drain(store.clone(), config.pipeline).await?
        } else {
            spark_pipeline::run(
                store.clone(),
                config.pipeline,
                spark_daemon::shutdown_signal(),
            )
            .await?
        };
        store.close().await;
        tracing::info!(?stats, "done");
        Ok::<_, spark_pipeline::PipelineError>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => spark_daemon::fail("spark-pipeline", &e),
    }
}
