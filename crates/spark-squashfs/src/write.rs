//! The writer: turns a directory tree (or a flat list of entries) into a squashfs 4.0 image.
//!
//! Order of work, which is also the order of the bytes in the image:
//!
//! ```text
//! +------------+---------------------------------+-------------+-------------+------------------+-----------------+
//! | superblock | data blocks and fragment blocks | inode table | dir table   | fragment entries | id entries      |
//! |  96 bytes  | (streamed, compressed in        | (metadata   | (metadata   | + their index    | + their index   |
//! | (last)     |  parallel, written in order)    |  blocks)    |  blocks)    | (u64 per block)  | (u64 per block) |
//! +------------+---------------------------------+-------------+-------------+------------------+-----------------+
//!                                                                         zero padding up to a multiple of 4096 ->
//! ```
//!
//! Like mksquashfs with its defaults: files smaller than a block are packed into shared fragment
//! blocks; larger files keep their tail as a short last block; all-zero blocks are stored as
//! sparse (size 0, no bytes); a block that does not shrink is stored raw. Unlike mksquashfs, no
//! duplicate detection, no hard-link detection (each path gets its own inode), no export table
//! and no compressor-options block (the gzip level does not matter to readers).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::compress::Compression;
use crate::error::{Result, SquashfsError};
use crate::format::{
    DATA_UNCOMPRESSED, DIR_HEADER_MAX_ENTRIES, MAX_NAME_LEN, NO_FRAGMENT, NO_TABLE, NO_XATTR,
    SUPERBLOCK_SIZE, Superblock, flags, inode_type,
};
use crate::metadata::MetadataWriter;
use crate::pipeline::{Ordered, default_window};

/// Options of [`write_dir`] and [`write_entries`].
pub struct WriterOptions {
    pub compression: Compression,
    /// Data block size, a power of two from 4 KiB to 1 MiB. Default 128 KiB like mksquashfs.
    pub block_size: u32,
    /// `Some(SOURCE_DATE_EPOCH)`: every inode and the superblock get this time (reproducible
    /// builds). `None`: inodes keep the files' mtimes, the superblock gets the current time.
    pub mtime: Option<u32>,
    /// Called with the number of input bytes packed so far (e.g. to drive a progress bar).
    pub progress: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compression: Compression::default(),
            block_size: 128 * 1024,
            mtime: None,
            progress: None,
        }
    }
}

impl std::fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterOptions")
            .field("compression", &self.compression)
            .field("block_size", &self.block_size)
            .field("mtime", &self.mtime)
            .field("progress", &self.progress.as_ref().map(|_| "Fn(u64)"))
            .finish()
    }
}

/// One file of the flat root directory written by [`write_entries`].
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: String,
    pub source: Source,
    /// Permission bits (e.g. `0o644`).
    pub mode: u16,
}

/// Where the contents of an [`Entry`] come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A regular file on disk, streamed block by block.
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(Vec<u8>),
}

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    /// The superblock's `bytes_used`: the image without its padding.
    pub bytes_used: u64,
    /// Bytes written, a multiple of 4096.
    pub image_size: u64,
}

/// Builds an image from the directory tree at `src` (regular files, directories, symlinks).
///
/// Ownership is squashed to root (like `mksquashfs -all-root`), permissions are kept, output
/// starts at the current position of `out` and ends there too, padded to 4 KiB.
pub fn write_dir(
    src: &Path,
    out: &mut (impl Write + Seek),
    opts: &WriterOptions,
) -> Result<WriteSummary> {
    check_options(opts)?;
    let now = now();
    let meta = fs::metadata(src).map_err(|source| SquashfsError::ReadSource {
        path: src.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SquashfsError::UnsupportedFileType {
            path: src.to_path_buf(),
            kind: "non-directory (write_dir needs a directory)",
        });
    }
    let children = scan_dir(src, opts)?;
    let root = Node {
        name: Vec::new(),
        mode: (meta.permissions().mode() & 0o7777) as u16,
        mtime: opts.mtime.unwrap_or_else(|| clamp_time(meta.mtime())),
        ino: 0,
        kind: Kind::Dir(children),
    };
    build(root, out, opts, now)
}

