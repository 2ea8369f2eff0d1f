//! The daemon's configuration: one TOML file (kebab-case keys), `/etc/spark/uplinkd.toml`, plus
//! the few settings the cloud may change with `SetConfig` ([`Tunables`], persisted on `/data`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{self, StoreError};

/// Everything `spark-uplinkd` is told.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Directory on the persistent data partition: queue, roster, state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// D-Bus address to use instead of the system bus (tests, development).
    #[serde(default)]
    pub bus_address: Option<String>,
    /// The cloud end and the credentials to reach it.
    pub cloud: CloudConfig,
    /// Firmware version to report in Hello; default: `VERSION_ID` from `/etc/os-release`.
    #[serde(default)]
    pub firmware_version: Option<String>,
    /// Booted slot ("A" or "B") to report; default: `rauc.slot=` on `/proc/cmdline`.
    #[serde(default)]
    pub booted_slot: Option<String>,
    /// The meters' reading schedule in seconds (batches imply timestamps from it).
    #[serde(default = "default_reading_interval")]
    pub reading_interval_secs: u32,
    /// Seconds of silence after which a Ping goes out (see [`Tunables`]).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: f64,
    #[serde(default = "default_dead_peer")]
    pub dead_peer_timeout_secs: f64,
    #[serde(default = "default_batch_window")]
    pub batch_window_secs: f64,
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: f64,
}

/// Where the cloud is and how to prove who we are.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CloudConfig {
    /// `host:port` of spark-ingest.
    pub address: String,
    /// Name the server certificate must carry (default: the host part of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The server CA, pinned: no other root is trusted.
    pub server_ca: PathBuf,
    /// Device certificate (PEM chain) from `spark-keys issue-device`.
    pub device_cert: PathBuf,
    /// Device private key (PEM); leave out when the key lives in a PKCS#11 token.
    #[serde(default)]
    pub device_key: Option<PathBuf>,
    /// The device key held in a PKCS#11 token instead of a file.
    #[serde(default)]
    pub pkcs11: Option<Pkcs11Config>,
    /// Bound on connect + TLS handshake + Welcome.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: f64,
    /// First reconnect delay after a failure; doubles per failure up to the maximum, ±50 % jitter.
    #[serde(default = "default_backoff_min")]
    pub backoff_min_secs: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: f64,
    /// Entries sent but not yet acknowledged, at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
}

/// A device key held in a PKCS#11 token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The token's PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, the secure element's).
    pub module: PathBuf,
    pub token_label: String,
    /// `CKA_LABEL` of the private key.
    pub key_label: String,
    /// File holding the user PIN (one line); keep it readable by this daemon only.
    pub pin_file: PathBuf,
}

/// The settings the cloud may change at run time (`SetConfig`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Tunables {
    /// Seconds of silence on the link after which uplinkd sends a Ping (≥ 5 min by default:
    /// every ping costs metered bytes, and cellular NATs keep flows for longer).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: f64,
    /// Seconds to wait for any answer (Pong, Ack) before declaring the peer dead.
    #[serde(default = "default_dead_peer")]
    pub dead_peer_timeout_secs: f64,
    /// How often readings are pulled from meterd into the queue (and so how often batches go out).
    #[serde(default = "default_batch_window")]
    pub batch_window_secs: f64,
    /// How often a Health event is queued.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: f64,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            keepalive_secs: default_keepalive(),
            dead_peer_timeout_secs: default_dead_peer(),
            batch_window_secs: default_batch_window(),
            health_interval_secs: default_health_interval(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/data/spark-uplinkd")
}
fn default_reading_interval() -> u32 {
    900
}
fn default_handshake_timeout() -> f64 {
    60.0
}
fn default_backoff_min() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    300.0
}
fn default_max_in_flight() -> u32 {
    8
}
fn default_keepalive() -> f64 {
    300.0
}
fn default_dead_peer() -> f64 {
    90.0
}
fn default_batch_window() -> f64 {
    900.0
}
fn default_health_interval() -> f64 {
    3600.0
}

