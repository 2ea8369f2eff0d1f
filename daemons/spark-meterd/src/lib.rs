//! Gateway meter-reading daemon: owns the radio module, buffers readings durably, serves io.spark.Meters1; with a meter-radio simulator (being built; see issue 3).
