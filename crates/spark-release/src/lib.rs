//! Signed release manifests (work in progress).
