# Spark A/B boot for the BeagleBone Black: setexpr and the FAT environment (spark.cfg), the boot
# script compiled to boot.scr by u-boot.inc (UBOOT_ENV). fw_env.config is libubootenv's (bbappend).
FILESEXTRAPATHS:prepend:spark := "${THISDIR}/files:"

SRC_URI:append:spark = " \
    file://spark.cfg \
    file://boot.cmd \
"

# u-boot.inc turns ${UBOOT_ENV}.${UBOOT_ENV_SRC_SUFFIX} into boot.scr with mkimage and deploys it;
# the image puts it on the FAT partition (IMAGE_BOOT_FILES).
UBOOT_ENV:spark = "boot"
UBOOT_ENV_SUFFIX:spark = "scr"
UBOOT_ENV_SRC_SUFFIX:spark = "cmd"
