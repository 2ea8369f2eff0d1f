SUMMARY = "Spark meter radio daemon (io.spark.Meters1)"
DESCRIPTION = "Owns the meter radio module, stores every reading durably on /data and serves \
               them on the system bus as io.spark.Meters1."

SPARK_DBUS_NAME = "io.spark.Meters1"

require spark-daemon.inc
