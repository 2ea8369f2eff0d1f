//! The server's config file (TOML, kebab-case keys). Raw values as read are kept apart from the
//! resolved [`Config`]: relative paths are made relative to the config file, defaults filled in,
//! and every error names the file.
//!
//! ```toml
//! listen = "0.0.0.0:8443"              # devices: mutual TLS, certificates from the device CA
//! admin-listen = "127.0.0.1:8444"      # people and tools: admin token or admin certificate
//! data-dir = "/var/lib/spark-ota"      # blobs/ and the SQLite database ota.db
//! keyring = "keyring.pem"              # firmware CA keyring bundles must chain to
//! release-keys = ["release.pub.pem"]   # Ed25519 keys release manifests must be signed with
//! [tls]
//! cert = "server.cert.pem"
//! key = "server.key.pem"
//! device-ca = "device-ca.cert.pem"
//! admin-ca = "server-ca.cert.pem"      # optional: admin client certificates chain to it
//! [push]                               # optional: ingest's push channel
//! ingest-url = "https://127.0.0.1:7444"
//! ca = "server-ca.cert.pem"
//! cert = "services/spark-ota.cert.pem"
//! key = "services/spark-ota.key.pem"
//! [rollouts]                           # optional
//! tick-secs = 5                        # gates evaluated, waves opened this often
//! clock-factor = 3600                  # demo/simulation only: 1 real second = 1 hour
//! clock-origin = "2026-11-30T00:00:00Z"
//! [dev]                                # demos only, never in production
//! release-key = "dev-pki/release.key.pem"  # the server signs manifests of uploads without one
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    database_connections: Option<u32>,
    keyring: PathBuf,
    #[serde(default)]
    check_purpose: Option<String>,
    #[serde(default)]
    allow_partial_chain: bool,
    release_keys: Vec<PathBuf>,
    max_bundle_bytes: Option<u64>,
    #[serde(default)]
    admin_clients: Vec<String>,
    tls: RawTls,
    push: Option<RawPush>,
    rollouts: Option<RawRollouts>,
    dev: Option<RawDev>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawDev {
    release_key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRollouts {
    tick_secs: Option<f64>,
    clock_factor: Option<u32>,
    clock_origin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    device_ca: PathBuf,
    admin_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawPush {
    ingest_url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    interval_secs: Option<u64>,
}

/// TLS material of the listeners.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Device client certificates must chain to it (device listener).
    pub device_ca: PathBuf,
    /// Admin client certificates must chain to it (admin listener); none: tokens only.
    pub admin_ca: Option<PathBuf>,
}

/// Where and how to push UpdateAvailable through spark-ingest's internal API.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// `https://host:port` of ingest's internal API.
    pub ingest_url: String,
    /// CA of ingest's server certificate.
    pub ca: PathBuf,
    /// This service's client certificate (`spark-keys issue-service spark-ota`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How often eligible, connected devices are looked for.
    pub interval: Duration,
}

/// How rollouts are driven.
#[derive(Debug, Clone)]
pub struct RolloutsConfig {
    /// How often (real time) gates are evaluated and waves opened.
    pub tick: Duration,
    /// A time-compressed clock (demos, simulations): real time × factor from `clock_origin`.
    /// `None`: the real clock.
    pub clock_factor: Option<u32>,
    /// Where the compressed clock starts (default: the real time at start-up).
    pub clock_origin: Option<spark_rollout::jiff::Timestamp>,
}

impl Default for RolloutsConfig {
    fn default() -> RolloutsConfig {
        RolloutsConfig {
            tick: Duration::from_secs(5),
            clock_factor: None,
            clock_origin: None,
        }
    }
}

impl RolloutsConfig {
    /// The clock these settings ask for.
    pub fn clock(&self) -> crate::clock::ServerClock {
        match self.clock_factor {
            Some(f) if f > 1 => crate::clock::ServerClock::compressed(
                self.clock_origin
                    .unwrap_or_else(spark_rollout::jiff::Timestamp::now),
                f,
            ),
            _ => crate::clock::ServerClock::real(),
        }
    }
}

