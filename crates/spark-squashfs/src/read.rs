//! The reader: lists, reads and extracts squashfs 4.0 images (ours and mksquashfs').
//!
//! Everything read from the image is untrusted. Every offset is checked against the table or
//! area it must lie in before anything is read, every block inflates into a buffer of bounded
//! size, metadata cursors only move forward inside their table, directory walks refuse loops and
//! stop after [`MAX_ENTRIES`] entries. A damaged image gives a [`SquashfsError`], never a panic.
//!
//! Inodes (all little-endian) start with a 16-byte header:
//!
//! ```text
//! +---------+---------+---------+---------+---------+-----------+
//! | type u16| mode u16| uid idx | gid idx | mtime   | number u32|
//! +---------+---------+---------+---------+---------+-----------+
//! basic file (2):    blocks_start u32 | fragment u32 | frag_offset u32 | size u32 | block sizes u32...
//! ext. file (9):     blocks_start u64 | size u64 | sparse u64 | nlink u32 | fragment u32
//!                    | frag_offset u32 | xattr u32 | block sizes u32...
//! basic dir (1):     block u32 | nlink u32 | size u16 | offset u16 | parent u32
//! ext. dir (8):      nlink u32 | size u32 | block u32 | parent u32 | index count u16 | offset u16
//!                    | xattr u32 | index entries...
//! symlink (3, 10):   nlink u32 | target size u32 | target bytes [| xattr u32]
//! ```
//!
//! A block size word is the stored length, bit 24 set when stored raw, 0 for a sparse
//! (all-zero) block. Directory listings are runs of a 12-byte header (count-1 u32, inode block
//! u32, base inode number u32) followed by entries (offset u16, number delta i16, type u16,
//! name length-1 u16, name).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use crate::compress::decompress;
use crate::error::{Result, SquashfsError};
use crate::format::{
    COMP_GZIP, COMP_XZ, COMP_ZSTD, DATA_UNCOMPRESSED, DIR_HEADER_MAX_ENTRIES, FRAGMENT_ENTRY_SIZE,
    MAX_NAME_LEN, METADATA_SIZE, METADATA_UNCOMPRESSED, NO_FRAGMENT, NO_TABLE, SUPERBLOCK_SIZE,
    Superblock, compression_name, inode_type,
};
use crate::pipeline::{Ordered, default_window};

/// Most directory entries a walk visits before giving up (a bundle has a handful).
pub const MAX_ENTRIES: usize = 1 << 22;
/// Largest file [`Archive::read_file`] loads into memory.
pub const READ_FILE_LIMIT: u64 = 256 << 20;
/// Largest file size accepted at all (sparse blocks cost no space, so a hostile inode could
/// otherwise claim exabytes of zeros).
pub const MAX_FILE_SIZE: u64 = 1 << 42;
/// Longest symlink target accepted (Linux' PATH_MAX).
const MAX_SYMLINK_LEN: u32 = 4096;
/// Decompressed metadata blocks kept in memory.
const META_CACHE_BLOCKS: usize = 4096;

/// What a directory entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

/// One entry of [`Archive::entries`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Path from the root, '/'-separated, without a leading '/' (non-UTF-8 bytes replaced).
    pub path: String,
    pub kind: EntryKind,
    /// File size; for directories the listing size; for symlinks the target length.
    pub size: u64,
    /// Permission bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub inode_number: u32,
    pub symlink_target: Option<String>,
}

/// A squashfs image open for reading. Methods take `&self`; reads are serialised internally
/// while decompression runs in parallel.
pub struct Archive<R> {
    io: Mutex<Window<R>>,
    sb: Superblock,
    ids: Vec<u32>,
    /// End of the directory table (a loose bound: the next table that follows it).
    dir_end: u64,
    meta_cache: Mutex<HashMap<u64, MetaBlock>>,
    frag_cache: Mutex<Option<(u32, Arc<Vec<u8>>)>>,
}

/// A decompressed metadata block and the position of the block after it.
type MetaBlock = (Arc<Vec<u8>>, u64);

struct Window<R> {
    r: R,
    base: u64,
}

impl<R> std::fmt::Debug for Archive<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("superblock", &self.sb)
            .finish()
    }
}

