//! The one error type of this crate.
//!
//! Variants are named after the operation that failed and carry where it failed (an offset in the
//! image, a path, an inode reference) so that a message alone is enough to act on.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing or reading a squashfs image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SquashfsError {
    /// A source file or directory could not be read while building an image.
    #[error("cannot read {path}: {source}; check that it exists and is readable")]
    ReadSource {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A source file was shorter or longer than when it was first looked at.
    #[error(
        "{path} changed size while it was being packed (expected {expected} bytes); \
         do not modify the input tree during the build and try again"
    )]
    SourceChanged { path: PathBuf, expected: u64 },

    /// The input tree holds something squashfs payloads of Spark never contain.
    #[error(
        "{path} is a {kind}; only regular files, directories and symlinks can be packed, \
         remove it from the input tree"
    )]
    UnsupportedFileType { path: PathBuf, kind: &'static str },

    /// A file name cannot be stored (empty, too long, contains '/', or a duplicate).
    #[error("cannot store the name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    /// The writer options are out of range.
    #[error("invalid squashfs writer options: {0}")]
    InvalidOptions(String),

    /// Writing the image to its destination failed.
    #[error(
        "cannot write the squashfs image at offset {offset}: {source}; check free space on the destination"
    )]
    WriteImage {
        offset: u64,
        #[source]
        source: io::Error,
    },

    /// The compressor reported an error (it should not on valid input).
    #[error("{algorithm} compression failed: {message}")]
    Compress {
        algorithm: &'static str,
        message: String,
    },

    /// Reading the image itself failed (I/O error or the image is shorter than its tables say).
    #[error("cannot read {len} bytes of the squashfs image at offset {offset}: {source}")]
    ReadImage {
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },

    /// The first four bytes are not the squashfs magic.
    #[error(
        "not a squashfs image: magic {found:#010x} (expected 0x73717368, \"hsqs\"); is this the right file and offset?"
    )]
    BadMagic { found: u32 },

    /// A squashfs version other than 4.0.
    #[error(
        "squashfs version {major}.{minor} is not supported; only 4.0 images (mksquashfs 4.x) can be read"
    )]
    UnsupportedVersion { major: u16, minor: u16 },

    /// The image is compressed with an algorithm this build cannot decode.
    #[error(
        "the image is compressed with {name} (id {id}), which this build cannot read; rebuild it with gzip (mksquashfs -comp gzip)"
    )]
    UnsupportedCompression { id: u16, name: &'static str },

    /// A superblock field is inconsistent.
    #[error("corrupt squashfs superblock: {reason}")]
    CorruptSuperblock { reason: String },

    /// A metadata block (inode, directory, fragment or id table) is damaged.
    #[error("corrupt squashfs metadata block at offset {offset}: {reason}")]
    CorruptMetadata { offset: u64, reason: String },

    /// An inode is damaged.
    #[error("corrupt squashfs inode (reference {inode_ref:#x}): {reason}")]
    CorruptInode { inode_ref: u64, reason: String },

    /// A directory listing is damaged.
    #[error("corrupt squashfs directory {path:?}: {reason}")]
    CorruptDirectory { path: String, reason: String },

    /// A data block of a file is damaged.
    #[error("corrupt data block of {path:?} at offset {offset}: {reason}")]
    CorruptDataBlock {
        path: String,
        offset: u64,
        reason: String,
    },

    /// An entry of the fragment table is damaged.
    #[error("corrupt squashfs fragment {index}: {reason}")]
    CorruptFragment { index: u32, reason: String },

    /// The path does not exist in the image.
    #[error("{path:?} is not in the squashfs image; list its contents with `unsquashfs -l`")]
    NotFound { path: String },

    /// The path exists but is not a regular file (or, for a path component, not a directory).
    #[error("{path:?} in the squashfs image is not a {expected}")]
    WrongKind {
        path: String,
        expected: &'static str,
    },

    /// `read_file` refuses to load big files into memory.
    #[error(
        "{path:?} is {size} bytes, more than read_file's limit of {limit}; stream it with copy_file instead"
    )]
    FileTooLarge { path: String, size: u64, limit: u64 },

    /// The image declares more entries than the reader is willing to walk.
    #[error(
        "the squashfs image has more than {limit} directory entries; it is corrupt or not a bundle payload"
    )]
    TooManyEntries { limit: usize },

    /// Creating something under the extraction directory failed.
    #[error("cannot extract to {path}: {source}")]
    Extract {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The destination of `copy_file` refused the data.
    #[error("cannot write the contents of {path:?} to the destination: {source}")]
    WriteOutput {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = SquashfsError> = std::result::Result<T, E>;
