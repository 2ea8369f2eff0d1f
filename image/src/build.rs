//! Building and signing bundles, the way `rauc bundle` does, in one streaming pass per stage.
//!
//! 1. the manifest is completed with each image's SHA-256 and size (images hashed in parallel);
//! 2. the squashfs is written by `spark-squashfs` (blocks compressed in parallel, zero blocks
//!    stored sparse), padded to 4096 bytes;
//! 3. plain: the squashfs is hashed and a detached CMS signature appended;
//!    verity: the hash tree is computed and appended, and the CMS signature encapsulates the
//!    manifest with `verity-hash`, `verity-salt` and `verity-size`.
//!
//! With `SOURCE_DATE_EPOCH` set, the squashfs is byte-for-byte reproducible and the verity salt
//! is derived from it, so only the signature differs between two builds of the same input.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use spark_squashfs::{Compression, Entry, Source, WriterOptions};

use crate::bundle::{MANIFEST_NAME, append_signature, hash_reader, write_atomically};
use crate::error::BundleError;
use crate::manifest::{BundleFormat, Image, Manifest, VerityParams};
use crate::signature::Signer;
use crate::verity;

/// What to put in the bundle.
pub enum BuildInput {
    /// A content directory holding `manifest.raucm` and the files it names (like `rauc bundle`).
    Dir(PathBuf),
    /// One root filesystem image; the manifest is written for it.
    Rootfs {
        /// The image file (ext4, squashfs, ...).
        image: PathBuf,
        /// Slot class it installs to (`rootfs`).
        slot_class: String,
        /// `[update] compatible`.
        compatible: String,
        /// `[update] version`.
        version: String,
        /// `[update] description`.
        description: Option<String>,
        /// `[update] build`.
        build: Option<String>,
        /// Payload format.
        format: BundleFormat,
    },
}

/// How to build.
pub struct BuildOptions<'a> {
    /// Who signs.
    pub signer: &'a Signer,
    /// Squashfs compression (gzip level 9 by default, like mksquashfs).
    pub compression: Compression,
    /// Fixed timestamp for every inode (SOURCE_DATE_EPOCH); None uses file times.
    pub mtime: Option<u32>,
    /// Progress over the input bytes.
    pub progress: ProgressBar,
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// The completed manifest (verity keys included for verity bundles).
    #[serde(skip)]
    pub manifest: Manifest,
    /// Bundle size in bytes.
    pub size: u64,
    /// Squashfs size in bytes.
    pub squashfs_size: u64,
    /// SHA-256 of the whole bundle file (what the release manifest will pin).
    pub sha256: String,
}

/// Reads `SOURCE_DATE_EPOCH` as the reproducible-builds convention defines it.
pub fn source_date_epoch() -> Result<Option<u32>, BundleError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| BundleError::Input {
            path: PathBuf::from("$SOURCE_DATE_EPOCH"),
            reason: format!("'{v}' is not a Unix time in seconds"),
        }),
    }
}

