//! Helpers shared by the integration tests: a dev PKI from `spark-keys`, plain bundles built by
//! `spark-image`, a testbed running the real `rauc service`, and a client on its private bus.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rauc_client::RaucClient;
use spark_image::{BuildInput, BuildOptions, BundleFormat, Compression, Signer};
use spark_keys::{DevPki, DevPkiOptions};
use spark_testbed::{Slot, Testbed, TestbedOptions};
use tempfile::TempDir;

pub const COMPATIBLE: &str = "spark-rauc-client-test";

/// Bound on every single wait in the tests; an install of a few MiB takes well under a second.
pub const WAIT: Duration = Duration::from_secs(30);

/// A PKI and a scratch directory for bundles, alive as long as the value.
pub struct Fixture {
    pub dir: TempDir,
    pub pki: DevPki,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rauc-client-test-")
            .tempdir()
            .expect("scratch directory");
        let pki = spark_keys::init_dev(&dir.path().join("pki"), &DevPkiOptions::default())
            .expect("dev PKI");
        Self { dir, pki }
    }

    pub fn options(&self) -> TestbedOptions {
        TestbedOptions::new(COMPATIBLE, self.pki.keyring())
    }

    pub fn testbed(&self) -> Testbed {
        Testbed::start(self.options()).expect("testbed")
    }

    /// A plain bundle (the only format this kernel installs) with `image` as its rootfs image,
    /// built and signed by spark-image; gzip level 1 keeps large random images quick.
    pub fn bundle(&self, compatible: &str, version: &str, image: &[u8]) -> PathBuf {
        let name = format!("{compatible}-{version}");
        let image_path = self.dir.path().join(format!("{name}.img"));
        std::fs::write(&image_path, image).expect("write image");
        let out = self.dir.path().join(format!("{name}.raucb"));
        let _ = std::fs::remove_file(&out);
        let signer = Signer::load(&self.pki.signer_cert(), &self.pki.signer_key(), &[])
            .expect("load signer");
        spark_image::build(
            &BuildInput::Rootfs {
                image: image_path,
                slot_class: "rootfs".into(),
                compatible: compatible.into(),
                version: version.into(),
                description: Some("rauc-client test bundle".into()),
                build: None,
                format: BundleFormat::Plain,
            },
            &out,
            &BuildOptions {
                signer: &signer,
                compression: Compression::Gzip { level: 1 },
                mtime: Some(1_700_000_000),
                progress: indicatif::ProgressBar::hidden(),
            },
        )
        .expect("build bundle");
        out
    }
}

/// A client on the testbed's private bus (the test's stand-in for DBUS_SYSTEM_BUS_ADDRESS,
/// without touching the environment other tests share).
pub async fn client(bed: &Testbed) -> RaucClient {
    let conn = within(async {
        zbus::connection::Builder::address(bed.bus_address())
            .expect("bus address")
            .build()
            .await
            .expect("connect to the testbed bus")
    })
    .await;
    within(RaucClient::from_connection(conn))
        .await
        .expect("client")
}

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("no answer within the test's bound")
}

/// `len` bytes that do not compress and differ per `seed` (xorshift).
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
pub fn slot_holds(bed: &Testbed, slot: Slot, image: &[u8]) -> bool {
    let data = std::fs::read(bed.slot_path(slot)).expect("read slot file");
    data.starts_with(image)
}

/// Flips one bit at `offset` of the file.
pub fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read bundle");
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).expect("write bundle");
}
