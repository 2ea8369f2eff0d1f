//! A small append-only journal that survives power cuts: meterd's reading buffer and uplinkd's
//! outgoing queue are both one of these, so "stored" means the same thing on both sides of the
//! D-Bus cursor.
//!
//! Every record gets a **position**: 1, 2, 3, … never reused, kept across restarts even after
//! everything was trimmed. A reader keeps a cursor (the last position it has safely stored
//! elsewhere) and the owner trims through it. [`Journal::append`] returns only after the bytes
//! and, for a new file, the directory entry are on disk (`fdatasync`), so an `Ok` means the records
//! survive a power cut.
//!
//! # On disk
//!
//! ```text
//! DIR/
//!   00000000000000000001.seg     records from position 1 on
//!   00000000000000004097.seg     records from position 4097 on (a new segment past segment_bytes)
//!   trim                         2 slots of: tail u64 LE | crc32 u32 LE  (trimmed through;
//!                                written in place, alternately: the newest valid slot counts)
//!
//! record:
//! +---------------+---------------------------+------------------+
//! | len u32 LE    | crc32 u32 LE              | payload          |
//! |               | over position u64 LE +    | `len` bytes      |
//! |               | payload                   |                  |
//! +---------------+---------------------------+------------------+
//! ```
//!
//! The position is not stored: it is the segment's first position (its file name) plus the
//! record's index, and it is part of the CRC, so a record copied to the wrong place does not pass.
//!
//! # Recovery
//!
//! [`Journal::open`] scans the segments. In the **newest** segment, the first record that is short
//! or fails its CRC is a write the power cut interrupted: the file is cut there (the append had not
//! returned, so nothing acknowledged is lost). The same damage in an **older** segment is not a torn
//! write but lost data, and opening fails with [`JournalError::Corrupt`] naming the file rather
//! than silently dropping records. Segments entirely at or below the trim point are deleted.
//!
//! Memory stays small whatever the journal holds: per segment, the byte offset of every 64th
//! record; reads scan forward from the nearest one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Largest record payload.
pub const MAX_RECORD_LEN: usize = 1 << 20;
const HEADER_LEN: u64 = 8;
/// Every how many records a segment remembers a byte offset.
const INDEX_EVERY: u64 = 64;
const TRIM_FILE: &str = "trim";
const SEGMENT_SUFFIX: &str = ".seg";

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("journal: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file system is full; nothing of the failed append was kept.
    #[error(
        "journal: no space left to append to {}; free space on its file system (records already stored are intact)",
        path.display()
    )]
    Full { path: PathBuf },
    /// Damage before the newest segment's tail: records were lost, not merely torn.
    #[error(
        "journal: {} is damaged at byte {offset} (position {position}): {reason}; move the directory aside to start afresh, or restore it",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        position: u64,
        reason: &'static str,
    },
    /// A record larger than [`MAX_RECORD_LEN`].
    #[error("journal: a record of {len} bytes is over the {MAX_RECORD_LEN}-byte limit")]
    RecordTooLarge { len: usize },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| {
        if source.raw_os_error() == Some(28) {
            // ENOSPC
            JournalError::Full {
                path: path.to_owned(),
            }
        } else {
            JournalError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// How a journal is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// A new segment starts once the current one holds this many bytes; trimming frees whole
    /// segments, so this is the granularity of reclaimed space.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 4 << 20,
        }
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    count: u64,
    bytes: u64,
    path: PathBuf,
    /// `offsets[i]` is the byte offset of record `first + i * INDEX_EVERY`.
    offsets: Vec<u64>,
}

impl Segment {
    fn last(&self) -> u64 {
        self.first + self.count - 1
    }
}

