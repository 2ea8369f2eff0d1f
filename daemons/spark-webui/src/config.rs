//! The web UI's configuration: one TOML file (kebab-case keys), `/etc/spark/webui.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything `spark-webui` is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTPS listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory on the persistent data partition: password hash, generated certificate.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// D-Bus address to read from instead of the system bus (tests, development).
    #[serde(default)]
    pub bus_address: Option<String>,
    /// A provided certificate and key instead of the self-signed one made at first start.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// How long a login lasts, in seconds (default 8 hours: one working day on site).
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime_secs: u64,
    /// How often the page's figures are re-read while someone is looking, in seconds; changes
    /// the daemons signal (PropertiesChanged) show sooner.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
}

/// A provided certificate chain and its key (PEM).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 443))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/data/spark-webui")
}
fn default_session_lifetime() -> u64 {
    8 * 3600
}
fn default_refresh() -> u64 {
    5
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
        Self::parse(&text, path)
    }

    /// Parses config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// A config with every default, listening on `listen` (tests).
    pub fn with_listen(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            bus_address: None,
            tls: None,
            session_lifetime_secs: default_session_lifetime(),
            refresh_secs: default_refresh(),
        }
    }

    pub fn session_lifetime(&self) -> Duration {
        Duration::from_secs(self.session_lifetime_secs.max(60))
    }

    pub fn refresh(&self) -> Duration {
        Duration::from_secs(self.refresh_secs.clamp(1, 3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inline_toml() {
        let config = Config::parse("", Path::new("t.toml")).unwrap();
        assert_eq!(config.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/data/spark-webui"));
        assert_eq!(config.session_lifetime(), Duration::from_secs(8 * 3600));
        assert_eq!(config.tls, None);

        let config = Config::parse(
            r#"
            listen = "127.0.0.1:8443"
            data-dir = "/tmp/w"
            bus-address = "unix:path=/tmp/bus"
            session-lifetime-secs = 600
            refresh-secs = 2
            [tls]
            cert = "/etc/spark/webui.crt"
            key = "/etc/spark/webui.key"
            "#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 8443);
        assert_eq!(config.bus_address.as_deref(), Some("unix:path=/tmp/bus"));
        assert_eq!(config.refresh(), Duration::from_secs(2));
        assert_eq!(
            config.tls.unwrap().key,
            PathBuf::from("/etc/spark/webui.key")
        );
        let e =
            Config::parse("listen = \"nowhere\"", Path::new("/etc/spark/webui.toml")).unwrap_err();
        assert!(e.to_string().contains("/etc/spark/webui.toml"), "{e}");
        assert!(Config::parse("unknown = 1", Path::new("t")).is_err());
    }
}
