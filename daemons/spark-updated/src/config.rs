//! The agent's configuration: one TOML file (kebab-case keys), `/etc/spark/updated.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `spark-updated` is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The device serial (CN of the device certificate), used in report URLs.
    pub device: String,
    /// Directory on the persistent data partition for the state file and bundles.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Base URL of the OTA server (`https://host:port`), no trailing slash.
    pub server: String,
    /// CA that signs the OTA server's certificate (pinned; the system roots are not used).
    pub server_ca: PathBuf,
    /// Device certificate and key for mutual TLS.
    pub device_cert: PathBuf,
    pub device_key: PathBuf,
    /// Ed25519 release public keys (PEM) trusted to sign releases.
    pub release_keys: Vec<PathBuf>,
    /// Version to assume for the running slot when RAUC knows none (factory image).
    #[serde(default = "default_factory_version")]
    pub factory_version: String,
    /// Seconds between polls of the OTA server; each wait is jittered by ±20 %.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Download bandwidth cap in bytes per second; absent for none.
    #[serde(default)]
    pub rate_limit: Option<u64>,
    /// Bytes to keep free on `/data` besides the bundle.
    #[serde(default = "default_reserve")]
    pub reserve_bytes: u64,
    /// Command (argv) that reboots the device; it must exit 0 once the reboot is under way.
    /// The default suits systemd; a board simulator or a device with its own watchdog-reset
    /// tool names another.
    #[serde(default = "default_reboot_command")]
    pub reboot_command: Vec<String>,
    /// Health check after booting a new slot.
    #[serde(default)]
    pub health: HealthConfig,
}

/// What "healthy" means after an update.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HealthConfig {
    /// systemd units that must be active (`systemctl is-active`).
    #[serde(default)]
    pub required_units: Vec<String>,
    /// Commands (argv) that must exit 0.
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    /// How long units and commands may take to become healthy; they are retried until then.
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
    /// When set, `io.spark.Uplink1.Connected` (spark-uplinkd) must become true within this
    /// many seconds of the check's start: a firmware that cannot reach the cloud is not healthy.
    #[serde(default)]
    pub uplink_connected_within_secs: Option<u64>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/data/spark-updated")
}
fn default_factory_version() -> String {
    "0.0.0".into()
}
fn default_poll_interval() -> u64 {
    6 * 3600
}
fn default_reboot_command() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}
fn default_reserve() -> u64 {
    8 << 20
}
fn default_health_timeout() -> u64 {
    300
}

/// A config file that cannot be used.
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
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_toml() {
        let config: Config = toml::from_str(
            r#"
            device = "bbb-0042"
            server = "https://ota.example:8443"
            server-ca = "/etc/spark/server-ca.pem"
            device-cert = "/etc/spark/device.pem"
            device-key = "/etc/spark/device.key.pem"
            release-keys = ["/etc/spark/release.pub.pem"]
            rate-limit = 65536

            [health]
            required-units = ["spark-uplinkd.service"]
            commands = [["/usr/bin/spark-selftest", "--quick"]]
            timeout-secs = 120
            uplink-connected-within-secs = 600
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/data/spark-updated"));
        assert_eq!(config.rate_limit, Some(65536));
        assert_eq!(config.poll_interval(), Duration::from_secs(6 * 3600));
        assert_eq!(config.health.required_units, ["spark-uplinkd.service"]);
        assert_eq!(config.health.commands[0][1], "--quick");
        assert_eq!(config.health.uplink_connected_within_secs, Some(600));
        assert_eq!(config.reboot_command, ["systemctl", "reboot"]);
        assert!(toml::from_str::<Config>("device = 1").is_err());
    }
}
