-- spark-pipeline schema, PostgreSQL flavour (production). Keep in step with ../sqlite/.
-- Versions 8000… keep clear of spark-ingest's date-like ones: both live in the same
-- `_sqlx_migrations` table.

-- Wh consumed by a meter in the UTC hour [hour, hour + 1 h), from its cumulative register.
CREATE TABLE consumption_hourly (
    meter_id TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    hour     TIMESTAMPTZ NOT NULL,
    wh       BIGINT NOT NULL,
    PRIMARY KEY (meter_id, gateway, hour)
);

-- The same per UTC day [day, day + 1 day): the sum of the day's hourly rows.
CREATE TABLE consumption_daily (
    meter_id TEXT NOT NULL,
    gateway  TEXT NOT NULL,
    day      TIMESTAMPTZ NOT NULL,
    wh       BIGINT NOT NULL,
    PRIMARY KEY (meter_id, gateway, day)
);

-- Grid-health events found in the readings: outage, gateway_silent, meter_negative_delta,
-- meter_zero_usage, meter_reset, meter_rollover. end_ts is NULL while the condition lasts.
CREATE TABLE grid_events (
    id          BIGSERIAL PRIMARY KEY,
    gateway     TEXT NOT NULL,
    meter_id    TEXT,
    kind        TEXT NOT NULL,
    start_ts    TIMESTAMPTZ NOT NULL,
    end_ts      TIMESTAMPTZ,
    detected_at TIMESTAMPTZ NOT NULL,
    data        JSONB NOT NULL
);
CREATE INDEX grid_events_gateway ON grid_events (gateway, start_ts);
-- At most one open silence per gateway (two pipeline nodes checking at once add one).
CREATE UNIQUE INDEX grid_events_one_open_silence ON grid_events (gateway)
    WHERE kind = 'gateway_silent' AND end_ts IS NULL;

-- The durable cursor: everything of the gateway up to received.seq = seq is in the tables above.
CREATE TABLE pipeline_cursors (
    gateway       TEXT PRIMARY KEY,
    seq           BIGINT NOT NULL,
    -- Newest reading time consumed (the gateway's clock), unix seconds; 0: none yet.
    clock         BIGINT NOT NULL DEFAULT 0,
    readings      BIGINT NOT NULL DEFAULT 0,
    -- The open outage event, when one is open: its id, start (unix seconds) and size.
    outage_event  BIGINT,
    outage_start  BIGINT,
    outage_meters BIGINT,
    updated_at    TIMESTAMPTZ NOT NULL
);

-- Per-meter state carried between batches: the last reading consumed (in time order, unix
-- seconds) and the zero-usage run.
CREATE TABLE pipeline_meters (
    gateway    TEXT NOT NULL,
    meter_id   TEXT NOT NULL,
    last_ts    BIGINT NOT NULL,
    last_wh    BIGINT NOT NULL,
    zero_since BIGINT,
    zero_event BIGINT,
    PRIMARY KEY (gateway, meter_id)
);
