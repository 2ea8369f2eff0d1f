//! The codec context: the state both ends keep so batches can carry deltas instead of registers.

use crate::batch::{
    Exception, IntervalReadings, MAX_INTERVALS_PER_BATCH, RATIO_ONE, ReadingsBatch, TimeOffset,
    best_rice_k, rice_bits,
};
use crate::bits::{unzigzag, zigzag};
use crate::roster::MAX_METERS;
use std::num::NonZeroU32;

/// One meter reading in plain form: what `spark-meterd` produces and what ingest stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sample {
    /// Position of the meter in the roster.
    pub meter: u32,
    /// When the meter took the reading, unix seconds.
    pub timestamp: u64,
    /// Cumulative active-energy import register, Wh. Integer: floats are never sent for counters.
    pub wh: u64,
}

/// How often the encoder sends a whole interval of absolute registers even when it has references:
/// daily on a 15-minute schedule. It bounds how long a silent divergence (a bug, a corrupted
/// store) could last, at ~4 % extra bytes.
pub const DEFAULT_KEYFRAME_EVERY: u32 = 96;

/// What each end holds per connection:
///
/// * the roster version and length (persistent: the gateway owns the roster, the cloud stores
///   the last [`crate::Roster`] it received);
/// * per meter index, the last register value sent/received in this session (`None` = no
///   reference); deltas are taken against it. With it, the scheduled time of that reading and the
///   meter's *previous delta*: the reading's register minus the register before it, if that one
///   was scheduled exactly one `interval_secs` earlier and was not higher (else none). A reading
///   scheduled at `T` may be predicted from the previous delta only if the last reading was
///   scheduled at `T − interval_secs` (so a missed read, a gap between batches or a changed
///   schedule leaves the next reading unpredicted). Both ends derive all of it from the registers
///   and scheduled times they exchanged, however those were encoded;
/// * on the encoder only: intervals since the last keyframe, and whether the next batch must be a
///   sync batch.
///
/// Both ends call [`CodecContext::reset_session`] on every new connection and after a
/// [`crate::Nack`] of a batch: references are dropped, so the next batch the gateway builds has
/// [`ReadingsBatch::sync`] set and carries only absolutes until references exist again. A cloud
/// that receives a `sync` batch resets before expanding it, so the two ends meet again no matter
/// what was lost. A roster change ([`CodecContext::set_roster`]) also drops references, since
/// indices may now name other meters.
#[derive(Debug, Clone)]
pub struct CodecContext {
    roster_version: u32,
    roster_len: u32,
    last: Vec<Option<Track>>,
    keyframe_every: u32,
    since_keyframe: u32,
    pending_sync: bool,
}

/// What each end remembers of a meter's last reading in this session: 16 bytes, and
/// `Option<Track>` too (the niche of `delta`), because ingest keeps one per meter of every
/// connected gateway.
///
/// Both ends store exactly this, so the narrowing below is part of the protocol's state, not a
/// loss: both derive the same predictions from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Track {
    /// Register, Wh.
    wh: u64,
    /// Scheduled time of the reading (not its offset time), unix seconds modulo 2^32. Only
    /// compared for "exactly one interval later", which modulo 2^32 differs from the full
    /// comparison only for readings 136 years apart.
    sched: u32,
    /// `wh` minus the register of the reading scheduled one interval before, plus one, if
    /// there was one, it was not higher, and the difference is below `u32::MAX - 1` (4.3 GWh
    /// in one interval: no meter; such a delta just leaves the next reading unpredicted).
    /// `u32::MAX` (from [`Track::NO_DELTA`]) means none.
    delta: NonZeroU32,
}

impl Track {
    const NO_DELTA: NonZeroU32 = NonZeroU32::MAX;

    /// The previous delta a reading scheduled at `sched` may be predicted from.
    fn prev_delta(t: Option<Track>, sched: u64, secs: u64) -> Option<u64> {
        t.filter(|t| t.follows(sched, secs))
            .filter(|t| t.delta != Self::NO_DELTA)
            .map(|t| u64::from(t.delta.get() - 1))
    }

    /// Whether `sched` is exactly one interval of `secs` after this track's reading.
    fn follows(&self, sched: u64, secs: u64) -> bool {
        self.sched.wrapping_add(secs as u32) == sched as u32
    }

