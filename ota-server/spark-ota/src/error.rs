//! Typed errors of the OTA server, one enum per area, each variant named after the operation that
//! failed and carrying what a person needs to fix it. HTTP statuses are chosen in one place
//! (`api::ApiError`), never here.

use std::path::PathBuf;

use spark_release::{DecodeError, ReleaseError};

/// The database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Could not open the database (the URL is shown without its password).
    #[error(
        "cannot open database {url}: {source}; check the `database` setting and that the server is up"
    )]
    Connect { url: String, source: sqlx::Error },
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL {url}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl { url: String },
    /// Applying the embedded migrations failed.
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database {op} failed: {source}")]
    Query {
        op: &'static str,
        source: sqlx::Error,
    },
    /// A stored value is out of the range this server writes (a corrupt or foreign row).
    #[error("database holds an unusable {what}: {value}")]
    Corrupt { what: &'static str, value: String },
}

impl StoreError {
    pub(crate) fn query(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Query { op, source }
    }
}

/// The config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Why an uploaded release was refused. Nothing of a refused upload is stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "no signed release manifest: sign one offline (`spark-keys sign-release --key release.key.pem --bundle BUNDLE --compatible C --version V -o BUNDLE.release.json`) and upload both (`spark-ota release upload BUNDLE BUNDLE.release.json`, which sends it base64-encoded in the `Spark-Release` header); only a server in dev mode ([dev] release-key) signs manifests itself"
    )]
    MissingManifest,
    #[error("the Spark-Release header is not base64: {0}")]
    ManifestEncoding(String),
    #[error("the signed release manifest is malformed: {0}")]
    ManifestMalformed(#[source] DecodeError),
    #[error("release manifest refused: {0}")]
    ManifestRefused(#[source] ReleaseError),
    #[error(
        "release {compatible} {version} already exists (release {id}): to give it a new signed manifest (a later expiry, or --allow-downgrade to roll back to it) replace the stored one with `spark-ota release manifest {id} MANIFEST`; for another bundle, sign a new version"
    )]
    ReleaseExists {
        compatible: String,
        version: String,
        id: i64,
    },
    #[error("bundle {sha256} is already stored (release {id}): nothing to upload")]
    DuplicateBundle { sha256: String, id: i64 },
    #[error(
        "the upload is larger than the {declared} bytes the signed manifest declares: it is not this release's bundle"
    )]
    TooLarge { declared: u64 },
    #[error(
        "the bundle is larger than this server's max-bundle-bytes ({limit} bytes): raise max-bundle-bytes or build a smaller bundle"
    )]
    OverLimit { limit: u64 },
    #[error(
        "the upload is {received} bytes but the signed manifest declares {declared}: the upload was cut or is not this release's bundle"
    )]
    SizeMismatch { declared: u64, received: u64 },
    #[error(
        "the upload has SHA-256 {found} but the signed manifest names {expected}: sign the manifest for this bundle (spark-keys sign-release --bundle)"
    )]
    DigestMismatch { expected: String, found: String },
    #[error("bundle refused: {0}")]
    Bundle(#[source] spark_image::BundleError),
    #[error(
        "the bundle's version {bundle} differs from the signed manifest's {release}: sign the manifest with --version {bundle}"
    )]
    VersionMismatch { bundle: String, release: String },
    #[error("the bundle has no [update] version: build it with --version")]
    NoBundleVersion,
    #[error(
        "dev mode: the bundle's version {version:?} is not a semantic version, so no release manifest can be signed for it: build the bundle with --version MAJOR.MINOR.PATCH"
    )]
    BundleVersionNotSemver { version: String },
    #[error("dev mode: cannot sign a release manifest for this bundle: {0}")]
    DevSign(String),
    #[error("receiving the upload failed: {0}")]
    Receive(String),
    #[error("cannot store the upload in {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why replacing the signed manifest of a stored release was refused. A refused replacement
/// changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no release {0}: list them with `spark-ota release list`")]
    NotFound(i64),
    #[error("the signed release manifest is malformed: {0}")]
    Malformed(#[source] DecodeError),
    #[error("release manifest refused: {0}")]
    Refused(#[source] ReleaseError),
    #[error(
        "release {id} ({compatible} {version}) is yanked: it is never offered again, so its manifest is not replaced; to ship this firmware again, build the bundle with a new version, sign its manifest and upload both (`spark-ota release upload BUNDLE MANIFEST`)"
    )]
    Yanked {
        id: i64,
        compatible: String,
        version: String,
    },
    #[error(
        "the manifest is not for release {id}: {differences}; a replacement names the same compatible, version, bundle SHA-256 and size (`spark-keys sign-release --bundle BUNDLE --compatible C --version V`); a different bundle or version is a new release (`spark-ota release upload`)"
    )]
    Mismatch { id: i64, differences: String },
    #[error(
        "the manifest was issued at {given}, before release {id}'s current one ({stored}): an older manifest is never put back (that would replay it); sign a fresh one"
    )]
    Older {
        id: i64,
        stored: String,
        given: String,
    },
    #[error(
        "rollout(s) {rollouts} of release {id} were planned with its {what}, which the new manifest changes: abort them first (`spark-ota rollout abort ID`), or sign the manifest with the same {what}"
    )]
    RolloutsDependOn {
        id: i64,
        rollouts: String,
        what: &'static str,
    },
    #[error(
        "release {0} changed while its manifest was being replaced (another replacement?): look at it (`spark-ota release show {0}`) and try again"
    )]
    Changed(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] spark_tls::TlsError),
    #[error("cannot load the firmware keyring {}: {source}; point `keyring` at the keyring.pem of spark-keys", path.display())]
    Keyring {
        path: PathBuf,
        source: spark_image::SignatureError,
    },
    #[error("cannot load release public key {}: {source}; point `release-keys` at release.pub.pem files", path.display())]
    ReleaseKey {
        path: PathBuf,
        source: spark_release::KeyError,
    },
    #[error("cannot load the dev-mode release key {}: {source}; point `[dev] release-key` at the release.key.pem of `spark-keys init --dev`, or remove [dev]", path.display())]
    DevKey {
        path: PathBuf,
        source: spark_release::KeyError,
    },
    #[error(
        "the dev-mode release key {} (key id {key_id}) is not among `release-keys`: add its public half (release.pub.pem beside it) to release-keys, else devices could not verify the manifests this server signs",
        path.display()
    )]
    DevKeyNotTrusted { path: PathBuf, key_id: String },
    #[error("cannot create {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}; is another server using the port?")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A command-line call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL {url:?}: {reason}")]
    Url { url: String, reason: &'static str },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] spark_tls::TlsError),
    #[error(
        "cannot connect to {authority}: {source}; is `spark-ota serve` running and is --server right?"
    )]
    Connect {
        authority: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {authority} failed: {source}; check --ca (the server CA)")]
    Handshake {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {authority} failed: {source}")]
    Http {
        authority: String,
        source: hyper::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no admin credentials: pass --token (or SPARK_OTA_TOKEN; `spark-ota token create` makes one) or --cert/--key"
    )]
    NoCredentials,
    #[error("server answered {status}: {message}")]
    Status {
        status: hyper::StatusCode,
        message: String,
    },
    #[error("server answered with unreadable JSON: {0}")]
    Json(#[from] serde_json::Error),
}
