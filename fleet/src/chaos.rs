//! The chaos suite: the fleet of the main job, with every gateway's cloud link behind a
//! fault-injecting proxy, runs a rollout of 2.0.0 while random faults hit it: `kill -9` of any
//! gateway daemon (restarted as systemd would), power cuts of whole gateways (mid-update
//! included), link cuts, outages and high latency, and crashes of spark-ingest and spark-ota.
//! Then the faults stop, the fleet settles, and the invariants are checked: no reading lost or
//! stored twice, every gateway on 2.0.0 from a slot RAUC reports good, the rollout's counts equal
//! what the gateways run. It prints what it did and what it found.
//!
//! `ci/chaos.sh` runs it long; `fleet/tests/chaos.rs` runs a short version in the test suite.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spark_ota::rollouts::{CreateRollout, RolloutStatus};

use crate::FleetError;
use crate::gateway::DAEMONS;
use crate::run::{
    Fleet, Setup, Summary, V2, agent_state, bring_up, interrupted, print_summary, step,
};

/// What the chaos run is asked to do.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub out: PathBuf,
    pub gateways: usize,
    pub meters: u32,
    pub clock_factor: u32,
    /// How long faults are injected (real time).
    pub chaos: Duration,
    /// Mean time between faults.
    pub interval: Duration,
    /// Seed of the fault schedule (same seed, same sequence of choices).
    pub seed: u64,
    /// Bound on the fleet settling after the faults stop.
    pub settle: Duration,
    pub bin_dir: Option<PathBuf>,
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    pub daemon_kills: u32,
    pub power_cuts: u32,
    pub power_cuts_mid_update: u32,
    pub link_cuts: u32,
    pub link_outages: u32,
    pub slow_links: u32,
    pub ingest_crashes: u32,
    pub ota_crashes: u32,
}

impl Faults {
    pub fn total(&self) -> u32 {
        self.daemon_kills
            + self.power_cuts
            + self.link_cuts
            + self.link_outages
            + self.slow_links
            + self.ingest_crashes
            + self.ota_crashes
    }
}

/// A fault that ends by itself after a while.
struct Pending {
    until: Instant,
    gateway: usize,
    kind: PendingKind,
}

enum PendingKind {
    LinkUp,
    Fast,
}

