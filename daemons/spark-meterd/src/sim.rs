//! A meter-radio simulator that stands in for the radio module in development and tests.
//!
//! Three layers:
//! - [`Simulator`]: N meters with realistic, seeded and deterministic load shapes (households
//!   with morning and evening peaks, businesses with a weekday daytime plateau, a little noise),
//!   read on a schedule (default every 900 s), with occasional missed reads, register resets and
//!   late (off-schedule) reads. Pure: [`Simulator::next_interval`] returns one interval's readings.
//! - [`Module`]: the concentrator's memory, as a real module keeps it in flash: readings get
//!   sequence numbers and stay until the host acknowledges them, so a host crash loses nothing.
//! - Serving: [`serve_unix`] (listen on a socket path, one host at a time) and [`serve_pty`] (a
//!   pseudo-terminal whose slave end meterd opens like the real serial device), with fault
//!   injection (damaged frames, line noise, a dropped connection) for tests.
//!
//! [`run`] ties them together on a compressed clock (`interval_ms` of real time per scheduled
//! interval) and writes a ledger (`meter_id,timestamp,wh` CSV, flushed every interval) of every
//! reading it generated, so tests can compare what was generated with what arrived.

use std::collections::VecDeque;
use std::f64::consts::PI;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::radio::{
    FLAG_OFF_SCHEDULE, FLAG_REGISTER_RESET, Frame, FrameDecoder, RadioReading, meter_list_frames,
};

/// A small, fast, seedable generator (SplitMix64). Written out here so a seed gives the same
/// meters and readings on every platform and every version of every crate.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The kind of load behind a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadShape {
    /// A home: low base load, a morning peak around 07:30 and a larger evening peak around 19:00.
    Household,
    /// A shop or office: a plateau from about 08:00 to 18:00 on weekdays, little at night and on
    /// weekends.
    Commercial,
}

impl LoadShape {
    /// Mean power in watts at `unix` seconds (UTC taken as local time) for a meter of size 1.
    pub fn power_w(self, unix: u64) -> f64 {
        let hour = (unix % 86_400) as f64 / 3600.0;
        // 1970-01-01 was a Thursday: day 0 → weekday 3 (Mon = 0).
        let weekday = (unix / 86_400 + 3) % 7;
        let bump = |centre: f64, width: f64| {
            let d = hour - centre;
            (-(d * d) / (2.0 * width * width)).exp()
        };
        match self {
            LoadShape::Household => {
                let weekend = if weekday >= 5 { 1.2 } else { 1.0 };
                // Fridge and standby never stop; people cook and light in the morning and evening.
                (180.0
                    + 600.0 * bump(7.5, 1.0)
                    + 1400.0 * bump(19.0, 1.6)
                    + 250.0 * bump(13.0, 2.5))
                    * weekend
            }
            LoadShape::Commercial => {
                let open = 1.0 / (1.0 + (-(hour - 8.0) * 3.0).exp());
                let closed = 1.0 / (1.0 + (-(hour - 18.0) * 3.0).exp());
                let day = if weekday >= 5 { 0.25 } else { 1.0 };
                // Lunch dip and the afternoon cooling peak make the plateau less flat.
                let shape = 1.0 - 0.1 * bump(12.5, 0.6) + 0.08 * (PI * (hour - 8.0) / 10.0).sin();
                600.0 + 3800.0 * (open - closed).max(0.0) * day * shape
            }
        }
    }
}

/// What the simulator generates.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub meters: usize,
    pub seed: u64,
    /// Unix time of the first scheduled reading (rounded down to the schedule).
    pub start: u64,
    /// Seconds between scheduled readings (simulated time).
    pub schedule_secs: u64,
    /// Probability that a meter's reading is missed in an interval.
    pub miss_rate: f64,
    /// Probability that a meter's register resets to a low value in an interval.
    pub reset_rate: f64,
    /// Probability that a reading is taken a few seconds late.
    pub late_rate: f64,
    /// Probability that a meter raises an alarm in an interval.
    pub alarm_rate: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            meters: 100,
            seed: 1,
            // 2026-01-05 00:00 UTC, a Monday.
            start: 1_767_571_200,
            schedule_secs: 900,
            miss_rate: 0.01,
            reset_rate: 0.0005,
            late_rate: 0.05,
            alarm_rate: 0.0,
        }
    }
}

/// One generated reading (what a meter said, before the module numbers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReading {
    pub meter_id: String,
    pub timestamp: u64,
    pub wh: u64,
    pub flags: u8,
}

/// An alarm a meter raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAlarm {
    pub meter_id: String,
    pub timestamp: u64,
    pub code: u16,
}

