//! The radio module's serial protocol: how the meter concentrator (a radio module on a UART, or
//! [`crate::sim`] standing in for it) and meterd talk.
//!
//! The link is a byte stream (a tty or a Unix socket) that can drop bytes, flip bits or be cut
//! mid-frame, so every frame starts with a sync byte and ends with a CRC; a receiver that finds a
//! bad frame throws away the sync byte only and looks for the next one.
//!
//! # Frame
//!
//! ```text
//!  0      1      2      3      4 ........ 4+n    4+n    5+n
//! +------+------+-------------+-------------+-------------+
//! | 0xA5 | type | n (u16 LE)  | payload (n) | CRC (u16 LE)|
//! +------+------+-------------+-------------+-------------+
//!               \_____________ CRC covers ______________/
//!                (type, n and payload; not the sync byte)
//! ```
//!
//! CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final xor;
//! check value 0x29B1 for `"123456789"`). It catches every burst error of up to 16 bits, so any
//! single damaged byte is found. `n` is at most [`MAX_PAYLOAD`]; a longer length is damage. All
//! integers are little-endian. A meter id is `len (u8, 1..=32)` then that many bytes of UTF-8.
//!
//! # Frames from the module to the host
//!
//! ```text
//! 0x01 Status    | epoch u32 | acked u64 | newest u64 |
//! 0x02 MeterList | offset u16 | total u16 | id | id | ... |
//! 0x03 Reading   | seq u64 | timestamp u64 | wh u64 | flags u8 | id |
//! 0x04 Alarm     | timestamp u64 | code u16 | id |
//! ```
//!
//! - `Status` answers `Hello` and `Ping`. `epoch` is chosen when the module formats its flash
//!   (a replaced or wiped module has a new one); `acked` is the highest sequence number the
//!   module has had acknowledged; `newest` the highest it has assigned (0: none yet).
//! - `MeterList` is the roster of meters the module hears, split in chunks that fit a frame:
//!   ids `offset..offset+count` of `total`. Sent after `Status` on `Hello` and whenever the roster
//!   changes.
//! - `Reading`: `seq` numbers readings 1, 2, 3, ... in the order the module took them, per epoch,
//!   and is never reused. `timestamp` is when the meter took it (unix seconds); `wh` the
//!   cumulative import register. `flags`: bit 0 [`FLAG_REGISTER_RESET`] (the meter's register
//!   restarted, so it is lower than before), bit 1 [`FLAG_OFF_SCHEDULE`] (read late); other bits
//!   are reserved and ignored.
//! - `Alarm`: a meter event (tamper, power loss, ...), `code` as the meter reports it.
//!
//! # Frames from the host to the module
//!
//! ```text
//! 0x81 Hello  | version u8 (= 1) |
//! 0x82 Ack    | seq u64 |
//! 0x83 Resend | from u64 |
//! 0x84 Ping   | (empty) |
//! ```
//!
//! - `Hello` starts a session: the module answers `Status`, the whole `MeterList`, then every
//!   reading it holds that was not acknowledged, oldest first, then new ones as it takes them.
//! - `Ack(seq)` is cumulative: the host has stored every reading up to `seq` durably; the module
//!   may forget them. A module keeps unacknowledged readings in its own flash across power cuts,
//!   so a host that crashes before acking loses nothing: it sees them again and drops the ones it
//!   already has (`seq` ≤ the last it stored).
//! - `Resend(from)`: the host saw a gap (a damaged frame); the module rewinds and sends again
//!   from `from` (or its oldest unacknowledged reading, if later).
//! - `Ping`: the module answers `Status`. On a serial line nothing else tells the host that the
//!   module is gone, so meterd pings and calls the radio offline when no answer comes.

use std::fmt;

/// First byte of every frame.
pub const SYNC: u8 = 0xA5;
/// Largest payload a frame may carry (roster chunks are cut to fit).
pub const MAX_PAYLOAD: usize = 1024;
/// Longest meter id in bytes.
pub const MAX_METER_ID: usize = 32;
/// Protocol version the host sends in `Hello`.
pub const VERSION: u8 = 1;
/// Reading flag: the meter's register restarted from a low value.
pub const FLAG_REGISTER_RESET: u8 = 0x01;
/// Reading flag: the reading was taken off the schedule (late).
pub const FLAG_OFF_SCHEDULE: u8 = 0x02;

