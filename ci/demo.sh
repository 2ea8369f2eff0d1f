#!/usr/bin/env bash
# Spark's main job, as far as the project has grown: make a development PKI, a sample root
# filesystem image, and signed RAUC bundles (plain and verity) of it; then verify them with both
# spark-image and the real rauc 1.8; then run a simulated day of meter readings through the real
# gateway daemons (meter-radio simulator, spark-meterd, spark-uplinkd) into spark-ingest on SQLite
# and check none was lost or stored twice. Everything lands in out/demo/ (git-ignored; private keys
# included, so never commit it). Later issues grow this into the whole fleet in a box.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh

out=out/demo
version=${SPARK_DEMO_VERSION:-1.0.0}
compatible=spark-bbb
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764028800}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building spark-keys, spark-image and the telemetry path (release)"
cargo build --release --locked -p spark-keys -p spark-image -p spark-ingest -p spark-meterd -p spark-uplinkd
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
# Telemetry: a simulated day of 200 meters through the real daemons, on SQLite and local files.
#   spark-meter-sim ──radio frames──▶ spark-meterd ──D-Bus Meters1──▶ spark-uplinkd
#     ──mutual TLS, spark-proto──▶ spark-ingest ──▶ SQLite ($out/telemetry/ingest/ingest.db)
# ---------------------------------------------------------------------------------------------
tel="$PWD/$out/telemetry"
pki="$PWD/$out/pki"
mkdir -p "$tel"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step "Device certificate for gateway GW-DEMO-0001 (spark-keys issue-device)"
"$bin/spark-keys" issue-device --dir "$pki" GW-DEMO-0001

step "A private D-Bus bus standing in for the gateway's system bus"
cat > "$tel/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$tel/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/><allow own="*"/><allow send_destination="*"/><allow receive_sender="*"/>
  </policy>
</busconfig>
CONF
dbus-daemon --config-file="$tel/bus.conf" --nofork --print-address > "$tel/bus.address" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tel/bus.address" ] && break; sleep 0.05; done
bus=$(head -n1 "$tel/bus.address")

step "spark-ingest (SQLite) on 127.0.0.1:7700"
cat > "$tel/ingest.toml" <<CONF
listen = "127.0.0.1:7700"
data-dir = "$tel/ingest"
[tls]
cert = "$pki/server.cert.pem"
key = "$pki/server.key.pem"
device-ca = "$pki/device-ca.cert.pem"
CONF
RUST_LOG=warn "$bin/spark-ingest" --config "$tel/ingest.toml" 2> "$tel/ingest.log" &
pids+=($!)

step "Meter radio simulator (200 meters, 96 intervals of 15 min, 50 ms each) and spark-meterd"
"$bin/spark-meter-sim" --socket "$tel/radio.sock" --meters 200 --intervals 96 --interval-ms 50 \
  --ledger "$tel/ledger.csv" 2> "$tel/sim.log" &
sim=$!
pids+=($sim)
cat > "$tel/meterd.toml" <<CONF
radio = "unix:$tel/radio.sock"
data-dir = "$tel/meterd"
bus-address = "$bus"
CONF
for _ in $(seq 100); do [ -S "$tel/radio.sock" ] && break; sleep 0.05; done
RUST_LOG=warn "$bin/spark-meterd" --config "$tel/meterd.toml" 2> "$tel/meterd.log" &
pids+=($!)

step "spark-uplinkd: durable queue, hourly batches (compressed), mutual TLS to ingest"
cat > "$tel/uplinkd.toml" <<CONF
data-dir = "$tel/uplinkd"
bus-address = "$bus"
firmware-version = "$version"
booted-slot = "A"
batch-window-secs = 0.2
health-interval-secs = 0.2
[cloud]
address = "127.0.0.1:7700"
server-name = "localhost"
server-ca = "$pki/server-ca.cert.pem"
device-cert = "$pki/devices/GW-DEMO-0001.cert.pem"
device-key = "$pki/devices/GW-DEMO-0001.key.pem"
backoff-min-secs = 0.2
backoff-max-secs = 2
CONF
RUST_LOG=warn "$bin/spark-uplinkd" --config "$tel/uplinkd.toml" 2> "$tel/uplinkd.log" &
pids+=($!)

step "Waiting until the cloud holds every reading the meters produced"
stored=0
for _ in $(seq 600); do
  generated=$(wc -l < "$tel/ledger.csv" 2>/dev/null || echo 0)
  if [ -f "$tel/ingest/ingest.db" ]; then
    stored=$(sqlite3 "file:$tel/ingest/ingest.db?mode=ro" "SELECT count(*) FROM readings" 2>/dev/null || echo 0)
  fi
  if ! kill -0 "$sim" 2>/dev/null && [ "$stored" -eq "$generated" ] && [ "$generated" -gt 0 ]; then
    break
  fi
  sleep 0.2
done
generated=$(wc -l < "$tel/ledger.csv")
dupes=$(sqlite3 "file:$tel/ingest/ingest.db?mode=ro" \
  "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY gateway, meter_id, ts HAVING count(*) > 1)")
echo "generated by the meters: $generated   stored in the cloud: $stored   duplicates: $dupes"
sqlite3 -header -column "file:$tel/ingest/ingest.db?mode=ro" \
  "SELECT gateway, last_committed_seq, firmware_version, booted_slot FROM gateways"
if [ "$stored" -ne "$generated" ] || [ "$dupes" -ne 0 ]; then
  echo "telemetry: readings lost or duplicated; logs in $tel/*.log" >&2
  exit 1
fi
cleanup
trap - EXIT

step "Done"
echo "PKI:     $out/pki (private keys: never commit)"
echo "Bundles: $(ls "$out"/*.raucb | tr '\n' ' ')"
echo "Telemetry: $out/telemetry (ledger.csv from the meters, ingest/ingest.db in the cloud, daemon logs)"
echo "Inspect: $bin/spark-image info --keyring $out/pki/keyring.pem $out/$compatible-$version-verity.raucb"
