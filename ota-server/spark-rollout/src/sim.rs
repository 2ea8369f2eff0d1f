//! A simulated fleet that drives a [`Rollout`] through the same calls the server makes, under a
//! [`ManualClock`] stepped one simulated minute at a time (a week runs in about a second).
//!
//! Used by this crate's tests and by `examples/simulate.rs`. Each device polls every 15 minutes
//! (its own phase), is offered the update by [`Rollout::check_in`], reports `downloading` with
//! [`Rollout::report`], installs for 20–40 minutes and reports success or failure; online devices
//! send telemetry every 5 minutes; [`Rollout::advance`] runs every 5 minutes with those last-seen
//! times. Which devices are offline, fail, go silent or vanish is a hash of the device id, so
//! every run is the same.
//!
//! This is the library-level simulation. The protocol-level one (devices speaking HTTPS to
//! `spark-ota`) belongs to the server's tests; it can reuse [`Behaviour`] and [`fleet`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};

use crate::assign::device_point;
use crate::clock::{Clock, ManualClock};
use crate::rollout::{Decision, Phase, Rollout, RolloutEvent, StatusReport, Telemetry};
use crate::target::DeviceInfo;
use crate::window::{in_window, time_zone};

/// Regions of the simulated fleet and their sites' time zones.
pub const REGIONS: [(&str, &str); 5] = [
    ("eu", "Europe/Berlin"),
    ("us", "America/New_York"),
    ("br", "America/Sao_Paulo"),
    ("jp", "Asia/Tokyo"),
    ("au", "Australia/Sydney"),
];

/// `n` devices (`gw-00000`…) of `compatible` `spark-bbb` on `version`: three hardware revisions
/// (`rev-a/b/c`), five regions with their time zones, one site per 40 devices.
pub fn fleet(n: usize, version: &semver::Version) -> Vec<DeviceInfo> {
    (0..n)
        .map(|i| {
            let (region, tz) = REGIONS[(i / 3) % REGIONS.len()];
            DeviceInfo {
                id: format!("gw-{i:05}"),
                compatible: "spark-bbb".into(),
                hardware_rev: format!("rev-{}", ["a", "b", "c"][i % 3]),
                tags: BTreeMap::from([
                    ("region".to_string(), region.to_string()),
                    ("site".to_string(), format!("{region}-site-{}", i / 40)),
                ]),
                version: Some(version.clone()),
                time_zone: Some(tz.to_string()),
            }
        })
        .collect()
}

/// How the simulated devices behave, as shares of the fleet in percent (picked by hash).
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Never checks in, never sends telemetry.
    pub offline_pct: u64,
    /// The release fails to install (every attempt).
    pub fail_pct: u64,
    /// Installs fine, then sends no more telemetry.
    pub silent_pct: u64,
    /// Goes offline for good the moment it is offered the update.
    pub vanish_pct: u64,
}

fn pick(salt: &str, id: &str, pct: u64) -> bool {
    device_point(salt, id) % 100 < pct
}

/// One simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// What the server knows of it (the version changes when it updates).
    pub info: DeviceInfo,
    /// Never heard from.
    pub offline: bool,
    /// The release fails on it.
    pub fails: bool,
    /// Stops sending telemetry after updating.
    pub silent_after_update: bool,
    /// Vanishes when offered.
    pub vanishes: bool,
    /// Minute of the quarter hour it polls at.
    pub poll_phase: i64,
    /// Download and install time, minutes.
    pub install_mins: i64,
    /// Installing now.
    pub installing: bool,
    /// When it vanished.
    pub vanished_at: Option<Timestamp>,
    /// When it updated.
    pub updated_at: Option<Timestamp>,
}

/// The simulated fleet and its clock.
#[derive(Debug)]
pub struct SimFleet {
    clock: ManualClock,
    start: Timestamp,
    devices: Vec<SimDevice>,
    index: HashMap<String, usize>,
    /// The next simulated minute to run (runs continue where the last one stopped).
    next_minute: i64,
    /// Installs finishing at a minute.
    completions: BTreeMap<i64, Vec<usize>>,
    /// Devices that reported a failure so far.
    failed: BTreeSet<usize>,
}

/// What a run observed.
#[derive(Debug, Default, Clone)]
pub struct SimReport {
    /// Distinct devices that had reported a failure when the rollout first paused.
    pub failed_devices_at_pause: Option<usize>,
    /// When it first paused.
    pub paused_at: Option<Timestamp>,
    /// Distinct devices that reported a failure during the run.
    pub failed_devices: usize,
    /// New offers per wave.
    pub offers_per_wave: BTreeMap<usize, usize>,
    /// Offers made outside the device's local maintenance window (must stay 0).
    pub offers_outside_window: usize,
    /// Every engine event, in order.
    pub events: Vec<RolloutEvent>,
}

