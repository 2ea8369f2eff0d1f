//! Runs a rollout over a simulated fleet under a time-compressed clock and prints its timeline:
//! `cargo run -p spark-rollout --example simulate -- --fail-pct 20`.
//! See `spark_rollout::sim` for how the devices behave.

use clap::Parser;
use spark_rollout::jiff::Timestamp;
use spark_rollout::sim::{Behaviour, SimFleet};
use spark_rollout::{
    Clock, Gates, MaintenanceWindow, Plan, ReleaseTarget, Rollout, RolloutEvent, RolloutSpec,
};

/// Simulate a staged rollout.
#[derive(Parser)]
struct Args {
    /// Devices in the fleet.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Wave plan: `weekly`, `fast` or e.g. `1%@0d,10%@1d,50%@3d,100%@5d`.
    #[arg(long, default_value = "weekly")]
    plan: String,
    /// Percent of devices on which the release fails.
    #[arg(long, default_value_t = 0)]
    fail_pct: u64,
    /// Percent of devices never online.
    #[arg(long, default_value_t = 10)]
    offline_pct: u64,
    /// Percent of devices that stop sending telemetry after updating.
    #[arg(long, default_value_t = 0)]
    silent_pct: u64,
    /// Maintenance window in site-local time, e.g. `01:00-05:00` (none: any time).
    #[arg(long)]
    window: Option<String>,
    /// Simulated days to run.
    #[arg(long, default_value_t = 6)]
    days: i64,
    /// Start (UTC).
    #[arg(long, default_value = "2026-11-30T00:00:00Z")]
    start: Timestamp,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Plan::parse(&args.plan)?;
    let gates = if plan.name() == "fast" {
        Gates::fast()
    } else {
        Gates::weekly()
    };
    let release = ReleaseTarget {
        release_id: "rel-1.1.0".into(),
        compatible: "spark-bbb".into(),
        version: "1.1.0".parse()?,
        min_version: None,
        allow_downgrade: false,
    };
    let mut spec = RolloutSpec::with(release, plan, gates);
    if let Some(w) = &args.window {
        let (a, b) = w
            .split_once('-')
            .ok_or_else(|| anyhow::anyhow!("--window wants START-END, e.g. 01:00-05:00"))?;
        spec.windows = vec![MaintenanceWindow::daily(a.parse()?, b.parse()?)?];
    }
    let behaviour = Behaviour {
        offline_pct: args.offline_pct,
        fail_pct: args.fail_pct,
        silent_pct: args.silent_pct,
        vanish_pct: 0,
    };
    let mut sim = SimFleet::new(args.devices, &"1.0.0".parse()?, behaviour, args.start);
    let mut rollout = Rollout::create("sim", spec, &sim.infos(), args.start)?;
    println!(
        "{} devices ({}% offline, {}% failing, {}% going silent), plan {}, {} targeted",
        args.devices,
        args.offline_pct,
        args.fail_pct,
        args.silent_pct,
        rollout.spec().plan,
        rollout.devices().count()
    );
    let started = std::time::Instant::now();
    let start = args.start;
    let report = sim.run(&mut rollout, args.days * 1440, false, |e| {
        let (at, what) = match e {
            RolloutEvent::WaveOpened { wave, at } => (at, format!("wave {} opened", wave + 1)),
            RolloutEvent::SoakStarted { wave, at } => (
                at,
                format!("wave {} sample complete, soak started", wave + 1),
            ),
            RolloutEvent::WavePassed { wave, at } => (at, format!("wave {} passed", wave + 1)),
            RolloutEvent::Paused { reason } => (
                &reason.at,
                format!("PAUSED ({}): {reason}", reason.cause.code()),
            ),
            RolloutEvent::Done { at } => (at, "done: every wave passed".to_string()),
        };
        println!("{:>12}  {what}", format!("{:#}", at.duration_since(start)));
    });
    let now = sim.clock().now();
    println!(
        "\nafter {} simulated days ({:.2?} real): phase {}",
        args.days,
        started.elapsed(),
        rollout.phase().name()
    );
    println!("wave  share  stage     size  reachable  succeeded  failed  silent");
    for w in rollout.status(now, Some(&sim)).waves {
        let c = w.counts;
        println!(
            "{:>4}  {:>5}  {:<8} {:>5}  {:>9}  {:>9}  {:>6}  {:>6}",
            w.index + 1,
            spark_rollout::plan::format_share(w.share_bp),
            w.stage.name(),
            c.size,
            c.reachable,
            c.succeeded,
            c.failed,
            c.silent
        );
    }
    println!("devices that reported a failure: {}", report.failed_devices);
    println!(
        "persisted state: {} bytes of JSON",
        serde_json::to_vec(&rollout)?.len()
    );
    Ok(())
}
