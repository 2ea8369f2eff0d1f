-- spark-ota schema, PostgreSQL flavour (production). Times are unix seconds, booleans 0/1.
-- Keep in step with ../sqlite/ (same tables, columns and meaning).

-- Verified bundles, content-addressed: the blob lives at DATA-DIR/blobs/<sha256>.
CREATE TABLE bundles (
    sha256      TEXT PRIMARY KEY NOT NULL,
    size        BIGINT NOT NULL,
    compatible  TEXT NOT NULL,
    version     TEXT NOT NULL,
    format      TEXT NOT NULL,
    signer      TEXT NOT NULL,
    uploaded_at BIGINT NOT NULL
);

-- A release: a verified bundle with its signed release manifest (the JSON form, as uploaded).
CREATE TABLE releases (
    id              BIGSERIAL PRIMARY KEY,
    compatible      TEXT NOT NULL,
    version         TEXT NOT NULL,
    bundle_sha256   TEXT NOT NULL REFERENCES bundles (sha256),
    bundle_size     BIGINT NOT NULL,
    key_id          TEXT NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    min_version     TEXT,
    allow_downgrade BIGINT NOT NULL DEFAULT 0,
    manifest_rollout TEXT,
    signed          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    yanked_at       BIGINT,
    yank_reason     TEXT,
    CONSTRAINT releases_compatible_version UNIQUE (compatible, version)
);

-- Devices that checked in (the key is the CN of the client certificate, never a payload field).
CREATE TABLE devices (
    device          TEXT PRIMARY KEY NOT NULL,
    first_seen      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    compatible      TEXT,
    current_version TEXT,
    booted_slot     TEXT,
    agent_state     TEXT,
    last_seq        BIGINT,
    last_reason     TEXT,
    last_report_at  BIGINT,
    -- The release last offered (check-in answer or push) and the rollout it came from.
    offered_release BIGINT,
    offered_rollout TEXT,
    offered_at      BIGINT
);

-- Status reports of the update agent, one per transition; (device, seq) drops resends.
CREATE TABLE status_reports (
    device          TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    at              BIGINT NOT NULL,
    from_state      TEXT NOT NULL,
    to_state        TEXT NOT NULL,
    reason          TEXT NOT NULL,
    current_version TEXT NOT NULL,
    release_version TEXT,
    detail          TEXT,
    received_at     BIGINT NOT NULL,
    PRIMARY KEY (device, seq)
);

-- Bytes served, per device, bundle and rollout ('' when the download belonged to no rollout).
CREATE TABLE downloads (
    device        TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    rollout       TEXT NOT NULL DEFAULT '',
    bytes         BIGINT NOT NULL,
    requests      BIGINT NOT NULL,
    first_at      BIGINT NOT NULL,
    last_at       BIGINT NOT NULL,
    PRIMARY KEY (device, bundle_sha256, rollout)
);

-- Admin API tokens: only the SHA-256 of each token is kept (tokens are 256-bit random).
CREATE TABLE admin_tokens (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    CONSTRAINT admin_tokens_name UNIQUE (name),
    CONSTRAINT admin_tokens_sha256 UNIQUE (sha256)
);

-- Rollouts of a release. `plan` is the rollout engine's plan/state (JSON), opaque to the server.
CREATE TABLE rollouts (
    id         TEXT PRIMARY KEY NOT NULL,
    release_id BIGINT NOT NULL REFERENCES releases (id),
    state      TEXT NOT NULL CHECK (state IN ('active', 'paused', 'aborted', 'done')),
    reason     TEXT,
    plan       TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- UpdateAvailable commands sent through ingest's push channel (one per device and release).
CREATE TABLE pushes (
    device     TEXT NOT NULL,
    release_id BIGINT NOT NULL,
    rollout    TEXT NOT NULL,
    command_id BIGINT,
    status     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (device, release_id)
);
