# Spark's system.conf (uboot backend, rootfs.0/1 = A/B, data on /data) and the keyring: the
# firmware CA from SPARK_KEYRING (dev PKI by default; CI injects the production CA).
FILESEXTRAPATHS:prepend:spark := "${THISDIR}/files:"

RAUC_KEYRING_FILE:spark = "keyring.pem"
RAUC_KEYRING_URI:spark = "file://${SPARK_KEYRING};subdir=spark-keyring"

do_install:prepend:spark() {
    if [ ! -s "${SPARK_KEYRING}" ]; then
        bbfatal "RAUC keyring ${SPARK_KEYRING} is missing: run 'spark-keys init --dev out/dev-pki' or set SPARK_KEYRING to the production firmware CA"
    fi
    install -m 0644 "${UNPACKDIR}/spark-keyring/$(basename "${SPARK_KEYRING}")" "${UNPACKDIR}/keyring.pem"
    sed -i -e "s/@SPARK_COMPATIBLE@/${SPARK_COMPATIBLE}/" "${UNPACKDIR}/system.conf"
}
