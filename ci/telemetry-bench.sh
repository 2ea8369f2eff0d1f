#!/usr/bin/env bash
# The telemetry path's figures (issue 3, section 5), each against its peer in the same run:
#   1. wire    bytes per reading through the real meterd/uplinkd/ingest vs MQTT to Mosquitto
#   2. ingest  readings/s into PostgreSQL from 100 simulated gateways vs psql \copy
#   3. idle    memory per idle mutual-TLS connection in spark-ingest at 10k connections
#   4. rss     RSS of spark-meterd and spark-uplinkd with 2000 meters
# Prints markdown tables for the README's performance section. Not part of CI (minutes of work).
#
#   ci/telemetry-bench.sh [wire|ingest|idle|rss ...]     (default: all four)
#
# Needs root (network namespace for the wire figures), dbus-daemon, mosquitto, psql and the
# PostgreSQL server on 127.0.0.1:5432 (database `test`, trust auth; SPARK_BENCH_POSTGRES overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v dbus-daemon >/dev/null || missing+=(dbus-daemon)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci/telemetry-bench.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo build --release --locked -p spark-telemetry-bench -p spark-ingest -p spark-meterd
# The gateway daemons as they ship (Cargo profile `gateway`: size-optimised, LTO).
cargo build --profile gateway --locked -p spark-meterd -p spark-uplinkd
export SPARK_BENCH_GATEWAY_DIR=target/gateway
bench=target/release/spark-telemetry-bench
# 10k connections need 10k descriptors in ingest and in the benchmark.
ulimit -n 20000 2>/dev/null || true

benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(wire ingest idle rss)
for b in "${benches[@]}"; do
    case "$b" in
        wire) "$bench" wire ;;
        ingest) "$bench" ingest-rate ;;
        idle) "$bench" idle-conns ;;
        rss) "$bench" rss ;;
        *) echo "unknown benchmark $b (wire, ingest, idle, rss)" >&2; exit 2 ;;
    esac
    echo
done