/// An open journal. One owner per directory (the daemon); not shared between processes.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    opts: JournalOptions,
    segments: Vec<Segment>,
    /// The newest segment, open for appending.
    active: Option<File>,
    head: u64,
    tail: u64,
    trim: File,
    /// Which of the trim file's two slots the next trim writes.
    trim_slot: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, recovering from an interrupted append.
    pub fn open(dir: &Path, opts: JournalOptions) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let (trim, tail, trim_slot) = open_trim(dir)?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
            let entry = entry.map_err(io_err("list", dir))?;
            let name = entry.file_name();
            let Some(first) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            firsts.push(first);
        }
        firsts.sort_unstable();

        let mut journal = Journal {
            dir: dir.to_owned(),
            opts,
            segments: Vec::new(),
            active: None,
            head: tail,
            tail,
            trim,
            trim_slot,
        };
        let newest = firsts.last().copied();
        for first in firsts {
            let path = segment_path(dir, first);
            let segment = scan(&path, first, Some(first) == newest)?;
            if segment.count == 0 || segment.last() <= tail {
                // Empty or wholly trimmed (a trim that was cut before its deletes).
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                continue;
            }
            if let Some(prev) = journal.segments.last()
                && prev.last() + 1 != segment.first
            {
                return Err(JournalError::Corrupt {
                    path,
                    offset: 0,
                    position: segment.first,
                    reason: "segment does not continue the previous one",
                });
            }
            journal.head = journal.head.max(segment.last());
            journal.segments.push(segment);
        }
        if let Some(first) = journal.segments.first()
            && first.first > tail + 1
        {
            return Err(JournalError::Corrupt {
                path: first.path.clone(),
                offset: 0,
                position: tail + 1,
                reason: "records after the trim point are missing",
            });
        }
        sync_dir(dir)?;
        Ok(journal)
    }

    /// Position of the newest record ever appended (0 when none).
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Position through which records were trimmed (0 when none).
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Records held (appended and not trimmed).
    pub fn len(&self) -> u64 {
        self.head - self.tail
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the segment files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends `records` at consecutive positions and syncs them; returns the last position (or
    /// [`Journal::head`] when `records` is empty). On error nothing of this call is kept.
    pub fn append<R: AsRef<[u8]>>(&mut self, records: &[R]) -> Result<u64, JournalError> {
        if records.is_empty() {
            return Ok(self.head);
        }
        let mut buf = Vec::with_capacity(
            records
                .iter()
                .map(|r| r.as_ref().len() + HEADER_LEN as usize)
                .sum(),
        );
        for (i, record) in records.iter().enumerate() {
            let record = record.as_ref();
            if record.len() > MAX_RECORD_LEN {
                return Err(JournalError::RecordTooLarge { len: record.len() });
            }
            let position = self.head + 1 + i as u64;
            buf.extend_from_slice(&(record.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc(position, record).to_le_bytes());
            buf.extend_from_slice(record);
        }

        let roll = match self.segments.last() {
            None => true,
            Some(s) => self.active.is_none() || s.bytes >= self.opts.segment_bytes,
        };
        if roll {
            self.start_segment()?;
        }
        let segment = self.segments.last_mut().expect("start_segment pushed one");
        let file = self.active.as_mut().expect("start_segment opened it");
        let written = file
            .write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(io_err("append to", &segment.path));
        if let Err(err) = written {
            // Cut back what a partial write left, so the next append starts clean. If even that
            // fails, recovery at the next open cuts the same torn tail.
            let _ = file.set_len(segment.bytes);
            return Err(err);
        }
        let mut offset = segment.bytes;
        for record in records {
            let index = segment.count;
            if index.is_multiple_of(INDEX_EVERY) {
                segment.offsets.push(offset);
            }
            segment.count += 1;
            offset += HEADER_LEN + record.as_ref().len() as u64;
        }
        segment.bytes = offset;
        self.head += records.len() as u64;
        Ok(self.head)
    }

    fn start_segment(&mut self) -> Result<(), JournalError> {
        let first = self.head + 1;
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err("create", &path))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            first,
            count: 0,
            bytes: 0,
            path,
            offsets: Vec::new(),
        });
        self.active = Some(file);
        Ok(())
    }

    /// Records with positions after `cursor` (and after the trim point), in order: at most
    /// `max_records`, and no more than `max_bytes` of payload except that the first record is
    /// always returned.
    pub fn read_after(
        &self,
        cursor: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let mut out = Vec::new();
        let mut budget = max_bytes;
        let mut next = cursor.max(self.tail) + 1;
        for segment in &self.segments {
            if segment.count == 0 || segment.last() < next {
                continue;
            }
            let file = File::open(&segment.path).map_err(io_err("open", &segment.path))?;
            let slot = (next.max(segment.first) - segment.first) / INDEX_EVERY;
            let mut position = segment.first + slot * INDEX_EVERY;
            let mut offset = segment.offsets[slot as usize];
            while position <= segment.last() {
                if out.len() >= max_records {
                    return Ok(out);
                }
                let mut header = [0u8; HEADER_LEN as usize];
                file.read_exact_at(&mut header, offset)
                    .map_err(io_err("read", &segment.path))?;
                let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
                if position >= next {
                    if !out.is_empty() && len > budget {
                        return Ok(out);
                    }
                    let mut payload = vec![0u8; len];
                    file.read_exact_at(&mut payload, offset + HEADER_LEN)
                        .map_err(io_err("read", &segment.path))?;
                    let stored = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
                    if stored != crc(position, &payload) {
                        return Err(JournalError::Corrupt {
                            path: segment.path.clone(),
                            offset,
                            position,
                            reason: "checksum mismatch on read",
                        });
                    }
                    budget = budget.saturating_sub(len);
                    out.push((position, payload));
                    next = position + 1;
                }
                offset += HEADER_LEN + len as u64;
                position += 1;
            }
        }
        Ok(out)
    }

    /// Forgets records through `position` (clamped to [`Journal::head`]); durable when it returns.
    /// Space comes back a segment at a time.
    pub fn trim_through(&mut self, position: u64) -> Result<(), JournalError> {
        let position = position.min(self.head);
        if position <= self.tail {
            return Ok(());
        }
        write_trim(&self.trim, self.trim_slot, position, &self.dir)?;
        self.trim_slot ^= 1;
        self.tail = position;
        while let Some(first) = self.segments.first() {
            if first.last() > position {
                break;
            }
            let segment = self.segments.remove(0);
            if self.segments.is_empty() {
                // The active segment is wholly trimmed: the next append starts a new one.
                self.active = None;
            }
            fs::remove_file(&segment.path).map_err(io_err("remove", &segment.path))?;
        }
        sync_dir(&self.dir)
    }
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{SEGMENT_SUFFIX}"))
}

