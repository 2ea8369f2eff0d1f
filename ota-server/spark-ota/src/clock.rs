//! The rollout engine's clock. Every engine call takes "now" from a [`ServerClock`]: the real
//! clock by default, a time-compressed one for demos and simulations (`[rollouts] clock-factor`),
//! or any `spark_rollout::Clock` a test injects (e.g. a `ManualClock`).
//!
//! Outside facts (ingest's last-seen times) are real instants. Under a compressed clock they are
//! mapped onto its timeline with [`ServerClock::from_real`], so the telemetry gate compares like
//! with like.

use std::sync::Arc;

use spark_rollout::jiff::{SignedDuration, Timestamp};
use spark_rollout::{Clock, CompressedClock, SystemClock};

/// The clock rollouts run on. Cheap to clone.
#[derive(Clone)]
pub struct ServerClock {
    inner: Arc<dyn Clock>,
    /// For a compressed clock: (real instant it started, its origin, factor).
    compression: Option<(Timestamp, Timestamp, u32)>,
}

impl std::fmt::Debug for ServerClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClock")
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl Default for ServerClock {
    fn default() -> ServerClock {
        ServerClock::real()
    }
}

impl ServerClock {
    /// The real clock.
    pub fn real() -> ServerClock {
        ServerClock {
            inner: Arc::new(SystemClock),
            compression: None,
        }
    }

    /// Real time × `factor`, reading `origin` now.
    pub fn compressed(origin: Timestamp, factor: u32) -> ServerClock {
        let real_start = Timestamp::now();
        ServerClock {
            inner: Arc::new(CompressedClock::new(origin, factor)),
            compression: Some((real_start, origin, factor.max(1))),
        }
    }

    /// Any clock (tests: a `ManualClock`). Real instants are taken as they are.
    pub fn custom(clock: Arc<dyn Clock>) -> ServerClock {
        ServerClock {
            inner: clock,
            compression: None,
        }
    }

    /// Now, on this clock.
    pub fn now(&self) -> Timestamp {
        self.inner.now()
    }

    /// Now as unix seconds (for the database).
    pub fn now_secs(&self) -> i64 {
        self.now().as_second()
    }

    /// A real instant on this clock's timeline.
    pub fn from_real(&self, t: Timestamp) -> Timestamp {
        match self.compression {
            None => t,
            Some((real_start, origin, factor)) => {
                let real = t.duration_since(real_start);
                let scaled = real
                    .checked_mul(factor as i32)
                    .unwrap_or(SignedDuration::MAX);
                origin.saturating_add(scaled).unwrap_or(origin)
            }
        }
    }

    /// Time-compression factor (1 for the real clock).
    pub fn factor(&self) -> u32 {
        self.compression.map_or(1, |c| c.2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_clock_maps_real_instants() {
        let origin: Timestamp = "2026-11-30T00:00:00Z".parse().unwrap();
        let c = ServerClock::compressed(origin, 3600);
        let (real_start, ..) = c.compression.unwrap();
        let later = real_start
            .checked_add(SignedDuration::from_secs(2))
            .unwrap();
        assert_eq!(
            c.from_real(later),
            "2026-11-30T02:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(c.now() >= origin);
        assert_eq!(ServerClock::real().from_real(later), later);
    }
}