/// Dev mode: what a demo server may hold that a production one never does.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// The Ed25519 release private key (`release.key.pem` of `spark-keys init --dev`): uploads
    /// without a signed manifest get one signed with it. Its public half must be among
    /// `release-keys`.
    pub release_key: PathBuf,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database: String,
    pub database_connections: u32,
    pub keyring: PathBuf,
    pub verify: spark_image::VerifyOptions,
    pub release_keys: Vec<PathBuf>,
    /// Uploads larger than this are refused before they are read.
    pub max_bundle_bytes: u64,
    /// CNs allowed to use the admin API with a client certificate; empty: any from `admin-ca`.
    pub admin_clients: Vec<String>,
    pub tls: TlsFiles,
    pub push: Option<PushConfig>,
    pub rollouts: RolloutsConfig,
    /// Dev mode (`[dev]`); `None` in production.
    pub dev: Option<DevConfig>,
}

/// Default cap on a bundle upload: 4 GiB (a BeagleBone root filesystem is far smaller).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 4 << 30;

impl Config {
    /// Reads and resolves `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Resolves `text` as if read from `path` (relative paths are relative to its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let data_dir = rel(raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/spark-ota")));
        let database = raw
            .database
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", data_dir.join("ota.db").display()));
        if raw.release_keys.is_empty() {
            return Err(invalid(
                "release-keys is empty: list the release public key(s) (release.pub.pem)".into(),
            ));
        }
        let purpose = match raw.check_purpose.as_deref() {
            None | Some("smimesign") => spark_image::Purpose::SmimeSign,
            Some("codesign") => spark_image::Purpose::CodeSign,
            Some("any") => spark_image::Purpose::Any,
            Some(other) => {
                return Err(invalid(format!(
                    "check-purpose {other:?}: use smimesign, codesign or any (as in rauc's system.conf)"
                )));
            }
        };
        let push = match raw.push {
            None => None,
            Some(p) => {
                if !p.ingest_url.starts_with("https://") {
                    return Err(invalid(format!(
                        "push.ingest-url {:?} must be https://HOST:PORT (ingest's internal-listen)",
                        p.ingest_url
                    )));
                }
                Some(PushConfig {
                    ingest_url: p.ingest_url.trim_end_matches('/').to_owned(),
                    ca: rel(p.ca),
                    cert: rel(p.cert),
                    key: rel(p.key),
                    interval: Duration::from_secs(p.interval_secs.unwrap_or(30).max(1)),
                })
            }
        };
        let rollouts = match raw.rollouts {
            None => RolloutsConfig::default(),
            Some(r) => {
                let tick = r.tick_secs.unwrap_or(5.0);
                if !(0.01..=3600.0).contains(&tick) {
                    return Err(invalid(format!(
                        "rollouts.tick-secs {tick} must be between 0.01 and 3600"
                    )));
                }
                let clock_origin = match r.clock_origin {
                    None => None,
                    Some(t) => Some(t.parse().map_err(|e| {
                        invalid(format!(
                            "rollouts.clock-origin {t:?}: {e}; use RFC 3339, e.g. 2026-11-30T00:00:00Z"
                        ))
                    })?),
                };
                if r.clock_factor == Some(0) {
                    return Err(invalid(
                        "rollouts.clock-factor must be at least 1 (1 = real time)".into(),
                    ));
                }
                RolloutsConfig {
                    tick: Duration::from_secs_f64(tick),
                    clock_factor: r.clock_factor,
                    clock_origin,
                }
            }
        };
        Ok(Config {
            listen: raw.listen.unwrap_or_else(|| ([0, 0, 0, 0], 8443).into()),
            admin_listen: raw
                .admin_listen
                .unwrap_or_else(|| ([127, 0, 0, 1], 8444).into()),
            data_dir,
            database,
            database_connections: raw.database_connections.unwrap_or(16),
            keyring: rel(raw.keyring),
            verify: spark_image::VerifyOptions {
                purpose,
                allow_partial_chain: raw.allow_partial_chain,
                time: None,
            },
            release_keys: raw.release_keys.into_iter().map(rel).collect(),
            max_bundle_bytes: raw.max_bundle_bytes.unwrap_or(DEFAULT_MAX_BUNDLE_BYTES),
            admin_clients: raw.admin_clients,
            tls: TlsFiles {
                cert: rel(raw.tls.cert),
                key: rel(raw.tls.key),
                device_ca: rel(raw.tls.device_ca),
                admin_ca: raw.tls.admin_ca.map(rel),
            },
            push,
            rollouts,
            dev: raw.dev.map(|d| DevConfig {
                release_key: rel(d.release_key),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_config_resolves_paths_and_defaults() {
        let c = Config::parse(
            r#"
            keyring = "pki/keyring.pem"
            release-keys = ["pki/release.pub.pem"]
            data-dir = "data"
            [tls]
            cert = "pki/server.cert.pem"
            key = "pki/server.key.pem"
            device-ca = "/etc/spark/device-ca.pem"
            "#,
            Path::new("/srv/ota/ota.toml"),
        )
        .unwrap();
        assert_eq!(c.keyring, Path::new("/srv/ota/pki/keyring.pem"));
        assert_eq!(c.tls.device_ca, Path::new("/etc/spark/device-ca.pem"));
        assert_eq!(c.database, "sqlite:///srv/ota/data/ota.db?mode=rwc");
        assert_eq!(c.listen.port(), 8443);
        assert!(c.push.is_none());
        assert_eq!(c.rollouts.tick, Duration::from_secs(5));
        assert_eq!(c.rollouts.clock().factor(), 1);
        assert!(c.dev.is_none());
    }

    #[test]
    fn dev_mode_release_key() {
        let base = "keyring='k'\nrelease-keys=['r']\n[tls]\ncert='c'\nkey='k'\ndevice-ca='d'\n";
        let c = Config::parse(
            &format!("{base}[dev]\nrelease-key = \"pki/release.key.pem\"\n"),
            Path::new("/x/ota.toml"),
        )
        .unwrap();
        assert_eq!(
            c.dev.unwrap().release_key,
            Path::new("/x/pki/release.key.pem")
        );
        let e = Config::parse(
            &format!("{base}[dev]\nkey = \"k\"\n"),
            Path::new("/x/ota.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("release-key"), "{e}");
    }

    #[test]
    fn compressed_clock_from_config() {
        let base = "keyring='k'\nrelease-keys=['r']\n[tls]\ncert='c'\nkey='k'\ndevice-ca='d'\n";
        let c = Config::parse(
            &format!("{base}[rollouts]\ntick-secs = 0.5\nclock-factor = 600\nclock-origin = \"2026-11-30T00:00:00Z\"\n"),
            Path::new("/x/ota.toml"),
        )
        .unwrap();
        assert_eq!(c.rollouts.tick, Duration::from_millis(500));
        assert_eq!(c.rollouts.clock().factor(), 600);
        let e = Config::parse(
            &format!("{base}[rollouts]\nclock-origin = \"monday\"\n"),
            Path::new("/x/ota.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("clock-origin"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let e = Config::parse("bogus = 1", Path::new("/x/ota.toml")).unwrap_err();
        assert!(e.to_string().contains("/x/ota.toml"), "{e}");
        let e = Config::parse(
            "keyring='k'\nrelease-keys=[]\n[tls]\ncert='c'\nkey='k'\ndevice-ca='d'\n",
            Path::new("/x/ota.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("release-keys is empty"), "{e}");
    }
}
