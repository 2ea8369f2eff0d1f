//! Bearer tokens for internal systems, kept in spark-api's token database (by default a SQLite
//! file of its own; never written into ingest's database unless configured so).
//!
//! The token database may also be ingest's database (one PostgreSQL for all cloud services):
//! the migration versions (9000…) keep clear of ingest's and the pipeline's.
//!
//! A token is `spk_` and 32 random bytes in base64url (256 bits). Only its SHA-256 is stored; a
//! request's token is hashed and looked up by that hash. A slow password hash (argon2) is not
//! needed: the token is random with 256 bits of entropy, so the hash cannot be brute-forced, and
//! looking up by hash leaks nothing useful through timing. The token itself is printed once by
//! `spark-api token create` and can never be shown again.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use rand::RngCore as _;
use serde::Serialize;
use sha2::Digest as _;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::db::redact;
use crate::error::{StoreError, TokenError};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every GET endpoint.
    Read,
    /// Sending commands to gateways (`POST /v1/gateways/{id}/commands`).
    Command,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Command => "command",
        }
    }
}

impl FromStr for Scope {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Scope, TokenError> {
        match s {
            "read" => Ok(Scope::Read),
            "command" => Ok(Scope::Command),
            other => Err(TokenError::UnknownScope(other.to_owned())),
        }
    }
}

/// A token's stored facts (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Unix seconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// The token database (cheap to clone).
#[derive(Debug, Clone)]
pub enum Tokens {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn parse_scopes(text: &str) -> Vec<Scope> {
    // Written by `create` from parsed scopes only; anything else is skipped, never widened.
    text.split(' ').filter_map(|s| s.parse().ok()).collect()
}

/// Our migrations may share `_sqlx_migrations` with ingest's and the pipeline's when the token
/// database is ingest's own (one PostgreSQL for everything): their versions are not ours to
/// know, so unknown applied versions are ignored (ours are numbered 9000…, theirs 2026…, 8000…).
fn migrator(mut m: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    m.set_ignore_missing(true);
    m
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Tokens {
    /// Opens (creating a SQLite file if needed) the token database and applies its migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Tokens, StoreError> {
        let connect_err = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            migrator(sqlx::migrate!("migrations/sqlite"))
                .run(&pool)
                .await?;
            Ok(Tokens::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(connect_err)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            migrator(sqlx::migrate!("migrations/postgres"))
                .run(&pool)
                .await?;
            Ok(Tokens::Postgres(pool))
        } else {
            Err(StoreError::UnsupportedUrl { url: redact(url) })
        }
    }

    pub async fn close(&self) {
        match self {
            Tokens::Sqlite(p) => p.close().await,
            Tokens::Postgres(p) => p.close().await,
        }
    }

    /// Creates a token; returns its facts and the token (the only time it exists in clear).
    pub async fn create(
        &self,
        name: &str,
        scopes: &[Scope],
    ) -> Result<(TokenInfo, String), TokenError> {
        if !valid_name(name) {
            return Err(TokenError::BadName(name.to_owned()));
        }
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        if scopes.is_empty() {
            return Err(TokenError::NoScope);
        }
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!(
            "spk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let scope_text = scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let created_at = now();
        let what = "insert token";
        let inserted = match self {
            Tokens::Sqlite(p) => sqlx::query(
                "INSERT INTO api_tokens (name, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(hash(&token))
            .bind(&scope_text)
            .bind(created_at)
            .fetch_optional(p)
            .await
            .map(|r| r.map(|r| r.get::<i64, _>(0))),
            Tokens::Postgres(p) => sqlx::query(
                "INSERT INTO api_tokens (name, hash, scopes, created_at) \
                 VALUES ($1, $2, $3, to_timestamp($4)) ON CONFLICT (name) DO NOTHING RETURNING id",
            )
            .bind(name)
            .bind(hash(&token))
            .bind(&scope_text)
            .bind(created_at)
            .fetch_optional(p)
            .await
            .map(|r| r.map(|r| r.get::<i64, _>(0))),
        }
        .map_err(|source| StoreError::Query { what, source })?;
        let id = inserted.ok_or_else(|| TokenError::NameTaken(name.to_owned()))?;
        Ok((
            TokenInfo {
                id,
                name: name.to_owned(),
                scopes,
                created_at,
                revoked_at: None,
            },
            token,
        ))
    }

    /// Revokes the token called `name` (it stays listed, with its revocation time).
    pub async fn revoke(&self, name: &str) -> Result<(), TokenError> {
        let what = "revoke token";
        let t = now();
        let n = match self {
            Tokens::Sqlite(p) => sqlx::query(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?2) WHERE name = ?1",
            )
            .bind(name)
            .bind(t)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
            Tokens::Postgres(p) => sqlx::query(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, to_timestamp($2)) \
                 WHERE name = $1",
            )
            .bind(name)
            .bind(t)
            .execute(p)
            .await
            .map(|r| r.rows_affected()),
        }
        .map_err(|source| StoreError::Query { what, source })?;
        if n == 0 {
            return Err(TokenError::NoSuchToken(name.to_owned()));
        }
        Ok(())
    }

    /// Every token, oldest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        let what = "list tokens";
        let err = |source| StoreError::Query { what, source };
        macro_rules! rows {
            ($pool:expr, $sql:expr) => {
                sqlx::query($sql)
                    .fetch_all($pool)
                    .await
                    .map_err(err)?
                    .iter()
                    .map(|r| {
                        Ok(TokenInfo {
                            id: r.try_get(0)?,
                            name: r.try_get(1)?,
                            scopes: parse_scopes(&r.try_get::<String, _>(2)?),
                            created_at: r.try_get(3)?,
                            revoked_at: r.try_get(4)?,
                        })
                    })
                    .collect::<Result<Vec<_>, sqlx::Error>>()
                    .map_err(err)?
            };
        }
        Ok(match self {
            Tokens::Sqlite(p) => rows!(
                p,
                "SELECT id, name, scopes, created_at, revoked_at FROM api_tokens ORDER BY id"
            ),
            Tokens::Postgres(p) => rows!(
                p,
                "SELECT id, name, scopes, CAST(EXTRACT(EPOCH FROM created_at) AS BIGINT), \
                 CAST(EXTRACT(EPOCH FROM revoked_at) AS BIGINT) FROM api_tokens ORDER BY id"
            ),
        })
    }

    /// The name and scopes of a live token, or `None` for an unknown or revoked one.
    pub async fn check(&self, token: &str) -> Result<Option<(String, Vec<Scope>)>, StoreError> {
        let what = "look up token";
        let h = hash(token);
        let row: Option<(String, String)> =
            match self {
                Tokens::Sqlite(p) => sqlx::query_as(
                    "SELECT name, scopes FROM api_tokens WHERE hash = ?1 AND revoked_at IS NULL",
                )
                .bind(&h)
                .fetch_optional(p)
                .await,
                Tokens::Postgres(p) => sqlx::query_as(
                    "SELECT name, scopes FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL",
                )
                .bind(&h)
                .fetch_optional(p)
                .await,
            }
            .map_err(|source| StoreError::Query { what, source })?;
        Ok(row.map(|(name, scopes)| (name, parse_scopes(&scopes))))
    }
}
