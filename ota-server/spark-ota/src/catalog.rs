//! The release catalog: uploads are streamed to a temporary file beside the blob store (never held
//! in memory), checked against the signed release manifest (SHA-256, size), verified with the
//! `spark-image` library against the firmware keyring (signature, chain, purpose, payload, image
//! checksums, compatible, version), and only then stored as the content-addressed blob
//! `DATA-DIR/blobs/<sha256>` and a `releases` row. A refused upload leaves nothing behind: the
//! temporary file is dropped, and a blob stored just before a failed database insert is removed.
//!
//! The order is chosen so that bad input costs little: the manifest (a header, ~1 KiB) is parsed
//! and its Ed25519 signature checked before a byte of the body is read; a body longer than the
//! manifest declares is cut off at that length.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use spark_image::{Bundle, Keyring, VerifyOptions};
use spark_release::{Policy, SignedRelease, Timestamp, TrustedKeys, Version};
use tokio::io::AsyncWriteExt;

use crate::error::UploadError;
use crate::store::{BundleRecord, NewRelease, Store};

/// The catalog's fixed parts: where blobs live and what to trust.
#[derive(Clone)]
pub struct Catalog {
    pub store: Store,
    blobs: PathBuf,
    spool: PathBuf,
    keyring: Arc<Keyring>,
    verify: VerifyOptions,
    release_keys: Arc<TrustedKeys>,
    max_bundle_bytes: u64,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("blobs", &self.blobs)
            .finish_non_exhaustive()
    }
}

/// What an accepted upload created.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Uploaded {
    pub release: i64,
    pub compatible: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    /// The bundle was already in the blob store (same SHA-256): not stored twice.
    pub duplicate_bundle: bool,
    pub signer: String,
}

