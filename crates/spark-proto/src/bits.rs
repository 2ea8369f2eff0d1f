//! Byte- and bit-level primitives of the hand-written parts of the codec: LEB128 varints, zigzag,
//! and the MSB-first bit writer/reader used for Rice-coded deltas.
//!
//! Every reader here is total: it returns `None`/an error on short or malformed input and never
//! panics or indexes out of bounds, because its input comes straight off the network.

/// Longest LEB128 encoding of a `u64` (10 × 7 bits ≥ 64).
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as an unsigned LEB128 varint (7 bits per byte, low group first, high bit = more).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes [`put_varint`] writes for `v`.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// More than 64 bits, or a non-minimal encoding (a trailing `0x00` group). Rejecting overlong
    /// forms keeps the encoding canonical: one value, one byte string.
    Overflow,
}

/// Reads an unsigned LEB128 varint from the front of `buf`: `(value, bytes used)`.
pub(crate) fn get_varint(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let group = u64::from(b & 0x7f);
        // The 10th byte may only carry the single remaining bit of a u64.
        if i == MAX_VARINT_LEN - 1 && b > 0x01 {
            return Err(VarintError::Overflow);
        }
        v |= group << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(VarintError::Overflow);
            }
            return Ok((v, i + 1));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Err(VarintError::Overflow)
    } else {
        Err(VarintError::Truncated)
    }
}

/// Zigzag maps signed to unsigned so small magnitudes of either sign stay short: 0,-1,1,-2 → 0,1,2,3.
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Writes bits MSB-first into whole bytes; [`BitWriter::finish`] pads the last byte with zeros.
pub(crate) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    /// Bits held in `acc` (always < 8 between calls).
    n: u32,
}

impl<'a> BitWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    /// Appends the low `width` bits of `v` (`width` ≤ 64), most significant first.
    pub(crate) fn put(&mut self, v: u64, width: u32) {
        if width > 56 {
            // Keep `acc` from overflowing: split wide fields.
            self.put(v >> 32, width - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        if width == 0 {
            return;
        }
        let v = v & ((1u64 << width) - 1);
        self.acc = (self.acc << width) | v;
        self.n += width;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// Appends `count` one-bits (a unary prefix).
    pub(crate) fn ones(&mut self, mut count: u32) {
        while count > 0 {
            let w = count.min(32);
            self.put((1u64 << w) - 1, w);
            count -= w;
        }
    }

    /// Flushes the partial byte, zero-padded.
    pub(crate) fn finish(self) {
        if self.n > 0 {
            self.out.push((self.acc << (8 - self.n)) as u8);
        }
    }
}

/// Reads bits MSB-first from a byte slice.
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Reads one bit; `None` past the end.
    pub(crate) fn bit(&mut self) -> Option<bool> {
        let byte = *self.buf.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(b == 1)
    }

    /// Reads `width` (≤ 64) bits as an unsigned number; `None` past the end.
    pub(crate) fn get(&mut self, width: u32) -> Option<u64> {
        if self.pos + width as usize > self.buf.len() * 8 {
            return None;
        }
        let mut v = 0u64;
        let mut left = width;
        while left > 0 {
            let byte = self.buf[self.pos / 8]; // in bounds: checked above
            let avail = 8 - (self.pos % 8) as u32;
            let take = avail.min(left);
            let chunk = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 {
                chunk
            } else {
                (v << take) | chunk
            };
            self.pos += take as usize;
            left -= take;
        }
        Some(v)
    }

    /// Counts one-bits up to a zero bit or `limit`, consuming them (and the zero, if seen).
    /// Returns `(count, saw_zero)`.
    pub(crate) fn unary(&mut self, limit: u32) -> Option<(u32, bool)> {
        let mut count = 0;
        while count < limit {
            if !self.bit()? {
                return Some((count, true));
            }
            count += 1;
        }
        Some((count, false))
    }

    /// Bytes consumed so far, counting a partial byte as whole; and whether its unused low bits
    /// are zero (padding must be zero so each batch has exactly one encoding).
    pub(crate) fn finish(&self) -> (usize, bool) {
        let used = self.pos.div_ceil(8);
        let rem = self.pos % 8;
        let pad_ok = rem == 0 || self.buf[self.pos / 8] & ((1u8 << (8 - rem)) - 1) == 0;
        (used, pad_ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(get_varint(&b), Ok((v, b.len())));
        }
    }

    #[test]
    fn varint_rejects_overlong_overflow_and_truncation() {
        assert_eq!(get_varint(&[0x80, 0x00]), Err(VarintError::Overflow));
        assert_eq!(get_varint(&[0xff; 10]), Err(VarintError::Overflow));
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(VarintError::Overflow)
        );
        assert_eq!(get_varint(&[0x80, 0x80]), Err(VarintError::Truncated));
        assert_eq!(get_varint(&[]), Err(VarintError::Truncated));
    }

    #[test]
    fn zigzag_small_magnitudes() {
        assert_eq!([0, -1, 1, -2].map(zigzag), [0, 1, 2, 3]);
        for v in [0, 5, -5, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn bits_round_trip() {
        let mut out = Vec::new();
        let mut w = BitWriter::new(&mut out);
        w.put(0b101, 3);
        w.ones(40);
        w.put(0, 1);
        w.put(u64::MAX, 64);
        w.put(0x1234, 13);
        w.finish();
        let mut r = BitReader::new(&out);
        assert_eq!(r.get(3), Some(0b101));
        assert_eq!(r.unary(64), Some((40, true)));
        assert_eq!(r.get(64), Some(u64::MAX));
        assert_eq!(r.get(13), Some(0x1234));
        assert_eq!(r.finish(), (out.len(), true));
        assert_eq!(r.get(64), None);
    }
}