    /// The track after a reading of `wh` scheduled at `sched`.
    fn next(t: Option<Track>, wh: u64, sched: u64, secs: u64) -> Track {
        let delta = t
            .filter(|t| t.follows(sched, secs))
            .and_then(|t| wh.checked_sub(t.wh))
            .and_then(|d| u32::try_from(d).ok())
            .and_then(|d| d.checked_add(1))
            .and_then(NonZeroU32::new)
            .unwrap_or(Self::NO_DELTA);
        Track {
            wh,
            sched: sched as u32,
            delta,
        }
    }
}

/// `⌊(p · r + 512) / 1024⌋`: the delta predicted from previous delta `p` and ratio `r`/1024.
fn predict(p: u64, r: u16) -> i128 {
    ((u128::from(p) * u128::from(r) + u128::from(RATIO_ONE / 2)) >> 10) as i128
}

/// Why samples could not be built into a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("sample for meter {meter} but the roster has {roster_len} meters")]
    UnknownMeter { meter: u32, roster_len: u32 },
    #[error(
        "sample of meter {meter} at {timestamp} is more than half an interval before the batch start {start}"
    )]
    BeforeStart {
        meter: u32,
        timestamp: u64,
        start: u64,
    },
    #[error("samples span {needed} intervals; a batch holds at most {MAX_INTERVALS_PER_BATCH}")]
    TooManyIntervals { needed: u64 },
    #[error("meter {meter} has two samples in interval {interval}")]
    DuplicateSample { meter: u32, interval: u64 },
    #[error("no samples: a batch holds at least one interval")]
    Empty,
    #[error("interval_secs must be > 0")]
    ZeroInterval,
}

/// Why a batch could not be expanded against the context (the cloud answers with the Nack code
/// from [`ExpandError::nack_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error(
        "batch encoded for roster version {batch} ({batch_len} meters), context has version {context} ({context_len} meters)"
    )]
    RosterMismatch {
        batch: u32,
        batch_len: u32,
        context: u32,
        context_len: u32,
    },
    #[error(
        "delta for meter {meter} in interval {interval} but no reference value in this session"
    )]
    NoReference { meter: u32, interval: usize },
    #[error("register of meter {meter} overflows u64")]
    Overflow { meter: u32 },
    #[error("timestamp of meter {meter} in interval {interval} is outside the u64 range")]
    BadTimestamp { meter: u32, interval: usize },
    /// The context was reset (new connection, or after a Nack) and this batch is not a sync batch:
    /// it was built before the gateway learnt of the reset. Ingest drops it without another Nack;
    /// the gateway resends it, with the sync flag.
    #[error("batch {seq} is not a sync batch, and the context awaits one after a reset")]
    AwaitingSync { seq: u64 },
    /// The batch breaks an invariant `decode` enforces (only possible for a batch built by hand).
    #[error("inconsistent batch in interval {interval}: {reason}")]
    Inconsistent {
        interval: usize,
        reason: &'static str,
    },
}

impl ExpandError {
    /// The Nack code to answer this error with.
    pub fn nack_code(&self) -> crate::NackCode {
        match self {
            ExpandError::RosterMismatch { .. } => crate::NackCode::RosterMismatch,
            ExpandError::NoReference { .. } | ExpandError::AwaitingSync { .. } => {
                crate::NackCode::ResyncRequired
            }
            ExpandError::Overflow { .. }
            | ExpandError::BadTimestamp { .. }
            | ExpandError::Inconsistent { .. } => crate::NackCode::Malformed,
        }
    }
}

impl CodecContext {
    /// A context for roster `roster_version` of `roster_len` meters, with no references: the first
    /// batch built or expanded is a sync batch.
    pub fn new(roster_version: u32, roster_len: u32) -> CodecContext {
        let roster_len = roster_len.min(MAX_METERS as u32);
        CodecContext {
            roster_version,
            roster_len,
            last: vec![None; roster_len as usize],
            keyframe_every: DEFAULT_KEYFRAME_EVERY,
            since_keyframe: 0,
            pending_sync: true,
        }
    }

