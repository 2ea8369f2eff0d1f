//! meterd's durable reading buffer: readings between the radio and the reader (uplinkd), kept on
//! `/data` so that neither side's crash or a power cut loses one.
//!
//! # Files in the data directory
//!
//! ```text
//! meters        the roster: one meter id per line, in the order first heard; append-only and
//!               fsync'd before any record refers to it, so a line number is a stable index
//! radio.state   "EPOCH POSITION SEQ\n", replaced atomically (write, fsync, rename, fsync dir):
//!               at journal position POSITION the last stored module sequence number was SEQ
//! journal/      spark_journal::Journal, one record per reading
//! ```
//!
//! # Record
//!
//! ```text
//! | 0x01 | meter index (LEB128) | timestamp (LEB128) | wh (LEB128) | module seq (LEB128) |
//! ```
//!
//! About 15 bytes a reading instead of ~50 with the id spelled out. The module sequence number
//! is kept so that after a crash meterd knows the last reading it stored and drops the copies
//! the module resends: the last stored `seq` is the head record's, or `radio.state`'s when the
//! journal holds nothing newer (everything fetched, or a new module epoch).
//!
//! # Positions and trimming
//!
//! A reading's journal position is its `Meters1` position. A reader's `Fetch(cursor)` trims the
//! journal through `cursor`. When the buffer holds more than its cap, the oldest readings are
//! dropped with a loud log line: a reader that stays away for weeks must not fill `/data`.
//!
//! # Last reading per meter
//!
//! For people (the web UI) the store keeps, in memory, the newest reading (by the meter's
//! timestamp) of every meter in the roster, updated on each append. At open it is seeded from
//! the newest [`LAST_SEED_RECORDS`] records still in the journal, so a restart costs a bounded
//! read; a meter whose readings were all fetched and trimmed before the restart shows again at
//! its next reading (a quarter of an hour on a typical schedule).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use spark_dbus::MeterReading;
use spark_journal::{Journal, JournalError, JournalOptions};

use crate::radio::{MAX_METER_ID, RadioReading};

const RECORD_V1: u8 = 0x01;
/// Bytes one Fetch reads from the journal at most (about 60k records).
const FETCH_BYTES: usize = 1 << 20;
/// Records read at open to seed the last reading of each meter (~120 KiB of journal).
pub const LAST_SEED_RECORDS: u64 = 8192;

/// Something went wrong with the buffer on disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading buffer journal: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot {action} {}: {source}; check that the data directory is on a writable, not full filesystem", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged ({reason}); move it away to start a new buffer (unfetched readings in it are lost)", path.display())]
    Damaged { path: PathBuf, reason: String },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// What [`Store::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// Position of the newest stored reading.
    pub head: u64,
    /// Readings dropped to stay within the cap.
    pub dropped: u64,
}

/// The module's identity and the last sequence number stored, as `radio.state` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RadioState {
    epoch: u32,
    position: u64,
    seq: u64,
}

/// The reading buffer.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    journal: Journal,
    roster: Vec<String>,
    index: HashMap<String, u32>,
    roster_file: File,
    state: Option<RadioState>,
    last_seq: u64,
    cap: u64,
    dropped_total: u64,
    /// Newest (position, timestamp, wh) per roster index.
    last: Vec<Option<(u64, u64, u64)>>,
}

impl Store {
    /// Opens (or creates) the buffer in `dir`, keeping at most `cap` readings.
    pub fn open(dir: &Path, cap: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        let journal = Journal::open(&dir.join("journal"), JournalOptions::default())?;
        let (roster, roster_file) = load_roster(&dir.join("meters"))?;
        let index = roster
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let state = load_state(&dir.join("radio.state"))?;
        let mut store = Self {
            dir: dir.to_owned(),
            journal,
            roster,
            index,
            roster_file,
            state,
            last_seq: 0,
            cap: cap.max(1),
            dropped_total: 0,
            last: Vec::new(),
        };
        store.last_seq = store.recover_last_seq()?;
        store.seed_last()?;
        Ok(store)
    }

