//! On-disk constants and the superblock of squashfs 4.0.
//!
//! All integers are little-endian. The superblock is the first 96 bytes of the image:
//!
//! ```text
//!  0        4          8       12          16            20         22        24     26       28      30
//! +--------+----------+-------+-----------+-------------+----------+---------+------+--------+-------+-------+
//! | magic  | inodes   | mtime | block_size| frag_count  | comp_id  |block_log| flags| id_cnt | major | minor |
//! | "hsqs" |   u32    |  u32  |    u32    |    u32      |   u16    |   u16   | u16  |  u16   |  4    |  0    |
//! +--------+----------+-------+-----------+-------------+----------+---------+------+--------+-------+-------+
//!  32           40           48             56               64             72            80           88     96
//! +------------+------------+--------------+----------------+--------------+-------------+------------+------------+
//! | root inode | bytes_used | id_table     | xattr_id_table | inode_table  | dir_table   | frag_table | export_tbl |
//! | ref   u64  |    u64     | start u64    | start u64      | start u64    | start u64   | start u64  | start u64  |
//! +------------+------------+--------------+----------------+--------------+-------------+------------+------------+
//! ```
//!
//! An absent table (xattr, export, and fragments when there are none) is `0xffff_ffff_ffff_ffff`.

use crate::error::{Result, SquashfsError};

/// `"hsqs"` read as a little-endian u32.
pub const MAGIC: u32 = 0x7371_7368;
/// Size of the superblock in bytes.
pub const SUPERBLOCK_SIZE: usize = 96;
/// Uncompressed size of a metadata block.
pub const METADATA_SIZE: usize = 8192;
/// Bit 15 of a metadata block header: the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 0x8000;
/// Bit 24 of a data block size (block list, fragment entry): the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// `fragment` field of a file inode whose file has no fragment.
pub const NO_FRAGMENT: u32 = 0xffff_ffff;
/// Start of a table that is not present.
pub const NO_TABLE: u64 = u64::MAX;
/// `xattr` field of extended inodes without extended attributes.
pub const NO_XATTR: u32 = 0xffff_ffff;
/// Longest file name squashfs stores (the kernel's SQUASHFS_NAME_LEN).
pub const MAX_NAME_LEN: usize = 256;
/// Most entries one directory header may cover (the kernel rejects more).
pub const DIR_HEADER_MAX_ENTRIES: usize = 256;
/// Entries of a fragment table metadata block (16 bytes each).
pub const FRAGMENT_ENTRY_SIZE: usize = 16;

/// Compression ids of the superblock.
pub const COMP_GZIP: u16 = 1;
pub const COMP_XZ: u16 = 4;
pub const COMP_ZSTD: u16 = 6;

/// Superblock flags.
pub mod flags {
    pub const UNCOMPRESSED_INODES: u16 = 0x0001;
    pub const UNCOMPRESSED_DATA: u16 = 0x0002;
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
    pub const NO_FRAGMENTS: u16 = 0x0010;
    pub const ALWAYS_FRAGMENTS: u16 = 0x0020;
    pub const DUPLICATES: u16 = 0x0040;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
}

/// Inode types. Directory entries always carry the basic type, inodes may be extended.
pub mod inode_type {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLOCK_DEV: u16 = 4;
    pub const CHAR_DEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const EXT_DIR: u16 = 8;
    pub const EXT_FILE: u16 = 9;
    pub const EXT_SYMLINK: u16 = 10;
    pub const EXT_BLOCK_DEV: u16 = 11;
    pub const EXT_CHAR_DEV: u16 = 12;
    pub const EXT_FIFO: u16 = 13;
    pub const EXT_SOCKET: u16 = 14;
}

/// Name of a compression id, for messages.
pub fn compression_name(id: u16) -> &'static str {
    match id {
        1 => "gzip",
        2 => "lzma",
        3 => "lzo",
        4 => "xz",
        5 => "lz4",
        6 => "zstd",
        _ => "an unknown algorithm",
    }
}

/// The decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    /// Creation time of the image (seconds since the epoch).
    pub mtime: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    /// 1 = gzip, 4 = xz, 6 = zstd, ... (see [`compression_name`]).
    pub compression_id: u16,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub version_major: u16,
    pub version_minor: u16,
    pub root_inode: u64,
    /// Bytes of the image that are used; the file is usually padded past this to 4 KiB.
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

