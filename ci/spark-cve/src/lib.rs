//! spark-cve: offline security patch tracking (work in progress).

pub mod cpe;
pub mod version;
