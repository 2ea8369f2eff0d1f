//! Queue entries: what one record of the durable outgoing queue holds, and how a pull of meter
//! readings is cut into entries.
//!
//! An entry is exactly what one frame to the cloud will carry: a [`ReadingsEntry`] becomes one
//! `ReadingsBatch`, an [`EventEntry`] one `Event`. The entry's journal position is its protocol
//! sequence number. Entries are stored *plain* (samples, not deltas): the batch is encoded with
//! `CodecContext::build_batch` when it is sent, so a resend after a reconnect is encoded against
//! the new session (spark-proto's resync rules).
//!
//! Every entry also carries the meterd cursor as it stood once the entry was durable, so the
//! newest entry tells a restarted uplinkd where to resume `Meters1.Fetch`.
//!
//! # Record format (version 1)
//!
//! ```text
//! version u8 = 0x01 | kind u8 | meters_cursor varint | kind body
//!
//! kind 0x01 readings: roster_version varint | interval_start varint (unix s)
//!                     | interval_secs varint (>0) | count varint
//!                     | count × (meter varint | zigzag(ts − interval_start) varint | wh varint)
//! kind 0x02 event:    one spark-proto Event frame with seq 0 (the real seq is the position)
//! ```
//!
//! Varints are unsigned LEB128. A 2000-meter interval costs about 9 bytes per reading on disk.

use spark_proto::{Event, EventKind, MAX_INTERVALS_PER_BATCH, Message, Sample};

const FORMAT_VERSION: u8 = 0x01;
const KIND_READINGS: u8 = 0x01;
const KIND_EVENT: u8 = 0x02;

/// Most samples one readings entry holds. A `Meters1.Fetch` returns at most 2048 readings, so a
/// chunk becomes one entry in the usual case; the cap keeps a record far below the journal's
/// 1 MiB limit and a batch far below spark-proto's frame limit.
pub const MAX_SAMPLES_PER_ENTRY: usize = 4096;

/// One record of the outgoing queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Readings(ReadingsEntry),
    Event(EventEntry),
}

impl Entry {
    /// The meterd cursor once this entry was durable.
    pub fn meters_cursor(&self) -> u64 {
        match self {
            Entry::Readings(r) => r.meters_cursor,
            Entry::Event(e) => e.meters_cursor,
        }
    }
}

/// Readings for one `ReadingsBatch`: they satisfy `build_batch`'s rules by construction (every
/// sample within 96 intervals of `interval_start`, none before it, one sample per meter per
/// interval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadingsEntry {
    /// Roster version when the entry was made (for logs: indices stay valid in later rosters,
    /// which only ever append).
    pub roster_version: u32,
    pub meters_cursor: u64,
    pub interval_start: u64,
    pub interval_secs: u32,
    pub samples: Vec<Sample>,
}

/// A gateway event (health, meter alarm) waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    pub meters_cursor: u64,
    /// When it happened, unix seconds.
    pub time: u64,
    pub kind: EventKind,
}

/// A record that cannot be read back (damage, or a newer format after a downgrade).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue entry is unreadable: {reason}")]
pub struct EntryError {
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> EntryError {
    EntryError {
        reason: reason.into(),
    }
}

impl Entry {
    /// The record bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(FORMAT_VERSION);
        match self {
            Entry::Readings(r) => {
                out.push(KIND_READINGS);
                put_varint(&mut out, r.meters_cursor);
                put_varint(&mut out, u64::from(r.roster_version));
                put_varint(&mut out, r.interval_start);
                put_varint(&mut out, u64::from(r.interval_secs));
                put_varint(&mut out, r.samples.len() as u64);
                out.reserve(r.samples.len() * 9);
                for s in &r.samples {
                    put_varint(&mut out, u64::from(s.meter));
                    let rel = i128::from(s.timestamp) - i128::from(r.interval_start);
                    // Within ±96 intervals of the start by construction, so it fits an i64.
                    put_varint(&mut out, zigzag(rel as i64));
                    put_varint(&mut out, s.wh);
                }
            }
            Entry::Event(e) => {
                out.push(KIND_EVENT);
                put_varint(&mut out, e.meters_cursor);
                let msg = Message::Event(Event {
                    seq: 0,
                    time: e.time,
                    kind: e.kind.clone(),
                });
                // An Event has no variable-length field over a cap: encoding cannot fail.
                spark_proto::encode(&msg, &mut out).expect("events always encode");
            }
        }
        out
    }

