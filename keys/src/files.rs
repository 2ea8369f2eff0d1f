//! Writing keys and certificates: no silent overwrites, private keys never world-readable.
//!
//! Each file is written to a temporary sibling that is *created* with its final mode and then
//! renamed into place. Creating a private key 0600 from the start (rather than chmod-ing it
//! afterwards) leaves no window in which another user can open it, and the rename means a crash
//! leaves either the old file or the new one, never half a key.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::KeysError;

/// Who may read a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A private key: 0600.
    Secret,
    /// A certificate or public key: 0644.
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Secret => 0o600,
            Access::Public => 0o644,
        }
    }
}

/// One file to write.
pub(crate) struct Output {
    pub path: PathBuf,
    pub contents: String,
    pub access: Access,
}

impl Output {
    pub fn secret(path: PathBuf, contents: impl Into<String>) -> Self {
        Output {
            path,
            contents: contents.into(),
            access: Access::Secret,
        }
    }

    pub fn public(path: PathBuf, contents: impl Into<String>) -> Self {
        Output {
            path,
            contents: contents.into(),
            access: Access::Public,
        }
    }
}

/// Fails with [`KeysError::WouldOverwrite`] naming the first of `paths` that exists, unless
/// `force`. Called before anything is written so a refused run changes nothing.
pub(crate) fn ensure_absent<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    force: bool,
) -> Result<(), KeysError> {
    if force {
        return Ok(());
    }
    for path in paths {
        // symlink_metadata: a dangling symlink is still something we would replace.
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeysError::WouldOverwrite {
                path: path.to_owned(),
            });
        }
    }
    Ok(())
}

pub(crate) fn create_dir(path: &Path) -> Result<(), KeysError> {
    fs::create_dir_all(path).map_err(|source| KeysError::CreateDir {
        path: path.to_owned(),
        source,
    })
}

/// Writes all `outputs`, refusing to replace existing files unless `force`.
pub(crate) fn write_all(outputs: &[Output], force: bool) -> Result<(), KeysError> {
    ensure_absent(outputs.iter().map(|o| o.path.as_path()), force)?;
    for output in outputs {
        write_one(output)?;
        tracing::debug!(path = %output.path.display(), "wrote");
    }
    Ok(())
}

fn write_one(output: &Output) -> Result<(), KeysError> {
    let path = &output.path;
    let write_error = |source| KeysError::Write {
        path: path.clone(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_error(std::io::Error::other("path has no file name")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);

    let result = (|| {
        // A leftover from a crashed run of this same process id is ours to replace.
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(output.access.mode())
            .open(&tmp)?;
        if output.access == Access::Public {
            // A strict umask (077) would make certificates unreadable to the services that
            // need them; they are public, so widening them after creation is harmless.
            file.set_permissions(Permissions::from_mode(0o644))?;
        }
        file.write_all(output.contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(write_error)
}

pub(crate) fn read(path: &Path) -> Result<String, KeysError> {
    fs::read_to_string(path).map_err(|source| KeysError::Read {
        path: path.to_owned(),
        source,
    })
}