#[derive(Clone)]
struct Inode {
    reference: u64,
    mode: u16,
    uid: u32,
    gid: u32,
    mtime: u32,
    number: u32,
    body: Body,
}

#[derive(Clone)]
enum Body {
    Dir {
        block: u32,
        offset: u16,
        size: u32,
    },
    File {
        blocks_start: u64,
        size: u64,
        fragment: u32,
        frag_offset: u32,
        /// Where the block list starts: (metadata block, offset in it).
        list: (u64, usize),
    },
    Symlink(Vec<u8>),
    Other(EntryKind),
}

struct RawEntry {
    name: Vec<u8>,
    reference: u64,
    ty: u16,
}

/// Reads a metadata stream forward, block after block, inside `[.., end)`.
struct Cursor<'a, R> {
    ar: &'a Archive<R>,
    end: u64,
    block_at: u64,
    block: Arc<Vec<u8>>,
    at: usize,
    next: u64,
}

impl<'a, R: Read + Seek> Cursor<'a, R> {
    fn new(ar: &'a Archive<R>, abs: u64, offset: usize, end: u64) -> Result<Self> {
        let (block, next) = ar.meta_block(abs, end)?;
        if offset > block.len() {
            return Err(SquashfsError::CorruptMetadata {
                offset: abs,
                reason: format!("offset {offset} is past the block's {} bytes", block.len()),
            });
        }
        Ok(Cursor {
            ar,
            end,
            block_at: abs,
            block,
            at: offset,
            next,
        })
    }

    fn position(&self) -> (u64, usize) {
        (self.block_at, self.at)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.at == self.block.len() {
                // Each block moves `next` forward by at least 3 bytes and `meta_block` refuses to
                // pass `end`, so this loop terminates.
                let (block, next) = self.ar.meta_block(self.next, self.end)?;
                self.block_at = self.next;
                self.block = block;
                self.next = next;
                self.at = 0;
                continue;
            }
            let n = (buf.len() - filled).min(self.block.len() - self.at);
            buf[filled..filled + n].copy_from_slice(&self.block[self.at..self.at + n]);
            filled += n;
            self.at += n;
        }
        Ok(())
    }

    fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads `n` bytes; callers bound `n` (names, symlink targets).
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read(&mut v)?;
        Ok(v)
    }
}

impl<R: Read + Seek> Archive<R> {
    /// Opens an image that fills the whole of `reader`.
    pub fn open(mut reader: R) -> Result<Self> {
        let len = reader
            .seek(SeekFrom::End(0))
            .map_err(|source| SquashfsError::ReadImage {
                offset: 0,
                len: 0,
                source,
            })?;
        Self::open_at(reader, 0, len)
    }

    /// Opens the image stored in `len` bytes at `offset` of `reader` (e.g. the squashfs at the
    /// start of a RAUC bundle, whose signature follows it).
    pub fn open_at(reader: R, offset: u64, len: u64) -> Result<Self> {
        let mut window = Window {
            r: reader,
            base: offset,
        };
        let mut head = [0u8; SUPERBLOCK_SIZE];
        if len < SUPERBLOCK_SIZE as u64 {
            return Err(SquashfsError::CorruptSuperblock {
                reason: format!("the image is only {len} bytes, shorter than a superblock"),
            });
        }
        window.read_exact_at(0, &mut head)?;
        let sb = Superblock::parse(&head, len)?;
        if ![COMP_GZIP, COMP_XZ, COMP_ZSTD].contains(&sb.compression_id) {
            return Err(SquashfsError::UnsupportedCompression {
                id: sb.compression_id,
                name: compression_name(sb.compression_id),
            });
        }
        let dir_end = [
            sb.fragment_table_start,
            sb.export_table_start,
            sb.id_table_start,
            sb.xattr_table_start,
            sb.bytes_used,
        ]
        .into_iter()
        .filter(|&t| t != NO_TABLE && t >= sb.directory_table_start)
        .min()
        .unwrap_or(sb.bytes_used);
        let mut ar = Archive {
            io: Mutex::new(window),
            sb,
            ids: Vec::new(),
            dir_end,
            meta_cache: Mutex::new(HashMap::new()),
            frag_cache: Mutex::new(None),
        };
        ar.ids = ar.read_ids()?;
        Ok(ar)
    }

