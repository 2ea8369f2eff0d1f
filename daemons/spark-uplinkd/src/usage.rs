//! Today's cellular data use: the bytes the cloud link moved (both directions, as
//! [`crate::counting`] counts them) during the current UTC day, for the Health event's
//! `bytes_used_today`, which is how the cloud sees each gateway's data use against its plan.
//!
//! The day's count is kept in `link-usage.json` on `/data` (written atomically with each health
//! event and at shutdown), so a daemon restart continues it; a crash loses at most the bytes
//! since the last health event. Bytes moved between two updates that span midnight count to the
//! new day.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{self, StoreError};

/// File name of the day's count in the data directory.
pub const LINK_USAGE_FILE: &str = "link-usage.json";

const DAY_SECS: u64 = 86_400;

/// The day's count as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// UTC day, days since 1970-01-01.
    day: u64,
    /// Bytes sent plus received on that day.
    bytes: u64,
}

/// Bytes used today, fed with the daemon's running byte total.
#[derive(Debug)]
pub struct LinkUsage {
    path: PathBuf,
    today: Stored,
    /// The running total (sent + received since the daemon started) at the last update.
    last_total: u64,
}

impl LinkUsage {
    /// The count kept in `data_dir` if it is of the day of `now` (unix seconds), else zero. A
    /// damaged file is logged and counts from zero: usage figures are not worth refusing to
    /// start over.
    pub fn load(data_dir: &Path, now: u64) -> LinkUsage {
        let path = data_dir.join(LINK_USAGE_FILE);
        let day = now / DAY_SECS;
        let stored = match store::read_optional(&path) {
            Ok(Some(bytes)) => match serde_json::from_slice::<Stored>(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "link usage file is damaged; counting today's bytes from zero");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the link usage file; counting today's bytes from zero");
                None
            }
        };
        let today = match stored {
            Some(s) if s.day == day => s,
            _ => Stored { day, bytes: 0 },
        };
        LinkUsage {
            path,
            today,
            last_total: 0,
        }
    }

    /// Adds what the link moved since the last update (`total`: bytes sent + received since the
    /// daemon started) and returns the bytes used on the UTC day of `now`.
    pub fn update(&mut self, now: u64, total: u64) -> u64 {
        let moved = total.saturating_sub(self.last_total);
        self.last_total = total;
        let day = now / DAY_SECS;
        if day != self.today.day {
            self.today = Stored { day, bytes: 0 };
        }
        self.today.bytes = self.today.bytes.saturating_add(moved);
        self.today.bytes
    }

    /// Writes the day's count to `/data`.
    pub fn save(&self) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&self.today).expect("usage serialises");
        store::write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY0: u64 = 20_420 * DAY_SECS;

    #[test]
    fn counts_the_day_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut u = LinkUsage::load(dir.path(), DAY0 + 10);
        assert_eq!(u.update(DAY0 + 10, 0), 0);
        assert_eq!(u.update(DAY0 + 100, 4_000), 4_000);
        assert_eq!(u.update(DAY0 + 200, 5_500), 5_500);
        u.save().unwrap();

        // Restarted: the daemon's running total starts at 0 again; the day's count goes on.
        let mut u = LinkUsage::load(dir.path(), DAY0 + 300);
        assert_eq!(u.update(DAY0 + 300, 0), 5_500);
        assert_eq!(u.update(DAY0 + 400, 500), 6_000);
        // Midnight: a new day starts from what moved since the last update.
        assert_eq!(u.update(DAY0 + DAY_SECS + 5, 800), 300);
        u.save().unwrap();

        // Restarted on a later day: the stored count is of another day.
        let mut u = LinkUsage::load(dir.path(), DAY0 + 3 * DAY_SECS);
        assert_eq!(u.update(DAY0 + 3 * DAY_SECS, 10), 10);
    }

    #[test]
    fn damaged_file_counts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LINK_USAGE_FILE), b"{not json").unwrap();
        let mut u = LinkUsage::load(dir.path(), DAY0);
        assert_eq!(u.update(DAY0, 42), 42);
    }
}
