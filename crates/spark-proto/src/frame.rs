//! Framing: the header every message travels in, [`check`] for stream readers, and the
//! [`encode`]/[`decode`] entry points that dispatch on the message type.

use crate::batch::ReadingsBatch;
use crate::bits::{VarintError, get_varint, put_varint, varint_len};
use crate::error::{DecodeError, EncodeError};
use crate::message::{Ack, Command, CommandResult, Event, Hello, Nack, Ping, Pong, Welcome};
use crate::roster::Roster;
use deku::{DekuContainerRead, DekuContainerWrite, DekuError};

/// First byte of every frame (`'S'`). Lets a reader notice at once that a stream is not Spark
/// (a TLS-terminating proxy talking HTTP, a desynchronised stream).
pub const MAGIC: u8 = 0x53;
/// Second byte of every frame: the framing version. Bumped only for an incompatible change of the
/// header itself; message semantics are versioned by [`crate::Hello`]/[`crate::Welcome`].
pub const FRAME_VERSION: u8 = 0x01;
/// Largest payload a frame may announce (1 MiB). Checked before anything is allocated, so a
/// hostile or corrupted length costs nothing. A roster of [`crate::MAX_METERS`] meters fits.
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// The length varint is at most 3 bytes (21 bits ≥ [`MAX_FRAME_LEN`]).
const MAX_LEN_BYTES: usize = 3;
/// Longest header: magic, version, type, 3-byte length.
pub const MAX_HEADER_LEN: usize = 3 + MAX_LEN_BYTES;

/// The type byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Hello = 0x01,
    Welcome = 0x02,
    Roster = 0x03,
    ReadingsBatch = 0x04,
    Ack = 0x05,
    Nack = 0x06,
    Ping = 0x07,
    Pong = 0x08,
    Event = 0x09,
    Command = 0x0a,
    CommandResult = 0x0b,
}

impl MessageType {
    /// All types, in type-byte order.
    pub const ALL: [MessageType; 11] = [
        MessageType::Hello,
        MessageType::Welcome,
        MessageType::Roster,
        MessageType::ReadingsBatch,
        MessageType::Ack,
        MessageType::Nack,
        MessageType::Ping,
        MessageType::Pong,
        MessageType::Event,
        MessageType::Command,
        MessageType::CommandResult,
    ];

    /// The type for a type byte, if known.
    pub fn from_byte(b: u8) -> Option<MessageType> {
        MessageType::ALL.into_iter().find(|t| *t as u8 == b)
    }
}

impl std::fmt::Display for MessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Every message of the protocol. Direction: G = gateway → cloud, C = cloud → gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// G: opens a connection.
    Hello(Hello),
    /// C: accepts it.
    Welcome(Welcome),
    /// G: the gateway's meter list; a meter's position is its index in batches.
    Roster(Roster),
    /// G: meter readings, compactly encoded.
    ReadingsBatch(ReadingsBatch),
    /// C: cumulative acknowledgement.
    Ack(Ack),
    /// C: refusal with a code.
    Nack(Nack),
    /// Either: keep-alive.
    Ping(Ping),
    /// Either: keep-alive answer.
    Pong(Pong),
    /// G: health and meter alarms.
    Event(Event),
    /// C: update available, set config, reboot.
    Command(Command),
    /// G: outcome of a command.
    CommandResult(CommandResult),
}

impl Message {
    /// The frame type byte this message travels under.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Welcome(_) => MessageType::Welcome,
            Message::Roster(_) => MessageType::Roster,
            Message::ReadingsBatch(_) => MessageType::ReadingsBatch,
            Message::Ack(_) => MessageType::Ack,
            Message::Nack(_) => MessageType::Nack,
            Message::Ping(_) => MessageType::Ping,
            Message::Pong(_) => MessageType::Pong,
            Message::Event(_) => MessageType::Event,
            Message::Command(_) => MessageType::Command,
            Message::CommandResult(_) => MessageType::CommandResult,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub msg_type: MessageType,
    /// Payload length in bytes (≤ [`MAX_FRAME_LEN`]).
    pub payload_len: usize,
    /// Header length in bytes (4..=6).
    pub header_len: usize,
}

impl Header {
    /// Parses the header at the front of `buf` without looking at the payload.
    pub fn parse(buf: &[u8]) -> Result<Header, DecodeError> {
        let Some(&magic) = buf.first() else {
            return Err(DecodeError::Incomplete);
        };
        if magic != MAGIC {
            return Err(DecodeError::BadMagic { found: magic });
        }
        let Some(&version) = buf.get(1) else {
            return Err(DecodeError::Incomplete);
        };
        if version != FRAME_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let Some(&ty) = buf.get(2) else {
            return Err(DecodeError::Incomplete);
        };
        let msg_type = MessageType::from_byte(ty).ok_or(DecodeError::UnknownType { found: ty })?;
        let len_field = &buf[3..];
        let (len, n) = match get_varint(&len_field[..len_field.len().min(MAX_LEN_BYTES)]) {
            Ok(v) => v,
            // Fewer than 3 bytes available and still a continuation bit: wait for more.
            Err(VarintError::Truncated) if len_field.len() < MAX_LEN_BYTES => {
                return Err(DecodeError::Incomplete);
            }
            Err(_) => return Err(DecodeError::BadLength),
        };
        if len > MAX_FRAME_LEN as u64 {
            return Err(DecodeError::FrameTooLong { len });
        }
        Ok(Header {
            msg_type,
            payload_len: len as usize,
            header_len: 3 + n,
        })
    }
}

