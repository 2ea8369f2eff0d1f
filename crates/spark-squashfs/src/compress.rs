//! Block compression: zlib streams (squashfs calls them "gzip") through the pure-Rust zlib-rs.
//!
//! Deflate state is large (hundreds of KiB at level 9) and costly to set up, so each thread keeps
//! one compressor and one decompressor and resets them between blocks.

use std::cell::RefCell;

use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

use crate::error::{Result, SquashfsError};
use crate::format::{COMP_GZIP, COMP_XZ, COMP_ZSTD, compression_name};

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
/// Reads gzip (zlib-rs), and, for images made by `mksquashfs -comp xz|zstd`, xz (lzma-rs) and
/// zstd (ruzstd). Returns a reason string on failure; callers wrap it into the error for their
/// context.
pub(crate) fn decompress(id: u16, input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
    match id {
        COMP_GZIP => inflate(input, max_out),
        COMP_XZ => {
            let mut out = Capped::new(max_out);
            lzma_rs::xz_decompress(&mut &input[..], &mut out)
                .map_err(|e| format!("xz stream is invalid: {e}"))?;
            Ok(out.buf)
        }
        COMP_ZSTD => {
            // ruzstd sizes its window from the frame header; refuse windows no squashfs block
            // needs before it allocates anything.
            zstd_window_ok(input, ZSTD_MAX_WINDOW)?;
            let mut source = input;
            let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut source)
                .map_err(|e| format!("zstd frame is invalid: {e}"))?;
            let mut out = Capped::new(max_out);
            std::io::copy(&mut decoder, &mut out)
                .map_err(|e| format!("zstd frame is invalid: {e}"))?;
            Ok(out.buf)
        }
        other => Err(format!("{} is not supported", compression_name(other))),
    }
}

/// Largest zstd window accepted (squashfs blocks are at most 1 MiB).
const ZSTD_MAX_WINDOW: u64 = 8 << 20;

/// Checks the window size announced by a zstd frame header (RFC 8878, section 3.1.1.1).
fn zstd_window_ok(input: &[u8], max: u64) -> Result<(), String> {
    let short = || "zstd frame header is truncated".to_string();
    if input.get(0..4) != Some(&[0x28, 0xb5, 0x2f, 0xfd][..]) {
        return Err("zstd frame magic is missing".into());
    }
    let descriptor = *input.get(4).ok_or_else(short)?;
    let single_segment = descriptor & 0x20 != 0;
    let window = if single_segment {
        let dict_id_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
        let fcs_len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
        let at = 5 + dict_id_len;
        let field = input.get(at..at + fcs_len).ok_or_else(short)?;
        let mut le = [0u8; 8];
        le[..fcs_len].copy_from_slice(field);
        let size = u64::from_le_bytes(le);
        if fcs_len == 2 { size + 256 } else { size }
    } else {
        let wd = *input.get(5).ok_or_else(short)?;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        base + (base / 8) * u64::from(wd & 7)
    };
    if window > max {
        return Err(format!(
            "zstd window of {window} bytes is larger than any squashfs block"
        ));
    }
    Ok(())
}

/// A `Write` into memory that refuses to grow past `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: usize,
}

impl Capped {
    fn new(max: usize) -> Self {
        Capped {
            buf: Vec::new(),
            max,
        }
    }
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.max {
            return Err(std::io::Error::other(format!(
                "block inflates to more than {} bytes",
                self.max
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn inflate(input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_incompressible_input() {
        let text = b"squashfs ".repeat(1000);
        let packed = Compression::default()
            .compress(&text)
            .expect("compress")
            .expect("text shrinks");
        assert_eq!(
            decompress(COMP_GZIP, &packed, text.len()).expect("inflate"),
            text
        );
        assert!(
            decompress(COMP_GZIP, &packed, text.len() - 1).is_err(),
            "cap enforced"
        );
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(
            Compression::default()
                .compress(&noise)
                .expect("compress")
                .is_none()
        );
    }

    #[test]
    fn zstd_window_check() {
        // Single segment, 1-byte content size 100.
        assert!(zstd_window_ok(&[0x28, 0xb5, 0x2f, 0xfd, 0x20, 100], 1 << 20).is_ok());
        // Window descriptor: 2^(10+31) bytes.
        assert!(zstd_window_ok(&[0x28, 0xb5, 0x2f, 0xfd, 0x00, 31 << 3], 1 << 20).is_err());
        assert!(zstd_window_ok(&[0x28, 0xb5, 0x2f, 0xfd], 1 << 20).is_err());
        assert!(zstd_window_ok(b"nope", 1 << 20).is_err());
    }
}
