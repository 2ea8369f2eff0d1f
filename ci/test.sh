#!/usr/bin/env bash
# Spark's whole test suite: formatting, lints, then every test of the workspace against the real
# rauc, dbus-daemon and openssl. Run as root: tests loop-mount bundles through `rauc service`.
set -euo pipefail
cd "$(dirname "$0")/.."

ci/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/test.sh: run as root (sudo ci/test.sh): rauc service installs bundles through loop mounts" >&2
  exit 1
fi

# Each step prints the time, so a CI log shows where its minutes go.
step() { echo "== $(date -u +%T) $*"; }
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
step "spark-proto fuzz targets build"
# cargo-fuzz layout outside the workspace; running them needs nightly (cargo +nightly fuzz run decode),
# building them does not (without libFuzzer's C++ runtime, so no g++ is needed).
# The workspace target directory: the dependencies clippy checked are reused, not checked again.
CARGO_TARGET_DIR=target cargo check --manifest-path crates/spark-proto/fuzz/Cargo.toml --locked --no-default-features
step "spark-cve gate over our own Cargo.lock (committed fixture snapshot)"
# --now pins the fixture snapshot's age: it is test data, not a feed that goes stale.
cargo run -q --locked -p spark-cve -- scan --cargo-lock Cargo.lock \
  --db ci/spark-cve/tests/data/snapshot.jsonl --now 2026-11-25
step "done"
