//! `spark-keys sign-release` and `verify-release`: sign a release manifest offline with the
//! Ed25519 release key, and check a signed one the way a gateway would.
//!
//! Part of the `spark-keys` binary (declared in `main.rs`), not of the library: the format and
//! the checks live in the `spark-release` crate; this module only turns flags and files into
//! its calls. Signing needs nothing but the key file and the bundle, so it runs on an offline
//! machine; the OTA server only ever receives the signed `.release.json`.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use clap::{Args, ValueEnum};
use spark_release::{
    BundleMismatch, DEFAULT_VALIDITY, DecodeError, InvalidManifest, KeyError, Policy, ReleaseError,
    ReleaseManifest, SignedRelease, Timestamp, TrustedKeys, Version,
};

/// `--expires-in`'s default as the flag is written: spark-release's [`DEFAULT_VALIDITY`], the
/// one default validity of every signer.
static DEFAULT_EXPIRES_IN: LazyLock<String> = LazyLock::new(|| format_duration(DEFAULT_VALIDITY));

/// Flags of `spark-keys sign-release`.
#[derive(Debug, Args)]
pub struct SignReleaseArgs {
    /// The Ed25519 release private key (PKCS#8 PEM, `release.key.pem`).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// The RAUC bundle; its SHA-256 and size go into the manifest.
    #[arg(long, value_name = "FILE.raucb")]
    bundle: PathBuf,
    /// RAUC `compatible` of the devices the release is for (as in the bundle's manifest).
    #[arg(long)]
    compatible: String,
    /// The release's semantic version (e.g. 1.4.2).
    #[arg(long = "version", value_name = "SEMVER", value_parser = parse_version)]
    release_version: Version,
    /// Lowest installed version the release may be installed over.
    #[arg(long, value_name = "SEMVER", value_parser = parse_version)]
    min_version: Option<Version>,
    /// Validity from the issue time: a number with unit s, m, h, d or w.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = DEFAULT_EXPIRES_IN.as_str(), conflicts_with = "expires_at")]
    expires_in: Duration,
    /// Absolute expiry (RFC 3339, e.g. 2027-01-31T00:00:00Z) instead of --expires-in.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    expires_at: Option<Timestamp>,
    /// Issue time (RFC 3339); defaults to now. With a fixed issue time the output is
    /// byte-for-byte reproducible (Ed25519 signatures are deterministic).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    issued_at: Option<Timestamp>,
    /// A download location for the bundle (repeatable, tried in order). Without any, gateways
    /// fetch the bundle by SHA-256 from the OTA server that offered it.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// Allow installing over a newer or equal version (a deliberate, signed rollback).
    #[arg(long)]
    allow_downgrade: bool,
    /// The rollout id this release belongs to.
    #[arg(long, value_name = "ID")]
    rollout: Option<String>,
    /// Where to write the signed release.
    #[arg(short, long, value_name = "FILE.release.json")]
    output: PathBuf,
    /// Output format: `json` for people and the OTA server, `binary` for the compact wire form.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
}

/// Flags of `spark-keys verify-release`.
#[derive(Debug, Args)]
pub struct VerifyReleaseArgs {
    /// The signed release (`.release.json` or the binary wire form).
    file: PathBuf,
    /// A trusted release public key (SPKI PEM, `release.pub.pem`); repeat to trust several.
    #[arg(long = "pub", value_name = "PEM", required = true)]
    public_keys: Vec<PathBuf>,
    /// Require this compatible, as a gateway of that kind would.
    #[arg(long)]
    compatible: Option<String>,
    /// Apply the minimum-version and anti-rollback checks against this installed version.
    #[arg(long, value_name = "SEMVER", value_parser = parse_version)]
    installed: Option<Version>,
    /// Judge validity at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    now: Option<Timestamp>,
    /// Also check that this bundle file is the one the release names (SHA-256 and size).
    #[arg(long, value_name = "FILE.raucb")]
    bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// Pretty JSON (`*.release.json`).
    Json,
    /// The compact wire form (as pushed to gateways).
    Binary,
}

