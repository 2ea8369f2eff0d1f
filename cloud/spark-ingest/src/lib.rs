//! Cloud telemetry ingest: mutual-TLS spark-proto server, idempotent storage in SQLite or PostgreSQL, push channel for commands (being built; see issue 3).
