//! A manifest with its Ed25519 signature: signing, the wire and JSON forms, and verification
//! against trusted keys and the device's policy.

use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey};
use semver::Version;

use crate::error::{DecodeError, InvalidManifest, ReleaseError};
use crate::keys::{KeyId, TrustedKeys};
use crate::manifest::{MAX_MANIFEST_LEN, Reader, ReleaseManifest};
use crate::timestamp::Timestamp;

/// Domain-separation prefix of every signed message (see the crate docs).
pub const SIGNING_CONTEXT: &[u8; 17] = b"spark-release-v1\0";
/// Longest wire form of a signed release: the longest manifest, key id and signature.
pub const MAX_SIGNED_LEN: usize = MAX_MANIFEST_LEN + KEY_ID_LEN + SIGNATURE_LEN;
/// How far in the future `issued_at` may be before a release is "not yet valid": five minutes,
/// more than an NTP-synced gateway drifts between syncs and far less than any release's life.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// How long a release manifest is valid when its signer does not say: 30 days. `spark-keys
/// sign-release`'s `--expires-in` default, and the validity of what a dev-mode OTA server signs.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 86_400);

const KEY_ID_LEN: usize = 8;
const SIGNATURE_LEN: usize = 64;

/// A release manifest, signed. Built by [`SignedRelease::sign`] or decoded from the wire or JSON
/// form; either way it holds a manifest that passed [`ReleaseManifest::validate`] and the exact
/// canonical bytes the signature covers. Decoding does **not** check the signature: call
/// [`verify`](Self::verify) before trusting anything in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRelease {
    manifest: ReleaseManifest,
    canonical: Vec<u8>,
    key_id: KeyId,
    signature: [u8; SIGNATURE_LEN],
}

impl SignedRelease {
    /// Signs `manifest` with the release key. Ed25519 signatures are deterministic, so the same
    /// manifest and key always give the same bytes.
    pub fn sign(
        manifest: ReleaseManifest,
        key: &SigningKey,
    ) -> Result<SignedRelease, InvalidManifest> {
        let canonical = manifest.to_canonical_bytes()?;
        let signature = key.sign(&signed_message(&canonical)).to_bytes();
        Ok(SignedRelease {
            manifest,
            canonical,
            key_id: KeyId::of(&key.verifying_key()),
            signature,
        })
    }

    /// The manifest as decoded or signed. Nothing in it is trustworthy until
    /// [`verify`](Self::verify) has returned `Ok` for this release.
    pub fn manifest(&self) -> &ReleaseManifest {
        &self.manifest
    }

    /// The manifest's canonical bytes, exactly as signed.
    pub fn canonical_manifest(&self) -> &[u8] {
        &self.canonical
    }

    /// Id of the key that (claims to have) signed it.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The Ed25519 signature over `SIGNING_CONTEXT || canonical manifest`.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// Consumes the release, returning the manifest.
    pub fn into_manifest(self) -> ReleaseManifest {
        self.manifest
    }

    /// The compact wire form: `manifest || key_id || signature`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.canonical.len() + KEY_ID_LEN + SIGNATURE_LEN);
        out.extend_from_slice(&self.canonical);
        out.extend_from_slice(&self.key_id.0);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the wire form. Rejects anything longer than [`MAX_SIGNED_LEN`] before parsing,
    /// and any byte after the signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<SignedRelease, DecodeError> {
        if bytes.len() > MAX_SIGNED_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_SIGNED_LEN,
            });
        }
        let mut reader = Reader { bytes, pos: 0 };
        let manifest = ReleaseManifest::decode(&mut reader)?;
        let canonical = bytes[..reader.pos].to_vec();
        let key_id = KeyId(reader.array("key_id")?);
        let signature = reader.array("signature")?;
        let rest = bytes.len() - reader.pos;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes { count: rest });
        }
        Ok(SignedRelease {
            manifest,
            canonical,
            key_id,
            signature,
        })
    }

    /// The JSON file form (`*.release.json`), pretty-printed with a final newline. Deterministic:
    /// the same release always gives the same text.
    pub fn to_json(&self) -> String {
        let form = JsonForm {
            format: JsonFormat::V1,
            manifest: self.manifest.clone(),
            key_id: self.key_id.0,
            signature: self.signature,
        };
        // Serialising plain strings, numbers and booleans into a String cannot fail.
        let mut text = serde_json::to_string_pretty(&form).expect("release JSON serialises");
        text.push('\n');
        text
    }

    /// Parses the JSON file form and re-encodes the manifest to its canonical bytes (which the
    /// signature must cover).
    pub fn from_json(text: &str) -> Result<SignedRelease, DecodeError> {
        let form: JsonForm = serde_json::from_str(text).map_err(DecodeError::Json)?;
        let canonical = form.manifest.to_canonical_bytes()?;
        Ok(SignedRelease {
            manifest: form.manifest,
            canonical,
            key_id: KeyId(form.key_id),
            signature: form.signature,
        })
    }

    /// Decodes either form: JSON when the first non-blank byte is `{`, else the wire form (which
    /// starts with a format byte, never `{`).
    pub fn parse(bytes: &[u8]) -> Result<SignedRelease, DecodeError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {
                let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::Utf8 {
                    field: "release JSON",
                })?;
                Self::from_json(text)
            }
            _ => Self::from_bytes(bytes),
        }
    }

    /// Checks the signature only: the key id is trusted and the signature is valid.
    pub fn verify_signature(&self, keys: &TrustedKeys) -> Result<&ReleaseManifest, ReleaseError> {
        let key = keys.get(self.key_id).ok_or(ReleaseError::UnknownKey {
            key_id: self.key_id,
        })?;
        // Strict verification: refuses non-canonical signatures (no malleability, so one
        // manifest has exactly one valid signature per key) and small-order keys.
        key.verify_strict(
            &signed_message(&self.canonical),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| ReleaseError::BadSignature {
            key_id: self.key_id,
        })?;
        Ok(&self.manifest)
    }

    /// Checks the signature, then the policy (see the crate docs for the order). Returns the
    /// manifest only when it may be installed.
    pub fn verify(
        &self,
        keys: &TrustedKeys,
        policy: &Policy,
    ) -> Result<&ReleaseManifest, ReleaseError> {
        let manifest = self.verify_signature(keys)?;
        policy.check(manifest)?;
        Ok(manifest)
    }
}

