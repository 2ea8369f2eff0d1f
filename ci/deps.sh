#!/usr/bin/env bash
# Installs the Debian packages Spark's main job and tests need, when they are missing.
# Idempotent and quiet when everything is there; needs root (or sudo) only when it installs.
set -euo pipefail

packages=(
  rauc            # the real RAUC 1.8: `rauc info`, `rauc bundle`, `rauc service`
  squashfs-tools  # mksquashfs/unsquashfs: rauc builds and extracts bundles with them
  e2fsprogs       # mkfs.ext4 for sample root filesystem images
  dbus            # dbus-daemon: private buses for rauc service in tests
  openssl         # cross-checks of our certificates
  util-linux      # flock, mount: the simulated U-Boot environment and loop mounts
  gcc libc6-dev   # ring (TLS/crypto) compiles a little C and assembly
  ca-certificates
  softhsm2        # PKCS#11 token for the device key in spark-tls and spark-uplinkd tests
  sqlite3         # the main job shows what spark-ingest stored
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "ci/deps.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ci/deps.sh: no Rust toolchain found. Install Rust 1.94 or newer with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
