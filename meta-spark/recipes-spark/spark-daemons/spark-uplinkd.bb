SUMMARY = "Spark uplink daemon (io.spark.Uplink1)"
DESCRIPTION = "Store-and-forward telemetry to the cloud over one mutual-TLS connection, with \
               its durable queue on /data (io.spark.Uplink1)."

SPARK_DBUS_NAME = "io.spark.Uplink1"

require spark-daemon.inc
