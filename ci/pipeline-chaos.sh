#!/usr/bin/env bash
# The data pipeline's crash proof at full size (issue 8, section 3), outside CI: the real
# spark-pipeline binary is killed with SIGKILL at random points while 1 000 000 readings arrive
# (PostgreSQL, 8 gateways x 100 meters), restarted each time; at the end the hourly and daily
# aggregates must equal the offline reference computed from the raw rows, and the events those
# of an uninterrupted run. CI runs the same test with 20 000 readings.
#
#   ci/pipeline-chaos.sh [READINGS] [postgres|sqlite]     (default 1000000 postgres)
#
# Needs PostgreSQL on 127.0.0.1:5432 (database `test`, trust auth; SPARK_TEST_POSTGRES overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
readings="${1:-1030000}"   # the generator skips ~2.5 % (missed reads, gaps): ≥ 1 M stored
backend="${2:-postgres}"
SPARK_CHAOS_READINGS="$readings" cargo test --release --locked -p spark-pipeline --test pipeline \
    "chaos::kill9_${backend}" -- --exact --nocapture