impl Superblock {
    /// Serialises the superblock.
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.inode_count.to_le_bytes());
        b[8..12].copy_from_slice(&self.mtime.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.fragment_count.to_le_bytes());
        b[20..22].copy_from_slice(&self.compression_id.to_le_bytes());
        b[22..24].copy_from_slice(&self.block_log.to_le_bytes());
        b[24..26].copy_from_slice(&self.flags.to_le_bytes());
        b[26..28].copy_from_slice(&self.id_count.to_le_bytes());
        b[28..30].copy_from_slice(&self.version_major.to_le_bytes());
        b[30..32].copy_from_slice(&self.version_minor.to_le_bytes());
        let tail = [
            self.root_inode,
            self.bytes_used,
            self.id_table_start,
            self.xattr_table_start,
            self.inode_table_start,
            self.directory_table_start,
            self.fragment_table_start,
            self.export_table_start,
        ];
        for (i, v) in tail.iter().enumerate() {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parses and checks a superblock; `image_len` is the number of bytes available.
    pub fn parse(b: &[u8; SUPERBLOCK_SIZE], image_len: u64) -> Result<Self> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(a)
        };
        let magic = u32_at(0);
        if magic != MAGIC {
            return Err(SquashfsError::BadMagic { found: magic });
        }
        let sb = Superblock {
            inode_count: u32_at(4),
            mtime: u32_at(8),
            block_size: u32_at(12),
            fragment_count: u32_at(16),
            compression_id: u16_at(20),
            block_log: u16_at(22),
            flags: u16_at(24),
            id_count: u16_at(26),
            version_major: u16_at(28),
            version_minor: u16_at(30),
            root_inode: u64_at(32),
            bytes_used: u64_at(40),
            id_table_start: u64_at(48),
            xattr_table_start: u64_at(56),
            inode_table_start: u64_at(64),
            directory_table_start: u64_at(72),
            fragment_table_start: u64_at(80),
            export_table_start: u64_at(88),
        };
        if (sb.version_major, sb.version_minor) != (4, 0) {
            return Err(SquashfsError::UnsupportedVersion {
                major: sb.version_major,
                minor: sb.version_minor,
            });
        }
        let bad = |reason: String| Err(SquashfsError::CorruptSuperblock { reason });
        if !sb.block_size.is_power_of_two() || !(4096..=1 << 20).contains(&sb.block_size) {
            return bad(format!(
                "block size {} is not a power of two between 4 KiB and 1 MiB",
                sb.block_size
            ));
        }
        if u32::from(sb.block_log) != sb.block_size.trailing_zeros() {
            return bad(format!(
                "block_log {} does not match block size {}",
                sb.block_log, sb.block_size
            ));
        }
        if sb.bytes_used < SUPERBLOCK_SIZE as u64 || sb.bytes_used > image_len {
            return bad(format!(
                "bytes_used {} is outside the {image_len} bytes available (is the image truncated?)",
                sb.bytes_used
            ));
        }
        if sb.id_count == 0 {
            return bad("the id table is empty".into());
        }
        if sb.inode_count == 0 {
            return bad("the inode count is zero".into());
        }
        let sb_end = SUPERBLOCK_SIZE as u64;
        if !(sb_end <= sb.inode_table_start
            && sb.inode_table_start < sb.directory_table_start
            && sb.directory_table_start <= sb.bytes_used)
        {
            return bad(format!(
                "inode table at {} and directory table at {} are not in order inside {} bytes",
                sb.inode_table_start, sb.directory_table_start, sb.bytes_used
            ));
        }
        for (name, start) in [
            ("id", sb.id_table_start),
            ("fragment", sb.fragment_table_start),
            ("export", sb.export_table_start),
            ("xattr", sb.xattr_table_start),
        ] {
            if start != NO_TABLE && (start < sb.directory_table_start || start > sb.bytes_used) {
                return bad(format!(
                    "{name} table start {start} lies outside the table area"
                ));
            }
        }
        if sb.id_table_start == NO_TABLE {
            return bad("there is no id table".into());
        }
        if sb.fragment_count > 0 && sb.fragment_table_start == NO_TABLE {
            return bad("fragments are counted but there is no fragment table".into());
        }
        Ok(sb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock {
            inode_count: 3,
            mtime: 1_700_000_000,
            block_size: 131_072,
            fragment_count: 1,
            compression_id: COMP_GZIP,
            block_log: 17,
            flags: flags::NO_XATTRS,
            id_count: 1,
            version_major: 4,
            version_minor: 0,
            root_inode: 0x60,
            bytes_used: 500,
            id_table_start: 480,
            xattr_table_start: NO_TABLE,
            inode_table_start: 200,
            directory_table_start: 300,
            fragment_table_start: 440,
            export_table_start: NO_TABLE,
        }
    }

    #[test]
    fn superblock_round_trips_and_starts_with_magic() {
        let bytes = sample().to_bytes();
        assert_eq!(&bytes[0..4], b"hsqs");
        assert_eq!(Superblock::parse(&bytes, 4096).expect("parse"), sample());
    }

    #[test]
    fn superblock_rejects_inconsistent_fields() {
        let mut sb = sample();
        sb.bytes_used = 5000;
        assert!(
            Superblock::parse(&sb.to_bytes(), 4096).is_err(),
            "past the end"
        );
        let mut sb = sample();
        sb.block_log = 16;
        assert!(
            Superblock::parse(&sb.to_bytes(), 4096).is_err(),
            "block_log"
        );
        let mut sb = sample();
        sb.directory_table_start = sb.inode_table_start;
        assert!(
            Superblock::parse(&sb.to_bytes(), 4096).is_err(),
            "table order"
        );
        let mut sb = sample();
        sb.id_table_start = 10;
        assert!(Superblock::parse(&sb.to_bytes(), 4096).is_err(), "id table");
    }
}
