//! The durable outgoing queue on `/data`: a `spark_journal::Journal` of [`Entry`] records whose
//! positions are the protocol's sequence numbers, plus the roster the entries index into and the
//! meterd cursor.
//!
//! Durability rules, in the order things happen:
//! 1. New meter ids are written to the roster file before any entry refers to them.
//! 2. Readings are appended (fsync'd) before the cursor that covers them is passed to
//!    `Meters1.Fetch`, which is what allows meterd to drop them. Each entry stores that cursor,
//!    so after a restart the newest entry says where to resume.
//! 3. Entries are trimmed only through the cloud's cumulative Ack. Before trimming the newest
//!    entry the cursor is written to `state.json`, since no entry would be left to hold it.

use std::path::{Path, PathBuf};

use spark_dbus::MeterReading;
use spark_journal::{Journal, JournalOptions};
use spark_proto::{EventKind, Sample};

use crate::entry::{Entry, EntryError, EventEntry, Packer};
use crate::roster::Roster;
use crate::store::{self, StoreError};

/// File and directory names inside the data directory.
pub mod layout {
    pub const JOURNAL_DIR: &str = "queue";
    pub const ROSTER: &str = "roster.json";
    pub const STATE: &str = "state.json";
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct State {
    /// The meterd cursor when the queue was last emptied by an Ack.
    meters_cursor: u64,
}

/// The queue, its roster and the meterd cursor.
#[derive(Debug)]
pub struct Queue {
    journal: Journal,
    roster: Roster,
    state_path: PathBuf,
    cursor: u64,
    interval_secs: u32,
    // Meters heard from since the last Health event, one bit per roster index.
    seen: Vec<u64>,
}

/// What [`Queue::append_readings`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Appended {
    /// Entries appended (their positions end at the queue's new head).
    pub entries: usize,
    /// Readings stored in them.
    pub readings: usize,
    /// Readings dropped because their meter id cannot be in a roster (logged).
    pub refused: usize,
}