#[derive(Debug, Clone)]
struct SimMeter {
    id: String,
    shape: LoadShape,
    scale: f64,
    register: f64,
    /// A reset not yet reported (the read after it was missed): the meter keeps the flag up.
    reset_unreported: bool,
}

/// The meters and their schedule; deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Simulator {
    options: SimOptions,
    meters: Vec<SimMeter>,
    rng: SimRng,
    interval: u64,
}

impl Simulator {
    pub fn new(options: SimOptions) -> Self {
        let mut rng = SimRng::new(options.seed);
        let meters = (0..options.meters)
            .map(|i| {
                // About one meter in five is a business.
                let shape = if rng.chance(0.2) {
                    LoadShape::Commercial
                } else {
                    LoadShape::Household
                };
                SimMeter {
                    id: format!("MTR{:04X}-{i:06}", options.seed & 0xFFFF),
                    shape,
                    scale: 0.5 + rng.unit() * 1.2,
                    register: rng.below(8_000_000) as f64,
                    reset_unreported: false,
                }
            })
            .collect();
        Self {
            options,
            meters,
            rng,
            interval: 0,
        }
    }

    /// Meter ids in roster order.
    pub fn meter_ids(&self) -> Vec<String> {
        self.meters.iter().map(|m| m.id.clone()).collect()
    }

    /// Intervals generated so far.
    pub fn intervals(&self) -> u64 {
        self.interval
    }

    /// Scheduled time of the next interval.
    pub fn next_time(&self) -> u64 {
        let s = self.options.schedule_secs.max(1);
        self.options.start / s * s + self.interval * s
    }

    /// Generates the next interval: every meter's consumption advances; most meters report.
    pub fn next_interval(&mut self) -> (Vec<SimReading>, Vec<SimAlarm>) {
        let o = &self.options;
        let t = self.next_time();
        let secs = o.schedule_secs.max(1) as f64;
        let mut readings = Vec::with_capacity(self.meters.len());
        let mut alarms = Vec::new();
        for m in &mut self.meters {
            // Energy over the interval from the power at its middle, with ±10 % noise.
            let mid = t.saturating_sub(o.schedule_secs / 2);
            let noise = 0.9 + 0.2 * self.rng.unit();
            m.register += m.shape.power_w(mid) * m.scale * noise * secs / 3600.0;
            if self.rng.chance(o.reset_rate) {
                // A meter swap or a firmware reset: the register restarts near zero.
                m.register = self.rng.below(50) as f64;
                m.reset_unreported = true;
            }
            if self.rng.chance(o.alarm_rate) {
                alarms.push(SimAlarm {
                    meter_id: m.id.clone(),
                    timestamp: t,
                    // Codes as meters send them: 1 tamper, 2 power loss, 3 reverse flow.
                    code: 1 + self.rng.below(3) as u16,
                });
            }
            if self.rng.chance(o.miss_rate) {
                continue;
            }
            let mut flags = 0;
            if std::mem::take(&mut m.reset_unreported) {
                flags |= FLAG_REGISTER_RESET;
            }
            let mut timestamp = t;
            if self.rng.chance(o.late_rate) {
                timestamp += 1 + self.rng.below(9);
                flags |= FLAG_OFF_SCHEDULE;
            }
            readings.push(SimReading {
                meter_id: m.id.clone(),
                timestamp,
                wh: m.register as u64,
                flags,
            });
        }
        self.interval += 1;
        (readings, alarms)
    }
}

/// The radio module's memory: numbered readings kept until acknowledged.
#[derive(Debug)]
pub struct ModuleState {
    pub epoch: u32,
    pub roster: Vec<String>,
    /// Unacknowledged readings, oldest first (`seq` = acked + 1 + index).
    pub pending: VecDeque<RadioReading>,
    pub alarms: VecDeque<SimAlarm>,
    pub acked: u64,
    pub newest: u64,
    /// Next sequence number the current session sends.
    send_from: u64,
    /// The session owes the host a Status (and the roster, if `send_roster`).
    send_status: bool,
    send_roster: bool,
    /// Sessions started so far (tests watch reconnects).
    pub sessions: u64,
    /// All intervals are generated.
    pub finished: bool,
}

/// A simulated radio module shared by the generator and the serving tasks.
#[derive(Debug, Clone)]
pub struct Module {
    state: Arc<Mutex<ModuleState>>,
    changed: Arc<Notify>,
    kick: Arc<Notify>,
}

