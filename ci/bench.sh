#!/usr/bin/env bash
# Benchmarks spark-image against rauc 1.8 on a 256 MiB ext4 root filesystem image (bundle,
# verify vs `rauc info` / `rauc extract`, extract), warm cache, and prints markdown tables for
# the README's performance section. See image/examples/bench.rs for what is measured and how.
#
#   ci/bench.sh [--size-mib 256] [--runs 3] [--work DIR]
#
# Needs: rauc, mksquashfs/unsquashfs (squashfs-tools), mkfs.ext4 (e2fsprogs), GNU time (for
# CPU time and peak RSS). Installed with apt-get when missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v rauc >/dev/null || missing+=(rauc)
command -v mksquashfs >/dev/null || missing+=(squashfs-tools)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
[ -x /usr/bin/time ] || missing+=(time)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "ci/bench.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The bench times the release CLI binary, so build it as well as the example.
cargo build --release --locked -p spark-image --bins --example bench
exec target/release/examples/bench "$@"
