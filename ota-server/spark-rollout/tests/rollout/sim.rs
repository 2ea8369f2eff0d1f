//! Fleet simulation (issue 5 §6) at library level: 2000 devices poll every 15 minutes with their
//! own phase, download and install for 20–40 minutes, report progress and the result, and send
//! telemetry every 5 minutes, all under a `ManualClock` stepped one simulated minute at a time
//! (a week runs in about a second). The server's calls are the engine's: `check_in` at every
//! poll, `report` at every status change, `advance` every 5 simulated minutes with the fleet's
//! telemetry last-seen times.
//!
//! Which devices are offline, fail, go silent or vanish is decided by a hash of the device id,
//! so every run is the same.

use std::collections::{BTreeMap, HashMap};

use spark_rollout::assign::device_point;
use spark_rollout::jiff::Timestamp;
use spark_rollout::window::{in_window, time_zone};
use spark_rollout::{
    Clock, Decision, DeviceInfo, Gates, MaintenanceWindow, ManualClock, PauseCause, Phase, Plan,
    Rollout, RolloutSpec, StatusReport, Telemetry, WaveStage,
};

use crate::common::{fleet, mins, release, ts};

const START: &str = "2026-11-30T00:00:00Z";

/// Per-device behaviour, as shares in percent chosen by hash.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Never checks in, never sends telemetry.
    offline_pct: u64,
    /// The release fails to install.
    fail_pct: u64,
    /// Installs fine, then sends no more telemetry.
    silent_pct: u64,
    /// Goes offline for good the moment it is offered the update.
    vanish_pct: u64,
}

fn pick(salt: &str, id: &str, pct: u64) -> bool {
    device_point(salt, id) % 100 < pct
}

struct SimDevice {
    info: DeviceInfo,
    offline: bool,
    fails: bool,
    silent_after_update: bool,
    vanishes: bool,
    poll_phase: i64,
    install_mins: i64,
    installing: bool,
    vanished_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
}

struct Sim {
    clock: ManualClock,
    start: Timestamp,
    devices: Vec<SimDevice>,
    index: HashMap<String, usize>,
}

impl Telemetry for Sim {
    fn last_seen(&self, device: &str) -> Option<Timestamp> {
        let d = &self.devices[*self.index.get(device)?];
        if d.offline {
            return None;
        }
        if let Some(at) = d.vanished_at {
            return Some(at);
        }
        if d.silent_after_update && d.updated_at.is_some() {
            return d.updated_at;
        }
        // Telemetry every 5 minutes.
        let now = self.clock.now();
        let since = now.duration_since(self.start).as_secs();
        Some(now.checked_sub(mins((since / 60) % 5)).unwrap())
    }
}

#[derive(Default)]
struct Outcome {
    /// Distinct devices that reported a failure, when the rollout paused and at the end.
    failed_devices_at_pause: Option<usize>,
    failed_devices: usize,
    /// Offers per wave.
    offers_per_wave: BTreeMap<usize, usize>,
    /// Offers made outside the device's local maintenance window (must stay 0).
    offers_outside_window: usize,
    /// Minute of each event.
    paused_at_min: Option<i64>,
}

