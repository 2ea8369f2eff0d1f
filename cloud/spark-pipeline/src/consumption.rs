//! Consumption from cumulative registers: what one pair of consecutive readings of a meter
//! means (the delta rule) and how it is spread over UTC hours (the apportioning rule). Both are
//! pure functions of the pair, so the aggregates of a meter are a function of its set of
//! readings alone: the order they arrive in (late data, crashes, batch sizes) cannot change them.
//!
//! # The delta rule, for readings `(t0, w0)` then `(t1, w1)` (sorted by time, then register)
//! - `w1 ≥ w0`: consumption `w1 − w0` ([`Step::Normal`]).
//! - `w1 < w0`, and `w0` is in the top tenth of its decimal range (`w0 ≥ 0.9 · 10^d`, `d` its
//!   digits) and `10^d − w0 + w1` is plausible: a **rollover** of a `d`-digit register,
//!   consumption `10^d − w0 + w1`.
//! - else `w1` itself plausible: a **reset** (meter swap, firmware reset: the register restarted
//!   from 0 inside the interval), consumption `w1`.
//! - else the register went back for no reason we know: consumption 0, an anomaly
//!   ([`Step::Back`]); the next reading counts from `w1`.
//!
//! Plausible: at most `max-power-w` over the interval, the interval counted as at least 15
//! minutes (`max_power_w · max(t1 − t0, 900) / 3600` Wh).
//!
//! # The apportioning rule
//! The consumption `d` of the interval `(t0, t1]` is spread linearly in time over the UTC hours
//! it overlaps: with `F(t) = ⌊d · (t − t0) / (t1 − t0)⌋`, the hour `[h, h + 3600)` gets
//! `F(min(t1, h + 3600)) − F(max(t0, h))`. The parts are whole Wh and add up to `d` exactly. A
//! reading at 10:00:00 closes the 09:00 hour. Intervals longer than `max-gap-secs` (a meter
//! silent for weeks) and zero-length ones (two readings at one time) put all of `d` into the
//! hour of `t1 − 1`. Days are UTC days, the sums of their hours.

use crate::config::ConsumptionRules;

pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

/// What happened between two consecutive readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Normal,
    Reset,
    Rollover,
    /// The register went back, not explained by a reset or a rollover.
    Back,
}

/// The consumption between readings `(t0, w0)` and `(t1, w1)`, `t0 ≤ t1`, and what it was.
pub fn delta(t0: i64, w0: i64, t1: i64, w1: i64, rules: &ConsumptionRules) -> (i64, Step) {
    if w1 >= w0 {
        return (w1 - w0, Step::Normal);
    }
    let allowance = rules.max_power_w.saturating_mul((t1 - t0).max(900)) / HOUR;
    // 10^d for the d decimal digits of w0 (w0 > w1 ≥ 0, so w0 ≥ 1).
    let modulus = 10i64.checked_pow(w0.ilog10() + 1).unwrap_or(i64::MAX);
    if modulus != i64::MAX && w0 >= modulus / 10 * 9 {
        let wrapped = modulus - w0 + w1;
        if wrapped <= allowance {
            return (wrapped, Step::Rollover);
        }
    }
    if w1 <= allowance {
        (w1, Step::Reset)
    } else {
        (0, Step::Back)
    }
}

/// Start of the UTC hour holding `t`.
pub fn hour_of(t: i64) -> i64 {
    t.div_euclid(HOUR) * HOUR
}

/// Start of the UTC day holding `t`.
pub fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY) * DAY
}

/// Spreads `d` Wh consumed in `(t0, t1]` over UTC hours: calls `add(hour_start, wh)` for each
/// hour with a non-zero share (the shares add up to `d`).
pub fn apportion(
    t0: i64,
    t1: i64,
    d: i64,
    rules: &ConsumptionRules,
    mut add: impl FnMut(i64, i64),
) {
    if d == 0 {
        return;
    }
    let span = t1 - t0;
    if span <= 0 || span > rules.max_gap_secs {
        add(hour_of(t1 - 1), d);
        return;
    }
    let f = |t: i64| (i128::from(d) * i128::from(t - t0) / i128::from(span)) as i64;
    let mut h = hour_of(t0);
    while h < t1 {
        let share = f(t1.min(h + HOUR)) - f(t0.max(h));
        if share != 0 {
            add(h, share);
        }
        h += HOUR;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: ConsumptionRules = ConsumptionRules {
        max_power_w: 100_000,
        max_gap_secs: 31 * DAY,
    };

    fn spread(t0: i64, t1: i64, d: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        apportion(t0, t1, d, &R, |h, wh| out.push((h, wh)));
        out
    }

    #[test]
    fn deltas() {
        assert_eq!(delta(0, 100, 900, 150, &R), (50, Step::Normal));
        assert_eq!(delta(0, 100, 900, 100, &R), (0, Step::Normal));
        // A 7-digit register wrapping: 9_999_950 → 30 is 80 Wh.
        assert_eq!(delta(0, 9_999_950, 900, 30, &R), (80, Step::Rollover));
        // A reset from a high register to near zero (the simulator's meter swap).
        assert_eq!(delta(0, 5_123_456, 900, 42, &R), (42, Step::Reset));
        // 9.2 M → 30 is not a plausible rollover (800 kWh in 15 min) but a plausible reset.
        assert_eq!(delta(0, 9_200_000, 900, 30, &R), (30, Step::Reset));
        // A small step back from a high register: unexplained.
        assert_eq!(delta(0, 5_000_000, 900, 4_999_990, &R), (0, Step::Back));
        // Plausibility grows with the interval: 100 kW for 10 h = 1 MWh.
        assert_eq!(
            delta(0, 5_000_000, 36_000, 900_000, &R),
            (900_000, Step::Reset)
        );
        assert_eq!(delta(0, 5_000_000, 900, 900_000, &R), (0, Step::Back));
        // Registers near i64::MAX do not overflow.
        assert_eq!(delta(0, i64::MAX, 900, 1, &R), (1, Step::Reset));
    }

    #[test]
    fn apportioning() {
        // Inside one hour; a reading at 10:00 closes the 09:00 hour.
        assert_eq!(spread(9 * HOUR + 900, 10 * HOUR, 60), vec![(9 * HOUR, 60)]);
        // Across one boundary: 10:45 → 11:15, 100 Wh, half each.
        assert_eq!(
            spread(10 * HOUR + 2700, 11 * HOUR + 900, 100),
            vec![(10 * HOUR, 50), (11 * HOUR, 50)]
        );
        // A three-hour gap of 10 Wh: whole Wh, adding up to 10.
        let parts = spread(0, 3 * HOUR, 10);
        assert_eq!(parts, vec![(0, 3), (HOUR, 3), (2 * HOUR, 4)]);
        // Zero-length and over-long intervals go to the hour of t1 − 1.
        assert_eq!(spread(7200, 7200, 5), vec![(HOUR, 5)]);
        assert_eq!(spread(0, 40 * DAY, 5), vec![(hour_of(40 * DAY - 1), 5)]);
        assert!(spread(0, HOUR, 0).is_empty());
    }

    #[test]
    fn apportioning_adds_up() {
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let t0 = (seed >> 20) as i64 % (10 * DAY);
            let t1 = t0 + (seed >> 8) as i64 % (3 * DAY);
            let d = (seed >> 33) as i64 % 100_000;
            let parts = spread(t0, t1, d);
            assert_eq!(parts.iter().map(|p| p.1).sum::<i64>(), d);
            assert!(parts.iter().all(|p| p.1 > 0 && p.0 % HOUR == 0));
        }
    }
}