/// Builds an image whose root directory holds exactly `entries` (files only).
pub fn write_entries(
    entries: &[Entry],
    out: &mut (impl Write + Seek),
    opts: &WriterOptions,
) -> Result<WriteSummary> {
    check_options(opts)?;
    let now = now();
    let mut children = Vec::with_capacity(entries.len());
    for entry in entries {
        check_name(entry.name.as_bytes())?;
        let (source, size, mtime) = match &entry.source {
            Source::Bytes(b) => (FileSource::Bytes(b), b.len() as u64, now),
            Source::Path(p) => {
                let meta = fs::metadata(p).map_err(|source| SquashfsError::ReadSource {
                    path: p.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(SquashfsError::UnsupportedFileType {
                        path: p.clone(),
                        kind: "non-regular file",
                    });
                }
                (
                    FileSource::Path(p.clone()),
                    meta.len(),
                    clamp_time(meta.mtime()),
                )
            }
        };
        children.push(Node {
            name: entry.name.as_bytes().to_vec(),
            mode: entry.mode & 0o7777,
            mtime: opts.mtime.unwrap_or(mtime),
            ino: 0,
            kind: Kind::File {
                source,
                size,
                id: 0,
            },
        });
    }
    children.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = children.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(SquashfsError::InvalidName {
            name: String::from_utf8_lossy(&w[0].name).into_owned(),
            reason: "two entries have this name",
        });
    }
    let root = Node {
        name: Vec::new(),
        mode: 0o755,
        mtime: opts.mtime.unwrap_or(now),
        ino: 0,
        kind: Kind::Dir(children),
    };
    build(root, out, opts, now)
}

fn check_options(opts: &WriterOptions) -> Result<()> {
    opts.compression.check()?;
    let bs = opts.block_size;
    if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
        return Err(SquashfsError::InvalidOptions(format!(
            "block size {bs} is not a power of two between 4096 and 1048576"
        )));
    }
    Ok(())
}

fn check_name(name: &[u8]) -> Result<()> {
    let reason = if name.is_empty() {
        "names cannot be empty"
    } else if name.len() > MAX_NAME_LEN {
        "names are limited to 256 bytes"
    } else if name.contains(&b'/') || name.contains(&0) {
        "names cannot contain '/' or NUL"
    } else if name == b"." || name == b".." {
        "'.' and '..' are reserved"
    } else {
        return Ok(());
    };
    Err(SquashfsError::InvalidName {
        name: String::from_utf8_lossy(name).into_owned(),
        reason,
    })
}

fn now() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn clamp_time(t: i64) -> u32 {
    t.clamp(0, i64::from(u32::MAX)) as u32
}

struct Node<'a> {
    name: Vec<u8>,
    mode: u16,
    mtime: u32,
    ino: u32,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Dir(Vec<Node<'a>>),
    /// `id` indexes the file list of the data phase.
    File {
        source: FileSource<'a>,
        size: u64,
        id: usize,
    },
    Symlink(Vec<u8>),
}

#[derive(Clone)]
enum FileSource<'a> {
    Path(PathBuf),
    Bytes(&'a [u8]),
}

fn scan_dir<'a>(dir: &Path, opts: &WriterOptions) -> Result<Vec<Node<'a>>> {
    let read_err = |source| SquashfsError::ReadSource {
        path: dir.to_path_buf(),
        source,
    };
    let mut nodes = Vec::new();
    for dirent in fs::read_dir(dir).map_err(read_err)? {
        let dirent = dirent.map_err(read_err)?;
        let path = dirent.path();
        let name = dirent.file_name().as_bytes().to_vec();
        check_name(&name)?;
        let meta = fs::symlink_metadata(&path).map_err(|source| SquashfsError::ReadSource {
            path: path.clone(),
            source,
        })?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir(scan_dir(&path, opts)?)
        } else if ft.is_file() {
            Kind::File {
                source: FileSource::Path(path.clone()),
                size: meta.len(),
                id: 0,
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|source| SquashfsError::ReadSource {
                path: path.clone(),
                source,
            })?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_fifo() {
                "FIFO"
            } else {
                "socket"
            };
            return Err(SquashfsError::UnsupportedFileType { path, kind });
        };
        nodes.push(Node {
            name,
            mode: (meta.permissions().mode() & 0o7777) as u16,
            mtime: opts.mtime.unwrap_or_else(|| clamp_time(meta.mtime())),
            ino: 0,
            kind,
        });
    }
    // squashfs requires entries sorted by name as unsigned bytes (strcmp order).
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// Output stream with its position relative to the start of the image.
struct Out<'w, W> {
    w: &'w mut W,
    pos: u64,
}

impl<W: Write> Out<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w
            .write_all(bytes)
            .map_err(|source| SquashfsError::WriteImage {
                offset: self.pos,
                source,
            })?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

