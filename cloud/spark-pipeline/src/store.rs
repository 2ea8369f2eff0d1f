//! Storage: the pipeline reads spark-ingest's tables (`gateways`, `received`, `readings`; never
//! writes them) and owns its own (`migrations/`): consumption, events, cursors, meter state.
//! SQLite by default, PostgreSQL in production; the SQL differs where the engines do (times are
//! unix seconds on SQLite and `timestamptz` on PostgreSQL; bulk writes use `UNNEST` arrays on
//! PostgreSQL and multi-row `VALUES` on SQLite).
//!
//! A batch is read outside any transaction (ingest's rows never change once committed, and only
//! the one worker that holds a gateway writes its pipeline state), then written in **one**
//! transaction whose first statement moves the cursor with a compare-and-set: a second pipeline
//! node, or a retry after a lost commit, finds the cursor moved and writes nothing.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};

use crate::error::{QueryContext, StoreError};

/// Rows per multi-row statement on SQLite (≤ 6 parameters each, far under SQLite's 32766).
const SQLITE_ROWS_PER_INSERT: usize = 1000;

/// The database the pipeline works on (ingest's). Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A gateway with readings (or events) stored beyond the pipeline's cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub gateway: String,
    /// `gateways.last_committed_seq`.
    pub committed: i64,
    /// The pipeline's cursor (0: nothing consumed yet).
    pub cursor: i64,
}

/// One ingest message (a `received` row) a batch takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message {
    pub seq: i64,
    pub readings: bool,
    pub items: i64,
}

/// A readings row as the pipeline reads it.
#[derive(Debug, Clone)]
pub(crate) struct RawReading {
    pub meter_id: String,
    pub ts: i64,
    pub wh: i64,
    pub seq: i64,
}

/// The stored cursor row of a gateway.
#[derive(Debug, Clone, Default)]
pub(crate) struct CursorRow {
    pub seq: i64,
    pub clock: i64,
    pub readings: i64,
    pub outage_event: Option<i64>,
    pub outage_start: Option<i64>,
    pub outage_meters: Option<i64>,
}

/// A stored meter state row.
#[derive(Debug, Clone)]
pub(crate) struct MeterRow {
    pub meter_id: String,
    pub last_ts: i64,
    pub last_wh: i64,
    pub zero_since: Option<i64>,
    pub zero_event: Option<i64>,
}

/// An event to insert.
#[derive(Debug, Clone)]
pub(crate) struct EventRow {
    pub meter_id: Option<String>,
    pub kind: &'static str,
    pub start: i64,
    pub end: Option<i64>,
    pub data: serde_json::Value,
}

/// Everything one batch writes, in the transaction that moves the cursor from `from_seq`.
#[derive(Debug, Default)]
pub(crate) struct BatchWrite {
    pub from_seq: i64,
    pub cursor: CursorRow,
    /// The open outage, if it is one of `new_events` (index) rather than a stored one.
    pub outage_new: Option<usize>,
    /// (meter, hour start, Wh), each key once.
    pub hourly: Vec<(String, i64, i64)>,
    /// (meter, day start, Wh), each key once.
    pub daily: Vec<(String, i64, i64)>,
    pub new_events: Vec<EventRow>,
    /// Stored events that ended: (id, end).
    pub closed: Vec<(i64, i64)>,
    /// Meter states to store; `zero_event_new` names one of `new_events` instead of a stored id.
    pub meters: Vec<(MeterRow, Option<usize>)>,
}

/// Aggregates and events as stored, for tests, the bench and the chaos check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredEvent {
    pub gateway: String,
    pub meter_id: Option<String>,
    pub kind: String,
    pub start_ts: i64,
    pub end_ts: Option<i64>,
    pub data: String,
}

/// A `pipeline_meters` row as read: (meter, last_ts, last_wh, zero_since, zero_event).
type MeterTuple = (String, i64, i64, Option<i64>, Option<i64>);
/// A `grid_events` row as read: (gateway, meter, kind, start, end, data).
type EventTuple = (String, Option<String>, String, i64, Option<i64>, String);

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

