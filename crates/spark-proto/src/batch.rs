//! Readings batches: the hot path, hand-written (see `examples/codec_bench.rs` for why).
//!
//! A [`ReadingsBatch`] is the wire form: which meters reported in each interval of the batch, and
//! per meter a delta against that meter's previous register value, the residual of predicting
//! that delta (scaled intervals), or an absolute register value; plus off-schedule time offsets
//! and absolute registers inside a delta interval. Turning
//! plain samples into this form and back needs the codec context ([`crate::CodecContext`]); the
//! wire form itself decodes without any state.

use crate::bits::{BitReader, BitWriter, put_varint, unzigzag, zigzag};
use crate::error::{DecodeError, EncodeError};
use crate::frame::{Cursor, MessageType};
use crate::roster::MAX_METERS;

/// Most intervals one batch may span (one day of a 15-minute schedule).
pub const MAX_INTERVALS_PER_BATCH: usize = 96;
/// Most readings (present meters summed over intervals) in one batch. Bounds what a decoder
/// allocates: Rice coding can pack a reading into one bit, so the frame length alone would allow
/// 8 M readings. 262,144 readings decode into ~3 MiB.
pub const MAX_READINGS_PER_BATCH: usize = 1 << 18;
/// Unary quotients from this length on switch to an escape (explicit width + raw value), so one
/// outlier costs ~30 bits instead of thousands.
const RICE_ESCAPE: u64 = 16;
/// Largest Rice parameter (values up to 2^40 Wh ≈ 1 TWh per interval stay unescaped).
const MAX_RICE_K: u32 = 40;

/// Largest Rice parameter of the offset list (4 bits each for gaps and offsets).
const MAX_OFFSET_K: u32 = 15;

const BATCH_FLAG_SYNC: u8 = 0x01;
const PRESENCE_NONE: u8 = 0;
/// All meters except a listed few (the usual case: a handful of missed reads).
const PRESENCE_ALL_EXCEPT: u8 = 1;
const PRESENCE_BITMAP: u8 = 2;
/// Only the listed meters (a few stragglers, or a small roster).
const PRESENCE_LIST: u8 = 3;
const INTERVAL_FLAG_ABSOLUTE: u8 = 0x04;
const INTERVAL_FLAG_SCALED: u8 = 0x08;
const INTERVAL_FLAG_WINDOW: u8 = 0x10;
/// Fixed-point unit of [`IntervalReadings::ratio`]: the ratio is `r / 1024`, so a u16 spans
/// 0–64× in steps of 0.1 % (the noise of one household's 15-minute delta is ~10 %).
pub const RATIO_ONE: u16 = 1024;

/// One batch of readings on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingsBatch {
    /// Per-gateway sequence number (shared with [`crate::Event`]), starting at 1.
    pub seq: u64,
    /// The encoder reset its codec context right before this batch: the decoder resets too, and
    /// no value in it depends on an earlier batch.
    pub sync: bool,
    /// Roster version the meter indices refer to.
    pub roster_version: u32,
    /// Number of meters in that roster (sizes the presence bitmap).
    pub roster_len: u32,
    /// Scheduled time of the first interval, unix seconds.
    pub interval_start: u64,
    /// Schedule period, seconds (900 for 15 minutes); interval `i` is scheduled at
    /// `interval_start + i * interval_secs`.
    pub interval_secs: u32,
    /// One entry per consecutive interval (at least one).
    pub intervals: Vec<IntervalReadings>,
}

/// The readings of one schedule interval.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntervalReadings {
    /// `values` are absolute register values (a keyframe), not deltas.
    pub absolute: bool,
    /// Delta intervals only. `None`: each value is the meter's delta (register − its previous
    /// register). `Some(r)`: a meter whose previous delta `p` is known (see
    /// [`crate::CodecContext`]) sends `zigzag(delta − ⌊(p·r + 512) / 1024⌋)`, the error of
    /// predicting its delta from its previous one scaled by the fleet-wide `r / 1024`
    /// ([`RATIO_ONE`] = 1: plain second-order prediction); a meter without a previous delta still
    /// sends its delta.
    pub ratio: Option<u16>,
    /// Indices of the meters that reported, strictly increasing, each < `roster_len`.
    pub present: Vec<u32>,
    /// Delta intervals only: meters that send an absolute register instead of a value (no
    /// reference yet, or the register went backwards), strictly increasing, each in `present`.
    pub exceptions: Vec<Exception>,
    /// Readings not taken at the scheduled time, strictly increasing by meter, each in `present`.
    /// The meter's value stays in `values` (or `exceptions`).
    pub offsets: Vec<TimeOffset>,
    /// One value per present meter that has no exception, in meter order: absolute Wh registers
    /// if `absolute`, else deltas or prediction residuals per `ratio`.
    pub values: Vec<u64>,
}

