//! Helpers shared by the testbed integration tests: a PKI and bundles made with the real tools.

use std::path::{Path, PathBuf};

use spark_testbed::fixture::TestPki;
use spark_testbed::{Testbed, TestbedOptions};
use tempfile::TempDir;

pub const COMPATIBLE: &str = "spark-testbed-test";

/// A PKI and a scratch directory for bundles, alive as long as the value.
pub struct Fixture {
    pub dir: TempDir,
    pub pki: TestPki,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("spark-testbed-fixture-")
            .tempdir()
            .expect("scratch directory");
        let pki = TestPki::generate(dir.path()).expect("openssl PKI");
        Self { dir, pki }
    }

    pub fn options(&self) -> TestbedOptions {
        TestbedOptions::new(COMPATIBLE, &self.pki.ca_cert)
    }

    /// A plain bundle with `image` as its rootfs, named after compatible and version.
    pub fn bundle(&self, compatible: &str, version: &str, image: &[u8]) -> PathBuf {
        let out = self
            .dir
            .path()
            .join(format!("{compatible}-{version}.raucb"));
        self.pki
            .plain_bundle(self.dir.path(), compatible, version, image, &out)
            .expect("rauc bundle");
        out
    }
}

/// `len` bytes that do not compress and differ per `seed` (xorshift), so a slot that holds them
/// cannot have got them by accident.
pub fn image(seed: u64, len: usize) -> Vec<u8> {
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

/// True if the slot file begins with `image`.
pub fn slot_holds(bed: &Testbed, slot: spark_testbed::Slot, image: &[u8]) -> bool {
    let data = std::fs::read(bed.slot_path(slot)).expect("read slot file");
    data.starts_with(image)
}

/// Processes whose command line mentions `path` (our rauc and dbus-daemon name their config files
/// in the testbed directory), as `pid: cmdline`.
pub fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Processes may vanish while we look; that is fine.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}
