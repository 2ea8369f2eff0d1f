-- spark-pipeline schema, SQLite flavour (the default backend). Times are unix seconds.
-- Keep in step with ../postgres/. Versions 8000… keep clear of spark-ingest's date-like ones:
-- both live in the same `_sqlx_migrations` table.

-- Wh consumed by a meter in the UTC hour [hour, hour + 3600), from its cumulative register.
CREATE TABLE consumption_hourly (
    meter_id TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    hour     INTEGER NOT NULL,
    wh       INTEGER NOT NULL,
    PRIMARY KEY (meter_id, gateway, hour)
) WITHOUT ROWID;

-- The same per UTC day [day, day + 86400): the sum of the day's hourly rows.
CREATE TABLE consumption_daily (
    meter_id TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    day      INTEGER NOT NULL,
    wh       INTEGER NOT NULL,
    PRIMARY KEY (meter_id, gateway, day)
) WITHOUT ROWID;

-- Grid-health events found in the readings: outage, gateway_silent, meter_negative_delta,
-- meter_zero_usage, meter_reset, meter_rollover. end_ts is NULL while the condition lasts.
CREATE TABLE grid_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    gateway     TEXT NOT NULL,
    meter_id    TEXT,
    kind        TEXT NOT NULL,
    start_ts    INTEGER NOT NULL,
    end_ts      INTEGER,
    detected_at INTEGER NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX grid_events_gateway ON grid_events (gateway, start_ts);
-- At most one open silence per gateway (two pipeline nodes checking at once add one).
CREATE UNIQUE INDEX grid_events_one_open_silence ON grid_events (gateway)
    WHERE kind = 'gateway_silent' AND end_ts IS NULL;

-- The durable cursor: everything of the gateway up to received.seq = seq is in the tables above.
CREATE TABLE pipeline_cursors (
    gateway       TEXT PRIMARY KEY NOT NULL,
    seq           INTEGER NOT NULL,
    -- Newest reading time consumed (the gateway's clock), unix seconds; 0: none yet.
    clock         INTEGER NOT NULL DEFAULT 0,
    readings      INTEGER NOT NULL DEFAULT 0,
    -- The open outage event, when one is open: its id, start and size.
    outage_event  INTEGER,
    outage_start  INTEGER,
    outage_meters INTEGER,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;

-- Per-meter state carried between batches: the last reading consumed (in time order) and the
-- zero-usage run.
CREATE TABLE pipeline_meters (
    gateway    TEXT NOT NULL,
    meter_id   TEXT NOT NULL,
    last_ts    INTEGER NOT NULL,
    last_wh    INTEGER NOT NULL,
    zero_since INTEGER,
    zero_event INTEGER,
    PRIMARY KEY (gateway, meter_id)
) WITHOUT ROWID;
