//! Version comparison per ecosystem (work in progress).
