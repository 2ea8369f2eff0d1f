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
//!
//! **Dev mode** (`[dev] release-key`): the server holds a release private key and accepts an
//! upload without a manifest. It then receives the bundle (up to `max-bundle-bytes`), verifies
//! it exactly as above, and signs a manifest for the bundle's compatible and version, its SHA-256
//! and size as received, valid for spark-release's [`DEFAULT_VALIDITY`] (as `spark-keys
//! sign-release` signs by default) — with the same `spark-release` calls sign-release makes.
//! Without dev mode such an upload is refused: in production the release key stays offline and
//! the server only stores signatures.
//!
//! **Replacing a manifest** ([`Catalog::replace_manifest`]): a release keeps its bundle and id
//! but may get a new signed manifest for the same compatible, version, bundle SHA-256 and size,
//! checked as at upload and not older than the stored one: renewed before (or after) it expires,
//! re-signed with a rotated key, or signed as an allowed downgrade so that a rollback rollout can
//! go back to it. Check-ins and pushes read the stored manifest each time, so devices get the
//! new one from then on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use spark_image::{Bundle, Keyring, VerifyOptions};
use spark_release::{
    DEFAULT_VALIDITY, Policy, ReleaseManifest, SignedRelease, SigningKey, Timestamp, TrustedKeys,
    Version,
};
use tokio::io::AsyncWriteExt;

use crate::error::{ManifestError, UploadError};
use crate::store::{BundleRecord, NewRelease, ReleaseRecord, Store};

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
    /// Dev mode: the release key manifests of uploads without one are signed with.
    dev_key: Option<Arc<SigningKey>>,
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
    /// Dev mode: the server signed the release manifest itself (the upload had none).
    #[serde(default)]
    pub dev_signed: bool,
}

/// The facts of a release's signed manifest the catalog keeps as columns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFacts {
    /// Id of the release key that signed it.
    pub key_id: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub min_version: Option<String>,
    pub allow_downgrade: bool,
    /// The rollout id signed into the manifest, if any.
    pub rollout: Option<String>,
}

impl ManifestFacts {
    fn of(r: &ReleaseRecord) -> ManifestFacts {
        ManifestFacts {
            key_id: r.key_id.clone(),
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            min_version: r.min_version.clone(),
            allow_downgrade: r.allow_downgrade,
            rollout: r.manifest_rollout.clone(),
        }
    }

    fn of_new(r: &NewRelease) -> ManifestFacts {
        ManifestFacts {
            key_id: r.key_id.clone(),
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            min_version: r.min_version.clone(),
            allow_downgrade: r.allow_downgrade,
            rollout: r.manifest_rollout.clone(),
        }
    }
}

/// What replacing a release's signed manifest did (`PUT /v1/releases/{id}/manifest`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ManifestReplaced {
    pub release: i64,
    pub compatible: String,
    pub version: String,
    /// The manifest now stored.
    pub manifest: ManifestFacts,
    /// The one it replaced.
    pub previous: ManifestFacts,
    /// The stored manifest was this one already, byte for byte: nothing changed.
    pub unchanged: bool,
}

/// The release row of a signed release (its identity and the columns its manifest determines).
fn release_row(release: &SignedRelease) -> NewRelease {
    let m = release.manifest();
    NewRelease {
        compatible: m.compatible.clone(),
        version: m.version.to_string(),
        bundle_sha256: hex::encode(m.bundle_sha256),
        // Past i64::MAX no bundle is stored; the value then matches no release.
        bundle_size: i64::try_from(m.bundle_size).unwrap_or(i64::MAX),
        key_id: release.key_id().to_string(),
        issued_at: m.issued_at.unix() as i64,
        expires_at: m.expires_at.unix() as i64,
        min_version: m.min_version.as_ref().map(ToString::to_string),
        allow_downgrade: m.allow_downgrade,
        manifest_rollout: m.rollout.clone(),
        signed: release.to_json(),
    }
}

