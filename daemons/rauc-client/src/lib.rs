//! RAUC D-Bus bindings (work in progress).
