//! Key pair generation for certificates (ECDSA P-256, RSA) and the Ed25519 release key.
//!
//! Every private key leaves this module as unencrypted PKCS#8 PEM (a "PRIVATE KEY" block), the one
//! format that `rauc bundle --key`, OpenSSL, ring and RustCrypto all read.

use std::fmt;

use ed25519_dalek::pkcs8::spki::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
use rand_core::OsRng;
use rcgen::KeyPair;

use crate::KeysError;

/// The public-key algorithm of a certificate's key pair.
///
/// Both are accepted in RAUC's CMS signatures; Ed25519 is not (rauc 1.8 rejects it), which is why
/// it is not offered here and only used for the separate release key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// ECDSA on NIST P-256 with SHA-256 signatures.
    #[default]
    EcdsaP256,
    /// RSA PKCS#1 v1.5 with SHA-256 signatures; `bits` is 2048, 3072 or 4096.
    Rsa { bits: usize },
}

impl KeyAlgorithm {
    /// RSA with the default modulus size (2048 bits).
    pub const RSA_2048: KeyAlgorithm = KeyAlgorithm::Rsa { bits: 2048 };

    /// Rejects RSA sizes we do not generate, before any (slow) key generation starts.
    pub fn validate(self) -> Result<(), KeysError> {
        match self {
            KeyAlgorithm::EcdsaP256 => Ok(()),
            // ring, which signs the certificates, only takes 2048..=8192-bit moduli; 8192-bit
            // generation in pure Rust takes minutes, so stop at the sizes people actually use.
            KeyAlgorithm::Rsa {
                bits: 2048 | 3072 | 4096,
            } => Ok(()),
            KeyAlgorithm::Rsa { bits } => Err(KeysError::UnsupportedRsaBits { bits }),
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
        }
    }
}

/// Generates a fresh certificate key pair usable as an rcgen signer and subject key.
pub(crate) fn generate(algorithm: KeyAlgorithm) -> Result<KeyPair, KeysError> {
    algorithm.validate()?;
    match algorithm {
        KeyAlgorithm::EcdsaP256 => {
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
                KeysError::GenerateKey {
                    algorithm: "ECDSA P-256",
                    reason: e.to_string(),
                }
            })
        }
        KeyAlgorithm::Rsa { bits } => {
            let rsa_error = |reason: String| KeysError::GenerateKey {
                algorithm: "RSA",
                reason,
            };
            let key =
                rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| rsa_error(e.to_string()))?;
            let der = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
                .map_err(|e| rsa_error(e.to_string()))?;
            // rcgen picks RSA PKCS#1 v1.5 with SHA-256 for a PKCS#8 RSA key, which is what
            // OpenSSL's default verification (and thus RAUC) accepts everywhere.
            KeyPair::try_from(der.as_bytes()).map_err(|e| rsa_error(e.to_string()))
        }
    }
}

/// An Ed25519 key pair for signing release manifests, as PEM text.
pub struct ReleaseKeyPair {
    /// PKCS#8 private key, a PEM "PRIVATE KEY" block.
    pub private_pem: String,
    /// SubjectPublicKeyInfo, "BEGIN PUBLIC KEY".
    pub public_pem: String,
}

/// Generates the Ed25519 release key pair.
pub fn generate_release_key() -> Result<ReleaseKeyPair, KeysError> {
    let error = |reason: String| KeysError::GenerateKey {
        algorithm: "Ed25519",
        reason,
    };
    let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
    // PKCS#8 v1 (private key only): ed25519-dalek's own encoder writes v2 with the public key
    // embedded, which OpenSSL 3.0 refuses to load ("unsupported").
    let keypair_bytes = KeypairBytes {
        secret_key: signing.to_bytes(),
        public_key: None,
    };
    let private_pem = keypair_bytes
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| error(e.to_string()))?;
    let public_pem = signing
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| error(e.to_string()))?;
    Ok(ReleaseKeyPair {
        private_pem: private_pem.to_string(),
        public_pem,
    })
}
