//! A deterministic day of realistic meter readings, shared by the bytes-per-reading test and
//! `examples/codec_bench.rs` (included there with `#[path]`).
//!
//! Population: 85 % households (4–15 kWh/day), 10 % small businesses (20–120 kWh/day, business
//! hours), 5 % households with rooftop PV (import register flat around midday). Each reading is the
//! profile value times a heavy-tailed appliance factor. Plus what real radio networks do: ~1 %
//! missed reads, ~0.5 % off-schedule reads (1–120 s late), and two register resets a day.

#![allow(dead_code)]

use spark_proto::Sample;

/// splitmix64: tiny, deterministic, good enough for test data (no `rand` dependency).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Household,
    Business,
    Solar,
}

/// Relative load by hour of day (mean ≈ 1).
fn profile(kind: Kind, hour: f64) -> f64 {
    let h = hour;
    match kind {
        Kind::Household | Kind::Solar => {
            let base = 0.45;
            let morning = 0.9 * (-((h - 7.5) / 1.2).powi(2)).exp();
            let evening = 1.6 * (-((h - 19.0) / 2.0).powi(2)).exp();
            let day = 0.35 * (-((h - 13.0) / 3.0).powi(2)).exp();
            let p = base + morning + evening + day;
            if matches!(kind, Kind::Solar) {
                // PV covers the load around midday: the import register barely moves.
                p * (1.0 - 0.95 * (-((h - 13.0) / 2.5).powi(2)).exp())
            } else {
                p
            }
        }
        Kind::Business => {
            if (8.0..18.0).contains(&h) {
                2.0
            } else {
                0.35
            }
        }
    }
}

/// `intervals` 15-minute intervals for `meters` meters starting at `start`: one `Vec<Sample>` per
/// interval, as a gateway would hand them to the encoder.
pub fn day(meters: u32, intervals: u32, start: u64, seed: u64) -> Vec<Vec<Sample>> {
    let mut rng = Rng(seed);
    let population: Vec<(Kind, f64, u64)> = (0..meters)
        .map(|_| {
            let r = rng.f();
            let (kind, daily_kwh) = if r < 0.85 {
                (Kind::Household, 4.0 + 11.0 * rng.f())
            } else if r < 0.95 {
                (Kind::Business, 20.0 + 100.0 * rng.f())
            } else {
                (Kind::Solar, 5.0 + 8.0 * rng.f())
            };
            let register = rng.next_u64() % 60_000_000; // up to 60 MWh on the clock
            (kind, daily_kwh, register)
        })
        .collect();
    let mut registers: Vec<u64> = population.iter().map(|p| p.2).collect();
    let resets: Vec<(u32, u32)> = (0..2)
        .map(|_| {
            (
                (rng.next_u64() % u64::from(meters)) as u32,
                (rng.next_u64() % u64::from(intervals)) as u32,
            )
        })
        .collect();
    let mut out = Vec::with_capacity(intervals as usize);
    for i in 0..intervals {
        let hour = (f64::from(i) + 0.5) * 0.25 % 24.0;
        let mut samples = Vec::with_capacity(meters as usize);
        for (m, &(kind, daily_kwh, _)) in population.iter().enumerate() {
            let mean_wh = daily_kwh * 1000.0 / 96.0 * profile(kind, hour);
            // Appliances switch on and off: an exponential factor (mean 1), heavy-tailed.
            let factor = -(1.0 - rng.f()).ln();
            let delta = (mean_wh * (0.3 + 0.7 * factor)).round() as u64;
            registers[m] += delta;
            if resets.contains(&(m as u32, i)) {
                registers[m] = rng.next_u64() % 50; // meter replaced: starts near zero
            }
            if rng.f() < 0.01 {
                continue; // missed read
            }
            let late = if rng.f() < 0.005 {
                1 + rng.next_u64() % 120
            } else {
                0
            };
            samples.push(Sample {
                meter: m as u32,
                timestamp: start + u64::from(i) * 900 + late,
                wh: registers[m],
            });
        }
        out.push(samples);
    }
    out
}
