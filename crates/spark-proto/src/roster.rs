//! The roster: the gateway's ordered meter list. Both sides index meters by position in it, which
//! is what lets a readings batch omit meter ids entirely.

use crate::bits::put_varint;
use crate::error::{DecodeError, EncodeError};
use crate::frame::{Cursor, MessageType};

/// Most meters one gateway's roster may hold.
pub const MAX_METERS: usize = 16_384;
/// Longest meter id in bytes (DIN 43863-5 server ids are 10 bytes, M-Bus addresses 8).
pub const MAX_METER_ID_LEN: usize = 32;

/// The gateway's meter list, version `version`. Sent whole (it changes rarely: a meter installed
/// or removed) whenever the gateway's roster version differs from the one in [`crate::Welcome`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Roster {
    /// Incremented by the gateway on every change. Batches name the version they were built for.
    pub version: u32,
    /// Meter ids; a meter's index here is its index in readings batches.
    pub meters: Vec<Vec<u8>>,
}

impl Roster {
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let ty = MessageType::Roster;
        if self.meters.len() > MAX_METERS {
            return Err(EncodeError::TooLong {
                msg_type: ty,
                field: "meters",
                len: self.meters.len(),
                max: MAX_METERS,
            });
        }
        put_varint(out, u64::from(self.version));
        put_varint(out, self.meters.len() as u64);
        let mut prev: &[u8] = &[];
        for id in &self.meters {
            if id.len() > MAX_METER_ID_LEN {
                return Err(EncodeError::TooLong {
                    msg_type: ty,
                    field: "meter id",
                    len: id.len(),
                    max: MAX_METER_ID_LEN,
                });
            }
            // Front coding: ids of one installation share long prefixes ("MTR0007-000123"), so
            // each id is the length of the prefix it shares with the previous one and the rest.
            let shared = id.iter().zip(prev).take_while(|(a, b)| a == b).count();
            out.push(shared as u8);
            out.push((id.len() - shared) as u8);
            out.extend_from_slice(&id[shared..]);
            prev = id;
        }
        Ok(())
    }

    pub(crate) fn decode_payload(payload: &[u8]) -> Result<Roster, DecodeError> {
        let mut c = Cursor::new(payload, MessageType::Roster);
        let version = c.varint_max("version", u64::from(u32::MAX))? as u32;
        let count = c.varint_max("meter count", MAX_METERS as u64)? as usize;
        // Each id takes at least two bytes: refuse a count the payload cannot hold before
        // reserving memory for it.
        if count > c.rest().len() / 2 {
            return Err(c.truncated("meter ids"));
        }
        let mut meters: Vec<Vec<u8>> = Vec::with_capacity(count);
        for _ in 0..count {
            let prev: &[u8] = meters.last().map_or(&[], |p| p.as_slice());
            let shared = usize::from(c.u8("meter id shared prefix")?);
            let len = usize::from(c.u8("meter id suffix length")?);
            if shared > prev.len() || shared + len > MAX_METER_ID_LEN {
                return Err(c.invalid(
                    "meter id length",
                    format!(
                        "prefix {shared} + suffix {len}: beyond the previous id or the maximum {MAX_METER_ID_LEN}"
                    ),
                ));
            }
            let suffix = c.bytes(len, "meter id")?;
            // Canonical: the shared prefix is the longest one.
            if suffix
                .first()
                .is_some_and(|&b| prev.get(shared) == Some(&b))
            {
                return Err(c.invalid("meter id shared prefix", "not the longest shared prefix"));
            }
            let mut id = Vec::with_capacity(shared + len);
            id.extend_from_slice(&prev[..shared]);
            id.extend_from_slice(suffix);
            meters.push(id);
        }
        c.finish()?;
        Ok(Roster { version, meters })
    }
}
