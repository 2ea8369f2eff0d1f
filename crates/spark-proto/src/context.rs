//! The codec context: the state both ends keep so batches can carry deltas instead of registers.

use crate::batch::{Exception, IntervalReadings, MAX_INTERVALS_PER_BATCH, ReadingsBatch};
use crate::roster::MAX_METERS;

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
///   reference); deltas are taken against it;
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
    last: Vec<Option<u64>>,
    keyframe_every: u32,
    since_keyframe: u32,
    pending_sync: bool,
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
            intervals.push(self.build_interval(these));
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

    fn build_interval(&mut self, these: &[(usize, u32, i32, u64)]) -> IntervalReadings {
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
        iv.values.reserve(these.len());
        for &(_, meter, time_offset, wh) in these {
            iv.present.push(meter);
            let last = &mut self.last[meter as usize];
            let (abs, value) = match *last {
                _ if absolute => (true, wh),
                Some(prev) if wh >= prev => (false, wh - prev),
                // No reference, or the register went backwards (reset, meter replaced).
                _ => (true, wh),
            };
            *last = Some(wh);
            if time_offset != 0 || abs != absolute {
                iv.exceptions.push(Exception {
                    meter,
                    absolute: abs,
                    value,
                    time_offset,
                });
            } else {
                iv.values.push(value);
            }
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
        let mut out = Vec::with_capacity(batch.reading_count());
        for (i, iv) in batch.intervals.iter().enumerate() {
            let scheduled = (i as u64)
                .checked_mul(u64::from(batch.interval_secs))
                .and_then(|d| d.checked_add(batch.interval_start));
            let bad = |reason| ExpandError::Inconsistent {
                interval: i,
                reason,
            };
            if iv.values.len() + iv.exceptions.len() != iv.present.len() {
                return Err(bad("values + exceptions != present meters"));
            }
            let mut values = iv.values.iter();
            let mut exceptions = iv.exceptions.iter().peekable();
            for &meter in &iv.present {
                let (abs, value, offset) = match exceptions.next_if(|e| e.meter == meter) {
                    Some(e) => (e.absolute, e.value, e.time_offset),
                    None => (iv.absolute, *values.next().ok_or(bad("too few values"))?, 0),
                };
                let slot = last
                    .get_mut(meter as usize)
                    .ok_or(bad("meter index beyond the roster"))?;
                let wh = if abs {
                    value
                } else {
                    let prev = slot.ok_or(ExpandError::NoReference { meter, interval: i })?;
                    prev.checked_add(value)
                        .ok_or(ExpandError::Overflow { meter })?
                };
                *slot = Some(wh);
                let timestamp = scheduled
                    .and_then(|t| t.checked_add_signed(i64::from(offset)))
                    .ok_or(ExpandError::BadTimestamp { meter, interval: i })?;
                out.push(Sample {
                    meter,
                    timestamp,
                    wh,
                });
            }
            if exceptions.next().is_some() {
                return Err(bad(
                    "exception for a meter that is not present, or out of order",
                ));
            }
        }
        self.last = last;
        self.pending_sync = false;
        Ok(out)
    }
}
