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

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
