//! Storage: SQLite by default (one file, nothing to install), PostgreSQL in production. Both
//! backends have the same tables (`migrations/sqlite`, `migrations/postgres`) and the same
//! semantics; the SQL differs where the engines do (COPY, partitions, `RETURNING`, time types).
//!
//! Idempotency: every sequenced message (readings batch or event) is committed in one
//! transaction together with its `(gateway, seq)` row in `received`. That row is inserted first
//! with `ON CONFLICT DO NOTHING`; when it already existed the message is a resend and nothing else
//! of it is written. A group of messages can share one transaction (a cumulative Ack covers them
//! all), but a message is never split across two.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use spark_proto::{Event, EventKind, Sample};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row};

use crate::error::{QueryContext, StoreError};

/// A stored meter reading (test-facing and for the API).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StoredReading {
    /// The meter's id from the gateway's roster (see [`meter_id_text`]).
    pub meter_id: String,
    /// When the meter took the reading, unix seconds.
    pub ts: u64,
    /// Cumulative import register, Wh.
    pub wh: u64,
}

/// What the cloud knows about one gateway (the `GET /v1/gateways` body, without `connected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayInfo {
    pub gateway: String,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds; at most `last-seen-interval` behind the last frame received.
    pub last_seen: u64,
    pub last_committed_seq: u64,
    pub firmware_version: Option<String>,
    /// `"A"` or `"B"`.
    pub booted_slot: Option<String>,
    pub protocol_version: Option<u16>,
    pub roster_version: u32,
    pub config_version: u32,
}

/// A stored gateway event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredEvent {
    pub seq: u64,
    pub ts: u64,
    /// `health`, `meter_alarm` or `meter_lost`.
    pub kind: String,
    pub meter_id: Option<String>,
    /// The kind's fields as JSON text.
    pub data: String,
}

/// A command of the push channel and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandRecord {
    pub id: u64,
    pub gateway: String,
    /// `update_available`, `set_config` or `reboot`.
    pub kind: String,
    /// `pending` (no result yet), `undelivered` (the gateway went away before it was sent),
    /// or the gateway's last result: `accepted`, `succeeded`, `failed`, `rejected`.
    pub status: String,
    /// The gateway's machine-readable detail (0 = none).
    pub code: u16,
    pub detail: String,
    /// Unix seconds.
    pub created_at: u64,
    /// When it was written to the gateway's connection, unix seconds.
    pub delivered_at: Option<u64>,
    pub updated_at: u64,
}

/// The meter ids of a roster in two allocations instead of one per meter: every connection keeps
/// its gateway's roster while it idles between batches.
#[derive(Debug, Clone, Default)]
pub(crate) struct MeterIds {
    text: String,
    ends: Vec<u32>,
}

impl MeterIds {
    pub fn new<S: AsRef<str>>(ids: &[S]) -> MeterIds {
        let mut text = String::with_capacity(ids.iter().map(|s| s.as_ref().len()).sum());
        let mut ends = Vec::with_capacity(ids.len());
        for id in ids {
            text.push_str(id.as_ref());
            ends.push(text.len() as u32); // ≤ 16384 ids of ≤ 68 bytes
        }
        MeterIds { text, ends }
    }

    /// The id at roster position `i`.
    pub fn get(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        let end = *self.ends.get(i)? as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text.get(start..end)
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }
}

/// What the session needs from the database when a gateway says Hello.
#[derive(Debug, Clone)]
pub(crate) struct SessionStart {
    pub last_committed_seq: u64,
    pub roster_version: u32,
    /// Meter ids in roster order.
    pub roster: Vec<String>,
    pub config_version: u32,
}

/// The facts of a Hello worth keeping.
#[derive(Debug, Clone)]
pub(crate) struct HelloRecord {
    pub firmware_version: String,
    pub booted_slot: &'static str,
    pub protocol_version: u16,
    pub capabilities: u32,
    pub peer: String,
}

/// One sequenced message ready to commit.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    /// An expanded readings batch; `Sample::meter` indexes the session's roster.
    Readings {
        seq: u64,
        samples: Vec<Sample>,
    },
    Event(Event),
}

impl Item {
    pub fn seq(&self) -> u64 {
        match self {
            Item::Readings { seq, .. } => *seq,
            Item::Event(e) => e.seq,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Item::Readings { .. } => "readings",
            Item::Event(_) => "event",
        }
    }

