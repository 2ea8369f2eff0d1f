//! Where "now" comes from. Every engine call takes an explicit `now`, so the engine itself never
//! reads a clock; the server asks a [`Clock`] once per request and passes the answer in. Tests and
//! simulations use [`ManualClock`] (advanced by hand) or [`CompressedClock`] (real time sped up),
//! which is how a six-day weekly rollout runs in seconds.

use std::sync::Mutex;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's real-time clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to (simulations, unit tests).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Timestamp>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Mutex::new(start),
        }
    }

    /// Moves the clock forward (or back, for a negative duration).
    pub fn advance(&self, by: SignedDuration) {
        // A poisoned lock only means another thread panicked mid-update of a plain value.
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now = now.saturating_add(by).unwrap_or(*now);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Real time sped up by a factor from a chosen origin: with factor 3600 one real second is one
/// simulated hour. For server-level simulations where devices really poll over HTTP.
#[derive(Debug, Clone)]
pub struct CompressedClock {
    origin: Timestamp,
    started: Instant,
    factor: u32,
}

impl CompressedClock {
    /// A clock that reads `origin` now and runs `factor` times faster than real time.
    pub fn new(origin: Timestamp, factor: u32) -> CompressedClock {
        CompressedClock {
            origin,
            started: Instant::now(),
            factor: factor.max(1),
        }
    }
}

impl Clock for CompressedClock {
    fn now(&self) -> Timestamp {
        let real = self.started.elapsed();
        let scaled = real.saturating_mul(self.factor);
        let scaled = SignedDuration::try_from(scaled).unwrap_or(SignedDuration::MAX);
        self.origin.saturating_add(scaled).unwrap_or(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_clock_runs_faster() {
        let origin: Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        let c = CompressedClock::new(origin, 3600);
        let real = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let simulated = c.now().duration_since(origin);
        let upper = real.elapsed().as_secs_f64() * 3600.0;
        // 20 ms real ≥ 72 s simulated, and never more than elapsed real time × factor.
        assert!(simulated >= SignedDuration::from_secs(72), "{simulated:#}");
        assert!(
            simulated.as_secs_f64() <= upper + 1.0,
            "{simulated:#} > {upper}"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let origin: Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        let c = ManualClock::new(origin);
        assert_eq!(c.now(), origin);
        c.advance(SignedDuration::from_hours(36));
        assert_eq!(c.now(), "2026-12-01T12:00:00Z".parse().unwrap());
        c.set(origin);
        assert_eq!(c.now(), origin);
    }
}
