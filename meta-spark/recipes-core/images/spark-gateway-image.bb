SUMMARY = "Spark gateway image for the BeagleBone Black (read-only A/B root, RAUC)"
DESCRIPTION = "Read-only root filesystem with the Spark daemons, RAUC (uboot backend, \
               rootfs.0/rootfs.1 = A/B) and the firmware CA keyring; written to SD card or \
               eMMC as the spark-bbb-ab.wks disk image (boot, rootfs A, rootfs B, /data)."
HOMEPAGE = "https://example.invalid/spark"
BUGTRACKER = "https://example.invalid/spark/issues"
SECTION = "images"
LICENSE = "MIT"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"

IMAGE_INSTALL += "kernel-devicetree \
                  kernel-image-zimage \
                  libubootenv-bin \
                  rauc \
                  rauc-mark-good \
                  spark-meterd \
                  spark-system \
                  spark-updated \
                  spark-uplinkd \
                  spark-webui \
                  "

# Disk image: FAT boot partition with SPL, U-Boot and boot.scr only; the kernel and device tree
# are in each slot's /boot (kernel-image, kernel-devicetree above), so they update with the slot.
IMAGE_FSTYPES = "ext4 wic wic.bmap"
WKS_FILE = "spark-bbb-ab.wks"
IMAGE_BOOT_FILES = "${SPL_BINARY} u-boot.${UBOOT_SUFFIX} boot.scr"
do_image_wic[depends] += "virtual/bootloader:do_deploy"

# Headroom in the 1 GiB slots (wks) for later releases' growth is in the partition, not here.
IMAGE_ROOTFS_EXTRA_SPACE = "65536"