/// Our migrations share sqlx's `_sqlx_migrations` table with spark-ingest's (one per database):
/// theirs are "missing" from our point of view and must not stop us.
fn migrator(mut m: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    m.set_ignore_missing(true);
    m
}

/// Runs the same query text on either pool (`$N` parameters work on both).
macro_rules! on_pool {
    ($store:expr, |$q:ident| $body:expr) => {
        match $store {
            Store::Sqlite(pool) => {
                let $q = pool;
                $body
            }
            Store::Postgres(pool) => {
                let $q = pool;
                $body
            }
        }
    };
}

/// The part of a batch's transaction both backends write alike: the cursor compare-and-set
/// (first, so SQLite takes its write lock at once), events, and the cursor's other fields.
/// Evaluates to false when the cursor had moved (nothing written). A macro rather than a generic
/// function: the two transaction types share the calls but not one nameable bound set.
macro_rules! commit_common {
    ($self:expr, $tx:expr, $gateway:expr, $w:expr, $now:expr) => {{
        let moved = sqlx::query(&format!(
            "UPDATE pipeline_cursors SET seq = $1, updated_at = {} WHERE gateway = $3 AND seq = $4",
            $self.time("$2")
        ))
        .bind($w.cursor.seq)
        .bind($now)
        .bind($gateway)
        .bind($w.from_seq)
        .execute(&mut *$tx)
        .await
        .op("move cursor")?;
        if moved.rows_affected() == 0 {
            false
        } else {
        let insert = format!(
            "INSERT INTO grid_events (gateway, meter_id, kind, start_ts, end_ts, detected_at, data) \
             VALUES ($1, $2, $3, {}, {}, {}, {}) RETURNING id",
            $self.time("$4"),
            match $self {
                Store::Sqlite(_) => "$5".to_owned(),
                Store::Postgres(_) => "CASE WHEN $5::bigint IS NULL THEN NULL ELSE to_timestamp($5) END".to_owned(),
            },
            $self.time("$6"),
            match $self {
                Store::Sqlite(_) => "$7",
                Store::Postgres(_) => "$7::jsonb",
            }
        );
        let mut ids = Vec::with_capacity($w.new_events.len());
        for e in &$w.new_events {
            let id: i64 = sqlx::query(&insert)
                .bind($gateway)
                .bind(e.meter_id.as_deref())
                .bind(e.kind)
                .bind(e.start)
                .bind(e.end)
                .bind($now)
                .bind(e.data.to_string())
                .fetch_one(&mut *$tx)
                .await
                .op("insert event")?
                .try_get(0)
                .op("read event id")?;
            ids.push(id);
        }
        let close = format!("UPDATE grid_events SET end_ts = {} WHERE id = $2", $self.time("$1"));
        for (id, end) in &$w.closed {
            sqlx::query(&close)
                .bind(*end)
                .bind(*id)
                .execute(&mut *$tx)
                .await
                .op("close event")?;
        }
        if let Some(i) = $w.outage_new {
            $w.cursor.outage_event = Some(ids[i]);
        }
        for (m, new) in &mut $w.meters {
            if let Some(i) = new {
                m.zero_event = Some(ids[*i]);
            }
        }
        let c = &$w.cursor;
        sqlx::query(
            "UPDATE pipeline_cursors SET clock = $1, readings = $2, outage_event = $3, \
             outage_start = $4, outage_meters = $5 WHERE gateway = $6",
        )
        .bind(c.clock)
        .bind(c.readings)
        .bind(c.outage_event)
        .bind(c.outage_start)
        .bind(c.outage_meters)
        .bind($gateway)
        .execute(&mut *$tx)
        .await
        .op("update cursor")?;
        true
        }
    }};
}