    /// Sets how many intervals the encoder sends between whole-interval keyframes (0: never,
    /// beyond the ones sync and roster changes force).
    pub fn with_keyframe_every(mut self, intervals: u32) -> CodecContext {
        self.keyframe_every = intervals;
        self
    }

    pub fn roster_version(&self) -> u32 {
        self.roster_version
    }

    pub fn roster_len(&self) -> u32 {
        self.roster_len
    }

    /// Drops all references: call on every new connection and after a Nack of a batch.
    pub fn reset_session(&mut self) {
        self.last.iter_mut().for_each(|v| *v = None);
        self.since_keyframe = 0;
        self.pending_sync = true;
    }

    /// Switches to a new roster (gateway: after sending it; cloud: after storing it).
    pub fn set_roster(&mut self, roster_version: u32, roster_len: u32) {
        *self =
            CodecContext::new(roster_version, roster_len).with_keyframe_every(self.keyframe_every);
    }

    /// Gateway side: builds a batch from plain samples and advances the context as if the batch
    /// was sent. Samples may come in any order; each is placed in the interval whose scheduled time
    /// is nearest (`interval_start + i * interval_secs`) and, if it was not taken on schedule,
    /// carries its offset as an exception. A register lower than the meter's reference (a reset
    /// or replaced meter) is sent as an absolute. Meters without a sample in an interval are
    /// simply absent (a missed read) and keep their reference.
    pub fn build_batch(
        &mut self,
        seq: u64,
        interval_start: u64,
        interval_secs: u32,
        samples: &[Sample],
    ) -> Result<ReadingsBatch, BuildError> {
        if interval_secs == 0 {
            return Err(BuildError::ZeroInterval);
        }
        if samples.is_empty() {
            return Err(BuildError::Empty);
        }
        let secs = u64::from(interval_secs);
        // (slot, meter, offset, wh), sorted so each interval's meters come in index order.
        let mut placed = Vec::with_capacity(samples.len());
        for s in samples {
            if s.meter >= self.roster_len {
                return Err(BuildError::UnknownMeter {
                    meter: s.meter,
                    roster_len: self.roster_len,
                });
            }
            let rel = i128::from(s.timestamp) - i128::from(interval_start);
            // Nearest slot; a half-way sample goes to the later slot.
            let slot = (rel + i128::from(secs / 2)).div_euclid(i128::from(secs));
            if slot < 0 {
                return Err(BuildError::BeforeStart {
                    meter: s.meter,
                    timestamp: s.timestamp,
                    start: interval_start,
                });
            }
            if slot >= MAX_INTERVALS_PER_BATCH as i128 {
                return Err(BuildError::TooManyIntervals {
                    needed: u64::try_from(slot + 1).unwrap_or(u64::MAX),
                });
            }
            let offset = (rel - slot * i128::from(secs)) as i32; // |offset| ≤ secs/2 < 2^31
            placed.push((slot as usize, s.meter, offset, s.wh));
        }
        placed.sort_unstable();
        if let Some(w) = placed
            .windows(2)
            .find(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1)
        {
            return Err(BuildError::DuplicateSample {
                meter: w[0].1,
                interval: w[0].0 as u64,
            });
        }
        let n_intervals = placed.last().map_or(0, |p| p.0) + 1;

        let sync = self.pending_sync;
        self.pending_sync = false;
        let mut intervals = Vec::with_capacity(n_intervals);
        let mut rest = &placed[..];
        for slot in 0..n_intervals {
            let n = rest.iter().take_while(|p| p.0 == slot).count();
            let (these, tail) = rest.split_at(n);
            rest = tail;
            let sched = interval_start.wrapping_add(slot as u64 * secs);
            intervals.push(self.build_interval(these, sched, secs));
        }
        Ok(ReadingsBatch {
            seq,
            sync,
            roster_version: self.roster_version,
            roster_len: self.roster_len,
            interval_start,
            interval_secs,
            intervals,
        })
    }

