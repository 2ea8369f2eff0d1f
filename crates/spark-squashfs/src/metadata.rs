//! Writing metadata blocks: the inode, directory, fragment and id tables are streams cut into
//! 8 KiB pieces, each stored behind a two-byte header.
//!
//! ```text
//! +----------------+-------------------------------+
//! | header: u16 LE | payload (header & 0x7fff bytes)|
//! +----------------+-------------------------------+
//!   bit 15 set: payload stored raw; clear: compressed. Payload inflates to <= 8192 bytes.
//! ```
//!
//! A position in such a table is "block start (bytes from table start to the block header)"
//! plus "offset in the uncompressed block"; an inode reference packs them as
//! `block_start << 16 | offset`.

use crate::compress::Compression;
use crate::error::Result;
use crate::format::{METADATA_SIZE, METADATA_UNCOMPRESSED};

/// Accumulates a metadata stream and cuts it into (compressed) blocks.
pub(crate) struct MetadataWriter {
    compression: Compression,
    pending: Vec<u8>,
    out: Vec<u8>,
    /// Byte offsets (in `out`) of every block written, for the table indexes.
    block_starts: Vec<u64>,
}

impl MetadataWriter {
    pub fn new(compression: Compression) -> Self {
        MetadataWriter {
            compression,
            pending: Vec::with_capacity(METADATA_SIZE * 2),
            out: Vec::new(),
            block_starts: Vec::new(),
        }
    }

    /// Where the next byte written will land: (block start, offset in block).
    pub fn position(&self) -> (u64, u16) {
        // `pending` is flushed whenever it reaches METADATA_SIZE, so it is shorter than 8192.
        (self.out.len() as u64, self.pending.len() as u16)
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= METADATA_SIZE {
            let rest = self.pending.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.pending, rest);
            self.emit(&block)?;
        }
        Ok(())
    }

    fn emit(&mut self, block: &[u8]) -> Result<()> {
        self.block_starts.push(self.out.len() as u64);
        match self.compression.compress(block)? {
            Some(c) => {
                // Compressed size < uncompressed size <= 8192, fits in 15 bits.
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let header = block.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(block);
            }
        }
        Ok(())
    }

    /// Flushes the last, partial block; returns the table bytes and the block offsets.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<u64>)> {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.emit(&block)?;
        }
        Ok((self.out, self.block_starts))
    }
}
