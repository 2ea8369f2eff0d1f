#!/bin/sh
# Runs spark-ota-bench in release mode. Installs nginx (the download comparison) when missing:
# the bench is not part of CI, so nginx is not in ci/deps.sh. Extra arguments go to the bench,
# e.g. `bench/ota/run.sh --only check-ins --secs 5`.
set -eu
cd "$(dirname "$0")/../.."
if ! [ -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }
    else
        sudo apt-get install -y nginx
    fi
    # The bench starts its own instance; the Debian service is not needed.
    systemctl disable --now nginx 2>/dev/null || true
fi
cargo build --release -p spark-ota -p spark-ota-bench
exec target/release/spark-ota-bench "$@"