    fn build_interval(
        &mut self,
        these: &[(usize, u32, i32, u64)],
        sched: u64,
        secs: u64,
    ) -> IntervalReadings {
        // A keyframe when one is due, or when most reporting meters have no reference anyway
        // (after a sync or roster change): then absolutes cost nothing extra in flags.
        let missing = these
            .iter()
            .filter(|p| self.last[p.1 as usize].is_none())
            .count();
        let due = self.keyframe_every > 0 && self.since_keyframe >= self.keyframe_every;
        let absolute = !these.is_empty() && (due || missing * 2 > these.len());
        if absolute {
            self.since_keyframe = 0;
        }
        self.since_keyframe = self.since_keyframe.saturating_add(1);

        let mut iv = IntervalReadings {
            absolute,
            ..Default::default()
        };
        iv.present.reserve_exact(these.len());
        // (delta, previous delta) of the meters that send a delta value.
        let mut deltas = Vec::with_capacity(these.len());
        for &(_, meter, time_offset, wh) in these {
            iv.present.push(meter);
            if time_offset != 0 {
                iv.offsets.push(TimeOffset {
                    meter,
                    secs: time_offset,
                });
            }
            let track = self.last[meter as usize];
            match track {
                _ if absolute => iv.values.push(wh),
                Some(t) if wh >= t.wh => {
                    deltas.push((wh - t.wh, Track::prev_delta(track, sched, secs)));
                }
                // No reference, or the register went backwards (reset, meter replaced).
                _ => iv.exceptions.push(Exception { meter, value: wh }),
            }
            self.last[meter as usize] = Some(Track::next(track, wh, sched, secs));
        }
        if !absolute {
            let (ratio, values) = choose_prediction(&deltas);
            iv.ratio = ratio;
            iv.values = values;
        }
        iv
    }

    /// Cloud side: turns a decoded batch back into plain samples (interval by interval, meters in
    /// index order) and advances the context. On error the context is unchanged.
    pub fn expand(&mut self, batch: &ReadingsBatch) -> Result<Vec<Sample>, ExpandError> {
        if batch.roster_version != self.roster_version || batch.roster_len != self.roster_len {
            return Err(ExpandError::RosterMismatch {
                batch: batch.roster_version,
                batch_len: batch.roster_len,
                context: self.roster_version,
                context_len: self.roster_len,
            });
        }
        if self.pending_sync && !batch.sync {
            return Err(ExpandError::AwaitingSync { seq: batch.seq });
        }
        // Work on a copy so a bad batch leaves the context as it was (1000 meters: 16 KB).
        let mut last = if batch.sync {
            vec![None; self.last.len()]
        } else {
            self.last.clone()
        };
        let secs = u64::from(batch.interval_secs);
        let mut out = Vec::with_capacity(batch.reading_count());
        for (i, iv) in batch.intervals.iter().enumerate() {
            let sched = batch
                .interval_start
                .wrapping_add((i as u64).wrapping_mul(secs));
            let scheduled = (i as u64)
                .checked_mul(secs)
                .and_then(|d| d.checked_add(batch.interval_start));
            let bad = |reason| ExpandError::Inconsistent {
                interval: i,
                reason,
            };
            if iv.values.len() + iv.exceptions.len() != iv.present.len() {
                return Err(bad("values + exceptions != present meters"));
            }
            if iv.absolute && (iv.ratio.is_some() || !iv.exceptions.is_empty()) {
                return Err(bad("absolute interval with a ratio or exceptions"));
            }
            let mut values = iv.values.iter();
            let mut exceptions = iv.exceptions.iter().peekable();
            let mut offsets = iv.offsets.iter().peekable();
            for &meter in &iv.present {
                let offset = offsets.next_if(|o| o.meter == meter).map_or(0, |o| o.secs);
                let slot = last
                    .get_mut(meter as usize)
                    .ok_or(bad("meter index beyond the roster"))?;
                let wh = if let Some(e) = exceptions.next_if(|e| e.meter == meter) {
                    e.value
                } else {
                    let v = *values.next().ok_or(bad("too few values"))?;
                    if iv.absolute {
                        v
                    } else {
                        let prev = slot.ok_or(ExpandError::NoReference { meter, interval: i })?;
                        let delta = match (iv.ratio, Track::prev_delta(*slot, sched, secs)) {
                            (Some(r), Some(p)) => {
                                u64::try_from(predict(p, r) + i128::from(unzigzag(v)))
                                    .map_err(|_| ExpandError::Overflow { meter })?
                            }
                            _ => v,
                        };
                        prev.wh
                            .checked_add(delta)
                            .ok_or(ExpandError::Overflow { meter })?
                    }
                };
                *slot = Some(Track::next(*slot, wh, sched, secs));
                let timestamp = scheduled
                    .and_then(|t| t.checked_add_signed(i64::from(offset)))
                    .ok_or(ExpandError::BadTimestamp { meter, interval: i })?;
                out.push(Sample {
                    meter,
                    timestamp,
                    wh,
                });
            }
            if exceptions.next().is_some() || offsets.next().is_some() {
                return Err(bad(
                    "exception or offset for a meter that is not present, or out of order",
                ));
            }
        }
        self.last = last;
        self.pending_sync = false;
        Ok(out)
    }
}

