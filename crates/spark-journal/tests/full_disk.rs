//! A full /data: the append fails with `Full`, nothing already stored is lost, and appends work
//! again once space is freed. Runs on a real, tiny tmpfs (needs root to mount, as CI runs).

use std::process::Command;

use spark_journal::{Journal, JournalError, JournalOptions};

struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn full_file_system_loses_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "spark-journal-test"])
        .arg(dir.path())
        .status()
        .expect("run mount");
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let fs = Tmpfs(dir);

    let opts = JournalOptions {
        segment_bytes: 32 << 10,
    };
    let mut journal = Journal::open(fs.0.path(), opts).unwrap();
    let record = vec![0x5au8; 1000];
    let mut stored = 0u64;
    let err = loop {
        match journal.append(&[&record, &record]) {
            Ok(last) => stored = last,
            Err(err) => break err,
        }
        assert!(
            stored < 10_000,
            "a 256 KiB file system cannot hold this much"
        );
    };
    assert!(matches!(err, JournalError::Full { .. }), "{err}");
    assert!(err.to_string().contains("free space"), "{err}");
    assert_eq!(
        journal.head(),
        stored,
        "the failed append left nothing behind"
    );

    // Everything acknowledged is still there, also after a reopen.
    drop(journal);
    let mut journal = Journal::open(fs.0.path(), opts).unwrap();
    assert_eq!(journal.head(), stored);
    let all = journal.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len() as u64, stored);
    assert!(all.iter().all(|(_, payload)| payload == &record));

    // Free space by trimming, and appends go on at the next position.
    journal.trim_through(stored / 2).unwrap();
    assert_eq!(journal.append(&[&record]).unwrap(), stored + 1);
}