/// A config file (or a cloud-set document) that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {} is invalid: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("config {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Converts seconds from the config to a duration (negative, NaN or huge values are clamped).
pub fn secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.max(0.0)).unwrap_or(Duration::from_secs(u32::MAX as u64))
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        };
        match (&config.cloud.device_key, &config.cloud.pkcs11) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set either cloud.device-key or [cloud.pkcs11], not both".into(),
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "set cloud.device-key (a PEM file) or a [cloud.pkcs11] block for the device key"
                        .into(),
                ));
            }
            _ => {}
        }
        if config.cloud.server_name().is_empty() {
            return Err(invalid(format!(
                "cannot take a server name from cloud.address {:?}; set cloud.server-name",
                config.cloud.address
            )));
        }
        if config.reading_interval_secs == 0 {
            return Err(invalid("reading-interval-secs must be > 0".into()));
        }
        if let Some(slot) = &config.booted_slot
            && !matches!(slot.as_str(), "A" | "B" | "a" | "b")
        {
            return Err(invalid(format!("booted-slot {slot:?} is not A or B")));
        }
        config.tunables().check().map_err(invalid)?;
        Ok(config)
    }

    /// The run-time settings as the file gives them (the cloud may override them later).
    pub fn tunables(&self) -> Tunables {
        Tunables {
            keepalive_secs: self.keepalive_secs,
            dead_peer_timeout_secs: self.dead_peer_timeout_secs,
            batch_window_secs: self.batch_window_secs,
            health_interval_secs: self.health_interval_secs,
        }
    }
}

impl CloudConfig {
    /// The TLS server name: configured, or the host part of `address`.
    pub fn server_name(&self) -> String {
        if let Some(n) = &self.server_name {
            return n.clone();
        }
        let host = match self.address.rsplit_once(':') {
            Some((h, _)) => h,
            None => &self.address,
        };
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned()
    }
}

impl Tunables {
    /// Refuses values that would make the daemon misbehave (a zero window spins, a ping faster
    /// than the dead-peer timeout fights itself less than it wastes bytes).
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("keepalive-secs", self.keepalive_secs),
            ("dead-peer-timeout-secs", self.dead_peer_timeout_secs),
            ("batch-window-secs", self.batch_window_secs),
            ("health-interval-secs", self.health_interval_secs),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0 && v < 1e9) {
                return Err(format!(
                    "{name} must be a positive number of seconds, not {v}"
                ));
            }
        }
        Ok(())
    }

    pub fn keepalive(&self) -> Duration {
        secs(self.keepalive_secs)
    }
    pub fn dead_peer_timeout(&self) -> Duration {
        secs(self.dead_peer_timeout_secs)
    }
    pub fn batch_window(&self) -> Duration {
        secs(self.batch_window_secs)
    }
    pub fn health_interval(&self) -> Duration {
        secs(self.health_interval_secs)
    }
}

/// What the cloud last set with `SetConfig`, kept on `/data` so it survives restarts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CloudSet {
    pub config_version: u32,
    pub tunables: Tunables,
}

/// File name of [`CloudSet`] in the data directory.
pub const CLOUD_SET_FILE: &str = "cloud-config.json";

impl CloudSet {
    pub fn load(data_dir: &Path) -> Result<Option<CloudSet>, StoreError> {
        let path = data_dir.join(CLOUD_SET_FILE);
        match store::read_optional(&path)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StoreError::Parse {
                    path,
                    reason: e.to_string(),
                }),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(self).expect("config serialises");
        store::write_atomic(&data_dir.join(CLOUD_SET_FILE), &bytes)
    }
}

