//! spark-cve: offline security patch tracking for everything in a Spark image.
//!
//! One scan reads the image's inventory ([`inventory`]: Yocto SBOMs, cve-check manifests,
//! `Cargo.lock` files), one vulnerability snapshot ([`db`]: built offline from NVD, CVE 5, OSV and
//! RustSec copies), matches them ([`scan`]), applies what the build says is patched and what people
//! triaged ([`triage`]), and renders reports and the CI verdict ([`report`]).

pub mod cpe;
pub mod db;
pub mod error;
pub mod inventory;
pub mod model;
pub mod version;

pub use error::{Error, Result};
