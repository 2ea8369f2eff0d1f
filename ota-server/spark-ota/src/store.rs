//! The OTA server's database: SQLite by default, PostgreSQL in production, the same SQL text for
//! both (`$N` parameters, `ON CONFLICT`, `RETURNING` work on each), migrations embedded and applied
//! at start-up. Times are unix seconds, sizes and ids `i64` on both backends.
//!
//! The two pools have different types, so each query is written once inside [`on_pool!`], which
//! expands it for each backend.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::StoreError;

/// Which backend a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$store` uses.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            Store::Sqlite($pool) => $body,
            Store::Postgres($pool) => $body,
        }
    };
}

/// A verified bundle held in the blob store.
#[derive(Debug, Clone, Serialize)]
pub struct BundleRecord {
    pub sha256: String,
    pub size: i64,
    pub compatible: String,
    pub version: String,
    pub format: String,
    pub signer: String,
    pub uploaded_at: i64,
}

/// A release: bundle + signed manifest.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReleaseRecord {
    pub id: i64,
    pub compatible: String,
    pub version: String,
    pub bundle_sha256: String,
    pub bundle_size: i64,
    pub key_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub min_version: Option<String>,
    pub allow_downgrade: bool,
    /// The rollout id signed into the manifest, if any.
    pub manifest_rollout: Option<String>,
    /// The signed release (JSON form) exactly as uploaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed: Option<String>,
    pub created_at: i64,
    pub yanked_at: Option<i64>,
    pub yank_reason: Option<String>,
}

/// A device as last heard of.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct DeviceRecord {
    pub device: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub compatible: Option<String>,
    pub current_version: Option<String>,
    pub booted_slot: Option<String>,
    pub agent_state: Option<String>,
    pub last_seq: Option<i64>,
    pub last_reason: Option<String>,
    pub last_report_at: Option<i64>,
    pub offered_release: Option<i64>,
    pub offered_rollout: Option<String>,
    pub offered_at: Option<i64>,
    /// Hardware revision (from check-in or an admin).
    #[serde(default)]
    pub hardware_rev: Option<String>,
    /// Tags such as `site` and `region` (set by an admin).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// IANA time zone of the device's site (set by an admin), for maintenance windows.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// What a device told at check-in (all optional: the agent's plain GET poll tells nothing).
/// Unknown keys are ignored so that newer agents can add fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckIn {
    #[serde(default)]
    pub current_version: Option<String>,
    #[serde(default)]
    pub booted_slot: Option<String>,
    #[serde(default)]
    pub agent_state: Option<String>,
    #[serde(default)]
    pub compatible: Option<String>,
    /// The board's hardware revision (e.g. `rev-c`), if the agent knows it.
    #[serde(default)]
    pub hardware_rev: Option<String>,
}

/// Device attributes an admin sets (`PUT /v1/devices/{id}/attributes`); absent fields keep their
/// stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAttributes {
    #[serde(default)]
    pub hardware_rev: Option<String>,
    /// Replaces the device's tags when given.
    #[serde(default)]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A rollout as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutRecord {
    pub id: String,
    pub release_id: i64,
    pub state: String,
    pub reason: Option<String>,
    /// The plan, as text (`10%@0d,50%@2h,100%@6h`).
    pub plan: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every write of the engine state (optimistic concurrency).
    pub revision: i64,
}

/// A rollout's engine state as stored: the header (JSON `spark_rollout::RolloutHeader`) and one
/// JSON `spark_rollout::DeviceState` per targeted device.
#[derive(Debug, Clone)]
pub struct StoredEngine {
    pub revision: i64,
    pub header: Option<String>,
    pub devices: Vec<(String, String)>,
}

/// One write of a rollout's engine state.
#[derive(Debug, Clone)]
pub struct EngineWrite<'a> {
    pub id: &'a str,
    /// The revision the change was computed from; the write fails if another came first.
    pub revision: i64,
    pub state: &'a str,
    pub reason: Option<&'a str>,
    pub header: &'a str,
    /// Device rows to upsert.
    pub devices: &'a [(String, String)],
    /// Events to append: (engine time, JSON).
    pub events: &'a [(i64, String)],
}

/// Bytes served, summed per rollout or per device.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DataCost {
    /// Rollout id ('' for downloads outside any rollout) or device serial.
    pub key: String,
    pub bytes: i64,
    pub requests: i64,
    pub devices: i64,
}

