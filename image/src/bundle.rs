//! Reading, verifying, re-signing and extracting RAUC bundles.
//!
//! ```text
//! offset 0                        squashfs_len          payload_len             size-8     size
//! | squashfs (4096-aligned) ------| hash tree (verity) --| CMS signature (DER) ---| len u64 BE |
//! ```
//! The trailer is read first and checked against the file size before anything else is trusted;
//! the signature is at most 64 KiB (rauc's limit), so a lying length field cannot make us allocate.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use spark_squashfs::Archive;

use crate::error::{BundleError, ManifestError};
use crate::manifest::{BundleFormat, Image, Manifest, VerityParams};
use crate::signature::{Cms, Keyring, SignatureInfo, Signer, VerifyOptions};
use crate::verity;

/// rauc refuses signatures larger than this.
pub const MAX_SIGNATURE: u64 = 64 * 1024;
/// Name of the manifest inside the squashfs.
pub const MANIFEST_NAME: &str = "manifest.raucm";

/// An opened bundle: trailer and signature parsed, nothing verified yet.
pub struct Bundle {
    path: PathBuf,
    size: u64,
    payload_len: u64,
    squashfs_len: u64,
    signature: Vec<u8>,
    cms: Cms,
    format: BundleFormat,
    /// The manifest the CMS encapsulates (verity); not yet verified.
    signed_manifest: Option<Manifest>,
}

/// What `info` shows and `verify` returns.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BundleInfo {
    /// Bundle path.
    pub path: PathBuf,
    /// File size in bytes.
    pub size: u64,
    /// plain or verity.
    pub format: BundleFormat,
    /// `[update] compatible`.
    pub compatible: String,
    /// `[update] version`.
    pub version: Option<String>,
    /// `[update] description`.
    pub description: Option<String>,
    /// `[update] build`.
    pub build: Option<String>,
    /// Images and their checksums as the manifest states them.
    pub images: Vec<Image>,
    /// Squashfs size in bytes.
    pub squashfs_size: u64,
    /// Verity parameters (hex), for verity bundles.
    pub verity: Option<VerityInfo>,
    /// What the signature carries.
    pub signature: SignatureInfo,
    /// True when signature, chain, payload and images were all checked.
    pub verified: bool,
    /// `[meta.*]` groups.
    pub meta: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

/// Verity parameters in hex, for display.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VerityInfo {
    /// Root hash.
    pub hash: String,
    /// Salt.
    pub salt: String,
    /// Tree size in bytes.
    pub size: u64,
}

impl Bundle {
    /// Opens a bundle file and parses its trailer and signature.
    pub fn open(path: &Path) -> Result<Self, BundleError> {
        let mut file = File::open(path).map_err(BundleError::io("open bundle", path))?;
        let size = file
            .metadata()
            .map_err(BundleError::io("stat bundle", path))?
            .len();
        if size < 8 + 4096 {
            return Err(BundleError::TooSmall {
                path: path.to_owned(),
                size,
            });
        }
        let mut len = [0u8; 8];
        file.seek(SeekFrom::Start(size - 8))
            .and_then(|_| file.read_exact(&mut len))
            .map_err(BundleError::io("read bundle trailer", path))?;
        let sig_len = u64::from_be_bytes(len);
        if sig_len > size - 8 {
            return Err(BundleError::SignatureSize {
                claimed: sig_len,
                available: size - 8,
            });
        }
        if sig_len > MAX_SIGNATURE {
            return Err(BundleError::SignatureTooLarge(sig_len));
        }
        let payload_len = size - 8 - sig_len;
        let mut signature = vec![0u8; sig_len as usize];
        file.seek(SeekFrom::Start(payload_len))
            .and_then(|_| file.read_exact(&mut signature))
            .map_err(BundleError::io("read bundle signature", path))?;
        let cms = Cms::parse(&signature)?;
        let (format, signed_manifest, squashfs_len) = match cms.content()? {
            None => (BundleFormat::Plain, None, payload_len),
            Some(content) => {
                let text = String::from_utf8(content).map_err(|_| ManifestError::NotUtf8)?;
                let m = Manifest::parse(&text)?;
                let v = match (m.format, m.verity) {
                    (BundleFormat::Verity, Some(v)) => v,
                    (BundleFormat::Crypt, _) => return Err(BundleError::Unsupported("crypt")),
                    _ => {
                        return Err(ManifestError::MissingKey {
                            group: "bundle".into(),
                            key: "verity-hash",
                        }
                        .into());
                    }
                };
                if v.size > payload_len {
                    return Err(BundleError::Verity { what: "tree size" });
                }
                (BundleFormat::Verity, Some(m), payload_len - v.size)
            }
        };
        if squashfs_len % verity::BLOCK as u64 != 0 {
            return Err(BundleError::NotAligned(squashfs_len));
        }
        Ok(Self {
            path: path.to_owned(),
            size,
            payload_len,
            squashfs_len,
            signature,
            cms,
            format,
            signed_manifest,
        })
    }

