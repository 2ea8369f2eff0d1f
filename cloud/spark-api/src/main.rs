//! `spark-api`: serves the API (`spark-api serve`) or manages its bearer tokens
//! (`spark-api token create|list|revoke`). The library does the work.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Spark's HTTP API for internal systems (mutual TLS + scoped bearer tokens).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Config file (TOML).
    #[arg(long, global = true, default_value = "/etc/spark/api.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the API (the default).
    Serve,
    /// Manage bearer tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create a token and print it once (only its hash is kept).
    Create {
        /// A name for the system that will use it (e.g. billing).
        name: String,
        /// read (every GET) and/or command (POST commands); repeat for both.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (names, scopes, dates; never the tokens).
    List,
    /// Revoke a token by name; requests with it get 401 from then on.
    Revoke { name: String },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match spark_api::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return spark_daemon::fail("spark-api", &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return spark_daemon::fail("spark-api", &e),
    };
    let result = runtime.block_on(async {
        match args.command.unwrap_or(Cmd::Serve) {
            Cmd::Serve => serve(config).await,
            Cmd::Token(cmd) => token(config, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => spark_daemon::fail("spark-api", e.as_ref()),
    }
}

async fn serve(config: spark_api::Config) -> Result<(), Box<dyn std::error::Error>> {
    spark_daemon::spawn_watchdog();
    let shutdown = async {
        spark_daemon::shutdown_signal().await;
        tracing::info!("shutdown requested");
    };
    spark_api::run(config, shutdown, spark_daemon::notify_ready).await?;
    Ok(())
}

async fn token(config: spark_api::Config, cmd: TokenCmd) -> Result<(), Box<dyn std::error::Error>> {
    let tokens = spark_api::open_tokens(&config).await?;
    match cmd {
        TokenCmd::Create { name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| s.parse())
                .collect::<Result<Vec<spark_api::Scope>, _>>()?;
            let (info, token) = tokens.create(&name, &scopes).await?;
            let scopes: Vec<_> = info.scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "token {:?} created with scopes {}; it is shown once, store it now:",
                info.name,
                scopes.join(", ")
            );
            println!("{token}");
        }
        TokenCmd::List => {
            println!(
                "{:<4} {:<24} {:<14} {:<12} revoked_at",
                "id", "name", "scopes", "created_at"
            );
            for t in tokens.list().await? {
                let scopes: Vec<_> = t.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{:<4} {:<24} {:<14} {:<12} {}",
                    t.id,
                    t.name,
                    scopes.join(","),
                    t.created_at,
                    t.revoked_at
                        .map_or_else(|| "-".to_owned(), |r| r.to_string())
                );
            }
        }
        TokenCmd::Revoke { name } => {
            tokens.revoke(&name).await?;
            eprintln!("token {name:?} revoked");
        }
    }
    tokens.close().await;
    Ok(())
}
