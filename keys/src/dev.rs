//! The development PKI: one directory holding every key Spark needs, in a fixed layout that
//! other crates' tests rely on.
//!
//! ```text
//! DIR/
//!   .gitignore                          "*": the directory never enters git
//!   firmware-ca.cert.pem                firmware root CA            (in RAUC's keyring)
//!   firmware-ca.key.pem
//!   firmware-intermediate.cert.pem      only with --intermediate; then it issues the signer
//!   firmware-intermediate.key.pem
//!   bundle-signer.cert.pem              RAUC bundle signer (EKU codeSigning + emailProtection)
//!   bundle-signer.key.pem
//!   keyring.pem                         = firmware root CA, for RAUC's `[keyring] path=`
//!   release.key.pem  release.pub.pem    Ed25519 release manifest key (PKCS#8 / SPKI)
//!   device-ca.cert.pem  device-ca.key.pem
//!   server-ca.cert.pem  server-ca.key.pem
//!   server.cert.pem     server.key.pem  TLS server (SANs from --server-name)
//!   devices/<SERIAL>.cert.pem  devices/<SERIAL>.key.pem
//! ```

use std::path::{Path, PathBuf};

use crate::ca::CertificateAuthority;
use crate::files::{self, Output};
use crate::key::{self, KeyAlgorithm};
use crate::{KeysError, LeafProfile, SERVER_VALIDITY};

/// File names inside a dev PKI directory.
pub mod layout {
    pub const FIRMWARE_CA_CERT: &str = "firmware-ca.cert.pem";
    pub const FIRMWARE_CA_KEY: &str = "firmware-ca.key.pem";
    pub const INTERMEDIATE_CERT: &str = "firmware-intermediate.cert.pem";
    pub const INTERMEDIATE_KEY: &str = "firmware-intermediate.key.pem";
    pub const SIGNER_CERT: &str = "bundle-signer.cert.pem";
    pub const SIGNER_KEY: &str = "bundle-signer.key.pem";
    pub const KEYRING: &str = "keyring.pem";
    pub const RELEASE_KEY: &str = "release.key.pem";
    pub const RELEASE_PUB: &str = "release.pub.pem";
    pub const DEVICE_CA_CERT: &str = "device-ca.cert.pem";
    pub const DEVICE_CA_KEY: &str = "device-ca.key.pem";
    pub const SERVER_CA_CERT: &str = "server-ca.cert.pem";
    pub const SERVER_CA_KEY: &str = "server-ca.key.pem";
    pub const SERVER_CERT: &str = "server.cert.pem";
    pub const SERVER_KEY: &str = "server.key.pem";
    pub const DEVICES_DIR: &str = "devices";
    pub const SERVICES_DIR: &str = "services";
    pub const GITIGNORE: &str = ".gitignore";
}

/// Common names of the development certificates.
const FIRMWARE_CA_CN: &str = "Spark Dev Firmware Root CA";
const INTERMEDIATE_CN: &str = "Spark Dev Firmware Intermediate CA";
const SIGNER_CN: &str = "Spark Dev Bundle Signer";
const DEVICE_CA_CN: &str = "Spark Dev Device CA";
const SERVER_CA_CN: &str = "Spark Dev Server CA";

/// How `init_dev` builds the PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiOptions {
    /// Algorithm of the firmware CA chain and bundle signer. Device and server PKIs are always
    /// ECDSA P-256.
    pub algorithm: KeyAlgorithm,
    /// Put a firmware intermediate CA between the root and the bundle signer.
    pub intermediate: bool,
    /// DNS names and IP addresses of the server certificate.
    pub server_names: Vec<String>,
    /// Replace existing files instead of refusing.
    pub force: bool,
}

impl Default for DevPkiOptions {
    fn default() -> Self {
        DevPkiOptions {
            algorithm: KeyAlgorithm::EcdsaP256,
            intermediate: false,
            server_names: vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            force: false,
        }
    }
}

