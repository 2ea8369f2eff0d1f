//! The service's config file (TOML, kebab-case keys). Raw file contents ([`Config`]) are kept
//! apart from derived values (paths resolved against the file's directory, default URLs).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::ConfigError;

/// The whole config of `spark-api`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// HTTPS listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the default token database lives.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Ingest's database, read only: `sqlite://PATH` or `postgres://USER@HOST/DB`.
    pub database: String,
    /// spark-api's own database (bearer tokens); default `sqlite://DATA-DIR/api.db?mode=rwc`.
    pub tokens_database: Option<String>,
    /// PostgreSQL pool size (each database).
    #[serde(default = "default_connections")]
    pub database_connections: u32,
    /// Client certificate CNs allowed to connect; empty: any certificate from `tls.client-ca`.
    #[serde(default)]
    pub allowed_clients: Vec<String>,
    pub tls: TlsFiles,
    /// Ingest's internal push API, for commands. Without it, `POST …/commands` answers 502.
    pub ingest: Option<IngestFiles>,
}

/// The API's own TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TlsFiles {
    /// Server certificate chain (server CA) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients' certificates must chain to it (the server CA: internal systems' certificates).
    pub client_ca: PathBuf,
}

/// How to reach ingest's internal push API.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IngestFiles {
    /// `https://HOST:PORT` of ingest's `internal-listen`.
    pub url: String,
    /// Our client certificate and key there (`spark-keys issue-service spark-api`).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA ingest's server certificate chains to (the server CA).
    pub ca: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/spark-api")
}

fn default_connections() -> u32 {
    8
}

impl Config {
    /// Reads and checks `path`; relative paths inside are taken relative to the file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses config text; `path` names it in errors, `base` anchors relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        };
        if config.database_connections == 0 {
            return Err(invalid("database-connections must be at least 1".into()));
        }
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.data_dir);
        resolve(&mut config.tls.cert);
        resolve(&mut config.tls.key);
        resolve(&mut config.tls.client_ca);
        if let Some(ingest) = &mut config.ingest {
            if !ingest.url.starts_with("https://") {
                return Err(invalid(format!(
                    "ingest.url {:?} must be https://HOST:PORT (ingest's internal-listen)",
                    ingest.url
                )));
            }
            resolve(&mut ingest.cert);
            resolve(&mut ingest.key);
            resolve(&mut ingest.ca);
        }
        // A relative SQLite path in a URL is relative to the config file too.
        config.database = resolve_sqlite(&config.database, base);
        config.tokens_database = config
            .tokens_database
            .as_deref()
            .map(|u| resolve_sqlite(u, base));
        Ok(config)
    }

    /// The token database URL (default: a SQLite file in the data directory).
    pub fn tokens_database_url(&self) -> String {
        self.tokens_database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("api.db").display()
            )
        })
    }
}

fn resolve_sqlite(url: &str, base: &Path) -> String {
    match url.strip_prefix("sqlite://") {
        Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
            format!("sqlite://{}", base.join(rest).display())
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_config() {
        let text = r#"
            listen = "127.0.0.1:9443"
            data-dir = "state"
            database = "sqlite://data/ingest.db"
            allowed-clients = ["billing"]
            [tls]
            cert = "pki/server.cert.pem"
            key = "pki/server.key.pem"
            client-ca = "pki/server-ca.cert.pem"
            [ingest]
            url = "https://localhost:7444"
            cert = "pki/services/spark-api.cert.pem"
            key = "pki/services/spark-api.key.pem"
            ca = "pki/server-ca.cert.pem"
        "#;
        let c = Config::parse(text, Path::new("/etc/api.toml"), Path::new("/etc")).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(c.database, "sqlite:///etc/data/ingest.db");
        assert_eq!(c.tls.cert, Path::new("/etc/pki/server.cert.pem"));
        assert_eq!(
            c.tokens_database_url(),
            "sqlite:///etc/state/api.db?mode=rwc"
        );
        assert_eq!(c.allowed_clients, ["billing"]);
        assert_eq!(
            c.ingest.unwrap().cert,
            Path::new("/etc/pki/services/spark-api.cert.pem")
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let base =
            "database = \"sqlite://x.db\"\n[tls]\ncert = \"a\"\nkey = \"b\"\nclient-ca = \"c\"\n";
        let e = Config::parse(
            &format!("colour = 1\n{base}"),
            Path::new("/x/api.toml"),
            Path::new("/x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/x/api.toml") && e.contains("colour"), "{e}");
        let e = Config::parse(
            &format!(
                "{base}[ingest]\nurl = \"http://h:1\"\ncert = \"a\"\nkey = \"b\"\nca = \"c\"\n"
            ),
            Path::new("/x/api.toml"),
            Path::new("/x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("https://"), "{e}");
    }
}
