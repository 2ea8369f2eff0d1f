#!/usr/bin/env bash
# The chaos suite, long (manual or nightly; the test suite runs a 25-second version): a release
# build, then `spark-fleet chaos`: ten gateways update to 2.0.0 through spark-ota while faults
# land every two seconds for ten minutes (kill -9 of any gateway daemon, power cuts mid-update
# included, link cuts, coverage outages and latency through a fault-injecting proxy, crashes of
# spark-ingest and spark-ota); then the invariants are checked and the counts printed. Extra
# arguments go to `spark-fleet chaos` (--secs, --gateways, --every, --seed to replay a run).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/chaos.sh: run as root (sudo ci/chaos.sh): each gateway's rauc service loop-mounts bundles" >&2
  exit 1
fi
cargo build --release --locked -p spark-ingest -p spark-api -p spark-ota -p spark-meterd \
  -p spark-uplinkd -p spark-updated -p spark-webui -p spark-fleet
exec target/release/spark-fleet chaos --out out/chaos --gateways 10 --secs 600 --every 2 "$@"
