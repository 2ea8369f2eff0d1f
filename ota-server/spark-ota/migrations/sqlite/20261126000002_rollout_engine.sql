-- The rollout engine (spark-rollout) in the database. Keep in step with ../postgres/.
--
-- A rollout's engine state is stored split, as spark_rollout::Rollout::{header, from_parts} allow:
-- `rollouts.engine` holds the header (spec, phase, wave states; a few KB, JSON) and
-- `rollout_devices` one row per targeted device (JSON DeviceState). A check-in or report rewrites
-- only the header and that device's row. `revision` is bumped by every write; a write whose
-- revision does not match fails and is retried on fresh state (optimistic concurrency, so several
-- server nodes can share the database).
ALTER TABLE rollouts ADD COLUMN engine TEXT;
ALTER TABLE rollouts ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

CREATE TABLE rollout_devices (
    rollout TEXT NOT NULL REFERENCES rollouts (id),
    device  TEXT NOT NULL,
    state   TEXT NOT NULL,
    PRIMARY KEY (rollout, device)
);

-- What the engine did (wave opened, soak started, wave passed, paused, done), with the engine's
-- clock time (unix seconds; a time-compressed clock in demos and simulations).
CREATE TABLE rollout_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout TEXT NOT NULL REFERENCES rollouts (id),
    at      INTEGER NOT NULL,
    event   TEXT NOT NULL
);
CREATE INDEX rollout_events_rollout ON rollout_events (rollout, id);

-- Device attributes the engine uses: hardware revision (check-in or admin), tags such as site and
-- region (JSON object, admin), the site's IANA time zone for maintenance windows (admin).
ALTER TABLE devices ADD COLUMN hardware_rev TEXT;
ALTER TABLE devices ADD COLUMN tags TEXT;
ALTER TABLE devices ADD COLUMN time_zone TEXT;
