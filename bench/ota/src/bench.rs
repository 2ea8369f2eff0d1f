//! One bench run: fixture → fresh data directory with `--registered` devices → `spark-ota serve`
//! as a child process → upload of the signed bundle → memory idle → check-in storms (nothing to
//! offer, then a release offered) → downloads against nginx → memory after each step. Progress
//! goes to stderr, figures to stdout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use sqlx::Connection as _;

use crate::checkins::{self, Storm};
use crate::download::{self, Target};
use crate::fixture::{self, Fixture};
use crate::procs::{self, Memory, Proc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Section {
    /// Check-ins/s of `--devices` concurrent keep-alive mutual-TLS devices.
    CheckIns,
    /// Bundle download MB/s against nginx.
    Download,
}

/// spark-ota's figures: check-ins/s, download throughput against nginx, memory.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Sections to run (default: all). Memory is printed in every run.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Section>,
    /// Concurrent simulated devices in the check-in storm (each its own certificate).
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Devices registered in the database before the server starts.
    #[arg(long, default_value_t = 10_000)]
    pub registered: usize,
    /// Warm-up of each storm, seconds (not counted).
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Measured window of each storm, seconds.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Size of the bundle's random image, MB (10^6 bytes).
    #[arg(long, default_value_t = 128)]
    pub bundle_mb: u64,
    /// Sequential downloads from each server.
    #[arg(long, default_value_t = 6)]
    pub sequential: usize,
    /// Downloads at once in the parallel runs.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Parallel batches from each server.
    #[arg(long, default_value_t = 2)]
    pub parallel_rounds: usize,
    /// Where the PKI, device certificates and bundle are kept between runs
    /// (default: $TMPDIR/spark-ota-bench).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The `spark-ota` binary (default: next to this one; `cargo build --release -p spark-ota`).
    #[arg(long)]
    pub spark_ota: Option<PathBuf>,
    /// The nginx binary (`apt-get install -y nginx`).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    pub nginx: PathBuf,
}

