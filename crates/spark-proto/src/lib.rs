//! Spark wire protocol (work in progress).
