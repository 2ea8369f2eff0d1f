-- spark-ingest schema, PostgreSQL flavour (production). Keep in step with ../sqlite/.

-- One row per gateway ever seen. The key is the CN of its client certificate, never a payload field.
CREATE TABLE gateways (
    gateway            TEXT PRIMARY KEY,
    first_seen         TIMESTAMPTZ NOT NULL,
    -- Updated on Hello, on every commit, and at most every `last-seen-interval` otherwise.
    last_seen          TIMESTAMPTZ NOT NULL,
    -- Highest sequence number committed (readings batches and events share the space).
    last_committed_seq BIGINT NOT NULL DEFAULT 0,
    firmware_version   TEXT,
    booted_slot        TEXT,
    protocol_version   INTEGER,
    capabilities       BIGINT,
    -- Version of the roster stored in roster_meters (0: none yet).
    roster_version     BIGINT NOT NULL DEFAULT 0,
    -- Configuration version the cloud wants the gateway to run (set by set_config commands).
    config_version     BIGINT NOT NULL DEFAULT 0,
    last_peer          TEXT
);

-- The gateway's current meter list: a meter's position is its index in readings batches.
CREATE TABLE roster_meters (
    gateway  TEXT NOT NULL,
    position INTEGER NOT NULL,
    meter_id TEXT NOT NULL,
    PRIMARY KEY (gateway, position)
);

-- Every sequenced message committed, keyed (gateway, seq): what makes a resend store nothing twice.
CREATE TABLE received (
    gateway     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('readings', 'event')),
    items       INTEGER NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (gateway, seq)
);

-- Meter readings: cumulative active-energy import register (Wh) at ts. Partitioned by month;
-- spark-ingest creates each month's partition when the first reading for it arrives (within a
-- window around the current time; readings from clocks far off land in the default partition).
-- No unique constraint on (gateway, meter_id, ts): idempotency comes from `received`, COPY needs
-- none, and a duplicate is a bug to be found (Store::duplicate_readings), not silently dropped.
CREATE TABLE readings (
    gateway  TEXT NOT NULL,
    meter_id TEXT NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    wh       BIGINT NOT NULL
) PARTITION BY RANGE (ts);
CREATE TABLE readings_default PARTITION OF readings DEFAULT;
CREATE INDEX readings_gateway_meter_ts ON readings (gateway, meter_id, ts);

-- Gateway events (health, meter alarms); data holds the kind's fields as JSON.
CREATE TABLE events (
    gateway  TEXT NOT NULL,
    seq      BIGINT NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    kind     TEXT NOT NULL,
    meter_id TEXT,
    data     JSONB NOT NULL,
    PRIMARY KEY (gateway, seq)
);

-- The push channel: commands for gateways and their results, kept so a result is never lost
-- when the caller stopped waiting.
CREATE TABLE commands (
    id           BIGSERIAL PRIMARY KEY,
    gateway      TEXT NOT NULL,
    kind         TEXT NOT NULL,
    request      JSONB NOT NULL,
    -- pending | undelivered | accepted | succeeded | failed | rejected
    status       TEXT NOT NULL DEFAULT 'pending',
    code         INTEGER NOT NULL DEFAULT 0,
    detail       TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL,
    delivered_at TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX commands_gateway ON commands (gateway, id);
