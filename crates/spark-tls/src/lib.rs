//! The one place Spark sets up TLS: every link (gateway → ingest, agent → OTA server, OTA server →
//! ingest's push API) is rustls with **mutual** authentication and **pinned** CAs, so the code that
//! decides what to trust exists once.
//!
//! - [`server_config`] (and [`gateway_server_config`], which picks ChaCha20-Poly1305 for the
//!   gateways' AES-less CPUs): a server certificate chain and key, and a client CA every peer must chain
//!   to. Unknown issuers, expired or not-yet-valid client certificates, and missing client
//!   certificates all fail inside the handshake (rustls' webpki verifier), before a byte of
//!   application data is read.
//! - [`client_config`] / [`client_config_with_key`]: only the given server CA is trusted (never the
//!   system roots: a gateway must not accept a certificate some public CA issued for our name),
//!   and the client presents its own certificate, with its key from a PEM file or from a
//!   [`rustls::sign::SigningKey`] such as a PKCS#11 token. TLS session resumption stays on (rustls'
//!   in-memory cache), so keeping one `Arc<ClientConfig>` across reconnects saves a full handshake
//!   on a metered link.
//! - [`PeerIdentity`]: who the peer is, from its verified certificate. The cloud identifies a
//!   gateway by its certificate's common name (the serial) and nothing else.
//!
//! - [`ServerStream`]: a server connection over rustls' unbuffered API that holds no buffer
//!   while idle (spark-ingest's thousands of mostly silent gateway connections).
//!
//! The crypto provider is ring, as everywhere in Spark ([`provider`]).

#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod server_stream;

pub use server_stream::ServerStream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SigningKey};

/// Why TLS could not be set up, or a peer's identity not read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {}: {reason}; check the path in the config", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, say).
    #[error("TLS configuration refused: {0}; check that the key belongs to the certificate")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    #[error("cannot verify clients against {}: {reason}", path.display())]
    ClientVerifier { path: PathBuf, reason: String },
    /// The peer presented no certificate (only possible on a connection without client auth).
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    /// The peer's certificate does not parse as X.509 or has no usable common name.
    #[error("peer certificate unusable: {0}")]
    BadPeerCertificate(String),
}

fn pem_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The crypto provider of every Spark endpoint (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates in a PEM file, in order (leaf first for a chain). An empty file is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificates", path, e))?;
    if certs.is_empty() {
        return Err(pem_error("certificates", path, "no certificate in file"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", path, e))
}

/// A root store holding exactly the CA certificates in `path`.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(path)? {
        roots
            .add(ca)
            .map_err(|e| pem_error("CA certificate", path, e))?;
    }
    Ok(roots)
}

/// A server that demands a client certificate chaining to `client_ca`.
pub fn server_config(
    cert_chain: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with(cert_chain, key, client_ca, provider())
}

/// [`server_config`] for the endpoint gateways keep connected (spark-ingest's telemetry port):
/// ChaCha20-Poly1305 is chosen whenever the gateway offers it, whatever the gateway's order.
///
/// Why: the BeagleBone's Cortex-A8 has no AES instructions, so ChaCha20-Poly1305 is the
/// faster cipher on the gateway (software AES-GCM there is bit-sliced NEON, several times
/// slower per byte), and the gateway's CPU and battery are the scarce ones; the cloud has AES
/// instructions and cycles to spare. Both are TLS 1.3 AEADs of the same strength.
pub fn gateway_server_config(
    cert_chain: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<rustls::ServerConfig, TlsError> {
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
    let mut config = server_config_with(cert_chain, key, client_ca, Arc::new(provider))?;
    config.ignore_client_order = true;
    Ok(config)
}

fn server_config_with(
    cert_chain: &Path,
    key: &Path,
    client_ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let roots = Arc::new(load_roots(client_ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TlsError::ClientVerifier {
            path: client_ca.to_owned(),
            reason: e.to_string(),
        })?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert_chain)?, load_key(key)?)?;
    Ok(config)
}

/// A client trusting only `server_ca` and presenting `client_cert` with the key in `client_key`.
pub fn client_config(
    server_ca: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(server_ca)?)
        .with_client_auth_cert(load_certs(client_cert)?, load_key(client_key)?)?;
    Ok(config)
}

/// A client trusting only `server_ca` and presenting `client_cert`, signing with `key` (a key that
/// never leaves a token, for instance).
pub fn client_config_with_key(
    server_ca: &Path,
    client_cert: &Path,
    key: Arc<dyn SigningKey>,
) -> Result<rustls::ClientConfig, TlsError> {
    let certified = Arc::new(CertifiedKey::new(load_certs(client_cert)?, key));
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(load_roots(server_ca)?)
        .with_client_cert_resolver(Arc::new(FixedClientKey(certified)));
    Ok(config)
}

/// Always offers the same certificate and key (rustls' own single-cert resolver needs the private
/// key bytes, which a token never gives out).
#[derive(Debug)]
struct FixedClientKey(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedClientKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Offer the key only when the server accepts one of its schemes; otherwise rustls sends
        // no certificate and the server's refusal says why.
        self.0.key.choose_scheme(sigschemes)?;
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Who a peer is, read from its (already verified) end-entity certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name: a gateway's serial number, or a cloud service's name.
    pub common_name: String,
    /// The certificate serial number, lower-case hex.
    pub serial_hex: String,
    /// End of validity, unix seconds.
    pub not_after: u64,
}

impl PeerIdentity {
    /// Reads the identity from a DER certificate.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, TlsError> {
        use der::Decode;
        let cert = x509_cert::Certificate::from_der(cert.as_ref())
            .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let mut common_name = None;
        for rdn in tbs.subject.0.iter() {
            for atv in rdn.0.iter() {
                if atv.oid == const_oid::db::rfc4519::CN {
                    common_name = Some(directory_string(&atv.value)?);
                }
            }
        }
        let common_name = common_name
            .filter(|cn| !cn.is_empty())
            .ok_or_else(|| TlsError::BadPeerCertificate("no common name in subject".into()))?;
        Ok(Self {
            common_name,
            serial_hex: hex_lower(tbs.serial_number.as_bytes()),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
        })
    }

    /// The identity of the client on a server connection whose handshake is done (a
    /// `rustls::ServerConnection`, or a [`ServerStream`]'s [`ServerStream::common_state`]).
    pub fn of_server_connection(conn: &rustls::CommonState) -> Result<Self, TlsError> {
        let leaf = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or(TlsError::NoPeerCertificate)?;
        Self::from_certificate(leaf)
    }
}

/// A DirectoryString attribute value as text (UTF8String, PrintableString or IA5String).
fn directory_string(value: &der::Any) -> Result<String, TlsError> {
    use der::{Tag, Tagged};
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            String::from_utf8(value.value().to_vec())
                .map_err(|_| TlsError::BadPeerCertificate("common name is not UTF-8".into()))
        }
        other => Err(TlsError::BadPeerCertificate(format!(
            "common name has unsupported type {other}"
        ))),
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let err = load_certs(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
