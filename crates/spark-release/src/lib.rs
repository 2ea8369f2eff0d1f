//! Signed release manifests: what the OTA server offers, what the cloud pushes in an
//! `UpdateAvailable` command, and what `spark-updated` checks before it downloads a RAUC bundle.
//!
//! A [`ReleaseManifest`] names one bundle (SHA-256 and size), the `compatible` string of the
//! devices it is for, its semantic [`Version`], where to download it, the lowest installed version
//! it may be installed over, when it was issued and when it expires, an optional signed
//! "downgrade allowed" flag and an optional rollout id. It is signed offline with the Ed25519
//! **release key** (DESIGN.md "Trust and keys"): the OTA server stores only the signature, so a
//! compromised server can neither offer unsigned firmware, nor replay an old release (anti-rollback),
//! nor hold a gateway on a stale one (expiry).
//!
//! # Canonical form
//!
//! The manifest has exactly one byte form; it is what is signed and what travels in the binary
//! protocol. Integers are big-endian, strings are UTF-8 with a length prefix. Every field is
//! always present (optional ones as length 0), in this order:
//!
//! ```text
//!  offset  size   field
//!  0       1      format          0x01 (FORMAT_V1)
//!  1       1      flags           bit 0 = allow_downgrade; bits 1..7 must be 0
//!  2       8      issued_at       u64, seconds since the Unix epoch (UTC)
//!  10      8      expires_at      u64, seconds since the Unix epoch, > issued_at
//!  18      8      bundle_size     u64, bytes
//!  26      32     bundle_sha256   SHA-256 of the whole .raucb file
//!  58      1+n    compatible      u8 length (1..=255) + UTF-8
//!  ..      1+n    version         u8 length (1..=255) + semver text
//!  ..      1+n    min_version     u8 length (0 = none) + semver text
//!  ..      1+n    rollout         u8 length (0 = none) + UTF-8
//!  ..      1      location count  0..=8
//!  ..      2+n    location        u16 length (1..=2048) + UTF-8; `count` times, in order
//! ```
//!
//! Fixed-size fields come first so a reader can check the header before touching any string.
//! Decoding is strict so that every manifest has one encoding, and a decoded manifest re-encodes
//! to the same bytes: unknown format bytes, reserved flag bits, invalid UTF-8, control characters,
//! a version text that is not the canonical rendering of its semver value (`1.2.0`, not `v1.2`),
//! out-of-range timestamps and trailing bytes are all rejected. A new field means a new format
//! byte, never a reinterpretation of an old one.
//!
//! # What is signed
//!
//! ```text
//!  message = "spark-release-v1\0" (17 bytes, SIGNING_CONTEXT) || manifest (canonical form)
//! ```
//!
//! The domain-separation prefix makes a release signature useless as a signature over anything
//! else the release key might ever sign (and vice versa). Verification uses Ed25519
//! `verify_strict`, which refuses weak public keys and malleable signatures.
//!
//! # Wire form of a signed release
//!
//! ```text
//!  manifest (canonical form, self-delimiting) || key_id (8) || signature (64)
//! ```
//!
//! `key_id` is the first 8 bytes of SHA-256 over the 32-byte Ed25519 public key ([`KeyId`]). It
//! is not secret and not trusted: it only selects which of the [`TrustedKeys`] to try, so that a
//! manifest signed by a key the gateway does not know fails as [`ReleaseError::UnknownKey`]
//! rather than as a bad signature, and so that a gateway can trust more than one key while the
//! release key rotates. The whole form is at most [`MAX_SIGNED_LEN`] bytes; a release without
//! download locations is about 150 bytes, the golden vector with two URLs and every optional
//! field 260.
//!
//! For people and the CLI the same signed release is also written as JSON (`*.release.json`,
//! [`SignedRelease::to_json`]): the manifest's fields, the key id and the signature in hex. The
//! signature is checked against the canonical form re-encoded from those fields.
//!
//! # Verification
//!
//! [`SignedRelease::verify`] checks, in this order, and stops at the first failure (each has its
//! own [`ReleaseError`] variant): the key id is trusted, the signature is valid, `compatible`
//! matches, the release is not issued in the future (with [`DEFAULT_CLOCK_SKEW`] tolerance, so a
//! gateway whose clock runs a little behind the signer's still accepts a fresh release), it has
//! not expired (no tolerance: that would only lengthen a replay window), the installed version is
//! not below the minimum, and the offered version is newer than the installed one unless the
//! manifest was signed with `allow_downgrade`. The signature is checked first so that nothing an
//! attacker wrote influences any later decision or message.
//!
//! # Key rotation
//!
//! A gateway trusts a set of release keys (in its read-only rootfs). To rotate: ship a rootfs
//! trusting {old, new} (signed as usual with the old key); once the fleet runs it, sign new
//! releases with the new key; later ship a rootfs trusting only {new}.

mod bundle;
mod error;
mod keys;
mod manifest;
mod signed;
mod timestamp;

pub use bundle::{BundleDigest, BundleMismatch, digest_file, digest_reader};
pub use error::{DecodeError, InvalidManifest, KeyError, ReleaseError};
pub use keys::{
    KeyId, TrustedKeys, load_signing_key, load_verifying_key, signing_key_from_pem,
    verifying_key_from_pem,
};
pub use manifest::{
    FORMAT_V1, MAX_COMPATIBLE_LEN, MAX_LOCATION_LEN, MAX_LOCATIONS, MAX_MANIFEST_LEN,
    MAX_ROLLOUT_LEN, MAX_VERSION_LEN, ReleaseManifest,
};
pub use signed::{
    DEFAULT_CLOCK_SKEW, DEFAULT_VALIDITY, MAX_SIGNED_LEN, Policy, SIGNING_CONTEXT, SignedRelease,
    decode_and_verify,
};
pub use timestamp::{Timestamp, TimestampParseError};

// Re-exported so callers build manifests and keys with the same crate versions we use.
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use semver::Version;
