SUMMARY = "Spark on-site status page (HTTPS over the gateway's Wi-Fi)"
DESCRIPTION = "Meters, cloud link, queue, A/B slots and update state read over D-Bus, behind a \
               per-device login, updated live; for site staff on the gateway's Wi-Fi."

# Owns no bus name: its policy only grants it read access to RAUC's slot status.
SPARK_DBUS_POLICY = "spark-webui"

require spark-daemon.inc
