//! Gateway uplink daemon: durable outgoing queue, batching, mutual-TLS session with spark-ingest, io.spark.Uplink1, cloud command forwarding (being built; see issue 3).
