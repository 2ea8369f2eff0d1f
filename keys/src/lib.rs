//! `spark-keys`: the keys and certificates Spark's trust model needs (DESIGN.md "Trust and keys").
//!
//! * a firmware CA (optionally with an intermediate) issuing the RAUC bundle signer, whose root
//!   certificate is the RAUC keyring on the gateway;
//! * an Ed25519 release key signing release manifests (never bundles: RAUC rejects Ed25519 CMS);
//! * a device CA issuing gateway client certificates (CN = serial) for mTLS;
//! * a server CA and server certificate for the cloud endpoints.
//!
//! This crate generates a *development* PKI ([`init_dev`], [`issue_device`], [`issue_service`]) in a fixed layout
//! (see [`dev`]) and offers [`CertificateAuthority`] + [`LeafProfile`] so tests can issue
//! certificates with deliberately wrong properties. Production keys live offline or in an HSM;
//! `keys/README.md` says how they differ.

mod ca;
pub mod dev;
mod error;
mod files;
mod key;
mod profile;

pub use ca::{
    CertificateAuthority, DEV_ORGANIZATION, INTERMEDIATE_VALIDITY, IssuedCert, ROOT_VALIDITY,
};
pub use dev::{DevPki, DevPkiOptions, init_dev, issue_device, issue_service, layout};
pub use error::{CertParseError, KeysError};
pub use key::{KeyAlgorithm, ReleaseKeyPair, generate_release_key};
pub use profile::{
    DEVICE_VALIDITY, ExtendedKeyUsage, KeyUsage, LeafProfile, SERVER_VALIDITY, SIGNER_VALIDITY,
};