fn crc(position: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&position.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Reads a segment's records; in the newest segment a bad tail is cut off (a torn append).
fn scan(path: &Path, first: u64, newest: bool) -> Result<Segment, JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    let size = file.metadata().map_err(io_err("stat", path))?.len();
    let mut segment = Segment {
        first,
        count: 0,
        bytes: 0,
        path: path.to_owned(),
        offsets: Vec::new(),
    };
    let mut offset = 0u64;
    let mut payload = Vec::new();
    while offset < size {
        let position = first + segment.count;
        let bad = if size - offset < HEADER_LEN {
            Some("record header cut short")
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut header, offset)
                .map_err(io_err("read", path))?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
            if len > MAX_RECORD_LEN as u64 {
                Some("record length over the limit")
            } else if size - offset - HEADER_LEN < len {
                Some("record cut short")
            } else {
                payload.resize(len as usize, 0);
                file.read_exact_at(&mut payload, offset + HEADER_LEN)
                    .map_err(io_err("read", path))?;
                let stored = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
                if stored != crc(position, &payload) {
                    Some("checksum mismatch")
                } else {
                    if segment.count.is_multiple_of(INDEX_EVERY) {
                        segment.offsets.push(offset);
                    }
                    segment.count += 1;
                    offset += HEADER_LEN + len;
                    None
                }
            }
        };
        if let Some(reason) = bad {
            if !newest {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    offset,
                    position,
                    reason,
                });
            }
            tracing_free_warn(path, offset, size, reason);
            file.set_len(offset).map_err(io_err("truncate", path))?;
            file.sync_all().map_err(io_err("sync", path))?;
            break;
        }
    }
    segment.bytes = offset;
    Ok(segment)
}