/// A development PKI directory; the methods return the paths of its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    pub dir: PathBuf,
    intermediate: bool,
}

impl DevPki {
    /// Opens an existing dev PKI made by [`init_dev`]; whether it has an intermediate is read
    /// from the directory.
    pub fn open(dir: &Path) -> Result<DevPki, KeysError> {
        let cert = dir.join(layout::FIRMWARE_CA_CERT);
        if !cert.is_file() {
            return Err(KeysError::Read {
                path: cert,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        Ok(DevPki {
            dir: dir.to_owned(),
            intermediate: dir.join(layout::INTERMEDIATE_CERT).is_file(),
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn firmware_ca_cert(&self) -> PathBuf {
        self.path(layout::FIRMWARE_CA_CERT)
    }
    pub fn firmware_ca_key(&self) -> PathBuf {
        self.path(layout::FIRMWARE_CA_KEY)
    }
    /// The intermediate CA certificate, if this PKI has one (pass it to `rauc bundle --intermediate`).
    pub fn intermediate_cert(&self) -> Option<PathBuf> {
        self.intermediate
            .then(|| self.path(layout::INTERMEDIATE_CERT))
    }
    pub fn intermediate_key(&self) -> Option<PathBuf> {
        self.intermediate
            .then(|| self.path(layout::INTERMEDIATE_KEY))
    }
    pub fn signer_cert(&self) -> PathBuf {
        self.path(layout::SIGNER_CERT)
    }
    pub fn signer_key(&self) -> PathBuf {
        self.path(layout::SIGNER_KEY)
    }
    /// The CA that issues bundle signers: the intermediate if there is one, else the root.
    pub fn signer_issuer(&self) -> Result<CertificateAuthority, KeysError> {
        match (self.intermediate_cert(), self.intermediate_key()) {
            (Some(cert), Some(key)) => CertificateAuthority::load(&cert, &key),
            _ => CertificateAuthority::load(&self.firmware_ca_cert(), &self.firmware_ca_key()),
        }
    }
    pub fn keyring(&self) -> PathBuf {
        self.path(layout::KEYRING)
    }
    pub fn release_key(&self) -> PathBuf {
        self.path(layout::RELEASE_KEY)
    }
    pub fn release_pub(&self) -> PathBuf {
        self.path(layout::RELEASE_PUB)
    }
    pub fn device_ca_cert(&self) -> PathBuf {
        self.path(layout::DEVICE_CA_CERT)
    }
    pub fn device_ca_key(&self) -> PathBuf {
        self.path(layout::DEVICE_CA_KEY)
    }
    pub fn server_ca_cert(&self) -> PathBuf {
        self.path(layout::SERVER_CA_CERT)
    }
    pub fn server_ca_key(&self) -> PathBuf {
        self.path(layout::SERVER_CA_KEY)
    }
    pub fn server_cert(&self) -> PathBuf {
        self.path(layout::SERVER_CERT)
    }
    pub fn server_key(&self) -> PathBuf {
        self.path(layout::SERVER_KEY)
    }
    pub fn devices_dir(&self) -> PathBuf {
        self.path(layout::DEVICES_DIR)
    }
    pub fn device_cert(&self, serial: &str) -> PathBuf {
        self.devices_dir().join(format!("{serial}.cert.pem"))
    }
    pub fn device_key(&self, serial: &str) -> PathBuf {
        self.devices_dir().join(format!("{serial}.key.pem"))
    }
    pub fn services_dir(&self) -> PathBuf {
        self.path(layout::SERVICES_DIR)
    }
    /// Client certificate of a cloud service (CN = `name`) issued by [`issue_service`].
    pub fn service_cert(&self, name: &str) -> PathBuf {
        self.services_dir().join(format!("{name}.cert.pem"))
    }
    pub fn service_key(&self, name: &str) -> PathBuf {
        self.services_dir().join(format!("{name}.key.pem"))
    }
}

/// Creates a complete development PKI in `dir` (created if missing).
///
/// Everything is generated in memory first and existing files are checked before the first
/// write, so a refused or failed run leaves the directory as it was.
pub fn init_dev(dir: &Path, opts: &DevPkiOptions) -> Result<DevPki, KeysError> {
    opts.algorithm.validate()?;
    if opts.server_names.is_empty() {
        return Err(KeysError::NoServerNames);
    }
    let server_profile = LeafProfile::server(&opts.server_names);
    for name in &server_profile.dns_names {
        if !is_dns_name(name) {
            return Err(KeysError::InvalidServerName { name: name.clone() });
        }
    }

    let pki = DevPki {
        dir: dir.to_owned(),
        intermediate: opts.intermediate,
    };
    let intermediate_paths = [
        pki.path(layout::INTERMEDIATE_CERT),
        pki.path(layout::INTERMEDIATE_KEY),
    ];
    // Check before the slow part (RSA generation) so a refusal is immediate. Stale intermediate
    // files count too: they would not match the new root.
    let all_paths = [
        pki.firmware_ca_cert(),
        pki.firmware_ca_key(),
        pki.signer_cert(),
        pki.signer_key(),
        pki.keyring(),
        pki.release_key(),
        pki.release_pub(),
        pki.device_ca_cert(),
        pki.device_ca_key(),
        pki.server_ca_cert(),
        pki.server_ca_key(),
        pki.server_cert(),
        pki.server_key(),
    ];
    files::ensure_absent(
        all_paths
            .iter()
            .chain(&intermediate_paths)
            .map(PathBuf::as_path),
        opts.force,
    )?;

    tracing::info!(algorithm = %opts.algorithm, intermediate = opts.intermediate, "generating firmware CA");
    let firmware_ca = CertificateAuthority::generate_root(FIRMWARE_CA_CN, opts.algorithm)?;
    let intermediate = if opts.intermediate {
        Some(firmware_ca.issue_intermediate(INTERMEDIATE_CN, opts.algorithm)?)
    } else {
        None
    };
    let signer_profile = LeafProfile {
        algorithm: opts.algorithm,
        ..LeafProfile::bundle_signer(SIGNER_CN)
    };
    let signer = intermediate
        .as_ref()
        .unwrap_or(&firmware_ca)
        .issue(&signer_profile)?;
    let release = key::generate_release_key()?;
    tracing::info!("generating device and server CAs");
    let device_ca = CertificateAuthority::generate_root(DEVICE_CA_CN, KeyAlgorithm::EcdsaP256)?;
    let server_ca = CertificateAuthority::generate_root(SERVER_CA_CN, KeyAlgorithm::EcdsaP256)?;
    let server = server_ca.issue(&server_profile)?;

    let mut outputs = Vec::new();
    outputs.extend(firmware_ca.outputs(&pki.firmware_ca_cert(), &pki.firmware_ca_key()));
    if let Some(intermediate) = &intermediate {
        outputs.extend(intermediate.outputs(&intermediate_paths[0], &intermediate_paths[1]));
    }
    outputs.push(Output::public(pki.signer_cert(), signer.cert_pem.clone()));
    outputs.push(Output::secret(pki.signer_key(), signer.key_pem.clone()));
    outputs.push(Output::public(pki.keyring(), firmware_ca.cert_pem()));
    outputs.push(Output::secret(pki.release_key(), release.private_pem));
    outputs.push(Output::public(pki.release_pub(), release.public_pem));
    outputs.extend(device_ca.outputs(&pki.device_ca_cert(), &pki.device_ca_key()));
    outputs.extend(server_ca.outputs(&pki.server_ca_cert(), &pki.server_ca_key()));
    outputs.push(Output::public(pki.server_cert(), server.cert_pem.clone()));
    outputs.push(Output::secret(pki.server_key(), server.key_pem.clone()));
    outputs.push(Output::public(
        pki.path(layout::GITIGNORE),
        "# Development PKI written by spark-keys: private keys never enter git.\n*\n",
    ));

    files::create_dir(dir)?;
    // ensure_absent above already enforced `force`; the .gitignore may be replaced freely.
    files::write_all(&outputs, true)?;
    if !opts.intermediate {
        // Only reachable with `force` (otherwise ensure_absent refused): drop the old
        // intermediate so `DevPki::open` does not pair it with the new root.
        for path in &intermediate_paths {
            match std::fs::remove_file(path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed stale intermediate"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(KeysError::Write {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
    }
    Ok(pki)
}

/// Issues a device certificate (CN = `serial`, ECDSA P-256, EKU clientAuth) from the dev PKI's
/// device CA into `dir/devices/`. Returns the certificate and key paths.
pub fn issue_device(
    dir: &Path,
    serial: &str,
    force: bool,
) -> Result<(PathBuf, PathBuf), KeysError> {
    validate_serial(serial)?;
    let pki = DevPki {
        dir: dir.to_owned(),
        intermediate: false,
    };
    let (cert, key) = (pki.device_cert(serial), pki.device_key(serial));
    files::ensure_absent([cert.as_path(), key.as_path()], force)?;
    let device_ca = CertificateAuthority::load(&pki.device_ca_cert(), &pki.device_ca_key())?;
    let issued = device_ca.issue(&LeafProfile::device(serial))?;
    files::create_dir(&pki.devices_dir())?;
    issued.write(&cert, &key, force)?;
    Ok((cert, key))
}

/// Issues a mutual-TLS client certificate for a cloud service (CN = `name`, e.g. `spark-ota`)
/// from the dev PKI's **server** CA into `DIR/services/`. Cloud services call each other's
/// internal APIs with it (spark-ota → spark-ingest's push channel); it comes from the server CA,
/// not the device CA, so a gateway's certificate can never pass for a service.
pub fn issue_service(dir: &Path, name: &str, force: bool) -> Result<(PathBuf, PathBuf), KeysError> {
    validate_serial(name)?;
    let pki = DevPki {
        dir: dir.to_owned(),
        intermediate: false,
    };
    let (cert, key) = (pki.service_cert(name), pki.service_key(name));
    files::ensure_absent([cert.as_path(), key.as_path()], force)?;
    let server_ca = CertificateAuthority::load(&pki.server_ca_cert(), &pki.server_ca_key())?;
    // A client leaf like a device's (EKU clientAuth), with the server CA's validity rules.
    let profile = LeafProfile {
        not_after: time::OffsetDateTime::now_utc() + SERVER_VALIDITY,
        ..LeafProfile::device(name)
    };
    let issued = server_ca.issue(&profile)?;
    files::create_dir(&pki.services_dir())?;
    issued.write(&cert, &key, force)?;
    Ok((cert, key))
}

/// A serial becomes both a certificate CN (at most 64 characters, RFC 5280 ub-common-name) and
/// a file name, so it is limited to characters that are safe in both.
fn validate_serial(serial: &str) -> Result<(), KeysError> {
    let valid = !serial.is_empty()
        && serial.len() <= 64
        && !serial.starts_with('.')
        && serial
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(KeysError::InvalidSerial {
            serial: serial.to_owned(),
        })
    }
}

/// Letters, digits, hyphens and dots, labels of 1..=63 characters, an optional leading `*.`
/// wildcard: enough to catch typos like a URL or a port passed as a server name.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials() {
        assert!(validate_serial("GW-2024.000123_a").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "with space", &"x".repeat(65)] {
            assert!(validate_serial(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("ota.example.com"));
        assert!(is_dns_name("*.example.com"));
        for bad in ["", "https://x", "host:443", "-a.b", "a..b"] {
            assert!(!is_dns_name(bad), "{bad:?} accepted");
        }
    }
}