const HEADER: usize = 4;
const TRAILER: usize = 2;

/// Frame type bytes.
mod kind {
    pub const STATUS: u8 = 0x01;
    pub const METER_LIST: u8 = 0x02;
    pub const READING: u8 = 0x03;
    pub const ALARM: u8 = 0x04;
    pub const HELLO: u8 = 0x81;
    pub const ACK: u8 = 0x82;
    pub const RESEND: u8 = 0x83;
    pub const PING: u8 = 0x84;
}

/// One reading as the module reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RadioReading {
    pub seq: u64,
    pub meter_id: String,
    pub timestamp: u64,
    pub wh: u64,
    pub flags: u8,
}

/// One frame, either direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Status {
        epoch: u32,
        acked: u64,
        newest: u64,
    },
    MeterList {
        offset: u16,
        total: u16,
        ids: Vec<String>,
    },
    Reading(RadioReading),
    Alarm {
        meter_id: String,
        timestamp: u64,
        code: u16,
    },
    Hello {
        version: u8,
    },
    Ack {
        seq: u64,
    },
    Resend {
        from: u64,
    },
    Ping,
}

/// Why bytes from the link were thrown away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("{len} bytes of noise before a sync byte")]
    Noise { len: usize },
    #[error(
        "frame type {kind:#04x}: CRC {got:#06x} does not match {want:#06x} (damaged on the line)"
    )]
    Crc { kind: u8, got: u16, want: u16 },
    #[error(
        "frame type {kind:#04x} claims {len} payload bytes, more than {MAX_PAYLOAD} (damaged length)"
    )]
    TooLong { kind: u8, len: usize },
    #[error("unknown frame type {kind:#04x}")]
    UnknownType { kind: u8 },
    #[error("frame type {kind:#04x} has a bad payload: {reason}")]
    Payload { kind: u8, reason: &'static str },
    /// A reading the module meant to send (its CRC is right) that cannot be used, e.g. a meter
    /// id that is not UTF-8. Resending would bring the same bytes, so the host skips `seq`.
    #[error("reading {seq} from the module is unusable: {reason}")]
    UnusableReading { seq: u64, reason: &'static str },
    #[error("an incomplete frame was abandoned ({len} bytes; the line went quiet mid-frame)")]
    Stale { len: usize },
}

/// CRC-16/CCITT-FALSE of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

impl Frame {
    /// The type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Status { .. } => kind::STATUS,
            Frame::MeterList { .. } => kind::METER_LIST,
            Frame::Reading(_) => kind::READING,
            Frame::Alarm { .. } => kind::ALARM,
            Frame::Hello { .. } => kind::HELLO,
            Frame::Ack { .. } => kind::ACK,
            Frame::Resend { .. } => kind::RESEND,
            Frame::Ping => kind::PING,
        }
    }

    /// Appends the encoded frame to `out`.
    ///
    /// Panics if a meter id is empty or longer than [`MAX_METER_ID`], or a roster chunk does not
    /// fit [`MAX_PAYLOAD`]: those are the encoder's own mistakes (use [`meter_list_frames`]).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[SYNC, self.kind(), 0, 0]);
        match self {
            Frame::Status {
                epoch,
                acked,
                newest,
            } => {
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&acked.to_le_bytes());
                out.extend_from_slice(&newest.to_le_bytes());
            }
            Frame::MeterList { offset, total, ids } => {
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&total.to_le_bytes());
                for id in ids {
                    put_id(out, id);
                }
            }
            Frame::Reading(r) => {
                out.extend_from_slice(&r.seq.to_le_bytes());
                out.extend_from_slice(&r.timestamp.to_le_bytes());
                out.extend_from_slice(&r.wh.to_le_bytes());
                out.push(r.flags);
                put_id(out, &r.meter_id);
            }
            Frame::Alarm {
                meter_id,
                timestamp,
                code,
            } => {
                out.extend_from_slice(&timestamp.to_le_bytes());
                out.extend_from_slice(&code.to_le_bytes());
                put_id(out, meter_id);
            }
            Frame::Hello { version } => out.push(*version),
            Frame::Ack { seq } => out.extend_from_slice(&seq.to_le_bytes()),
            Frame::Resend { from } => out.extend_from_slice(&from.to_le_bytes()),
            Frame::Ping => {}
        }
        let len = out.len() - start - HEADER;
        assert!(
            len <= MAX_PAYLOAD,
            "frame payload of {len} bytes is too long"
        );
        // The assert above bounds len to MAX_PAYLOAD, which fits u16.
        out[start + 2..start + 4].copy_from_slice(&(len as u16).to_le_bytes());
        let crc = crc16(&out[start + 1..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// The encoded frame as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a payload of type `kind` (CRC already checked).
    fn decode_payload(kind: u8, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader {
            kind,
            data: payload,
        };
        let frame = match kind {
            kind::STATUS => Frame::Status {
                epoch: r.u32()?,
                acked: r.u64()?,
                newest: r.u64()?,
            },
            kind::METER_LIST => {
                let offset = r.u16()?;
                let total = r.u16()?;
                let mut ids = Vec::new();
                while !r.data.is_empty() {
                    ids.push(r.id()?);
                }
                if usize::from(offset) + ids.len() > usize::from(total) {
                    return Err(r.bad("roster chunk runs past the total"));
                }
                Frame::MeterList { offset, total, ids }
            }
            kind::READING => Frame::Reading(RadioReading {
                seq: r.u64()?,
                timestamp: r.u64()?,
                wh: r.u64()?,
                flags: r.u8()?,
                meter_id: r.id()?,
            }),
            kind::ALARM => Frame::Alarm {
                timestamp: r.u64()?,
                code: r.u16()?,
                meter_id: r.id()?,
            },
            kind::HELLO => Frame::Hello { version: r.u8()? },
            kind::ACK => Frame::Ack { seq: r.u64()? },
            kind::RESEND => Frame::Resend { from: r.u64()? },
            kind::PING => Frame::Ping,
            other => return Err(FrameError::UnknownType { kind: other }),
        };
        if !r.data.is_empty() {
            return Err(r.bad("trailing bytes"));
        }
        Ok(frame)
    }
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    assert!(
        (1..=MAX_METER_ID).contains(&id.len()),
        "meter id {id:?} must be 1..={MAX_METER_ID} bytes"
    );
    // Bounded by MAX_METER_ID just above.
    out.push(id.len() as u8);
    out.extend_from_slice(id.as_bytes());
}

/// The roster as `MeterList` frames, each within [`MAX_PAYLOAD`].
pub fn meter_list_frames(ids: &[String]) -> Vec<Frame> {
    let total = u16::try_from(ids.len()).unwrap_or(u16::MAX);
    let ids = &ids[..usize::from(total)];
    let mut frames = Vec::new();
    let mut start = 0;
    loop {
        let mut size = 4;
        let mut end = start;
        while end < ids.len() && size + 1 + ids[end].len() <= MAX_PAYLOAD {
            size += 1 + ids[end].len();
            end += 1;
        }
        frames.push(Frame::MeterList {
            // start < total, which is a u16.
            offset: start as u16,
            total,
            ids: ids[start..end].to_vec(),
        });
        if end >= ids.len() {
            return frames;
        }
        start = end;
    }
}

/// Bounds-checked little-endian reads over a payload.
struct Reader<'a> {
    kind: u8,
    data: &'a [u8],
}