impl Queue {
    /// Opens (or creates) the queue in `data_dir`. `interval_secs` is the meters' reading
    /// schedule, which batches use to imply timestamps.
    pub fn open(data_dir: &Path, interval_secs: u32) -> Result<Queue, StoreError> {
        store::create_dir(data_dir)?;
        let journal = Journal::open(
            &data_dir.join(layout::JOURNAL_DIR),
            JournalOptions::default(),
        )?;
        let roster = Roster::open(&data_dir.join(layout::ROSTER))?;
        let state_path = data_dir.join(layout::STATE);
        let state: State = match store::read_optional(&state_path)? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Parse {
                path: state_path.clone(),
                reason: e.to_string(),
            })?,
            None => State::default(),
        };
        let mut q = Queue {
            journal,
            roster,
            state_path,
            cursor: state.meters_cursor,
            interval_secs: interval_secs.max(1),
            seen: Vec::new(),
        };
        if q.journal.head() > q.journal.tail() {
            let head = q.journal.head();
            match q.read_after(head - 1, 1, usize::MAX)?.pop() {
                Some((_, Ok(e))) => q.cursor = q.cursor.max(e.meters_cursor()),
                Some((pos, Err(e))) => {
                    // Re-fetching is harmless to meterd and the cloud deduplicates nothing here,
                    // so this could duplicate readings: say so loudly.
                    tracing::error!(pos, error = %e, cursor = q.cursor,
                        "newest queue entry is unreadable; resuming meterd from the saved cursor (readings may be sent twice)");
                }
                None => {}
            }
        }
        tracing::info!(
            head = q.journal.head(),
            acked = q.journal.tail(),
            meters_cursor = q.cursor,
            roster_version = q.roster.version(),
            meters = q.roster.len(),
            "outgoing queue opened"
        );
        Ok(q)
    }

    /// The meterd cursor to pass to the next `Fetch`: everything at or before it is in the queue
    /// (or was refused).
    pub fn meters_cursor(&self) -> u64 {
        self.cursor
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// Newest sequence number in the queue (0 if none ever).
    pub fn head(&self) -> u64 {
        self.journal.head()
    }

    /// Sequence number acknowledged by the cloud (everything at or before it is gone).
    pub fn acked(&self) -> u64 {
        self.journal.tail()
    }

    /// Entries waiting for the cloud's Ack.
    pub fn depth(&self) -> u64 {
        self.journal.len()
    }

    /// Adds meter ids (from `Meters1.Meters`) to the roster; persists it if it changed.
    pub fn add_meters(&mut self, ids: &[String]) -> Result<bool, StoreError> {
        let mut changed = false;
        for id in ids {
            match self.roster.insert(id) {
                Ok((_, new)) => changed |= new,
                Err(e) => tracing::warn!(error = %e, "meter left out of the roster"),
            }
        }
        if changed {
            self.roster.save()?;
            tracing::info!(
                version = self.roster.version(),
                meters = self.roster.len(),
                "roster grew"
            );
        }
        Ok(changed)
    }

    /// Appends fetched readings (in meterd position order) as entries, durably, and advances the
    /// cursor past them. Returns what was stored.
    pub fn append_readings(&mut self, readings: &[MeterReading]) -> Result<Appended, StoreError> {
        let Some(last) = readings.last() else {
            return Ok(Appended::default());
        };
        let mut out = Appended::default();
        // Roster first: entries must only name meters the persisted roster has.
        let mut changed = false;
        let mut indices = Vec::with_capacity(readings.len());
        for r in readings {
            match self.roster.insert(&r.meter_id) {
                Ok((i, new)) => {
                    changed |= new;
                    indices.push(Some(i));
                }
                Err(e) => {
                    tracing::error!(position = r.position, error = %e, "reading dropped: its meter cannot be named in a batch");
                    out.refused += 1;
                    indices.push(None);
                }
            }
        }
        if changed {
            self.roster.save()?;
            tracing::info!(
                version = self.roster.version(),
                meters = self.roster.len(),
                "roster grew"
            );
        }
        let mut packer = Packer::new(self.interval_secs, self.roster.version());
        for (r, i) in readings.iter().zip(&indices) {
            if let Some(meter) = *i {
                packer.push(
                    Sample {
                        meter,
                        timestamp: r.timestamp,
                        wh: r.wh,
                    },
                    r.position,
                );
                self.mark_seen(meter);
                out.readings += 1;
            }
        }
        let mut entries = packer.finish();
        // The newest entry covers the whole chunk, refused readings at its end included.
        if let Some(e) = entries.last_mut() {
            e.meters_cursor = last.position;
        }
        let records: Vec<Vec<u8>> = entries
            .into_iter()
            .map(|e| Entry::Readings(e).encode())
            .collect();
        out.entries = records.len();
        if !records.is_empty() {
            self.journal.append(&records)?;
        }
        self.cursor = self.cursor.max(last.position);
        Ok(out)
    }

    /// Appends an event; returns its sequence number.
    pub fn append_event(&mut self, time: u64, kind: EventKind) -> Result<u64, StoreError> {
        let record = Entry::Event(EventEntry {
            meters_cursor: self.cursor,
            time,
            kind,
        })
        .encode();
        Ok(self.journal.append(&[record.as_slice()])?)
    }

    /// Up to `max_records` entries after sequence `after` (and about `max_bytes`), each decoded;
    /// an unreadable one comes back as its error so the caller can park it.
    #[allow(clippy::type_complexity)]
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Result<Entry, EntryError>)>, StoreError> {
        Ok(self
            .journal
            .read_after(after, max_records, max_bytes)?
            .into_iter()
            .map(|(pos, bytes)| (pos, Entry::decode(&bytes)))
            .collect())
    }

    /// The cloud committed everything through `seq`: drop it. Returns the new acked sequence.
    pub fn ack(&mut self, seq: u64) -> Result<u64, StoreError> {
        let seq = seq.min(self.journal.head());
        if seq <= self.journal.tail() {
            return Ok(self.journal.tail());
        }
        if seq == self.journal.head() {
            let bytes = serde_json::to_vec(&State {
                meters_cursor: self.cursor,
            })
            .expect("state serialises");
            store::write_atomic(&self.state_path, &bytes)?;
        }
        self.journal.trim_through(seq)?;
        Ok(seq)
    }

    fn mark_seen(&mut self, meter: u32) {
        let (word, bit) = (meter as usize / 64, meter % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        self.seen[word] |= 1 << bit;
    }

    /// Meters heard from since the last call.
    pub fn take_meters_seen(&mut self) -> u32 {
        let n = self.seen.iter().map(|w| w.count_ones()).sum();
        self.seen.iter_mut().for_each(|w| *w = 0);
        n
    }
}
