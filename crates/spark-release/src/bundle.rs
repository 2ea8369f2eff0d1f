//! The bundle digest a manifest names: SHA-256 and size of the whole `.raucb` file. Used by the
//! CLI when signing, by the OTA server on upload and by the agent after a download.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::manifest::ReleaseManifest;

/// SHA-256 and size of a bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleDigest {
    pub sha256: [u8; 32],
    pub size: u64,
}

/// Hashes everything `reader` yields.
pub fn digest_reader(mut reader: impl Read) -> io::Result<BundleDigest> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    // 64 KiB: large enough that syscalls do not dominate, small enough for the gateway.
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(BundleDigest {
        sha256: hasher.finalize().into(),
        size,
    })
}

/// Hashes a bundle file.
pub fn digest_file(path: &Path) -> io::Result<BundleDigest> {
    digest_reader(File::open(path)?)
}

/// A downloaded bundle that is not the one the manifest names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bundle does not match the release manifest (expected {} bytes, SHA-256 {}; got {} bytes, SHA-256 {}): download it again",
    expected.size, hex::encode(expected.sha256), found.size, hex::encode(found.sha256)
)]
pub struct BundleMismatch {
    pub expected: BundleDigest,
    pub found: BundleDigest,
}

impl ReleaseManifest {
    /// The bundle digest this manifest names.
    pub fn bundle_digest(&self) -> BundleDigest {
        BundleDigest {
            sha256: self.bundle_sha256,
            size: self.bundle_size,
        }
    }

    /// Checks that `found` is the bundle this manifest names.
    pub fn check_bundle(&self, found: &BundleDigest) -> Result<(), BundleMismatch> {
        let expected = self.bundle_digest();
        if expected == *found {
            Ok(())
        } else {
            Err(BundleMismatch {
                expected,
                found: *found,
            })
        }
    }
}
