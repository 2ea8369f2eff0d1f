#!/usr/bin/env bash
# Spark's main job, fleet in a box: a development PKI, a sample root filesystem image and signed
# RAUC bundles of it (plain and verity) verified by spark-image and by the real rauc 1.8; then
# spark-fleet: the cloud (spark-ingest with the data pipeline, spark-api, spark-ota on SQLite),
# releases 1.0.0 and 2.0.0, N gateways (default 5) each running the real daemons on its own D-Bus
# bus with its own real `rauc service` and simulated U-Boot, and a time-compressed weekly rollout
# of 2.0.0 in which one unit's health check fails and it rolls itself back; live progress, then a
# summary that checks no reading was lost or stored twice and every unit is on a good slot.
# Everything lands in out/demo/ (git-ignored; private keys included, so never commit it).
# Extra arguments go to spark-fleet (e.g. --gateways 10, --stay to keep it running; --help).
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh
if [ "$(id -u)" -ne 0 ]; then
  echo "ci/demo.sh: run as root (sudo ci/demo.sh): each gateway's rauc service installs bundles through loop mounts" >&2
  exit 1
fi

out=out/demo
version=${SPARK_DEMO_VERSION:-1.0.0}
compatible=spark-bbb
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764028800}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building Spark (release): tools, cloud services, gateway daemons, spark-fleet"
cargo build --release --locked -p spark-keys -p spark-image -p spark-ingest -p spark-api -p spark-ota \
  -p spark-meterd -p spark-uplinkd -p spark-updated -p spark-webui -p spark-fleet
bin=target/release

rm -rf "$out"
mkdir -p "$out"

step "Development PKI in $out/pki"
"$bin/spark-keys" init --dev "$out/pki" --intermediate

step "Sample root filesystem image ($out/rootfs.ext4)"
tree="$out/rootfs-tree"
mkdir -p "$tree"/{etc,usr/bin,usr/share/spark,data}
printf 'NAME="Spark"\nID=spark\nVERSION_ID=%s\n' "$version" > "$tree/etc/os-release"
printf '#!/bin/sh\necho "Spark gateway %s"\n' "$version" > "$tree/usr/bin/spark-hello"
chmod 755 "$tree/usr/bin/spark-hello"
# Some realistic, compressible content so the bundle is not trivially small.
cp -r /usr/share/common-licenses "$tree/usr/share/spark/licenses" 2>/dev/null || true
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -d "$tree" -E root_owner=0:0 \
  -U 6f6e6573-7061-726b-0000-000000000001 -L rootfs "$out/rootfs.ext4" 32M

for format in verity plain; do
  bundle="$out/$compatible-$version-$format.raucb"
  step "spark-image bundle ($format) -> $bundle"
  "$bin/spark-image" bundle --rootfs "$out/rootfs.ext4" --compatible "$compatible" \
    --version "$version" --format "$format" --description "Spark demo image" \
    --cert "$out/pki/bundle-signer.cert.pem" --key "$out/pki/bundle-signer.key.pem" \
    --intermediate "$out/pki/firmware-intermediate.cert.pem" "$bundle"

  step "spark-image verify (signature, chain, payload, images)"
  "$bin/spark-image" verify "$bundle" --keyring "$out/pki/keyring.pem" --compatible "$compatible"

  step "rauc info --keyring (the real rauc 1.8)"
  cat > "$out/system.conf" <<CONF
[system]
compatible=$compatible
bootloader=noop

[keyring]
path=$PWD/$out/pki/keyring.pem
check-purpose=codesign

[slot.rootfs.0]
device=/dev/null
type=raw
bootname=A
CONF
  if ! info=$(rauc --conf="$out/system.conf" info --keyring="$out/pki/keyring.pem" "$bundle" 2>&1); then
    printf '%s\n' "$info" >&2
    echo "rauc REJECTED $bundle" >&2
    exit 1
  fi
  printf '%s\n' "$info" | grep -E "^(Compatible|Version|Bundle Format|  Verity Hash)" || true
  echo "rauc: bundle accepted (signature and chain verified against the keyring, check-purpose=codesign)"
done

# ---------------------------------------------------------------------------------------------
# Fleet in a box (spark-fleet; its own PKI and releases under $out/fleet).
# ---------------------------------------------------------------------------------------------
step "Fleet in a box: cloud, releases, gateways on the real daemons and rauc, a weekly rollout"
"$bin/spark-fleet" --out "$out/fleet" "$@"

step "Done"
echo "PKI:     $out/pki (private keys: never commit)"
echo "Bundles: $(ls "$out"/*.raucb | tr '\n' ' ')"
echo "Fleet:   $out/fleet (cloud/ databases and logs, gateways/*/logs/, releases/)"
echo "Inspect: $bin/spark-image info --keyring $out/pki/keyring.pem $out/$compatible-$version-verity.raucb"