/// The journal has no logger of its own; the cut is reported on stderr once, and the owner
/// logs its own recovery through tracing.
fn tracing_free_warn(path: &Path, offset: u64, size: u64, reason: &str) {
    eprintln!(
        "spark-journal: cut {} at byte {offset} of {size} ({reason}): an append interrupted by a crash",
        path.display()
    );
}

/// Length of one trim slot: tail u64 LE | crc32 u32 LE.
const TRIM_SLOT: usize = 12;

/// The trim file: two slots written in place, alternately, so a trim needs no new disk block (a
/// full file system must still let the owner trim to free space) and a torn write of one slot
/// leaves the other. Returns the file, the tail and the slot to write next.
fn open_trim(dir: &Path) -> Result<(File, u64, u64), JournalError> {
    let path = dir.join(TRIM_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open", &path))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut &file, &mut bytes).map_err(io_err("read", &path))?;
    if bytes.is_empty() {
        file.write_all_at(&[0u8; 2 * TRIM_SLOT], 0)
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", &path))?;
        sync_dir(dir)?;
        return Ok((file, 0, 0));
    }
    let slot = |i: usize| {
        let raw = bytes.get(i * TRIM_SLOT..(i + 1) * TRIM_SLOT)?;
        let tail = u64::from_le_bytes(raw[..8].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(raw[8..].try_into().expect("4 bytes"));
        // An all-zero slot is "never written" (its CRC would not be zero).
        (tail == 0 && stored == 0 || stored == crc32fast::hash(&raw[..8])).then_some(tail)
    };
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) if a >= b => Ok((file, a, 1)),
        (Some(_), Some(b)) => Ok((file, b, 0)),
        (Some(a), None) => Ok((file, a, 1)),
        (None, Some(b)) => Ok((file, b, 0)),
        (None, None) => Err(JournalError::Corrupt {
            path,
            offset: 0,
            position: 0,
            reason: "trim file damaged",
        }),
    }
}