/// True for 64 lower-case hex digits (a blob name).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Catalog {
    /// A catalog over `data_dir/blobs` (created if missing).
    pub fn new(
        store: Store,
        data_dir: &Path,
        keyring: Keyring,
        verify: VerifyOptions,
        release_keys: TrustedKeys,
        max_bundle_bytes: u64,
    ) -> std::io::Result<Catalog> {
        let blobs = data_dir.join("blobs");
        let spool = data_dir.join("spool");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&spool)?;
        // Leftovers of uploads cut by a crash are never referenced: clear them.
        for entry in std::fs::read_dir(&spool)?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Catalog {
            store,
            blobs,
            spool,
            keyring: Arc::new(keyring),
            verify,
            release_keys: Arc::new(release_keys),
            max_bundle_bytes,
        })
    }

    /// The blob file of a stored bundle.
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blobs.join(sha256_hex)
    }

    /// The largest bundle accepted, in bytes.
    pub fn max_bundle_bytes(&self) -> u64 {
        self.max_bundle_bytes
    }

    /// The trusted release keys.
    pub fn release_keys(&self) -> &TrustedKeys {
        &self.release_keys
    }

    /// Parses and checks a signed release document (JSON or wire form): trusted key, valid
    /// signature, not expired, not issued in the future.
    pub fn check_manifest(&self, doc: &[u8]) -> Result<SignedRelease, UploadError> {
        let release = SignedRelease::parse(doc).map_err(UploadError::ManifestMalformed)?;
        release
            .verify(&self.release_keys, &Policy::new(Timestamp::now()))
            .map_err(UploadError::ManifestRefused)?;
        Ok(release)
    }

    /// Receives a release: `doc` is the signed release manifest, `body` the bundle bytes.
    pub async fn upload<S, E>(&self, doc: &[u8], body: S) -> Result<Uploaded, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let release = self.check_manifest(doc)?;
        let m = release.manifest().clone();
        let (compatible, version) = (m.compatible.clone(), m.version.to_string());
        if let Some(id) = self.store.release_by_version(&compatible, &version).await? {
            return Err(UploadError::ReleaseExists {
                compatible,
                version,
                id,
            });
        }
        let sha_claimed = hex::encode(m.bundle_sha256);
        if let Some(id) = self.store.release_by_bundle(&sha_claimed).await? {
            return Err(UploadError::DuplicateBundle {
                sha256: sha_claimed,
                id,
            });
        }
        if m.bundle_size > self.max_bundle_bytes {
            return Err(UploadError::TooLarge {
                declared: m.bundle_size,
            });
        }

        // 1. Stream to a temporary file, hashing on the way, never past the declared size.
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.spool)
            .map_err(|source| UploadError::Io {
                path: self.spool.clone(),
                source,
            })?;
        let tmp_path = tmp.path().to_owned();
        let io_err = |source| UploadError::Io {
            path: tmp_path.clone(),
            source,
        };
        let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(io_err)?);
        let mut hash = Sha256::new();
        let mut received = 0u64;
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Receive(e.to_string()))?;
            received += chunk.len() as u64;
            if received > m.bundle_size {
                return Err(UploadError::TooLarge {
                    declared: m.bundle_size,
                });
            }
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        if received != m.bundle_size {
            return Err(UploadError::SizeMismatch {
                declared: m.bundle_size,
                received,
            });
        }
        let sha: [u8; 32] = hash.finalize().into();
        if sha != m.bundle_sha256 {
            return Err(UploadError::DigestMismatch {
                expected: hex::encode(m.bundle_sha256),
                found: hex::encode(sha),
            });
        }
        let sha_hex = hex::encode(sha);

        // 2. Verify the bundle itself (CPU and disk bound: off the async threads).
        let keyring = self.keyring.clone();
        let opts = self.verify.clone();
        let path = tmp.path().to_owned();
        let info = tokio::task::spawn_blocking(move || {
            Bundle::open(&path)?.verify(&keyring, &opts, &indicatif::ProgressBar::hidden())
        })
        .await
        .map_err(|e| UploadError::Receive(format!("verification task failed: {e}")))?
        .map_err(UploadError::Bundle)?;
        if info.compatible != compatible {
            return Err(UploadError::Bundle(spark_image::BundleError::Compatible {
                expected: compatible,
                actual: info.compatible,
            }));
        }
        let bundle_version = info.version.clone().ok_or(UploadError::NoBundleVersion)?;
        match Version::parse(&bundle_version) {
            Ok(v) if v == m.version => {}
            _ => {
                return Err(UploadError::VersionMismatch {
                    bundle: bundle_version,
                    release: version,
                });
            }
        }

        // 3. Store: blob first (content-addressed, so a duplicate is simply kept), then the rows.
        let blob = self.blob_path(&sha_hex);
        let duplicate_bundle = self.store.bundle(&sha_hex).await?.is_some() && blob.exists();
        if !duplicate_bundle {
            tmp.persist(&blob).map_err(|e| UploadError::Io {
                path: blob.clone(),
                source: e.error,
            })?;
            if let Some(dir) = blob.parent()
                && let Ok(d) = std::fs::File::open(dir)
            {
                let _ = d.sync_all();
            }
        }
        let now = Timestamp::now().unix() as i64;
        let bundle = BundleRecord {
            sha256: sha_hex.clone(),
            size: m.bundle_size as i64,
            compatible: compatible.clone(),
            version: bundle_version,
            format: format!("{:?}", info.format).to_lowercase(),
            signer: info.signature.signer.clone(),
            uploaded_at: now,
        };
        let new = NewRelease {
            compatible: compatible.clone(),
            version: version.clone(),
            bundle_sha256: sha_hex.clone(),
            bundle_size: m.bundle_size as i64,
            key_id: release.key_id().to_string(),
            issued_at: m.issued_at.unix() as i64,
            expires_at: m.expires_at.unix() as i64,
            min_version: m.min_version.as_ref().map(ToString::to_string),
            allow_downgrade: m.allow_downgrade,
            manifest_rollout: m.rollout.clone(),
            signed: release.to_json(),
        };
        let inserted = match self.store.insert_release(&bundle, &new, now).await {
            Ok(r) => r,
            Err(e) => {
                if !duplicate_bundle {
                    let _ = std::fs::remove_file(&blob);
                }
                return Err(e.into());
            }
        };
        let id = inserted.map_err(|id| UploadError::ReleaseExists {
            compatible: compatible.clone(),
            version: version.clone(),
            id,
        })?;
        tracing::info!(release = id, %compatible, %version, sha256 = %sha_hex, duplicate_bundle, "release stored");
        Ok(Uploaded {
            release: id,
            compatible,
            version,
            sha256: sha_hex,
            size: m.bundle_size,
            duplicate_bundle,
            signer: info.signature.signer,
        })
    }
}