impl Module {
    pub fn new(epoch: u32, roster: Vec<String>) -> Self {
        Self {
            state: Arc::new(Mutex::new(ModuleState {
                epoch,
                roster,
                pending: VecDeque::new(),
                alarms: VecDeque::new(),
                acked: 0,
                newest: 0,
                send_from: 1,
                send_status: false,
                send_roster: false,
                sessions: 0,
                finished: false,
            })),
            changed: Arc::new(Notify::new()),
            kick: Arc::new(Notify::new()),
        }
    }

    /// The state, for inspection.
    pub fn state(&self) -> MutexGuard<'_, ModuleState> {
        // A panic while holding this lock already failed the test or the sim.
        self.state.lock().expect("module state lock poisoned")
    }

    /// Numbers and stores new readings (what the module does when meters answer).
    pub fn take(&self, readings: Vec<SimReading>, alarms: Vec<SimAlarm>) {
        let mut s = self.state();
        for r in readings {
            s.newest += 1;
            let seq = s.newest;
            s.pending.push_back(RadioReading {
                seq,
                meter_id: r.meter_id,
                timestamp: r.timestamp,
                wh: r.wh,
                flags: r.flags,
            });
        }
        s.alarms.extend(alarms);
        drop(s);
        self.changed.notify_one();
    }

    /// Ends the current session (the host sees the link drop).
    pub fn drop_session(&self) {
        self.kick.notify_one();
    }

    /// All readings generated and acknowledged.
    pub fn all_acked(&self) -> bool {
        let s = self.state();
        s.finished && s.acked == s.newest
    }

    fn handle(&self, frame: Frame) {
        let mut s = self.state();
        match frame {
            Frame::Hello { .. } => {
                s.send_status = true;
                s.send_roster = true;
                s.send_from = s.acked + 1;
            }
            Frame::Ack { seq } => {
                let seq = seq.min(s.newest);
                while s.pending.front().is_some_and(|r| r.seq <= seq) {
                    s.pending.pop_front();
                }
                s.acked = s.acked.max(seq);
                s.send_from = s.send_from.max(s.acked + 1);
            }
            Frame::Resend { from } => s.send_from = from.max(s.acked + 1),
            Frame::Ping => s.send_status = true,
            // Module frames sent to the module: a confused host; ignore like a real module.
            _ => {}
        }
        drop(s);
        self.changed.notify_one();
    }

    /// Frames the session should send now (bounded per call so reads are not starved).
    fn outgoing(&self, out: &mut Vec<u8>, faults: &mut Faults) {
        let mut s = self.state();
        if s.send_status {
            s.send_status = false;
            Frame::Status {
                epoch: s.epoch,
                acked: s.acked,
                newest: s.newest,
            }
            .encode(out);
        }
        if s.send_roster {
            s.send_roster = false;
            for f in meter_list_frames(&s.roster) {
                f.encode(out);
            }
        }
        while let Some(a) = s.alarms.pop_front() {
            Frame::Alarm {
                meter_id: a.meter_id,
                timestamp: a.timestamp,
                code: a.code,
            }
            .encode(out);
        }
        let mut n = 0;
        while s.send_from <= s.newest && n < 512 {
            let index = (s.send_from - s.acked - 1) as usize;
            let start = out.len();
            Frame::Reading(s.pending[index].clone()).encode(out);
            faults.damage(out, start);
            s.send_from += 1;
            n += 1;
        }
    }
}

/// Damage the simulator does to its own output, for tests of the host's resynchronisation.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Probability that a reading frame gets one byte flipped.
    pub corrupt_rate: f64,
    /// Probability that a few bytes of line noise precede a reading frame.
    pub noise_rate: f64,
    rng: SimRng,
    /// Frames damaged so far.
    pub damaged: u64,
}

impl Faults {
    pub fn new(seed: u64, corrupt_rate: f64, noise_rate: f64) -> Self {
        Self {
            corrupt_rate,
            noise_rate,
            rng: SimRng::new(seed ^ 0xFA17),
            damaged: 0,
        }
    }

    pub fn none() -> Self {
        Self::new(0, 0.0, 0.0)
    }

    fn damage(&mut self, out: &mut Vec<u8>, start: usize) {
        if self.rng.chance(self.corrupt_rate) {
            let i = start + self.rng.below((out.len() - start) as u64) as usize;
            out[i] ^= 1 << self.rng.below(8);
            self.damaged += 1;
        }
        if self.rng.chance(self.noise_rate) {
            let noise: Vec<u8> = (0..1 + self.rng.below(6))
                .map(|_| self.rng.next_u64() as u8)
                .collect();
            out.splice(start..start, noise);
            self.damaged += 1;
        }
    }
}

