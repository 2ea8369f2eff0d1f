SUMMARY = "Spark update agent (io.spark.Update1)"
DESCRIPTION = "Verifies signed releases, downloads bundles with resume, installs them through \
               RAUC, reboots and health-checks the new slot (io.spark.Update1)."

SPARK_DBUS_NAME = "io.spark.Update1"

# The agent installs through RAUC.
RDEPENDS:${PN} += "rauc"

require spark-daemon.inc
