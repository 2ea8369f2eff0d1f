//! The `spark-ingest` configuration file (TOML, kebab-case keys). Relative paths are resolved
//! against the config file's directory, so a config next to its certificates works from any
//! working directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// Everything the binary reads from its config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// Telemetry listener (gateways, mutual TLS with device certificates).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Internal API listener (push channel, gateway status; mutual TLS with server-CA client
    /// certificates). Left out: no internal API.
    #[serde(default)]
    pub internal_listen: Option<SocketAddr>,
    /// Where the default SQLite database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB`; default: SQLite file
    /// `ingest.db` in `data-dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// PostgreSQL pool size (SQLite uses a small fixed pool: it has one writer anyway).
    #[serde(default = "default_database_connections")]
    pub database_connections: u32,
    pub tls: TlsFiles,
    /// Gateway connections at once; more are closed at once and logged.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Certificate CNs allowed on the internal API (e.g. `["spark-ota"]`); empty: any client
    /// certificate from the server CA.
    #[serde(default)]
    pub internal_clients: Vec<String>,
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "default_hello_timeout")]
    pub hello_timeout_secs: u64,
    /// A gateway connection silent this long is closed (gateways ping when idle).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// `last_seen` is written at most this often between commits.
    #[serde(default = "default_last_seen_interval")]
    pub last_seen_interval_secs: u64,
    /// The data pipeline run in this process (`[pipeline]`): on unless `enabled = false`.
    #[serde(default)]
    pub pipeline: EmbeddedPipeline,
}

/// The `[pipeline]` table: spark-pipeline run in-process beside the ingest server, on the same
/// database. On by default, so a plain SQLite install computes consumption and grid events
/// without a second process; `enabled = false` where separate `spark-pipeline` processes do it
/// (for scale). Every other key is one of spark-pipeline's own (`workers`, `batch-readings`,
/// `[pipeline.consumption]`, `[pipeline.events]`, ...), with its defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct EmbeddedPipeline {
    /// Run the pipeline in this process.
    pub enabled: bool,
    /// The pipeline's own PostgreSQL pool (SQLite uses a small fixed pool).
    pub database_connections: u32,
    /// Batching and event rules, as in spark-pipeline's config file.
    pub config: spark_pipeline::PipelineConfig,
}

impl Default for EmbeddedPipeline {
    fn default() -> Self {
        EmbeddedPipeline {
            enabled: true,
            database_connections: 8,
            config: spark_pipeline::PipelineConfig::default(),
        }
    }
}

impl TryFrom<toml::Table> for EmbeddedPipeline {
    type Error = String;

    /// `enabled` and `database-connections` are ingest's; the rest goes to spark-pipeline's
    /// [`spark_pipeline::PipelineConfig`] (which refuses unknown keys and checks the values).
    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let mut out = EmbeddedPipeline::default();
        if let Some(v) = table.remove("enabled") {
            out.enabled = v
                .as_bool()
                .ok_or("`pipeline.enabled` must be true or false")?;
        }
        if let Some(v) = table.remove("database-connections") {
            out.database_connections = v
                .as_integer()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or("`pipeline.database-connections` must be a positive integer")?;
        }
        out.config = spark_pipeline::PipelineConfig::deserialize(toml::Value::Table(table))
            .map_err(|e| format!("in [pipeline]: {}", e.message()))?;
        out.config
            .check()
            .map_err(|e| format!("in [pipeline]: {e}"))?;
        Ok(out)
    }
}

/// Certificates and CAs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsFiles {
    /// Server certificate chain (PEM), issued by the server CA.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The device CA: gateways' client certificates must chain to it.
    pub device_ca: PathBuf,
    /// The server CA: internal API clients' certificates must chain to it (needed with
    /// `internal-listen`).
    #[serde(default)]
    pub server_ca: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7443))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/spark-ingest")
}
fn default_database_connections() -> u32 {
    16
}
fn default_max_connections() -> usize {
    10_000
}
fn default_handshake_timeout() -> u64 {
    20
}
fn default_hello_timeout() -> u64 {
    30
}
fn default_idle_timeout() -> u64 {
    30 * 60
}
fn default_last_seen_interval() -> u64 {
    60
}

impl Config {
    /// Reads and checks the config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.data_dir);
        resolve(&mut config.tls.cert);
        resolve(&mut config.tls.key);
        resolve(&mut config.tls.device_ca);
        if let Some(p) = &mut config.tls.server_ca {
            resolve(p);
        }
        let invalid = |reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if config.internal_listen.is_some() && config.tls.server_ca.is_none() {
            return Err(invalid(
                "`internal-listen` needs `tls.server-ca` (the CA of the internal API's clients)",
            ));
        }
        if config.max_connections == 0 {
            return Err(invalid("`max-connections` must be at least 1"));
        }
        if config.idle_timeout_secs == 0 || config.hello_timeout_secs == 0 {
            return Err(invalid("timeouts must be at least 1 second"));
        }
        Ok(config)
    }

    /// The database URL: `database`, or the SQLite file in `data-dir`.
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ingest.db").display()
            )
        })
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
    pub fn hello_timeout(&self) -> Duration {
        Duration::from_secs(self.hello_timeout_secs)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
    pub fn last_seen_interval(&self) -> Duration {
        Duration::from_secs(self.last_seen_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(
            r#"
            [tls]
            cert = "pki/server.cert.pem"
            key = "pki/server.key.pem"
            device-ca = "/etc/spark/device-ca.cert.pem"
            "#,
            Path::new("/etc/spark/ingest.toml"),
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:7443".parse().unwrap());
        assert_eq!(c.internal_listen, None);
        assert_eq!(c.tls.cert, Path::new("/etc/spark/pki/server.cert.pem"));
        assert_eq!(c.tls.device_ca, Path::new("/etc/spark/device-ca.cert.pem"));
        assert_eq!(
            c.database_url(),
            "sqlite:///var/lib/spark-ingest/ingest.db?mode=rwc"
        );
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.idle_timeout(), Duration::from_secs(1800));
    }

    #[test]
    fn full_config() {
        let c = Config::parse(
            r#"
            listen = "127.0.0.1:17443"
            internal-listen = "127.0.0.1:17444"
            data-dir = "data"
            database = "postgres://ingest@db/spark"
            database-connections = 32
            max-connections = 500
            internal-clients = ["spark-ota"]
            idle-timeout-secs = 900
            [tls]
            cert = "s.pem"
            key = "k.pem"
            device-ca = "d.pem"
            server-ca = "sca.pem"
            "#,
            Path::new("cfg/ingest.toml"),
        )
        .unwrap();
        assert_eq!(c.internal_listen, Some("127.0.0.1:17444".parse().unwrap()));
        assert_eq!(c.database_url(), "postgres://ingest@db/spark");
        assert_eq!(c.tls.server_ca.as_deref(), Some(Path::new("cfg/sca.pem")));
        assert_eq!(c.internal_clients, ["spark-ota"]);
        assert_eq!(c.data_dir, Path::new("cfg/data"));
    }

    #[test]
    fn errors_name_the_file() {
        let e = Config::parse("listen = 5", Path::new("/etc/x.toml")).unwrap_err();
        assert!(e.to_string().contains("/etc/x.toml"), "{e}");
        let e = Config::parse(
            "internal-listen = \"127.0.0.1:1\"\n[tls]\ncert=\"a\"\nkey=\"b\"\ndevice-ca=\"c\"\n",
            Path::new("/etc/x.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("server-ca"), "{e}");
        let e = Config::parse("bogus = 1", Path::new("/etc/x.toml")).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
