SUMMARY = "Signed RAUC update bundle of the Spark gateway image"
DESCRIPTION = "verity-format RAUC bundle with the spark-gateway-image root filesystem for \
               the rootfs slot class, compatible with the gateway's system.conf, signed \
               with the bundle signer (dev PKI by default; CI injects the production key)."
HOMEPAGE = "https://example.invalid/spark"
BUGTRACKER = "https://example.invalid/spark/issues"
SECTION = "images"
LICENSE = "MIT"

inherit bundle

RAUC_BUNDLE_COMPATIBLE = "${SPARK_COMPATIBLE}"
RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "Spark gateway firmware"
RAUC_BUNDLE_FORMAT = "verity"

RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "spark-gateway-image"
RAUC_SLOT_rootfs[fstype] = "ext4"

RAUC_KEY_FILE = "${SPARK_BUNDLE_KEY}"
RAUC_CERT_FILE = "${SPARK_BUNDLE_CERT}"