/// An absolute register inside a delta interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub meter: u32,
    /// The meter's register, Wh.
    pub value: u64,
}

/// A reading taken off schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOffset {
    pub meter: u32,
    /// Seconds between the scheduled time and the meter's actual reading time, never 0.
    pub secs: i32,
}

impl ReadingsBatch {
    /// Number of readings (present meters over all intervals).
    pub fn reading_count(&self) -> usize {
        self.intervals.iter().map(|i| i.present.len()).sum()
    }

    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ty = MessageType::ReadingsBatch;
        let invalid = |field, reason: String| EncodeError::Invalid {
            msg_type: ty,
            field,
            reason,
        };
        if self.roster_len as usize > MAX_METERS {
            return Err(invalid(
                "roster_len",
                format!("{} exceeds {MAX_METERS}", self.roster_len),
            ));
        }
        if self.intervals.is_empty() || self.intervals.len() > MAX_INTERVALS_PER_BATCH {
            return Err(invalid(
                "intervals",
                format!(
                    "{} intervals, need 1..={MAX_INTERVALS_PER_BATCH}",
                    self.intervals.len()
                ),
            ));
        }
        if self.interval_secs == 0 {
            return Err(invalid("interval_secs", "must be > 0".into()));
        }
        if self.reading_count() > MAX_READINGS_PER_BATCH {
            return Err(EncodeError::TooLong {
                msg_type: ty,
                field: "readings",
                len: self.reading_count(),
                max: MAX_READINGS_PER_BATCH,
            });
        }
        out.push(if self.sync { BATCH_FLAG_SYNC } else { 0 });
        put_varint(out, self.seq);
        put_varint(out, u64::from(self.roster_version));
        put_varint(out, u64::from(self.roster_len));
        put_varint(out, self.interval_start);
        put_varint(out, u64::from(self.interval_secs));
        put_varint(out, self.intervals.len() as u64);
        for iv in &self.intervals {
            iv.encode(self.roster_len, out)
                .map_err(|r| invalid("intervals", r))?;
        }
        Ok(())
    }

    pub(crate) fn decode_payload(payload: &[u8]) -> Result<ReadingsBatch, DecodeError> {
        let mut c = Cursor::new(payload, MessageType::ReadingsBatch);
        let flags = c.u8("flags")?;
        if flags & !BATCH_FLAG_SYNC != 0 {
            return Err(c.invalid("flags", format!("unknown flag bits {flags:#04x}")));
        }
        let seq = c.varint("seq")?;
        let roster_version = c.varint_max("roster_version", u64::from(u32::MAX))? as u32;
        let roster_len = c.varint_max("roster_len", MAX_METERS as u64)? as u32;
        let interval_start = c.varint("interval_start")?;
        let interval_secs = c.varint_max("interval_secs", u64::from(u32::MAX))? as u32;
        if interval_secs == 0 {
            return Err(c.invalid("interval_secs", "must be > 0"));
        }
        let count = c.varint_max("interval count", MAX_INTERVALS_PER_BATCH as u64)? as usize;
        if count == 0 {
            return Err(c.invalid("interval count", "must be ≥ 1"));
        }
        let mut budget = MAX_READINGS_PER_BATCH;
        let mut intervals = Vec::with_capacity(count);
        for _ in 0..count {
            intervals.push(IntervalReadings::decode(&mut c, roster_len, &mut budget)?);
        }
        c.finish()?;
        Ok(ReadingsBatch {
            seq,
            sync: flags & BATCH_FLAG_SYNC != 0,
            roster_version,
            roster_len,
            interval_start,
            interval_secs,
            intervals,
        })
    }
}

