//! The gateway's roster: meter id → index, persisted on `/data`.
//!
//! Readings batches name meters by their index in the roster, so the roster is the key to every
//! batch in the queue. It only ever grows: a new meter id is appended and the version bumped, so
//! an index in an old queue entry still names the same meter in every later version, and the
//! session simply sends the newest roster before the batches that need it.
//!
//! A fresh roster starts at a version taken from the clock, not at 1: if `/data` is wiped, the
//! new roster must not share a version number with the one the cloud holds from before, or the
//! cloud would read the new indices against the old meter list.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::store::{StoreError, read_optional, write_atomic};

/// The persisted meter list.
#[derive(Debug, Clone)]
pub struct Roster {
    path: PathBuf,
    version: u32,
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OnDisk {
    version: u32,
    meters: Vec<String>,
}

/// Why a meter id cannot join the roster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterRefusal {
    #[error(
        "meter id {id:?} is {len} bytes; the protocol allows at most {}",
        spark_proto::MAX_METER_ID_LEN
    )]
    IdTooLong { id: String, len: usize },
    #[error("meter id is empty")]
    EmptyId,
    #[error("the roster is full ({} meters)", spark_proto::MAX_METERS)]
    Full,
}

impl Roster {
    /// Loads the roster from `path`, or starts an empty one (not yet written) if there is none.
    pub fn open(path: &Path) -> Result<Roster, StoreError> {
        let (version, ids) = match read_optional(path)? {
            Some(bytes) => {
                let disk: OnDisk =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Parse {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                (disk.version, disk.meters)
            }
            None => (fresh_version(), Vec::new()),
        };
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        Ok(Roster {
            path: path.to_owned(),
            version,
            ids,
            index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn len(&self) -> u32 {
        self.ids.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of `id`, if it is in the roster.
    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The index of `id`, appending it (in memory; call [`Roster::save`] before anything
    /// durable refers to it). Returns whether the roster changed.
    pub fn insert(&mut self, id: &str) -> Result<(u32, bool), RosterRefusal> {
        if let Some(i) = self.index_of(id) {
            return Ok((i, false));
        }
        if id.is_empty() {
            return Err(RosterRefusal::EmptyId);
        }
        if id.len() > spark_proto::MAX_METER_ID_LEN {
            return Err(RosterRefusal::IdTooLong {
                id: id.to_owned(),
                len: id.len(),
            });
        }
        if self.ids.len() >= spark_proto::MAX_METERS {
            return Err(RosterRefusal::Full);
        }
        let i = self.ids.len() as u32;
        self.ids.push(id.to_owned());
        self.index.insert(id.to_owned(), i);
        Ok((i, true))
    }

    /// Bumps the version and writes the roster durably (after [`Roster::insert`] changed it).
    pub fn save(&mut self) -> Result<(), StoreError> {
        self.version = self.version.wrapping_add(1);
        let disk = OnDisk {
            version: self.version,
            meters: self.ids.clone(),
        };
        // Serialising a struct of a u32 and strings cannot fail.
        let bytes = serde_json::to_vec(&disk).expect("roster serialises");
        write_atomic(&self.path, &bytes)
    }

    /// The roster as the protocol sends it.
    pub fn to_message(&self) -> spark_proto::Roster {
        spark_proto::Roster {
            version: self.version,
            meters: self.ids.iter().map(|id| id.as_bytes().to_vec()).collect(),
        }
    }
}

/// Seconds since 2020-01-01, so versions of rosters made at different times differ, and a u32
/// holds them for a century.
fn fresh_version() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (now.saturating_sub(1_577_836_800) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_persists_and_refuses_bad_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roster.json");
        let mut r = Roster::open(&path).unwrap();
        let v0 = r.version();
        assert!(r.is_empty());
        assert_eq!(r.insert("m-1").unwrap(), (0, true));
        assert_eq!(r.insert("m-2").unwrap(), (1, true));
        assert_eq!(r.insert("m-1").unwrap(), (0, false));
        assert!(matches!(
            r.insert(&"x".repeat(33)),
            Err(RosterRefusal::IdTooLong { .. })
        ));
        assert_eq!(r.insert(""), Err(RosterRefusal::EmptyId));
        r.save().unwrap();
        let r2 = Roster::open(&path).unwrap();
        assert_eq!(r2.version(), v0 + 1);
        assert_eq!(r2.index_of("m-2"), Some(1));
        assert_eq!(
            r2.to_message().meters,
            vec![b"m-1".to_vec(), b"m-2".to_vec()]
        );
    }
}
