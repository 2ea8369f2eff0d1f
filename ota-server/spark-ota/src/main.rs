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

// Parsed once per run: the size of the biggest subcommand does not matter.
#[allow(clippy::large_enum_variant)]
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
        /// Its signed release manifest (.release.json or wire form). Leave it out only with a
        /// server in dev mode (`[dev] release-key`), which then signs one itself.
        release: Option<PathBuf>,
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
    /// Replace a release's signed manifest with one signed again for the same compatible,
    /// version and bundle: a later expiry, another release key, or --allow-downgrade to roll
    /// back to it. Devices checking in afterwards get the new one.
    Manifest {
        #[command(flatten)]
        admin: AdminArgs,
        /// Release id (`spark-ota release list`).
        id: i64,
        /// The new signed release manifest (.release.json or wire form; `spark-keys
        /// sign-release`), not older than the stored one.
        manifest: PathBuf,
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

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum RolloutCmd {
    /// Start rolling a release out (default: plan `immediate`, gates `fast`).
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// Release id (`spark-ota release list`).
        #[arg(long)]
        release: i64,
        /// Rollout id (default COMPATIBLE-VERSION).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
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

/// What a rollout does: plan, targets, gates, windows, cap, penalty box.
#[derive(Debug, Args)]
struct SpecArgs {
    /// `weekly` (1%@0d,10%@1d,50%@3d,100%@5d), `fast` (10%@0d,50%@2h,100%@6h), `immediate`
    /// (100%@0d) or waves like `5%@0d,100%@12h`.
    #[arg(long)]
    plan: Option<String>,
    /// Roll back to this (older) release; its manifest must be signed as an allowed downgrade.
    #[arg(long)]
    rollback: bool,
    /// Only these hardware revisions (repeat for several).
    #[arg(long = "hardware-rev", value_name = "REV")]
    hardware_revs: Vec<String>,
    /// Only devices with this tag (repeat; values of one key are alternatives), e.g. region=eu.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Only devices whose installed version matches, e.g. ">=1.2, <1.4".
    #[arg(long, value_name = "REQ")]
    current_version: Option<String>,
    /// Gate preset the options below override: weekly or fast (default: by plan).
    #[arg(long, value_name = "PRESET")]
    gates: Option<String>,
    /// Pause when more than this percentage of the devices that reported failed.
    #[arg(long, value_name = "PCT")]
    max_failure: Option<String>,
    /// Reports needed before the rate is judged and the soak starts.
    #[arg(long, value_name = "N")]
    min_sample: Option<u32>,
    /// How long a wave runs after its sample before the next may open (e.g. 4h).
    #[arg(long, value_name = "DURATION")]
    soak: Option<String>,
    /// Telemetry gate: an updated unit silent for this long is silent (e.g. 30m).
    #[arg(long, value_name = "DURATION")]
    telemetry_silence: Option<String>,
    /// Telemetry gate: pause when more than this percentage of updated units are silent.
    #[arg(long, value_name = "PCT")]
    max_silent: Option<String>,
    /// No telemetry-health gate.
    #[arg(long, conflicts_with_all = ["telemetry_silence", "max_silent"])]
    no_telemetry_gate: bool,
    /// A unit not heard from for this long is offline (not waited for, not counted).
    #[arg(long, value_name = "DURATION")]
    offline_after: Option<String>,
    /// An offered unit without a final report after this long frees its slot.
    #[arg(long, value_name = "DURATION")]
    install_timeout: Option<String>,
    /// Maintenance window in each site's local time, e.g. "02:00-05:00" or "sat,sun 22:00-04:00"
    /// (repeat for several).
    #[arg(long = "window", value_name = "WINDOW")]
    windows: Vec<String>,
    /// At most this many devices updating at once.
    #[arg(long, value_name = "N")]
    cap: Option<u32>,
    /// Penalty box: wait this long after a failure before offering again (default 1h).
    #[arg(long, value_name = "DURATION")]
    retry_after: Option<String>,
    /// Penalty box: failures in a row before a device is held (default 3).
    #[arg(long, value_name = "N")]
    max_failures: Option<u32>,
    /// Penalty box: how long a device is held (default 24h).
    #[arg(long, value_name = "DURATION")]
    penalty: Option<String>,
    /// Tags that stratify wave assignment besides the hardware revision (default region).
    #[arg(long = "strata", value_name = "TAG")]
    strata: Vec<String>,
}

impl SpecArgs {
    fn request(
        self,
        release: i64,
        id: Option<String>,
    ) -> Result<spark_ota::rollouts::CreateRollout, String> {
        use spark_ota::cli::{parse_duration, parse_percent_bp, parse_tag, parse_window};
        use spark_rollout::{Gates, PenaltyPolicy, TelemetryGate};
        let dur = |v: &Option<String>| v.as_deref().map(parse_duration).transpose();
        let weekly = self.gates.as_deref() == Some("weekly")
            || (self.gates.is_none() && self.plan.as_deref() == Some("weekly"));
        let base = if weekly {
            Gates::weekly()
        } else {
            Gates::fast()
        };
        let mut filter = spark_rollout::TargetFilter {
            hardware_revs: self.hardware_revs,
            ..Default::default()
        };
        for t in &self.tags {
            let (k, v) = parse_tag(t)?;
            filter.tags.entry(k).or_default().push(v);
        }
        if let Some(req) = &self.current_version {
            filter.current_version = Some(
                req.parse()
                    .map_err(|e| format!("--current-version {req:?}: {e}"))?,
            );
        }
        let telemetry = if self.no_telemetry_gate {
            Some(None)
        } else if self.telemetry_silence.is_some() || self.max_silent.is_some() {
            let b = base.telemetry.clone().unwrap_or(TelemetryGate {
                max_silence: base.soak,
                max_silent_bp: 500,
            });
            Some(Some(TelemetryGate {
                max_silence: dur(&self.telemetry_silence)?.unwrap_or(b.max_silence),
                max_silent_bp: self
                    .max_silent
                    .as_deref()
                    .map(parse_percent_bp)
                    .transpose()?
                    .unwrap_or(b.max_silent_bp),
            }))
        } else {
            None
        };
        let penalty = if self.retry_after.is_some()
            || self.max_failures.is_some()
            || self.penalty.is_some()
        {
            let d = PenaltyPolicy::default();
            Some(PenaltyPolicy {
                retry_after: dur(&self.retry_after)?.unwrap_or(d.retry_after),
                max_failures: self.max_failures.unwrap_or(d.max_failures),
                duration: dur(&self.penalty)?.unwrap_or(d.duration),
            })
        } else {
            None
        };
        Ok(spark_ota::rollouts::CreateRollout {
            release,
            id,
            plan: self.plan.map(serde_json::Value::String),
            kind: if self.rollback {
                spark_rollout::RolloutKind::Rollback
            } else {
                spark_rollout::RolloutKind::Forward
            },
            filter,
            gates: spark_ota::rollouts::GatesRequest {
                preset: self.gates,
                max_failure_bp: self
                    .max_failure
                    .as_deref()
                    .map(parse_percent_bp)
                    .transpose()?,
                min_sample: self.min_sample,
                soak: dur(&self.soak)?,
                telemetry,
                offline_after: dur(&self.offline_after)?,
                install_timeout: dur(&self.install_timeout)?,
            },
            windows: self
                .windows
                .iter()
                .map(|w| parse_window(w))
                .collect::<Result<_, _>>()?,
            concurrency_cap: self.cap,
            penalty,
            strata_tags: (!self.strata.is_empty()).then_some(self.strata),
            starts_at: None,
        })
    }
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// List devices with their version, slot and agent state.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Set what rollouts target and stratify by: hardware revision, tags, site time zone.
    Set {
        #[command(flatten)]
        admin: AdminArgs,
        /// Device id (its certificate's CN); it need not have checked in yet.
        id: String,
        #[arg(long)]
        hardware_rev: Option<String>,
        /// Tag (repeat); replaces all of the device's tags, e.g. --tag region=eu --tag site=berlin-3.
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
        /// IANA time zone of the device's site, e.g. Europe/Berlin (for maintenance windows).
        #[arg(long)]
        time_zone: Option<String>,
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
                cli::release_upload(&client(&admin)?, &bundle, release.as_deref(), admin.json)
                    .await?;
            }
            ReleaseCmd::List { admin } => cli::release_list(&client(&admin)?, admin.json).await?,
            ReleaseCmd::Show { admin, id } => cli::release_show(&client(&admin)?, id).await?,
            ReleaseCmd::Manifest {
                admin,
                id,
                manifest,
            } => {
                cli::release_manifest(&client(&admin)?, id, &manifest, admin.json).await?;
            }
            ReleaseCmd::Yank { admin, id, reason } => {
                cli::release_yank(&client(&admin)?, id, reason.as_deref()).await?;
            }
        },
        Command::Rollout(cmd) => match cmd {
            RolloutCmd::Create {
                admin,
                release,
                id,
                spec,
            } => {
                let req = spec.request(release, id)?;
                cli::rollout_create_with(&client(&admin)?, &req, admin.json).await?;
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
        Command::Device(DeviceCmd::Set {
            admin,
            id,
            hardware_rev,
            tags,
            time_zone,
        }) => {
            let tags = if tags.is_empty() {
                None
            } else {
                Some(
                    tags.iter()
                        .map(|t| cli::parse_tag(t))
                        .collect::<Result<_, _>>()?,
                )
            };
            let attrs = spark_ota::store::DeviceAttributes {
                hardware_rev,
                tags,
                time_zone,
            };
            cli::device_set(&client(&admin)?, &id, &attrs, admin.json).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_upload_manifest_is_optional() {
        let parse = |args: &[&str]| {
            let base = [
                "spark-ota",
                "release",
                "upload",
                "--ca",
                "ca.pem",
                "--token",
                "t",
            ];
            let cli = Cli::try_parse_from(base.iter().chain(args)).unwrap();
            let Command::Release(ReleaseCmd::Upload {
                bundle, release, ..
            }) = cli.command
            else {
                panic!("parsed as another command")
            };
            (bundle, release)
        };
        assert_eq!(
            parse(&["v2.raucb", "v2.release.json"]),
            ("v2.raucb".into(), Some("v2.release.json".into()))
        );
        assert_eq!(parse(&["v2.raucb"]), ("v2.raucb".into(), None));
    }

    #[test]
    fn release_manifest_takes_an_id_and_a_file() {
        let cli = Cli::try_parse_from([
            "spark-ota",
            "release",
            "manifest",
            "--ca",
            "ca.pem",
            "--token",
            "t",
            "3",
            "v1.release.json",
        ])
        .unwrap();
        let Command::Release(ReleaseCmd::Manifest { id, manifest, .. }) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!((id, manifest), (3, "v1.release.json".into()));
        let missing = Cli::try_parse_from([
            "spark-ota",
            "release",
            "manifest",
            "--ca",
            "ca.pem",
            "--token",
            "t",
            "3",
        ]);
        assert!(missing.is_err(), "the manifest file is required");
    }

    #[test]
    fn rollout_create_flags_become_the_request() {
        let cli = Cli::try_parse_from([
            "spark-ota",
            "rollout",
            "create",
            "--ca",
            "ca.pem",
            "--token",
            "t",
            "--release",
            "3",
            "--id",
            "w48",
            "--plan",
            "weekly",
            "--hardware-rev",
            "rev-c",
            "--tag",
            "region=eu",
            "--tag",
            "region=us",
            "--current-version",
            ">=1.0, <2.0",
            "--max-failure",
            "2.5",
            "--min-sample",
            "30",
            "--soak",
            "2h",
            "--no-telemetry-gate",
            "--window",
            "sat,sun 02:00-05:00",
            "--cap",
            "50",
            "--retry-after",
            "30m",
            "--strata",
            "site",
        ])
        .unwrap();
        let Command::Rollout(RolloutCmd::Create {
            release, id, spec, ..
        }) = cli.command
        else {
            panic!("parsed as another command")
        };
        let req = serde_json::to_value(spec.request(release, id).unwrap()).unwrap();
        assert_eq!(req["release"], 3);
        assert_eq!(req["id"], "w48");
        assert_eq!(req["plan"], "weekly");
        assert_eq!(req["filter"]["hardware_revs"][0], "rev-c");
        assert_eq!(
            req["filter"]["tags"]["region"],
            serde_json::json!(["eu", "us"])
        );
        assert_eq!(req["filter"]["current_version"], ">=1.0, <2.0");
        assert_eq!(req["gates"]["max_failure_bp"], 250);
        assert_eq!(req["gates"]["min_sample"], 30);
        assert_eq!(req["gates"]["soak"], "PT2H");
        assert!(req["gates"]["telemetry"].is_null());
        assert!(req["gates"].as_object().unwrap().contains_key("telemetry"));
        assert_eq!(req["windows"][0]["days"], serde_json::json!(["sat", "sun"]));
        assert_eq!(req["concurrency_cap"], 50);
        assert_eq!(req["penalty"]["retry_after"], "PT30M");
        assert_eq!(req["penalty"]["max_failures"], 3);
        assert_eq!(req["strata_tags"], serde_json::json!(["site"]));
    }
}
