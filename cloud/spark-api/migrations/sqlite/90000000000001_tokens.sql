-- spark-api's own database (not ingest's): bearer tokens for internal systems.
-- Only a SHA-256 of each token is stored; the token itself is shown once, when created.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL UNIQUE,
    -- Lower-case hex SHA-256 of the whole token string.
    hash       TEXT NOT NULL UNIQUE,
    -- Space-separated scopes: read, command.
    scopes     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