/// Decodes the wire form and verifies it; what a gateway does with an `UpdateAvailable` payload.
pub fn decode_and_verify(
    bytes: &[u8],
    keys: &TrustedKeys,
    policy: &Policy,
) -> Result<ReleaseManifest, ReleaseError> {
    let release = SignedRelease::from_bytes(bytes)?;
    release.verify(keys, policy)?;
    Ok(release.into_manifest())
}

/// The message the release key signs.
fn signed_message(canonical: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + canonical.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(canonical);
    message
}

/// What a device knows about itself when it judges a release.
///
/// `compatible` and `installed_version` are optional so that tools (the OTA server on upload,
/// `spark-keys verify-release`) can check what they know; a gateway always sets both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The current time. A gateway without a trusted time (RTC reset, no NTP yet) will see every
    /// release as not yet valid, which is the safe failure.
    pub now: Timestamp,
    /// The device's RAUC `compatible`; `None` skips the check.
    pub compatible: Option<String>,
    /// The version of the running slot; `None` skips the minimum and anti-rollback checks.
    pub installed_version: Option<Version>,
    /// How far `issued_at` may lie in the future ([`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: Duration,
}

impl Policy {
    /// A policy at `now` with the default clock skew that checks neither compatible nor versions.
    pub fn new(now: Timestamp) -> Policy {
        Policy {
            now,
            compatible: None,
            installed_version: None,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }

    /// Also require this compatible.
    pub fn with_compatible(mut self, compatible: impl Into<String>) -> Policy {
        self.compatible = Some(compatible.into());
        self
    }

    /// Also apply the minimum-version and anti-rollback checks against this installed version.
    pub fn with_installed_version(mut self, installed: Version) -> Policy {
        self.installed_version = Some(installed);
        self
    }

    /// Checks a manifest whose signature was already verified.
    ///
    /// Versions compare by semver precedence, so build metadata (`1.2.0+git.abc`) neither makes
    /// a release newer nor older.
    pub fn check(&self, manifest: &ReleaseManifest) -> Result<(), ReleaseError> {
        if let Some(expected) = &self.compatible
            && *expected != manifest.compatible
        {
            return Err(ReleaseError::WrongCompatible {
                expected: expected.clone(),
                found: manifest.compatible.clone(),
            });
        }
        let latest_accepted = self
            .now
            .checked_add(self.clock_skew)
            .unwrap_or(Timestamp::MAX);
        if manifest.issued_at > latest_accepted {
            return Err(ReleaseError::NotYetValid {
                issued_at: manifest.issued_at,
                now: self.now,
            });
        }
        if self.now >= manifest.expires_at {
            return Err(ReleaseError::Expired {
                expires_at: manifest.expires_at,
                now: self.now,
            });
        }
        if let Some(installed) = &self.installed_version {
            if let Some(minimum) = &manifest.min_version
                && installed.cmp_precedence(minimum).is_lt()
            {
                return Err(ReleaseError::BelowMinimum {
                    installed: installed.clone(),
                    minimum: minimum.clone(),
                });
            }
            if !manifest.allow_downgrade && manifest.version.cmp_precedence(installed).is_le() {
                return Err(ReleaseError::NotNewer {
                    offered: manifest.version.clone(),
                    installed: installed.clone(),
                });
            }
        }
        Ok(())
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonForm {
    format: JsonFormat,
    manifest: ReleaseManifest,
    #[serde(serialize_with = "hex_bytes", deserialize_with = "hex_array")]
    key_id: [u8; KEY_ID_LEN],
    #[serde(serialize_with = "hex_bytes", deserialize_with = "hex_array")]
    signature: [u8; SIGNATURE_LEN],
}

/// The `format` field: names the canonical form the signature covers.
#[derive(serde::Serialize, serde::Deserialize)]
enum JsonFormat {
    #[serde(rename = "spark-release-v1")]
    V1,
}

fn hex_bytes<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// Serde helper: exactly `N` bytes as `2N` hex digits.
pub(crate) fn hex_array<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    let mut out = [0; N];
    hex::decode_to_slice(text.as_bytes(), &mut out)
        .map_err(|e| serde::de::Error::custom(format!("expected {} hex digits: {e}", 2 * N)))?;
    Ok(out)
}
