//! The one TLS client configuration of the daemon, built once at start and shared by every
//! connection: rustls keeps its session-resumption cache in the config, so reusing the same
//! `Arc<ClientConfig>` across reconnects turns most reconnects into abbreviated handshakes
//! (no certificate chain, no signature by the secure element, far fewer bytes on the link).

use std::sync::Arc;

use rustls::ClientConfig;

use crate::config::CloudConfig;

/// The device credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Tls(#[from] spark_tls::TlsError),
    #[cfg(feature = "pkcs11")]
    #[error(transparent)]
    Pkcs11(#[from] spark_tls::pkcs11::Pkcs11Error),
    #[cfg(not(feature = "pkcs11"))]
    #[error(
        "[cloud.pkcs11] is set but this build of spark-uplinkd has no PKCS#11 support (cargo feature pkcs11)"
    )]
    NoPkcs11,
    #[error("config has neither cloud.device-key nor [cloud.pkcs11]")]
    NoKey,
}

/// Builds the client config from the `[cloud]` section: the server CA pinned, the device
/// certificate, and its key from a PEM file or a PKCS#11 token.
pub fn client_config(cloud: &CloudConfig) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let config = match (&cloud.device_key, &cloud.pkcs11) {
        (Some(key), _) => spark_tls::client_config(&cloud.server_ca, &cloud.device_cert, key)?,
        #[cfg(feature = "pkcs11")]
        (None, Some(p)) => {
            use spark_tls::pkcs11::{Pkcs11Key, Pkcs11KeyConfig, read_pin_file};
            let key = Pkcs11Key::open(&Pkcs11KeyConfig {
                module: &p.module,
                token_label: &p.token_label,
                key_label: &p.key_label,
                pin: read_pin_file(&p.pin_file)?,
            })?;
            tracing::info!(token = %p.token_label, key = %p.key_label, "device key in PKCS#11 token");
            spark_tls::client_config_with_key(&cloud.server_ca, &cloud.device_cert, Arc::new(key))?
        }
        #[cfg(not(feature = "pkcs11"))]
        (None, Some(_)) => return Err(TlsSetupError::NoPkcs11),
        (None, None) => return Err(TlsSetupError::NoKey),
    };
    Ok(Arc::new(config))
}
