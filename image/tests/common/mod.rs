//! Shared helpers for spark-image's integration tests: throwaway PKIs, sample root filesystem
//! images, bundles built by our library, and the real `rauc` command line.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use indicatif::ProgressBar;
use spark_image::{
    BuildInput, BuildOptions, BuildSummary, Bundle, BundleError, BundleFormat, Compression,
    Keyring, Signer, VerifyOptions,
};
use spark_keys::{DevPki, DevPkiOptions, KeyAlgorithm};
use tempfile::TempDir;

pub const COMPATIBLE: &str = "spark-test";

/// A development PKI in its own temporary directory.
pub struct Pki {
    pub dir: TempDir,
    pub pki: DevPki,
}

impl Pki {
    pub fn new(algorithm: KeyAlgorithm, intermediate: bool) -> Self {
        let dir = TempDir::new().unwrap();
        let pki = spark_keys::init_dev(
            &dir.path().join("pki"),
            &DevPkiOptions {
                algorithm,
                intermediate,
                ..DevPkiOptions::default()
            },
        )
        .unwrap();
        Self { dir, pki }
    }

    pub fn ecdsa() -> Self {
        Self::new(KeyAlgorithm::EcdsaP256, false)
    }

    pub fn signer(&self) -> Signer {
        let inter = self.pki.intermediate_cert();
        let inter: Vec<&Path> = inter.iter().map(PathBuf::as_path).collect();
        Signer::load(&self.pki.signer_cert(), &self.pki.signer_key(), &inter).unwrap()
    }

    pub fn keyring(&self) -> Keyring {
        Keyring::load(&self.pki.keyring()).unwrap()
    }
}

/// Writes a sample root filesystem image: compressible text-like blocks, random blocks and zero
/// runs, so squashfs exercises compressed, uncompressed and sparse blocks.
pub fn rootfs_image(path: &Path, size: usize) {
    let mut out = Vec::with_capacity(size);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = 0usize;
    while out.len() < size {
        let n = (size - out.len()).min(4096);
        match block % 5 {
            0 | 1 => out.extend((0..n).map(|i| b"spark gateway rootfs\n"[i % 21])),
            2 => out.extend(std::iter::repeat_n(0u8, n)),
            _ => out.extend((0..n).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })),
        }
        block += 1;
    }
    std::fs::write(path, out).unwrap();
}

/// Builds a bundle of `image` with our library.
pub fn build(
    pki: &Pki,
    format: BundleFormat,
    image: &Path,
    version: &str,
    out: &Path,
) -> BuildSummary {
    spark_image::build(
        &BuildInput::Rootfs {
            image: image.to_owned(),
            slot_class: "rootfs".into(),
            compatible: COMPATIBLE.into(),
            version: version.into(),
            description: Some("test bundle".into()),
            build: None,
            format,
        },
        out,
        &BuildOptions {
            signer: &pki.signer(),
            compression: Compression::default(),
            mtime: Some(1_700_000_000),
            progress: ProgressBar::hidden(),
        },
    )
    .unwrap()
}

/// Verifies with our library against `pki`'s keyring.
pub fn verify(pki: &Pki, bundle: &Path) -> Result<spark_image::BundleInfo, BundleError> {
    Bundle::open(bundle)?.verify(
        &pki.keyring(),
        &VerifyOptions::default(),
        &ProgressBar::hidden(),
    )
}

/// A minimal rauc `system.conf` for `rauc info` (no service needed).
pub fn rauc_conf(dir: &Path, keyring: &Path, check_purpose: Option<&str>) -> PathBuf {
    let conf = dir.join(format!(
        "system-{}.conf",
        check_purpose.unwrap_or("default")
    ));
    let mut f = std::fs::File::create(&conf).unwrap();
    writeln!(
        f,
        "[system]\ncompatible={COMPATIBLE}\nbootloader=noop\n\n[keyring]\npath={}",
        keyring.display()
    )
    .unwrap();
    if let Some(p) = check_purpose {
        writeln!(f, "check-purpose={p}").unwrap();
    }
    writeln!(
        f,
        "\n[slot.rootfs.0]\ndevice={}/slot-a\ntype=raw\nbootname=A",
        dir.display()
    )
    .unwrap();
    conf
}

/// Runs the real `rauc` with `args`.
pub fn rauc(args: &[&str]) -> Output {
    Command::new("rauc")
        .args(args)
        .env("TMPDIR", std::env::temp_dir())
        .output()
        .expect("rauc is installed (ci/test.sh installs it)")
}

/// `rauc info --keyring` on a bundle; Ok(json) or Err(stderr).
pub fn rauc_info(conf: &Path, keyring: &Path, bundle: &Path) -> Result<String, String> {
    let out = rauc(&[
        &format!("--conf={}", conf.display()),
        "info",
        &format!("--keyring={}", keyring.display()),
        "--output-format=json",
        &bundle.display().to_string(),
    ]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes a plain bundle by hand from raw manifest text and files, signed by `pki`: lets tests
/// make bundles our builder refuses to make (unknown keys, wrong checksums, bad alignment).
pub fn forge_plain(
    pki: &Pki,
    manifest: &str,
    files: &[(&str, &Path)],
    pad_payload: usize,
    out: &Path,
) {
    let mut entries = vec![spark_squashfs::Entry {
        name: "manifest.raucm".into(),
        source: spark_squashfs::Source::Bytes(manifest.as_bytes().to_vec()),
        mode: 0o644,
    }];
    for (name, path) in files {
        entries.push(spark_squashfs::Entry {
            name: (*name).into(),
            source: spark_squashfs::Source::Path(path.to_path_buf()),
            mode: 0o644,
        });
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(out)
        .unwrap();
    spark_squashfs::write_entries(&entries, &mut f, &spark_squashfs::WriterOptions::default())
        .unwrap();
    f.write_all(&vec![0u8; pad_payload]).unwrap();
    drop(f);
    let payload = std::fs::read(out).unwrap();
    let digest: [u8; 32] = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &payload,
    ))
    .into();
    let sig = pki.signer().sign_detached(&digest).unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(out).unwrap();
    f.write_all(&sig).unwrap();
    f.write_all(&(sig.len() as u64).to_be_bytes()).unwrap();
}

/// Flips one bit at `offset` (negative: from the end).
pub fn flip(path: &Path, offset: i64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = if offset < 0 {
        (bytes.len() as i64 + offset) as usize
    } else {
        offset as usize
    };
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}
