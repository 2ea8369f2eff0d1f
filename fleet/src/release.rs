//! Releases as the release tooling makes them: a RAUC bundle of a root filesystem image, signed
//! by the firmware PKI's bundle signer (`spark-image`), and its Ed25519-signed release manifest
//! (`spark-release`), both offline, before anything reaches the OTA server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spark_image::{BuildInput, BuildOptions, BundleFormat, Compression, Signer};
use spark_keys::DevPki;
use spark_release::{ReleaseManifest, SignedRelease, Timestamp, Version};

use crate::FleetError;

/// A built release: the bundle and its signed manifest, side by side on disk.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: String,
    pub bundle: PathBuf,
    pub manifest: PathBuf,
    pub signed: SignedRelease,
}

/// How a release is made.
#[derive(Debug, Clone)]
pub struct ReleaseSpec<'a> {
    pub compatible: &'a str,
    pub version: &'a str,
    /// The root filesystem image (any bytes: the slots are files, nothing mounts them).
    pub rootfs: &'a [u8],
    /// Signed as an allowed downgrade (for rollback rollouts).
    pub allow_downgrade: bool,
    /// How long the manifest is valid.
    pub valid_for: Duration,
}

impl ReleaseSpec<'_> {
    /// Builds `DIR/COMPATIBLE-VERSION.raucb` (`plain` format: installing `verity` needs
    /// device-mapper) and `DIR/COMPATIBLE-VERSION.release.json`.
    pub fn build(&self, pki: &DevPki, dir: &Path) -> Result<Release, FleetError> {
        let stem = format!("{}-{}", self.compatible, self.version);
        let image = dir.join(format!("{stem}.rootfs.img"));
        std::fs::write(&image, self.rootfs).map_err(FleetError::io("write", &image))?;
        let bundle = dir.join(format!("{stem}.raucb"));
        if bundle.exists() {
            std::fs::remove_file(&bundle).map_err(FleetError::io("remove", &bundle))?;
        }
        let signer = Signer::load(&pki.signer_cert(), &pki.signer_key(), &[])?;
        spark_image::build(
            &BuildInput::Rootfs {
                image: image.clone(),
                slot_class: "rootfs".into(),
                compatible: self.compatible.into(),
                version: self.version.into(),
                description: Some(format!("Spark fleet-in-a-box {}", self.version)),
                build: None,
                format: BundleFormat::Plain,
            },
            &bundle,
            &BuildOptions {
                signer: &signer,
                compression: Compression::Gzip { level: 1 },
                mtime: None,
                progress: indicatif::ProgressBar::hidden(),
            },
        )?;
        let _ = std::fs::remove_file(&image);

        let digest =
            spark_release::digest_file(&bundle).map_err(FleetError::io("read", &bundle))?;
        let now = Timestamp::now();
        let release_err = |e: &dyn std::fmt::Display| FleetError::Release(e.to_string());
        let manifest = ReleaseManifest {
            compatible: self.compatible.into(),
            version: Version::parse(self.version).map_err(|e| release_err(&e))?,
            bundle_sha256: digest.sha256,
            bundle_size: digest.size,
            locations: vec![],
            min_version: None,
            issued_at: now,
            expires_at: now
                .checked_add(self.valid_for)
                .ok_or_else(|| FleetError::Release("validity out of range".into()))?,
            allow_downgrade: self.allow_downgrade,
            rollout: None,
        };
        let key =
            spark_release::load_signing_key(&pki.release_key()).map_err(|e| release_err(&e))?;
        let signed = SignedRelease::sign(manifest, &key).map_err(|e| release_err(&e))?;
        let manifest = dir.join(format!("{stem}.release.json"));
        std::fs::write(&manifest, signed.to_json()).map_err(FleetError::io("write", &manifest))?;
        Ok(Release {
            version: self.version.into(),
            bundle,
            manifest,
            signed,
        })
    }
}

/// A sample root filesystem image for `version`: an ext4 file system (`mkfs.ext4 -d`, 8 MiB)
/// holding `/etc/os-release` with `VERSION_ID=version`, a `spark-hello` script, text and a
/// megabyte of firmware blob, as a stand-in for the Yocto image; built in `dir`, returned as
/// bytes.
pub fn sample_rootfs(dir: &Path, version: &str) -> Result<Vec<u8>, FleetError> {
    let tree = dir.join(format!("rootfs-{version}"));
    let image = dir.join(format!("rootfs-{version}.ext4"));
    for sub in ["etc", "usr/bin", "usr/share/spark", "data"] {
        let d = tree.join(sub);
        std::fs::create_dir_all(&d).map_err(FleetError::io("create", &d))?;
    }
    let files = [
        (
            "etc/os-release",
            format!("NAME=\"Spark\"\nID=spark\nVERSION_ID={version}\n"),
        ),
        (
            "usr/bin/spark-hello",
            format!("#!/bin/sh\necho \"Spark gateway {version}\"\n"),
        ),
        (
            "usr/share/spark/notes.txt",
            format!("Spark sample root filesystem {version}.\n").repeat(2000),
        ),
    ];
    for (name, text) in files {
        let path = tree.join(name);
        std::fs::write(&path, text).map_err(FleetError::io("write", &path))?;
    }
    // A megabyte that does not compress (firmware blobs do not), so the bundle has some size.
    let seed = version
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let blob = tree.join("usr/share/spark/firmware.bin");
    std::fs::write(&blob, noise(seed, 1 << 20)).map_err(FleetError::io("write", &blob))?;
    let _ = std::fs::remove_file(&image);
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-L", "rootfs", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("8M")
        .output()
        .map_err(|source| FleetError::Spawn {
            name: "mkfs.ext4 (apt-get install e2fsprogs)".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(FleetError::Command {
            command: format!("mkfs.ext4 -d {} {}", tree.display(), image.display()),
            detail: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let bytes = std::fs::read(&image).map_err(FleetError::io("read", &image))?;
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_dir_all(&tree);
    Ok(bytes)
}

/// `len` bytes that do not compress and differ per `seed` (xorshift): a stand-in root
/// filesystem whose bundle size is what the bytes say.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