/// Result of storing a status report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Stored,
    /// The same (device, seq) was stored before: a resend.
    Duplicate,
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &userinfo[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

macro_rules! release_row {
    ($r:expr, $with_signed:expr) => {{
        let r = $r;
        ReleaseRecord {
            id: r.try_get("id")?,
            compatible: r.try_get("compatible")?,
            version: r.try_get("version")?,
            bundle_sha256: r.try_get("bundle_sha256")?,
            bundle_size: r.try_get("bundle_size")?,
            key_id: r.try_get("key_id")?,
            issued_at: r.try_get("issued_at")?,
            expires_at: r.try_get("expires_at")?,
            min_version: r.try_get("min_version")?,
            allow_downgrade: r.try_get::<i64, _>("allow_downgrade")? != 0,
            manifest_rollout: r.try_get("manifest_rollout")?,
            signed: if $with_signed {
                Some(r.try_get("signed")?)
            } else {
                None
            },
            created_at: r.try_get("created_at")?,
            yanked_at: r.try_get("yanked_at")?,
            yank_reason: r.try_get("yank_reason")?,
        }
    }};
}

macro_rules! device_row {
    ($r:expr) => {{
        let r = $r;
        DeviceRecord {
            device: r.try_get("device")?,
            first_seen: r.try_get("first_seen")?,
            last_seen: r.try_get("last_seen")?,
            compatible: r.try_get("compatible")?,
            current_version: r.try_get("current_version")?,
            booted_slot: r.try_get("booted_slot")?,
            agent_state: r.try_get("agent_state")?,
            last_seq: r.try_get("last_seq")?,
            last_reason: r.try_get("last_reason")?,
            last_report_at: r.try_get("last_report_at")?,
            offered_release: r.try_get("offered_release")?,
            offered_rollout: r.try_get("offered_rollout")?,
            offered_at: r.try_get("offered_at")?,
            hardware_rev: r.try_get("hardware_rev")?,
            // Written by this server only (a JSON object); anything else reads as no tags.
            tags: r
                .try_get::<Option<String>, _>("tags")?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default(),
            time_zone: r.try_get("time_zone")?,
        }
    }};
}

macro_rules! rollout_row {
    ($r:expr) => {{
        let r = $r;
        RolloutRecord {
            id: r.try_get("id")?,
            release_id: r.try_get("release_id")?,
            state: r.try_get("state")?,
            reason: r.try_get("reason")?,
            plan: r.try_get("plan")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            revision: r.try_get("revision")?,
        }
    }};
}

const RELEASE_COLUMNS: &str = "id, compatible, version, bundle_sha256, bundle_size, key_id, issued_at, expires_at, min_version, allow_downgrade, manifest_rollout, signed, created_at, yanked_at, yank_reason";

/// A new release to insert (checked by the caller).
#[derive(Debug, Clone)]
pub struct NewRelease {
    pub compatible: String,
    pub version: String,
    pub bundle_sha256: String,
    pub bundle_size: i64,
    pub key_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
    pub min_version: Option<String>,
    pub allow_downgrade: bool,
    pub manifest_rollout: Option<String>,
    pub signed: String,
}

impl Store {
    /// Opens the database at `url` and applies the migrations. `sqlite://PATH?mode=rwc` (WAL,
    /// `synchronous=FULL`) or `postgres://…` (add `?options[search_path]=SCHEMA` for a schema).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    // ---- bundles and releases ----

    pub async fn bundle(&self, sha256: &str) -> Result<Option<BundleRecord>, StoreError> {
        let q = "SELECT sha256, size, compatible, version, format, signer, uploaded_at FROM bundles WHERE sha256 = $1";
        let row = async {
            on_pool!(self, p => {
                let row = sqlx::query(q).bind(sha256).fetch_optional(p).await?;
                row.map(|r| -> Result<_, sqlx::Error> {
                    Ok(BundleRecord {
                        sha256: r.try_get("sha256")?,
                        size: r.try_get("size")?,
                        compatible: r.try_get("compatible")?,
                        version: r.try_get("version")?,
                        format: r.try_get("format")?,
                        signer: r.try_get("signer")?,
                        uploaded_at: r.try_get("uploaded_at")?,
                    })
                })
                .transpose()
            })
        };
        row.await.map_err(StoreError::query("read bundle"))
    }

    /// Inserts the bundle row (if new) and the release in one transaction. Returns the release
    /// id, or `Err(Some(existing id))` when (compatible, version) exists already.
    pub async fn insert_release(
        &self,
        bundle: &BundleRecord,
        release: &NewRelease,
        now: i64,
    ) -> Result<Result<i64, i64>, StoreError> {
        let ins_bundle = "INSERT INTO bundles (sha256, size, compatible, version, format, signer, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sha256) DO NOTHING";
        let ins_release = "INSERT INTO releases (compatible, version, bundle_sha256, bundle_size, key_id, issued_at, expires_at, min_version, allow_downgrade, manifest_rollout, signed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (compatible, version) DO NOTHING RETURNING id";
        let existing = "SELECT id FROM releases WHERE compatible = $1 AND version = $2";
        let work = async {
            on_pool!(self, p => {
                let mut tx = p.begin().await?;
                sqlx::query(ins_bundle)
                    .bind(&bundle.sha256)
                    .bind(bundle.size)
                    .bind(&bundle.compatible)
                    .bind(&bundle.version)
                    .bind(&bundle.format)
                    .bind(&bundle.signer)
                    .bind(bundle.uploaded_at)
                    .execute(&mut *tx)
                    .await?;
                let id: Option<i64> = sqlx::query_scalar(ins_release)
                    .bind(&release.compatible)
                    .bind(&release.version)
                    .bind(&release.bundle_sha256)
                    .bind(release.bundle_size)
                    .bind(&release.key_id)
                    .bind(release.issued_at)
                    .bind(release.expires_at)
                    .bind(&release.min_version)
                    .bind(i64::from(release.allow_downgrade))
                    .bind(&release.manifest_rollout)
                    .bind(&release.signed)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                match id {
                    Some(id) => {
                        tx.commit().await?;
                        Ok(Ok(id))
                    }
                    None => {
                        let id: i64 = sqlx::query_scalar(existing)
                            .bind(&release.compatible)
                            .bind(&release.version)
                            .fetch_one(&mut *tx)
                            .await?;
                        tx.rollback().await?;
                        Ok(Err(id))
                    }
                }
            })
        };
        work.await.map_err(StoreError::query("insert release"))
    }

    pub async fn release_by_version(
        &self,
        compatible: &str,
        version: &str,
    ) -> Result<Option<i64>, StoreError> {
        let q = "SELECT id FROM releases WHERE compatible = $1 AND version = $2";
        let r: Result<Option<i64>, sqlx::Error> = on_pool!(self, p => {
            sqlx::query_scalar(q).bind(compatible).bind(version).fetch_optional(p).await
        });
        r.map_err(StoreError::query("find release"))
    }

    /// The release whose bundle has this SHA-256 (hex), if any.
    pub async fn release_by_bundle(&self, sha256: &str) -> Result<Option<i64>, StoreError> {
        let q = "SELECT MIN(id) FROM releases WHERE bundle_sha256 = $1";
        let r: Result<Option<i64>, sqlx::Error> = on_pool!(self, p => {
            sqlx::query_scalar(q).bind(sha256).fetch_one(p).await
        });
        r.map_err(StoreError::query("find release by bundle"))
    }

    /// All releases, newest first, without the signed documents.
    pub async fn releases(&self) -> Result<Vec<ReleaseRecord>, StoreError> {
        let q = format!("SELECT {RELEASE_COLUMNS} FROM releases ORDER BY id DESC");
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query(&q).fetch_all(p).await?;
                rows.iter()
                    .map(|r| -> Result<_, sqlx::Error> { Ok(release_row!(r, false)) })
                    .collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("list releases"))
    }

    /// One release with its signed document.
    pub async fn release(&self, id: i64) -> Result<Option<ReleaseRecord>, StoreError> {
        let q = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1");
        let work = async {
            on_pool!(self, p => {
                let row = sqlx::query(&q).bind(id).fetch_optional(p).await?;
                row.map(|r| -> Result<_, sqlx::Error> { Ok(release_row!(&r, true)) })
                    .transpose()
            })
        };
        work.await.map_err(StoreError::query("read release"))
    }

    /// Replaces the signed manifest of release `id` and the columns derived from it, only if the
    /// release still names `new`'s compatible, version, bundle SHA-256 and size, is not yanked,
    /// and its stored manifest was not issued after `new`'s. One conditional `UPDATE`, so a yank
    /// or another replacement in between is never overwritten: false when nothing was changed
    /// (read the release again to tell why).
    pub async fn replace_manifest(&self, id: i64, new: &NewRelease) -> Result<bool, StoreError> {
        let q = "UPDATE releases SET key_id = $2, issued_at = $3, expires_at = $4, min_version = $5, allow_downgrade = $6, manifest_rollout = $7, signed = $8 \
                 WHERE id = $1 AND compatible = $9 AND version = $10 AND bundle_sha256 = $11 AND bundle_size = $12 AND yanked_at IS NULL AND issued_at <= $3";
        let n = on_pool!(self, p => sqlx::query(q)
            .bind(id)
            .bind(&new.key_id)
            .bind(new.issued_at)
            .bind(new.expires_at)
            .bind(&new.min_version)
            .bind(i64::from(new.allow_downgrade))
            .bind(&new.manifest_rollout)
            .bind(&new.signed)
            .bind(&new.compatible)
            .bind(&new.version)
            .bind(&new.bundle_sha256)
            .bind(new.bundle_size)
            .execute(p)
            .await
            .map(|r| r.rows_affected()));
        Ok(n.map_err(StoreError::query("replace release manifest"))? == 1)
    }

    /// Marks a release yanked (it is never offered again). Returns false when there is none.
    pub async fn yank(&self, id: i64, reason: &str, now: i64) -> Result<bool, StoreError> {
        let q = "UPDATE releases SET yanked_at = COALESCE(yanked_at, $2), yank_reason = $3 WHERE id = $1";
        let r = on_pool!(self, p => sqlx::query(q).bind(id).bind(now).bind(reason).execute(p).await.map(|r| r.rows_affected()));
        Ok(r.map_err(StoreError::query("yank release"))? == 1)
    }

    // ---- devices ----

    /// Records a check-in: creates the device on first sight, updates what it told.
    pub async fn check_in(
        &self,
        device: &str,
        info: &CheckIn,
        now: i64,
    ) -> Result<DeviceRecord, StoreError> {
        let q = "INSERT INTO devices (device, first_seen, last_seen, compatible, current_version, booted_slot, agent_state, hardware_rev) VALUES ($1, $2, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (device) DO UPDATE SET last_seen = $2, \
                 compatible = COALESCE($3, devices.compatible), current_version = COALESCE($4, devices.current_version), \
                 booted_slot = COALESCE($5, devices.booted_slot), agent_state = COALESCE($6, devices.agent_state), \
                 hardware_rev = COALESCE($7, devices.hardware_rev) \
                 RETURNING *";
        let work = async {
            on_pool!(self, p => {
                let r = sqlx::query(q)
                    .bind(device)
                    .bind(now)
                    .bind(&info.compatible)
                    .bind(&info.current_version)
                    .bind(&info.booted_slot)
                    .bind(&info.agent_state)
                    .bind(&info.hardware_rev)
                    .fetch_one(p)
                    .await?;
                Ok::<_, sqlx::Error>(device_row!(&r))
            })
        };
        work.await.map_err(StoreError::query("record check-in"))
    }

    /// Sets the attributes an admin gives (absent ones are kept); registers the device if it
    /// never checked in, so a rollout created before its first check-in already places it.
    pub async fn set_attributes(
        &self,
        device: &str,
        a: &DeviceAttributes,
        now: i64,
    ) -> Result<DeviceRecord, StoreError> {
        let tags = a
            .tags
            .as_ref()
            .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "{}".into()));
        let q = "INSERT INTO devices (device, first_seen, last_seen, hardware_rev, tags, time_zone) VALUES ($1, $2, $2, $3, $4, $5) \
                 ON CONFLICT (device) DO UPDATE SET hardware_rev = COALESCE($3, devices.hardware_rev), \
                 tags = COALESCE($4, devices.tags), time_zone = COALESCE($5, devices.time_zone) RETURNING *";
        let work = async {
            on_pool!(self, p => {
                let r = sqlx::query(q)
                    .bind(device)
                    .bind(now)
                    .bind(&a.hardware_rev)
                    .bind(&tags)
                    .bind(&a.time_zone)
                    .fetch_one(p)
                    .await?;
                Ok::<_, sqlx::Error>(device_row!(&r))
            })
        };
        work.await
            .map_err(StoreError::query("set device attributes"))
    }

    pub async fn device(&self, device: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let work = async {
            on_pool!(self, p => {
                let row = sqlx::query("SELECT * FROM devices WHERE device = $1").bind(device).fetch_optional(p).await?;
                row.map(|r| -> Result<_, sqlx::Error> { Ok(device_row!(&r)) }).transpose()
            })
        };
        work.await.map_err(StoreError::query("read device"))
    }

    pub async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query("SELECT * FROM devices ORDER BY device").fetch_all(p).await?;
                rows.iter().map(|r| -> Result<_, sqlx::Error> { Ok(device_row!(r)) }).collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("list devices"))
    }

    /// Remembers what was offered to a device (for download accounting per rollout).
    pub async fn set_offered(
        &self,
        device: &str,
        release: i64,
        rollout: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let q = "UPDATE devices SET offered_release = $2, offered_rollout = $3, offered_at = $4 WHERE device = $1";
        let r = on_pool!(self, p => sqlx::query(q).bind(device).bind(release).bind(rollout).bind(now).execute(p).await.map(|_| ()));
        r.map_err(StoreError::query("record offer"))
    }

    /// Stores a status report once per (device, seq) and updates the device's summary.
    pub async fn insert_report(
        &self,
        r: &spark_dbus::report::StatusReport,
        now: i64,
    ) -> Result<ReportOutcome, StoreError> {
        let ins = "INSERT INTO status_reports (device, seq, at, from_state, to_state, reason, current_version, release_version, detail, received_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (device, seq) DO NOTHING";
        let dev = "INSERT INTO devices (device, first_seen, last_seen, current_version, agent_state, last_seq, last_reason, last_report_at) VALUES ($1, $2, $2, $3, $4, $5, $6, $7) \
                   ON CONFLICT (device) DO UPDATE SET last_seen = $2, current_version = $3, agent_state = $4, \
                   last_seq = $5, last_reason = $6, last_report_at = $7 \
                   WHERE devices.last_seq IS NULL OR devices.last_seq < $5";
        let seq = i64::try_from(r.seq).map_err(|_| StoreError::Corrupt {
            what: "report seq",
            value: r.seq.to_string(),
        })?;
        let at = i64::try_from(r.at).unwrap_or(i64::MAX);
        let from = serde_plain(&r.from);
        let to = serde_plain(&r.to);
        let work = async {
            on_pool!(self, p => {
                let mut tx = p.begin().await?;
                let n = sqlx::query(ins)
                    .bind(&r.device)
                    .bind(seq)
                    .bind(at)
                    .bind(&from)
                    .bind(&to)
                    .bind(r.reason.as_str())
                    .bind(&r.current_version)
                    .bind(&r.release_version)
                    .bind(&r.detail)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    tx.rollback().await?;
                    return Ok(ReportOutcome::Duplicate);
                }
                sqlx::query(dev)
                    .bind(&r.device)
                    .bind(now)
                    .bind(&r.current_version)
                    .bind(&to)
                    .bind(seq)
                    .bind(r.reason.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(ReportOutcome::Stored)
            })
        };
        work.await.map_err(StoreError::query("store status report"))
    }

    /// The reasons a device reported while handling `release_version` (oldest first).
    pub async fn report_reasons(
        &self,
        device: &str,
        release_version: &str,
    ) -> Result<Vec<String>, StoreError> {
        let q = "SELECT reason FROM status_reports WHERE device = $1 AND release_version = $2 ORDER BY seq";
        let r: Result<Vec<String>, sqlx::Error> = on_pool!(self, p => sqlx::query_scalar(q).bind(device).bind(release_version).fetch_all(p).await);
        r.map_err(StoreError::query("read reports"))
    }

    /// Status reports of a device, newest first (at most `limit`).
    pub async fn reports(
        &self,
        device: &str,
        limit: i64,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let q = "SELECT seq, at, from_state, to_state, reason, current_version, release_version, detail FROM status_reports WHERE device = $1 ORDER BY seq DESC LIMIT $2";
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query(q).bind(device).bind(limit).fetch_all(p).await?;
                rows.iter().map(|r| -> Result<_, sqlx::Error> {
                    Ok(serde_json::json!({
                        "seq": r.try_get::<i64, _>("seq")?,
                        "at": r.try_get::<i64, _>("at")?,
                        "from": r.try_get::<String, _>("from_state")?,
                        "to": r.try_get::<String, _>("to_state")?,
                        "reason": r.try_get::<String, _>("reason")?,
                        "current-version": r.try_get::<String, _>("current_version")?,
                        "release-version": r.try_get::<Option<String>, _>("release_version")?,
                        "detail": r.try_get::<Option<String>, _>("detail")?,
                    }))
                }).collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("list reports"))
    }

    // ---- downloads (data cost) ----

    /// Adds `bytes` served to `device` from bundle `sha256` under `rollout` ('' for none).
    pub async fn add_download(
        &self,
        device: &str,
        sha256: &str,
        rollout: &str,
        bytes: i64,
        requests: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let q = "INSERT INTO downloads (device, bundle_sha256, rollout, bytes, requests, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (device, bundle_sha256, rollout) DO UPDATE SET bytes = downloads.bytes + $4, requests = downloads.requests + $5, last_at = $6";
        let r = on_pool!(self, p => sqlx::query(q).bind(device).bind(sha256).bind(rollout).bind(bytes).bind(requests).bind(now).execute(p).await.map(|_| ()));
        r.map_err(StoreError::query("count bytes served"))
    }

    /// Bytes served grouped by rollout (`by_device == false`) or by device.
    pub async fn data_cost(&self, by_device: bool) -> Result<Vec<DataCost>, StoreError> {
        let q = if by_device {
            "SELECT device AS k, CAST(SUM(bytes) AS BIGINT) AS b, CAST(SUM(requests) AS BIGINT) AS r, COUNT(DISTINCT device) AS d FROM downloads GROUP BY device ORDER BY device"
        } else {
            "SELECT rollout AS k, CAST(SUM(bytes) AS BIGINT) AS b, CAST(SUM(requests) AS BIGINT) AS r, COUNT(DISTINCT device) AS d FROM downloads GROUP BY rollout ORDER BY rollout"
        };
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query(q).fetch_all(p).await?;
                rows.iter().map(|r| -> Result<_, sqlx::Error> {
                    Ok(DataCost {
                        key: r.try_get("k")?,
                        // SUM over BIGINT is NUMERIC on PostgreSQL: the SQL casts it back.
                        bytes: r.try_get("b")?,
                        requests: r.try_get("r")?,
                        devices: r.try_get("d")?,
                    })
                }).collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("data-cost report"))
    }

    // ---- admin tokens ----

    pub async fn insert_token(
        &self,
        name: &str,
        sha256_hex: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let q = "INSERT INTO admin_tokens (name, sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
        let r = on_pool!(self, p => sqlx::query(q).bind(name).bind(sha256_hex).bind(now).execute(p).await.map(|r| r.rows_affected()));
        Ok(r.map_err(StoreError::query("create token"))? == 1)
    }

    /// The token's name if `sha256_hex` is a stored token's hash; stamps its last use.
    pub async fn use_token(
        &self,
        sha256_hex: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let q = "UPDATE admin_tokens SET last_used_at = $2 WHERE sha256 = $1 RETURNING name";
        let r: Result<Option<String>, sqlx::Error> = on_pool!(self, p => sqlx::query_scalar(q).bind(sha256_hex).bind(now).fetch_optional(p).await);
        r.map_err(StoreError::query("check token"))
    }

    // ---- rollouts ----

    pub async fn insert_rollout(&self, r: &RolloutRecord) -> Result<bool, StoreError> {
        let q = "INSERT INTO rollouts (id, release_id, state, reason, plan, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(q).bind(&r.id).bind(r.release_id).bind(&r.state).bind(&r.reason).bind(&r.plan).bind(r.created_at).bind(r.updated_at).execute(p).await.map(|r| r.rows_affected()));
        Ok(n.map_err(StoreError::query("create rollout"))? == 1)
    }

    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRecord>, StoreError> {
        let work = async {
            on_pool!(self, p => {
                let row = sqlx::query("SELECT * FROM rollouts WHERE id = $1").bind(id).fetch_optional(p).await?;
                row.map(|r| -> Result<_, sqlx::Error> { Ok(rollout_row!(&r)) }).transpose()
            })
        };
        work.await.map_err(StoreError::query("read rollout"))
    }

    pub async fn rollouts(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query("SELECT * FROM rollouts ORDER BY created_at DESC, id").fetch_all(p).await?;
                rows.iter().map(|r| -> Result<_, sqlx::Error> { Ok(rollout_row!(r)) }).collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("list rollouts"))
    }

    /// Sets state, reason and plan of a rollout whose state is one of `from`.
    pub async fn update_rollout(
        &self,
        id: &str,
        from: &[&str],
        state: &str,
        reason: Option<&str>,
        plan: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let q = "UPDATE rollouts SET state = $2, reason = $3, plan = COALESCE($4, plan), updated_at = $5 WHERE id = $1 AND state IN ($6, $7, $8, $9)";
        let f = |i: usize| from.get(i).copied().unwrap_or("");
        let n = on_pool!(self, p => sqlx::query(q).bind(id).bind(state).bind(reason).bind(plan).bind(now).bind(f(0)).bind(f(1)).bind(f(2)).bind(f(3)).execute(p).await.map(|r| r.rows_affected()));
        Ok(n.map_err(StoreError::query("update rollout"))? == 1)
    }

    /// Active rollouts with their releases (not yanked).
    pub async fn active_rollouts(&self) -> Result<Vec<(RolloutRecord, ReleaseRecord)>, StoreError> {
        let mut out = Vec::new();
        for r in self.rollouts().await? {
            if r.state != "active" {
                continue;
            }
            if let Some(rel) = self.release(r.release_id).await?
                && rel.yanked_at.is_none()
            {
                out.push((r, rel));
            }
        }
        Ok(out)
    }

    /// Creates a rollout with its engine state (header and device rows) in one transaction.
    /// False when the id exists.
    pub async fn insert_rollout_engine(
        &self,
        r: &RolloutRecord,
        header: &str,
        devices: &[(String, String)],
        events: &[(i64, String)],
    ) -> Result<bool, StoreError> {
        let q = "INSERT INTO rollouts (id, release_id, state, reason, plan, created_at, updated_at, engine, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1) ON CONFLICT (id) DO NOTHING";
        let dev = "INSERT INTO rollout_devices (rollout, device, state) VALUES ($1, $2, $3)";
        let ev = "INSERT INTO rollout_events (rollout, at, event) VALUES ($1, $2, $3)";
        let work = async {
            on_pool!(self, p => {
                let mut tx = p.begin().await?;
                let n = sqlx::query(q).bind(&r.id).bind(r.release_id).bind(&r.state).bind(&r.reason).bind(&r.plan).bind(r.created_at).bind(r.updated_at).bind(header)
                    .execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for (device, state) in devices {
                    sqlx::query(dev).bind(&r.id).bind(device).bind(state).execute(&mut *tx).await?;
                }
                for (at, e) in events {
                    sqlx::query(ev).bind(&r.id).bind(at).bind(e).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(true)
            })
        };
        work.await.map_err(StoreError::query("create rollout"))
    }

    /// The revision of a rollout's engine state (cheap: tells whether a cached copy is current).
    pub async fn rollout_revision(&self, id: &str) -> Result<Option<i64>, StoreError> {
        let q = "SELECT revision FROM rollouts WHERE id = $1";
        let r: Result<Option<i64>, sqlx::Error> =
            on_pool!(self, p => sqlx::query_scalar(q).bind(id).fetch_optional(p).await);
        r.map_err(StoreError::query("read rollout revision"))
    }

    /// A rollout's engine state, read in one transaction (a consistent snapshot).
    pub async fn rollout_engine(&self, id: &str) -> Result<Option<StoredEngine>, StoreError> {
        let head = "SELECT revision, engine FROM rollouts WHERE id = $1";
        let dev = "SELECT device, state FROM rollout_devices WHERE rollout = $1";
        let work = async {
            on_pool!(self, p => {
                let mut tx = p.begin().await?;
                let Some(row) = sqlx::query(head).bind(id).fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let revision: i64 = row.try_get("revision")?;
                let header: Option<String> = row.try_get("engine")?;
                let rows = sqlx::query(dev).bind(id).fetch_all(&mut *tx).await?;
                let devices = rows
                    .iter()
                    .map(|r| Ok((r.try_get("device")?, r.try_get("state")?)))
                    .collect::<Result<Vec<_>, sqlx::Error>>()?;
                tx.commit().await?;
                Ok::<_, sqlx::Error>(Some(StoredEngine { revision, header, devices }))
            })
        };
        work.await.map_err(StoreError::query("read rollout state"))
    }

    /// Writes a change of a rollout's engine state in one transaction, if its revision is still
    /// `w.revision` (else nothing is written and false is returned: reload and retry).
    pub async fn save_rollout_engine(
        &self,
        w: &EngineWrite<'_>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let head = "UPDATE rollouts SET engine = $2, state = $3, reason = $4, updated_at = $5, revision = revision + 1 WHERE id = $1 AND revision = $6";
        let dev = "INSERT INTO rollout_devices (rollout, device, state) VALUES ($1, $2, $3) ON CONFLICT (rollout, device) DO UPDATE SET state = $3";
        let ev = "INSERT INTO rollout_events (rollout, at, event) VALUES ($1, $2, $3)";
        let work = async {
            on_pool!(self, p => {
                let mut tx = p.begin().await?;
                let n = sqlx::query(head).bind(w.id).bind(w.header).bind(w.state).bind(w.reason).bind(now).bind(w.revision)
                    .execute(&mut *tx).await?.rows_affected();
                if n == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for (device, state) in w.devices {
                    sqlx::query(dev).bind(w.id).bind(device).bind(state).execute(&mut *tx).await?;
                }
                for (at, e) in w.events {
                    sqlx::query(ev).bind(w.id).bind(at).bind(e).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(true)
            })
        };
        work.await.map_err(StoreError::query("store rollout state"))
    }

    /// A rollout's events, oldest first: (engine time, JSON).
    pub async fn rollout_events(&self, id: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let q = "SELECT at, event FROM rollout_events WHERE rollout = $1 ORDER BY id";
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query(q).bind(id).fetch_all(p).await?;
                rows.iter().map(|r| Ok((r.try_get("at")?, r.try_get("event")?))).collect::<Result<Vec<_>, sqlx::Error>>()
            })
        };
        work.await.map_err(StoreError::query("list rollout events"))
    }

    // ---- pushes ----

    /// Records a push; false when one was recorded for (device, release) before.
    pub async fn insert_push(
        &self,
        device: &str,
        release: i64,
        rollout: &str,
        command_id: Option<i64>,
        status: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let q = "INSERT INTO pushes (device, release_id, rollout, command_id, status, at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (device, release_id) DO NOTHING";
        let n = on_pool!(self, p => sqlx::query(q).bind(device).bind(release).bind(rollout).bind(command_id).bind(status).bind(now).execute(p).await.map(|r| r.rows_affected()));
        Ok(n.map_err(StoreError::query("record push"))? == 1)
    }

    pub async fn pushed(&self, device: &str, release: i64) -> Result<bool, StoreError> {
        let q = "SELECT COUNT(*) FROM pushes WHERE device = $1 AND release_id = $2";
        let n: Result<i64, sqlx::Error> = on_pool!(self, p => sqlx::query_scalar(q).bind(device).bind(release).fetch_one(p).await);
        Ok(n.map_err(StoreError::query("read pushes"))? > 0)
    }

    /// All pushes (device, release, rollout, command id, status).
    pub async fn pushes(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        let work = async {
            on_pool!(self, p => {
                let rows = sqlx::query("SELECT device, release_id, rollout, command_id, status, at FROM pushes ORDER BY at, device").fetch_all(p).await?;
                rows.iter().map(|r| -> Result<_, sqlx::Error> {
                    Ok(serde_json::json!({
                        "device": r.try_get::<String, _>("device")?,
                        "release": r.try_get::<i64, _>("release_id")?,
                        "rollout": r.try_get::<String, _>("rollout")?,
                        "command": r.try_get::<Option<i64>, _>("command_id")?,
                        "status": r.try_get::<String, _>("status")?,
                        "at": r.try_get::<i64, _>("at")?,
                    }))
                }).collect::<Result<Vec<_>, _>>()
            })
        };
        work.await.map_err(StoreError::query("list pushes"))
    }

    /// Row counts of every table (tests check that refused input stored nothing).
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        for t in [
            "bundles",
            "releases",
            "devices",
            "status_reports",
            "downloads",
            "admin_tokens",
            "rollouts",
            "pushes",
            "rollout_devices",
            "rollout_events",
        ] {
            let q = format!("SELECT COUNT(*) FROM {t}");
            let n: Result<i64, sqlx::Error> =
                on_pool!(self, p => sqlx::query_scalar(&q).fetch_one(p).await);
            out.push((t.to_owned(), n.map_err(StoreError::query("count rows"))?));
        }
        Ok(out)
    }
}

/// The serde string form of a unit enum (kebab-case state names).
fn serde_plain<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