    fn count(&self) -> i32 {
        match self {
            Item::Readings { samples, .. } => samples.len() as i32, // ≤ MAX_READINGS_PER_BATCH
            Item::Event(_) => 1,
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CommitOutcome {
    /// Messages stored now.
    pub stored: usize,
    /// Messages whose `(gateway, seq)` was already stored: nothing written for them.
    pub duplicates: usize,
    /// Readings rows written.
    pub readings: usize,
}

/// Which backend a [`Store`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database of the ingest service. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgStore),
}

/// The PostgreSQL backend: a pool and the months whose readings partition is known to exist.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    partitions: Arc<Mutex<HashSet<i64>>>,
}

/// Readings from clocks further off than this get no partition of their own (they land in
/// `readings_default`): a gateway with a broken clock must not create partitions for 1970.
const PARTITION_PAST_MONTHS: i64 = 10 * 12;
const PARTITION_FUTURE_MONTHS: i64 = 2;

/// Rows per multi-row INSERT on SQLite (5 parameters each, well under SQLite's 32766).
const SQLITE_ROWS_PER_INSERT: usize = 500;

/// Largest timestamp we store: 9999-12-31T23:59:59Z (PostgreSQL's timestamptz goes further,
/// but nothing real is beyond it, and it keeps microsecond arithmetic far from overflow).
pub(crate) const MAX_TS: u64 = 253_402_300_799;

/// Seconds between 1970-01-01 and 2000-01-01, PostgreSQL's binary timestamp epoch.
const PG_EPOCH_OFFSET: i64 = 946_684_800;

/// The text form of a meter id from a roster: the id itself when it is printable ASCII (as
/// meter serials are), otherwise `hex:` and its bytes in lower-case hex (binary M-Bus or DIN
/// 43863-5 addresses), so every id has one unambiguous text form.
pub fn meter_id_text(id: &[u8]) -> String {
    if !id.is_empty() && id.iter().all(|b| b.is_ascii_graphic()) && !id.starts_with(b"hex:") {
        // All bytes are ASCII graphic characters, hence valid UTF-8.
        String::from_utf8_lossy(id).into_owned()
    } else {
        let mut s = String::with_capacity(4 + id.len() * 2);
        s.push_str("hex:");
        for b in id {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

fn i64_of(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn u64_of(v: i64) -> u64 {
    // Columns written by us from u64 values checked by `i64_of`: never negative.
    u64::try_from(v).unwrap_or(0)
}

/// The URL without its password, for messages.
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

/// Our migrations, tolerant of other services' migrations in the same database: sqlx keeps one
/// `_sqlx_migrations` table per database, and spark-pipeline (versions `8…`) applies its own
/// there; without `ignore_missing` ingest would refuse to start after the pipeline ran once.
fn migrator(mut m: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    m.set_ignore_missing(true);
    m
}

impl Store {
    /// Opens the database at `url` and applies the migrations. `sqlite://PATH?mode=rwc` (WAL,
    /// `synchronous=FULL`) or `postgres://…` (add `?options[search_path]=SCHEMA` to use a schema).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a commit is on disk before we Ack it, even across a power cut.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            migrator(sqlx::migrate!("migrations/sqlite"))
                .run(&pool)
                .await?;
            Ok(Store::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            Store::connect_postgres(options, 16)
                .await
                .map_err(|e| match e {
                    StoreError::Connect { source, .. } => connect_err(source),
                    other => other,
                })
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }

    /// Opens PostgreSQL with explicit options and pool size, and applies the migrations.
    pub async fn connect_postgres(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Store, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: "postgres".into(),
                source,
            })?;
        migrator(sqlx::migrate!("migrations/postgres"))
            .run(&pool)
            .await?;
        Ok(Store::Postgres(PgStore {
            pool,
            partitions: Arc::default(),
        }))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(_) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes the pool (waits for connections in use to come back).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.pool.close().await,
        }
    }

    /// Records a Hello (creating the gateway on first sight) and returns what the session needs.
    pub(crate) async fn hello(
        &self,
        gateway: &str,
        hello: &HelloRecord,
        now: u64,
    ) -> Result<SessionStart, StoreError> {
        let now = i64_of(now, "time")?;
        let (committed, roster_version, config_version, roster) = match self {
            Store::Sqlite(pool) => {
                let row = sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen, firmware_version, \
                     booted_slot, protocol_version, capabilities, last_peer) \
                     VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7) \
                     ON CONFLICT (gateway) DO UPDATE SET last_seen = excluded.last_seen, \
                     firmware_version = excluded.firmware_version, booted_slot = excluded.booted_slot, \
                     protocol_version = excluded.protocol_version, capabilities = excluded.capabilities, \
                     last_peer = excluded.last_peer \
                     RETURNING last_committed_seq, roster_version, config_version",
                )
                .bind(gateway)
                .bind(now)
                .bind(&hello.firmware_version)
                .bind(hello.booted_slot)
                .bind(i64::from(hello.protocol_version))
                .bind(i64::from(hello.capabilities))
                .bind(&hello.peer)
                .fetch_one(pool)
                .await
                .op("record hello")?;
                let roster: Vec<String> = sqlx::query_scalar(
                    "SELECT meter_id FROM roster_meters WHERE gateway = ?1 ORDER BY position",
                )
                .bind(gateway)
                .fetch_all(pool)
                .await
                .op("load roster")?;
                (
                    row.get::<i64, _>(0),
                    row.get::<i64, _>(1),
                    row.get::<i64, _>(2),
                    roster,
                )
            }
            Store::Postgres(pg) => {
                let row = sqlx::query(
                    "INSERT INTO gateways (gateway, first_seen, last_seen, firmware_version, \
                     booted_slot, protocol_version, capabilities, last_peer) \
                     VALUES ($1, to_timestamp($2), to_timestamp($2), $3, $4, $5, $6, $7) \
                     ON CONFLICT (gateway) DO UPDATE SET last_seen = excluded.last_seen, \
                     firmware_version = excluded.firmware_version, booted_slot = excluded.booted_slot, \
                     protocol_version = excluded.protocol_version, capabilities = excluded.capabilities, \
                     last_peer = excluded.last_peer \
                     RETURNING last_committed_seq, roster_version, config_version",
                )
                .bind(gateway)
                .bind(now)
                .bind(&hello.firmware_version)
                .bind(hello.booted_slot)
                .bind(i32::from(hello.protocol_version))
                .bind(i64::from(hello.capabilities))
                .bind(&hello.peer)
                .fetch_one(&pg.pool)
                .await
                .op("record hello")?;
                let roster: Vec<String> = sqlx::query_scalar(
                    "SELECT meter_id FROM roster_meters WHERE gateway = $1 ORDER BY position",
                )
                .bind(gateway)
                .fetch_all(&pg.pool)
                .await
                .op("load roster")?;
                (
                    row.get::<i64, _>(0),
                    row.get::<i64, _>(1),
                    row.get::<i64, _>(2),
                    roster,
                )
            }
        };
        Ok(SessionStart {
            last_committed_seq: u64_of(committed),
            roster_version: u32::try_from(roster_version).unwrap_or(0),
            roster,
            config_version: u32::try_from(config_version).unwrap_or(0),
        })
    }

    /// Replaces the gateway's stored roster.
    pub(crate) async fn store_roster(
        &self,
        gateway: &str,
        version: u32,
        meters: &[String],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.op("begin roster")?;
                sqlx::query("DELETE FROM roster_meters WHERE gateway = ?1")
                    .bind(gateway)
                    .execute(&mut *tx)
                    .await
                    .op("delete old roster")?;
                for (chunk_no, chunk) in meters.chunks(SQLITE_ROWS_PER_INSERT).enumerate() {
                    let base = chunk_no * SQLITE_ROWS_PER_INSERT;
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO roster_meters (gateway, position, meter_id) ",
                    );
                    qb.push_values(chunk.iter().enumerate(), |mut b, (i, id)| {
                        b.push_bind(gateway)
                            .push_bind((base + i) as i64)
                            .push_bind(id.as_str());
                    });
                    qb.build().execute(&mut *tx).await.op("insert roster")?;
                }
                sqlx::query("UPDATE gateways SET roster_version = ?1 WHERE gateway = ?2")
                    .bind(i64::from(version))
                    .bind(gateway)
                    .execute(&mut *tx)
                    .await
                    .op("update roster version")?;
                tx.commit().await.op("commit roster")?;
            }
            Store::Postgres(pg) => {
                let mut tx = pg.pool.begin().await.op("begin roster")?;
                sqlx::query("DELETE FROM roster_meters WHERE gateway = $1")
                    .bind(gateway)
                    .execute(&mut *tx)
                    .await
                    .op("delete old roster")?;
                let positions: Vec<i32> = (0..meters.len() as i32).collect();
                sqlx::query(
                    "INSERT INTO roster_meters (gateway, position, meter_id) \
                     SELECT $1, p, m FROM UNNEST($2::int[], $3::text[]) AS u(p, m)",
                )
                .bind(gateway)
                .bind(&positions)
                .bind(meters)
                .execute(&mut *tx)
                .await
                .op("insert roster")?;
                sqlx::query("UPDATE gateways SET roster_version = $1 WHERE gateway = $2")
                    .bind(i64::from(version))
                    .bind(gateway)
                    .execute(&mut *tx)
                    .await
                    .op("update roster version")?;
                tx.commit().await.op("commit roster")?;
            }
        }
        Ok(())
    }

    /// Commits `items` (consecutive sequenced messages of one gateway) in one transaction, each
    /// with its `(gateway, seq)` row; resent ones store nothing. `roster` maps meter indices to
    /// ids. Also advances the gateway's `last_committed_seq` and `last_seen`.
    pub(crate) async fn commit(
        &self,
        gateway: &str,
        items: &[Item],
        roster: &MeterIds,
        now: u64,
    ) -> Result<CommitOutcome, StoreError> {
        let Some(max_seq) = items.iter().map(Item::seq).max() else {
            return Ok(CommitOutcome::default());
        };
        let max_seq = i64_of(max_seq, "sequence number")?;
        let now = i64_of(now, "time")?;
        match self {
            Store::Sqlite(pool) => commit_sqlite(pool, gateway, items, roster, max_seq, now).await,
            Store::Postgres(pg) => pg.commit(gateway, items, roster, max_seq, now).await,
        }
    }

    /// Updates `last_seen` (throttled by the caller).
    pub(crate) async fn touch(&self, gateway: &str, now: u64) -> Result<(), StoreError> {
        let now = i64_of(now, "time")?;
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("UPDATE gateways SET last_seen = MAX(last_seen, ?1) WHERE gateway = ?2")
                    .bind(now)
                    .bind(gateway)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
            Store::Postgres(pg) => sqlx::query(
                "UPDATE gateways SET last_seen = GREATEST(last_seen, to_timestamp($1)) \
                     WHERE gateway = $2",
            )
            .bind(now)
            .bind(gateway)
            .execute(&pg.pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .op("update last_seen")?;
        Ok(())
    }

    /// One gateway, if it was ever seen.
    pub async fn gateway(&self, gateway: &str) -> Result<Option<GatewayInfo>, StoreError> {
        Ok(self.gateways_where(Some(gateway)).await?.pop())
    }

    /// All gateways ever seen, by name.
    pub async fn gateways(&self) -> Result<Vec<GatewayInfo>, StoreError> {
        self.gateways_where(None).await
    }

    async fn gateways_where(&self, gateway: Option<&str>) -> Result<Vec<GatewayInfo>, StoreError> {
        // The same columns in both backends: times as unix seconds, integers as BIGINT.
        macro_rules! gateway_info {
            ($r:expr) => {
                GatewayInfo {
                    gateway: $r.try_get(0)?,
                    first_seen: u64_of($r.try_get(1)?),
                    last_seen: u64_of($r.try_get(2)?),
                    last_committed_seq: u64_of($r.try_get(3)?),
                    firmware_version: $r.try_get(4)?,
                    booted_slot: $r.try_get(5)?,
                    protocol_version: $r
                        .try_get::<Option<i64>, _>(6)?
                        .and_then(|v| u16::try_from(v).ok()),
                    roster_version: u32::try_from($r.try_get::<i64, _>(7)?).unwrap_or(0),
                    config_version: u32::try_from($r.try_get::<i64, _>(8)?).unwrap_or(0),
                }
            };
        }
        match self {
            Store::Sqlite(pool) => {
                let rows = sqlx::query(
                    "SELECT gateway, first_seen, last_seen, last_committed_seq, firmware_version, \
                     booted_slot, protocol_version, roster_version, config_version FROM gateways \
                     WHERE ?1 IS NULL OR gateway = ?1 ORDER BY gateway",
                )
                .bind(gateway)
                .fetch_all(pool)
                .await
                .op("list gateways")?;
                rows.iter()
                    .map(|r| Ok(gateway_info!(r)))
                    .collect::<Result<_, sqlx::Error>>()
                    .op("decode gateways")
            }
            Store::Postgres(pg) => {
                let rows = sqlx::query(
                    "SELECT gateway, extract(epoch FROM first_seen)::bigint, \
                     extract(epoch FROM last_seen)::bigint, last_committed_seq, firmware_version, \
                     booted_slot, protocol_version::bigint, roster_version, config_version \
                     FROM gateways WHERE $1::text IS NULL OR gateway = $1 ORDER BY gateway",
                )
                .bind(gateway)
                .fetch_all(&pg.pool)
                .await
                .op("list gateways")?;
                rows.iter()
                    .map(|r| Ok(gateway_info!(r)))
                    .collect::<Result<_, sqlx::Error>>()
                    .op("decode gateways")
            }
        }
    }
}