    /// Fills the last reading of each meter from the newest records in the journal.
    fn seed_last(&mut self) -> Result<(), StoreError> {
        self.last = vec![None; self.roster.len()];
        let head = self.journal.head();
        let from = head
            .saturating_sub(LAST_SEED_RECORDS)
            .max(self.journal.tail());
        let mut cursor = from;
        while cursor < head {
            let recs = self
                .journal
                .read_after(cursor, LAST_SEED_RECORDS as usize, FETCH_BYTES)?;
            let Some(&(last_pos, _)) = recs.last() else {
                break;
            };
            for (position, rec) in recs {
                let (index, timestamp, wh, _seq) = self.decode(&rec)?;
                self.note_last(index, position, timestamp, wh);
            }
            cursor = last_pos;
        }
        Ok(())
    }

    fn note_last(&mut self, index: usize, position: u64, timestamp: u64, wh: u64) {
        if self.last.len() <= index {
            self.last.resize(index + 1, None);
        }
        let slot = &mut self.last[index];
        // The newest by the meter's clock: a late reading that arrives after a newer one is
        // stored (the cloud wants it) but is not the meter's "last" reading.
        if slot.is_none_or(|(_, ts, _)| timestamp >= ts) {
            *slot = Some((position, timestamp, wh));
        }
    }

    /// The newest reading of each meter that has one, in roster order.
    pub fn last_readings(&self) -> Vec<MeterReading> {
        self.last
            .iter()
            .enumerate()
            .filter_map(|(index, last)| {
                let (position, timestamp, wh) = (*last)?;
                Some(MeterReading {
                    position,
                    meter_id: self.roster[index].clone(),
                    timestamp,
                    wh,
                })
            })
            .collect()
    }

    fn recover_last_seq(&mut self) -> Result<u64, StoreError> {
        let (position, seq) = self.state.map_or((0, 0), |s| (s.position, s.seq));
        let head = self.journal.head();
        if head > position && head > self.journal.tail() {
            let recs = self.journal.read_after(head - 1, 1, FETCH_BYTES)?;
            if let Some((_, rec)) = recs.first() {
                return Ok(self.decode(rec)?.3);
            }
        }
        Ok(seq)
    }

    /// Highest module sequence number stored.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Epoch of the module the buffer last heard, if any.
    pub fn epoch(&self) -> Option<u32> {
        self.state.map(|s| s.epoch)
    }

    /// Position of the newest reading (0: none ever).
    pub fn head(&self) -> u64 {
        self.journal.head()
    }

    /// Readings held.
    pub fn buffered(&self) -> u64 {
        self.journal.len()
    }

    /// Readings dropped because of the cap since start.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Meter ids in index order.
    pub fn roster(&self) -> &[String] {
        &self.roster
    }

    /// Takes note of the module's `Status`: a new epoch (another module, or a wiped one) or an
    /// `acked` past what this buffer stored both move the last sequence number, since the module
    /// will never send those readings again.
    pub fn module_status(&mut self, epoch: u32, acked: u64) -> Result<(), StoreError> {
        match self.state {
            Some(s) if s.epoch == epoch => {
                if acked <= self.last_seq {
                    return Ok(());
                }
                tracing::warn!(
                    acked,
                    stored = self.last_seq,
                    "the radio module has acknowledged readings this buffer never stored (data \
                     directory restored or replaced?); they cannot be fetched again"
                );
            }
            Some(s) => tracing::warn!(
                old = s.epoch,
                new = epoch,
                "a different radio module (new epoch): its readings are numbered afresh"
            ),
            None => tracing::info!(epoch, acked, "first radio module seen by this buffer"),
        }
        self.last_seq = acked;
        self.write_state(epoch)
    }

    /// Gives up reading `seq` (the next one expected), which the module sent but which cannot be
    /// stored: the module is then acknowledged past it.
    pub fn skip(&mut self, seq: u64) -> Result<(), StoreError> {
        let Some(epoch) = self.epoch() else {
            return Ok(());
        };
        if seq <= self.last_seq {
            return Ok(());
        }
        self.last_seq = seq;
        self.write_state(epoch)
    }