impl Sim {
    fn new(n: usize, b: Behaviour) -> Sim {
        let start = ts(START);
        let devices: Vec<SimDevice> = fleet(n, "1.0.0")
            .into_iter()
            .map(|info| {
                let id = info.id.clone();
                SimDevice {
                    offline: pick("offline", &id, b.offline_pct),
                    fails: pick("fails", &id, b.fail_pct),
                    silent_after_update: pick("silent", &id, b.silent_pct),
                    vanishes: pick("vanish", &id, b.vanish_pct),
                    poll_phase: (device_point("phase", &id) % 15) as i64,
                    install_mins: 20 + (device_point("install", &id) % 21) as i64,
                    installing: false,
                    vanished_at: None,
                    updated_at: None,
                    info,
                }
            })
            .collect();
        let index = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.info.id.clone(), i))
            .collect();
        Sim {
            clock: ManualClock::new(start),
            start,
            devices,
            index,
        }
    }

    fn fleet(&self) -> Vec<DeviceInfo> {
        self.devices.iter().map(|d| d.info.clone()).collect()
    }

    /// Runs `minutes` simulated minutes; stops early when the rollout pauses if `stop_on_pause`.
    fn run(&mut self, rollout: &mut Rollout, minutes: i64, stop_on_pause: bool) -> Outcome {
        let mut out = Outcome::default();
        let mut completions: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut failed: std::collections::BTreeSet<usize> = Default::default();
        let windows = rollout.spec().windows.clone();
        let target = rollout.spec().release.version.clone();
        for m in 0..=minutes {
            self.clock.set(self.start.checked_add(mins(m)).unwrap());
            let now = self.clock.now();
            // Installs that finish now report their result.
            for i in completions.remove(&m).unwrap_or_default() {
                let d = &mut self.devices[i];
                d.installing = false;
                let report = if d.fails {
                    failed.insert(i);
                    StatusReport::Failed {
                        code: "install_failed".into(),
                    }
                } else {
                    d.info.version = Some(target.clone());
                    d.updated_at = Some(now);
                    StatusReport::Succeeded
                };
                let events = rollout.report(&d.info.id, report, now).unwrap();
                if !events.is_empty()
                    && out.failed_devices_at_pause.is_none()
                    && let Phase::Paused { .. } = rollout.phase()
                {
                    out.failed_devices_at_pause = Some(failed.len());
                    out.paused_at_min = Some(m);
                }
            }
            // Devices whose poll falls on this minute check in.
            for i in 0..self.devices.len() {
                let d = &self.devices[i];
                if d.offline || d.vanished_at.is_some() || m % 15 != d.poll_phase {
                    continue;
                }
                if let Decision::Offer { wave, .. } = rollout.check_in(&d.info, now) {
                    if d.installing {
                        continue;
                    }
                    *out.offers_per_wave.entry(wave).or_default() += 1;
                    let tz = time_zone(d.info.time_zone.as_deref()).unwrap();
                    if !in_window(&windows, &tz, now) {
                        out.offers_outside_window += 1;
                    }
                    let d = &mut self.devices[i];
                    if d.vanishes {
                        d.vanished_at = Some(now);
                        continue;
                    }
                    d.installing = true;
                    rollout
                        .report(
                            &d.info.id,
                            StatusReport::Progress {
                                stage: "downloading".into(),
                            },
                            now,
                        )
                        .unwrap();
                    completions.entry(m + d.install_mins).or_default().push(i);
                }
            }
            if m % 5 == 0 {
                let events = rollout.advance(now, Some(&*self));
                if out.failed_devices_at_pause.is_none()
                    && events
                        .iter()
                        .any(|e| matches!(e, spark_rollout::RolloutEvent::Paused { .. }))
                {
                    out.failed_devices_at_pause = Some(failed.len());
                    out.paused_at_min = Some(m);
                }
            }
            if stop_on_pause && out.paused_at_min.is_some() {
                break;
            }
        }
        out.failed_devices = failed.len();
        out
    }

    fn online_ids(&self) -> impl Iterator<Item = &SimDevice> {
        self.devices.iter().filter(|d| !d.offline && !d.vanishes)
    }
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
    let mut sim = Sim::new(
        2000,
        Behaviour {
            fail_pct: 20,
            ..Behaviour::default()
        },
    );
    let spec = weekly("1.1.0");
    let gates = spec.gates.clone();
    let mut r = Rollout::create("bad-1", spec, &sim.fleet(), sim.clock.now()).unwrap();
    let out = sim.run(&mut r, 2 * 1440, false);

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
    assert!(
        out.paused_at_min.unwrap() < 12 * 60,
        "paused at minute {:?}",
        out.paused_at_min
    );
    let text = reason.to_string();
    assert!(
        text.contains("wave 1:") && text.contains("failed"),
        "{text}"
    );
    eprintln!(
        "bad release: wave 0 = {wave0} devices, paused after {} min with {at_pause} failed (bound {bound}): {text}",
        out.paused_at_min.unwrap()
    );
}