/// Commands of the push channel.
impl Store {
    /// Stores a new command for `gateway` (status `pending`) and returns its id. A `set_config`
    /// also records `config_version` as the version the gateway should run (sent in Welcome).
    pub(crate) async fn insert_command(
        &self,
        gateway: &str,
        kind: &str,
        request: &serde_json::Value,
        config_version: Option<u32>,
        now: u64,
    ) -> Result<u64, StoreError> {
        let now = i64_of(now, "time")?;
        let id: i64 = match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.op("begin command")?;
                let id = sqlx::query_scalar(
                    "INSERT INTO commands (gateway, kind, request, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
                )
                .bind(gateway)
                .bind(kind)
                .bind(request.to_string())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .op("insert command")?;
                if let Some(v) = config_version {
                    sqlx::query("UPDATE gateways SET config_version = ?1 WHERE gateway = ?2")
                        .bind(i64::from(v))
                        .bind(gateway)
                        .execute(&mut *tx)
                        .await
                        .op("set config version")?;
                }
                tx.commit().await.op("commit command")?;
                id
            }
            Store::Postgres(pg) => {
                let mut tx = pg.pool.begin().await.op("begin command")?;
                let id = sqlx::query_scalar(
                    "INSERT INTO commands (gateway, kind, request, created_at, updated_at) \
                     VALUES ($1, $2, $3::jsonb, to_timestamp($4), to_timestamp($4)) RETURNING id",
                )
                .bind(gateway)
                .bind(kind)
                .bind(request.to_string())
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .op("insert command")?;
                if let Some(v) = config_version {
                    sqlx::query("UPDATE gateways SET config_version = $1 WHERE gateway = $2")
                        .bind(i64::from(v))
                        .bind(gateway)
                        .execute(&mut *tx)
                        .await
                        .op("set config version")?;
                }
                tx.commit().await.op("commit command")?;
                id
            }
        };
        Ok(u64_of(id))
    }

    /// Notes that the command was written to the gateway's connection.
    pub(crate) async fn command_delivered(&self, id: u64, now: u64) -> Result<(), StoreError> {
        let (id, now) = (i64_of(id, "command id")?, i64_of(now, "time")?);
        match self {
            Store::Sqlite(pool) => {
                sqlx::query("UPDATE commands SET delivered_at = ?1, updated_at = ?1 WHERE id = ?2")
                    .bind(now)
                    .bind(id)
                    .execute(pool)
                    .await
                    .map(|r| r.rows_affected())
            }
            Store::Postgres(pg) => sqlx::query(
                "UPDATE commands SET delivered_at = to_timestamp($1), \
                     updated_at = to_timestamp($1) WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&pg.pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .op("mark command delivered")?;
        Ok(())
    }

    /// Marks a command that never reached the gateway (its connection ended first) as
    /// `undelivered`, unless a result already arrived; returns the command as it now is.
    pub(crate) async fn command_undelivered(
        &self,
        id: u64,
        now: u64,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let (id, now) = (i64_of(id, "command id")?, i64_of(now, "time")?);
        match self {
            Store::Sqlite(pool) => sqlx::query(
                "UPDATE commands SET status = 'undelivered', updated_at = ?1 \
                     WHERE id = ?2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
            Store::Postgres(pg) => sqlx::query(
                "UPDATE commands SET status = 'undelivered', updated_at = to_timestamp($1) \
                     WHERE id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&pg.pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .op("mark command undelivered")?;
        self.command(u64_of(id)).await
    }

    /// Records a gateway's CommandResult. Only a command addressed to *this* gateway is updated:
    /// `None` means no such command for it (unknown id, or another gateway's).
    pub(crate) async fn command_result(
        &self,
        gateway: &str,
        id: u64,
        status: &str,
        code: u16,
        detail: &str,
        now: u64,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let now = i64_of(now, "time")?;
        let updated = match self {
            Store::Sqlite(pool) => sqlx::query(
                "UPDATE commands SET status = ?1, code = ?2, detail = ?3, updated_at = ?4 \
                     WHERE id = ?5 AND gateway = ?6",
            )
            .bind(status)
            .bind(i64::from(code))
            .bind(detail)
            .bind(now)
            .bind(id)
            .bind(gateway)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
            Store::Postgres(pg) => sqlx::query(
                "UPDATE commands SET status = $1, code = $2, detail = $3, \
                     updated_at = to_timestamp($4) WHERE id = $5 AND gateway = $6",
            )
            .bind(status)
            .bind(i32::from(code))
            .bind(detail)
            .bind(now)
            .bind(id)
            .bind(gateway)
            .execute(&pg.pool)
            .await
            .map(|r| r.rows_affected()),
        }
        .op("record command result")?;
        if updated == 0 {
            return Ok(None);
        }
        self.command(u64_of(id)).await
    }

    /// One command.
    pub async fn command(&self, id: u64) -> Result<Option<CommandRecord>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        macro_rules! command_record {
            ($r:expr) => {
                CommandRecord {
                    id: u64_of($r.try_get(0)?),
                    gateway: $r.try_get(1)?,
                    kind: $r.try_get(2)?,
                    status: $r.try_get(3)?,
                    code: u16::try_from($r.try_get::<i64, _>(4)?).unwrap_or(0),
                    detail: $r.try_get(5)?,
                    created_at: u64_of($r.try_get(6)?),
                    delivered_at: $r.try_get::<Option<i64>, _>(7)?.map(u64_of),
                    updated_at: u64_of($r.try_get(8)?),
                }
            };
        }
        match self {
            Store::Sqlite(pool) => {
                let row = sqlx::query(
                    "SELECT id, gateway, kind, status, code, detail, created_at, delivered_at, \
                     updated_at FROM commands WHERE id = ?1",
                )
                .bind(id)
                .fetch_optional(pool)
                .await
                .op("read command")?;
                row.map(|r| Ok(command_record!(r)))
                    .transpose()
                    .op("decode command")
            }
            Store::Postgres(pg) => {
                let row = sqlx::query(
                    "SELECT id, gateway, kind, status, code::bigint, detail, \
                     extract(epoch FROM created_at)::bigint, \
                     extract(epoch FROM delivered_at)::bigint, \
                     extract(epoch FROM updated_at)::bigint FROM commands WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&pg.pool)
                .await
                .op("read command")?;
                row.map(|r| Ok(command_record!(r)))
                    .transpose()
                    .op("decode command")
            }
        }
    }
}

/// Queries for tests, benchmarks and the API.
impl Store {
    /// Readings stored, for one gateway or all.
    pub async fn reading_count(&self, gateway: Option<&str>) -> Result<u64, StoreError> {
        let n: i64 = match self {
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM readings WHERE ?1 IS NULL OR gateway = ?1")
                    .bind(gateway)
                    .fetch_one(pool)
                    .await
            }
            Store::Postgres(pg) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM readings WHERE $1::text IS NULL OR gateway = $1",
                )
                .bind(gateway)
                .fetch_one(&pg.pool)
                .await
            }
        }
        .op("count readings")?;
        Ok(u64_of(n))
    }

    /// All readings of one gateway, by time then meter.
    pub async fn readings(&self, gateway: &str) -> Result<Vec<StoredReading>, StoreError> {
        let rows: Vec<(String, i64, i64)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(
                "SELECT meter_id, ts, wh FROM readings WHERE gateway = ?1 ORDER BY ts, meter_id",
            )
            .bind(gateway)
            .fetch_all(pool)
            .await,
            Store::Postgres(pg) => {
                sqlx::query_as(
                    "SELECT meter_id, extract(epoch FROM ts)::bigint, wh FROM readings \
                     WHERE gateway = $1 ORDER BY ts, meter_id",
                )
                .bind(gateway)
                .fetch_all(&pg.pool)
                .await
            }
        }
        .op("read readings")?;
        Ok(rows
            .into_iter()
            .map(|(meter_id, ts, wh)| StoredReading {
                meter_id,
                ts: u64_of(ts),
                wh: u64_of(wh),
            })
            .collect())
    }

    /// How many readings rows each batch sequence number stored for one gateway, by `seq`
    /// (`readings.seq`, what the data pipeline's cursor follows).
    pub async fn readings_per_seq(&self, gateway: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let sql = "SELECT seq, COUNT(*) FROM readings WHERE gateway = $1 GROUP BY seq ORDER BY seq";
        let rows: Vec<(i64, i64)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(sql).bind(gateway).fetch_all(pool).await,
            Store::Postgres(pg) => sqlx::query_as(sql).bind(gateway).fetch_all(&pg.pool).await,
        }
        .op("count readings per seq")?;
        Ok(rows
            .into_iter()
            .map(|(seq, n)| (u64_of(seq), u64_of(n)))
            .collect())
    }

    /// Rows beyond the first sharing one (gateway, meter, ts): 0 unless something stored a
    /// reading twice.
    pub async fn duplicate_readings(&self) -> Result<u64, StoreError> {
        let sql = "SELECT COALESCE(SUM(n - 1), 0) FROM \
                   (SELECT COUNT(*) AS n FROM readings GROUP BY gateway, meter_id, ts HAVING COUNT(*) > 1) d";
        let n: i64 = match self {
            Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Store::Postgres(pg) => {
                sqlx::query_scalar(&format!("SELECT ({sql})::bigint"))
                    .fetch_one(&pg.pool)
                    .await
            }
        }
        .op("count duplicate readings")?;
        Ok(u64_of(n))
    }

    /// Events of one gateway, by sequence.
    pub async fn events(&self, gateway: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<(i64, i64, String, Option<String>, String)> = match self {
            Store::Sqlite(pool) => sqlx::query_as(
                "SELECT seq, ts, kind, meter_id, data FROM events WHERE gateway = ?1 ORDER BY seq",
            )
            .bind(gateway)
            .fetch_all(pool)
            .await,
            Store::Postgres(pg) => {
                sqlx::query_as(
                    "SELECT seq, extract(epoch FROM ts)::bigint, kind, meter_id, data::text \
                     FROM events WHERE gateway = $1 ORDER BY seq",
                )
                .bind(gateway)
                .fetch_all(&pg.pool)
                .await
            }
        }
        .op("read events")?;
        Ok(rows
            .into_iter()
            .map(|(seq, ts, kind, meter_id, data)| StoredEvent {
                seq: u64_of(seq),
                ts: u64_of(ts),
                kind,
                meter_id,
                data,
            })
            .collect())
    }

    /// Sequenced messages stored for one gateway (rows of `received`).
    pub async fn received_count(&self, gateway: &str) -> Result<u64, StoreError> {
        let n: i64 = match self {
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM received WHERE gateway = ?1")
                    .bind(gateway)
                    .fetch_one(pool)
                    .await
            }
            Store::Postgres(pg) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM received WHERE gateway = $1")
                    .bind(gateway)
                    .fetch_one(&pg.pool)
                    .await
            }
        }
        .op("count received")?;
        Ok(u64_of(n))
    }

    /// The stored roster of a gateway: version and meter ids in order.
    pub async fn roster(&self, gateway: &str) -> Result<(u32, Vec<String>), StoreError> {
        let version = self.gateway(gateway).await?.map_or(0, |g| g.roster_version);
        let ids = match self {
            Store::Sqlite(pool) => {
                sqlx::query_scalar(
                    "SELECT meter_id FROM roster_meters WHERE gateway = ?1 ORDER BY position",
                )
                .bind(gateway)
                .fetch_all(pool)
                .await
            }
            Store::Postgres(pg) => {
                sqlx::query_scalar(
                    "SELECT meter_id FROM roster_meters WHERE gateway = $1 ORDER BY position",
                )
                .bind(gateway)
                .fetch_all(&pg.pool)
                .await
            }
        }
        .op("load roster")?;
        Ok((version, ids))
    }
}

