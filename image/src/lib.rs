//! RAUC bundles (work in progress).
