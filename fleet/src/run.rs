//! The main job, fleet in a box: the cloud, two signed releases, N gateways on release 1 sending
//! telemetry, and a time-compressed weekly rollout of release 2 in which one gateway's new
//! firmware fails its health check and rolls itself back, shown live in the terminal and in the
//! dashboard, ending with a summary that checks the fleet's invariants.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use spark_ota::rollouts::{CreateRollout, RolloutStatus};

use spark_ota::catalog::Uploaded;

use crate::proxy::LinkProxy;
use crate::release::sample_rootfs;
use crate::{Binaries, Cloud, CloudOptions, FleetError, Gateway, GatewayOptions, ReleaseSpec};

/// What the main job is asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where everything goes (PKI with private keys, configs, databases, logs).
    pub out: PathBuf,
    pub gateways: usize,
    pub meters: u32,
    /// Rollout time runs this many times faster than real time.
    pub clock_factor: u32,
    /// `weekly`, `fast`, or waves like `10%@0d,100%@1d`.
    pub plan: String,
    /// Give up after this much real time.
    pub timeout: Duration,
    /// After the summary, keep everything running until Ctrl-C (to look around).
    pub stay: bool,
    /// Where the binaries are (default: next to this program).
    pub bin_dir: Option<PathBuf>,
}

