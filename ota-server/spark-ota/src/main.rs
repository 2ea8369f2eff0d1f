//! `spark-ota`: the OTA server (`serve`) and its admin CLI. Parses flags, starts logging, calls
//! the library, prints the whole error chain and exits non-zero on failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use spark_ota::cli;
use spark_ota::client::{AdminClient, Credentials};

/// Spark's OTA server: release catalog, device check-in and downloads, rollouts.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (device API on `listen`, admin API on `admin-listen`).
    Serve {
        /// Config file (TOML).
        #[arg(long, default_value = "/etc/spark/ota.toml")]
        config: PathBuf,
    },
    /// Admin tokens (written straight into the server's database).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Releases: a verified bundle with its signed release manifest.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Rollouts of a release to the fleet.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Devices that checked in.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Bytes of bundles served, per rollout or per device.
    DataCost {
        #[command(flatten)]
        admin: AdminArgs,
        /// Per device instead of per rollout.
        #[arg(long)]
        by_device: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Create an admin token and print it once (only its SHA-256 is stored).
    Create {
        #[arg(long, default_value = "/etc/spark/ota.toml")]
        config: PathBuf,
        /// A name for the token (who or what uses it).
        #[arg(long)]
        name: String,
    },
}

/// How to reach and authenticate to the admin API.
#[derive(Debug, Args)]
struct AdminArgs {
    /// Admin API URL (`admin-listen` of the server).
    #[arg(
        long,
        env = "SPARK_OTA_SERVER",
        default_value = "https://127.0.0.1:8444"
    )]
    server: String,
    /// CA certificate of the server's certificate (server-ca.cert.pem of spark-keys).
    #[arg(long, env = "SPARK_OTA_CA")]
    ca: PathBuf,
    /// Admin token (`spark-ota token create`).
    #[arg(long, env = "SPARK_OTA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Admin client certificate instead of a token (from the server's `admin-ca`).
    #[arg(long, requires = "key", conflicts_with = "token")]
    cert: Option<PathBuf>,
    /// Key of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ReleaseCmd {
    /// Upload a bundle with its signed release manifest (`spark-keys sign-release`).
    Upload {
        #[command(flatten)]
        admin: AdminArgs,
        /// The RAUC bundle (.raucb).
        bundle: PathBuf,
        /// Its signed release manifest (.release.json or wire form).
        release: PathBuf,
    },
    /// List releases.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show one release with its signed manifest.
    Show {
        #[command(flatten)]
        admin: AdminArgs,
        id: i64,
    },
    /// Withdraw a release: it is offered to no device any more.
    Yank {
        #[command(flatten)]
        admin: AdminArgs,
        id: i64,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCmd {
    /// Start rolling a release out.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// Release id (`spark-ota release list`).
        #[arg(long)]
        release: i64,
        /// Rollout id (default COMPATIBLE-VERSION).
        #[arg(long)]
        id: Option<String>,
    },
    /// Progress per wave (all rollouts, or one).
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        id: Option<String>,
    },
    /// Stop offering the release until resumed.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Offer the release again.
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
    },
    /// End the rollout for good.
    Abort {
        #[command(flatten)]
        admin: AdminArgs,
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// List devices with their version, slot and agent state.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                match cli.command {
                    Command::Serve { .. } => "info",
                    _ => "warn",
                }
                .into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.as_ref()),
    }
}

fn client(a: &AdminArgs) -> Result<AdminClient, spark_ota::ClientError> {
    let creds = match (&a.token, &a.cert, &a.key) {
        (Some(t), _, _) => Credentials::Token(t.clone()),
        (None, Some(cert), Some(key)) => Credentials::Certificate { cert, key },
        _ => return Err(spark_ota::ClientError::NoCredentials),
    };
    AdminClient::new(&a.server, &a.ca, creds)
}

async fn dispatch(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve { config } => serve(&config).await?,
        Command::Token(TokenCmd::Create { config, name }) => {
            let config = spark_ota::Config::load(&config)?;
            let store = spark_ota::Store::connect(&config.database, 1).await?;
            let token = spark_ota::tokens::create(&store, &name).await?;
            store.close().await;
            eprintln!("admin token {name:?} created; it is shown only now, store it safely:");
            println!("{token}");
        }
        Command::Release(cmd) => match cmd {
            ReleaseCmd::Upload {
                admin,
                bundle,
                release,
            } => {
                cli::release_upload(&client(&admin)?, &bundle, &release, admin.json).await?;
            }
            ReleaseCmd::List { admin } => cli::release_list(&client(&admin)?, admin.json).await?,
            ReleaseCmd::Show { admin, id } => cli::release_show(&client(&admin)?, id).await?,
            ReleaseCmd::Yank { admin, id, reason } => {
                cli::release_yank(&client(&admin)?, id, reason.as_deref()).await?;
            }
        },
        Command::Rollout(cmd) => match cmd {
            RolloutCmd::Create { admin, release, id } => {
                cli::rollout_create(&client(&admin)?, release, id.as_deref(), admin.json).await?;
            }
            RolloutCmd::Status { admin, id } => {
                cli::rollout_status(&client(&admin)?, id.as_deref(), admin.json).await?;
            }
            RolloutCmd::Pause { admin, id, reason } => {
                cli::rollout_action(&client(&admin)?, &id, "pause", reason.as_deref()).await?;
            }
            RolloutCmd::Resume { admin, id } => {
                cli::rollout_action(&client(&admin)?, &id, "resume", None).await?;
            }
            RolloutCmd::Abort { admin, id, reason } => {
                cli::rollout_action(&client(&admin)?, &id, "abort", reason.as_deref()).await?;
            }
        },
        Command::Device(DeviceCmd::List { admin }) => {
            cli::device_list(&client(&admin)?, admin.json).await?;
        }
        Command::DataCost { admin, by_device } => {
            cli::data_cost(&client(&admin)?, by_device, admin.json).await?;
        }
    }
    Ok(())
}

async fn serve(config: &Path) -> Result<(), spark_ota::ServeError> {
    let config = spark_ota::Config::load(config)?;
    spark_daemon::spawn_watchdog();
    spark_ota::run(
        config,
        spark_daemon::shutdown_signal(),
        spark_daemon::notify_ready,
    )
    .await
}

/// Prints the error with its whole chain of causes.
fn fail(e: &dyn std::error::Error) -> ExitCode {
    spark_daemon::fail("spark-ota", e)
}