    /// Parses a record written by [`Entry::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let mut r = Reader { buf: bytes };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let kind = r.u8()?;
        let meters_cursor = r.varint()?;
        match kind {
            KIND_READINGS => {
                let roster_version =
                    u32::try_from(r.varint()?).map_err(|_| bad("roster version"))?;
                let interval_start = r.varint()?;
                let interval_secs = u32::try_from(r.varint()?)
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad("interval_secs"))?;
                let count = usize::try_from(r.varint()?).map_err(|_| bad("count"))?;
                if count > MAX_SAMPLES_PER_ENTRY || count > r.buf.len() {
                    return Err(bad(format!("sample count {count}")));
                }
                let mut samples = Vec::with_capacity(count);
                for _ in 0..count {
                    let meter = u32::try_from(r.varint()?).map_err(|_| bad("meter index"))?;
                    let rel = unzigzag(r.varint()?);
                    let timestamp = interval_start
                        .checked_add_signed(rel)
                        .ok_or_else(|| bad("timestamp"))?;
                    let wh = r.varint()?;
                    samples.push(Sample {
                        meter,
                        timestamp,
                        wh,
                    });
                }
                if !r.buf.is_empty() {
                    return Err(bad("trailing bytes"));
                }
                Ok(Entry::Readings(ReadingsEntry {
                    roster_version,
                    meters_cursor,
                    interval_start,
                    interval_secs,
                    samples,
                }))
            }
            KIND_EVENT => match spark_proto::decode(r.buf) {
                Ok((Message::Event(ev), n)) if n == r.buf.len() => Ok(Entry::Event(EventEntry {
                    meters_cursor,
                    time: ev.time,
                    kind: ev.kind,
                })),
                Ok(_) => Err(bad("event record holds another message")),
                Err(e) => Err(bad(format!("event: {e}"))),
            },
            other => Err(bad(format!("unknown kind {other:#04x}"))),
        }
    }
}

/// Cuts readings (already mapped to roster indices, in meterd position order) into entries that
/// each make a valid batch. Greedy and order-keeping: a sample that cannot join the current entry
/// (too early or too late for its 96 intervals, a second sample of a meter in one interval, the
/// entry full) starts the next one. Keeping position order is what makes each entry's
/// `meters_cursor` exact: all readings up to it are in this entry or an earlier one.
#[derive(Debug)]
pub struct Packer {
    interval_secs: u32,
    roster_version: u32,
    current: Option<Open>,
    done: Vec<ReadingsEntry>,
}

#[derive(Debug)]
struct Open {
    entry: ReadingsEntry,
    // (meter, slot) pairs taken, for the one-sample-per-interval rule.
    taken: std::collections::HashSet<(u32, u32)>,
}

impl Packer {
    pub fn new(interval_secs: u32, roster_version: u32) -> Packer {
        Packer {
            interval_secs: interval_secs.max(1),
            roster_version,
            current: None,
            done: Vec::new(),
        }
    }

    /// Adds one sample read at meterd position `position`.
    pub fn push(&mut self, sample: Sample, position: u64) {
        let secs = self.interval_secs;
        if let Some(open) = &mut self.current {
            if let Some(slot) = slot_of(open.entry.interval_start, secs, sample.timestamp)
                && open.entry.samples.len() < MAX_SAMPLES_PER_ENTRY
                && open.taken.insert((sample.meter, slot))
            {
                open.entry.samples.push(sample);
                open.entry.meters_cursor = position;
                return;
            }
            let full = self.current.take().map(|o| o.entry);
            self.done.extend(full);
        }
        // The schedule point nearest the sample, so the sample lands in slot 0.
        let start = nearest_schedule_point(sample.timestamp, secs);
        let mut taken = std::collections::HashSet::new();
        taken.insert((sample.meter, 0));
        self.current = Some(Open {
            entry: ReadingsEntry {
                roster_version: self.roster_version,
                meters_cursor: position,
                interval_start: start,
                interval_secs: secs,
                samples: vec![sample],
            },
            taken,
        });
    }

    /// The entries, in order.
    pub fn finish(mut self) -> Vec<ReadingsEntry> {
        self.done.extend(self.current.take().map(|o| o.entry));
        self.done
    }
}

