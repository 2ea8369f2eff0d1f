# Spark A/B boot script (U-Boot hush; `mkimage -A arm -T script -C none -d boot.cmd boot.scr`).
#
# Picks the root slot from BOOT_ORDER and BOOT_<x>_LEFT, the variables RAUC's `uboot` backend
# keeps with fw_setenv, counts the attempt down, saves the environment, and boots the kernel and
# device tree of the chosen slot from that slot's own /boot (so the kernel is A/B too).
#   - the first slot in BOOT_ORDER with attempts left is booted and its counter decremented;
#   - a slot RAUC marked good has its counter back at SPARK_ATTEMPTS; one it marked bad has left
#     BOOT_ORDER; a new slot that never gets marked good runs out of attempts and the next slot in
#     BOOT_ORDER boots (fallback);
#   - when no slot has attempts left, all counters go back to SPARK_ATTEMPTS and the board resets.
# The same rules are in spark-testbed's simulated U-Boot (crates/spark-testbed/src/bootloader.rs);
# meta-spark/tools/tests/layer.rs boots this script in real U-Boot and compares the two.
#
# Set by the boot command before it sources this script (platform glue, see boot-command.cfg):
#   spark_iface  the block interface of the boot medium ("mmc" on the BeagleBone)
#   spark_dev    its device number (0 = SD card, 1 = eMMC on the BeagleBone)
#   spark_save   optional: command that persists the environment; unset means `saveenv`
#                (the BeagleBone keeps its environment in uboot.env on the FAT partition)
#   fdtfile      device tree file name under the slot's /boot (the BeagleBone's `findfdt` sets it)
# Partitions: 1 FAT boot, 2 rootfs A, 3 rootfs B, 4 /data (wic/spark-bbb-ab.wks).

setenv SPARK_ATTEMPTS 3

# First boot (no uboot.env yet) or a damaged environment: both slots, full counters.
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT ${SPARK_ATTEMPTS}
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT ${SPARK_ATTEMPTS}
test -n "${spark_save}" || setenv spark_save saveenv

setenv spark_slot
setenv spark_part
for slot in ${BOOT_ORDER}; do
    if test -n "${spark_slot}"; then
        # A slot is chosen; later names are not looked at.
    elif test "x${slot}" = "xA"; then
        if test ${BOOT_A_LEFT} -gt 0; then
            setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
            setenv spark_slot A
            setenv spark_part 2
        fi
    elif test "x${slot}" = "xB"; then
        if test ${BOOT_B_LEFT} -gt 0; then
            setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
            setenv spark_slot B
            setenv spark_part 3
        fi
    fi
done

if test -z "${spark_slot}"; then
    echo "spark-boot: no slot left in BOOT_ORDER=${BOOT_ORDER}: resetting counters to ${SPARK_ATTEMPTS}"
    setenv BOOT_A_LEFT ${SPARK_ATTEMPTS}
    setenv BOOT_B_LEFT ${SPARK_ATTEMPTS}
    run spark_save
    reset
fi

# Save the decremented counter before anything can hang: an attempt that never reaches mark-good
# must count.
echo "spark-boot: slot=${spark_slot} BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"
run spark_save

# Root by partition UUID, so the same script boots from the SD card and from the eMMC whatever
# number Linux gives the device; rauc.slot tells RAUC which slot is booted.
part uuid ${spark_iface} ${spark_dev}:${spark_part} spark_root_uuid
setenv bootargs "console=${console} root=PARTUUID=${spark_root_uuid} ro rootfstype=ext4 rootwait fixrtc rauc.slot=${spark_slot}"
echo "spark-boot: bootargs ${bootargs}"
if load ${spark_iface} ${spark_dev}:${spark_part} ${kernel_addr_r} /boot/zImage; then
    if load ${spark_iface} ${spark_dev}:${spark_part} ${fdt_addr_r} /boot/${fdtfile}; then
        bootz ${kernel_addr_r} - ${fdt_addr_r}
    fi
fi

# Only reached when the slot's kernel or device tree is missing or broken: this attempt is
# already counted, so resetting retries until the slot runs out of attempts and the other boots.
echo "spark-boot: slot ${spark_slot} did not boot: resetting"
reset
