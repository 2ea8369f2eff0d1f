//! Fleet simulation (issue 5 §6) at library level: 2000 devices poll every 15 minutes with their
//! own phase, download and install for 20–40 minutes, report progress and the result, and send
//! telemetry every 5 minutes, all under a `ManualClock` stepped one simulated minute at a time
//! (a week runs in about a second). The server's calls are the engine's: `check_in` at every
//! poll, `report` at every status change, `advance` every 5 simulated minutes with the fleet's
//! telemetry last-seen times.
//!
//! Which devices are offline, fail, go silent or vanish is decided by a hash of the device id,
//! so every run is the same.

use spark_rollout::jiff::Timestamp;
use spark_rollout::sim::{Behaviour, SimFleet, SimReport};
use spark_rollout::{
    Clock, Gates, MaintenanceWindow, PauseCause, Phase, Plan, Rollout, RolloutSpec, WaveStage,
};

use crate::common::{release, ts};

const START: &str = "2026-11-30T00:00:00Z";

fn fleet_of(b: Behaviour) -> SimFleet {
    SimFleet::new(2000, &"1.0.0".parse().unwrap(), b, ts(START))
}

fn run(sim: &mut SimFleet, r: &mut Rollout, minutes: i64, stop_on_pause: bool) -> SimReport {
    sim.run(r, minutes, stop_on_pause, |_| {})
}

fn weekly(version: &str) -> RolloutSpec {
    RolloutSpec::weekly(release(version))
}

fn opened_at(r: &Rollout, k: usize) -> Option<Timestamp> {
    r.waves()[k].stage.opened_at()
}

/// (a) A release that fails on 20 % of devices pauses itself in the first wave, before more than
/// threshold × wave + sample devices have failed, and no device beyond the first wave is offered.
#[test]
fn bad_release_pauses_in_first_wave() {
    let mut sim = fleet_of(Behaviour {
        fail_pct: 20,
        ..Behaviour::default()
    });
    let spec = weekly("1.1.0");
    let gates = spec.gates.clone();
    let mut r = Rollout::create("bad-1", spec, &sim.infos(), sim.clock().now()).unwrap();
    let out = run(&mut sim, &mut r, 2 * 1440, false);

    let Phase::Paused { reason } = r.phase() else {
        panic!("expected a pause, got {:?}", r.phase());
    };
    assert_eq!(reason.wave, Some(0));
    assert_eq!(reason.cause.code(), "failure_rate");
    let wave0 = r.devices().filter(|(_, d)| d.wave == 0).count();
    let bound = gates.max_failure_bp as usize * wave0 / 10_000 + gates.min_sample as usize;
    let at_pause = out.failed_devices_at_pause.unwrap();
    assert!(
        at_pause <= bound,
        "{at_pause} failed devices at pause, bound {bound}"
    );
    // Devices already updating when it paused still finish; even counting them the bound holds.
    assert!(out.failed_devices <= bound);
    assert!(at_pause >= 1);
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
    assert_eq!(
        out.offers_per_wave.keys().copied().collect::<Vec<_>>(),
        vec![0]
    );
    let paused_after = out.paused_at.unwrap().duration_since(ts(START));
    assert!(
        paused_after < crate::common::hours(12),
        "paused after {paused_after:#}"
    );
    let text = reason.to_string();
    assert!(
        text.contains("wave 1:") && text.contains("failed"),
        "{text}"
    );
    eprintln!(
        "bad release: wave 0 = {wave0} devices, paused after {paused_after:#} with {at_pause} failed (bound {bound}): {text}"
    );
}

/// (b) A good release reaches 100 % on the planned schedule, only inside each site's
/// maintenance window, with 10 % of the fleet offline and 2 % vanishing mid-update.
#[test]
fn good_release_reaches_everyone_on_schedule() {
    let mut sim = fleet_of(Behaviour {
        offline_pct: 10,
        vanish_pct: 2,
        ..Behaviour::default()
    });
    let mut spec = weekly("1.1.0");
    spec.windows =
        vec![MaintenanceWindow::daily("01:00".parse().unwrap(), "05:00".parse().unwrap()).unwrap()];
    let mut r = Rollout::create("good-1", spec, &sim.infos(), sim.clock().now()).unwrap();
    // Store and reload the rollout every 6 simulated hours, split as a server would keep it
    // (header row + device rows, JSON), so the run also proves the persisted state is complete.
    let mut offers_outside_window = 0;
    for _ in 0..(6 * 24 / 6) {
        let out = run(&mut sim, &mut r, 6 * 60, false);
        offers_outside_window += out.offers_outside_window;
        let header = serde_json::to_string(&r.header()).unwrap();
        let rows: Vec<(String, String)> = r
            .devices()
            .map(|(id, d)| (id.to_string(), serde_json::to_string(d).unwrap()))
            .collect();
        r = Rollout::from_parts(
            serde_json::from_str(&header).unwrap(),
            rows.into_iter()
                .map(|(id, d)| (id, serde_json::from_str(&d).unwrap())),
        )
        .unwrap();
    }
    for k in 0..4 {
        assert_eq!(
            opened_at(&r, k),
            Some(r.planned_at(k)),
            "wave {k} did not open on schedule: {:?}",
            r.waves()[k]
        );
    }
    assert!(matches!(r.phase(), Phase::Done { .. }), "{:?}", r.phase());
    assert_eq!(offers_outside_window, 0);
    let not_updated: Vec<&str> = sim
        .reachable()
        .filter(|d| d.updated_at.is_none())
        .map(|d| d.info.id.as_str())
        .collect();
    assert!(
        not_updated.is_empty(),
        "online devices left behind: {not_updated:?}"
    );
    // Everything by the end of day 5 (site-local windows all fall within the UTC day here).
    let last = sim.reachable().filter_map(|d| d.updated_at).max().unwrap();
    assert!(
        last < r
            .planned_at(3)
            .checked_add(crate::common::hours(24))
            .unwrap()
    );
    let status = r.status(sim.clock().now(), Some(&sim));
    for w in &status.waves {
        assert_eq!(w.counts.failed, 0);
        assert_eq!(w.counts.silent, 0);
    }
}

