//! Typed errors of spark-image. Each variant names the step that failed and carries what a user
//! needs to act on it; the message ends with what to do next where there is something to do.

use std::path::PathBuf;

/// A manifest that rauc 1.8 would not accept.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "manifest is {len} bytes, larger than any real manifest: the bundle is corrupt or hostile"
    )]
    TooLarge { len: usize },
    #[error("manifest is not UTF-8 text")]
    NotUtf8,
    #[error("manifest line {line}: {reason}")]
    Syntax { line: usize, reason: &'static str },
    #[error(
        "invalid key '{key}' in group '[{group}]': rauc 1.8 rejects keys it does not know; remove it"
    )]
    UnknownKey { group: String, key: String },
    #[error(
        "invalid group '[{0}]': rauc 1.8 knows [update], [bundle], [hooks], [handler], [image.*] and [meta.*]"
    )]
    UnknownGroup(String),
    #[error("manifest lacks '{key}' in group '[{group}]'")]
    MissingKey { group: String, key: &'static str },
    #[error("manifest key '{key}' in '[{group}]': {reason}")]
    BadValue {
        group: String,
        key: String,
        reason: String,
    },
    #[error("[bundle] must carry all three of verity-hash, verity-salt and verity-size, or none")]
    IncompleteVerity,
    #[error("image filename '{0}' must be a plain file name in the bundle root")]
    BadFilename(String),
}

/// A CMS signature that could not be made or does not verify.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not valid CMS DER: {0}")]
    Malformed(String),
    #[error(
        "signature uses {0}, which spark-image does not support (use SHA-256 with ECDSA or RSA)"
    )]
    UnsupportedAlgorithm(String),
    #[error("signature has {0} signers; a RAUC bundle has exactly one")]
    SignerCount(usize),
    #[error("the signer's certificate is not embedded in the signature")]
    SignerCertMissing,
    #[error(
        "signed content does not match the signature's message digest: the bundle was modified after signing"
    )]
    DigestMismatch,
    #[error(
        "the signature does not verify with the signer's public key: the signature or signed attributes were modified"
    )]
    BadSignature,
    #[error("signature encapsulates no content, but a {0} bundle needs it")]
    ContentMissing(&'static str),
    #[error("signature encapsulates content, but a plain bundle's signature must be detached")]
    UnexpectedContent,
    #[error(
        "signer '{subject}' expired or is not yet valid (certificate validity ends {not_after}): re-sign the bundle with a current certificate (`spark-image resign`)"
    )]
    Expired { subject: String, not_after: String },
    #[error(
        "signer '{subject}' does not chain to a certificate in the keyring: {reason}. Check --keyring, or pass the intermediate with --intermediate when signing"
    )]
    Untrusted { subject: String, reason: String },
    #[error(
        "signer '{subject}' is not allowed to sign bundles for purpose '{purpose}': {reason}. Issue the signer with `spark-keys` (EKU codeSigning + emailProtection, key usage digitalSignature)"
    )]
    WrongPurpose {
        subject: String,
        purpose: &'static str,
        reason: String,
    },
    #[error("cannot read key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("cannot read certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("keyring {path} holds no certificate: point --keyring at the firmware CA's PEM file")]
    EmptyKeyring { path: PathBuf },
    #[error(
        "the private key does not belong to the signing certificate: pass the matching --cert and --key"
    )]
    KeyMismatch,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// Everything else spark-image does with bundles.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes: too small to be a RAUC bundle")]
    TooSmall { path: PathBuf, size: u64 },
    #[error(
        "signature length field says {claimed} bytes but the bundle has {available} bytes before it: the file is truncated or not a bundle"
    )]
    SignatureSize { claimed: u64, available: u64 },
    #[error("signature is {0} bytes; rauc refuses signatures over 64 KiB")]
    SignatureTooLarge(u64),
    #[error(
        "squashfs is {0} bytes, not a multiple of 4096: verity needs 4 KiB alignment and Spark requires it for every format; rebuild the bundle with spark-image or rauc, which pad it"
    )]
    NotAligned(u64),
    #[error("bundle payload is not a readable squashfs: {0}")]
    Squashfs(#[from] spark_squashfs::SquashfsError),
    #[error("bundle has no manifest.raucm")]
    NoManifest,
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("image '{0}' named in the manifest is missing from the bundle")]
    ImageMissing(String),
    #[error(
        "image '{name}' is {actual} bytes but the manifest says {expected}: the bundle is corrupt"
    )]
    ImageSize {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "image '{name}' has SHA-256 {actual} but the manifest says {expected}: the bundle is corrupt"
    )]
    ImageChecksum {
        name: String,
        expected: String,
        actual: String,
    },
    #[error(
        "manifest gives no sha256/size for image '{0}': build bundles with spark-image or rauc, which fill them in"
    )]
    ImageUnhashed(String),
    #[error(
        "verity {what} does not match the signed manifest: the bundle's payload or hash tree was modified"
    )]
    Verity { what: &'static str },
    #[error(
        "verity bundle of {size} bytes is too small: squashfs plus hash tree must exceed 4096 bytes"
    )]
    VerityTooSmall { size: u64 },
    #[error(
        "the squashfs manifest and the signed manifest disagree on {0}: the bundle was tampered with"
    )]
    ManifestMismatch(&'static str),
    #[error("{0} bundles are not supported by spark-image yet; build plain or verity bundles")]
    Unsupported(&'static str),
    #[error("input {path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("output {0} already exists: remove it or choose another path")]
    OutputExists(PathBuf),
    #[error("bundle compatible is '{actual}' but '{expected}' was required")]
    Compatible { expected: String, actual: String },
}

impl BundleError {
    /// Wraps an I/O error with the operation and path it concerned.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