/// The slot `build_batch` puts a sample in, if it is one a batch starting at `start` can hold.
fn slot_of(start: u64, secs: u32, timestamp: u64) -> Option<u32> {
    let secs = i128::from(secs);
    let rel = i128::from(timestamp) - i128::from(start);
    // Same rounding as spark-proto: nearest slot, a half-way sample to the later one.
    let slot = (rel + secs / 2).div_euclid(secs);
    (0..MAX_INTERVALS_PER_BATCH as i128)
        .contains(&slot)
        .then_some(slot as u32)
}

fn nearest_schedule_point(timestamp: u64, secs: u32) -> u64 {
    let secs = u64::from(secs);
    let below = timestamp - timestamp % secs;
    // Timestamps in the first half of an interval belong to its start, later ones to the next.
    if timestamp - below >= secs.div_ceil(2) && below.checked_add(secs).is_some() {
        below + secs
    } else {
        below
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, EntryError> {
        let (&b, rest) = self.buf.split_first().ok_or_else(|| bad("truncated"))?;
        self.buf = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, EntryError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(bad("varint overflow"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint overflow"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spark_proto::CodecContext;

    fn s(meter: u32, timestamp: u64, wh: u64) -> Sample {
        Sample {
            meter,
            timestamp,
            wh,
        }
    }

    #[test]
    fn records_round_trip() {
        let readings = Entry::Readings(ReadingsEntry {
            roster_version: 1_700_000_000,
            meters_cursor: 77,
            interval_start: 1_764_115_200,
            interval_secs: 900,
            samples: vec![
                s(0, 1_764_115_200, 12_345_678),
                s(1999, 1_764_115_197, u64::MAX),
                s(3, 1_764_115_200 + 95 * 900 + 4, 0),
            ],
        });
        let event = Entry::Event(EventEntry {
            meters_cursor: 5,
            time: 1_764_115_999,
            kind: EventKind::Health {
                uptime_secs: 42,
                queue_len: 3,
                free_data_kib: 1 << 20,
                rssi_dbm: -71,
                meters_seen: 2000,
            },
        });
        for e in [readings, event] {
            let bytes = e.encode();
            assert_eq!(Entry::decode(&bytes).unwrap(), e);
            // Every truncation is an error, never a panic or a different entry.
            for n in 0..bytes.len() {
                assert!(Entry::decode(&bytes[..n]).is_err(), "prefix {n} accepted");
            }
        }
        assert!(Entry::decode(&[2, 1, 0]).is_err());
    }

    #[test]
    fn packer_makes_entries_build_batch_accepts() {
        // 3 meters, 200 intervals, a few seconds late, one duplicate read, one stray early read.
        let mut p = Packer::new(900, 1);
        let mut pos = 0;
        let mut all = Vec::new();
        for i in 0..200u64 {
            for m in 0..3u32 {
                pos += 1;
                let ts = 1_000_000_200 + i * 900 + u64::from(m) * 3;
                all.push(s(m, ts, i * 10 + u64::from(m)));
                p.push(*all.last().unwrap(), pos);
            }
            if i == 50 {
                pos += 1;
                // Same meter, same interval: must go to a new entry.
                let dup = s(0, 1_000_000_200 + i * 900 + 60, 999);
                all.push(dup);
                p.push(dup, pos);
                pos += 1;
                // Far in the past: must not be "before start" of any entry.
                let early = s(1, 999_000_000, 1);
                all.push(early);
                p.push(early, pos);
            }
        }
        let entries = p.finish();
        assert!(entries.len() >= 4, "{}", entries.len());
        assert_eq!(entries.last().unwrap().meters_cursor, pos);
        let mut ctx = CodecContext::new(1, 3);
        let mut back = Vec::new();
        let mut cloud = CodecContext::new(1, 3);
        for (seq, e) in entries.iter().enumerate() {
            let b = ctx
                .build_batch(
                    seq as u64 + 1,
                    e.interval_start,
                    e.interval_secs,
                    &e.samples,
                )
                .unwrap();
            back.extend(cloud.expand(&b).unwrap());
        }
        let mut want = all.clone();
        want.sort();
        back.sort();
        assert_eq!(back, want);
    }

    #[test]
    fn schedule_points() {
        assert_eq!(nearest_schedule_point(900, 900), 900);
        assert_eq!(nearest_schedule_point(1349, 900), 900);
        assert_eq!(nearest_schedule_point(1350, 900), 1800);
        assert_eq!(nearest_schedule_point(7, 1), 7);
        assert_eq!(nearest_schedule_point(3, 5), 5);
        assert_eq!(nearest_schedule_point(2, 5), 0);
    }
}
