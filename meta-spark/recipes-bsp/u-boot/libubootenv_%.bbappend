# fw_env.config for fw_printenv/fw_setenv (RAUC's uboot backend runs them): the one in
# u-boot/files, shared with the U-Boot recipe so both describe the same environment.
FILESEXTRAPATHS:prepend:spark := "${THISDIR}/files:"

SRC_URI:append:spark = " file://fw_env.config"

do_install:append:spark() {
    install -d ${D}${sysconfdir}
    install -m 0644 ${UNPACKDIR}/fw_env.config ${D}${sysconfdir}/fw_env.config
}