/// The kind name and JSON fields of an event, and the meter index it concerns.
fn event_fields(kind: &EventKind) -> (&'static str, Option<u32>, serde_json::Value) {
    match *kind {
        EventKind::Health {
            uptime_secs,
            queue_len,
            free_data_kib,
            rssi_dbm,
            meters_seen,
        } => (
            "health",
            None,
            serde_json::json!({
                "uptime_secs": uptime_secs, "queue_len": queue_len,
                "free_data_kib": free_data_kib, "rssi_dbm": rssi_dbm, "meters_seen": meters_seen,
            }),
        ),
        // Protocol 2's health: the same `health` row, plus the day's cellular data use.
        EventKind::Health2 {
            uptime_secs,
            queue_len,
            free_data_kib,
            rssi_dbm,
            meters_seen,
            bytes_used_today,
        } => (
            "health",
            None,
            serde_json::json!({
                "uptime_secs": uptime_secs, "queue_len": queue_len,
                "free_data_kib": free_data_kib, "rssi_dbm": rssi_dbm, "meters_seen": meters_seen,
                "bytes_used_today": bytes_used_today,
            }),
        ),
        EventKind::MeterAlarm { meter_index, code } => (
            "meter_alarm",
            Some(meter_index),
            serde_json::json!({ "meter_index": meter_index, "code": code }),
        ),
        EventKind::MeterLost { meter_index } => (
            "meter_lost",
            Some(meter_index),
            serde_json::json!({ "meter_index": meter_index }),
        ),
    }
}

