//! Read-only access to ingest's tables (and, once the pipeline writes them, its consumption and
//! grid-event tables). The API never writes there and never runs migrations: ingest owns that
//! schema. SQLite is opened read-only; PostgreSQL sessions run with
//! `default_transaction_read_only=on`, so a bug here cannot change a reading.
//!
//! Both backends share one SQL text per query, written in the PostgreSQL flavour with three
//! markers that [`Db::sql`] rewrites: `EPOCH(col)` (a time column as unix seconds: timestamptz
//! on PostgreSQL, already an integer on SQLite), `TIME($n)` (unix seconds parameter compared with
//! a time column) and `$n` itself (`?n` on SQLite).

use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt as _;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use tokio::sync::mpsc;

use crate::error::StoreError;

/// Which engine a database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on ingest's database (cheap to clone).
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A bound parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
}

/// Column access shared by both backends' rows (columns by position).
pub trait Cols {
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, i: usize) -> Result<String, sqlx::Error>;
    fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error>;
}

macro_rules! impl_cols {
    ($row:ty) => {
        impl Cols for $row {
            fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
                self.try_get(i)
            }
            fn opt_int(&self, i: usize) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(i)
            }
            fn text(&self, i: usize) -> Result<String, sqlx::Error> {
                self.try_get(i)
            }
            fn opt_text(&self, i: usize) -> Result<Option<String>, sqlx::Error> {
                self.try_get(i)
            }
        }
    };
}
impl_cols!(SqliteRow);
impl_cols!(PgRow);

/// Decodes one row into a record.
pub type Decode<T> = fn(&dyn Cols) -> Result<T, sqlx::Error>;

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
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

impl Db {
    /// Opens ingest's database read-only and checks ingest's tables are there.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let db = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .read_only(true)
                .busy_timeout(Duration::from_secs(10));
            Db::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)
                .map_err(connect_err)?
                .options([("default_transaction_read_only", "on")]);
            Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .connect_with(options)
                    .await
                    .map_err(connect_err)?,
            )
        } else {
            return Err(StoreError::UnsupportedUrl { url: redact(url) });
        };
        let probe = "SELECT count(*) FROM gateways WHERE gateway = ''";
        let checked = match &db {
            Db::Sqlite(p) => sqlx::query(probe).fetch_one(p).await.map(drop),
            Db::Postgres(p) => sqlx::query(probe).fetch_one(p).await.map(drop),
        };
        checked.map_err(|source| StoreError::NoIngestSchema {
            url: redact(url),
            source,
        })?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }

    /// The SQL text for this backend (see the module docs for the markers).
    pub fn sql(&self, template: &str) -> String {
        rewrite(template, self.backend())
    }

    /// Runs `template` with `args` and decodes every row.
    pub async fn fetch<T>(
        &self,
        what: &'static str,
        template: &str,
        args: &[Arg],
        decode: Decode<T>,
    ) -> Result<Vec<T>, StoreError> {
        let sql = self.sql(template);
        let err = |source| StoreError::Query { what, source };
        match self {
            Db::Sqlite(pool) => {
                let mut q = sqlx::query(&sql);
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(*v),
                        Arg::Text(v) => q.bind(v.clone()),
                    };
                }
                let rows = q.fetch_all(pool).await.map_err(err)?;
                rows.iter().map(|r| decode(r).map_err(err)).collect()
            }
            Db::Postgres(pool) => {
                let mut q = sqlx::query(&sql);
                for a in args {
                    q = match a {
                        Arg::Int(v) => q.bind(*v),
                        Arg::Text(v) => q.bind(v.clone()),
                    };
                }
                let rows = q.fetch_all(pool).await.map_err(err)?;
                rows.iter().map(|r| decode(r).map_err(err)).collect()
            }
        }
    }

    /// Runs `template` and sends each decoded row to `tx` as it arrives (rows are never all in
    /// memory; a slow client slows the query through the bounded channel). Returns when the rows
    /// are done, the receiver is gone, or a query fails (the error is sent too).
    pub async fn stream_into<T: Send + 'static>(
        &self,
        what: &'static str,
        template: &str,
        args: Vec<Arg>,
        decode: Decode<T>,
        tx: &mpsc::Sender<Result<T, StoreError>>,
    ) -> bool {
        let sql = self.sql(template);
        let err = |source| StoreError::Query { what, source };
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(&sql);
                for a in &args {
                    q = match a {
                        Arg::Int(v) => q.bind(*v),
                        Arg::Text(v) => q.bind(v.clone()),
                    };
                }
                let mut rows = q.fetch($pool);
                loop {
                    let item = match rows.try_next().await {
                        Ok(Some(row)) => decode(&row).map_err(err),
                        Ok(None) => return true,
                        Err(e) => Err(err(e)),
                    };
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return false;
                    }
                }
            }};
        }
        match self {
            Db::Sqlite(pool) => run!(pool),
            Db::Postgres(pool) => run!(pool),
        }
    }
}

/// The SQL text of `template` for `backend` (see the module docs; tests seed rows with it).
pub fn sql_for(template: &str, backend: Backend) -> String {
    rewrite(template, backend)
}

/// Rewrites the PostgreSQL-flavoured template for `backend`.
fn rewrite(template: &str, backend: Backend) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    loop {
        let next = [rest.find("EPOCH("), rest.find("TIME(")]
            .into_iter()
            .flatten()
            .min();
        let Some(at) = next else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at]);
        let is_epoch = rest[at..].starts_with("EPOCH(");
        let open = at + if is_epoch { 6 } else { 5 };
        // Markers never nest and hold a column name or `$n`: the next ')' closes them.
        let close = open + rest[open..].find(')').unwrap_or(rest.len() - open);
        let inner = &rest[open..close];
        match (backend, is_epoch) {
            (Backend::Postgres, true) => {
                out.push_str(&format!("CAST(EXTRACT(EPOCH FROM {inner}) AS BIGINT)"))
            }
            (Backend::Postgres, false) => out.push_str(&format!("to_timestamp({inner})")),
            (Backend::Sqlite, _) => out.push_str(inner),
        }
        rest = rest.get(close + 1..).unwrap_or("");
    }
    match backend {
        Backend::Postgres => out,
        Backend::Sqlite => out.replace('$', "?"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_rewrite_per_backend() {
        let t = "SELECT EPOCH(r.ts), wh FROM readings r WHERE r.ts >= TIME($2) AND gateway = $1";
        assert_eq!(
            rewrite(t, Backend::Sqlite),
            "SELECT r.ts, wh FROM readings r WHERE r.ts >= ?2 AND gateway = ?1"
        );
        assert_eq!(
            rewrite(t, Backend::Postgres),
            "SELECT CAST(EXTRACT(EPOCH FROM r.ts) AS BIGINT), wh FROM readings r \
             WHERE r.ts >= to_timestamp($2) AND gateway = $1"
        );
    }
}
