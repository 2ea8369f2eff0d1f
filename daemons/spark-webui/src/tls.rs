//! The listener's certificate: server-auth TLS only (site staff's browsers carry no client
//! certificate).
//!
//! At first start a self-signed ECDSA P-256 certificate is made for this device and kept in
//! `DATA_DIR/tls/` (`cert.pem`, `key.pem` mode 0600), so it stays the same across restarts and
//! updates. Its SHA-256 fingerprint is logged at every start: printed on the device label, it is
//! what staff compare with the browser's certificate warning before they type the password.
//! The config's `[tls]` may point at a provided certificate and key instead.
//!
//! ChaCha20-Poly1305 is preferred whatever the browser's order, as on every listener of the
//! gateway: the BeagleBone's Cortex-A8 has no AES instructions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// The certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Load(#[from] spark_tls::TlsError),
    #[error("cannot generate the device certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot {action} {}: {source}; check that the data directory is writable", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration refused: {0}; check that the key belongs to the certificate")]
    Rustls(#[from] rustls::Error),
}

/// The listener's TLS config and the fingerprint of its certificate.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), as browsers show it: `AB:CD:…`.
    pub fingerprint: String,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
}

/// `AB:CD:…` SHA-256 of a certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Loads the configured certificate, or the device's own (made now if it does not exist yet).
pub fn server_tls(config: &Config) -> Result<ServerTls, TlsSetupError> {
    let (cert_path, key_path) = match &config.tls {
        Some(files) => (files.cert.clone(), files.key.clone()),
        None => ensure_self_signed(&config.data_dir.join("tls"))?,
    };
    let certs = spark_tls::load_certs(&cert_path)?;
    let key = spark_tls::load_key(&key_path)?;
    let fingerprint = fingerprint(&certs[0]);
    let mut provider = rustls::crypto::ring::default_provider();
    // Stable sort: ChaCha20 suites first, the rest in ring's order.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    });
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    server.ignore_client_order = true;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(server),
        fingerprint,
        cert_path,
    })
}

/// `dir/cert.pem` and `dir/key.pem`, generated if either is missing.
fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), TlsSetupError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| TlsSetupError::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let host = hostname();
    let mut names = vec![host.clone(), "localhost".to_owned()];
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Spark gateway {host}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Spark");
    // Validity is what browsers ignore for a self-signed certificate anyway; 1975..4096 (rcgen's
    // default) would only confuse people reading it. Twenty years outlives the hardware.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(20 * 365);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    // Key first: a cert without its key would be "complete" at the next start.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "generated this device's TLS certificate");
    Ok((cert_path, key_path))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsSetupError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| TlsSetupError::Io {
            action,
            path,
            source,
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into", path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))?;
    }
    Ok(())
}

/// The kernel's host name (the device's serial on a gateway), or "spark-gateway".
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spark-gateway".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_keeps_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::with_listen("127.0.0.1:0".parse().unwrap(), dir.path().into());
        let first = server_tls(&config).unwrap();
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("tls/key.pem");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = server_tls(&config).unwrap();
        assert_eq!(again.fingerprint, first.fingerprint);

        // A provided certificate is used as it is.
        let mut provided = config.clone();
        provided.data_dir = dir.path().join("elsewhere");
        provided.tls = Some(crate::config::TlsFiles {
            cert: dir.path().join("tls/cert.pem"),
            key,
        });
        assert_eq!(
            server_tls(&provided).unwrap().fingerprint,
            first.fingerprint
        );
        assert!(!dir.path().join("elsewhere").exists());
    }
}