/// What went wrong in `sign-release` or `verify-release`.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseCmdError {
    #[error("cannot load release key")]
    Key(#[from] KeyError),

    #[error("cannot read bundle {}: check the path", path.display())]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("issue time plus --expires-in is past the year 9999: use a shorter validity")]
    ExpiryOutOfRange,

    #[error("cannot sign the release manifest")]
    Manifest(#[from] InvalidManifest),

    #[error("refusing to overwrite {}: it already exists; pass --force to replace it", path.display())]
    WouldOverwrite { path: PathBuf },

    #[error("cannot write {}: check the directory exists and is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot read signed release {}: check the path", path.display())]
    ReadRelease {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a signed release", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },

    #[error("{} must not be installed ({})", path.display(), source.code())]
    Verify {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },

    #[error("bundle {} is not the one {} names", bundle.display(), release.display())]
    BundleMismatch {
        bundle: PathBuf,
        release: PathBuf,
        // Boxed: two digests would make every `Result` of this module 128+ bytes.
        #[source]
        source: Box<BundleMismatch>,
    },
}

impl ReleaseCmdError {
    /// True when the caller's input is at fault (exit code 2), as `KeysError::is_usage`.
    pub fn is_usage(&self) -> bool {
        match self {
            ReleaseCmdError::ExpiryOutOfRange
            | ReleaseCmdError::Manifest(_)
            | ReleaseCmdError::WouldOverwrite { .. } => true,
            ReleaseCmdError::Key(_)
            | ReleaseCmdError::ReadBundle { .. }
            | ReleaseCmdError::Write { .. }
            | ReleaseCmdError::ReadRelease { .. }
            | ReleaseCmdError::Decode { .. }
            | ReleaseCmdError::Verify { .. }
            | ReleaseCmdError::BundleMismatch { .. } => false,
        }
    }
}

/// Signs a release manifest for a bundle and writes it; prints a summary.
pub fn sign_release(args: SignReleaseArgs) -> Result<(), ReleaseCmdError> {
    // Check the destination before the (possibly long) bundle hash.
    if !args.force && args.output.exists() {
        return Err(ReleaseCmdError::WouldOverwrite { path: args.output });
    }
    let key = spark_release::load_signing_key(&args.key)?;
    let digest =
        spark_release::digest_file(&args.bundle).map_err(|source| ReleaseCmdError::ReadBundle {
            path: args.bundle.clone(),
            source,
        })?;
    let issued_at = args.issued_at.unwrap_or_else(Timestamp::now);
    let expires_at = match args.expires_at {
        Some(at) => at,
        None => issued_at
            .checked_add(args.expires_in)
            .ok_or(ReleaseCmdError::ExpiryOutOfRange)?,
    };
    let manifest = ReleaseManifest {
        compatible: args.compatible,
        version: args.release_version,
        bundle_sha256: digest.sha256,
        bundle_size: digest.size,
        locations: args.urls,
        min_version: args.min_version,
        issued_at,
        expires_at,
        allow_downgrade: args.allow_downgrade,
        rollout: args.rollout,
    };
    let release = SignedRelease::sign(manifest, &key)?;
    let bytes = match args.format {
        Format::Json => release.to_json().into_bytes(),
        Format::Binary => release.to_bytes(),
    };
    write_new(&args.output, &bytes)?;
    println!("signed release written to {}", args.output.display());
    print_summary(&release);
    Ok(())
}

/// Verifies a signed release against trusted keys and the given policy; prints a summary.
pub fn verify_release(args: VerifyReleaseArgs) -> Result<(), ReleaseCmdError> {
    let mut keys = TrustedKeys::new();
    for path in &args.public_keys {
        keys.load_pem_file(path)?;
    }
    let bytes = std::fs::read(&args.file).map_err(|source| ReleaseCmdError::ReadRelease {
        path: args.file.clone(),
        source,
    })?;
    let release = SignedRelease::parse(&bytes).map_err(|source| ReleaseCmdError::Decode {
        path: args.file.clone(),
        source,
    })?;
    let mut policy = Policy::new(args.now.unwrap_or_else(Timestamp::now));
    policy.compatible = args.compatible;
    policy.installed_version = args.installed;
    let manifest = release
        .verify(&keys, &policy)
        .map_err(|source| ReleaseCmdError::Verify {
            path: args.file.clone(),
            source,
        })?;
    if let Some(bundle) = &args.bundle {
        let found =
            spark_release::digest_file(bundle).map_err(|source| ReleaseCmdError::ReadBundle {
                path: bundle.clone(),
                source,
            })?;
        manifest
            .check_bundle(&found)
            .map_err(|source| ReleaseCmdError::BundleMismatch {
                bundle: bundle.clone(),
                release: args.file.clone(),
                source: Box::new(source),
            })?;
    }
    println!("{}: signature and policy OK", args.file.display());
    print_summary(&release);
    Ok(())
}

fn print_summary(release: &SignedRelease) {
    let m = release.manifest();
    println!("  compatible:  {}", m.compatible);
    println!("  version:     {}", m.version);
    if let Some(min) = &m.min_version {
        println!("  min version: {min}");
    }
    println!(
        "  bundle:      {} bytes, sha256 {}",
        m.bundle_size,
        hex_lower(&m.bundle_sha256)
    );
    for url in &m.locations {
        println!("  url:         {url}");
    }
    println!("  valid:       {} .. {}", m.issued_at, m.expires_at);
    if m.allow_downgrade {
        println!("  downgrade:   allowed");
    }
    if let Some(rollout) = &m.rollout {
        println!("  rollout:     {rollout}");
    }
    println!("  key id:      {}", release.key_id());
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a crash never
/// leaves a half-written release where the OTA upload script would pick it up.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ReleaseCmdError> {
    let error = |source| ReleaseCmdError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(error)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        error(e)
    })
}

