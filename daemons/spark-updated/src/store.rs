//! The agent's persisted state: one JSON file on `/data`, replaced atomically (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory), so a power cut leaves either
//! the old or the new state, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use spark_dbus::UpdateState;
use spark_dbus::report::StatusReport;

/// Where an update stands, with what is needed to resume it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// No update in progress.
    Idle,
    /// Fetching (or resuming) the bundle of `release`.
    Downloading { release: String },
    /// Bundle verified; RAUC is (or was, before a power cut) installing it.
    Installing { release: String },
    /// RAUC finished and made the other slot primary; a reboot is due. `from_slot` is the
    /// bootname that was running.
    Installed { release: String, from_slot: String },
    /// A reboot into the new slot was requested from `from_slot`. On the next start the booted
    /// slot tells whether the new slot came up (then health check and commit) or the bootloader
    /// fell back (then the update failed).
    Rebooting { release: String, from_slot: String },
    /// The new slot `bad_slot` failed its health check: it is (being) marked bad and a reboot
    /// into the old slot is due. On restart: still on `bad_slot`, mark bad and reboot again;
    /// on the other slot, the rollback is done.
    RollingBack { release: String, bad_slot: String },
}

impl Phase {
    /// The signed release (JSON form) this phase is about.
    pub fn release(&self) -> Option<&str> {
        match self {
            Phase::Idle => None,
            Phase::Downloading { release }
            | Phase::Installing { release }
            | Phase::Installed { release, .. }
            | Phase::Rebooting { release, .. }
            | Phase::RollingBack { release, .. } => Some(release),
        }
    }

    /// The externally visible state of this phase.
    pub fn state(&self) -> UpdateState {
        match self {
            Phase::Idle => UpdateState::Idle,
            Phase::Downloading { .. } => UpdateState::Downloading,
            Phase::Installing { .. } => UpdateState::Installing,
            Phase::Installed { .. } | Phase::Rebooting { .. } | Phase::RollingBack { .. } => {
                UpdateState::Rebooting
            }
        }
    }
}

/// Everything the agent keeps across restarts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Persisted {
    /// The update in progress.
    pub phase: Phase,
    /// Sequence number of the last status report.
    pub seq: u64,
    /// Version of the running slot as last committed.
    pub current_version: Option<String>,
    /// `reason: message` of the last failure; cleared on success.
    pub last_error: Option<String>,
    /// Versions refused for good (digest mismatch, install failure, failed health): the agent
    /// does not fetch them again on every poll.
    #[serde(default)]
    pub refused: Vec<String>,
    /// Status reports not yet accepted by the OTA server, oldest first (at most
    /// [`MAX_UNSENT_REPORTS`]). Kept with the state so one fsync records both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsent: Vec<StatusReport>,
}

/// Bound on [`Persisted::unsent`]: ~300 bytes each, so the state file stays small. Beyond it
/// the oldest are dropped; the server sees the gap in `seq`. One update produces about ten.
pub const MAX_UNSENT_REPORTS: usize = 64;

impl Default for Persisted {
    fn default() -> Self {
        Self {
            phase: Phase::Idle,
            seq: 0,
            current_version: None,
            last_error: None,
            refused: Vec::new(),
            unsent: Vec::new(),
        }
    }
}

/// Failure to read or write the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system error.
    #[error("cannot {action} agent state {}: {source}; check that /data is mounted and writable", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("agent state {} is corrupt ({source}); remove it to start from idle", path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The state file.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The state file `state.json` in `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            path: dir.join("state.json"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the state; a missing file is a fresh [`Persisted::default`].
    pub fn load(&self) -> Result<Persisted, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        // Serialising our own types cannot fail (no maps with non-string keys, no floats).
        let json = serde_json::to_vec_pretty(state).expect("agent state serialises");
        write_atomic(&self.path, &json)
    }

    /// `offer.json` beside the state: the newest offer that arrived while the agent was busy.
    pub fn offer_path(&self) -> PathBuf {
        self.path.with_file_name("offer.json")
    }

    /// The queued offer (a signed release in JSON form), if any.
    pub fn queued_offer(&self) -> Result<Option<String>, StoreError> {
        let path = self.offer_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Queues `release` (JSON form), replacing any offer queued before: only the newest counts.
    pub fn queue_offer(&self, release: &str) -> Result<(), StoreError> {
        write_atomic(&self.offer_path(), release.as_bytes())
    }

    /// Removes the queued offer if it is still `release` (a newer one may have replaced it
    /// while the agent worked on it).
    pub fn clear_offer(&self, release: &str) -> Result<(), StoreError> {
        if self.queued_offer()?.as_deref() != Some(release) {
            return Ok(());
        }
        let path = self.offer_path();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }
}

/// Writes a temporary file, fsyncs it, renames it over `path` and fsyncs the directory: after a
/// power cut the file holds either the old or the new content.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_and_missing_is_idle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.load().unwrap(), Persisted::default());
        let state = Persisted {
            phase: Phase::Rebooting {
                release: "{}".into(),
                from_slot: "A".into(),
            },
            seq: 7,
            current_version: Some("1.0.0".into()),
            last_error: None,
            refused: vec!["0.9.0".into()],
            unsent: Vec::new(),
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert!(!dir.path().join("state.json.tmp").exists());
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"phase\": \"rebooting\""), "{text}");
    }

    #[test]
    fn newest_queued_offer_wins_and_clearing_spares_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.queued_offer().unwrap(), None);
        store.queue_offer("{\"v\":1}").unwrap();
        store.queue_offer("{\"v\":2}").unwrap();
        assert_eq!(store.queued_offer().unwrap().as_deref(), Some("{\"v\":2}"));
        // The agent took v1 earlier; v2 arrived meanwhile and must stay.
        store.clear_offer("{\"v\":1}").unwrap();
        assert_eq!(store.queued_offer().unwrap().as_deref(), Some("{\"v\":2}"));
        store.clear_offer("{\"v\":2}").unwrap();
        assert_eq!(store.queued_offer().unwrap(), None);
        assert!(!dir.path().join("offer.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::write(store.path(), b"{\"phase\":").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("corrupt"),
            "{err}"
        );
    }
}