/// Builds and signs a bundle at `output` (refusing to overwrite an existing file).
pub fn build(
    input: &BuildInput,
    output: &Path,
    opts: &BuildOptions<'_>,
) -> Result<BuildSummary, BundleError> {
    if output.exists() {
        return Err(BundleError::OutputExists(output.to_owned()));
    }
    let (mut manifest, files) = collect(input)?;
    if manifest.format == BundleFormat::Crypt {
        return Err(BundleError::Unsupported("crypt"));
    }
    if manifest.images.iter().any(|i| !i.adaptive.is_empty()) {
        return Err(BundleError::Unsupported("adaptive (block-hash-index)"));
    }
    manifest.verity = None;
    hash_images(&mut manifest, &files)?;

    let mut entries: Vec<Entry> = files
        .into_iter()
        .filter(|(name, _)| name != MANIFEST_NAME)
        .map(|(name, path)| Entry {
            mode: file_mode(&path),
            name,
            source: Source::Path(path),
        })
        .collect();
    entries.push(Entry {
        name: MANIFEST_NAME.into(),
        source: Source::Bytes(manifest.to_text(false).into_bytes()),
        mode: 0o644,
    });
    let input_bytes: u64 = entries
        .iter()
        .map(|e| match &e.source {
            Source::Path(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Source::Bytes(b) => b.len() as u64,
        })
        .sum();

    let mut summary = None;
    write_atomically(output, |out| {
        let progress = opts.progress.clone();
        progress.set_length(input_bytes);
        let wopts = WriterOptions {
            compression: opts.compression,
            mtime: opts.mtime,
            progress: Some(Box::new(move |n| progress.set_position(n))),
            ..WriterOptions::default()
        };
        let written = spark_squashfs::write_entries(&entries, out, &wopts)?;
        let squashfs_len = written.image_size;
        out.seek(SeekFrom::Start(0))
            .map_err(BundleError::io("rewind", output))?;
        opts.progress.set_position(0);
        opts.progress.set_length(squashfs_len);
        let reader = BufReader::with_capacity(1 << 20, &mut *out).take(squashfs_len);
        let signature = match manifest.format {
            BundleFormat::Verity => {
                if squashfs_len <= verity::BLOCK as u64 {
                    return Err(BundleError::VerityTooSmall { size: squashfs_len });
                }
                let salt = match opts.mtime {
                    // Reproducible: derive the salt from the payload itself.
                    Some(_) => {
                        let d = hash_reader(reader, &ProgressBar::hidden())
                            .map_err(BundleError::io("read back", output))?;
                        out.seek(SeekFrom::Start(0))
                            .map_err(BundleError::io("rewind", output))?;
                        Sha256::new()
                            .chain_update(b"spark-image verity salt")
                            .chain_update(d)
                            .finalize()
                            .into()
                    }
                    None => {
                        let mut salt = [0u8; 32];
                        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
                            .map_err(|_| BundleError::Unsupported("a system random source"))?;
                        salt
                    }
                };
                let reader = BufReader::with_capacity(1 << 20, &mut *out).take(squashfs_len);
                let progress = &opts.progress;
                let tree =
                    verity::compute(reader, squashfs_len, &salt, &|n| progress.set_position(n))
                        .map_err(BundleError::io("read back", output))?;
                manifest.verity = Some(VerityParams {
                    hash: tree.root,
                    salt,
                    size: tree.tree.len() as u64,
                });
                out.seek(SeekFrom::Start(squashfs_len))
                    .and_then(|_| out.write_all(&tree.tree))
                    .map_err(BundleError::io("write hash tree to", output))?;
                opts.signer
                    .sign_encapsulated(manifest.to_text(true).as_bytes())?
            }
            _ => {
                let digest = hash_reader(reader, &opts.progress)
                    .map_err(BundleError::io("read back", output))?;
                out.seek(SeekFrom::Start(squashfs_len))
                    .map_err(BundleError::io("seek", output))?;
                opts.signer.sign_detached(&digest)?
            }
        };
        append_signature(out, &signature, output)?;
        out.seek(SeekFrom::Start(0))
            .map_err(BundleError::io("rewind", output))?;
        let size = out
            .metadata()
            .map_err(BundleError::io("stat", output))?
            .len();
        let sha = hash_reader(
            BufReader::with_capacity(1 << 20, &mut *out),
            &ProgressBar::hidden(),
        )
        .map_err(BundleError::io("read back", output))?;
        summary = Some(BuildSummary {
            manifest: manifest.clone(),
            size,
            squashfs_size: squashfs_len,
            sha256: hex::encode(sha),
        });
        Ok(())
    })?;
    opts.progress.finish_and_clear();
    let summary = summary.expect("write_atomically ran the body successfully");
    tracing::info!(bundle = %output.display(), size = summary.size, "bundle built");
    Ok(summary)
}

/// Collects the manifest and the files to pack (name in bundle, path on disk).
fn collect(input: &BuildInput) -> Result<(Manifest, Vec<(String, PathBuf)>), BundleError> {
    match input {
        BuildInput::Dir(dir) => {
            let mpath = dir.join(MANIFEST_NAME);
            let text = std::fs::read_to_string(&mpath).map_err(|e| BundleError::Input {
                path: mpath.clone(),
                reason: format!("{e}: a content directory needs a manifest.raucm"),
            })?;
            let manifest = Manifest::parse(&text)?;
            let mut files = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(BundleError::io("read directory", dir))? {
                let entry = entry.map_err(BundleError::io("read directory", dir))?;
                let path = entry.path();
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|_| BundleError::Input {
                        path: path.clone(),
                        reason: "file name is not UTF-8".into(),
                    })?;
                let meta = std::fs::metadata(&path).map_err(BundleError::io("stat", &path))?;
                if !meta.is_file() {
                    return Err(BundleError::Input {
                        path,
                        reason: "only regular files belong in a bundle's content directory".into(),
                    });
                }
                files.push((name, path));
            }
            files.sort();
            Ok((manifest, files))
        }
        BuildInput::Rootfs {
            image,
            slot_class,
            compatible,
            version,
            description,
            build,
            format,
        } => {
            let name = image
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| *n != MANIFEST_NAME)
                .ok_or_else(|| BundleError::Input {
                    path: image.clone(),
                    reason: "needs a plain UTF-8 file name".into(),
                })?
                .to_string();
            let manifest = Manifest {
                compatible: compatible.clone(),
                version: Some(version.clone()),
                description: description.clone(),
                build: build.clone(),
                format: *format,
                images: vec![Image {
                    slot_class: slot_class.clone(),
                    variant: None,
                    filename: name.clone(),
                    sha256: None,
                    size: None,
                    hooks: Vec::new(),
                    adaptive: Vec::new(),
                }],
                ..Manifest::default()
            };
            // Round-trip through the parser so a bad compatible or slot class is caught here
            // with the same message rauc would give.
            let manifest = Manifest::parse(&manifest.to_text(false))?;
            Ok((manifest, vec![(name, image.clone())]))
        }
    }
}

/// Fills in each image's SHA-256 and size, hashing the images in parallel.
fn hash_images(manifest: &mut Manifest, files: &[(String, PathBuf)]) -> Result<(), BundleError> {
    let results: Vec<Result<([u8; 32], u64), BundleError>> = manifest
        .images
        .par_iter()
        .map(|image| {
            let path = files
                .iter()
                .find(|(n, _)| *n == image.filename)
                .map(|(_, p)| p)
                .ok_or_else(|| BundleError::ImageMissing(image.filename.clone()))?;
            let file = File::open(path).map_err(BundleError::io("open image", path))?;
            let size = file
                .metadata()
                .map_err(BundleError::io("stat image", path))?
                .len();
            let digest = hash_reader(
                BufReader::with_capacity(1 << 20, file),
                &ProgressBar::hidden(),
            )
            .map_err(BundleError::io("read image", path))?;
            Ok((digest, size))
        })
        .collect();
    for (image, r) in manifest.images.iter_mut().zip(results) {
        let (digest, size) = r?;
        image.sha256 = Some(digest);
        image.size = Some(size);
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(path: &Path) -> u16 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| (m.permissions().mode() & 0o7777) as u16)
        .unwrap_or(0o644)
}

#[cfg(not(unix))]
fn file_mode(_: &Path) -> u16 {
    0o644
}
