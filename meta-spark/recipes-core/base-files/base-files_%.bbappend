# Mount points of the read-only root: /data (p4) and /uboot (p1) are mounted by spark-system's
# data.mount and uboot.mount, so they must exist in the image.
do_install:append:spark() {
    install -d ${D}/data ${D}/uboot
}

FILES:${PN}:append:spark = " /data /uboot"
