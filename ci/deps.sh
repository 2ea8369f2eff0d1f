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
  python3 python3-venv  # spark-api tests: schemathesis in a venv (below)
  # meta-spark checks (meta-spark/tools/tests/layer.rs): the boot script in real U-Boot
  qemu-system-arm u-boot-qemu   # qemu_arm U-Boot under qemu's virt machine
  u-boot-tools                  # mkimage (boot.scr), mkenvimage
  libubootenv-tool              # fw_printenv / fw_setenv, as RAUC's uboot backend uses them
  mtools dosfstools fdisk       # FAT partition without loop mounts, sfdisk
  python3-venv                  # the venv for kas and oelint-adv below
  systemd                       # systemd-analyze verify of the daemon units
  chromium        # spark-ota's dashboard test loads the pages in headless Chromium
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

# meta-spark checks: kas (its JSON schema validates the kas file) and oelint-adv, pinned, in a venv
# at a fixed path so the tests find them (SPARK_YOCTO_TOOLS overrides it in the tests).
SPARK_YOCTO_TOOLS=${SPARK_YOCTO_TOOLS:-/opt/spark-yocto-tools}
yocto_tools_pins=(kas==5.5 oelint-adv==9.11.2 oelint-parser==8.13.2 oelint-data==1.5.26 jsonschema==4.26.0)
if [ ! -x "$SPARK_YOCTO_TOOLS/bin/oelint-adv" ] || [ ! -x "$SPARK_YOCTO_TOOLS/bin/kas" ] \
   || ! "$SPARK_YOCTO_TOOLS/bin/pip" freeze 2>/dev/null | grep -ix "oelint[-_]adv==9.11.2" >/dev/null; then
  echo "ci/deps.sh: installing ${yocto_tools_pins[*]} into $SPARK_YOCTO_TOOLS" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo /usr/bin/python3 -m venv "$SPARK_YOCTO_TOOLS" 2>/dev/null || $sudo python3 -m venv "$SPARK_YOCTO_TOOLS"
  $sudo "$SPARK_YOCTO_TOOLS/bin/pip" install -q "${yocto_tools_pins[@]}"
fi

# spark-api's tests run schemathesis (PyPI) against its OpenAPI document: a pinned version in a
# venv of its own (tests look for it there, or at $SPARK_SCHEMATHESIS).
SCHEMATHESIS_VERSION=3.39.16
venv="${SPARK_VENV:-$HOME/.cache/spark/venv}"
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION" \
  || ! "$venv/bin/pip" show hypothesis 2>/dev/null | grep -qx "Version: 6.115.0"; then
  command -v python3 >/dev/null || { echo "ci/deps.sh: python3 is needed for schemathesis (apt-get install python3 python3-venv)" >&2; exit 1; }
  echo "ci/deps.sh: installing schemathesis $SCHEMATHESIS_VERSION into $venv" >&2
  python3 -m venv "$venv"
  # hypothesis pinned too: newer releases break schemathesis 3.x (AttributeError: 'many' object has no attribute 'more').
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" "hypothesis==6.115.0"
fi
