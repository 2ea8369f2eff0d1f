//! Block compression: zlib streams (squashfs calls them "gzip") through the pure-Rust zlib-rs.
//!
//! Deflate state is large (hundreds of KiB at level 9) and costly to set up, so each thread keeps
//! one compressor and one decompressor and resets them between blocks.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Result, SquashfsError};
use crate::format::{COMP_GZIP, compression_name};

/// How data and metadata blocks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// zlib (RFC 1950) streams, squashfs compression id 1. Level 1..=9.
    Gzip { level: u32 },
}

impl Default for Compression {
    /// gzip level 9, what `mksquashfs` uses when given no options.
    fn default() -> Self {
        Compression::Gzip { level: 9 }
    }
}

impl Compression {
    /// The superblock's compression id.
    pub fn id(self) -> u16 {
        match self {
            Compression::Gzip { .. } => COMP_GZIP,
        }
    }

    pub(crate) fn check(self) -> Result<()> {
        match self {
            Compression::Gzip { level } if (1..=9).contains(&level) => Ok(()),
            Compression::Gzip { level } => Err(SquashfsError::InvalidOptions(format!(
                "gzip level {level} is outside 1..=9"
            ))),
        }
    }

    /// Compresses `input`; `None` when the result would not be smaller (store it raw then,
    /// as mksquashfs does).
    pub(crate) fn compress(self, input: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Compression::Gzip { level } => deflate(level, input),
        }
    }
}

thread_local! {
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    static INFLATE: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

fn deflate(level: u32, input: &[u8]) -> Result<Option<Vec<u8>>> {
    if input.is_empty() {
        return Ok(None);
    }
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match &mut *slot {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            other => {
                *other = Some((level, Compress::new(flate2::Compression::new(level), true)));
                // Just stored above.
                &mut other.as_mut().expect("compressor just created").1
            }
        };
        // An output buffer one byte shorter than the input: if deflate cannot finish in it, the
        // block does not shrink and is stored raw.
        let mut out = Vec::with_capacity(input.len() - 1);
        let status = compressor
            .compress_vec(input, &mut out, FlushCompress::Finish)
            .map_err(|e| SquashfsError::Compress {
                algorithm: "gzip",
                message: e.to_string(),
            })?;
        Ok(match status {
            Status::StreamEnd if out.len() < input.len() => Some(out),
            _ => None,
        })
    })
}

/// Decompresses one block whose uncompressed size is at most `max_out`.
///
/// Returns a reason string on failure; callers wrap it into the error for their context.
pub(crate) fn decompress(id: u16, input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
    if id != COMP_GZIP {
        return Err(format!("{} is not supported", compression_name(id)));
    }
    INFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let inflater = slot.get_or_insert_with(|| Decompress::new(true));
        inflater.reset(true);
        // One spare byte so that "more output than allowed" is detectable.
        let mut out = Vec::with_capacity(max_out + 1);
        let status = inflater
            .decompress_vec(input, &mut out, FlushDecompress::Finish)
            .map_err(|e| format!("zlib stream is invalid: {e}"))?;
        if out.len() > max_out {
            return Err(format!("block inflates to more than {max_out} bytes"));
        }
        match status {
            Status::StreamEnd => Ok(out),
            _ => Err("zlib stream is truncated".to_string()),
        }
    })
}
