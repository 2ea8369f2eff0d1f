//! The `spark-pipeline` configuration (TOML, kebab-case keys) and the rules it carries. The same
//! [`PipelineConfig`] drives the in-process pipeline ([`crate::run`]) and the binary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;

/// The binary's config file, resolved. Relative paths are resolved against the file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the default SQLite database lives (ingest's data dir: the pipeline reads its tables).
    pub data_dir: PathBuf,
    /// `sqlite://PATH?mode=rwc` or `postgres://USER@HOST/DB`; default: SQLite file
    /// `ingest.db` in `data-dir`, the database spark-ingest writes.
    pub database: Option<String>,
    /// PostgreSQL pool size.
    pub database_connections: u32,
    /// Batching and event rules (the other keys of the file).
    pub pipeline: PipelineConfig,
}

/// The file as written: every key at the top level or in `[consumption]` / `[events]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    #[serde(default)]
    database: Option<String>,
    #[serde(default = "default_database_connections")]
    database_connections: u32,
    workers: Option<usize>,
    batch_readings: Option<u64>,
    batch_wait_ms: Option<u64>,
    poll_interval_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    retry_secs: Option<u64>,
    #[serde(default)]
    consumption: ConsumptionRules,
    #[serde(default)]
    events: EventRules,
}

/// How the pipeline batches and what it calls an event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Batches in flight at once (each one gateway's; a gateway is never in two).
    pub workers: usize,
    /// A batch takes whole ingest messages until it holds at least this many readings.
    pub batch_readings: u64,
    /// A gateway with fewer pending readings than `batch-readings` waits this long (from when
    /// the pipeline first saw them) so batches are not tiny.
    pub batch_wait_ms: u64,
    /// How often to look for new readings when idle.
    pub poll_interval_ms: u64,
    /// On shutdown, batches in flight get this long to commit; then they are rolled back.
    pub shutdown_grace_secs: u64,
    /// A gateway whose batch failed is retried after this long.
    pub retry_secs: u64,
    pub consumption: ConsumptionRules,
    pub events: EventRules,
}

/// How consumption is computed from cumulative registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ConsumptionRules {
    /// The most a meter can draw, W. A drop of the register is a rollover or a reset only when
    /// the implied consumption fits under this power over the interval (at least 15 minutes).
    pub max_power_w: i64,
    /// An interval between two readings longer than this is not spread over the hours it spans:
    /// its consumption goes to the hour of the later reading.
    pub max_gap_secs: i64,
}

/// Thresholds of the events the pipeline raises.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct EventRules {
    /// A meter not heard for this long (gateway time) is silent.
    pub meter_silent_secs: i64,
    /// Meters not heard for this long are no longer counted at all (gone, not silent).
    pub meter_forget_secs: i64,
    /// Silent meters whose last readings lie within this span went silent "at once".
    pub outage_spread_secs: i64,
    /// An outage needs at least this many meters silent at once ...
    pub outage_min_meters: u32,
    /// ... and at least this fraction of the gateway's active meters.
    pub outage_fraction: f64,
    /// A register unchanged for this long raises `meter_zero_usage`.
    pub zero_usage_secs: i64,
    /// A gateway whose ingest `last_seen` is older than this raises `gateway_silent`.
    pub gateway_silent_secs: i64,
    /// How often gateway silence is checked.
    pub silence_check_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: 4,
            batch_readings: 50_000,
            batch_wait_ms: 1000,
            poll_interval_ms: 500,
            shutdown_grace_secs: 20,
            retry_secs: 5,
            consumption: ConsumptionRules::default(),
            events: EventRules::default(),
        }
    }
}

impl Default for ConsumptionRules {
    fn default() -> Self {
        ConsumptionRules {
            max_power_w: 100_000,
            max_gap_secs: 31 * 86_400,
        }
    }
}