/// (c) Offline devices (40 % of the fleet, 3 % more vanishing mid-update) do not stall the waves.
#[test]
fn offline_devices_do_not_stall() {
    let mut sim = fleet_of(Behaviour {
        offline_pct: 40,
        vanish_pct: 3,
        ..Behaviour::default()
    });
    let mut r = Rollout::create(
        "offline-1",
        weekly("1.1.0"),
        &sim.infos(),
        sim.clock().now(),
    )
    .unwrap();
    run(&mut sim, &mut r, 6 * 1440, false);
    for k in 0..4 {
        assert_eq!(opened_at(&r, k), Some(r.planned_at(k)), "wave {k}");
    }
    assert!(matches!(r.phase(), Phase::Done { .. }));
    assert!(sim.reachable().all(|d| d.updated_at.is_some()));
}

/// (c) With half the wave offline and 15 % of the rest failing, the rate over devices that
/// reported (15 %) trips a 10 % gate although failures are only ~7.5 % of the whole wave.
#[test]
fn offline_devices_do_not_dilute_the_failure_rate() {
    let mut sim = fleet_of(Behaviour {
        offline_pct: 50,
        fail_pct: 15,
        ..Behaviour::default()
    });
    let mut gates = Gates::weekly();
    gates.max_failure_bp = 1000;
    let spec = RolloutSpec::with(
        release("1.1.0"),
        Plan::parse("10%@0d,100%@1d").unwrap(),
        gates,
    );
    let mut r = Rollout::create("dilute-1", spec, &sim.infos(), sim.clock().now()).unwrap();
    run(&mut sim, &mut r, 1440, true);
    let Phase::Paused { reason } = r.phase() else {
        panic!("expected a pause, got {:?}", r.phase());
    };
    let PauseCause::FailureRate {
        failed,
        reported,
        wave_size,
        ..
    } = reason.cause
    else {
        panic!("{reason}");
    };
    assert!(failed * 10 > reported, "{reason}");
    assert!(
        failed * 10 < wave_size,
        "diluted rate would have tripped too: {reason}"
    );
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
}

/// The telemetry-health gate: a release that installs fine but stops 20 % of units sending
/// telemetry pauses in the first wave with the silent devices named.
#[test]
fn silent_units_pause_the_rollout() {
    let mut sim = fleet_of(Behaviour {
        silent_pct: 20,
        ..Behaviour::default()
    });
    let mut r =
        Rollout::create("silent-1", weekly("1.1.0"), &sim.infos(), sim.clock().now()).unwrap();
    run(&mut sim, &mut r, 2 * 1440, true);
    let Phase::Paused { reason } = r.phase() else {
        panic!("expected a pause, got {:?}", r.phase());
    };
    assert_eq!(reason.wave, Some(0));
    let PauseCause::TelemetrySilent { examples, .. } = &reason.cause else {
        panic!("{reason}");
    };
    for id in examples {
        let d = sim.device(id).unwrap();
        assert!(d.silent_after_update, "{id} is not a silent device");
    }
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
    eprintln!("telemetry gate: {reason}");
}

/// The `fast` preset (10 % now, 50 % after 2 h, 100 % after 6 h) with its gates also keeps its
/// schedule on the same fleet.
#[test]
fn fast_plan_keeps_its_schedule() {
    let mut sim = fleet_of(Behaviour {
        offline_pct: 10,
        ..Behaviour::default()
    });
    let mut r = Rollout::create(
        "fast-1",
        RolloutSpec::fast(release("1.1.0")),
        &sim.infos(),
        sim.clock().now(),
    )
    .unwrap();
    run(&mut sim, &mut r, 12 * 60, false);
    for k in 0..3 {
        assert_eq!(opened_at(&r, k), Some(r.planned_at(k)), "wave {k}");
    }
    assert!(matches!(r.phase(), Phase::Done { .. }), "{:?}", r.phase());
    assert!(sim.reachable().all(|d| d.updated_at.is_some()));
}