fn parse_version(text: &str) -> Result<Version, String> {
    Version::parse(text)
        .map_err(|e| format!("{e}: versions are semantic versions like 1.4.2 or 1.5.0-rc.1"))
}

fn parse_time(text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>().map_err(|e| e.to_string())
}

/// `30d`, `12h`, `90m`, `3600s`, `2w`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let usage = || format!("{text:?}: expected a number with unit s, m, h, d or w, like 30d");
    let split = text.len().checked_sub(1).ok_or_else(usage)?;
    let (number, unit) = text.split_at_checked(split).ok_or_else(usage)?;
    let number: u64 = number.parse().map_err(|_| usage())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(usage()),
    };
    match number.checked_mul(unit_secs) {
        Some(0) => Err(format!("{text:?}: a release must be valid for some time")),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(usage()),
    }
}

/// A duration as [`parse_duration`] reads it, in the largest unit that divides it (`30d`).
fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = [(7 * 86_400, "w"), (86_400, "d"), (3600, "h"), (60, "m")]
        .into_iter()
        .find(|(unit, _)| secs.is_multiple_of(*unit))
        .map_or((secs, "s"), |(u, name)| (secs / u, name));
    format!("{n}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_expiry_is_spark_release_default_validity() {
        assert_eq!(DEFAULT_EXPIRES_IN.as_str(), "30d");
        assert_eq!(parse_duration(&DEFAULT_EXPIRES_IN), Ok(DEFAULT_VALIDITY));
        for d in [90, 3600, 5400, 86_400, 14 * 86_400, 86_401] {
            let d = Duration::from_secs(d);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "d",
            "30",
            "30x",
            "-1d",
            "0h",
            "1.5d",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
