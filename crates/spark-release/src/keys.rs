//! Release keys: loading the PEM files `spark-keys` writes, key ids, and the set of keys a device
//! trusts.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::error::KeyError;

/// Names a release public key: the first 8 bytes of SHA-256 over its 32 raw bytes.
///
/// Eight bytes make an accidental collision between a handful of release keys negligible; the id
/// is only a hint for choosing the key, the signature check is what proves anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    /// 16 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for KeyId {
    type Err = hex::FromHexError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = [0; 8];
        hex::decode_to_slice(s, &mut id)?;
        Ok(KeyId(id))
    }
}

/// The release public keys a verifier accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    // A handful of keys at most (the current one and the next during rotation): a vector beats
    // a map here and keeps insertion order for `ids`.
    keys: Vec<(KeyId, VerifyingKey)>,
}

impl TrustedKeys {
    /// An empty set: trusts nothing.
    pub fn new() -> TrustedKeys {
        TrustedKeys::default()
    }

    /// Trusts `key`; returns its id. Weak (small-order) keys are refused because any signature
    /// may verify under them. Adding a key twice is harmless.
    pub fn insert(&mut self, key: VerifyingKey) -> Result<KeyId, KeyError> {
        let key_id = KeyId::of(&key);
        if key.is_weak() {
            return Err(KeyError::WeakKey { key_id });
        }
        if self.get(key_id).is_none() {
            self.keys.push((key_id, key));
        }
        Ok(key_id)
    }

    /// Loads and trusts a public key PEM file (`release.pub.pem`).
    pub fn load_pem_file(&mut self, path: &Path) -> Result<KeyId, KeyError> {
        self.insert(load_verifying_key(path)?)
    }

    /// The trusted key with this id.
    pub fn get(&self, key_id: KeyId) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find_map(|(id, key)| (*id == key_id).then_some(key))
    }

    /// Ids of all trusted keys, in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Parses an Ed25519 private key from PKCS#8 PEM (v1 as `spark-keys` writes it, or v2).
/// `what` names the source in the error (a path or "key").
pub fn signing_key_from_pem(pem: &str, what: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|source| KeyError::ParsePrivate {
        what: what.to_owned(),
        source,
    })
}

/// Parses an Ed25519 public key from SubjectPublicKeyInfo PEM.
pub fn verifying_key_from_pem(pem: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|source| KeyError::ParsePublic {
        what: what.to_owned(),
        source,
    })
}

/// Loads the release private key (`release.key.pem`).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    signing_key_from_pem(&read(path)?, &path.display().to_string())
}

/// Loads a release public key (`release.pub.pem`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    verifying_key_from_pem(&read(path)?, &path.display().to_string())
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}
