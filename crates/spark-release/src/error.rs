//! Errors of `spark-release`, one type per operation: building a manifest ([`InvalidManifest`]),
//! decoding one ([`DecodeError`]), loading keys ([`KeyError`]) and verifying a release
//! ([`ReleaseError`]). Messages end with what to do next.

use std::io;
use std::path::PathBuf;

use semver::Version;

use crate::keys::KeyId;
use crate::timestamp::Timestamp;

/// A manifest whose fields break a rule of the canonical form; found when it is signed,
/// encoded, or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidManifest {
    /// A required text field is empty, or an optional one is present but empty.
    #[error("{field} is empty: give a non-empty value (leave an optional field out instead)")]
    EmptyField { field: &'static str },

    /// A text field is longer than the canonical form allows.
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },

    /// A text field contains a control character (or whitespace, in a location).
    #[error(
        "{field} contains a control or whitespace character: release fields are single-line text"
    )]
    BadCharacter { field: &'static str },

    /// More download locations than the canonical form holds.
    #[error("{count} download locations given; at most {max} are allowed")]
    TooManyLocations { count: usize, max: usize },

    /// The validity window is empty or inverted.
    #[error("expires_at {expires_at} is not after issued_at {issued_at}: choose a later expiry")]
    ExpiresNotAfterIssued {
        issued_at: Timestamp,
        expires_at: Timestamp,
    },

    /// The minimum installed version is above the release's own version, so no device could
    /// ever install it (it would always be "not newer"); usually swapped arguments.
    #[error(
        "minimum version {min_version} is above the release version {version}: \
         no device could install it; check --min-version and --version"
    )]
    MinimumAboveVersion {
        version: Version,
        min_version: Version,
    },
}

/// Why bytes (or JSON text) are not a well-formed signed release or canonical manifest.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Longer than any valid encoding; rejected before parsing.
    #[error("release is {len} bytes long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },

    /// The input ends inside a field.
    #[error("release is truncated: {field} at byte {offset} needs {needed} more bytes")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
    },

    /// The format byte is not one this version of Spark reads.
    #[error(
        "unsupported release format 0x{found:02x} (this build reads 0x01): update the reader or re-sign in format 1"
    )]
    UnsupportedFormat { found: u8 },

    /// Reserved flag bits are set.
    #[error("reserved release flag bits set (flags 0x{flags:02x})")]
    ReservedFlags { flags: u8 },

    /// A timestamp outside 1970..=9999.
    #[error("{field} {value} is out of range (seconds since 1970, at most year 9999)")]
    TimestampOutOfRange { field: &'static str, value: u64 },

    /// A text field is not UTF-8.
    #[error("{field} is not valid UTF-8")]
    Utf8 { field: &'static str },

    /// A version field is not a semantic version.
    #[error("{field} {value:?} is not a semantic version (like 1.4.2)")]
    Version {
        field: &'static str,
        value: String,
        #[source]
        source: semver::Error,
    },

    /// A version field is semver but not written the one canonical way.
    #[error("{field} {value:?} is not written canonically (expected {canonical:?})")]
    NonCanonicalVersion {
        field: &'static str,
        value: String,
        canonical: String,
    },

    /// Bytes left after a complete signed release.
    #[error("{count} unexpected bytes after the signature")]
    TrailingBytes { count: usize },

    /// The fields decode but break a rule of the manifest.
    #[error("invalid manifest")]
    Invalid(#[from] InvalidManifest),

    /// The JSON file form does not parse (syntax, a missing or unknown field, bad hex).
    #[error("release JSON does not parse: expected a file written by `spark-keys sign-release`")]
    Json(#[source] serde_json::Error),
}

/// A release key file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be read.
    #[error("cannot read release key {}: check the path (a dev PKI has release.key.pem and release.pub.pem)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The text is not an Ed25519 private key in PKCS#8 PEM.
    #[error(
        "{what} is not an Ed25519 private key: expected a PKCS#8 PEM \"PRIVATE KEY\" block such as release.key.pem from `spark-keys init --dev`"
    )]
    ParsePrivate {
        what: String,
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },

    /// The text is not an Ed25519 public key in SubjectPublicKeyInfo PEM.
    #[error(
        "{what} is not an Ed25519 public key: expected SPKI PEM (\"BEGIN PUBLIC KEY\") such as release.pub.pem from `spark-keys init --dev`"
    )]
    ParsePublic {
        what: String,
        #[source]
        source: ed25519_dalek::pkcs8::spki::Error,
    },

    /// A public key of small order, for which any signature could verify.
    #[error("release key {key_id} is a weak (small-order) Ed25519 key: generate a new release key")]
    WeakKey { key_id: KeyId },
}

/// Why a signed release must not be installed. Each check has its own variant so that the
/// agent can report precisely, and so tests can tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The bytes are not a well-formed signed release.
    #[error("malformed release")]
    Malformed(#[from] DecodeError),

    /// Signed by a key this device does not trust.
    #[error(
        "release is signed by unknown key {key_id}: it was signed with a different release key, or this device's trusted keys are out of date"
    )]
    UnknownKey { key_id: KeyId },

    /// The key is trusted but the signature does not match the manifest.
    #[error(
        "bad signature from release key {key_id}: the release was altered after signing; fetch it again or re-sign it"
    )]
    BadSignature { key_id: KeyId },

    /// The release is for other hardware.
    #[error(
        "release is for compatible {found:?}, this device is {expected:?}: publish a release built for {expected:?}"
    )]
    WrongCompatible { expected: String, found: String },

    /// Issued in the future (beyond the clock-skew tolerance).
    #[error(
        "release is not valid before {issued_at} (now {now}): check this device's clock, or wait"
    )]
    NotYetValid {
        issued_at: Timestamp,
        now: Timestamp,
    },

    /// Past its expiry.
    #[error("release expired at {expires_at} (now {now}): sign a fresh release manifest")]
    Expired {
        expires_at: Timestamp,
        now: Timestamp,
    },

    /// The installed version is too old to go straight to this release.
    #[error(
        "installed version {installed} is below this release's minimum {minimum}: install an intermediate release first"
    )]
    BelowMinimum {
        installed: Version,
        minimum: Version,
    },

    /// Anti-rollback: the offered version is not newer than the installed one and the manifest
    /// was not signed as an allowed downgrade.
    #[error(
        "release {offered} is not newer than installed {installed}: refusing a rollback; sign it with --allow-downgrade if intended"
    )]
    NotNewer {
        offered: Version,
        installed: Version,
    },
}

impl ReleaseError {
    /// A short, stable name for the failure, for status reports to the cloud and for logs that
    /// are parsed by machines (the `Display` text may change; these do not).
    pub fn code(&self) -> &'static str {
        match self {
            ReleaseError::Malformed(_) => "malformed",
            ReleaseError::UnknownKey { .. } => "unknown-key",
            ReleaseError::BadSignature { .. } => "bad-signature",
            ReleaseError::WrongCompatible { .. } => "wrong-compatible",
            ReleaseError::NotYetValid { .. } => "not-yet-valid",
            ReleaseError::Expired { .. } => "expired",
            ReleaseError::BelowMinimum { .. } => "below-minimum",
            ReleaseError::NotNewer { .. } => "not-newer",
        }
    }
}