impl IntervalReadings {
    fn encode(&self, roster_len: u32, out: &mut Vec<u8>) -> Result<(), String> {
        // Validate the invariants the decoder relies on, so encode never writes what decode refuses.
        if self.present.windows(2).any(|w| w[0] >= w[1]) {
            return Err("present meters not strictly increasing".into());
        }
        if self.present.last().is_some_and(|&m| m >= roster_len) {
            return Err("meter index ≥ roster_len".into());
        }
        if self.absolute && (self.ratio.is_some() || !self.exceptions.is_empty()) {
            return Err("an absolute interval has no ratio and no exceptions".into());
        }
        let in_present = |m: u32| self.present.binary_search(&m).is_ok();
        if self.exceptions.windows(2).any(|w| w[0].meter >= w[1].meter) {
            return Err("exceptions not strictly increasing by meter".into());
        }
        if self.exceptions.iter().any(|e| !in_present(e.meter)) {
            return Err("exception for a meter not in present".into());
        }
        if self.offsets.windows(2).any(|w| w[0].meter >= w[1].meter) {
            return Err("offsets not strictly increasing by meter".into());
        }
        if self
            .offsets
            .iter()
            .any(|o| !in_present(o.meter) || o.secs == 0)
        {
            return Err("offset zero, or for a meter not in present".into());
        }
        if self.values.len() + self.exceptions.len() != self.present.len() {
            return Err("values + exceptions != present meters".into());
        }

        let (mode, presence_bytes) = presence(&self.present, roster_len);
        let mut flags = mode;
        if self.absolute {
            flags |= INTERVAL_FLAG_ABSOLUTE;
        }
        if self.ratio.is_some() {
            flags |= INTERVAL_FLAG_SCALED;
        }
        out.push(flags);
        if let Some(r) = self.ratio {
            out.extend_from_slice(&r.to_be_bytes());
        }
        out.extend_from_slice(&presence_bytes);

        if !self.absolute {
            put_varint(out, self.exceptions.len() as u64);
            let mut prev: Option<u32> = None;
            for e in &self.exceptions {
                put_varint(out, u64::from(gap(prev, e.meter)));
                prev = Some(e.meter);
                put_varint(out, e.value);
            }
        }
        put_varint(out, self.offsets.len() as u64);
        if !self.offsets.is_empty() {
            // Late reads are a few percent of meters a few seconds off: Rice-coded gaps and
            // offsets take ~10 bits where varints take 16.
            let mut prev: Option<u32> = None;
            let gaps: Vec<u64> = self
                .offsets
                .iter()
                .map(|o| u64::from(gap(prev.replace(o.meter), o.meter)))
                .collect();
            let secs: Vec<u64> = self
                .offsets
                .iter()
                .map(|o| zigzag(i64::from(o.secs)))
                .collect();
            let kg = best_rice_k(&gaps).min(MAX_OFFSET_K);
            let ko = best_rice_k(&secs).min(MAX_OFFSET_K);
            out.push(((kg as u8) << 4) | ko as u8);
            let mut w = BitWriter::new(out);
            for (&g, &o) in gaps.iter().zip(&secs) {
                rice_put(&mut w, g, kg);
                rice_put(&mut w, o, ko);
            }
            w.finish();
        }

        if self.values.is_empty() {
            return Ok(());
        }
        if self.absolute {
            // Keyframe registers are large and unrelated to each other: plain varints.
            for &v in &self.values {
                put_varint(out, v);
            }
        } else {
            let k = best_rice_k(&self.values);
            out.push(k as u8);
            let mut w = BitWriter::new(out);
            for &v in &self.values {
                rice_put(&mut w, v, k);
            }
            w.finish();
        }
        Ok(())
    }