/// Applies a `SetConfig` document to `current`: TOML whose `[uplinkd]` table (kebab-case keys of
/// [`Tunables`]) is ours; other tables belong to other daemons and are left alone. Keys not
/// given keep their current value.
pub fn apply_cloud_config(current: &Tunables, document: &[u8]) -> Result<Tunables, String> {
    let text = std::str::from_utf8(document).map_err(|_| "config is not UTF-8".to_owned())?;
    let doc: toml::Table = toml::from_str(text).map_err(|e| format!("config is not TOML: {e}"))?;
    let Some(ours) = doc.get("uplinkd") else {
        return Ok(current.clone());
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Overrides {
        keepalive_secs: Option<f64>,
        dead_peer_timeout_secs: Option<f64>,
        batch_window_secs: Option<f64>,
        health_interval_secs: Option<f64>,
    }
    let o: Overrides = ours
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| format!("[uplinkd]: {}", e.message()))?;
    let new = Tunables {
        keepalive_secs: o.keepalive_secs.unwrap_or(current.keepalive_secs),
        dead_peer_timeout_secs: o
            .dead_peer_timeout_secs
            .unwrap_or(current.dead_peer_timeout_secs),
        batch_window_secs: o.batch_window_secs.unwrap_or(current.batch_window_secs),
        health_interval_secs: o
            .health_interval_secs
            .unwrap_or(current.health_interval_secs),
    };
    new.check()?;
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INLINE: &str = r#"
        data-dir = "/data/uplink"
        reading-interval-secs = 900
        keepalive-secs = 600
        batch-window-secs = 0.1

        [cloud]
        address = "ingest.example.net:7700"
        server-ca = "/etc/spark/server-ca.cert.pem"
        device-cert = "/data/spark/device.cert.pem"

        [cloud.pkcs11]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token-label = "spark"
        key-label = "device"
        pin-file = "/data/spark/pin"
    "#;

    #[test]
    fn parses_inline_toml() {
        let c = Config::parse(INLINE, Path::new("uplinkd.toml")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/data/uplink"));
        assert_eq!(c.cloud.server_name(), "ingest.example.net");
        let t = c.tunables();
        assert_eq!(t.keepalive(), Duration::from_secs(600));
        assert_eq!(t.batch_window(), Duration::from_millis(100));
        assert_eq!(t.health_interval(), Duration::from_secs(3600));
        assert_eq!(c.cloud.max_in_flight, 8);
        assert_eq!(c.cloud.pkcs11.as_ref().unwrap().key_label, "device");
    }

    #[test]
    fn refusals_name_the_file() {
        let e = Config::parse(
            &INLINE.replace("[cloud.pkcs11]", "device-key = \"/k\"\n[cloud.pkcs11]"),
            Path::new("/etc/x.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("/etc/x.toml"), "{e}");
        assert!(e.to_string().contains("not both"), "{e}");
        let e = Config::parse("cloud = 1", Path::new("/etc/y.toml")).unwrap_err();
        assert!(e.to_string().contains("/etc/y.toml"), "{e}");
        let e = Config::parse(
            &INLINE.replace("keepalive-secs = 600", "keepalive-secs = 0"),
            Path::new("z"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("keepalive-secs"), "{e}");
    }

    #[test]
    fn cloud_config_overlays_our_table_only() {
        let cur = Tunables::default();
        let new = apply_cloud_config(
            &cur,
            b"[uplinkd]\nkeepalive-secs = 900\n[meterd]\nanything = true\n",
        )
        .unwrap();
        assert_eq!(new.keepalive_secs, 900.0);
        assert_eq!(new.batch_window_secs, cur.batch_window_secs);
        assert_eq!(apply_cloud_config(&cur, b"[meterd]\nx = 1\n").unwrap(), cur);
        assert!(apply_cloud_config(&cur, b"[uplinkd]\nbogus = 1\n").is_err());
        assert!(apply_cloud_config(&cur, b"[uplinkd]\nkeepalive-secs = -1\n").is_err());
        assert!(apply_cloud_config(&cur, b"\xff").is_err());
    }
}