    /// The decoded superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    fn io(&self) -> MutexGuard<'_, Window<R>> {
        // A panic while holding the lock cannot leave the reader inconsistent: every read seeks.
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `buf.len()` bytes at `offset`, which must lie inside `bytes_used`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.sb.bytes_used) {
            return Err(SquashfsError::ReadImage {
                offset,
                len: buf.len() as u64,
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the read reaches past bytes_used",
                ),
            });
        }
        self.io().read_exact_at(offset, buf)
    }

    /// Reads and inflates the metadata block at `abs`, which must end before `end`.
    /// Returns the block and the position of the next one.
    fn meta_block(&self, abs: u64, end: u64) -> Result<MetaBlock> {
        if let Some(hit) = lock(&self.meta_cache).get(&abs)
            && hit.1 <= end
        {
            return Ok(hit.clone());
        }
        let corrupt = |reason: String| SquashfsError::CorruptMetadata {
            offset: abs,
            reason,
        };
        if abs.checked_add(2).is_none_or(|e| e > end) {
            return Err(corrupt(format!(
                "the block would start past the end of its table at {end}"
            )));
        }
        let mut header = [0u8; 2];
        self.read_at(abs, &mut header)?;
        let header = u16::from_le_bytes(header);
        let stored = u64::from(header & !METADATA_UNCOMPRESSED);
        if stored == 0 || stored > METADATA_SIZE as u64 {
            return Err(corrupt(format!("stored size {stored} is not in 1..=8192")));
        }
        let next = abs + 2 + stored;
        if next > end {
            return Err(corrupt(format!(
                "the block runs past the end of its table at {end}"
            )));
        }
        let mut raw = vec![0u8; stored as usize];
        self.read_at(abs + 2, &mut raw)?;
        let data = if header & METADATA_UNCOMPRESSED != 0 {
            raw
        } else {
            decompress(self.sb.compression_id, &raw, METADATA_SIZE).map_err(corrupt)?
        };
        let entry = (Arc::new(data), next);
        let mut cache = lock(&self.meta_cache);
        if cache.len() >= META_CACHE_BLOCKS {
            cache.clear();
        }
        cache.insert(abs, entry.clone());
        Ok(entry)
    }

    fn read_ids(&self) -> Result<Vec<u32>> {
        let count = usize::from(self.sb.id_count);
        let blocks = (count * 4).div_ceil(METADATA_SIZE);
        let mut ids = Vec::with_capacity(count);
        for b in 0..blocks {
            let at = self.sb.id_table_start + 8 * b as u64;
            let block_at = self.read_u64_at(at)?;
            let (data, _) = self.meta_block(block_at, self.sb.id_table_start)?;
            for chunk in data.chunks_exact(4) {
                if ids.len() < count {
                    ids.push(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
                }
            }
        }
        if ids.len() != count {
            return Err(SquashfsError::CorruptMetadata {
                offset: self.sb.id_table_start,
                reason: format!("the id table holds {} of {count} ids", ids.len()),
            });
        }
        Ok(ids)
    }

    fn read_u64_at(&self, at: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read_at(at, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_inode(&self, reference: u64) -> Result<Inode> {
        let corrupt = |reason: String| SquashfsError::CorruptInode {
            inode_ref: reference,
            reason,
        };
        let block = reference >> 16;
        let offset = (reference & 0xffff) as usize;
        let abs = self
            .sb
            .inode_table_start
            .checked_add(block)
            .ok_or_else(|| corrupt("block offset overflows".into()))?;
        let mut c = Cursor::new(self, abs, offset, self.sb.directory_table_start)?;
        let ty = c.u16()?;
        let mode = c.u16()? & 0o7777;
        let uid_idx = c.u16()?;
        let gid_idx = c.u16()?;
        let mtime = c.u32()?;
        let number = c.u32()?;
        let id = |idx: u16| {
            self.ids
                .get(usize::from(idx))
                .copied()
                .ok_or_else(|| corrupt(format!("id index {idx} is outside the id table")))
        };
        let (uid, gid) = (id(uid_idx)?, id(gid_idx)?);
        if number == 0 || number > self.sb.inode_count {
            return Err(corrupt(format!(
                "inode number {number} is outside 1..={}",
                self.sb.inode_count
            )));
        }
        let body = match ty {
            inode_type::DIR => {
                let block = c.u32()?;
                let _nlink = c.u32()?;
                let size = u32::from(c.u16()?);
                let offset = c.u16()?;
                let _parent = c.u32()?;
                Body::Dir {
                    block,
                    offset,
                    size,
                }
            }
            inode_type::EXT_DIR => {
                let _nlink = c.u32()?;
                let size = c.u32()?;
                let block = c.u32()?;
                let _parent = c.u32()?;
                let _index_count = c.u16()?;
                let offset = c.u16()?;
                let _xattr = c.u32()?;
                Body::Dir {
                    block,
                    offset,
                    size,
                }
            }
            inode_type::FILE | inode_type::EXT_FILE => {
                let (blocks_start, size, fragment, frag_offset) = if ty == inode_type::FILE {
                    let start = u64::from(c.u32()?);
                    let fragment = c.u32()?;
                    let frag_offset = c.u32()?;
                    let size = u64::from(c.u32()?);
                    (start, size, fragment, frag_offset)
                } else {
                    let start = c.u64()?;
                    let size = c.u64()?;
                    let _sparse = c.u64()?;
                    let _nlink = c.u32()?;
                    let fragment = c.u32()?;
                    let frag_offset = c.u32()?;
                    let _xattr = c.u32()?;
                    (start, size, fragment, frag_offset)
                };
                if size > MAX_FILE_SIZE {
                    return Err(corrupt(format!(
                        "file size {size} exceeds the reader's limit of {MAX_FILE_SIZE}"
                    )));
                }
                Body::File {
                    blocks_start,
                    size,
                    fragment,
                    frag_offset,
                    list: c.position(),
                }
            }
            inode_type::SYMLINK | inode_type::EXT_SYMLINK => {
                let _nlink = c.u32()?;
                let len = c.u32()?;
                if len == 0 || len > MAX_SYMLINK_LEN {
                    return Err(corrupt(format!(
                        "symlink target length {len} is not in 1..=4096"
                    )));
                }
                Body::Symlink(c.bytes(len as usize)?)
            }
            inode_type::BLOCK_DEV | inode_type::EXT_BLOCK_DEV => {
                Body::Other(EntryKind::BlockDevice)
            }
            inode_type::CHAR_DEV | inode_type::EXT_CHAR_DEV => Body::Other(EntryKind::CharDevice),
            inode_type::FIFO | inode_type::EXT_FIFO => Body::Other(EntryKind::Fifo),
            inode_type::SOCKET | inode_type::EXT_SOCKET => Body::Other(EntryKind::Socket),
            other => return Err(corrupt(format!("unknown inode type {other}"))),
        };
        Ok(Inode {
            reference,
            mode,
            uid,
            gid,
            mtime,
            number,
            body,
        })
    }

    fn root(&self) -> Result<Inode> {
        let root = self.read_inode(self.sb.root_inode)?;
        if !matches!(root.body, Body::Dir { .. }) {
            return Err(SquashfsError::CorruptInode {
                inode_ref: self.sb.root_inode,
                reason: "the root inode is not a directory".into(),
            });
        }
        Ok(root)
    }

    /// Reads a directory listing, checking names and their order.
    fn read_dir(&self, dir: &Inode, path: &str, budget: &mut usize) -> Result<Vec<RawEntry>> {
        let corrupt = |reason: String| SquashfsError::CorruptDirectory {
            path: path.to_string(),
            reason,
        };
        let Body::Dir {
            block,
            offset,
            size,
        } = dir.body
        else {
            return Err(SquashfsError::WrongKind {
                path: path.to_string(),
                expected: "directory",
            });
        };
        if size < 3 {
            return Err(corrupt(format!(
                "listing size {size} is below the minimum of 3"
            )));
        }
        let mut remaining = u64::from(size) - 3;
        let mut entries: Vec<RawEntry> = Vec::new();
        if remaining == 0 {
            return Ok(entries);
        }
        let abs = self.sb.directory_table_start + u64::from(block);
        let mut c = Cursor::new(self, abs, usize::from(offset), self.dir_end)?;
        while remaining > 0 {
            if remaining < 12 {
                return Err(corrupt("the listing ends inside a header".into()));
            }
            let count = c.u32()? as usize + 1;
            let start = c.u32()?;
            let base = c.u32()?;
            remaining -= 12;
            if count > DIR_HEADER_MAX_ENTRIES {
                return Err(corrupt(format!(
                    "a header claims {count} entries (at most 256)"
                )));
            }
            for _ in 0..count {
                if remaining < 8 {
                    return Err(corrupt("the listing ends inside an entry".into()));
                }
                let inode_offset = c.u16()?;
                let _delta = c.u16()?;
                let ty = c.u16()?;
                let name_len = usize::from(c.u16()?) + 1;
                if name_len > MAX_NAME_LEN {
                    return Err(corrupt(format!(
                        "a name is {name_len} bytes long (at most 256)"
                    )));
                }
                if remaining < 8 + name_len as u64 {
                    return Err(corrupt("the listing ends inside a name".into()));
                }
                remaining -= 8 + name_len as u64;
                let name = c.bytes(name_len)?;
                if name.contains(&b'/') || name.contains(&0) || name == b"." || name == b".." {
                    return Err(corrupt(format!(
                        "entry name {:?} is not a plain file name",
                        String::from_utf8_lossy(&name)
                    )));
                }
                if entries.last().is_some_and(|last| last.name >= name) {
                    return Err(corrupt("entries are not sorted by name or repeat".into()));
                }
                if usize::from(inode_offset) >= METADATA_SIZE {
                    return Err(corrupt(format!(
                        "inode offset {inode_offset} is past 8 KiB"
                    )));
                }
                let _ = base;
                if *budget == 0 {
                    return Err(SquashfsError::TooManyEntries { limit: MAX_ENTRIES });
                }
                *budget -= 1;
                entries.push(RawEntry {
                    name,
                    reference: (u64::from(start) << 16) | u64::from(inode_offset),
                    ty,
                });
            }
        }
        Ok(entries)
    }

    /// Reads an entry's inode and checks it has the type its directory entry announced.
    fn entry_inode(&self, e: &RawEntry, path: &str) -> Result<Inode> {
        let inode = self.read_inode(e.reference)?;
        let basic = match inode.body {
            Body::Dir { .. } => inode_type::DIR,
            Body::File { .. } => inode_type::FILE,
            Body::Symlink(_) => inode_type::SYMLINK,
            Body::Other(EntryKind::BlockDevice) => inode_type::BLOCK_DEV,
            Body::Other(EntryKind::CharDevice) => inode_type::CHAR_DEV,
            Body::Other(EntryKind::Fifo) => inode_type::FIFO,
            Body::Other(_) => inode_type::SOCKET,
        };
        if basic != e.ty {
            return Err(SquashfsError::CorruptDirectory {
                path: path.to_string(),
                reason: format!("entry type {} does not match its inode type {basic}", e.ty),
            });
        }
        Ok(inode)
    }

    /// Lists every entry below the root, depth first, in name order.
    pub fn entries(&self) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.walk(|path, _, inode| {
            let (kind, size, target) = match &inode.body {
                Body::Dir { size, .. } => (EntryKind::Dir, u64::from(*size), None),
                Body::File { size, .. } => (EntryKind::File, *size, None),
                Body::Symlink(t) => (
                    EntryKind::Symlink,
                    t.len() as u64,
                    Some(String::from_utf8_lossy(t).into_owned()),
                ),
                Body::Other(k) => (*k, 0, None),
            };
            out.push(DirEntry {
                path: path.to_string(),
                kind,
                size,
                mode: inode.mode,
                uid: inode.uid,
                gid: inode.gid,
                mtime: inode.mtime,
                inode_number: inode.number,
                symlink_target: target,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Depth-first walk calling `visit(path, raw name path, inode)` for every entry (parents
    /// before children). Refuses directory loops.
    fn walk(&self, mut visit: impl FnMut(&str, &Path, &Inode) -> Result<()>) -> Result<()> {
        let root = self.root()?;
        let mut budget = MAX_ENTRIES;
        let mut seen = HashSet::new();
        seen.insert(root.reference);
        let listing = self.read_dir(&root, "/", &mut budget)?;
        // Stack of (directory path, raw path, its entries, next index).
        let mut stack = vec![(String::new(), PathBuf::new(), listing, 0usize)];
        while let Some(top) = stack.last_mut() {
            let (prefix, raw_prefix, entries, idx) = top;
            let Some(e) = entries.get(*idx) else {
                stack.pop();
                continue;
            };
            *idx += 1;
            let name = String::from_utf8_lossy(&e.name);
            let path = if prefix.is_empty() {
                name.into_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let raw = raw_prefix.join(OsStr::from_bytes(&e.name));
            let inode = self.entry_inode(e, &path)?;
            visit(&path, &raw, &inode)?;
            if matches!(inode.body, Body::Dir { .. }) {
                if !seen.insert(inode.reference) {
                    return Err(SquashfsError::CorruptDirectory {
                        path,
                        reason: "the directory appears twice (a loop)".into(),
                    });
                }
                let listing = self.read_dir(&inode, &path, &mut budget)?;
                stack.push((path, raw, listing, 0));
            }
        }
        Ok(())
    }

    /// Finds the inode at `path` ('/'-separated, leading '/' optional).
    fn lookup(&self, path: &str) -> Result<Inode> {
        let mut inode = self.root()?;
        let mut budget = MAX_ENTRIES;
        for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if !matches!(inode.body, Body::Dir { .. }) {
                return Err(SquashfsError::NotFound {
                    path: path.to_string(),
                });
            }
            let entries = self.read_dir(&inode, path, &mut budget)?;
            let found = entries
                .binary_search_by(|e| e.name.as_slice().cmp(component.as_bytes()))
                .map_err(|_| SquashfsError::NotFound {
                    path: path.to_string(),
                })?;
            inode = self.entry_inode(&entries[found], path)?;
        }
        Ok(inode)
    }

    /// Reads a whole (small) file into memory; at most [`READ_FILE_LIMIT`] bytes.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let inode = self.lookup(path)?;
        let Body::File { size, .. } = inode.body else {
            return Err(SquashfsError::WrongKind {
                path: path.to_string(),
                expected: "regular file",
            });
        };
        if size > READ_FILE_LIMIT {
            return Err(SquashfsError::FileTooLarge {
                path: path.to_string(),
                size,
                limit: READ_FILE_LIMIT,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        self.copy_inode(&inode, path, &mut out, None)?;
        Ok(out)
    }

    /// Streams a file to `out`, decompressing blocks in parallel (bounded window) and writing
    /// them in order. `progress` gets the number of bytes written so far. Returns the file size.
    pub fn copy_file(
        &self,
        path: &str,
        out: &mut impl Write,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<u64> {
        let inode = self.lookup(path)?;
        if !matches!(inode.body, Body::File { .. }) {
            return Err(SquashfsError::WrongKind {
                path: path.to_string(),
                expected: "regular file",
            });
        }
        self.copy_inode(&inode, path, out, progress)
    }

    fn copy_inode(
        &self,
        inode: &Inode,
        path: &str,
        out: &mut impl Write,
        progress: Option<&(dyn Fn(u64) + Sync)>,
    ) -> Result<u64> {
        let Body::File {
            blocks_start,
            size,
            fragment,
            frag_offset,
            list,
        } = inode.body
        else {
            return Err(SquashfsError::WrongKind {
                path: path.to_string(),
                expected: "regular file",
            });
        };
        let bs = u64::from(self.sb.block_size);
        let has_fragment = fragment != NO_FRAGMENT;
        let full_blocks = if has_fragment {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        let tail = if has_fragment { size % bs } else { 0 };
        let data_end = self.sb.inode_table_start;
        let comp = self.sb.compression_id;
        let owned_path = path.to_string();

        enum ReadJob {
            Zeros(usize),
            Raw(Vec<u8>),
            Packed {
                data: Vec<u8>,
                expect: usize,
                at: u64,
            },
        }
        enum Chunk {
            Zeros(usize),
            Data(Vec<u8>),
        }
        let work = |job: ReadJob| -> Result<Chunk> {
            Ok(match job {
                ReadJob::Zeros(n) => Chunk::Zeros(n),
                ReadJob::Raw(v) => Chunk::Data(v),
                ReadJob::Packed { data, expect, at } => {
                    let v = decompress(comp, &data, expect).map_err(|reason| {
                        SquashfsError::CorruptDataBlock {
                            path: owned_path.clone(),
                            offset: at,
                            reason,
                        }
                    })?;
                    if v.len() != expect {
                        return Err(SquashfsError::CorruptDataBlock {
                            path: owned_path.clone(),
                            offset: at,
                            reason: format!(
                                "block inflates to {} bytes, expected {expect}",
                                v.len()
                            ),
                        });
                    }
                    Chunk::Data(v)
                }
            })
        };
        let mut written = 0u64;
        let write_err = |source| SquashfsError::WriteOutput {
            path: path.to_string(),
            source,
        };
        let mut emit = |bytes: &[u8], written: &mut u64| -> Result<()> {
            out.write_all(bytes).map_err(write_err)?;
            *written += bytes.len() as u64;
            if let Some(p) = progress {
                p(*written);
            }
            Ok(())
        };

        if full_blocks > 0 {
            let mut c = Cursor::new(self, list.0, list.1, self.sb.directory_table_start)?;
            rayon::in_place_scope(|scope| -> Result<()> {
                let consume = |chunk: Chunk| -> Result<()> {
                    match chunk {
                        Chunk::Data(v) => emit(&v, &mut written),
                        Chunk::Zeros(mut n) => {
                            static ZEROS: [u8; 65536] = [0u8; 65536];
                            while n > 0 {
                                let k = n.min(ZEROS.len());
                                emit(&ZEROS[..k], &mut written)?;
                                n -= k;
                            }
                            Ok(())
                        }
                    }
                };
                let mut pipe = Ordered::new(scope, default_window(), &work, consume);
                let mut pos = blocks_start;
                for i in 0..full_blocks {
                    let word = c.u32()?;
                    let expect = (size - i * bs).min(bs) as usize;
                    let corrupt = |reason: String| SquashfsError::CorruptDataBlock {
                        path: path.to_string(),
                        offset: pos,
                        reason,
                    };
                    if word == 0 {
                        pipe.submit(ReadJob::Zeros(expect))?;
                        continue;
                    }
                    let len = u64::from(word & !DATA_UNCOMPRESSED);
                    let raw = word & DATA_UNCOMPRESSED != 0;
                    if len == 0 || len > bs || word & !(DATA_UNCOMPRESSED | 0x00ff_ffff) != 0 {
                        return Err(corrupt(format!("block size word {word:#x} is invalid")));
                    }
                    if raw && len != expect as u64 {
                        return Err(corrupt(format!(
                            "raw block of {len} bytes where {expect} are expected"
                        )));
                    }
                    if pos.checked_add(len).is_none_or(|e| e > data_end)
                        || pos < SUPERBLOCK_SIZE as u64
                    {
                        return Err(corrupt("the block lies outside the data area".into()));
                    }
                    let mut data = vec![0u8; len as usize];
                    self.read_at(pos, &mut data)?;
                    pipe.submit(if raw {
                        ReadJob::Raw(data)
                    } else {
                        ReadJob::Packed {
                            data,
                            expect,
                            at: pos,
                        }
                    })?;
                    pos += len;
                }
                pipe.finish()
            })?;
        }
        if tail > 0 {
            let block = self.fragment_block(fragment)?;
            let start = frag_offset as usize;
            let piece = start
                .checked_add(tail as usize)
                .and_then(|end| block.get(start..end))
                .ok_or_else(|| SquashfsError::CorruptFragment {
                    index: fragment,
                    reason: format!(
                        "{tail} bytes at offset {start} of {path:?} do not fit in the {}-byte fragment",
                        block.len()
                    ),
                })?;
            emit(piece, &mut written)?;
        }
        Ok(written)
    }

    /// Reads and inflates fragment block `index` (the last one is cached: small files that
    /// share a fragment are usually read one after another).
    fn fragment_block(&self, index: u32) -> Result<Arc<Vec<u8>>> {
        if let Some((i, block)) = &*lock(&self.frag_cache)
            && *i == index
        {
            return Ok(block.clone());
        }
        let corrupt = |reason: String| SquashfsError::CorruptFragment { index, reason };
        if index >= self.sb.fragment_count {
            return Err(corrupt(format!(
                "there are only {} fragments",
                self.sb.fragment_count
            )));
        }
        let per_block = (METADATA_SIZE / FRAGMENT_ENTRY_SIZE) as u64;
        let index_at = self.sb.fragment_table_start + 8 * (u64::from(index) / per_block);
        let block_at = self.read_u64_at(index_at)?;
        let (meta, _) = self.meta_block(block_at, self.sb.fragment_table_start)?;
        let e = (u64::from(index) % per_block) as usize * FRAGMENT_ENTRY_SIZE;
        let entry = meta
            .get(e..e + FRAGMENT_ENTRY_SIZE)
            .ok_or_else(|| corrupt("the fragment table block is too short".into()))?;
        let mut start = [0u8; 8];
        start.copy_from_slice(&entry[0..8]);
        let start = u64::from_le_bytes(start);
        let word = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        let len = u64::from(word & !DATA_UNCOMPRESSED);
        let bs = u64::from(self.sb.block_size);
        if len == 0 || len > bs || word & !(DATA_UNCOMPRESSED | 0x00ff_ffff) != 0 {
            return Err(corrupt(format!("size word {word:#x} is invalid")));
        }
        if start < SUPERBLOCK_SIZE as u64
            || start
                .checked_add(len)
                .is_none_or(|e| e > self.sb.inode_table_start)
        {
            return Err(corrupt(format!(
                "block at {start} lies outside the data area"
            )));
        }
        let mut data = vec![0u8; len as usize];
        self.read_at(start, &mut data)?;
        let block = if word & DATA_UNCOMPRESSED != 0 {
            data
        } else {
            decompress(self.sb.compression_id, &data, bs as usize).map_err(corrupt)?
        };
        let block = Arc::new(block);
        *lock(&self.frag_cache) = Some((index, block.clone()));
        Ok(block)
    }

    /// Extracts everything below the root into `dest` (created if missing; existing files are
    /// not overwritten), like `unsquashfs -d`: files, directories and symlinks with their
    /// permissions and modification times. Ownership is not changed. Device nodes, FIFOs and
    /// sockets are skipped with a warning.
    pub fn extract_all(&self, dest: &Path) -> Result<()> {
        let extract_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SquashfsError::Extract { path, source }
        };
        fs::create_dir_all(dest).map_err(extract_err(dest))?;
        let root = self.root()?;
        // Directory modes are applied last, deepest first, so read-only ones can still be filled.
        let mut dirs = vec![(dest.to_path_buf(), root.mode, root.mtime)];
        self.walk(|path, raw, inode| {
            let target = dest.join(raw);
            match &inode.body {
                Body::Dir { .. } => {
                    match fs::create_dir(&target) {
                        Ok(()) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists
                                && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) => {}
                        Err(e) => return Err(extract_err(&target)(e)),
                    }
                    dirs.push((target, inode.mode, inode.mtime));
                }
                Body::File { .. } => {
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&target)
                        .map_err(extract_err(&target))?;
                    self.copy_inode(inode, path, &mut file, None)?;
                    file.set_permissions(fs::Permissions::from_mode(u32::from(inode.mode)))
                        .map_err(extract_err(&target))?;
                    file.set_modified(UNIX_EPOCH + Duration::from_secs(u64::from(inode.mtime)))
                        .map_err(extract_err(&target))?;
                }
                Body::Symlink(link) => {
                    std::os::unix::fs::symlink(OsStr::from_bytes(link), &target)
                        .map_err(extract_err(&target))?;
                }
                Body::Other(kind) => {
                    tracing::warn!(path, ?kind, "skipping special file while extracting");
                }
            }
            Ok(())
        })?;
        for (dir, mode, mtime) in dirs.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(u32::from(*mode)))
                .map_err(extract_err(dir))?;
            if let Ok(handle) = File::open(dir) {
                handle
                    .set_modified(UNIX_EPOCH + Duration::from_secs(u64::from(*mtime)))
                    .map_err(extract_err(dir))?;
            }
        }
        Ok(())
    }
}

impl<R: Read + Seek> Window<R> {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        let err = |source| SquashfsError::ReadImage {
            offset,
            len,
            source,
        };
        let abs = self.base.checked_add(offset).ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "offset overflows",
            ))
        })?;
        self.r.seek(SeekFrom::Start(abs)).map_err(err)?;
        self.r.read_exact(buf).map_err(err)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Caches hold no invariant a panic could break.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