/// What the run found; the job fails unless [`Summary::ok`].
#[derive(Debug, Clone)]
pub struct Summary {
    pub gateways: Vec<GatewaySummary>,
    pub rollout: RolloutStatus,
    pub failing_gateway: String,
    pub readings_generated: u64,
    pub readings_stored: u64,
    pub duplicates: u64,
    pub link_bytes: u64,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GatewaySummary {
    pub serial: String,
    pub version: String,
    pub slot: String,
    pub boots: u32,
    pub generated: u64,
    pub stored: u64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

const COMPATIBLE: &str = "spark-bbb";
pub(crate) const V1: &str = "1.0.0";
pub(crate) const V2: &str = "2.0.0";

/// How the fleet is brought up (the main job's and the chaos run's common part).
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub out: PathBuf,
    pub gateways: usize,
    pub meters: u32,
    pub clock_factor: u32,
    pub api: bool,
    /// Each gateway's cloud link through a [`LinkProxy`] (for link faults).
    pub proxies: bool,
    pub restart_on_failure: bool,
    pub poll_interval_secs: u64,
    pub rate_limit: Option<u64>,
    /// Each gateway also runs `spark-webui`.
    pub webui: bool,
    pub bin_dir: Option<PathBuf>,
}

pub(crate) fn step(s: &str) {
    println!("\n\u{1b}[1m== {s}\u{1b}[0m");
}

/// Cloud, releases 1.0.0 and 2.0.0 uploaded, gateways factory-installed with 1.0.0 and
/// connected to ingest. Returns the fleet and the two uploads.
pub(crate) fn bring_up(
    setup: &Setup,
    stop: &AtomicBool,
) -> Result<(Fleet, Vec<Uploaded>), FleetError> {
    let bins = Binaries::locate(setup.bin_dir.as_deref())?;
    if setup.out.exists() {
        std::fs::remove_dir_all(&setup.out).map_err(FleetError::io("remove", &setup.out))?;
    }
    std::fs::create_dir_all(&setup.out).map_err(FleetError::io("create", &setup.out))?;
    // Absolute: the services resolve relative paths in their configs from the config's folder.
    let out = std::fs::canonicalize(&setup.out).map_err(FleetError::io("resolve", &setup.out))?;

    step(if setup.api {
        "Cloud: dev PKI, spark-ingest (+ pipeline), spark-api, spark-ota on SQLite"
    } else {
        "Cloud: dev PKI, spark-ingest (+ pipeline), spark-ota on SQLite"
    });
    let mut cloud_opts = CloudOptions::new(out.join("cloud"));
    cloud_opts.clock_factor = Some(setup.clock_factor);
    cloud_opts.tick_secs = 0.5;
    cloud_opts.api = setup.api;
    let cloud = Cloud::start(&bins, &cloud_opts)?;
    println!(
        "dashboard:  {}/ui   (sign in with the admin token below)",
        cloud.admin_url()
    );
    println!("admin token: {}", cloud.token());
    if let Some(api) = cloud.api() {
        println!(
            "API:        {}/v1/gateways   (client cert {}, bearer token {})",
            api.url,
            api.cert.display(),
            api.token
        );
    }

    step("Releases 1.0.0 and 2.0.0: sample root filesystems, RAUC bundles, signed manifests");
    let rel_dir = out.join("releases");
    std::fs::create_dir_all(&rel_dir).map_err(FleetError::io("create", &rel_dir))?;
    let mut releases = Vec::new();
    let mut uploads = Vec::new();
    for version in [V1, V2] {
        let rootfs = sample_rootfs(&rel_dir, version)?;
        let r = ReleaseSpec {
            compatible: COMPATIBLE,
            version,
            rootfs: &rootfs,
            allow_downgrade: false,
            valid_for: spark_release::DEFAULT_VALIDITY,
        }
        .build(cloud.pki(), &rel_dir)?;
        let up = cloud.upload(&r)?;
        println!(
            "release {} ({version}): {} ({} bytes, sha256 {}…), uploaded and verified by spark-ota",
            up.release,
            r.bundle.display(),
            up.size,
            &up.sha256[..12]
        );
        releases.push(r);
        uploads.push(up);
    }

    step(&format!(
        "{} gateways: real rauc service, spark-meterd + radio simulator, spark-uplinkd, spark-updated{}",
        setup.gateways,
        if setup.webui { ", spark-webui" } else { "" }
    ));
    let regions = ["north", "south"];
    let mut gateways = Vec::new();
    let mut proxies = Vec::new();
    for i in 0..setup.gateways {
        if stop.load(Ordering::SeqCst) {
            return Err(FleetError::Interrupted);
        }
        let serial = format!("GW-{:04}", i + 1);
        cloud.set_device(
            &serial,
            &serde_json::json!({
                "hardware_rev": "bbb-rev-c",
                "tags": {"region": regions[i % regions.len()], "site": format!("site-{}", i + 1)},
            }),
        )?;
        let mut link = cloud.link();
        if setup.proxies {
            let target = link
                .ingest
                .parse()
                .map_err(|e| FleetError::Release(format!("ingest address {}: {e}", link.ingest)))?;
            let proxy = LinkProxy::start(target)?;
            link.ingest = proxy.addr().to_string();
            proxies.push(proxy);
        }
        let mut o = GatewayOptions::new(&serial, out.join("gateways").join(&serial), COMPATIBLE);
        o.seed = i as u64 + 1;
        o.meters = setup.meters;
        o.factory_bundle = Some(releases[0].bundle.clone());
        o.restart_on_failure = setup.restart_on_failure;
        o.poll_interval_secs = setup.poll_interval_secs;
        o.rate_limit = setup.rate_limit;
        o.webui = setup.webui;
        let gw = Gateway::start(&bins, &link, o)?;
        println!(
            "{serial}: factory-installed {} on slot {}, {} meters, board {}",
            gw.version(),
            gw.booted(),
            setup.meters,
            gw.board().root().display()
        );
        if let Some((url, password)) = gw.webui() {
            println!("{serial}: on-site page {url}  (password {password})");
        }
        gateways.push(gw);
    }
    let mut fleet = Fleet {
        link_bytes: vec![LinkCounter::default(); gateways.len()],
        cloud,
        gateways,
        proxies,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FleetError::io("start a runtime for", "D-Bus reads"))?,
    };
    fleet.wait_connected(stop)?;
    Ok((fleet, uploads))
}