fn write_trim(file: &File, slot: u64, tail: u64, dir: &Path) -> Result<(), JournalError> {
    let mut bytes = tail.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    file.write_all_at(&bytes, slot * TRIM_SLOT as u64)
        .and_then(|()| file.sync_data())
        .map_err(io_err("write", &dir.join(TRIM_FILE)))
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> JournalOptions {
        JournalOptions { segment_bytes: 256 }
    }

    fn rec(i: u64) -> Vec<u8> {
        format!("record-{i}").into_bytes()
    }

    #[test]
    fn positions_survive_reopen_and_full_trim() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), small()).unwrap();
        assert_eq!(j.head(), 0);
        let records: Vec<_> = (1..=100).map(rec).collect();
        assert_eq!(j.append(&records).unwrap(), 100);
        assert_eq!(j.append(&[rec(101)]).unwrap(), 101);
        drop(j);

        let mut j = Journal::open(dir.path(), small()).unwrap();
        assert_eq!((j.head(), j.tail(), j.len()), (101, 0, 101));
        let all = j.read_after(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 101);
        for (position, payload) in &all {
            assert_eq!(payload, &rec(*position));
        }
        j.trim_through(101).unwrap();
        assert!(j.is_empty());
        assert_eq!(j.disk_bytes(), 0);
        drop(j);

        let mut j = Journal::open(dir.path(), small()).unwrap();
        assert_eq!((j.head(), j.tail()), (101, 101));
        assert_eq!(
            j.append(&[rec(102)]).unwrap(),
            102,
            "positions are never reused"
        );
        assert_eq!(
            j.read_after(0, 10, usize::MAX).unwrap(),
            vec![(102, rec(102))]
        );
    }

    #[test]
    fn reads_from_any_cursor_with_limits() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), small()).unwrap();
        for chunk in (1..=500u64).collect::<Vec<_>>().chunks(7) {
            let records: Vec<_> = chunk.iter().map(|&i| rec(i)).collect();
            j.append(&records).unwrap();
        }
        assert!(j.segments.len() > 10, "small segments roll over");
        for cursor in [0u64, 1, 63, 64, 65, 200, 499, 500, 900] {
            let got = j.read_after(cursor, 50, usize::MAX).unwrap();
            let want: Vec<_> = (cursor + 1..=500).take(50).map(|i| (i, rec(i))).collect();
            assert_eq!(got, want, "cursor {cursor}");
        }
        // Byte budget: whole records only, at least one.
        let got = j.read_after(0, usize::MAX, 20).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        let got = j.read_after(0, usize::MAX, 1).unwrap();
        assert_eq!(got.len(), 1);
        // Trimming frees whole segments and hides trimmed records.
        let before = j.disk_bytes();
        j.trim_through(300).unwrap();
        assert!(j.disk_bytes() < before);
        assert_eq!(j.read_after(0, 1, usize::MAX).unwrap()[0].0, 301);
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        j.append(&[rec(1), rec(2), rec(3)]).unwrap();
        let path = j.segments[0].path.clone();
        drop(j);
        // A power cut in the middle of appending record 4.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[20, 0, 0, 0, 1, 2, 3, 4, b'r', b'e'])
            .unwrap();
        drop(file);

        let mut j = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        assert_eq!(j.head(), 3);
        assert_eq!(j.append(&[rec(4)]).unwrap(), 4);
        let all = j.read_after(0, 10, usize::MAX).unwrap();
        assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(all[3].1, rec(4));
    }

    #[test]
    fn damage_in_an_older_segment_is_refused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), small()).unwrap();
        let records: Vec<_> = (1..=100).map(rec).collect();
        for r in &records {
            j.append(&[r]).unwrap();
        }
        let old = j.segments[0].path.clone();
        drop(j);
        let mut bytes = fs::read(&old).unwrap();
        bytes[HEADER_LEN as usize] ^= 0xff;
        fs::write(&old, bytes).unwrap();
        let err = Journal::open(dir.path(), small()).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&old.display().to_string()));
    }

    #[test]
    fn a_torn_trim_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), small()).unwrap();
        let records: Vec<_> = (1..=10).map(rec).collect();
        j.append(&records).unwrap();
        j.trim_through(3).unwrap(); // slot 0
        j.trim_through(5).unwrap(); // slot 1
        drop(j);
        let path = dir.path().join(TRIM_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[TRIM_SLOT] ^= 0xff; // the newer slot was torn by a power cut
        fs::write(&path, bytes).unwrap();
        let j = Journal::open(dir.path(), small()).unwrap();
        assert_eq!(
            j.tail(),
            3,
            "falls back to the older trim: records resent, never lost"
        );
        assert_eq!(j.read_after(0, 1, usize::MAX).unwrap()[0].0, 4);
    }

    #[test]
    fn oversized_record_is_refused_without_side_effects() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path(), small()).unwrap();
        j.append(&[rec(1)]).unwrap();
        let err = j
            .append(&[rec(2), vec![0u8; MAX_RECORD_LEN + 1]])
            .unwrap_err();
        assert!(matches!(err, JournalError::RecordTooLarge { .. }));
        assert_eq!(j.head(), 1);
        assert_eq!(j.append(&[rec(2)]).unwrap(), 2);
    }
}
