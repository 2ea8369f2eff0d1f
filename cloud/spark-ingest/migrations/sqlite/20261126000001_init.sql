-- spark-ingest schema, SQLite flavour (the default backend). Times are unix seconds.
-- Keep in step with ../postgres/ (same tables and meaning; PostgreSQL adds partitions).

-- One row per gateway ever seen. The key is the CN of its client certificate, never a payload field.
CREATE TABLE gateways (
    gateway            TEXT PRIMARY KEY NOT NULL,
    first_seen         INTEGER NOT NULL,
    -- Updated on Hello, on every commit, and at most every `last-seen-interval` otherwise.
    last_seen          INTEGER NOT NULL,
    -- Highest sequence number committed (readings batches and events share the space).
    last_committed_seq INTEGER NOT NULL DEFAULT 0,
    firmware_version   TEXT,
    booted_slot        TEXT,
    protocol_version   INTEGER,
    capabilities       INTEGER,
    -- Version of the roster stored in roster_meters (0: none yet).
    roster_version     INTEGER NOT NULL DEFAULT 0,
    -- Configuration version the cloud wants the gateway to run (set by set_config commands).
    config_version     INTEGER NOT NULL DEFAULT 0,
    last_peer          TEXT
);

-- The gateway's current meter list: a meter's position is its index in readings batches.
CREATE TABLE roster_meters (
    gateway  TEXT NOT NULL,
    position INTEGER NOT NULL,
    meter_id TEXT NOT NULL,
    PRIMARY KEY (gateway, position)
) WITHOUT ROWID;

-- Every sequenced message committed, keyed (gateway, seq): what makes a resend store nothing twice.
CREATE TABLE received (
    gateway     TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('readings', 'event')),
    items       INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (gateway, seq)
) WITHOUT ROWID;

-- Meter readings: cumulative active-energy import register (Wh) at ts.
-- No unique constraint on (gateway, meter_id, ts): idempotency comes from `received`, and a
-- duplicate here is a bug to be found (Store::duplicate_readings), not silently folded away.
CREATE TABLE readings (
    gateway  TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    wh       INTEGER NOT NULL
);
CREATE INDEX readings_gateway_meter_ts ON readings (gateway, meter_id, ts);

-- Gateway events (health, meter alarms); data holds the kind's fields as JSON.
CREATE TABLE events (
    gateway  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    ts       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    meter_id TEXT,
    data     TEXT NOT NULL,
    PRIMARY KEY (gateway, seq)
) WITHOUT ROWID;

-- The push channel: commands for gateways and their results, kept so a result is never lost
-- when the caller stopped waiting.
CREATE TABLE commands (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request      TEXT NOT NULL,
    -- pending | undelivered | accepted | succeeded | failed | rejected
    status       TEXT NOT NULL DEFAULT 'pending',
    code         INTEGER NOT NULL DEFAULT 0,
    detail       TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX commands_gateway ON commands (gateway, id);