/// Runs the main job; `stop` (Ctrl-C) ends it early and cleanly.
pub fn run(opts: &RunOptions, stop: Arc<AtomicBool>) -> Result<Summary, FleetError> {
    let (mut fleet, uploads) = bring_up(
        &Setup {
            out: opts.out.clone(),
            gateways: opts.gateways,
            meters: opts.meters,
            clock_factor: opts.clock_factor,
            api: true,
            proxies: false,
            restart_on_failure: false,
            poll_interval_secs: 3600,
            rate_limit: None,
            webui: true,
            bin_dir: opts.bin_dir.clone(),
        },
        &stop,
    )?;
    let dashboard = fleet.cloud.admin_url();

    step(&format!(
        "Rollout of 2.0.0, plan {}, on a clock {}× real time",
        opts.plan, opts.clock_factor
    ));
    // A fleet of a handful cannot give the weekly preset's sample of 20 reports; and a couple
    // of compressed hours of silence is a second or two of real time, less than a reboot takes:
    // the telemetry gate counts a unit silent after 5 real seconds, and a wave soaks at least
    // that long. Both stated in the output.
    let silence = (5 * u64::from(opts.clock_factor)).max(1800);
    let preset_soak = if opts.plan == "weekly" {
        4 * 3600
    } else {
        45 * 60
    };
    let req: CreateRollout = serde_json::from_value(serde_json::json!({
        "release": uploads[1].release,
        "id": "v2-weekly",
        "plan": opts.plan,
        "gates": {
            "min_sample": 1,
            "soak": format!("PT{}S", silence.max(preset_soak)),
            "telemetry": {"max_silence": format!("PT{silence}S"), "max_silent_bp": 500},
        },
    }))
    .map_err(|e| FleetError::Release(format!("rollout request: {e}")))?;
    let created = fleet.cloud.create_rollout(&req)?;
    // The unit whose 2.0.0 fails its health check: one in the last wave, so every wave opens
    // before its failure is judged.
    let waves: serde_json::Value = fleet.cloud.get("/v1/rollouts/v2-weekly/devices")?;
    let last = created.waves.len().saturating_sub(1);
    let failing = waves
        .as_object()
        .and_then(|m| {
            m.iter()
                .filter(|(_, d)| d["wave"].as_u64() == Some(last as u64))
                .map(|(s, _)| s.clone())
                .next()
        })
        .unwrap_or_else(|| fleet.gateways[0].serial().to_owned());
    if let Some(gw) = fleet.gateways.iter_mut().find(|g| g.serial() == failing) {
        gw.set_fail_health_on(Some(V2.into()));
    }
    println!(
        "waves: {}; gates: {}",
        created
            .waves
            .iter()
            .map(|w| format!("{}% ({} units)", w.share, w.devices))
            .collect::<Vec<_>>()
            .join(", "),
        created
            .gates
            .as_ref()
            .map(|g| format!(
                "failures ≤ {:.1} %, sample {}, soak {:#}, telemetry silence over {:#} on > 5 % pauses",
                g.max_failure_bp as f64 / 100.0,
                g.min_sample,
                g.soak,
                g.telemetry.as_ref().map(|t| t.max_silence).unwrap_or_default()
            ))
            .unwrap_or_default()
    );
    println!("{failing}'s 2.0.0 will fail its health check on that unit: watch it roll back");

    let status = fleet.watch(&created, &failing, opts, &stop)?;

    step("Telemetry: ending the radios' runs, checking every reading arrived once");
    let summary = fleet.summarize(status, &failing, &stop)?;
    print_summary(&summary, &dashboard);
    for gw in &fleet.gateways {
        if let Some((url, password)) = gw.webui() {
            println!(
                "{}'s on-site page: {url}  (password {password})",
                gw.serial()
            );
        }
    }
    if opts.stay && summary.ok() {
        println!("\nEverything keeps running: {dashboard}/ui. Ctrl-C stops it all.");
        while !stop.load(Ordering::SeqCst) {
            fleet.cloud.check_running()?;
            for gw in &mut fleet.gateways {
                gw.service()?;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    fleet.shutdown();
    Ok(summary)
}

pub(crate) fn interrupted() -> FleetError {
    FleetError::Interrupted
}

/// Bytes on one gateway's cloud link, summed across uplinkd restarts (its counters start at 0
/// with each process).
#[derive(Debug, Clone, Copy, Default)]
struct LinkCounter {
    total: u64,
    last: u64,
}

impl LinkCounter {
    fn sample(&mut self, now: u64) {
        self.total += if now >= self.last {
            now - self.last
        } else {
            now
        };
        self.last = now;
    }
}

pub(crate) struct Fleet {
    pub cloud: Cloud,
    pub gateways: Vec<Gateway>,
    /// One per gateway when its link goes through a proxy.
    pub proxies: Vec<LinkProxy>,
    link_bytes: Vec<LinkCounter>,
    pub rt: tokio::runtime::Runtime,
}

impl Fleet {
    /// Keeps every gateway serviced (reboots carried out) and the cloud checked.
    pub(crate) fn service(&mut self) -> Result<Vec<String>, FleetError> {
        self.cloud.check_running()?;
        let mut events = Vec::new();
        for (i, gw) in self.gateways.iter_mut().enumerate() {
            // Sampled before a reboot restarts uplinkd and its counters.
            if let Some(b) = link_bytes(&self.rt, gw) {
                self.link_bytes[i].sample(b);
            }
            if gw.service()? {
                // The new uplinkd counts from zero.
                self.link_bytes[i].last = 0;
                events.push(format!(
                    "{} rebooted into {} on slot {}",
                    gw.serial(),
                    gw.version(),
                    gw.booted()
                ));
            }
        }
        Ok(events)
    }

    fn wait_connected(&mut self, stop: &AtomicBool) -> Result<(), FleetError> {
        let n = self.gateways.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let seen: usize = self
                .cloud
                .ingest_query("SELECT count(*) FROM gateways")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            if seen == n {
                println!("all {n} gateways connected to spark-ingest over mutual TLS");
                return Ok(());
            }
            if stop.load(Ordering::SeqCst) {
                return Err(interrupted());
            }
            if Instant::now() > deadline {
                return Err(FleetError::Timeout {
                    what: format!("{n} gateways to connect to ingest ({seen} did)"),
                    secs: 120,
                });
            }
            self.service()?;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn readings_stored(&self) -> u64 {
        self.cloud
            .ingest_query("SELECT count(*) FROM readings")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Runs the fleet with live progress until every unit of the rollout has a final report
    /// (and the failing one is back on its old slot).
    fn watch(
        &mut self,
        created: &RolloutStatus,
        failing: &str,
        opts: &RunOptions,
        stop: &AtomicBool,
    ) -> Result<RolloutStatus, FleetError> {
        let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
        let head = mp.add(ProgressBar::new_spinner());
        head.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or(ProgressStyle::default_spinner()),
        );
        let style = ProgressStyle::with_template(
            "wave {prefix:>2} {bar:30.green/white} {pos}/{len} updated+failed  {msg}",
        )
        .unwrap_or(ProgressStyle::default_bar());
        let bars: Vec<ProgressBar> = created
            .waves
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let b = mp.add(ProgressBar::new(w.devices));
                b.set_style(style.clone());
                b.set_prefix(format!("{}", i + 1));
                b
            })
            .collect();
        let started = Instant::now();
        let mut last_print = Instant::now() - Duration::from_secs(10);
        let mut rate = RateMeter::new(self.readings_stored());
        let total: u64 = created.waves.iter().map(|w| w.devices).sum();
        let plain = !console_is_tty();
        loop {
            if stop.load(Ordering::SeqCst) {
                mp.clear().ok();
                return Err(interrupted());
            }
            if started.elapsed() > opts.timeout {
                mp.clear().ok();
                return Err(FleetError::Timeout {
                    what: "the rollout to finish".into(),
                    secs: opts.timeout.as_secs(),
                });
            }
            for e in self.service()? {
                let _ = mp.println(format!("{:>7.1} s  {e}", started.elapsed().as_secs_f64()));
                if plain {
                    println!("{:>7.1} s  {e}", started.elapsed().as_secs_f64());
                }
            }
            let s = self.cloud.rollout("v2-weekly")?;
            for (b, w) in bars.iter().zip(&s.waves) {
                b.set_position(w.updated + w.failed);
                b.set_message(format!("{:<8} {}", w.stage, w.gate));
            }
            let stored = self.readings_stored();
            let bytes: u64 = self.link_bytes.iter().map(|c| c.total).sum();
            let per_s = rate.update(stored);
            let line = format!(
                "rollout clock {}  {}  readings stored {stored} ({per_s:.0}/s)  {:.2} link bytes/reading",
                s.now
                    .map(|t| t.strftime("%a %H:%M").to_string())
                    .unwrap_or_default(),
                s.state,
                if stored > 0 {
                    bytes as f64 / stored as f64
                } else {
                    0.0
                },
            );
            head.set_message(line.clone());
            head.tick();
            if plain && last_print.elapsed() >= Duration::from_secs(5) {
                last_print = Instant::now();
                let waves: Vec<String> = s
                    .waves
                    .iter()
                    .map(|w| format!("{}/{}", w.updated + w.failed, w.devices))
                    .collect();
                println!(
                    "{:>7.1} s  {line}  waves {}",
                    started.elapsed().as_secs_f64(),
                    waves.join(" ")
                );
            }
            let finals: u64 = s.waves.iter().map(|w| w.updated + w.failed).sum();
            let failing_home = self
                .gateways
                .iter()
                .find(|g| g.serial() == failing)
                .is_none_or(|g| g.version() != V2 && g.boots() >= 3);
            if finals == total && failing_home {
                for b in &bars {
                    b.finish();
                }
                head.finish_with_message(line);
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub(crate) fn summarize(
        &mut self,
        rollout: RolloutStatus,
        failing: &str,
        stop: &AtomicBool,
    ) -> Result<Summary, FleetError> {
        let mut gateways = Vec::new();
        let mut problems = Vec::new();
        for i in 0..self.gateways.len() {
            let generated = self.gateways[i].finish_radio(Duration::from_secs(120))?;
            let serial = self.gateways[i].serial().to_owned();
            let sql = format!("SELECT count(*) FROM readings WHERE gateway = '{serial}'");
            let deadline = Instant::now() + Duration::from_secs(60);
            let stored = loop {
                let stored: u64 = self
                    .cloud
                    .ingest_query(&sql)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if stored == generated || Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                    break stored;
                }
                self.service()?;
                std::thread::sleep(Duration::from_millis(200));
            };
            let gw = &self.gateways[i];
            if stored != generated {
                problems.push(format!(
                    "{serial}: {generated} readings generated, {stored} stored"
                ));
            }
            let expected = if serial == failing { V1 } else { V2 };
            if gw.version() != expected {
                problems.push(format!(
                    "{serial} runs {} (expected {expected})",
                    gw.version()
                ));
            }
            // On a good slot: the one RAUC reports booted is marked good.
            let rauc = gw.board().status()?;
            let good = rauc
                .slot(gw.booted())
                .and_then(|s| s.boot_status.clone())
                .is_some_and(|b| b == "good");
            if !good {
                problems.push(format!(
                    "{serial}: booted slot {} not marked good",
                    gw.booted()
                ));
            }
            gateways.push(GatewaySummary {
                serial,
                version: gw.version().to_owned(),
                slot: gw.booted().to_string(),
                boots: gw.boots(),
                generated,
                stored,
            });
        }
        let duplicates: u64 = self
            .cloud
            .ingest_query(
                "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY gateway, meter_id, ts HAVING count(*) > 1)",
            )?
            .parse()
            .unwrap_or(u64::MAX);
        if duplicates != 0 {
            problems.push(format!("{duplicates} readings stored twice"));
        }
        // The rollout's figures equal what the gateways did.
        let updated: u64 = rollout.waves.iter().map(|w| w.updated).sum();
        let failed: u64 = rollout.waves.iter().map(|w| w.failed).sum();
        let on_v2 = gateways.iter().filter(|g| g.version == V2).count() as u64;
        if updated != on_v2 || failed != gateways.len() as u64 - on_v2 {
            problems.push(format!(
                "rollout counts {updated} updated / {failed} failed, gateways show {on_v2} on {V2}"
            ));
        }
        Ok(Summary {
            readings_generated: gateways.iter().map(|g| g.generated).sum(),
            readings_stored: gateways.iter().map(|g| g.stored).sum(),
            gateways,
            rollout,
            failing_gateway: failing.to_owned(),
            duplicates,
            link_bytes: self.link_bytes.iter().map(|c| c.total).sum(),
            problems,
        })
    }

    pub(crate) fn shutdown(&mut self) {
        for gw in &mut self.gateways {
            gw.shutdown();
        }
        self.gateways.clear();
        self.cloud.stop();
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Readings per second over the last few seconds.
struct RateMeter {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl RateMeter {
    fn new(start: u64) -> RateMeter {
        RateMeter {
            samples: [(Instant::now(), start)].into(),
        }
    }

    fn update(&mut self, count: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, count));
        while self.samples.len() > 2
            && now.duration_since(self.samples[0].0) > Duration::from_secs(5)
        {
            self.samples.pop_front();
        }
        let (t0, c0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt > 0.0 {
            count.saturating_sub(c0) as f64 / dt
        } else {
            0.0
        }
    }
}

/// The update agent's state (`io.spark.Update1.State`: idle, downloading, installing, …).
pub(crate) fn agent_state(rt: &tokio::runtime::Runtime, gw: &Gateway) -> Option<String> {
    let address = gw.board().bus_address().to_owned();
    rt.block_on(async move {
        let read = async {
            let conn = zbus::connection::Builder::address(address.as_str())?
                .build()
                .await?;
            let p = spark_dbus::Update1Proxy::new(&conn).await?;
            p.state().await
        };
        tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .ok()?
            .ok()
    })
}

/// Bytes sent + received on the gateway's cloud link, from `io.spark.Uplink1` on its bus.
fn link_bytes(rt: &tokio::runtime::Runtime, gw: &Gateway) -> Option<u64> {
    let address = gw.board().bus_address().to_owned();
    rt.block_on(async move {
        let read = async {
            let conn = zbus::connection::Builder::address(address.as_str())?
                .build()
                .await?;
            let p = spark_dbus::Uplink1Proxy::new(&conn).await?;
            zbus::Result::Ok(p.bytes_sent().await? + p.bytes_received().await?)
        };
        tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .ok()?
            .ok()
    })
}

fn console_is_tty() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

pub(crate) fn print_summary(s: &Summary, dashboard: &str) {
    println!("\n\u{1b}[1m== Summary\u{1b}[0m");
    println!(
        "{:<10} {:>8} {:>5} {:>6} {:>10} {:>10}",
        "gateway", "version", "slot", "boots", "generated", "stored"
    );
    for g in &s.gateways {
        println!(
            "{:<10} {:>8} {:>5} {:>6} {:>10} {:>10}{}",
            g.serial,
            g.version,
            g.slot,
            g.boots,
            g.generated,
            g.stored,
            if g.serial == s.failing_gateway {
                "   health check failed on 2.0.0: rolled back"
            } else {
                ""
            }
        );
    }
    let updated: u64 = s.rollout.waves.iter().map(|w| w.updated).sum();
    let failed: u64 = s.rollout.waves.iter().map(|w| w.failed).sum();
    println!(
        "rollout {}: {} — {updated} updated, {failed} failed and rolled back; {} bytes of bundles served",
        s.rollout.id,
        match &s.rollout.reason {
            Some(r) => format!("{} ({r})", s.rollout.state),
            None => s.rollout.state.clone(),
        },
        s.rollout.bytes_served
    );
    println!(
        "telemetry: {} readings generated, {} stored, {} duplicates; {:.2} link bytes per reading (TLS and protocol, both ways)",
        s.readings_generated,
        s.readings_stored,
        s.duplicates,
        if s.readings_stored > 0 {
            s.link_bytes as f64 / s.readings_stored as f64
        } else {
            0.0
        }
    );
    println!("dashboard: {dashboard}/ui");
    if s.ok() {
        println!("\u{1b}[32mall checks passed\u{1b}[0m");
    } else {
        for p in &s.problems {
            println!("\u{1b}[31mPROBLEM\u{1b}[0m {p}");
        }
    }
}