impl Telemetry for SimFleet {
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
        now.checked_sub(SignedDuration::from_mins((since / 60) % 5))
            .ok()
    }
}

impl SimFleet {
    /// `n` devices on `version` (see [`fleet`]) behaving as `behaviour`, clock at `start`.
    pub fn new(
        n: usize,
        version: &semver::Version,
        behaviour: Behaviour,
        start: Timestamp,
    ) -> SimFleet {
        let b = behaviour;
        let devices: Vec<SimDevice> = fleet(n, version)
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
        SimFleet {
            clock: ManualClock::new(start),
            start,
            devices,
            index,
            next_minute: 0,
            completions: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// The devices as the server would register them.
    pub fn infos(&self) -> Vec<DeviceInfo> {
        self.devices.iter().map(|d| d.info.clone()).collect()
    }

    /// Every simulated device.
    pub fn devices(&self) -> &[SimDevice] {
        &self.devices
    }

    /// One device by id.
    pub fn device(&self, id: &str) -> Option<&SimDevice> {
        self.index.get(id).map(|&i| &self.devices[i])
    }

    /// The simulated clock.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Devices that are online and stay so when offered (the ones that can update).
    pub fn reachable(&self) -> impl Iterator<Item = &SimDevice> {
        self.devices.iter().filter(|d| !d.offline && !d.vanishes)
    }

    /// Runs `minutes` more simulated minutes (from the fleet's start, or where the last run
    /// stopped), calling `on_event` with every engine event; stops at the first pause if
    /// `stop_on_pause`. Between runs the caller may store and reload the rollout, as the server
    /// does between requests. The report covers this run; `failed_devices` counts from the start.
    pub fn run(
        &mut self,
        rollout: &mut Rollout,
        minutes: i64,
        stop_on_pause: bool,
        mut on_event: impl FnMut(&RolloutEvent),
    ) -> SimReport {
        let mut out = SimReport::default();
        let mut completions = std::mem::take(&mut self.completions);
        let mut failed = std::mem::take(&mut self.failed);
        let windows = rollout.spec().windows.clone();
        let target = rollout.spec().release.version.clone();
        let mut note = |events: Vec<RolloutEvent>, out: &mut SimReport, failed: usize, now| {
            for e in events {
                if matches!(e, RolloutEvent::Paused { .. }) && out.paused_at.is_none() {
                    out.paused_at = Some(now);
                    out.failed_devices_at_pause = Some(failed);
                }
                on_event(&e);
                out.events.push(e);
            }
        };
        let first = self.next_minute;
        for m in first..first + minutes {
            self.next_minute = m + 1;
            let Ok(now) = self.start.checked_add(SignedDuration::from_mins(m)) else {
                break;
            };
            self.clock.set(now);
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
                // Invariant: the device was offered (it is installing), so the report applies.
                let events = rollout
                    .report(&d.info.id, report, now)
                    .expect("report of an offered device");
                note(events, &mut out, failed.len(), now);
            }
            // Devices whose poll falls on this minute check in.
            for i in 0..self.devices.len() {
                let d = &self.devices[i];
                if d.offline || d.vanished_at.is_some() || m % 15 != d.poll_phase {
                    continue;
                }
                let Decision::Offer { wave, .. } = rollout.check_in(&d.info, now) else {
                    continue;
                };
                if d.installing {
                    continue;
                }
                *out.offers_per_wave.entry(wave).or_default() += 1;
                let tz = time_zone(d.info.time_zone.as_deref()).unwrap_or(jiff::tz::TimeZone::UTC);
                if !in_window(&windows, &tz, now) {
                    out.offers_outside_window += 1;
                }
                let d = &mut self.devices[i];
                if d.vanishes {
                    d.vanished_at = Some(now);
                    continue;
                }
                d.installing = true;
                let progress = StatusReport::Progress {
                    stage: "downloading".into(),
                };
                // Invariant: just offered.
                let events = rollout.report(&d.info.id, progress, now).expect("offered");
                note(events, &mut out, failed.len(), now);
                completions.entry(m + d.install_mins).or_default().push(i);
            }
            if m % 5 == 0 {
                let events = rollout.advance(now, Some(&*self));
                note(events, &mut out, failed.len(), now);
            }
            if stop_on_pause && matches!(rollout.phase(), Phase::Paused { .. }) {
                break;
            }
        }
        out.failed_devices = failed.len();
        self.completions = completions;
        self.failed = failed;
        out
    }
}
