//! Squashfs 4.0: a reader and a parallel, streaming, deterministic writer, used as the payload
//! format of RAUC bundles (`rauc` loop-mounts it, `unsquashfs` extracts it).
//!
//! # Layout of an image
//!
//! ```text
//! offset 0
//! +-----------------------+
//! | superblock (96 bytes) |  magic "hsqs", counts, block size, start of every table
//! +-----------------------+
//! | data blocks           |  each file's blocks back to back; each <= block size, zlib or raw
//! | fragment blocks       |  small files packed together into shared blocks
//! +-----------------------+ <- inode_table_start
//! | inode table           |  8 KiB metadata blocks: one inode per file, dir, symlink
//! +-----------------------+ <- directory_table_start
//! | directory table       |  8 KiB metadata blocks: sorted listings pointing at inodes
//! +-----------------------+
//! | fragment entries      |  (start u64, size u32, unused u32) per fragment block
//! +-----------------------+ <- fragment_table_start: u64 position of each entries block
//! | id entries + index    |  uid/gid values (just 0 here) <- id_table_start at the index
//! +-----------------------+ <- bytes_used
//! | zero padding          |  up to a multiple of 4096 (RAUC requires it)
//! +-----------------------+
//! ```
//!
//! Metadata blocks are described in `metadata`, inodes and listings in the reader, the
//! superblock in [`format`](mod@format).
//!
//! # Writing
//!
//! [`write_dir`] packs a directory tree, [`write_entries`] a flat list of files from disk or
//! memory. Data blocks are read by the calling thread, compressed on rayon's pool inside a
//! bounded window and written in order, so output is identical for any thread count.
//!
//! # Reading
//!
//! [`Archive`] opens an image (or a window of a larger file, [`Archive::open_at`]) and treats
//! every byte as untrusted.

mod compress;
mod error;
pub mod format;
mod metadata;
mod pipeline;
mod read;
mod write;

pub use compress::Compression;
pub use error::{Result, SquashfsError};
pub use format::Superblock;
pub use read::{Archive, DirEntry, EntryKind, MAX_ENTRIES, MAX_FILE_SIZE, READ_FILE_LIMIT};
pub use write::{Entry, Source, WriteSummary, WriterOptions, write_dir, write_entries};