fn roster_id(roster: &MeterIds, meter: u32) -> Option<&str> {
    roster.get(meter)
}

async fn commit_sqlite(
    pool: &SqlitePool,
    gateway: &str,
    items: &[Item],
    roster: &MeterIds,
    max_seq: i64,
    now: i64,
) -> Result<CommitOutcome, StoreError> {
    let mut out = CommitOutcome::default();
    let mut tx = pool.begin().await.op("begin commit")?;
    for item in items {
        let seq = i64_of(item.seq(), "sequence number")?;
        let inserted = sqlx::query(
            "INSERT INTO received (gateway, seq, kind, items, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .bind(gateway)
        .bind(seq)
        .bind(item.kind())
        .bind(item.count())
        .bind(now)
        .execute(&mut *tx)
        .await
        .op("insert received")?;
        if inserted.rows_affected() == 0 {
            out.duplicates += 1;
            continue;
        }
        out.stored += 1;
        match item {
            Item::Readings { samples, .. } => {
                for chunk in samples.chunks(SQLITE_ROWS_PER_INSERT) {
                    let mut qb =
                        QueryBuilder::new("INSERT INTO readings (gateway, meter_id, ts, wh, seq) ");
                    let mut bad = None;
                    qb.push_values(chunk, |mut b, s| {
                        // Ranges were checked by the session; a miss here is a bug, refused below.
                        let ts = i64::try_from(s.timestamp).unwrap_or_else(|_| {
                            bad = Some(("timestamp", s.timestamp));
                            0
                        });
                        let wh = i64::try_from(s.wh).unwrap_or_else(|_| {
                            bad = Some(("register", s.wh));
                            0
                        });
                        b.push_bind(gateway)
                            .push_bind(roster_id(roster, s.meter).unwrap_or(""))
                            .push_bind(ts)
                            .push_bind(wh)
                            .push_bind(seq);
                    });
                    if let Some((what, value)) = bad {
                        return Err(StoreError::OutOfRange { what, value });
                    }
                    qb.build().execute(&mut *tx).await.op("insert readings")?;
                    out.readings += chunk.len();
                }
            }
            Item::Event(e) => {
                let (kind, meter, data) = event_fields(&e.kind);
                sqlx::query(
                    "INSERT INTO events (gateway, seq, ts, kind, meter_id, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .bind(gateway)
                .bind(seq)
                .bind(i64_of(e.time, "event time")?)
                .bind(kind)
                .bind(meter.and_then(|m| roster_id(roster, m)))
                .bind(data.to_string())
                .execute(&mut *tx)
                .await
                .op("insert event")?;
            }
        }
    }
    sqlx::query(
        "UPDATE gateways SET last_committed_seq = MAX(last_committed_seq, ?1), \
         last_seen = MAX(last_seen, ?2) WHERE gateway = ?3",
    )
    .bind(max_seq)
    .bind(now)
    .bind(gateway)
    .execute(&mut *tx)
    .await
    .op("advance last_committed_seq")?;
    tx.commit().await.op("commit")?;
    Ok(out)
}

/// Month number (years × 12 + month − 1) of a unix time, UTC.
fn month_of(unix: i64) -> i64 {
    let days = unix.div_euclid(86_400);
    let (y, m, _) = civil_from_days(days);
    y * 12 + (m - 1)
}

/// Unix time of the first second of a month number.
fn month_start(month: i64) -> i64 {
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    days_from_civil(y, m, 1) * 86_400
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 → (year, month 1..=12, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl PgStore {
    /// Makes sure each month of `months` has its readings partition. A partition is created
    /// detached, filled with any rows of its range that had landed in the default partition,
    /// then attached: PostgreSQL refuses to add a partition whose rows sit in the default one.
    /// An advisory lock serialises ingest nodes doing this at once.
    async fn ensure_partitions(&self, months: &HashSet<i64>, now: i64) -> Result<(), StoreError> {
        let current = month_of(now);
        let todo: Vec<i64> = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            months
                .iter()
                .copied()
                .filter(|m| !known.contains(m))
                .filter(|m| {
                    (current - PARTITION_PAST_MONTHS..=current + PARTITION_FUTURE_MONTHS)
                        .contains(m)
                })
                .collect()
        };
        for month in todo {
            let (from, to) = (month_start(month), month_start(month + 1));
            let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
            let name = format!("readings_p{y:04}{m:02}");
            let mut conn = self.pool.acquire().await.op("acquire for partition")?;
            let mut tx = conn.begin().await.op("begin partition")?;
            // Key 0x5350_4b52 ("SPKR") + month: one lock per month.
            sqlx::query("SELECT pg_advisory_xact_lock(1397771090, $1::int)")
                .bind(month as i32)
                .execute(&mut *tx)
                .await
                .op("lock partition creation")?;
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&name)
                .fetch_one(&mut *tx)
                .await
                .op("look up partition")?;
            if !exists {
                let range = format!("ts >= to_timestamp({from}) AND ts < to_timestamp({to})");
                for sql in [
                    format!(
                        "CREATE TABLE {name} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    ),
                    format!("INSERT INTO {name} SELECT * FROM readings_default WHERE {range}"),
                    format!("DELETE FROM readings_default WHERE {range}"),
                    format!(
                        "ALTER TABLE readings ATTACH PARTITION {name} \
                         FOR VALUES FROM (to_timestamp({from})) TO (to_timestamp({to}))"
                    ),
                ] {
                    sqlx::query(&sql)
                        .execute(&mut *tx)
                        .await
                        .op("create readings partition")?;
                }
                tracing::info!(partition = %name, "created readings partition");
            }
            tx.commit().await.op("commit partition")?;
            self.partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(month);
        }
        Ok(())
    }

    async fn commit(
        &self,
        gateway: &str,
        items: &[Item],
        roster: &MeterIds,
        max_seq: i64,
        now: i64,
    ) -> Result<CommitOutcome, StoreError> {
        // Months first, outside the transaction: DDL takes strong locks we must not hold long.
        let mut months = HashSet::new();
        // The month of the previous reading, as [start, end): most readings share it.
        let mut current = (0, 0);
        for item in items {
            if let Item::Readings { samples, .. } = item {
                for s in samples {
                    let ts = i64_of(s.timestamp, "timestamp")?;
                    if !(current.0..current.1).contains(&ts) {
                        let month = month_of(ts);
                        months.insert(month);
                        current = (month_start(month), month_start(month + 1));
                    }
                }
            }
        }
        self.ensure_partitions(&months, now).await?;

        let mut out = CommitOutcome::default();
        let mut seqs = Vec::with_capacity(items.len());
        let mut kinds = Vec::with_capacity(items.len());
        let mut counts = Vec::with_capacity(items.len());
        for item in items {
            seqs.push(i64_of(item.seq(), "sequence number")?);
            kinds.push(item.kind());
            counts.push(item.count());
        }
        let mut tx = self.pool.begin().await.op("begin commit")?;
        // One round trip for all (gateway, seq) rows; RETURNING names the ones that are new.
        let new: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO received (gateway, seq, kind, items, received_at) \
             SELECT $1, s, k, n, to_timestamp($5) FROM UNNEST($2::bigint[], $3::text[], $4::int[]) AS u(s, k, n) \
             ON CONFLICT DO NOTHING RETURNING seq",
        )
        .bind(gateway)
        .bind(&seqs)
        .bind(&kinds)
        .bind(&counts)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .op("insert received")?;
        let new: HashSet<i64> = new.into_iter().collect();
        out.stored = new.len();
        out.duplicates = items.len() - new.len();

        let mut copy = CopyBinary::new();
        for item in items {
            let seq = i64_of(item.seq(), "sequence number")?;
            if !new.contains(&seq) {
                continue;
            }
            match item {
                Item::Readings { samples, .. } => {
                    for s in samples {
                        copy.row(
                            gateway,
                            roster_id(roster, s.meter).unwrap_or(""),
                            i64_of(s.timestamp, "timestamp")?,
                            i64_of(s.wh, "register")?,
                            seq,
                        );
                    }
                    out.readings += samples.len();
                }
                Item::Event(e) => {
                    let (kind, meter, data) = event_fields(&e.kind);
                    sqlx::query(
                        "INSERT INTO events (gateway, seq, ts, kind, meter_id, data) \
                         VALUES ($1, $2, to_timestamp($3), $4, $5, $6::jsonb)",
                    )
                    .bind(gateway)
                    .bind(seq)
                    .bind(i64_of(e.time, "event time")?)
                    .bind(kind)
                    .bind(meter.and_then(|m| roster_id(roster, m)))
                    .bind(data.to_string())
                    .execute(&mut *tx)
                    .await
                    .op("insert event")?;
                }
            }
        }
        if copy.rows > 0 {
            // The bulk path: binary COPY inside the same transaction as the (gateway, seq) rows.
            let mut sink = tx
                .copy_in_raw(
                    "COPY readings (gateway, meter_id, ts, wh, seq) FROM STDIN (FORMAT binary)",
                )
                .await
                .op("start COPY readings")?;
            sink.send(copy.finish()).await.op("COPY readings")?;
            sink.finish().await.op("finish COPY readings")?;
        }
        sqlx::query(
            "UPDATE gateways SET last_committed_seq = GREATEST(last_committed_seq, $1), \
             last_seen = GREATEST(last_seen, to_timestamp($2)) WHERE gateway = $3",
        )
        .bind(max_seq)
        .bind(now)
        .bind(gateway)
        .execute(&mut *tx)
        .await
        .op("advance last_committed_seq")?;
        tx.commit().await.op("commit")?;
        Ok(out)
    }
}

/// A PostgreSQL binary COPY stream for `readings (gateway text, meter_id text, ts timestamptz,
/// wh bigint, seq bigint)`: the 19-byte header, per row a field count and length-prefixed big-endian fields,
/// and the −1 trailer.
struct CopyBinary {
    buf: Vec<u8>,
    rows: usize,
}

impl CopyBinary {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyBinary { buf, rows: 0 }
    }

    fn row(&mut self, gateway: &str, meter_id: &str, ts: i64, wh: i64, seq: i64) {
        let b = &mut self.buf;
        b.extend_from_slice(&5i16.to_be_bytes());
        for text in [gateway, meter_id] {
            // Lengths are bounded: a CN ≤ 64 bytes, a meter id text ≤ 68.
            b.extend_from_slice(&(text.len() as i32).to_be_bytes());
            b.extend_from_slice(text.as_bytes());
        }
        // timestamptz: microseconds since 2000-01-01 UTC. ts ≤ MAX_TS, so no overflow.
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&((ts - PG_EPOCH_OFFSET) * 1_000_000).to_be_bytes());
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&wh.to_be_bytes());
        // seq: the batch's sequence number, for the data pipeline's cursor.
        b.extend_from_slice(&8i32.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        self.rows += 1;
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        assert_eq!(month_start(month_of(0)), 0);
        // 2026-11-26T03:00:00Z → November 2026, which starts 2026-11-01T00:00:00Z.
        let t = 1_795_662_000;
        assert_eq!(month_of(t), 2026 * 12 + 10);
        assert_eq!(month_start(month_of(t)), 1_793_491_200);
        assert_eq!(month_start(2026 * 12 + 11), 1_796_083_200); // 2026-12-01
        assert_eq!(month_start(2027 * 12), 1_798_761_600); // 2027-01-01
    }

    #[test]
    fn meter_ids() {
        assert_eq!(meter_id_text(b"MTR-00042"), "MTR-00042");
        assert_eq!(meter_id_text(&[0x01, 0xab]), "hex:01ab");
        assert_eq!(meter_id_text(b"hex:41"), "hex:6865783a3431");
        assert_eq!(meter_id_text(b""), "hex:");
        assert_eq!(meter_id_text(b"a b"), "hex:612062");
    }

    #[test]
    fn meter_ids_compact() {
        let ids = MeterIds::new(&["a", "bc", "", "def"]);
        assert_eq!(ids.len(), 4);
        let got: Vec<_> = (0..5).map(|i| ids.get(i)).collect();
        assert_eq!(got, [Some("a"), Some("bc"), Some(""), Some("def"), None]);
        assert_eq!(MeterIds::default().get(0), None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///x.db?mode=rwc"), "sqlite:///x.db?mode=rwc");
    }
}
