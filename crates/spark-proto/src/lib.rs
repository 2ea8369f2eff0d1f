//! Spark wire protocol (spec below).
mod batch;
pub(crate) mod bits;
mod context;
mod error;
mod frame;
mod message;
mod roster;

pub use batch::{
    Exception, IntervalReadings, MAX_INTERVALS_PER_BATCH, MAX_READINGS_PER_BATCH, ReadingsBatch,
};
pub use context::{BuildError, CodecContext, DEFAULT_KEYFRAME_EVERY, ExpandError, Sample};
pub use error::{DecodeError, EncodeError};
pub use frame::{
    FRAME_VERSION, Header, MAGIC, MAX_FRAME_LEN, MAX_HEADER_LEN, Message, MessageType, check,
    decode, encode,
};
pub use message::*;
pub use roster::{MAX_METER_ID_LEN, MAX_METERS, Roster};
