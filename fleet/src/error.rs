//! What can go wrong while bringing up or driving the fleet.

use std::path::PathBuf;

/// A fleet that cannot be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "{} not found; build the binaries first: cargo build {} (or point SPARK_BIN_DIR at a directory holding them)",
        path.display(),
        crate::bins::BUILD_HINT
    )]
    MissingBinary { path: PathBuf },
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} exited ({status}) while {during}; its log {}:\n{tail}", log.display())]
    Exited {
        name: String,
        status: String,
        during: String,
        log: PathBuf,
        tail: String,
    },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("development PKI: {0}")]
    Keys(#[from] spark_keys::KeysError),
    #[error("bundle: {0}")]
    Bundle(#[from] spark_image::BundleError),
    #[error("bundle signer: {0}")]
    Signer(#[from] spark_image::SignatureError),
    #[error("release manifest: {0}")]
    Release(String),
    #[error("gateway board: {0}")]
    Testbed(#[from] spark_testbed::TestbedError),
    #[error("interrupted (Ctrl-C): everything was stopped")]
    Interrupted,
    #[error("OTA server admin API: {0}")]
    Admin(#[from] spark_ota::ClientError),
}

impl FleetError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> FleetError {
        let path = path.into();
        move |source| FleetError::Io {
            action,
            path,
            source,
        }
    }
}