/// Runs one host session over a byte stream until the peer goes away or the module kicks it.
/// `greet`: send Status and the roster at once (a new socket connection) instead of waiting
/// for the host's Hello.
pub async fn session<R, W>(
    module: &Module,
    mut reader: R,
    mut writer: W,
    faults: &mut Faults,
    greet: bool,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    {
        let mut s = module.state();
        s.sessions += 1;
        s.send_from = s.acked + 1;
        s.send_status = greet;
        s.send_roster = greet;
    }
    let read_side = async {
        let mut dec = FrameDecoder::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return std::io::Result::Ok(());
            }
            dec.push(&buf[..n]);
            while let Some(f) = dec.next_frame() {
                match f {
                    Ok(f) => module.handle(f),
                    Err(e) => tracing::debug!(error = %e, "sim: bad frame from host"),
                }
            }
        }
    };
    let write_side = async {
        let mut out = Vec::new();
        loop {
            out.clear();
            module.outgoing(&mut out, faults);
            if out.is_empty() {
                module.changed.notified().await;
                continue;
            }
            writer.write_all(&out).await?;
            writer.flush().await?;
        }
        #[allow(unreachable_code)]
        std::io::Result::Ok(())
    };
    tokio::select! {
        r = read_side => r,
        r = write_side => r,
        _ = module.kick.notified() => Ok(()),
    }
}

/// Serves the module on a Unix socket at `path`, one host at a time, forever.
///
/// `pause` is consulted whenever a session ends: while it says so the socket is removed, so a
/// host trying to connect is refused (a module that is switched off).
pub async fn serve_unix(
    module: Module,
    path: PathBuf,
    mut faults: Faults,
    pause: Arc<Mutex<Option<Duration>>>,
) -> std::io::Result<()> {
    loop {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        let (stream, _) = listener.accept().await?;
        let (r, w) = stream.into_split();
        // Sessions start with the host's Hello, as on the serial line: answering before it too
        // would send everything twice.
        if let Err(e) = session(&module, r, w, &mut faults, false).await {
            tracing::info!(error = %e, "sim: host connection ended");
        }
        drop(listener);
        let wait = pause.lock().map(|mut p| p.take()).unwrap_or(None);
        if let Some(wait) = wait {
            let _ = std::fs::remove_file(&path);
            tokio::time::sleep(wait).await;
        }
    }
}

/// A pseudo-terminal standing in for the module's UART: meterd opens [`Pty::slave_path`].
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    /// Kept open so the master never sees a hang-up while no host has the device open (as a
    /// real UART, the line is just quiet); also puts the line discipline in raw mode from the
    /// start.
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

impl Pty {
    /// Opens a new pty pair in raw mode.
    pub fn open() -> std::io::Result<Self> {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave_path = PathBuf::from(
            name.into_string()
                .map_err(|_| std::io::Error::other("pty name is not UTF-8"))?,
        );
        let slave = rustix::fs::open(
            &slave_path,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        crate::link::make_raw(slave.as_fd(), None)?;
        Ok(Self {
            master,
            slave,
            slave_path,
        })
    }
}

/// Serves the module on a pty's master side forever (sessions start with the host's Hello).
pub async fn serve_pty(module: Module, pty: Pty, mut faults: Faults) -> std::io::Result<()> {
    let (mut r, mut w) = crate::link::async_pair(pty.master)?;
    // Kept until the end: closing it would hang up the line.
    let _slave = pty.slave;
    loop {
        // A kick ends the session; the host's next Hello starts another over the same line.
        session(&module, &mut r, &mut w, &mut faults, false).await?;
    }
}

/// The whole simulator run by the `spark-meter-sim` binary and by tests.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub sim: SimOptions,
    /// Real time per scheduled interval.
    pub interval: Duration,
    /// Stop generating after this many intervals (None: forever).
    pub intervals: Option<u64>,
    /// Stop generating once this file exists (a harness ending an open-ended run so that the
    /// ledger is final while every reading still reaches the host).
    pub stop_file: Option<PathBuf>,
    /// Ledger CSV (`meter_id,timestamp,wh`), appended and flushed every interval.
    pub ledger: Option<PathBuf>,
    pub epoch: u32,
}