impl Args {
    fn runs(&self, s: Section) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

fn mib(m: Memory) -> String {
    format!(
        "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        m.rss_kib as f64 / 1024.0,
        m.hwm_kib as f64 / 1024.0
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores ({model}), shared with other work")
}

fn print_storm(label: &str, s: &Storm) {
    let statuses: Vec<String> = s.statuses.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    println!(
        "  {label:<24} {:>8.0} check-ins/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} in {} s: {}; {} errors)",
        s.per_second(),
        s.pct_ms(50.0),
        s.pct_ms(99.0),
        s.done,
        s.window.as_secs(),
        statuses.join(" "),
        s.errors
    );
}

/// Registers `n` devices (`dev-00000`…) straight in the database, as if each had checked in once.
async fn register(db_url: &str, n: usize) -> anyhow::Result<()> {
    let mut c = sqlx::SqliteConnection::connect(db_url).await?;
    let mut tx = c.begin().await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    for i in 0..n {
        sqlx::query(
            "INSERT INTO devices (device, first_seen, last_seen, compatible, current_version, booted_slot, agent_state) \
             VALUES (?1, ?2, ?2, ?3, ?4, 'A', 'idle')",
        )
        .bind(fixture::serial(i))
        .bind(now - 3600)
        .bind(fixture::COMPATIBLE)
        .bind(fixture::CURRENT_VERSION)
        .execute(&mut *tx)
        .await
        .context("registering devices (has the devices table changed?)")?;
    }
    tx.commit().await?;
    Ok(())
}

/// Makes `path` readable by nginx's `nobody` workers (the bench's run directory is private).
fn open_up(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let ota_bin = match &args.spark_ota {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("spark-ota"),
    };
    if !ota_bin.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p spark-ota -p spark-ota-bench` or pass --spark-ota",
            ota_bin.display()
        );
    }
    if args.runs(Section::Download) && !args.nginx.is_file() {
        bail!(
            "{} not found: install nginx (`apt-get install -y nginx`, or bench/ota/run.sh), pass --nginx, or run --only check-ins",
            args.nginx.display()
        );
    }
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("spark-ota-bench"));
    let fx = {
        let (cache, devices, mb) = (cache.clone(), args.devices, args.bundle_mb);
        tokio::task::spawn_blocking(move || Fixture::prepare(&cache, devices, mb)).await??
    };
    let run = tempfile::Builder::new().prefix("run-").tempdir_in(&cache)?;
    open_up(run.path())?;
    let data = run.path().join("data");
    std::fs::create_dir_all(&data)?;
    let db_url = format!("sqlite://{}?mode=rwc", data.join("ota.db").display());

    // The database before the server: migrations, an admin token, the registered fleet.
    let store = spark_ota::Store::connect(&db_url, 1).await?;
    let token = spark_ota::tokens::create(&store, "bench").await?;
    store.close().await;
    let t = Instant::now();
    register(&db_url, args.registered.max(args.devices)).await?;
    eprintln!(
        "registered {} devices in {:.1} s",
        args.registered.max(args.devices),
        t.elapsed().as_secs_f64()
    );

    let (device_addr, admin_addr) = (procs::free_port()?, procs::free_port()?);
    let (cert, key, device_ca) = (
        fx.pki.server_cert(),
        fx.pki.server_key(),
        fx.pki.device_ca_cert(),
    );
    let tls = procs::Tls {
        cert: &cert,
        key: &key,
        device_ca: &device_ca,
    };
    let config = run.path().join("ota.toml");
    procs::write_ota_config(
        &config,
        device_addr,
        admin_addr,
        &data,
        &fx.pki.keyring(),
        &fx.pki.release_pub(),
        &tls,
    )?;
    let mut ota = Proc::spawn(
        "spark-ota",
        Command::new(&ota_bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn"),
        &run.path().join("spark-ota.log"),
    )?;
    ota.wait_listening(device_addr, Duration::from_secs(30))
        .await?;
    ota.wait_listening(admin_addr, Duration::from_secs(30))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = ota.memory()?;

    println!("spark-ota figures ({})", machine());
    println!(
        "  release build; server `spark-ota serve` in its own process (tokio, 2 worker threads), SQLite (WAL, synchronous=FULL);"
    );
    println!("  the load generator runs on the same 2 cores.");

    // The release: bundle + signed manifest through the admin API.
    let release_file = run.path().join("release.json");
    fx.sign_release(&release_file)?;
    let admin = spark_ota::client::AdminClient::new(
        &format!("https://{admin_addr}"),
        &fx.pki.server_ca_cert(),
        spark_ota::client::Credentials::Token(token),
    )?;
    let t = Instant::now();
    let up = admin
        .upload(&fx.bundle, &release_file, &indicatif::ProgressBar::hidden())
        .await
        .context("uploading the bench bundle")?;
    eprintln!(
        "uploaded and verified the {:.1} MB bundle in {:.1} s",
        up.size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    println!(
        "memory (spark-ota process, {} devices registered):",
        args.registered.max(args.devices)
    );
    println!("  idle after start            {}", mib(idle));

    if args.runs(Section::CheckIns) {
        let mut devices = Vec::with_capacity(fx.devices.len());
        for s in &fx.devices {
            devices.push((s.clone(), fx.device_tls(s)?));
        }
        let (warmup, window) = (
            Duration::from_secs(args.warmup_secs),
            Duration::from_secs(args.secs),
        );
        eprintln!("check-in storm: nothing to offer");
        let none = checkins::storm(device_addr, &devices, warmup, window).await?;
        let after_none = ota.memory()?;
        // A rollout of the release to everyone: check-ins now answer with the signed manifest.
        let rollout: anyhow::Result<serde_json::Value> = admin
            .post(
                "/v1/rollouts",
                &serde_json::json!({ "release": up.release, "id": "bench" }),
            )
            .await
            .map_err(Into::into);
        let offered = match rollout {
            Ok(_) => {
                eprintln!("check-in storm: release offered");
                Some(checkins::storm(device_addr, &devices, warmup, window).await?)
            }
            Err(e) => {
                eprintln!("cannot create a rollout ({e:#}); skipping the offered storm");
                None
            }
        };
        let after_offered = ota.memory()?;
        println!("  after the 204 storm         {}", mib(after_none));
        println!("  after the 200 storm         {}", mib(after_offered));
        println!(
            "check-ins: {} devices at once, each its own client certificate, one keep-alive HTTP/1.1 connection each, mutual TLS ({})",
            devices.len(),
            none.tls
        );
        println!(
            "  POST /v1/devices/{{id}}/check-in back to back, {} s warm-up + {} s measured; connecting all took {:.1} s",
            args.warmup_secs,
            args.secs,
            none.connect.as_secs_f64()
        );
        println!(
            "  closed loop (each device waits for its answer): latency ≈ devices ÷ rate, the queue at saturation"
        );
        print_storm("nothing to offer (204)", &none);
        if let Some(o) = &offered {
            print_storm("release offered (200)", o);
        }
    }

    if args.runs(Section::Download) {
        let www = run.path().join("www");
        std::fs::create_dir_all(&www)?;
        open_up(&www)?;
        // A copy, not a link: the blob is private to spark-ota (0600) and nginx's workers
        // run as `nobody` when the bench runs as root. Both copies are read once before timing.
        let blob = data.join("blobs").join(&up.sha256);
        let copy = www.join(&up.sha256);
        std::fs::copy(&blob, &copy)
            .with_context(|| format!("copying {} for nginx", blob.display()))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))?;
        }
        let nginx_dir = run.path().join("nginx");
        std::fs::create_dir_all(&nginx_dir)?;
        let nginx_addr = procs::free_port()?;
        let mut nginx = procs::start_nginx(&args.nginx, &nginx_dir, &www, nginx_addr, &tls)?;
        nginx
            .wait_listening(nginx_addr, Duration::from_secs(15))
            .await?;
        let device_tls = fx.device_tls(&fx.devices[0])?;
        let ota_t = Target {
            addr: device_addr,
            path: format!("/v1/bundles/{}", up.sha256),
            tls: device_tls.clone(),
        };
        let nginx_t = Target {
            addr: nginx_addr,
            path: format!("/{}", up.sha256),
            tls: device_tls,
        };
        // Warm-up: the file in the page cache, both servers' first connection behind them.
        let ota_tls = download::fetch(&ota_t, up.size).await?;
        let nginx_tls = download::fetch(&nginx_t, up.size).await?;
        eprintln!("downloads: sequential");
        let (seq_ota, seq_nginx) =
            download::compare(&ota_t, &nginx_t, up.size, 1, args.sequential).await?;
        eprintln!("downloads: parallel");
        let (par_ota, par_nginx) = download::compare(
            &ota_t,
            &nginx_t,
            up.size,
            args.parallel,
            args.parallel_rounds,
        )
        .await?;
        let after = ota.memory()?;
        drop(nginx);
        println!("  after the downloads         {}", mib(after));
        println!(
            "download: the same {:.1} MB bundle file (page cache), whole, one new mutual-TLS connection per download, same Rust client (hyper + rustls)",
            up.size as f64 / 1e6
        );
        println!(
            "  spark-ota GET /v1/bundles/{{sha256}} ({ota_tls}) vs nginx {} static file, 2 workers, same server certificate, client certificate required from the device CA ({nginx_tls}); no sendfile/kTLS for either",
            nginx_version(&args.nginx)
        );
        for (label, o, n) in [
            (
                format!("sequential ({} × 1)", args.sequential),
                seq_ota,
                seq_nginx,
            ),
            (
                format!(
                    "parallel ({} × {} at once)",
                    args.parallel_rounds, args.parallel
                ),
                par_ota,
                par_nginx,
            ),
        ] {
            let ratio = o.mb_s() / n.mb_s();
            println!(
                "  {label:<24} spark-ota {:>7.0} MB/s   nginx {:>7.0} MB/s   ratio {ratio:.2} (goal ≥ 0.9{})",
                o.mb_s(),
                n.mb_s(),
                if ratio >= 0.9 { ", met" } else { ", NOT met" }
            );
        }
    }

    drop(ota);
    Ok(())
}

fn nginx_version(nginx: &Path) -> String {
    Command::new(nginx)
        .arg("-v")
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .trim_start_matches("nginx version: ")
                .to_owned()
        })
        .unwrap_or_else(|| "nginx".into())
}
