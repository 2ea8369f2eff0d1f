//! Typed decode errors. Each says which message type and which field failed, so the cloud can
//! log it and answer with the matching [`crate::NackCode`].

use crate::frame::MessageType;

/// Why bytes from the peer could not be decoded into a [`crate::Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not enough bytes yet for a whole frame: read more from the socket and try again. This is
    /// the only variant that is not a protocol violation.
    #[error("incomplete frame: need more bytes")]
    Incomplete,
    /// The first byte is not [`crate::MAGIC`]: the stream is not Spark, or it lost framing.
    #[error(
        "bad magic byte {found:#04x} (expected 0x53): not a Spark frame or the stream lost sync"
    )]
    BadMagic { found: u8 },
    /// The frame-format version is one this build does not speak.
    #[error(
        "unsupported frame version {found} (this build speaks {})",
        crate::FRAME_VERSION
    )]
    UnsupportedVersion { found: u8 },
    /// The type byte names no message this build knows.
    #[error("unknown message type {found:#04x}")]
    UnknownType { found: u8 },
    /// The length field is malformed (overlong or more than 3 bytes).
    #[error("malformed frame length field")]
    BadLength,
    /// The length field announces more than [`crate::MAX_FRAME_LEN`]; refused before allocating.
    #[error(
        "frame payload of {len} bytes exceeds the maximum of {} bytes",
        crate::MAX_FRAME_LEN
    )]
    FrameTooLong { len: u64 },
    /// The payload ended before `field` was complete.
    #[error("{msg_type}: payload truncated in {field}")]
    Truncated {
        msg_type: MessageType,
        field: &'static str,
    },
    /// A varint in `field` has more than 64 bits or a non-minimal encoding.
    #[error("{msg_type}: varint overflow or overlong encoding in {field}")]
    VarintOverflow {
        msg_type: MessageType,
        field: &'static str,
    },
    /// The payload decoded but `count` bytes were left over inside the frame.
    #[error("{msg_type}: {count} trailing bytes after the message")]
    TrailingBytes { msg_type: MessageType, count: usize },
    /// A field holds a value the protocol forbids (unknown enum id, over a length cap, bad UTF-8,
    /// inconsistent counts, non-zero padding).
    #[error("{msg_type}: invalid {field}: {reason}")]
    Invalid {
        msg_type: MessageType,
        field: &'static str,
        reason: String,
    },
}

/// Why a message could not be encoded (a caller bug: a value over a protocol cap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `field` is longer than its protocol cap.
    #[error("{msg_type}: {field} is {len} long, over the cap of {max}")]
    TooLong {
        msg_type: MessageType,
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// The encoded payload would exceed [`crate::MAX_FRAME_LEN`].
    #[error("{msg_type}: payload of {len} bytes exceeds the maximum frame length")]
    FrameTooLong { msg_type: MessageType, len: usize },
    /// A value is inconsistent with the rest of the message (e.g. a meter index ≥ roster length).
    #[error("{msg_type}: invalid {field}: {reason}")]
    Invalid {
        msg_type: MessageType,
        field: &'static str,
        reason: String,
    },
}
