#!/usr/bin/env bash
# Spark's main job, as far as the project has grown: make a development PKI, a sample root
# filesystem image, and signed RAUC bundles (plain and verity) of it; then verify them with both
# spark-image and the real rauc 1.8. Everything lands in out/demo/ (git-ignored; private keys
# included, so never commit it). Later issues grow this into the whole fleet in a box.
set -euo pipefail
cd "$(dirname "$0")/.."
ci/deps.sh

out=out/demo
version=${SPARK_DEMO_VERSION:-1.0.0}
compatible=spark-bbb
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1764028800}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building spark-keys and spark-image (release)"
cargo build --release --locked -p spark-keys -p spark-image
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

step "Done"
echo "PKI:     $out/pki (private keys: never commit)"
echo "Bundles: $(ls "$out"/*.raucb | tr '\n' ' ')"
echo "Inspect: $bin/spark-image info --keyring $out/pki/keyring.pem $out/$compatible-$version-verity.raucb"
