//! The one error type of `spark-keys`.
//!
//! Each variant is named after the operation that failed and carries the file or value it was
//! working on; the messages end with what the operator should do next.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while generating, loading or writing keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key or certificate file is already there and `force` was not given.
    #[error("refusing to overwrite {}: it already exists; pass --force to replace it", path.display())]
    WouldOverwrite { path: PathBuf },

    /// Creating the output directory failed.
    #[error("cannot create directory {}: check the parent exists and is writable", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing a key or certificate file failed.
    #[error("cannot write {}: check the directory is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading a key or certificate file failed.
    #[error("cannot read {}: run `spark-keys init --dev DIR` first or check the path", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A CA certificate file is not a PEM X.509 certificate rcgen can reuse as issuer.
    #[error("cannot parse CA certificate {}: expected a PEM X.509 certificate", path.display())]
    ParseCertificate {
        path: PathBuf,
        #[source]
        source: CertParseError,
    },

    /// A private key file is not an unencrypted PKCS#8 PEM key of a supported algorithm.
    #[error(
        "cannot parse private key {}: expected an unencrypted PKCS#8 PEM \"PRIVATE KEY\" block for ECDSA P-256 or RSA",
        path.display()
    )]
    ParseKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },

    /// The certificate given as a CA has no `basicConstraints CA:TRUE`.
    #[error("{} is not a CA certificate: pass the CA's certificate, not a leaf", path.display())]
    NotACa { path: PathBuf },

    /// The private key does not belong to the certificate it was loaded with.
    #[error("private key {} does not match certificate {}: pass the key generated with that certificate", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    /// The RSA modulus size is not one we generate.
    #[error("RSA key size {bits} is not supported: use 2048, 3072 or 4096")]
    UnsupportedRsaBits { bits: usize },

    /// Generating a key pair failed (entropy source or encoder failure).
    #[error("cannot generate {algorithm} key pair: {reason}")]
    GenerateKey {
        algorithm: &'static str,
        reason: String,
    },

    /// rcgen refused to build or sign a certificate.
    #[error("cannot issue certificate for {common_name:?}")]
    Issue {
        common_name: String,
        #[source]
        source: rcgen::Error,
    },

    /// A leaf profile whose validity ends before it starts.
    #[error(
        "certificate for {common_name:?} would expire before it becomes valid: set not_after after not_before"
    )]
    InvalidValidity { common_name: String },

    /// A server name that is neither an IP address nor a valid DNS name.
    #[error("invalid server name {name:?}: pass a DNS name or an IP address")]
    InvalidServerName { name: String },

    /// No server names were given for the server certificate.
    #[error("no server names given: pass at least one --server-name (DNS name or IP address)")]
    NoServerNames,

    /// A device serial that cannot be both a certificate CN and a file name.
    #[error(
        "invalid device serial {serial:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ - (not starting with '.')"
    )]
    InvalidSerial { serial: String },
}

/// Why a certificate PEM file could not be used: either its structure or its public key.
#[derive(Debug, thiserror::Error)]
pub enum CertParseError {
    /// rcgen could not rebuild issuer parameters from it.
    #[error(transparent)]
    Issuer(#[from] rcgen::Error),
    /// The PEM or DER structure is malformed.
    #[error(transparent)]
    Der(#[from] der::Error),
}

impl KeysError {
    /// True when the error comes from the caller's input rather than from the system, so a CLI
    /// can report it as a usage error (exit code 2) instead of a failure (exit code 1).
    pub fn is_usage(&self) -> bool {
        match self {
            KeysError::WouldOverwrite { .. }
            | KeysError::UnsupportedRsaBits { .. }
            | KeysError::InvalidValidity { .. }
            | KeysError::InvalidServerName { .. }
            | KeysError::NoServerNames
            | KeysError::InvalidSerial { .. } => true,
            KeysError::CreateDir { .. }
            | KeysError::Write { .. }
            | KeysError::Read { .. }
            | KeysError::ParseCertificate { .. }
            | KeysError::ParseKey { .. }
            | KeysError::NotACa { .. }
            | KeysError::KeyMismatch { .. }
            | KeysError::GenerateKey { .. }
            | KeysError::Issue { .. } => false,
        }
    }
}
