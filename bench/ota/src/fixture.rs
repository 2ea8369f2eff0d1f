//! The bench's fixture, cached between runs in `--cache-dir` because making it takes longer than
//! the measurements: a development PKI from `spark-keys`, one client certificate per simulated
//! device (CN `dev-NNNNN`), and a RAUC bundle of random data signed by the PKI's bundle signer.
//! The release manifest is signed afresh on every run (it carries issue and expiry times).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use spark_keys::{DevPki, DevPkiOptions};
use spark_release::{ReleaseManifest, SignedRelease, Timestamp, Version};

/// The `compatible` of the bench's bundle and of every simulated device.
pub const COMPATIBLE: &str = "spark-bbb";
/// The version devices report running; the bundle is a newer one.
pub const CURRENT_VERSION: &str = "1.0.0";
pub const RELEASE_VERSION: &str = "2.0.0";

/// The serial (certificate CN) of device `i`.
pub fn serial(i: usize) -> String {
    format!("dev-{i:05}")
}

pub struct Fixture {
    pub pki: DevPki,
    /// `--devices` serials with a certificate in the PKI's `devices/`.
    pub devices: Vec<String>,
    pub bundle: PathBuf,
}

impl Fixture {
    /// Opens the cached fixture in `cache`, making what is missing: the PKI, certificates for
    /// `devices` devices and a bundle with a `bundle_mb` MB (10^6 bytes) root filesystem image.
    pub fn prepare(cache: &Path, devices: usize, bundle_mb: u64) -> anyhow::Result<Fixture> {
        std::fs::create_dir_all(cache)
            .with_context(|| format!("creating the cache directory {}", cache.display()))?;
        let pki_dir = cache.join("pki");
        let pki = match DevPki::open(&pki_dir) {
            Ok(pki) => pki,
            Err(_) => {
                eprintln!("making a development PKI in {}", pki_dir.display());
                // Bundles signed by an earlier PKI would not verify against the new keyring.
                for e in std::fs::read_dir(cache)?.flatten() {
                    if e.file_name().to_string_lossy().ends_with(".raucb") {
                        std::fs::remove_file(e.path())?;
                    }
                }
                spark_keys::init_dev(&pki_dir, &DevPkiOptions::default())
                    .context("making the development PKI")?
            }
        };
        let serials: Vec<String> = (0..devices).map(serial).collect();
        let missing: Vec<&String> = serials
            .iter()
            .filter(|s| !pki.device_cert(s).is_file() || !pki.device_key(s).is_file())
            .collect();
        if !missing.is_empty() {
            let t = Instant::now();
            eprintln!("issuing {} device certificates", missing.len());
            for s in missing {
                spark_keys::issue_device(&pki.dir, s, true)
                    .with_context(|| format!("issuing the certificate of {s}"))?;
            }
            eprintln!("  issued in {:.1} s", t.elapsed().as_secs_f64());
        }
        let bundle = cache.join(format!("bundle-{bundle_mb}mb.raucb"));
        if !bundle.is_file() {
            build_bundle(&pki, bundle_mb, &bundle)?;
        }
        Ok(Fixture {
            pki,
            devices: serials,
            bundle,
        })
    }

    /// Device `serial`'s client TLS: its certificate and key, trusting only the server CA.
    pub fn device_tls(&self, serial: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let config = spark_tls::client_config(
            &self.pki.server_ca_cert(),
            &self.pki.device_cert(serial),
            &self.pki.device_key(serial),
        )
        .with_context(|| format!("loading the client certificate of {serial}"))?;
        Ok(Arc::new(config))
    }

    /// Signs the release manifest of the bundle with the dev release key into `out`.
    pub fn sign_release(&self, out: &Path) -> anyhow::Result<()> {
        let digest = spark_release::digest_file(&self.bundle)?;
        let now = Timestamp::now();
        let manifest = ReleaseManifest {
            compatible: COMPATIBLE.into(),
            version: Version::parse(RELEASE_VERSION)?,
            bundle_sha256: digest.sha256,
            bundle_size: digest.size,
            locations: vec![],
            min_version: None,
            issued_at: now,
            expires_at: now
                .checked_add(Duration::from_secs(7 * 86400))
                .context("expiry time out of range")?,
            allow_downgrade: false,
            rollout: None,
        };
        let key = spark_release::load_signing_key(&self.pki.release_key())?;
        std::fs::write(out, SignedRelease::sign(manifest, &key)?.to_json())?;
        Ok(())
    }
}

/// A plain bundle of a random root filesystem image (random data: the payload is as large as the
/// image, whatever squashfs's compression tries).
fn build_bundle(pki: &DevPki, mb: u64, out: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    eprintln!("building a bundle with a {mb} MB random image");
    let image = out.with_extension("img");
    let mut data = vec![0u8; usize::try_from(mb * 1_000_000)?];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&image, &data)?;
    drop(data);
    let signer = spark_image::Signer::load(&pki.signer_cert(), &pki.signer_key(), &[])?;
    let built = spark_image::build(
        &spark_image::BuildInput::Rootfs {
            image: image.clone(),
            slot_class: "rootfs".into(),
            compatible: COMPATIBLE.into(),
            version: RELEASE_VERSION.into(),
            description: None,
            build: None,
            format: spark_image::BundleFormat::Plain,
        },
        out,
        &spark_image::BuildOptions {
            signer: &signer,
            compression: spark_image::Compression::default(),
            mtime: None,
            progress: indicatif::ProgressBar::hidden(),
        },
    );
    std::fs::remove_file(&image)?;
    if let Err(e) = built {
        let _ = std::fs::remove_file(out);
        return Err(e).context("building the bench bundle");
    }
    eprintln!("  built in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
