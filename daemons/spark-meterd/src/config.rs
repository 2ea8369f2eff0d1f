//! meterd's configuration: one TOML file (kebab-case keys), `/etc/spark/meterd.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::link::RadioAddress;

/// Everything `spark-meterd` is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// The radio module: a serial device (`/dev/ttyS1`) or `unix:/path/to/socket` (simulator).
    pub radio: RadioAddress,
    /// Serial line speed (ignored for sockets).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Directory on the persistent data partition for the reading buffer.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// D-Bus address to serve on instead of the system bus (tests, development).
    #[serde(default)]
    pub bus_address: Option<String>,
    /// Most readings kept for readers; past it the oldest are dropped (loudly). Default: 30 days
    /// of 2000 meters read every 15 minutes.
    #[serde(default = "default_max_buffered")]
    pub max_buffered: u64,
    /// How often the module is pinged; three pings without an answer make it offline.
    #[serde(default = "default_ping_interval")]
    pub ping_interval_ms: u64,
    /// Longest wait between reconnect attempts (the wait doubles from 100 ms up to this).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

fn default_baud() -> u32 {
    115_200
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/data/spark-meterd")
}
fn default_max_buffered() -> u64 {
    30 * 96 * 2000
}
fn default_ping_interval() -> u64 {
    30_000
}
fn default_reconnect_max() -> u64 {
    10_000
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

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms.max(10))
    }

    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_toml() {
        let config: Config = toml::from_str(r#"radio = "/dev/ttyS1""#).unwrap();
        assert_eq!(config.radio, RadioAddress::Tty("/dev/ttyS1".into()));
        assert_eq!(config.data_dir, PathBuf::from("/data/spark-meterd"));
        assert_eq!(config.max_buffered, 5_760_000);
        assert_eq!(config.bus_address, None);

        let config: Config = toml::from_str(
            r#"
            radio = "unix:/run/spark/radio.sock"
            data-dir = "/tmp/m"
            bus-address = "unix:path=/tmp/bus"
            ping-interval-ms = 500
            "#,
        )
        .unwrap();
        assert_eq!(
            config.radio,
            RadioAddress::Unix("/run/spark/radio.sock".into())
        );
        assert_eq!(config.ping_interval(), Duration::from_millis(500));
        assert!(toml::from_str::<Config>("radio = 1").is_err());
        assert!(toml::from_str::<Config>("radio = \"x\"\nunknown = 1").is_err());
    }
}
