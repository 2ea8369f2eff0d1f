//! Where the fleet's programs are: the real binaries of the workspace, built by cargo.
//!
//! A fleet runs the daemons and services as separate processes, exactly as they run on a gateway
//! or a server, so it needs their executables. They are looked for in `SPARK_BIN_DIR`, else
//! next to the running program (`target/<profile>/`, also from a test binary in
//! `target/<profile>/deps/`). `cargo test --workspace` builds them all there, because each of
//! their crates has integration tests that run its binary.

use std::path::{Path, PathBuf};

use crate::FleetError;

/// What builds every binary a fleet runs.
pub const BUILD_HINT: &str =
    "-p spark-ingest -p spark-ota -p spark-meterd -p spark-uplinkd -p spark-updated -p spark-webui";

/// The programs of a fleet, each checked to exist.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ingest: PathBuf,
    pub api: PathBuf,
    pub ota: PathBuf,
    pub meter_sim: PathBuf,
    pub meterd: PathBuf,
    pub uplinkd: PathBuf,
    pub updated: PathBuf,
    pub webui: PathBuf,
}

impl Binaries {
    /// Finds the binaries in `dir`, or in `SPARK_BIN_DIR`, or next to the running program.
    pub fn locate(dir: Option<&Path>) -> Result<Binaries, FleetError> {
        let dir = match dir {
            Some(d) => d.to_owned(),
            None => match std::env::var_os("SPARK_BIN_DIR") {
                Some(d) => PathBuf::from(d),
                None => default_dir(),
            },
        };
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(FleetError::MissingBinary { path })
            }
        };
        Ok(Binaries {
            ingest: find("spark-ingest")?,
            api: find("spark-api")?,
            ota: find("spark-ota")?,
            meter_sim: find("spark-meter-sim")?,
            meterd: find("spark-meterd")?,
            uplinkd: find("spark-uplinkd")?,
            updated: find("spark-updated")?,
            webui: find("spark-webui")?,
        })
    }
}

/// `target/<profile>/`: the directory of the running program, or its parent for a test binary
/// (which cargo puts in `deps/`).
fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map(Path::to_owned).unwrap_or(dir)
    } else {
        dir
    }
}
