SUMMARY = "Spark gateway integration: users, /data layout, mounts, health gate, trust"
DESCRIPTION = "Dedicated users and the /data layout for the Spark daemons, the /data and \
               /uboot mounts, the boot health check that gates RAUC's mark-good, the polkit \
               rule that lets the update agent reboot, the public trust anchors (release \
               key, server CA) the daemons verify against, and their fleet-wide configuration."
HOMEPAGE = "https://example.invalid/spark"
BUGTRACKER = "https://example.invalid/spark/issues"
SECTION = "base"
LICENSE = "Apache-2.0"
# nooelint: oelint.var.licenseremotefile - the repository's license is declared in Cargo.toml, no file to point at
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://spark-tmpfiles.conf \
           file://spark-health.service \
           file://50-spark-updated.rules \
           file://data.mount \
           file://uboot.mount \
           file://meterd.toml \
           file://uplinkd.toml \
           file://webui.toml \
           file://${SPARK_RELEASE_PUB};subdir=spark-trust \
           file://${SPARK_SERVER_CA};subdir=spark-trust \
           "

S = "${UNPACKDIR}"

inherit allarch systemd useradd

USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system spark"
USERADD_PARAM:${PN} = "--system --no-create-home --home-dir /data/spark-meterd --shell /sbin/nologin --user-group --groups dialout spark-meterd; \
                       --system --no-create-home --home-dir /data/spark-uplinkd --shell /sbin/nologin --user-group --groups spark spark-uplinkd; \
                       --system --no-create-home --home-dir /data/spark-updated --shell /sbin/nologin --user-group --groups spark spark-updated; \
                       --system --no-create-home --home-dir /data/spark-webui --shell /sbin/nologin --user-group spark-webui"

do_install() {
    install -d ${D}${nonarch_libdir}/tmpfiles.d ${D}${systemd_system_unitdir} \
        ${D}${datadir}/polkit-1/rules.d ${D}${sysconfdir}/spark
    install -m 0644 ${S}/spark-tmpfiles.conf ${D}${nonarch_libdir}/tmpfiles.d/spark.conf
    install -m 0644 ${S}/spark-health.service ${S}/data.mount ${S}/uboot.mount \
        ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/50-spark-updated.rules ${D}${datadir}/polkit-1/rules.d/
    # Public halves only: the Ed25519 release key and the server CA the daemons pin.
    install -m 0644 ${S}/spark-trust/$(basename ${SPARK_RELEASE_PUB}) ${D}${sysconfdir}/spark/release.pub.pem
    install -m 0644 ${S}/spark-trust/$(basename ${SPARK_SERVER_CA}) ${D}${sysconfdir}/spark/server-ca.pem
    # spark-uplinkd's documented default name for the same CA.
    ln -s server-ca.pem ${D}${sysconfdir}/spark/server-ca.cert.pem
    # Fleet-wide daemon configuration; per-device settings live on /data/spark (README).
    install -m 0644 ${S}/meterd.toml ${S}/uplinkd.toml ${S}/webui.toml ${D}${sysconfdir}/spark/
    sed -i -e 's|@SPARK_RADIO@|${SPARK_RADIO}|' ${D}${sysconfdir}/spark/meterd.toml
    sed -i -e 's|@SPARK_INGEST_ADDRESS@|${SPARK_INGEST_ADDRESS}|' ${D}${sysconfdir}/spark/uplinkd.toml
}

FILES:${PN} += "${nonarch_libdir}/tmpfiles.d \
                ${systemd_system_unitdir} \
                ${datadir}/polkit-1 \
                "

SYSTEMD_SERVICE:${PN} = "data.mount uboot.mount spark-health.service"

RDEPENDS:${PN} = "polkit rauc-mark-good"
