//! spark-image: RAUC bundles in pure Rust, byte-compatible with rauc 1.8.
//!
//! ```text
//! plain:  | squashfs (manifest.raucm + images) | CMS (detached, over the squashfs) | len: u64 BE |
//! verity: | squashfs | dm-verity hash tree | CMS (encapsulating the manifest + verity keys) | len |
//! ```
//! The library builds, signs, re-signs, inspects, verifies and extracts bundles; the `spark-image`
//! binary is a thin CLI over it, and the OTA server calls [`Bundle::verify`] on uploads.

pub mod build;
pub mod bundle;
pub mod error;
pub mod manifest;
pub mod signature;
pub mod verity;

pub use build::{BuildInput, BuildOptions, BuildSummary, build, source_date_epoch};
pub use bundle::{Bundle, BundleInfo, SpooledBundle};
pub use error::{BundleError, ManifestError, SignatureError};
pub use manifest::{BundleFormat, Manifest};
pub use signature::{Keyring, Purpose, Signer, VerifyOptions};
pub use spark_squashfs::Compression;