/// The values of a delta interval, and its ratio: plain deltas, or residuals of the fleet-wide
/// scaled prediction when that is shorter including the ratio's 16 bits. The ratio is the
/// rounded `1024 · Σ delta / Σ previous delta` over the meters that have a previous delta:
/// households peak together, so this follows the day's load shape and leaves mostly noise.
fn choose_prediction(deltas: &[(u64, Option<u64>)]) -> (Option<u16>, Vec<u64>) {
    let plain: Vec<u64> = deltas.iter().map(|d| d.0).collect();
    let (sum_d, sum_p) = deltas
        .iter()
        .filter_map(|&(d, p)| Some((u128::from(d), u128::from(p?))))
        .fold((0u128, 0u128), |(a, b), (d, p)| (a + d, b + p));
    if sum_p == 0 || plain.is_empty() {
        return (None, plain);
    }
    let r = ((sum_d * u128::from(RATIO_ONE) + sum_p / 2) / sum_p).min(u128::from(u16::MAX)) as u16;
    let scaled: Option<Vec<u64>> = deltas
        .iter()
        .map(|&(d, p)| match p {
            Some(p) => i64::try_from(i128::from(d) - predict(p, r))
                .ok()
                .map(zigzag),
            None => Some(d),
        })
        .collect();
    // A residual beyond i64 (a ~2^63 Wh delta) cannot be sent scaled; plain deltas still work.
    let Some(scaled) = scaled else {
        return (None, plain);
    };
    let cost = |v: &[u64]| {
        let k = best_rice_k(v);
        v.iter().map(|&x| rice_bits(x, k)).sum::<u64>()
    };
    if cost(&scaled) + 16 < cost(&plain) {
        (Some(r), scaled)
    } else {
        (None, plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ingest holds one per meter of every connected gateway: keep it at 16 bytes.
    #[test]
    fn track_slot_is_16_bytes() {
        assert_eq!(std::mem::size_of::<Option<Track>>(), 16);
    }

    /// Deltas too large for the packed track (and registers near the top of u64) still round
    /// trip: they only go unpredicted, on both ends alike.
    #[test]
    fn huge_deltas_round_trip_unpredicted() {
        let (start, secs) = (1_764_115_200u64, 900u32);
        let steps = [
            0u64,
            5,
            u64::from(u32::MAX) + 7,
            6,
            u64::from(u32::MAX) - 1,
            9,
            9,
        ];
        let mut wh = 1u64 << 40;
        let mut gw = CodecContext::new(1, 2);
        let mut cloud = CodecContext::new(1, 2);
        for (i, step) in steps.iter().enumerate() {
            wh += step;
            let t = start + i as u64 * u64::from(secs);
            let samples = vec![
                Sample {
                    meter: 0,
                    timestamp: t,
                    wh,
                },
                Sample {
                    meter: 1,
                    timestamp: t,
                    wh: u64::MAX - 100 + i as u64,
                },
            ];
            let batch = gw.build_batch(i as u64 + 1, t, secs, &samples).unwrap();
            assert_eq!(cloud.expand(&batch).unwrap(), samples, "interval {i}");
        }
        assert_eq!(
            Track::prev_delta(Some(Track::next(None, 10, start, 900)), start + 900, 900),
            None
        );
        let t1 = Track::next(None, 10, start, 900);
        let t2 = Track::next(Some(t1), 15, start + 900, 900);
        assert_eq!(Track::prev_delta(Some(t2), start + 1800, 900), Some(5));
        // Not one interval later: no prediction.
        assert_eq!(Track::prev_delta(Some(t2), start + 2700, 900), None);
    }
}