/// (b) A good release reaches 100 % on the planned schedule, only inside each site's
/// maintenance window, with 10 % of the fleet offline and 2 % vanishing mid-update.
#[test]
fn good_release_reaches_everyone_on_schedule() {
    let mut sim = Sim::new(
        2000,
        Behaviour {
            offline_pct: 10,
            vanish_pct: 2,
            ..Behaviour::default()
        },
    );
    let mut spec = weekly("1.1.0");
    spec.windows =
        vec![MaintenanceWindow::daily("01:00".parse().unwrap(), "05:00".parse().unwrap()).unwrap()];
    let mut r = Rollout::create("good-1", spec, &sim.fleet(), sim.clock.now()).unwrap();
    let out = sim.run(&mut r, 6 * 1440, false);

    for k in 0..4 {
        assert_eq!(
            opened_at(&r, k),
            Some(r.planned_at(k)),
            "wave {k} did not open on schedule: {:?}",
            r.waves()[k]
        );
    }
    assert!(matches!(r.phase(), Phase::Done { .. }), "{:?}", r.phase());
    assert_eq!(out.offers_outside_window, 0);
    let not_updated: Vec<&str> = sim
        .online_ids()
        .filter(|d| d.updated_at.is_none())
        .map(|d| d.info.id.as_str())
        .collect();
    assert!(
        not_updated.is_empty(),
        "online devices left behind: {not_updated:?}"
    );
    // Everything by the end of day 5 (site-local windows all fall within the UTC day here).
    let last = sim.online_ids().filter_map(|d| d.updated_at).max().unwrap();
    assert!(
        last < r
            .planned_at(3)
            .checked_add(crate::common::hours(24))
            .unwrap()
    );
    let status = r.status(sim.clock.now(), Some(&sim));
    for w in &status.waves {
        assert_eq!(w.counts.failed, 0);
        assert_eq!(w.counts.silent, 0);
    }
}

/// (c) Offline devices (40 % of the fleet, 3 % more vanishing mid-update) do not stall the waves.
#[test]
fn offline_devices_do_not_stall() {
    let mut sim = Sim::new(
        2000,
        Behaviour {
            offline_pct: 40,
            vanish_pct: 3,
            ..Behaviour::default()
        },
    );
    let mut r =
        Rollout::create("offline-1", weekly("1.1.0"), &sim.fleet(), sim.clock.now()).unwrap();
    sim.run(&mut r, 6 * 1440, false);
    for k in 0..4 {
        assert_eq!(opened_at(&r, k), Some(r.planned_at(k)), "wave {k}");
    }
    assert!(matches!(r.phase(), Phase::Done { .. }));
    assert!(sim.online_ids().all(|d| d.updated_at.is_some()));
}

/// (c) With half the wave offline and 15 % of the rest failing, the rate over devices that
/// reported (15 %) trips a 10 % gate although failures are only ~7.5 % of the whole wave.
#[test]
fn offline_devices_do_not_dilute_the_failure_rate() {
    let mut sim = Sim::new(
        2000,
        Behaviour {
            offline_pct: 50,
            fail_pct: 15,
            ..Behaviour::default()
        },
    );
    let mut gates = Gates::weekly();
    gates.max_failure_bp = 1000;
    let spec = RolloutSpec::with(
        release("1.1.0"),
        Plan::parse("10%@0d,100%@1d").unwrap(),
        gates,
    );
    let mut r = Rollout::create("dilute-1", spec, &sim.fleet(), sim.clock.now()).unwrap();
    sim.run(&mut r, 1440, true);
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
    let mut sim = Sim::new(
        2000,
        Behaviour {
            silent_pct: 20,
            ..Behaviour::default()
        },
    );
    let mut r =
        Rollout::create("silent-1", weekly("1.1.0"), &sim.fleet(), sim.clock.now()).unwrap();
    sim.run(&mut r, 2 * 1440, true);
    let Phase::Paused { reason } = r.phase() else {
        panic!("expected a pause, got {:?}", r.phase());
    };
    assert_eq!(reason.wave, Some(0));
    let PauseCause::TelemetrySilent { examples, .. } = &reason.cause else {
        panic!("{reason}");
    };
    for id in examples {
        let d = &sim.devices[sim.index[id]];
        assert!(d.silent_after_update, "{id} is not a silent device");
    }
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
    eprintln!("telemetry gate: {reason}");
}