    fn decode(
        c: &mut Cursor<'_>,
        roster_len: u32,
        budget: &mut usize,
    ) -> Result<IntervalReadings, DecodeError> {
        let flags = c.u8("interval flags")?;
        if flags & !(0x03 | INTERVAL_FLAG_ABSOLUTE | INTERVAL_FLAG_SCALED | INTERVAL_FLAG_WINDOW)
            != 0
        {
            return Err(c.invalid("interval flags", format!("unknown flag bits {flags:#04x}")));
        }
        let absolute = flags & INTERVAL_FLAG_ABSOLUTE != 0;
        let ratio = if flags & INTERVAL_FLAG_SCALED != 0 {
            if absolute {
                return Err(c.invalid("interval flags", "scaled and absolute together"));
            }
            let b = c.bytes(2, "ratio")?;
            Some(u16::from_be_bytes([b[0], b[1]]))
        } else {
            None
        };
        let mut present: Vec<u32> = Vec::new();
        let mut take = |c: &Cursor<'_>, n: usize| -> Result<(), DecodeError> {
            // Every reading costs at least one bit of payload; refuse counts the rest of the
            // payload cannot hold, and batches over the reading cap, before allocating.
            if n > *budget || n > c.rest().len().saturating_mul(8) {
                return Err(c.invalid(
                    "present meters",
                    format!("{n} readings exceed what the batch can hold"),
                ));
            }
            *budget -= n;
            Ok(())
        };
        let presence_start = c.rest();
        let (lo, roster_len_all, roster_len) = if flags & INTERVAL_FLAG_WINDOW != 0 {
            let lo = c.varint_max("window start", u64::from(roster_len.saturating_sub(1)))? as u32;
            let len = c.varint_max("window length", u64::from(roster_len - lo))? as u32;
            (lo, roster_len, len)
        } else {
            (0, roster_len, roster_len)
        };
        match flags & 0x03 {
            PRESENCE_NONE => {}
            PRESENCE_ALL_EXCEPT => {
                let absent = c.varint_max("absent count", u64::from(roster_len))? as usize;
                let n = roster_len as usize - absent;
                take(c, n)?;
                present.reserve_exact(n);
                let mut next = 0u32; // first meter not yet pushed
                let mut prev = None;
                for _ in 0..absent {
                    let m = ungap(c, prev, "absent list", roster_len)?;
                    prev = Some(m);
                    present.extend(next..m);
                    next = m + 1;
                }
                present.extend(next..roster_len);
            }
            PRESENCE_BITMAP => {
                let bitmap = c.bytes((roster_len as usize).div_ceil(8), "presence bitmap")?;
                let n = bitmap.iter().map(|b| b.count_ones() as usize).sum();
                take(c, n)?;
                present.reserve_exact(n);
                for (i, &b) in bitmap.iter().enumerate() {
                    let mut b = b;
                    while b != 0 {
                        let bit = b.trailing_zeros();
                        let m = i as u32 * 8 + bit;
                        if m >= roster_len {
                            return Err(c.invalid("presence bitmap", "padding bits set"));
                        }
                        present.push(m);
                        b &= b - 1;
                    }
                }
            }
            _ => {
                let n = c.varint_max("presence count", u64::from(roster_len))? as usize;
                take(c, n)?;
                present.reserve_exact(n);
                let mut prev = None;
                for _ in 0..n {
                    let m = ungap(c, prev, "presence list", roster_len)?;
                    present.push(m);
                    prev = Some(m);
                }
            }
        }

        // Meters so far are window-relative. The presence section must be exactly what the
        // encoder writes for these meters (mode and window are its choice, not data), so each
        // interval has one encoding.
        if lo > 0 {
            present.iter_mut().for_each(|m| *m += lo);
        }
        let roster_len = roster_len_all;
        let used = presence_start.len() - c.rest().len();
        let (mode, bytes) = presence(&present, roster_len);
        if mode != flags & (0x03 | INTERVAL_FLAG_WINDOW) || bytes[..] != presence_start[..used] {
            return Err(c.invalid(
                "presence",
                "not the canonical (shortest) encoding of these meters",
            ));
        }

