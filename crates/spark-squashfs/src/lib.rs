//! Squashfs 4.0 reader and writer (work in progress).