    /// Receives a bundle from a stream (an HTTP upload, say) into a temporary file in
    /// `spool_dir`, hashing it on the way, and opens it. Nothing is trusted until
    /// [`Bundle::verify`] succeeds; drop the result to discard the upload, or
    /// [`SpooledBundle::persist`] it once verified.
    pub fn from_stream(
        mut reader: impl Read,
        spool_dir: &Path,
    ) -> Result<SpooledBundle, BundleError> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".spark-upload-")
            .tempfile_in(spool_dir)
            .map_err(BundleError::io("create spool file in", spool_dir))?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io("receive bundle into", tmp.path())(e)),
            };
            hash.update(&buf[..n]);
            size += n as u64;
            tmp.write_all(&buf[..n])
                .map_err(BundleError::io("write spool file", tmp.path()))?;
        }
        tmp.flush()
            .map_err(BundleError::io("write spool file", tmp.path()))?;
        let bundle = Bundle::open(tmp.path())?;
        Ok(SpooledBundle {
            bundle,
            file: tmp,
            sha256: hash.finalize().into(),
            size,
        })
    }

    /// The bundle format.
    pub fn format(&self) -> BundleFormat {
        self.format
    }

    /// The raw CMS signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    fn window(&self, len: u64) -> Result<impl Read, BundleError> {
        let file = File::open(&self.path).map_err(BundleError::io("open bundle", &self.path))?;
        Ok(BufReader::with_capacity(1 << 20, file).take(len))
    }

    fn archive(&self) -> Result<Archive<File>, BundleError> {
        let file = File::open(&self.path).map_err(BundleError::io("open bundle", &self.path))?;
        Ok(Archive::open_at(file, 0, self.squashfs_len)?)
    }

    fn inner_manifest(&self, archive: &Archive<File>) -> Result<Manifest, BundleError> {
        let bytes = match archive.read_file(MANIFEST_NAME) {
            Ok(b) => b,
            Err(spark_squashfs::SquashfsError::NotFound { .. }) => {
                return Err(BundleError::NoManifest);
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        Ok(Manifest::parse(&text)?)
    }

    /// Reads the manifest and signature details without verifying anything (`info --no-verify`).
    pub fn inspect(&self) -> Result<BundleInfo, BundleError> {
        let manifest = match &self.signed_manifest {
            Some(m) => m.clone(),
            None => self.inner_manifest(&self.archive()?)?,
        };
        Ok(self.info(&manifest, self.cms.info(), false))
    }

    fn info(&self, m: &Manifest, signature: SignatureInfo, verified: bool) -> BundleInfo {
        BundleInfo {
            path: self.path.clone(),
            size: self.size,
            format: self.format,
            compatible: m.compatible.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            build: m.build.clone(),
            images: m.images.clone(),
            squashfs_size: self.squashfs_len,
            verity: m.verity.map(|v| VerityInfo {
                hash: hex::encode(v.hash),
                salt: hex::encode(v.salt),
                size: v.size,
            }),
            signature,
            verified,
            meta: m.meta.clone(),
        }
    }

    /// Checks everything rauc checks before installing, and more: the signature and its chain
    /// to `keyring`, the whole payload (SHA-256 for plain, the full hash tree and root hash for
    /// verity), and every image's size and SHA-256 against the signed manifest.
    pub fn verify(
        &self,
        keyring: &Keyring,
        opts: &VerifyOptions,
        progress: &ProgressBar,
    ) -> Result<BundleInfo, BundleError> {
        let (signature, manifest, archive) = self.verify_payload(keyring, opts, progress)?;
        let entries = archive.entries()?;
        check_images(&manifest, |name| {
            let entry = entries.iter().find(|e| e.path == name);
            let Some(entry) = entry else {
                return Ok(None);
            };
            let mut hasher = HashWriter {
                hash: Sha256::new(),
                progress,
            };
            archive.copy_file(name, &mut hasher, None)?;
            Ok(Some((entry.size, hasher.hash.finalize().into())))
        })?;
        progress.finish_and_clear();
        tracing::info!(bundle = %self.path.display(), signer = %signature.signer, "bundle verified");
        Ok(self.info(&manifest, signature, true))
    }

    /// Verifies like [`Bundle::verify`] while extracting into `dest` (which must not exist):
    /// signature and payload first, then the files, then each image's checksum from the
    /// extracted copy, so images are decompressed once. On any failure `dest` is removed.
    pub fn verify_and_extract(
        &self,
        keyring: &Keyring,
        opts: &VerifyOptions,
        dest: &Path,
        progress: &ProgressBar,
    ) -> Result<BundleInfo, BundleError> {
        if dest.exists() {
            return Err(BundleError::OutputExists(dest.to_owned()));
        }
        let (signature, manifest, archive) = self.verify_payload(keyring, opts, progress)?;
        let result = archive
            .extract_all(dest)
            .map_err(BundleError::from)
            .and_then(|()| {
                check_images(&manifest, |name| {
                    let path = dest.join(name);
                    let Ok(file) = File::open(&path) else {
                        return Ok(None);
                    };
                    let size = file
                        .metadata()
                        .map_err(BundleError::io("stat", &path))?
                        .len();
                    let digest = hash_reader(BufReader::with_capacity(1 << 20, file), progress)
                        .map_err(BundleError::io("read", &path))?;
                    Ok(Some((size, digest)))
                })
            });
        if let Err(e) = result {
            // Never leave files behind whose checksums did not match the signed manifest.
            let _ = std::fs::remove_dir_all(dest);
            return Err(e);
        }
        progress.finish_and_clear();
        Ok(self.info(&manifest, signature, true))
    }

    /// Signature, chain and payload (everything but the image checksums); returns the manifest
    /// to trust and the opened squashfs.
    fn verify_payload(
        &self,
        keyring: &Keyring,
        opts: &VerifyOptions,
        progress: &ProgressBar,
    ) -> Result<(SignatureInfo, Manifest, Archive<File>), BundleError> {
        progress.set_length(self.squashfs_len);
        let (signature, manifest, archive) = match (&self.signed_manifest, self.format) {
            (Some(signed), BundleFormat::Verity) => {
                let verity = signed.verity.expect("open() checked verity params");
                let sig = self.cms.verify(None, keyring, opts)?;
                self.check_tree(&verity, progress)?;
                let archive = self.archive()?;
                let inner = self.inner_manifest(&archive)?;
                check_same_manifest(signed, &inner)?;
                (sig, signed.clone(), archive)
            }
            _ => {
                let digest = hash_reader(self.window(self.squashfs_len)?, progress)
                    .map_err(BundleError::io("read bundle", &self.path))?;
                let sig = self.cms.verify(Some(&digest), keyring, opts)?;
                let archive = self.archive()?;
                let manifest = self.inner_manifest(&archive)?;
                if manifest.format != BundleFormat::Plain {
                    return Err(BundleError::ManifestMismatch("format"));
                }
                (sig, manifest, archive)
            }
        };
        progress.inc_length(manifest.images.iter().filter_map(|i| i.size).sum());
        Ok((signature, manifest, archive))
    }

    fn check_tree(&self, v: &VerityParams, progress: &ProgressBar) -> Result<(), BundleError> {
        let start = progress.position();
        let tree = verity::compute(
            self.window(self.squashfs_len)?,
            self.squashfs_len,
            &v.salt,
            &|n| progress.set_position(start + n),
        )
        .map_err(BundleError::io("read bundle", &self.path))?;
        if tree.tree.len() as u64 != v.size {
            return Err(BundleError::Verity { what: "tree size" });
        }
        let mut stored = vec![0u8; tree.tree.len()];
        let mut file =
            File::open(&self.path).map_err(BundleError::io("open bundle", &self.path))?;
        file.seek(SeekFrom::Start(self.squashfs_len))
            .and_then(|_| file.read_exact(&mut stored))
            .map_err(BundleError::io("read hash tree", &self.path))?;
        // Check the root first: it is what the signature vouches for.
        if tree.root != v.hash {
            return Err(BundleError::Verity { what: "root hash" });
        }
        if stored != tree.tree {
            return Err(BundleError::Verity { what: "hash tree" });
        }
        Ok(())
    }

    /// Writes a copy of this bundle signed by `signer` (key rotation): the payload is kept byte
    /// for byte; a verity bundle keeps its signed manifest.
    pub fn resign(&self, signer: &Signer, output: &Path) -> Result<(), BundleError> {
        let signature = match self.cms.content()? {
            Some(content) => signer.sign_encapsulated(&content)?,
            None => {
                let digest = hash_reader(self.window(self.squashfs_len)?, &ProgressBar::hidden())
                    .map_err(BundleError::io("read bundle", &self.path))?;
                signer.sign_detached(&digest)?
            }
        };
        write_atomically(output, |out| {
            std::io::copy(&mut self.window(self.payload_len)?, out)
                .map_err(BundleError::io("copy payload to", output))?;
            append_signature(out, &signature, output)
        })
    }

    /// Extracts the squashfs contents into `dest` (which must not exist) without verifying.
    pub fn extract(&self, dest: &Path) -> Result<(), BundleError> {
        if dest.exists() {
            return Err(BundleError::OutputExists(dest.to_owned()));
        }
        self.archive()?.extract_all(dest)?;
        Ok(())
    }
}

/// Checks every image of `manifest` against what `hash` reports for its file name: `None`
/// when the file is missing, else its size and SHA-256.
fn check_images(
    manifest: &Manifest,
    mut hash: impl FnMut(&str) -> Result<Option<(u64, [u8; 32])>, BundleError>,
) -> Result<(), BundleError> {
    for image in &manifest.images {
        let (Some(expected_sha), Some(expected_size)) = (image.sha256, image.size) else {
            return Err(BundleError::ImageUnhashed(image.filename.clone()));
        };
        let (size, actual) = hash(&image.filename)?
            .ok_or_else(|| BundleError::ImageMissing(image.filename.clone()))?;
        if size != expected_size {
            return Err(BundleError::ImageSize {
                name: image.filename.clone(),
                expected: expected_size,
                actual: size,
            });
        }
        if actual != expected_sha {
            return Err(BundleError::ImageChecksum {
                name: image.filename.clone(),
                expected: hex::encode(expected_sha),
                actual: hex::encode(actual),
            });
        }
    }
    Ok(())
}

/// A bundle received from a stream, held in a temporary file until persisted.
pub struct SpooledBundle {
    bundle: Bundle,
    file: tempfile::NamedTempFile,
    sha256: [u8; 32],
    size: u64,
}

impl SpooledBundle {
    /// The opened bundle (verify it before use).
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// SHA-256 of the whole file as received (what release manifests pin).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Size in bytes as received.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves the received file to `path` (same filesystem as the spool directory).
    pub fn persist(self, path: &Path) -> Result<(), BundleError> {
        self.file.persist(path).map_err(|e| BundleError::Io {
            op: "store bundle as",
            path: path.to_owned(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// The squashfs manifest of a verity bundle must say what the signed one says.
fn check_same_manifest(signed: &Manifest, inner: &Manifest) -> Result<(), BundleError> {
    if inner.verity.is_some() {
        return Err(BundleError::ManifestMismatch(
            "verity keys in the squashfs manifest",
        ));
    }
    if signed.compatible != inner.compatible {
        return Err(BundleError::ManifestMismatch("compatible"));
    }
    if signed.version != inner.version {
        return Err(BundleError::ManifestMismatch("version"));
    }
    if signed.images != inner.images {
        return Err(BundleError::ManifestMismatch("images"));
    }
    Ok(())
}

/// Hashes what an image decompresses to, advancing the progress bar.
struct HashWriter<'a> {
    hash: Sha256,
    progress: &'a ProgressBar,
}

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        self.progress.inc(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// SHA-256 of everything `r` yields, advancing `progress`.
pub(crate) fn hash_reader(mut r: impl Read, progress: &ProgressBar) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        h.update(&buf[..n]);
        progress.inc(n as u64);
    }
}

pub(crate) fn append_signature(
    out: &mut File,
    signature: &[u8],
    path: &Path,
) -> Result<(), BundleError> {
    if signature.len() as u64 > MAX_SIGNATURE {
        return Err(BundleError::SignatureTooLarge(signature.len() as u64));
    }
    out.write_all(signature)
        .and_then(|_| out.write_all(&(signature.len() as u64).to_be_bytes()))
        .map_err(BundleError::io("write signature to", path))
}

/// Writes `output` through a temporary file in the same directory and renames it into place,
/// so a failed or interrupted build never leaves a half-written bundle behind.
pub(crate) fn write_atomically(
    output: &Path,
    body: impl FnOnce(&mut File) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".spark-image-")
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(BundleError::io("create temporary file in", dir))?;
    body(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(BundleError::io("sync", output))?;
    tmp.persist(output).map_err(|e| BundleError::Io {
        op: "rename into",
        path: output.to_owned(),
        source: e.error,
    })?;
    Ok(())
}