impl Default for EventRules {
    fn default() -> Self {
        EventRules {
            meter_silent_secs: 3600,
            meter_forget_secs: 86_400,
            outage_spread_secs: 1800,
            outage_min_meters: 3,
            outage_fraction: 0.2,
            zero_usage_secs: 86_400,
            gateway_silent_secs: 3600,
            silence_check_secs: 60,
        }
    }
}

impl PipelineConfig {
    pub(crate) fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }
    pub(crate) fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    /// Refuses values that cannot work.
    pub fn check(&self) -> Result<(), String> {
        if self.workers == 0 {
            return Err("`workers` must be at least 1".into());
        }
        if self.batch_readings == 0 {
            return Err("`batch-readings` must be at least 1".into());
        }
        if self.consumption.max_power_w <= 0 || self.consumption.max_gap_secs <= 0 {
            return Err(
                "`consumption.max-power-w` and `consumption.max-gap-secs` must be positive".into(),
            );
        }
        let e = &self.events;
        if !(0.0..=1.0).contains(&e.outage_fraction) {
            return Err("`events.outage-fraction` must be between 0 and 1".into());
        }
        if e.meter_silent_secs <= 0 || e.meter_forget_secs <= e.meter_silent_secs {
            return Err(
                "`events.meter-forget-secs` must be larger than `events.meter-silent-secs` (> 0)"
                    .into(),
            );
        }
        if e.zero_usage_secs <= 0 || e.gateway_silent_secs <= 0 || e.outage_spread_secs < 0 {
            return Err("event durations must be positive".into());
        }
        Ok(())
    }
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/spark-ingest")
}
fn default_database_connections() -> u32 {
    8
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
        let file: File = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let d = PipelineConfig::default();
        let mut config = Config {
            data_dir: file.data_dir,
            database: file.database,
            database_connections: file.database_connections,
            pipeline: PipelineConfig {
                workers: file.workers.unwrap_or(d.workers),
                batch_readings: file.batch_readings.unwrap_or(d.batch_readings),
                batch_wait_ms: file.batch_wait_ms.unwrap_or(d.batch_wait_ms),
                poll_interval_ms: file.poll_interval_ms.unwrap_or(d.poll_interval_ms),
                shutdown_grace_secs: file.shutdown_grace_secs.unwrap_or(d.shutdown_grace_secs),
                retry_secs: file.retry_secs.unwrap_or(d.retry_secs),
                consumption: file.consumption,
                events: file.events,
            },
        };
        config
            .pipeline
            .check()
            .map_err(|what| ConfigError::Invalid {
                path: path.to_owned(),
                what,
            })?;
        if let Some(dir) = path.parent()
            && config.data_dir.is_relative()
        {
            config.data_dir = dir.join(&config.data_dir);
        }
        Ok(config)
    }

    /// The database URL: `database`, or the SQLite file ingest keeps in `data-dir`.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("ingest.db").display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_toml() {
        let c = Config::parse(
            r#"
            data-dir = "state"
            workers = 2
            batch-readings = 1000
            [events]
            outage-min-meters = 5
            [consumption]
            max-power-w = 50000
            "#,
            Path::new("/etc/spark/pipeline.toml"),
        )
        .unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/spark/state"));
        assert_eq!(c.pipeline.workers, 2);
        assert_eq!(c.pipeline.batch_readings, 1000);
        assert_eq!(c.pipeline.events.outage_min_meters, 5);
        assert_eq!(c.pipeline.events.zero_usage_secs, 86_400);
        assert_eq!(c.pipeline.consumption.max_power_w, 50_000);
        assert_eq!(
            c.database_url(),
            "sqlite:///etc/spark/state/ingest.db?mode=rwc"
        );
    }

    #[test]
    fn refuses_unknown_keys_and_bad_values() {
        let p = Path::new("p.toml");
        let e = Config::parse("wokers = 2", p).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("wokers"), "{e}");
        let e = Config::parse("workers = 0", p).unwrap_err().to_string();
        assert!(e.contains("workers"), "{e}");
        let e = Config::parse("[events]\noutage-fraction = 2.0", p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outage-fraction"), "{e}");
    }
}