/// A fragment table entry: where the fragment block starts, and its size word.
type FragmentEntry = (u64, u32);

/// Where the data of one file ended up.
#[derive(Clone, Default)]
struct FileData {
    blocks_start: u64,
    block_sizes: Vec<u32>,
    fragment: Option<(u32, u32)>,
    sparse: u64,
}

fn build<W: Write + Seek>(
    mut root: Node<'_>,
    out: &mut W,
    opts: &WriterOptions,
    now: u32,
) -> Result<WriteSummary> {
    let base = out
        .stream_position()
        .map_err(|source| SquashfsError::WriteImage { offset: 0, source })?;
    let mut out = Out { w: out, pos: 0 };
    // The superblock is written last, once the table positions are known.
    out.write(&[0u8; SUPERBLOCK_SIZE])?;

    // Inode numbers: root is 1, the children of each directory get consecutive numbers, which
    // keeps the number deltas in directory headers small (they are i16).
    root.ino = 1;
    let mut next_ino = 2u32;
    let mut files = Vec::new();
    if let Kind::Dir(children) = &mut root.kind {
        number(children, &mut next_ino, &mut files, &PathBuf::new());
    }
    let inode_count = next_ino - 1;

    let (data, fragments) = write_data(&files, &mut out, opts)?;

    let mut inodes = MetadataWriter::new(opts.compression);
    let mut dirs = MetadataWriter::new(opts.compression);
    let root_ref = write_dir_inode(&root, inode_count + 1, &data, &mut inodes, &mut dirs)?;

    let (inode_bytes, _) = inodes.finish()?;
    let inode_table_start = out.pos;
    out.write(&inode_bytes)?;
    let (dir_bytes, _) = dirs.finish()?;
    let directory_table_start = out.pos;
    out.write(&dir_bytes)?;

    // Even without fragments the start is a real position: unsquashfs takes it as the end of
    // the directory table.
    let fragment_table_start = if fragments.is_empty() {
        out.pos
    } else {
        let mut table = MetadataWriter::new(opts.compression);
        for (start, size) in &fragments {
            let mut e = [0u8; 16];
            e[0..8].copy_from_slice(&start.to_le_bytes());
            e[8..12].copy_from_slice(&size.to_le_bytes());
            table.write(&e)?;
        }
        write_indexed_table(table, &mut out)?
    };
    let mut ids = MetadataWriter::new(opts.compression);
    ids.write(&0u32.to_le_bytes())?; // -all-root: the only id is 0.
    let id_table_start = write_indexed_table(ids, &mut out)?;

    let bytes_used = out.pos;
    let image_size = bytes_used.div_ceil(4096) * 4096;
    let padding = vec![0u8; (image_size - bytes_used) as usize];
    out.write(&padding)?;

    let sb = Superblock {
        inode_count,
        mtime: opts.mtime.unwrap_or(now),
        block_size: opts.block_size,
        fragment_count: fragments.len() as u32,
        compression_id: opts.compression.id(),
        block_log: opts.block_size.trailing_zeros() as u16,
        flags: flags::NO_XATTRS,
        id_count: 1,
        version_major: 4,
        version_minor: 0,
        root_inode: root_ref,
        bytes_used,
        id_table_start,
        xattr_table_start: NO_TABLE,
        inode_table_start,
        directory_table_start,
        fragment_table_start,
        export_table_start: NO_TABLE,
    };
    let seek_err = |source| SquashfsError::WriteImage { offset: 0, source };
    out.w.seek(SeekFrom::Start(base)).map_err(seek_err)?;
    out.pos = 0;
    out.write(&sb.to_bytes())?;
    // Leave the stream at the end of the image: callers append signatures right after it.
    out.w
        .seek(SeekFrom::Start(base + image_size))
        .map_err(seek_err)?;
    out.w.flush().map_err(|source| SquashfsError::WriteImage {
        offset: image_size,
        source,
    })?;
    Ok(WriteSummary {
        bytes_used,
        image_size,
    })
}

/// Writes the metadata blocks of a lookup table followed by its index (one u64 per block);
/// returns the position of the index, which is what the superblock points at.
fn write_indexed_table<W: Write>(table: MetadataWriter, out: &mut Out<'_, W>) -> Result<u64> {
    let (bytes, starts) = table.finish()?;
    let blocks_at = out.pos;
    out.write(&bytes)?;
    let index_at = out.pos;
    let mut index = Vec::with_capacity(starts.len() * 8);
    for s in starts {
        index.extend_from_slice(&(blocks_at + s).to_le_bytes());
    }
    out.write(&index)?;
    Ok(index_at)
}