/// Unix seconds as RFC 3339 (the number itself when out of range).
fn unix_text(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .and_then(Timestamp::from_unix)
        .map_or_else(|| t.to_string(), |t| t.to_string())
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
            dev_key: None,
        })
    }

    /// Dev mode: uploads without a manifest are accepted and signed with `key`. The caller
    /// checks that `key`'s public half is among the release keys (else devices could not verify
    /// what the server signs).
    pub fn with_dev_key(mut self, key: SigningKey) -> Catalog {
        self.dev_key = Some(Arc::new(key));
        self
    }

    /// Whether this catalog signs manifests itself (dev mode).
    pub fn dev_mode(&self) -> bool {
        self.dev_key.is_some()
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

    /// Receives a release: `doc` is the signed release manifest, `body` the bundle bytes. Without
    /// `doc`, only a dev-mode catalog accepts the upload, and signs the manifest itself.
    pub async fn upload<S, E>(&self, doc: Option<&[u8]>, body: S) -> Result<Uploaded, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let given = match doc {
            Some(doc) => Some(self.check_manifest(doc)?),
            None if self.dev_key.is_none() => return Err(UploadError::MissingManifest),
            None => None,
        };
        // With a manifest, everything it names is checked before a byte of the body is read.
        let limit = match &given {
            Some(release) => {
                let m = release.manifest();
                self.check_new(&m.compatible, &m.version.to_string(), &m.bundle_sha256)
                    .await?;
                if m.bundle_size > self.max_bundle_bytes {
                    return Err(UploadError::OverLimit {
                        limit: self.max_bundle_bytes,
                    });
                }
                m.bundle_size
            }
            None => self.max_bundle_bytes,
        };

        // 1. Stream to a temporary file, hashing on the way, never past the limit.
        let (tmp, sha, received) = self.receive(body, limit, given.is_some()).await?;
        if let Some(release) = &given {
            let m = release.manifest();
            if received != m.bundle_size {
                return Err(UploadError::SizeMismatch {
                    declared: m.bundle_size,
                    received,
                });
            }
            if sha != m.bundle_sha256 {
                return Err(UploadError::DigestMismatch {
                    expected: hex::encode(m.bundle_sha256),
                    found: hex::encode(sha),
                });
            }
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
        let bundle_version = info.version.clone().ok_or(UploadError::NoBundleVersion)?;

        // 3. The signed release: the uploaded one, checked against the bundle; or, in dev mode,
        //    one signed here for what the bundle is.
        let (release, dev_signed) = match (given, &self.dev_key) {
            (Some(release), _) => {
                let m = release.manifest();
                if info.compatible != m.compatible {
                    return Err(UploadError::Bundle(spark_image::BundleError::Compatible {
                        expected: m.compatible.clone(),
                        actual: info.compatible,
                    }));
                }
                match Version::parse(&bundle_version) {
                    Ok(v) if v == m.version => {}
                    _ => {
                        return Err(UploadError::VersionMismatch {
                            bundle: bundle_version,
                            release: m.version.to_string(),
                        });
                    }
                }
                (release, false)
            }
            (None, Some(key)) => {
                let version = Version::parse(&bundle_version).map_err(|_| {
                    UploadError::BundleVersionNotSemver {
                        version: bundle_version.clone(),
                    }
                })?;
                self.check_new(&info.compatible, &version.to_string(), &sha)
                    .await?;
                let issued_at = Timestamp::now();
                let manifest = ReleaseManifest {
                    compatible: info.compatible.clone(),
                    version,
                    bundle_sha256: sha,
                    bundle_size: received,
                    locations: Vec::new(),
                    min_version: None,
                    issued_at,
                    expires_at: issued_at.checked_add(DEFAULT_VALIDITY).ok_or_else(|| {
                        UploadError::DevSign("the expiry would be past the year 9999".into())
                    })?,
                    allow_downgrade: false,
                    rollout: None,
                };
                let release = SignedRelease::sign(manifest, key)
                    .map_err(|e| UploadError::DevSign(e.to_string()))?;
                tracing::warn!(compatible = %info.compatible, version = %bundle_version, key_id = %release.key_id(), "dev mode: release manifest signed by this server");
                (release, true)
            }
            // Invariant: an upload without a manifest was refused above unless a key is held.
            (None, None) => return Err(UploadError::MissingManifest),
        };
        let m = release.manifest().clone();
        let (compatible, version) = (m.compatible.clone(), m.version.to_string());

        // 4. Store: blob first (content-addressed, so a duplicate is simply kept), then the rows.
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
        let new = release_row(&release);
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
        tracing::info!(release = id, %compatible, %version, sha256 = %sha_hex, duplicate_bundle, dev_signed, "release stored");
        Ok(Uploaded {
            release: id,
            compatible,
            version,
            sha256: sha_hex,
            size: m.bundle_size,
            duplicate_bundle,
            signer: info.signature.signer,
            dev_signed,
        })
    }

    /// Replaces the signed manifest of release `id` with `doc` (JSON or wire form), checked as
    /// at upload (trusted key, valid signature, not expired, not issued in the future). The new
    /// manifest must name the release's compatible, version, bundle SHA-256 and size, and must
    /// not be older than the stored one (`issued_at`: putting an old manifest back would replay
    /// it). A yanked release is refused, and so is a change of the facts live rollouts of the
    /// release were planned with (its minimum version; a dropped allowed downgrade).
    ///
    /// What it is for: renewing a manifest before it expires, re-signing with a rotated key, and
    /// signing a release already in the catalog as an allowed downgrade to roll back to it.
    pub async fn replace_manifest(
        &self,
        id: i64,
        doc: &[u8],
    ) -> Result<ManifestReplaced, ManifestError> {
        let release = SignedRelease::parse(doc).map_err(ManifestError::Malformed)?;
        let stored = self
            .store
            .release(id)
            .await?
            .ok_or(ManifestError::NotFound(id))?;
        release
            .verify(&self.release_keys, &Policy::new(Timestamp::now()))
            .map_err(ManifestError::Refused)?;
        let new = release_row(&release);
        self.check_replacement(&stored, &new).await?;
        let previous = ManifestFacts::of(&stored);
        let done = |unchanged| ManifestReplaced {
            release: id,
            compatible: stored.compatible.clone(),
            version: stored.version.clone(),
            manifest: ManifestFacts::of_new(&new),
            previous: previous.clone(),
            unchanged,
        };
        if stored.signed.as_deref() == Some(new.signed.as_str()) {
            tracing::info!(
                release = id,
                "release manifest replaced by the same manifest: nothing changed"
            );
            return Ok(done(true));
        }
        // The update is conditional on what was checked: a yank or another replacement that
        // came in between leaves it undone, and the checks on the release as it is now say why.
        if !self.store.replace_manifest(id, &new).await? {
            let now = self
                .store
                .release(id)
                .await?
                .ok_or(ManifestError::NotFound(id))?;
            self.check_replacement(&now, &new).await?;
            return Err(ManifestError::Changed(id));
        }
        let out = done(false);
        tracing::info!(
            release = id,
            compatible = %out.compatible,
            version = %out.version,
            key_id = %out.manifest.key_id,
            issued_at = out.manifest.issued_at,
            expires_at = out.manifest.expires_at,
            allow_downgrade = out.manifest.allow_downgrade,
            min_version = ?out.manifest.min_version,
            previous_issued_at = previous.issued_at,
            previous_expires_at = previous.expires_at,
            previous_allow_downgrade = previous.allow_downgrade,
            "release manifest replaced"
        );
        Ok(out)
    }

    /// Whether `new` may replace the manifest of `stored` (see [`Catalog::replace_manifest`]).
    async fn check_replacement(
        &self,
        stored: &ReleaseRecord,
        new: &NewRelease,
    ) -> Result<(), ManifestError> {
        let id = stored.id;
        if stored.yanked_at.is_some() {
            return Err(ManifestError::Yanked {
                id,
                compatible: stored.compatible.clone(),
                version: stored.version.clone(),
            });
        }
        let mut differences = Vec::new();
        let mut differ = |what: &str, given: String, has: String| {
            if given != has {
                differences.push(format!("it names {what} {given}, the release has {has}"));
            }
        };
        differ(
            "compatible",
            format!("{:?}", new.compatible),
            format!("{:?}", stored.compatible),
        );
        differ("version", new.version.clone(), stored.version.clone());
        differ(
            "bundle SHA-256",
            new.bundle_sha256.clone(),
            stored.bundle_sha256.clone(),
        );
        differ(
            "bundle size",
            new.bundle_size.to_string(),
            stored.bundle_size.to_string(),
        );
        if !differences.is_empty() {
            return Err(ManifestError::Mismatch {
                id,
                differences: differences.join("; "),
            });
        }
        if new.issued_at < stored.issued_at {
            return Err(ManifestError::Older {
                id,
                stored: unix_text(stored.issued_at),
                given: unix_text(new.issued_at),
            });
        }
        // Rollouts copied the minimum version and the downgrade flag into their plan when they
        // were created; a manifest that says otherwise would be offered by the plan and then
        // refused by the devices (a rollback to a manifest without the flag), or the other way
        // round.
        let what = if stored.min_version != new.min_version {
            "minimum version (min_version)"
        } else if stored.allow_downgrade && !new.allow_downgrade {
            "allowed downgrade (allow_downgrade)"
        } else {
            return Ok(());
        };
        let live: Vec<String> = self
            .store
            .rollouts()
            .await?
            .into_iter()
            .filter(|r| r.release_id == id && r.state != "aborted")
            .map(|r| r.id)
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        Err(ManifestError::RolloutsDependOn {
            id,
            rollouts: live.join(", "),
            what,
        })
    }

    /// Refuses a release whose version or bundle the catalog already holds.
    async fn check_new(
        &self,
        compatible: &str,
        version: &str,
        sha256: &[u8; 32],
    ) -> Result<(), UploadError> {
        if let Some(id) = self.store.release_by_version(compatible, version).await? {
            return Err(UploadError::ReleaseExists {
                compatible: compatible.to_owned(),
                version: version.to_owned(),
                id,
            });
        }
        let sha = hex::encode(sha256);
        if let Some(id) = self.store.release_by_bundle(&sha).await? {
            return Err(UploadError::DuplicateBundle { sha256: sha, id });
        }
        Ok(())
    }

    /// Streams `body` into a temporary file in the spool, hashing it; more than `limit` bytes
    /// is refused (`declared`: the limit is the manifest's size, else `max-bundle-bytes`).
    async fn receive<S, E>(
        &self,
        mut body: S,
        limit: u64,
        declared: bool,
    ) -> Result<(tempfile::NamedTempFile, [u8; 32], u64), UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
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
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Receive(e.to_string()))?;
            received += chunk.len() as u64;
            if received > limit {
                return Err(if declared {
                    UploadError::TooLarge { declared: limit }
                } else {
                    UploadError::OverLimit { limit }
                });
            }
            hash.update(&chunk);
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        Ok((tmp, hash.finalize().into(), received))
    }
}
