//! Spark PKI (work in progress).