impl Store {
    /// Opens ingest's database at `url`, checks ingest's schema and applies the pipeline's
    /// migrations. PostgreSQL gets a pool of `pg_connections`.
    pub async fn connect(url: &str, pg_connections: u32) -> Result<Store, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .journal_mode(SqliteJournalMode::Wal)
                // NORMAL, not FULL: a power cut may lose the last commits, but a batch's
                // aggregates and cursor go together, so the batch is simply done again.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(60));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Store::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(pg_connections.max(2))
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            Store::Postgres(pool)
        } else {
            return Err(StoreError::UnsupportedUrl { url: redact(url) });
        };
        on_pool!(&store, |pool| sqlx::query(
            "SELECT gateway, meter_id, ts, wh, seq FROM readings WHERE 1 = 0"
        )
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|source| StoreError::IngestSchema { source })?);
        match &store {
            Store::Sqlite(pool) => {
                migrator(sqlx::migrate!("migrations/sqlite"))
                    .run(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                migrator(sqlx::migrate!("migrations/postgres"))
                    .run(pool)
                    .await?
            }
        }
        Ok(store)
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Store::Sqlite(_))
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }

    /// `column` as unix seconds in a SELECT.
    fn secs(&self, column: &str) -> String {
        match self {
            Store::Sqlite(_) => column.to_owned(),
            Store::Postgres(_) => format!("extract(epoch FROM {column})::bigint"),
        }
    }

    /// Parameter `p` (unix seconds) as the column's time type.
    fn time(&self, p: &str) -> String {
        match self {
            Store::Sqlite(_) => p.to_owned(),
            Store::Postgres(_) => format!("to_timestamp({p})"),
        }
    }

    /// Gateways with stored messages beyond the pipeline's cursor, by name.
    pub async fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let sql = "SELECT g.gateway, g.last_committed_seq, COALESCE(c.seq, 0) FROM gateways g \
                   LEFT JOIN pipeline_cursors c ON c.gateway = g.gateway \
                   WHERE g.last_committed_seq > COALESCE(c.seq, 0) ORDER BY g.gateway";
        let rows: Vec<(String, i64, i64)> =
            on_pool!(self, |pool| sqlx::query_as(sql).fetch_all(pool).await)
                .op("list pending gateways")?;
        Ok(rows
            .into_iter()
            .map(|(gateway, committed, cursor)| Pending {
                gateway,
                committed,
                cursor,
            })
            .collect())
    }

    /// Readings stored for `gateway` after sequence `cursor`.
    pub async fn pending_readings(&self, gateway: &str, cursor: i64) -> Result<i64, StoreError> {
        let sql = "SELECT COALESCE(SUM(items), 0) FROM received \
                   WHERE gateway = $1 AND seq > $2 AND kind = 'readings'";
        let n: i64 = on_pool!(self, |pool| sqlx::query_scalar(sql)
            .bind(gateway)
            .bind(cursor)
            .fetch_one(pool)
            .await)
        .op("count pending readings")?;
        Ok(n)
    }

    /// The cursor row of `gateway`, created (at 0) when missing.
    pub(crate) async fn cursor(&self, gateway: &str, now: i64) -> Result<CursorRow, StoreError> {
        let insert = format!(
            "INSERT INTO pipeline_cursors (gateway, seq, updated_at) VALUES ($1, 0, {}) \
             ON CONFLICT DO NOTHING",
            self.time("$2")
        );
        on_pool!(self, |pool| sqlx::query(&insert)
            .bind(gateway)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()))
        .op("create cursor")?;
        let sql = "SELECT seq, clock, readings, outage_event, outage_start, outage_meters \
                   FROM pipeline_cursors WHERE gateway = $1";
        let row: (i64, i64, i64, Option<i64>, Option<i64>, Option<i64>) =
            on_pool!(self, |pool| sqlx::query_as(sql)
                .bind(gateway)
                .fetch_one(pool)
                .await)
            .op("read cursor")?;
        Ok(CursorRow {
            seq: row.0,
            clock: row.1,
            readings: row.2,
            outage_event: row.3,
            outage_start: row.4,
            outage_meters: row.5,
        })
    }

    /// The messages after `cursor`, in order, until they hold `readings` readings (at least
    /// one message, at most `max_messages`).
    pub(crate) async fn next_messages(
        &self,
        gateway: &str,
        cursor: i64,
        readings: u64,
        max_messages: i64,
    ) -> Result<Vec<Message>, StoreError> {
        let sql = "SELECT seq, kind, CAST(items AS BIGINT) FROM received WHERE gateway = $1 AND seq > $2 \
                   ORDER BY seq LIMIT $3";
        let rows: Vec<(i64, String, i64)> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(gateway)
            .bind(cursor)
            .bind(max_messages)
            .fetch_all(pool)
            .await)
        .op("read pending messages")?;
        let mut out = Vec::new();
        let mut total = 0u64;
        for (seq, kind, items) in rows {
            if total >= readings {
                break;
            }
            let is_readings = kind == "readings";
            if is_readings {
                total += u64::try_from(items).unwrap_or(0);
            }
            out.push(Message {
                seq,
                readings: is_readings,
                items,
            });
        }
        Ok(out)
    }

    /// The readings rows of `gateway` with `from < seq ≤ to`.
    pub(crate) async fn readings(
        &self,
        gateway: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<RawReading>, StoreError> {
        let sql = format!(
            "SELECT meter_id, {}, wh, seq FROM readings WHERE gateway = $1 AND seq > $2 AND seq <= $3",
            self.secs("ts")
        );
        let rows: Vec<(String, i64, i64, i64)> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(gateway)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await)
        .op("read readings")?;
        Ok(rows
            .into_iter()
            .map(|(meter_id, ts, wh, seq)| RawReading {
                meter_id,
                ts,
                wh,
                seq,
            })
            .collect())
    }

    /// The readings of one meter consumed before message `below_seq` whose times lie between
    /// the last one before `lo` and the first one after `hi` (both included): the stretch of
    /// its series that late readings in `[lo, hi]` change. Sorted by (ts, wh).
    pub(crate) async fn meter_window(
        &self,
        gateway: &str,
        meter_id: &str,
        below_seq: i64,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let (ts, t4, t5) = (self.secs("ts"), self.time("$4"), self.time("$5"));
        let big = self.time("$6");
        let sql = format!(
            "SELECT {ts}, wh FROM readings WHERE gateway = $1 AND meter_id = $2 AND seq > 0 AND seq < $3 \
             AND ts >= COALESCE((SELECT MAX(ts) FROM readings WHERE gateway = $1 AND meter_id = $2 \
                                 AND seq > 0 AND seq < $3 AND ts < {t4}), {t4}) \
             AND ts <= COALESCE((SELECT MIN(ts) FROM readings WHERE gateway = $1 AND meter_id = $2 \
                                 AND seq > 0 AND seq < $3 AND ts > {t5}), {big}) \
             ORDER BY ts, wh"
        );
        let rows: Vec<(i64, i64)> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(gateway)
            .bind(meter_id)
            .bind(below_seq)
            .bind(lo)
            .bind(hi)
            .bind(253_402_300_799i64)
            .fetch_all(pool)
            .await)
        .op("read a meter's window for late readings")?;
        Ok(rows)
    }

    /// All meter states of a gateway.
    pub(crate) async fn meters(&self, gateway: &str) -> Result<Vec<MeterRow>, StoreError> {
        let sql = "SELECT meter_id, last_ts, last_wh, zero_since, zero_event FROM pipeline_meters \
                   WHERE gateway = $1";
        let rows: Vec<MeterTuple> = on_pool!(self, |pool| sqlx::query_as(sql)
            .bind(gateway)
            .fetch_all(pool)
            .await)
        .op("read meter states")?;
        Ok(rows
            .into_iter()
            .map(
                |(meter_id, last_ts, last_wh, zero_since, zero_event)| MeterRow {
                    meter_id,
                    last_ts,
                    last_wh,
                    zero_since,
                    zero_event,
                },
            )
            .collect())
    }

    /// Writes a batch in one transaction. `Ok(false)`: the cursor was not at `from_seq` any more
    /// (another node or an earlier attempt did the batch); nothing was written.
    pub(crate) async fn commit(
        &self,
        gateway: &str,
        mut w: BatchWrite,
        now: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await.op("begin batch")?;
                if !commit_common!(self, tx, gateway, w, now) {
                    return Ok(false);
                }
                for chunk in w.hourly.chunks(SQLITE_ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO consumption_hourly (meter_id, gateway, hour, wh) ",
                    );
                    qb.push_values(chunk, |mut b, (m, h, wh)| {
                        b.push_bind(m).push_bind(gateway).push_bind(h).push_bind(wh);
                    });
                    qb.push(
                        " ON CONFLICT (meter_id, gateway, hour) DO UPDATE \
                         SET wh = consumption_hourly.wh + excluded.wh",
                    );
                    qb.build()
                        .execute(&mut *tx)
                        .await
                        .op("add hourly consumption")?;
                }
                for chunk in w.daily.chunks(SQLITE_ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO consumption_daily (meter_id, gateway, day, wh) ",
                    );
                    qb.push_values(chunk, |mut b, (m, d, wh)| {
                        b.push_bind(m).push_bind(gateway).push_bind(d).push_bind(wh);
                    });
                    qb.push(
                        " ON CONFLICT (meter_id, gateway, day) DO UPDATE \
                         SET wh = consumption_daily.wh + excluded.wh",
                    );
                    qb.build()
                        .execute(&mut *tx)
                        .await
                        .op("add daily consumption")?;
                }
                for chunk in w.meters.chunks(SQLITE_ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::new(
                        "INSERT INTO pipeline_meters (gateway, meter_id, last_ts, last_wh, zero_since, zero_event) ",
                    );
                    qb.push_values(chunk, |mut b, (m, _)| {
                        b.push_bind(gateway)
                            .push_bind(&m.meter_id)
                            .push_bind(m.last_ts)
                            .push_bind(m.last_wh)
                            .push_bind(m.zero_since)
                            .push_bind(m.zero_event);
                    });
                    qb.push(
                        " ON CONFLICT (gateway, meter_id) DO UPDATE SET last_ts = excluded.last_ts, \
                         last_wh = excluded.last_wh, zero_since = excluded.zero_since, \
                         zero_event = excluded.zero_event",
                    );
                    qb.build()
                        .execute(&mut *tx)
                        .await
                        .op("store meter states")?;
                }
                tx.commit().await.op("commit batch")?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await.op("begin batch")?;
                if !commit_common!(self, tx, gateway, w, now) {
                    return Ok(false);
                }
                for (table, key, rows) in [
                    ("consumption_hourly", "hour", &w.hourly),
                    ("consumption_daily", "day", &w.daily),
                ] {
                    if rows.is_empty() {
                        continue;
                    }
                    let meters: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
                    let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
                    let whs: Vec<i64> = rows.iter().map(|r| r.2).collect();
                    sqlx::query(&format!(
                        "INSERT INTO {table} (meter_id, gateway, {key}, wh) \
                         SELECT m, $1, to_timestamp(t), w FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS u(m, t, w) \
                         ON CONFLICT (meter_id, gateway, {key}) DO UPDATE SET wh = {table}.wh + excluded.wh"
                    ))
                    .bind(gateway)
                    .bind(&meters)
                    .bind(&times)
                    .bind(&whs)
                    .execute(&mut *tx)
                    .await
                    .op("add consumption")?;
                }
                if !w.meters.is_empty() {
                    let ids: Vec<&str> = w.meters.iter().map(|m| m.0.meter_id.as_str()).collect();
                    let ts: Vec<i64> = w.meters.iter().map(|m| m.0.last_ts).collect();
                    let wh: Vec<i64> = w.meters.iter().map(|m| m.0.last_wh).collect();
                    let zs: Vec<Option<i64>> = w.meters.iter().map(|m| m.0.zero_since).collect();
                    let ze: Vec<Option<i64>> = w.meters.iter().map(|m| m.0.zero_event).collect();
                    sqlx::query(
                        "INSERT INTO pipeline_meters (gateway, meter_id, last_ts, last_wh, zero_since, zero_event) \
                         SELECT $1, m, t, w, z, e FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
                         AS u(m, t, w, z, e) \
                         ON CONFLICT (gateway, meter_id) DO UPDATE SET last_ts = excluded.last_ts, \
                         last_wh = excluded.last_wh, zero_since = excluded.zero_since, zero_event = excluded.zero_event",
                    )
                    .bind(gateway)
                    .bind(&ids)
                    .bind(&ts)
                    .bind(&wh)
                    .bind(&zs)
                    .bind(&ze)
                    .execute(&mut *tx)
                    .await
                    .op("store meter states")?;
                }
                tx.commit().await.op("commit batch")?;
            }
        }
        Ok(true)
    }

    /// Opens `gateway_silent` for gateways whose ingest `last_seen` is older than `silent_secs`
    /// and closes open ones whose gateway was heard again. Returns (opened, closed).
    pub async fn check_silence(
        &self,
        now: i64,
        silent_secs: i64,
    ) -> Result<(u64, u64), StoreError> {
        let last_seen = self.secs("g.last_seen");
        let start = self.time("$2");
        let detected = self.time("$3");
        let data = match self {
            Store::Sqlite(_) => "'{}'",
            Store::Postgres(_) => "'{}'::jsonb",
        };
        let open = format!(
            "INSERT INTO grid_events (gateway, meter_id, kind, start_ts, end_ts, detected_at, data) \
             SELECT g.gateway, NULL, 'gateway_silent', g.last_seen, NULL, {detected}, {data} FROM gateways g \
             WHERE {last_seen} <= $1 AND NOT EXISTS (SELECT 1 FROM grid_events e WHERE e.gateway = g.gateway \
             AND e.kind = 'gateway_silent' AND e.end_ts IS NULL) ON CONFLICT DO NOTHING"
        );
        let _ = start;
        let opened = on_pool!(self, |pool| sqlx::query(&open)
            .bind(now - silent_secs)
            .bind(now)
            .bind(now)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .op("open gateway silences")?;
        let close = format!(
            "UPDATE grid_events SET end_ts = (SELECT g.last_seen FROM gateways g WHERE g.gateway = grid_events.gateway) \
             WHERE kind = 'gateway_silent' AND end_ts IS NULL AND EXISTS (SELECT 1 FROM gateways g \
             WHERE g.gateway = grid_events.gateway AND {last_seen} > $1)"
        );
        let closed = on_pool!(self, |pool| sqlx::query(&close)
            .bind(now - silent_secs)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .op("close gateway silences")?;
        Ok((opened, closed))
    }
}

/// Read-only queries for tests, the bench and the chaos check.
impl Store {
    /// All hourly rows: (gateway, meter, hour start, Wh), sorted, zero rows left out.
    pub async fn hourly(&self) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        let sql = format!(
            "SELECT gateway, meter_id, {}, wh FROM consumption_hourly WHERE wh <> 0 \
             ORDER BY gateway, meter_id, hour",
            self.secs("hour")
        );
        on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)
            .op("read hourly consumption")
    }

    /// All daily rows: (gateway, meter, day start, Wh), sorted, zero rows left out.
    pub async fn daily(&self) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        let sql = format!(
            "SELECT gateway, meter_id, {}, wh FROM consumption_daily WHERE wh <> 0 \
             ORDER BY gateway, meter_id, day",
            self.secs("day")
        );
        on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await)
            .op("read daily consumption")
    }

    /// All events, sorted.
    pub async fn events(&self) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = format!(
            "SELECT gateway, meter_id, kind, {}, {}, {} FROM grid_events",
            self.secs("start_ts"),
            self.secs("end_ts"),
            match self {
                Store::Sqlite(_) => "data",
                Store::Postgres(_) => "data::text",
            }
        );
        let rows: Vec<EventTuple> =
            on_pool!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await).op("read events")?;
        let mut out: Vec<StoredEvent> = rows
            .into_iter()
            .map(
                |(gateway, meter_id, kind, start_ts, end_ts, data)| StoredEvent {
                    gateway,
                    meter_id,
                    kind,
                    start_ts,
                    end_ts,
                    data,
                },
            )
            .collect();
        out.sort();
        Ok(out)
    }

    /// (gateway, cursor seq, readings consumed), by gateway.
    pub async fn cursors(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        on_pool!(self, |pool| sqlx::query_as(
            "SELECT gateway, seq, readings FROM pipeline_cursors ORDER BY gateway"
        )
        .fetch_all(pool)
        .await)
        .op("read cursors")
    }
}
