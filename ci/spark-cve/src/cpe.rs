//! CPE 2.3 names and NVD configuration logic (work in progress).