/// xorshift64*: a reproducible schedule from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Runs the chaos suite; `stop` (Ctrl-C) ends it early and cleanly.
pub fn run(opts: &ChaosOptions, stop: &AtomicBool) -> Result<(Summary, Faults), FleetError> {
    let (mut fleet, uploads) = bring_up(
        &Setup {
            out: opts.out.clone(),
            gateways: opts.gateways,
            meters: opts.meters,
            clock_factor: opts.clock_factor,
            api: false,
            proxies: true,
            restart_on_failure: true,
            // A push lost in an ingest crash is made up by the poll.
            poll_interval_secs: 10,
            // A cellular download: a megabyte takes seconds, so faults land mid-update.
            rate_limit: Some(256 << 10),
            webui: false,
            bin_dir: opts.bin_dir.clone(),
        },
        stop,
    )?;
    step(&format!(
        "Rollout of 2.0.0 under chaos for {} s (seed {}): kill -9, power cuts, link faults, cloud crashes",
        opts.chaos.as_secs(),
        opts.seed
    ));
    // Chaos makes gateways go quiet and fail transiently by design: the telemetry gate is off
    // and the failure gate lenient, so what is judged at the end is the fleet's state.
    // Waves spread over the chaos: the last opens at 60 % of it, so faults hit units before,
    // during and after their update.
    let hours = |share: f64| {
        (opts.chaos.as_secs_f64() * f64::from(opts.clock_factor) * share / 3600.0).round() as u64
    };
    let plan = format!(
        "25%@0h,60%@{}h,100%@{}h",
        hours(0.3).max(1),
        hours(0.6).max(2)
    );
    let req: CreateRollout = serde_json::from_value(serde_json::json!({
        "release": uploads[1].release,
        "id": "v2-chaos",
        "plan": plan,
        "gates": {"min_sample": 1, "max_failure_bp": 5000, "soak": "PT1H", "telemetry": null},
    }))
    .map_err(|e| FleetError::Release(format!("rollout request: {e}")))?;
    let created = fleet.cloud.create_rollout(&req)?;
    println!(
        "waves: {}",
        created
            .waves
            .iter()
            .map(|w| format!("{}% ({} units)", w.share, w.devices))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut rng = Rng(opts.seed.max(1));
    let mut faults = Faults::default();
    let mut pending: Vec<Pending> = Vec::new();
    let started = Instant::now();
    let mut next_fault = started;
    while started.elapsed() < opts.chaos {
        if stop.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        for e in fleet.service()? {
            println!("{:>7.1} s  {e}", started.elapsed().as_secs_f64());
        }
        let now = Instant::now();
        pending.retain(|p| {
            if p.until > now {
                return true;
            }
            match p.kind {
                PendingKind::LinkUp => fleet.proxies[p.gateway].set_down(false),
                PendingKind::Fast => fleet.proxies[p.gateway].set_latency(Duration::ZERO),
            }
            false
        });
        if now >= next_fault {
            let what = inject(&mut fleet, &mut rng, &mut faults, &mut pending)?;
            println!("{:>7.1} s  fault: {what}", started.elapsed().as_secs_f64());
            // Exponential-ish spacing around the mean: ½ to 1½ of it.
            let jitter = 0.5 + rng.below(1000) as f64 / 1000.0;
            next_fault = now + opts.interval.mul_f64(jitter);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    step("Faults stop; the fleet settles");
    for p in &fleet.proxies {
        p.set_down(false);
        p.set_latency(Duration::ZERO);
    }
    let status = settle(&mut fleet, opts.settle, stop)?;
    step("Telemetry: ending the radios' runs, checking every reading arrived once");
    let summary = fleet.summarize(status, "", stop)?;
    print_summary(&summary, &fleet.cloud.admin_url());
    print_faults(&faults);
    fleet.shutdown();
    Ok((summary, faults))
}

/// One random fault; returns what it was.
fn inject(
    fleet: &mut Fleet,
    rng: &mut Rng,
    faults: &mut Faults,
    pending: &mut Vec<Pending>,
) -> Result<String, FleetError> {
    let g = rng.below(fleet.gateways.len() as u64) as usize;
    let serial = fleet.gateways[g].serial().to_owned();
    Ok(match rng.below(100) {
        0..30 => {
            let name = DAEMONS[rng.below(DAEMONS.len() as u64) as usize];
            fleet.gateways[g].kill_daemon(name);
            faults.daemon_kills += 1;
            format!("kill -9 {name} on {serial}")
        }
        30..45 => {
            // Mostly a unit in the middle of its update, when there is one: the case that
            // matters.
            let busy: Vec<usize> = (0..fleet.gateways.len())
                .filter(|&i| update_state(fleet, i))
                .collect();
            let g = if !busy.is_empty() && rng.below(10) < 7 {
                busy[rng.below(busy.len() as u64) as usize]
            } else {
                g
            };
            let serial = fleet.gateways[g].serial().to_owned();
            let updating = busy.contains(&g);
            fleet.gateways[g].power_cut()?;
            faults.power_cuts += 1;
            if updating {
                faults.power_cuts_mid_update += 1;
            }
            format!(
                "power cut of {serial}{}; it booted {} on slot {}",
                if updating { " during its update" } else { "" },
                fleet.gateways[g].version(),
                fleet.gateways[g].booted()
            )
        }
        45..65 => {
            fleet.proxies[g].cut();
            faults.link_cuts += 1;
            format!("link of {serial} cut")
        }
        65..75 => {
            let secs = 1 + rng.below(4);
            fleet.proxies[g].set_down(true);
            pending.push(Pending {
                until: Instant::now() + Duration::from_secs(secs),
                gateway: g,
                kind: PendingKind::LinkUp,
            });
            faults.link_outages += 1;
            format!("no coverage at {serial} for {secs} s")
        }
        75..85 => {
            let ms = 200 + rng.below(800);
            fleet.proxies[g].set_latency(Duration::from_millis(ms));
            pending.push(Pending {
                until: Instant::now() + Duration::from_secs(5),
                gateway: g,
                kind: PendingKind::Fast,
            });
            faults.slow_links += 1;
            format!("{ms} ms latency on {serial}'s link for 5 s")
        }
        85..93 => {
            fleet.cloud.crash_ingest()?;
            faults.ingest_crashes += 1;
            "kill -9 spark-ingest, restarted".into()
        }
        _ => {
            fleet.cloud.crash_ota()?;
            faults.ota_crashes += 1;
            "kill -9 spark-ota, restarted".into()
        }
    })
}

/// Whether the gateway's agent is in the middle of an update (its D-Bus state).
fn update_state(fleet: &Fleet, g: usize) -> bool {
    agent_state(&fleet.rt, &fleet.gateways[g])
        .is_some_and(|s| !matches!(s.as_str(), "idle" | "failed"))
}

/// Runs the fleet without faults until every gateway runs 2.0.0 and the rollout counts every
/// unit updated (or `limit` passes: then the summary reports what is off).
fn settle(
    fleet: &mut Fleet,
    limit: Duration,
    stop: &AtomicBool,
) -> Result<RolloutStatus, FleetError> {
    let started = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(interrupted());
        }
        for e in fleet.service()? {
            println!("settling {:>5.1} s  {e}", started.elapsed().as_secs_f64());
        }
        let s = fleet.cloud.rollout("v2-chaos")?;
        let updated: u64 = s.waves.iter().map(|w| w.updated).sum();
        let all_v2 = fleet.gateways.iter().all(|g| g.version() == V2);
        if (updated == fleet.gateways.len() as u64 && all_v2) || started.elapsed() > limit {
            println!(
                "settled after {:.1} s: rollout {} ({}), {updated} of {} updated",
                started.elapsed().as_secs_f64(),
                s.state,
                s.reason.clone().unwrap_or_default(),
                fleet.gateways.len()
            );
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn print_faults(f: &Faults) {
    println!(
        "faults injected: {} — {} kill -9 of gateway daemons, {} power cuts ({} during an update), {} link cuts, {} coverage outages, {} slow-link spells, {} spark-ingest crashes, {} spark-ota crashes",
        f.total(),
        f.daemon_kills,
        f.power_cuts,
        f.power_cuts_mid_update,
        f.link_cuts,
        f.link_outages,
        f.slow_links,
        f.ingest_crashes,
        f.ota_crashes
    );
}
