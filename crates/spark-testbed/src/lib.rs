//! Test rig for the real RAUC (work in progress).