        let mut exceptions = Vec::new();
        if !absolute {
            let ne = c.varint_max("exception count", present.len() as u64)? as usize;
            exceptions.reserve_exact(ne);
            let mut prev = None;
            for _ in 0..ne {
                let meter = ungap(c, prev, "exception meter", roster_len)?;
                prev = Some(meter);
                if present.binary_search(&meter).is_err() {
                    return Err(c.invalid(
                        "exception meter",
                        format!("meter {meter} has an exception but did not report"),
                    ));
                }
                let value = c.varint("exception value")?;
                exceptions.push(Exception { meter, value });
            }
        }
        let no = c.varint_max("offset count", present.len() as u64)? as usize;
        let mut offsets = Vec::with_capacity(no);
        if no > 0 {
            let ks = c.u8("offset rice parameters")?;
            let (kg, ko) = (u32::from(ks >> 4), u32::from(ks & 0x0f));
            let mut r = BitReader::new(c.rest());
            let truncated = || c.invalid("offsets", "truncated or non-canonical Rice code");
            let mut prev: Option<u32> = None;
            for _ in 0..no {
                let g = rice_get(&mut r, kg).ok_or_else(truncated)?;
                let meter = prev
                    .map_or(Some(g), |p| (u64::from(p) + 1).checked_add(g))
                    .filter(|&m| m < u64::from(roster_len))
                    .ok_or_else(|| c.invalid("offset meter", "meter index beyond the roster"))?
                    as u32;
                prev = Some(meter);
                if present.binary_search(&meter).is_err() {
                    return Err(c.invalid(
                        "offset meter",
                        format!("meter {meter} has a time offset but did not report"),
                    ));
                }
                let o = unzigzag(rice_get(&mut r, ko).ok_or_else(truncated)?);
                let secs = match i32::try_from(o) {
                    Ok(o) if o != 0 => o,
                    _ => {
                        return Err(
                            c.invalid("time offset", format!("{o} is zero or out of range"))
                        );
                    }
                };
                offsets.push(TimeOffset { meter, secs });
            }
            let (used, pad_ok) = r.finish();
            if !pad_ok {
                return Err(c.invalid("offsets", "non-zero padding bits"));
            }
            c.pos += used;
        }

        let nv = present.len() - exceptions.len();
        let mut values = Vec::with_capacity(nv);
        if nv > 0 {
            if absolute {
                for _ in 0..nv {
                    values.push(c.varint("absolute value")?);
                }
            } else {
                let k = u32::from(c.u8("rice parameter")?);
                if k > MAX_RICE_K {
                    return Err(c.invalid("rice parameter", format!("{k} exceeds {MAX_RICE_K}")));
                }
                let mut r = BitReader::new(c.rest());
                for _ in 0..nv {
                    values.push(rice_get(&mut r, k).ok_or_else(|| {
                        c.invalid("delta values", "truncated or non-canonical Rice code")
                    })?);
                }
                let (used, pad_ok) = r.finish();
                if !pad_ok {
                    return Err(c.invalid("delta values", "non-zero padding bits"));
                }
                c.pos += used;
            }
        }
        Ok(IntervalReadings {
            absolute,
            ratio,
            present,
            exceptions,
            offsets,
            values,
        })
    }
}

/// Writes one Rice-coded value (see [`rice_get`]).
fn rice_put(w: &mut BitWriter<'_>, v: u64, k: u32) {
    let q = v >> k;
    if q < RICE_ESCAPE {
        w.ones(q as u32);
        w.put(0, 1);
        w.put(v, k);
    } else {
        let width = 64 - v.leading_zeros();
        w.ones(RICE_ESCAPE as u32);
        w.put(u64::from(width - 1), 6);
        w.put(v, width);
    }
}

/// The presence section for `present` (sorted, < `roster_len`): the flag bits (mode, window) and
/// the bytes. Nothing for no meter; else the shortest of a list of the absent meters, a bitmap
/// and a list of the present ones (lists are gap-coded varints), over the whole roster or over
/// the window from the first to the last present meter (an interval a batch holds only part of:
/// spark-uplinkd cuts batches by reading count, not by interval), whichever is shorter.
fn presence(present: &[u32], roster_len: u32) -> (u8, Vec<u8>) {
    let (Some(&lo), Some(&last)) = (present.first(), present.last()) else {
        return (PRESENCE_NONE, Vec::new());
    };
    let whole = presence_in(present, 0, roster_len);
    if lo == 0 && last + 1 == roster_len {
        return whole;
    }
    let mut windowed = Vec::new();
    put_varint(&mut windowed, u64::from(lo));
    put_varint(&mut windowed, u64::from(last + 1 - lo));
    let (mode, bytes) = presence_in(present, lo, last + 1 - lo);
    windowed.extend_from_slice(&bytes);
    if windowed.len() < whole.1.len() {
        (mode | INTERVAL_FLAG_WINDOW, windowed)
    } else {
        whole
    }
}