/// Generates readings on the compressed clock into `module` and the ledger; returns when the
/// last interval is generated (the module keeps serving them until acknowledged).
pub async fn generate(module: &Module, options: &RunOptions) -> std::io::Result<()> {
    let mut sim = Simulator::new(options.sim.clone());
    let mut ledger = match &options.ledger {
        Some(path) => Some(open_ledger(path)?),
        None => None,
    };
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while options.intervals.is_none_or(|k| sim.intervals() < k) {
        tick.tick().await;
        if options.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        let (readings, alarms) = sim.next_interval();
        if let Some(ledger) = &mut ledger {
            let mut text = String::new();
            for r in &readings {
                text.push_str(&format!("{},{},{}\n", r.meter_id, r.timestamp, r.wh));
            }
            ledger.write_all(text.as_bytes())?;
            ledger.flush()?;
        }
        module.take(readings, alarms);
    }
    module.state().finished = true;
    module.changed.notify_one();
    Ok(())
}

fn open_ledger(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Reads a ledger back: `(meter_id, timestamp, wh)` per line.
pub fn read_ledger(path: &Path) -> std::io::Result<Vec<(String, u64, u64)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.split(',');
            let bad = || std::io::Error::other(format!("bad ledger line {l:?}"));
            let id = parts.next().ok_or_else(bad)?.to_owned();
            let ts = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            let wh = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
            Ok((id, ts, wh))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn households_peak_in_the_evening_and_businesses_by_day() {
        let monday = SimOptions::default().start;
        let at = |h: u64| monday + h * 3600;
        let home = LoadShape::Household;
        assert!(home.power_w(at(19)) > 3.0 * home.power_w(at(3)));
        assert!(home.power_w(at(7) + 1800) > 2.0 * home.power_w(at(3)));
        assert!(home.power_w(at(19)) > home.power_w(at(8)));
        let shop = LoadShape::Commercial;
        assert!(shop.power_w(at(12)) > 4.0 * shop.power_w(at(2)));
        assert!((shop.power_w(at(11)) / shop.power_w(at(15)) - 1.0).abs() < 0.3);
        let saturday = monday + 5 * 86_400;
        assert!(shop.power_w(saturday + 12 * 3600) < 0.5 * shop.power_w(at(12)));
    }

    #[test]
    fn deterministic_for_a_seed() {
        let o = SimOptions {
            meters: 20,
            seed: 7,
            ..SimOptions::default()
        };
        let mut a = Simulator::new(o.clone());
        let mut b = Simulator::new(o.clone());
        for _ in 0..10 {
            assert_eq!(a.next_interval(), b.next_interval());
        }
        let mut c = Simulator::new(SimOptions { seed: 8, ..o });
        assert_ne!(a.next_interval(), c.next_interval());
    }

    #[test]
    fn registers_grow_except_at_resets_and_reads_are_missed_sometimes() {
        let o = SimOptions {
            meters: 50,
            miss_rate: 0.05,
            reset_rate: 0.002,
            late_rate: 0.1,
            ..SimOptions::default()
        };
        let mut sim = Simulator::new(o.clone());
        let mut last = std::collections::HashMap::new();
        let (mut total, mut resets, mut late) = (0, 0, 0);
        for k in 0..96 * 2 {
            let scheduled = sim.next_time();
            let (readings, _) = sim.next_interval();
            total += readings.len();
            for r in readings {
                assert!(r.timestamp >= scheduled && r.timestamp < scheduled + 10);
                if r.flags & FLAG_OFF_SCHEDULE != 0 {
                    late += 1;
                } else {
                    assert_eq!(r.timestamp, scheduled);
                }
                if let Some(prev) = last.insert(r.meter_id.clone(), r.wh) {
                    if r.flags & FLAG_REGISTER_RESET != 0 {
                        resets += 1;
                        assert!(r.wh < prev, "interval {k}");
                    } else {
                        assert!(r.wh >= prev, "register went back without a reset flag");
                    }
                }
            }
        }
        let all = 50 * 96 * 2;
        assert!(total < all && total > all * 9 / 10, "{total} of {all}");
        assert!(late > all / 20 && late < all / 5, "{late}");
        assert!(resets > 0);
    }

    #[test]
    fn a_day_of_household_energy_is_plausible() {
        let mut sim = Simulator::new(SimOptions {
            meters: 200,
            miss_rate: 0.0,
            reset_rate: 0.0,
            ..SimOptions::default()
        });
        let (first, _) = sim.next_interval();
        let mut end = first.clone();
        for _ in 0..96 {
            end = sim.next_interval().0;
        }
        let per_day: Vec<u64> = first.iter().zip(&end).map(|(a, b)| b.wh - a.wh).collect();
        let mean = per_day.iter().sum::<u64>() / per_day.len() as u64;
        // Homes use some 5-15 kWh a day, small businesses more.
        assert!((4_000..40_000).contains(&mean), "{mean} Wh/day");
    }
}