    fn write_state(&mut self, epoch: u32) -> Result<(), StoreError> {
        let state = RadioState {
            epoch,
            position: self.journal.head(),
            seq: self.last_seq,
        };
        let path = self.dir.join("radio.state");
        let tmp = self.dir.join("radio.state.tmp");
        let text = format!("{} {} {}\n", state.epoch, state.position, state.seq);
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))?;
        self.state = Some(state);
        Ok(())
    }

    /// Adds meters to the roster (those not in it yet), durably.
    pub fn add_meters<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<bool, StoreError> {
        let mut text = String::new();
        for id in ids {
            if !self.index.contains_key(id) {
                // The roster is small (a few thousand); u32 indexes are plenty.
                self.index.insert(id.to_owned(), self.roster.len() as u32);
                self.roster.push(id.to_owned());
                text.push_str(id);
                text.push('\n');
            }
        }
        if text.is_empty() {
            return Ok(false);
        }
        let path = self.dir.join("meters");
        self.roster_file
            .write_all(text.as_bytes())
            .map_err(io("append to", &path))?;
        self.roster_file.sync_data().map_err(io("fsync", &path))?;
        Ok(true)
    }

    /// Stores readings (consecutive module sequence numbers after [`last_seq`](Self::last_seq))
    /// durably; only then may the module be acknowledged.
    pub fn append(&mut self, readings: &[RadioReading]) -> Result<Appended, StoreError> {
        if readings.is_empty() {
            return Ok(Appended {
                head: self.journal.head(),
                dropped: 0,
            });
        }
        self.add_meters(readings.iter().map(|r| r.meter_id.as_str()))?;
        let records: Vec<Vec<u8>> = readings
            .iter()
            .map(|r| {
                let mut rec = Vec::with_capacity(24);
                rec.push(RECORD_V1);
                put_varint(&mut rec, u64::from(self.index[&r.meter_id]));
                put_varint(&mut rec, r.timestamp);
                put_varint(&mut rec, r.wh);
                put_varint(&mut rec, r.seq);
                rec
            })
            .collect();
        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let mut dropped = 0;
        let head = match self.journal.append(&slices) {
            Ok(head) => head,
            Err(JournalError::Full { .. }) => {
                // A full /data must not stop the gateway: give up the oldest tenth and retry once.
                let drop = (self.journal.len() / 10).max(readings.len() as u64);
                dropped += self.drop_oldest(drop, "the data partition is full")?;
                self.journal.append(&slices)?
            }
            Err(e) => return Err(e.into()),
        };
        // Readings in one call are consecutive (the session checks).
        self.last_seq = readings[readings.len() - 1].seq;
        let first = head + 1 - readings.len() as u64;
        for (i, r) in readings.iter().enumerate() {
            let index = self.index[&r.meter_id] as usize;
            self.note_last(index, first + i as u64, r.timestamp, r.wh);
        }
        if self.journal.len() > self.cap {
            let excess = self.journal.len() - self.cap;
            dropped += self.drop_oldest(excess, "the buffer reached its cap (max-buffered)")?;
        }
        Ok(Appended { head, dropped })
    }

    fn drop_oldest(&mut self, count: u64, why: &str) -> Result<u64, StoreError> {
        let tail = self.journal.tail();
        let through = (tail + count).min(self.journal.head());
        if through <= tail {
            return Ok(0);
        }
        self.trim_through(through)?;
        let dropped = through - tail;
        self.dropped_total += dropped;
        tracing::error!(
            dropped,
            first = tail + 1,
            last = through,
            buffered = self.journal.len(),
            "dropped the oldest readings, which no reader fetched, because {why}; is spark-uplinkd \
             running and fetching?"
        );
        Ok(dropped)
    }

    fn trim_through(&mut self, position: u64) -> Result<(), StoreError> {
        let head = self.journal.head();
        let state_pos = self.state.map_or(0, |s| s.position);
        if position >= head && head > state_pos {
            // The head record carries the last stored seq; keep that fact before it goes.
            if let Some(epoch) = self.epoch() {
                self.write_state(epoch)?;
            }
        }
        self.journal.trim_through(position)?;
        Ok(())
    }

    /// The cursor protocol of `Meters1.Fetch`: forgets readings through `cursor` (the reader has
    /// them), returns up to `max` readings after it.
    pub fn fetch(&mut self, cursor: u64, max: u32) -> Result<Vec<MeterReading>, StoreError> {
        let head = self.journal.head();
        if cursor > head {
            tracing::warn!(
                cursor,
                head,
                "a reader's cursor is ahead of the buffer (was meterd's data directory replaced?); \
                 it gets nothing until the buffer passes its cursor"
            );
            return Ok(Vec::new());
        }
        if cursor > self.journal.tail() {
            self.trim_through(cursor)?;
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let recs = self.journal.read_after(cursor, max as usize, FETCH_BYTES)?;
        let mut out = Vec::with_capacity(recs.len());
        for (position, rec) in recs {
            let (index, timestamp, wh, _seq) = self.decode(&rec)?;
            out.push(MeterReading {
                position,
                meter_id: self.roster[index].clone(),
                timestamp,
                wh,
            });
        }
        Ok(out)
    }

    fn decode(&self, rec: &[u8]) -> Result<(usize, u64, u64, u64), StoreError> {
        let damaged = |reason: &str| StoreError::Damaged {
            path: self.dir.join("journal"),
            reason: reason.to_owned(),
        };
        let Some((&RECORD_V1, mut rest)) = rec.split_first() else {
            return Err(damaged("unknown record version"));
        };
        let mut next = || get_varint(&mut rest).ok_or_else(|| damaged("truncated record"));
        let (index, ts, wh, seq) = (next()?, next()?, next()?, next()?);
        if !rest.is_empty() {
            return Err(damaged("trailing bytes in a record"));
        }
        let index = usize::try_from(index)
            .ok()
            .filter(|&i| i < self.roster.len())
            .ok_or_else(|| damaged("record names a meter not in the roster file"))?;
        Ok((index, ts, wh, seq))
    }
}