impl Reader<'_> {
    fn bad(&self, reason: &'static str) -> FrameError {
        FrameError::Payload {
            kind: self.kind,
            reason,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let Some((head, rest)) = self.data.split_first_chunk::<N>() else {
            return Err(self.bad("payload too short"));
        };
        self.data = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    fn id(&mut self) -> Result<String, FrameError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > MAX_METER_ID {
            return Err(self.bad("meter id length out of 1..=32"));
        }
        if self.data.len() < len {
            return Err(self.bad("meter id runs past the payload"));
        }
        let (id, rest) = self.data.split_at(len);
        self.data = rest;
        // Ids are names: control characters would only break logs and meterd's roster file.
        if id.iter().any(|b| b.is_ascii_control()) {
            return Err(self.bad("meter id has control characters"));
        }
        String::from_utf8(id.to_vec()).map_err(|_| self.bad("meter id is not UTF-8"))
    }
}

/// Finds frames in a byte stream that may contain noise, damaged and torn frames.
///
/// Feed bytes with [`push`](Self::push), take frames with [`next_frame`](Self::next_frame) until
/// it returns `None`. Errors are reported (to be logged and counted) and decoding goes on: after a
/// bad frame the decoder drops only its sync byte and searches again, so a good frame that
/// follows a damaged length is not swallowed.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("buffered", &self.buffered())
            .finish()
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes read from the link.
    pub fn push(&mut self, bytes: &[u8]) {
        // Compact now and then rather than shifting the buffer for every frame.
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Gives up on a partial frame at the front (the line went quiet in the middle of it, e.g. a
    /// damaged length promised more bytes than will come): drops its sync byte so decoding
    /// resumes at the next one. Returns the error to report, if anything was held.
    pub fn abandon_partial(&mut self) -> Option<FrameError> {
        let len = self.buffered();
        if len == 0 {
            return None;
        }
        self.pos += 1;
        Some(FrameError::Stale { len })
    }

    /// The next frame or error, or `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        let data = &self.buf[self.pos..];
        if data.is_empty() {
            return None;
        }
        if data[0] != SYNC {
            let len = data.iter().position(|&b| b == SYNC).unwrap_or(data.len());
            self.pos += len;
            return Some(Err(FrameError::Noise { len }));
        }
        if data.len() < HEADER {
            return None;
        }
        let kind = data[1];
        let len = usize::from(u16::from_le_bytes([data[2], data[3]]));
        if len > MAX_PAYLOAD {
            self.pos += 1;
            return Some(Err(FrameError::TooLong { kind, len }));
        }
        let total = HEADER + len + TRAILER;
        if data.len() < total {
            return None;
        }
        let want = crc16(&data[1..HEADER + len]);
        let got = u16::from_le_bytes([data[HEADER + len], data[HEADER + len + 1]]);
        if got != want {
            self.pos += 1;
            return Some(Err(FrameError::Crc { kind, got, want }));
        }
        let payload = &data[HEADER..HEADER + len];
        let result = Frame::decode_payload(kind, payload).map_err(|e| match e {
            FrameError::Payload { reason, .. } if kind == kind::READING && len >= 8 => {
                let seq = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                FrameError::UnusableReading { seq, reason }
            }
            e => e,
        });
        // A frame whose CRC is right is what the sender meant, even if we cannot use it: skip
        // all of it, not just the sync byte.
        self.pos += total;
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading() -> Frame {
        Frame::Reading(RadioReading {
            seq: 0x0102,
            meter_id: "M1".into(),
            timestamp: 0x6000_0000,
            wh: 1234,
            flags: FLAG_OFF_SCHEDULE,
        })
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn golden_bytes() {
        let bytes = reading().to_bytes();
        let mut want = vec![0xA5, 0x03, 28, 0x00];
        want.extend_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]); // seq
        want.extend_from_slice(&[0, 0, 0, 0x60, 0, 0, 0, 0]); // timestamp
        want.extend_from_slice(&[0xD2, 0x04, 0, 0, 0, 0, 0, 0]); // wh 1234
        want.push(0x02); // flags
        want.extend_from_slice(&[2, b'M', b'1']);
        let crc = crc16(&want[1..]);
        want.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes, want);

        assert_eq!(
            Frame::Ack { seq: 7 }.to_bytes(),
            [0xA5, 0x82, 0x08, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0x45, 0x70]
        );
        assert_eq!(Frame::Ping.to_bytes(), [0xA5, 0x84, 0x00, 0x00, 0x06, 0x2B]);
    }

    #[test]
    fn round_trips() {
        let ids: Vec<String> = (0..100).map(|i| format!("METER-{i:026}")).collect();
        let mut frames = vec![
            reading(),
            Frame::Status {
                epoch: 9,
                acked: 5,
                newest: 10,
            },
            Frame::Alarm {
                meter_id: "X".repeat(32),
                timestamp: 1,
                code: 0xBEEF,
            },
            Frame::Hello { version: VERSION },
            Frame::Ack { seq: u64::MAX },
            Frame::Resend { from: 3 },
            Frame::Ping,
        ];
        let list = meter_list_frames(&ids);
        assert!(list.len() > 1, "100 long ids need several chunks");
        frames.extend(list.iter().cloned());
        let mut bytes = Vec::new();
        for f in &frames {
            f.encode(&mut bytes);
        }
        // Fed in awkward pieces: frames are found however the bytes arrive.
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in bytes.chunks(7) {
            dec.push(chunk);
            while let Some(f) = dec.next_frame() {
                got.push(f.unwrap());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(dec.buffered(), 0);
        let joined: Vec<String> = list
            .iter()
            .flat_map(|f| match f {
                Frame::MeterList { ids, .. } => ids.clone(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(joined, ids);
    }

    #[test]
    fn every_single_byte_damage_is_caught_and_the_next_frame_survives() {
        let good = reading().to_bytes();
        let next = Frame::Ack { seq: 42 }.to_bytes();
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut bytes = good.clone();
                bytes[i] ^= flip;
                bytes.extend_from_slice(&next);
                let mut dec = FrameDecoder::new();
                dec.push(&bytes);
                let mut frames = Vec::new();
                let mut errors = 0;
                loop {
                    match dec.next_frame() {
                        Some(Ok(f)) => frames.push(f),
                        Some(Err(_)) => errors += 1,
                        None => {
                            // A damaged length may wait for bytes that never come.
                            if dec.abandon_partial().is_none() {
                                break;
                            }
                            errors += 1;
                        }
                    }
                }
                assert!(errors > 0, "damage at byte {i} ({flip:#x}) went unnoticed");
                assert!(
                    !frames.contains(&reading()),
                    "damaged frame decoded at byte {i}"
                );
                assert_eq!(
                    frames.last(),
                    Some(&Frame::Ack { seq: 42 }),
                    "byte {i} ({flip:#x})"
                );
            }
        }
    }

    #[test]
    fn noise_and_bad_payloads_are_reported() {
        let mut dec = FrameDecoder::new();
        dec.push(&[1, 2, 3]);
        dec.push(&Frame::Ping.to_bytes());
        assert_eq!(dec.next_frame(), Some(Err(FrameError::Noise { len: 3 })));
        assert_eq!(dec.next_frame(), Some(Ok(Frame::Ping)));
        assert_eq!(dec.next_frame(), None);

        // Right CRC, unknown type.
        let mut raw = vec![SYNC, 0x55, 0, 0];
        let crc = crc16(&raw[1..]);
        raw.extend_from_slice(&crc.to_le_bytes());
        dec.push(&raw);
        assert_eq!(
            dec.next_frame(),
            Some(Err(FrameError::UnknownType { kind: 0x55 }))
        );

        // Right CRC, meter id not UTF-8.
        let mut raw = vec![SYNC, 0x04, 13, 0];
        raw.extend_from_slice(&[0; 10]);
        raw.extend_from_slice(&[2, 0xFF, 0xFE]);
        let crc = crc16(&raw[1..]);
        raw.extend_from_slice(&crc.to_le_bytes());
        dec.push(&raw);
        assert!(matches!(
            dec.next_frame(),
            Some(Err(FrameError::Payload { kind: 0x04, .. }))
        ));

        // Right CRC, a reading with a control character in its id: unusable, with its seq.
        let mut raw = Frame::Reading(RadioReading {
            seq: 9,
            meter_id: "A\u{7}".into(),
            timestamp: 1,
            wh: 2,
            flags: 0,
        })
        .to_bytes();
        dec.push(&raw);
        assert_eq!(
            dec.next_frame(),
            Some(Err(FrameError::UnusableReading {
                seq: 9,
                reason: "meter id has control characters"
            }))
        );
        raw.truncate(0);

        // Length over the limit.
        dec.push(&[SYNC, 0x03, 0xFF, 0xFF]);
        assert!(matches!(
            dec.next_frame(),
            Some(Err(FrameError::TooLong { .. }))
        ));
    }
}