/// The shortest presence mode for `present` over meters `lo..lo + len`, indices relative to `lo`.
fn presence_in(present: &[u32], lo: u32, len: u32) -> (u8, Vec<u8>) {
    let n = present.len();
    let rel: Vec<u32> = present.iter().map(|m| m - lo).collect();
    let bitmap_len = (len as usize).div_ceil(8);
    let mut absent_list = Vec::new();
    put_varint(&mut absent_list, (len as usize - n) as u64);
    put_gaps(&mut absent_list, Absent::new(&rel, len));
    let mut present_list = Vec::new();
    put_varint(&mut present_list, n as u64);
    put_gaps(&mut present_list, rel.iter().copied());
    if absent_list.len() <= bitmap_len.min(present_list.len()) {
        (PRESENCE_ALL_EXCEPT, absent_list)
    } else if bitmap_len <= present_list.len() {
        let mut bitmap = vec![0u8; bitmap_len];
        for &m in &rel {
            bitmap[m as usize / 8] |= 1 << (m % 8);
        }
        (PRESENCE_BITMAP, bitmap)
    } else {
        (PRESENCE_LIST, present_list)
    }
}

/// Reads one Rice-coded value; `None` on truncation or a non-canonical escape.
fn rice_get(r: &mut BitReader<'_>, k: u32) -> Option<u64> {
    let (q, terminated) = r.unary(RICE_ESCAPE as u32)?;
    if terminated {
        let low = r.get(k)?;
        return Some((u64::from(q) << k) | low);
    }
    let width = r.get(6)? as u32 + 1;
    let v = r.get(width)?;
    // Canonical: the top bit is set (minimal width) and the value really needed the escape.
    if v >> (width - 1) != 1 || (v >> k) < RICE_ESCAPE {
        return None;
    }
    Some(v)
}

/// Bits a value costs with parameter `k`.
pub(crate) fn rice_bits(v: u64, k: u32) -> u64 {
    let q = v >> k;
    if q < RICE_ESCAPE {
        q + 1 + u64::from(k)
    } else {
        RICE_ESCAPE + 6 + u64::from(64 - v.leading_zeros())
    }
}

/// The Rice parameter that makes `values` shortest. The optimum is near log2(mean), so only a
/// small window around it is tried.
pub(crate) fn best_rice_k(values: &[u64]) -> u32 {
    let mean = values.iter().map(|&v| u128::from(v)).sum::<u128>() / values.len() as u128;
    let centre = (128 - mean.leading_zeros()).min(MAX_RICE_K);
    let lo = centre.saturating_sub(3);
    let hi = (centre + 2).min(MAX_RICE_K);
    (lo..=hi)
        .min_by_key(|&k| values.iter().map(|&v| rice_bits(v, k)).sum::<u64>())
        .unwrap_or(0)
}

/// The meters of `0..roster_len` not in `present` (sorted), in order.
struct Absent<'a> {
    present: &'a [u32],
    next: u32,
    roster_len: u32,
}

impl<'a> Absent<'a> {
    fn new(present: &'a [u32], roster_len: u32) -> Self {
        Absent {
            present,
            next: 0,
            roster_len,
        }
    }
}

impl Iterator for Absent<'_> {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        while self.next < self.roster_len {
            let m = self.next;
            self.next += 1;
            match self.present.first() {
                Some(&p) if p == m => self.present = &self.present[1..],
                _ => return Some(m),
            }
        }
        None
    }
}

/// Distance from the previous index (first: the index itself), minus one: increasing indices
/// cost one byte per step of < 128.
fn gap(prev: Option<u32>, m: u32) -> u32 {
    match prev {
        None => m,
        Some(p) => m - p - 1,
    }
}

fn put_gaps(out: &mut Vec<u8>, it: impl Iterator<Item = u32>) {
    let mut prev = None;
    for m in it {
        put_varint(out, u64::from(gap(prev, m)));
        prev = Some(m);
    }
}

fn ungap(
    c: &mut Cursor<'_>,
    prev: Option<u32>,
    field: &'static str,
    roster_len: u32,
) -> Result<u32, DecodeError> {
    let g = c.varint(field)?;
    let m = match prev {
        None => Some(g),
        Some(p) => u64::from(p).checked_add(1).and_then(|x| x.checked_add(g)),
    };
    match m {
        Some(m) if m < u64::from(roster_len) => Ok(m as u32),
        _ => Err(c.invalid(field, "meter index beyond the roster")),
    }
}
