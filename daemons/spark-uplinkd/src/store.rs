//! Small durable files on `/data` (roster, state, cloud-set config) and their errors: each is
//! replaced atomically (write a temporary file, fsync, rename, fsync the directory), so a power
//! cut leaves either the old or the new contents, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file on `/data` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {}: {source}; check that the data directory is writable and not full", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is damaged ({reason}); move it aside to start that part afresh", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("outgoing queue: {0}")]
    Journal(#[from] spark_journal::JournalError),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The file's bytes, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    sync_dir(dir)
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

/// Creates `dir` (and parents) if missing.
pub fn create_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))
}

/// Free space under `dir` in KiB (for Health events), 0 if unknown.
pub fn free_kib(dir: &Path) -> u32 {
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let bytes = u128::from(st.f_bavail) * u128::from(st.f_frsize);
            u32::try_from(bytes / 1024).unwrap_or(u32::MAX)
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(read_optional(&p).unwrap(), None);
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(read_optional(&p).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(free_kib(dir.path()) > 0);
        let e = write_atomic(&dir.path().join("missing/x"), b"").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