/// Assigns inode numbers and collects the files (depth-first, sorted: the data order).
fn number<'a>(
    children: &mut [Node<'a>],
    next: &mut u32,
    files: &mut Vec<(FileSource<'a>, u64, PathBuf)>,
    path: &Path,
) {
    for child in children.iter_mut() {
        child.ino = *next;
        *next += 1;
    }
    for child in children.iter_mut() {
        let child_path = path.join(std::ffi::OsStr::from_bytes(&child.name));
        match &mut child.kind {
            Kind::Dir(grandchildren) => number(grandchildren, next, files, &child_path),
            Kind::File { source, size, id } => {
                *id = files.len();
                files.push((source.clone(), *size, child_path));
            }
            Kind::Symlink(_) => {}
        }
    }
}

enum JobKind {
    Data { file: usize, first: bool },
    Fragment,
}

struct Job {
    kind: JobKind,
    data: Vec<u8>,
}

enum Stored {
    Sparse,
    Compressed(Vec<u8>),
    Raw(Vec<u8>),
}

struct Done {
    kind: JobKind,
    input_len: u64,
    stored: Stored,
}

/// Streams every file's blocks through the parallel compressor; returns per-file block lists
/// and the fragment table entries (start, size word).
fn write_data<W: Write>(
    files: &[(FileSource<'_>, u64, PathBuf)],
    out: &mut Out<'_, W>,
    opts: &WriterOptions,
) -> Result<(Vec<FileData>, Vec<FragmentEntry>)> {
    let bs = opts.block_size as usize;
    let compression = opts.compression;
    let mut data = vec![FileData::default(); files.len()];
    let mut fragments: Vec<FragmentEntry> = Vec::new();
    let mut consumed = 0u64;

    let work = move |job: Job| -> Result<Done> {
        let input_len = job.data.len() as u64;
        let stored = if matches!(job.kind, JobKind::Data { .. }) && job.data.iter().all(|&b| b == 0)
        {
            Stored::Sparse
        } else {
            match compression.compress(&job.data)? {
                Some(c) => Stored::Compressed(c),
                None => Stored::Raw(job.data),
            }
        };
        Ok(Done {
            kind: job.kind,
            input_len,
            stored,
        })
    };

    rayon::in_place_scope(|scope| -> Result<()> {
        let consume = |done: Done| -> Result<()> {
            let (bytes, word): (&[u8], u32) = match &done.stored {
                Stored::Sparse => (&[], 0),
                Stored::Compressed(c) => (c, c.len() as u32),
                Stored::Raw(r) => (r, r.len() as u32 | DATA_UNCOMPRESSED),
            };
            match done.kind {
                JobKind::Data { file, first } => {
                    let fd = &mut data[file];
                    if first {
                        fd.blocks_start = out.pos;
                    }
                    fd.block_sizes.push(word);
                    if matches!(done.stored, Stored::Sparse) {
                        fd.sparse += done.input_len;
                    }
                }
                JobKind::Fragment => fragments.push((out.pos, word)),
            }
            out.write(bytes)?;
            consumed += done.input_len;
            if let Some(progress) = &opts.progress {
                progress(consumed);
            }
            Ok(())
        };
        let mut pipe = Ordered::new(scope, default_window(), &work, consume);
        let mut frag_buf: Vec<u8> = Vec::new();
        let mut frag_count = 0u32;
        let mut frag_of: Vec<(usize, u32, u32)> = Vec::new();
        for (id, (source, size, _)) in files.iter().enumerate() {
            let size = *size;
            if size == 0 {
                continue;
            }
            if size < bs as u64 {
                // Small file: packed into the current fragment block.
                if frag_buf.len() + size as usize > bs {
                    pipe.submit(Job {
                        kind: JobKind::Fragment,
                        data: std::mem::take(&mut frag_buf),
                    })?;
                    frag_count += 1;
                }
                frag_of.push((id, frag_count, frag_buf.len() as u32));
                read_into(source, 0, size as usize, size, &mut frag_buf)?;
                continue;
            }
            let mut reader = SourceReader::open(source, size)?;
            let mut offset = 0u64;
            while offset < size {
                let len = (size - offset).min(bs as u64) as usize;
                let block = reader.read_block(offset, len)?;
                pipe.submit(Job {
                    kind: JobKind::Data {
                        file: id,
                        first: offset == 0,
                    },
                    data: block,
                })?;
                offset += len as u64;
            }
            reader.check_end()?;
        }
        if !frag_buf.is_empty() {
            pipe.submit(Job {
                kind: JobKind::Fragment,
                data: std::mem::take(&mut frag_buf),
            })?;
        }
        pipe.finish()?;
        for (id, index, offset) in frag_of {
            data[id].fragment = Some((index, offset));
        }
        Ok(())
    })?;
    Ok((data, fragments))
}

/// Reads `len` bytes at `offset` of a small source and appends them to `buf`.
fn read_into(
    source: &FileSource<'_>,
    offset: usize,
    len: usize,
    size: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    match source {
        FileSource::Bytes(b) => buf.extend_from_slice(&b[offset..offset + len]),
        FileSource::Path(_) => {
            let mut reader = SourceReader::open(source, size)?;
            let block = reader.read_block(offset as u64, len)?;
            buf.extend_from_slice(&block);
            reader.check_end()?;
        }
    }
    Ok(())
}

/// Sequential block reader over a file on disk or bytes in memory.
enum SourceReader<'s> {
    File {
        file: File,
        path: &'s Path,
        size: u64,
    },
    Bytes(&'s [u8]),
}

impl<'s> SourceReader<'s> {
    fn open(source: &'s FileSource<'_>, size: u64) -> Result<Self> {
        Ok(match source {
            FileSource::Bytes(b) => SourceReader::Bytes(b),
            FileSource::Path(p) => SourceReader::File {
                file: File::open(p).map_err(|source| SquashfsError::ReadSource {
                    path: p.clone(),
                    source,
                })?,
                path: p,
                size,
            },
        })
    }

    /// Reads the next `len` bytes (callers read sequentially from offset 0).
    fn read_block(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self {
            SourceReader::Bytes(b) => Ok(b[offset as usize..offset as usize + len].to_vec()),
            SourceReader::File { file, path, size } => {
                let mut block = vec![0u8; len];
                file.read_exact(&mut block).map_err(|source| {
                    if source.kind() == std::io::ErrorKind::UnexpectedEof {
                        SquashfsError::SourceChanged {
                            path: path.to_path_buf(),
                            expected: *size,
                        }
                    } else {
                        SquashfsError::ReadSource {
                            path: path.to_path_buf(),
                            source,
                        }
                    }
                })?;
                Ok(block)
            }
        }
    }

    /// A file that grew while being read would be silently cut: refuse that.
    fn check_end(&mut self) -> Result<()> {
        if let SourceReader::File { file, path, size } = self {
            let mut probe = [0u8; 1];
            let n = file
                .read(&mut probe)
                .map_err(|source| SquashfsError::ReadSource {
                    path: path.to_path_buf(),
                    source,
                })?;
            if n != 0 {
                return Err(SquashfsError::SourceChanged {
                    path: path.to_path_buf(),
                    expected: *size,
                });
            }
        }
        Ok(())
    }
}

fn inode_ref((block, offset): (u64, u16)) -> u64 {
    (block << 16) | u64::from(offset)
}

fn inode_header(buf: &mut Vec<u8>, ty: u16, node: &Node<'_>) {
    buf.extend_from_slice(&ty.to_le_bytes());
    buf.extend_from_slice(&node.mode.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes()); // uid index
    buf.extend_from_slice(&0u16.to_le_bytes()); // gid index
    buf.extend_from_slice(&node.mtime.to_le_bytes());
    buf.extend_from_slice(&node.ino.to_le_bytes());
}

/// Writes the inodes below `dir` (post-order: children first, since the directory listing
/// needs their references), then its listing, then its own inode. Returns its reference.
fn write_dir_inode(
    dir: &Node<'_>,
    parent_ino: u32,
    data: &[FileData],
    inodes: &mut MetadataWriter,
    dirs: &mut MetadataWriter,
) -> Result<u64> {
    let Kind::Dir(children) = &dir.kind else {
        unreachable!("write_dir_inode is only called on directories");
    };
    let mut listed: Vec<(&[u8], u64, u32, u16)> = Vec::with_capacity(children.len());
    let mut subdirs = 0u32;
    for child in children {
        let mut buf = Vec::new();
        let (reference, ty) = match &child.kind {
            Kind::Dir(_) => {
                subdirs += 1;
                let r = write_dir_inode(child, dir.ino, data, inodes, dirs)?;
                (r, inode_type::DIR)
            }
            Kind::Symlink(target) => {
                inode_header(&mut buf, inode_type::SYMLINK, child);
                buf.extend_from_slice(&1u32.to_le_bytes());
                buf.extend_from_slice(&(target.len() as u32).to_le_bytes());
                buf.extend_from_slice(target);
                let r = inode_ref(inodes.position());
                inodes.write(&buf)?;
                (r, inode_type::SYMLINK)
            }
            Kind::File { size, id, .. } => {
                let fd = &data[*id];
                let (frag, frag_offset) = fd.fragment.unwrap_or((NO_FRAGMENT, 0));
                let extended = *size > u64::from(u32::MAX)
                    || fd.blocks_start > u64::from(u32::MAX)
                    || fd.sparse > 0;
                if extended {
                    inode_header(&mut buf, inode_type::EXT_FILE, child);
                    buf.extend_from_slice(&fd.blocks_start.to_le_bytes());
                    buf.extend_from_slice(&size.to_le_bytes());
                    buf.extend_from_slice(&fd.sparse.to_le_bytes());
                    buf.extend_from_slice(&1u32.to_le_bytes()); // link count
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_offset.to_le_bytes());
                    buf.extend_from_slice(&NO_XATTR.to_le_bytes());
                } else {
                    inode_header(&mut buf, inode_type::FILE, child);
                    buf.extend_from_slice(&(fd.blocks_start as u32).to_le_bytes());
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_offset.to_le_bytes());
                    buf.extend_from_slice(&(*size as u32).to_le_bytes());
                }
                for word in &fd.block_sizes {
                    buf.extend_from_slice(&word.to_le_bytes());
                }
                let r = inode_ref(inodes.position());
                inodes.write(&buf)?;
                (r, inode_type::FILE)
            }
        };
        listed.push((&child.name, reference, child.ino, ty));
    }

    // The listing: runs of entries behind headers. A run shares the inode metadata block and
    // stays within 256 entries and an i16 inode-number delta.
    let (listing_block, listing_offset) = dirs.position();
    let mut listing = Vec::new();
    let mut i = 0;
    while i < listed.len() {
        let block = listed[i].1 >> 16;
        let base_ino = listed[i].2;
        let mut j = i;
        while j < listed.len()
            && j - i < DIR_HEADER_MAX_ENTRIES
            && listed[j].1 >> 16 == block
            && (i64::from(listed[j].2) - i64::from(base_ino)).abs() <= 32767
        {
            j += 1;
        }
        listing.extend_from_slice(&((j - i - 1) as u32).to_le_bytes());
        listing.extend_from_slice(&(block as u32).to_le_bytes());
        listing.extend_from_slice(&base_ino.to_le_bytes());
        for (name, reference, ino, ty) in &listed[i..j] {
            listing.extend_from_slice(&((reference & 0xffff) as u16).to_le_bytes());
            let delta = (i64::from(*ino) - i64::from(base_ino)) as i16;
            listing.extend_from_slice(&delta.to_le_bytes());
            listing.extend_from_slice(&ty.to_le_bytes());
            listing.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
            listing.extend_from_slice(name);
        }
        i = j;
    }
    dirs.write(&listing)?;

    // "." and ".." are not stored but counted in the size, as the kernel expects.
    let file_size = listing.len() as u64 + 3;
    let nlink = 2 + subdirs;
    let mut buf = Vec::new();
    if file_size <= u64::from(u16::MAX) {
        inode_header(&mut buf, inode_type::DIR, dir);
        buf.extend_from_slice(&(listing_block as u32).to_le_bytes());
        buf.extend_from_slice(&nlink.to_le_bytes());
        buf.extend_from_slice(&(file_size as u16).to_le_bytes());
        buf.extend_from_slice(&listing_offset.to_le_bytes());
        buf.extend_from_slice(&parent_ino.to_le_bytes());
    } else {
        // Big directory: extended inode, without a lookup index (readers scan linearly).
        inode_header(&mut buf, inode_type::EXT_DIR, dir);
        buf.extend_from_slice(&nlink.to_le_bytes());
        buf.extend_from_slice(&(file_size as u32).to_le_bytes());
        buf.extend_from_slice(&(listing_block as u32).to_le_bytes());
        buf.extend_from_slice(&parent_ino.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes()); // index count
        buf.extend_from_slice(&listing_offset.to_le_bytes());
        buf.extend_from_slice(&NO_XATTR.to_le_bytes());
    }
    let r = inode_ref(inodes.position());
    inodes.write(&buf)?;
    Ok(r)
}
