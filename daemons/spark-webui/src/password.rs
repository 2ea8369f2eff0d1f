//! The site password: one per device, kept on `/data` as an Argon2id PHC string
//! (`$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`) in the file `password`, mode 0600.
//!
//! Why Argon2id with these costs: a stolen `/data` must not give the password away cheaply, and
//! the gateway (512 MB, one Cortex-A8 core) must still check a login in well under a second.
//! 19 MiB and two passes is OWASP's minimum for Argon2id; checks run one at a time
//! ([`PasswordFile::verify`] holds a lock) so a burst of logins cannot take 19 MiB each.
//!
//! There is no default password: until `spark-webui set-password` wrote one, nobody can log in
//! and the page says how to set it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Name of the hash file in the data directory.
pub const PASSWORD_FILE: &str = "password";

/// Shortest password `set-password` accepts.
pub const MIN_LENGTH: usize = 10;
/// Longest password accepted (a bound on the work a login form can ask for).
pub const MAX_LENGTH: usize = 256;

/// The password could not be set or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "the password is too short ({0} characters); use at least {MIN_LENGTH}, best a passphrase of several words"
    )]
    TooShort(usize),
    #[error("the password is longer than {MAX_LENGTH} bytes")]
    TooLong,
    #[error("cannot {action} {}: {source}; check that the data directory exists and is writable", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} does not hold a valid Argon2 hash ({reason}); set the password again with `spark-webui set-password`", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// The Argon2id instance used for new hashes; checking uses the parameters stored in the hash.
fn hasher() -> Argon2<'static> {
    // Fixed, valid parameters: `Params::new` only fails for values outside Argon2's limits.
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The hash file of one data directory.
#[derive(Debug, Clone)]
pub struct PasswordFile {
    path: PathBuf,
    /// One check at a time (each takes 19 MiB and most of a core for a moment).
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl PasswordFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(PASSWORD_FILE),
            gate: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a password was set.
    pub fn is_set(&self) -> bool {
        self.path.exists()
    }

    /// Hashes `password` with a fresh salt and replaces the file atomically (temporary file,
    /// fsync, rename, fsync of the directory), so a power cut leaves the old or the new one.
    pub fn set(&self, password: &str) -> Result<(), PasswordError> {
        let chars = password.chars().count();
        if chars < MIN_LENGTH {
            return Err(PasswordError::TooShort(chars));
        }
        if password.len() > MAX_LENGTH {
            return Err(PasswordError::TooLong);
        }
        let salt = SaltString::generate(&mut rand_core::OsRng);
        let phc = hasher()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?
            .to_string();
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| PasswordError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let tmp = self.path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(phc.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.sync_all())
                .map_err(io("write", &tmp))?;
        }
        // `set-password` is run by root on the console; the daemon runs as its own user and
        // must read the file: give it to the data directory's owner. Not root: the chown is to
        // ourselves or fails, and then the file already belongs to whoever runs this.
        if let Ok(meta) = std::fs::metadata(dir) {
            use std::os::unix::fs::MetadataExt;
            let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
        }
        std::fs::rename(&tmp, &self.path).map_err(io("rename into", &self.path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))?;
        Ok(())
    }

    /// Whether `password` is the one set. `Ok(false)` for a wrong one, and when none is set.
    /// Runs on a blocking thread, one check at a time.
    pub async fn verify(&self, password: &str) -> Result<bool, PasswordError> {
        if password.len() > MAX_LENGTH {
            return Ok(false);
        }
        let _one_at_a_time = self.gate.lock().await;
        let path = self.path.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || verify_blocking(&path, &password))
            .await
            .map_err(|e| PasswordError::Hash(format!("the check did not finish: {e}")))?
    }
}

fn verify_blocking(path: &Path, password: &str) -> Result<bool, PasswordError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(PasswordError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let hash = PasswordHash::new(text.trim()).map_err(|e| PasswordError::Damaged {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    match hasher().verify_password(password.as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(PasswordError::Damaged {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn set_then_verify_and_salted() {
        let dir = tempfile::tempdir().unwrap();
        let file = PasswordFile::new(dir.path());
        assert!(!file.is_set());
        assert!(!file.verify("anything at all").await.unwrap());
        assert!(matches!(file.set("short"), Err(PasswordError::TooShort(5))));
        file.set("correct horse battery").unwrap();
        let first = std::fs::read_to_string(file.path()).unwrap();
        assert!(
            first.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{first}"
        );
        assert!(!first.contains("correct horse"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(file.verify("correct horse battery").await.unwrap());
        assert!(!file.verify("correct horse battery ").await.unwrap());
        assert!(!file.verify("").await.unwrap());

        // Same password again: a new salt, so a different file, and it still verifies.
        file.set("correct horse battery").unwrap();
        assert_ne!(std::fs::read_to_string(file.path()).unwrap(), first);
        assert!(file.verify("correct horse battery").await.unwrap());
    }

    #[tokio::test]
    async fn damaged_file_is_an_error_not_a_login() {
        let dir = tempfile::tempdir().unwrap();
        let file = PasswordFile::new(dir.path());
        std::fs::write(file.path(), "plain text password\n").unwrap();
        let e = file.verify("plain text password").await.unwrap_err();
        assert!(e.to_string().contains("set-password"), "{e}");
    }
}