fn load_roster(path: &Path) -> Result<(Vec<String>, File), StoreError> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(io("open", path))?;
    let bytes = fs::read(path).map_err(io("read", path))?;
    // A line torn by a power cut was never referred to (records come after the fsync): cut it.
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        file.set_len(whole as u64).map_err(io("truncate", path))?;
        file.sync_all().map_err(io("fsync", path))?;
    }
    let text = std::str::from_utf8(&bytes[..whole]).map_err(|_| StoreError::Damaged {
        path: path.to_owned(),
        reason: "not UTF-8".into(),
    })?;
    let roster: Vec<String> = text.lines().map(str::to_owned).collect();
    if let Some(bad) = roster
        .iter()
        .find(|id| id.is_empty() || id.len() > MAX_METER_ID)
    {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!("bad meter id {bad:?}"),
        });
    }
    // Appends go to the end whatever the cursor; flush the truncation first.
    file.flush().map_err(io("write", path))?;
    Ok((roster, file))
}

fn load_state(path: &Path) -> Result<Option<RadioState>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    let damaged = || StoreError::Damaged {
        path: path.to_owned(),
        reason: format!("expected \"EPOCH POSITION SEQ\", found {text:?}"),
    };
    let mut parts = text.split_whitespace();
    let epoch = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(damaged)?;
    let position = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(damaged)?;
    let seq = parts
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(damaged)?;
    Ok(Some(RadioState {
        epoch,
        position,
        seq,
    }))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data.split_first()?;
        *data = rest;
        v |= u64::from(b & 0x7F).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, id: &str) -> RadioReading {
        RadioReading {
            seq,
            meter_id: id.into(),
            timestamp: 1_767_571_200 + seq * 900,
            wh: 1000 + seq,
            flags: 0,
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut s = b.as_slice();
            assert_eq!(get_varint(&mut s), Some(v));
            assert!(s.is_empty());
        }
        assert_eq!(get_varint(&mut &[0x80u8][..]), None);
    }

    #[test]
    fn keeps_the_last_reading_of_each_meter_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1000).unwrap();
        s.module_status(7, 0).unwrap();
        assert!(s.last_readings().is_empty());
        s.add_meters(["C"]).unwrap();
        s.append(&[reading(1, "A"), reading(2, "B"), reading(3, "A")])
            .unwrap();
        // A late reading of B (older timestamp) arrives after its newer one.
        let mut late = reading(4, "B");
        late.timestamp = reading(1, "B").timestamp;
        s.append(&[late]).unwrap();
        let expect = |s: &Store| {
            let last = s.last_readings();
            let got: Vec<(&str, u64, u64, u64)> = last
                .iter()
                .map(|r| (r.meter_id.as_str(), r.position, r.timestamp, r.wh))
                .collect();
            assert_eq!(
                got,
                [
                    ("A", 3, reading(3, "A").timestamp, 1003),
                    ("B", 2, reading(2, "B").timestamp, 1002),
                ],
                "C was never read"
            );
        };
        expect(&s);
        drop(s);
        let mut s = Store::open(dir.path(), 1000).unwrap();
        expect(&s);
        // Fetched and trimmed: still known while running; gone after a restart until the next.
        s.fetch(4, 10).unwrap();
        expect(&s);
        drop(s);
        let mut s = Store::open(dir.path(), 1000).unwrap();
        assert!(s.last_readings().is_empty());
        s.append(&[reading(5, "C")]).unwrap();
        assert_eq!(s.last_readings()[0].meter_id, "C");
        assert_eq!(s.last_readings()[0].position, 5);
    }

    #[test]
    fn survives_reopen_and_remembers_the_last_seq() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1000).unwrap();
        s.module_status(7, 0).unwrap();
        s.append(&[reading(1, "A"), reading(2, "B"), reading(3, "A")])
            .unwrap();
        drop(s);
        let mut s = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(s.last_seq(), 3);
        assert_eq!(s.roster(), ["A", "B"]);
        let got = s.fetch(0, 10).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].meter_id, "B");
        assert_eq!(got[2].wh, 1003);
        // The reader has them all: trimming through the head keeps the seq in radio.state.
        assert!(s.fetch(3, 10).unwrap().is_empty());
        assert_eq!(s.buffered(), 0);
        drop(s);
        let s = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(s.last_seq(), 3);
        assert_eq!(s.head(), 3);
        assert_eq!(s.epoch(), Some(7));
    }

    #[test]
    fn a_new_module_epoch_renumbers() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 1000).unwrap();
        s.module_status(1, 0).unwrap();
        s.append(&[reading(1, "A"), reading(2, "A")]).unwrap();
        s.module_status(2, 0).unwrap();
        assert_eq!(s.last_seq(), 0);
        drop(s);
        let mut s = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(
            s.last_seq(),
            0,
            "the old epoch's head record must not count"
        );
        s.append(&[reading(1, "C")]).unwrap();
        assert_eq!(s.fetch(0, 10).unwrap().len(), 3);
        // An unusable reading 2 is skipped; the skip survives a restart.
        s.skip(2).unwrap();
        drop(s);
        let mut s = Store::open(dir.path(), 1000).unwrap();
        assert_eq!(s.last_seq(), 2);
        s.append(&[reading(3, "C")]).unwrap();
        drop(s);
        assert_eq!(Store::open(dir.path(), 1000).unwrap().last_seq(), 3);
    }

    #[test]
    fn the_cap_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), 5).unwrap();
        s.module_status(1, 0).unwrap();
        let batch: Vec<_> = (1..=8).map(|i| reading(i, "A")).collect();
        let done = s.append(&batch).unwrap();
        assert_eq!(done.dropped, 3);
        assert_eq!(s.buffered(), 5);
        let got = s.fetch(0, 100).unwrap();
        assert_eq!(got.first().unwrap().position, 4);
        assert_eq!(s.dropped_total(), 3);
    }

    #[test]
    fn a_torn_roster_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("meters"), "A\nB\nHALF").unwrap();
        let mut s = Store::open(dir.path(), 10).unwrap();
        assert_eq!(s.roster(), ["A", "B"]);
        s.add_meters(["C"]).unwrap();
        drop(s);
        assert_eq!(
            fs::read_to_string(dir.path().join("meters")).unwrap(),
            "A\nB\nC\n"
        );
    }
}