/// Checks that `buf` starts with one complete, well-formed frame header and its whole payload,
/// without allocating or decoding the payload. Returns the frame length (header + payload), or
/// [`DecodeError::Incomplete`] when more bytes are needed; any other error is fatal for the
/// connection. A tokio `Decoder` calls this on its read buffer before [`decode`].
pub fn check(buf: &[u8]) -> Result<usize, DecodeError> {
    let h = Header::parse(buf)?;
    let total = h.header_len + h.payload_len;
    if buf.len() < total {
        return Err(DecodeError::Incomplete);
    }
    Ok(total)
}

/// Appends `msg` as one frame to `out`. On error nothing is appended.
pub fn encode(msg: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let ty = msg.message_type();
    let payload = match msg {
        Message::Hello(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Welcome(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Ack(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Nack(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Ping(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Pong(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Event(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Command(m) => deku_bytes(ty, m.to_bytes())?,
        Message::CommandResult(m) => deku_bytes(ty, m.to_bytes())?,
        Message::Roster(m) => {
            let mut p = Vec::new();
            m.encode_payload(&mut p)?;
            p
        }
        Message::ReadingsBatch(m) => {
            let mut p = Vec::with_capacity(64 + m.intervals.len() * m.roster_len as usize * 2);
            m.encode_payload(&mut p)?;
            p
        }
    };
    if payload.len() > MAX_FRAME_LEN {
        return Err(EncodeError::FrameTooLong {
            msg_type: ty,
            len: payload.len(),
        });
    }
    out.reserve(3 + varint_len(payload.len() as u64) + payload.len());
    out.extend_from_slice(&[MAGIC, FRAME_VERSION, ty as u8]);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(&payload);
    Ok(())
}

fn deku_bytes(
    msg_type: MessageType,
    r: Result<Vec<u8>, DekuError>,
) -> Result<Vec<u8>, EncodeError> {
    r.map_err(|e| EncodeError::Invalid {
        msg_type,
        field: "payload",
        reason: e.to_string(),
    })
}

/// Decodes the frame at the front of `buf`: the message and the number of bytes it used (the
/// caller advances its buffer by that much). Bytes after the frame are left alone; bytes inside
/// the frame that the message does not use are an error.
pub fn decode(buf: &[u8]) -> Result<(Message, usize), DecodeError> {
    let total = check(buf)?;
    let h = Header::parse(buf)?;
    let payload = &buf[h.header_len..total];
    let ty = h.msg_type;
    let msg = match ty {
        MessageType::Hello => Message::Hello(deku_decode(ty, payload)?),
        MessageType::Welcome => Message::Welcome(deku_decode(ty, payload)?),
        MessageType::Ack => Message::Ack(deku_decode(ty, payload)?),
        MessageType::Nack => Message::Nack(deku_decode(ty, payload)?),
        MessageType::Ping => Message::Ping(deku_decode(ty, payload)?),
        MessageType::Pong => Message::Pong(deku_decode(ty, payload)?),
        MessageType::Event => Message::Event(deku_decode(ty, payload)?),
        MessageType::Command => Message::Command(deku_decode(ty, payload)?),
        MessageType::CommandResult => Message::CommandResult(deku_decode(ty, payload)?),
        MessageType::Roster => Message::Roster(Roster::decode_payload(payload)?),
        MessageType::ReadingsBatch => {
            Message::ReadingsBatch(ReadingsBatch::decode_payload(payload)?)
        }
    };
    Ok((msg, total))
}

fn deku_decode<'a, T: DekuContainerRead<'a>>(
    msg_type: MessageType,
    payload: &'a [u8],
) -> Result<T, DecodeError> {
    match T::from_bytes((payload, 0)) {
        Ok(((rest, bit_offset), v)) => {
            // All our deku types are whole bytes, so the bit offset is always 0.
            debug_assert_eq!(bit_offset, 0);
            if rest.is_empty() {
                Ok(v)
            } else {
                Err(DecodeError::TrailingBytes {
                    msg_type,
                    count: rest.len(),
                })
            }
        }
        Err(DekuError::Incomplete(_)) => Err(DecodeError::Truncated {
            msg_type,
            field: "payload",
        }),
        Err(DekuError::IdVariantNotFound) => Err(DecodeError::Invalid {
            msg_type,
            field: "payload",
            reason: "unknown enum id".into(),
        }),
        Err(e) => Err(DecodeError::Invalid {
            msg_type,
            field: "payload",
            reason: e.to_string(),
        }),
    }
}

/// Reads the hand-written payloads: bounds-checked, each read names the field it was for.
pub(crate) struct Cursor<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    pub(crate) msg_type: MessageType,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8], msg_type: MessageType) -> Self {
        Self {
            buf,
            pos: 0,
            msg_type,
        }
    }

    pub(crate) fn varint(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        match get_varint(&self.buf[self.pos..]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(VarintError::Truncated) => Err(self.truncated(field)),
            Err(VarintError::Overflow) => Err(DecodeError::VarintOverflow {
                msg_type: self.msg_type,
                field,
            }),
        }
    }

    /// A varint that must fit `max` (inclusive).
    pub(crate) fn varint_max(&mut self, field: &'static str, max: u64) -> Result<u64, DecodeError> {
        let v = self.varint(field)?;
        if v > max {
            return Err(self.invalid(field, format!("{v} exceeds the maximum {max}")));
        }
        Ok(v)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.truncated(field))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.truncated(field))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated {
            msg_type: self.msg_type,
            field,
        }
    }

    pub(crate) fn invalid(&self, field: &'static str, reason: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            msg_type: self.msg_type,
            field,
            reason: reason.into(),
        }
    }

    /// Fails if anything is left in the payload.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        let left = self.buf.len() - self.pos;
        if left != 0 {
            return Err(DecodeError::TrailingBytes {
                msg_type: self.msg_type,
                count: left,
            });
        }
        Ok(())
    }
}
