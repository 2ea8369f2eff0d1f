//! Spark's gateway ↔ cloud wire protocol: one codec, used by `spark-uplinkd` on the gateway and by
//! `spark-ingest` in the cloud. It runs inside one long-lived mutual-TLS TCP connection per gateway
//! over a metered, flaky 3G/EDGE link, so it is built for few bytes and for reconnects. The
//! specification for people is `docs/protocol.md`; this is the normative one.
//!
//! # Frame
//!
//! ```text
//!  0        1         2        3 ..≤5              ..
//! +--------+---------+--------+-------------------+------------------------+
//! | 0x53   | version | type   | length            | payload                |
//! | magic  | 0x01    | u8     | LEB128, 1–3 bytes | `length` bytes         |
//! +--------+---------+--------+-------------------+------------------------+
//! ```
//!
//! * `magic` 0x53 (`'S'`) and `version` 0x01 ([`FRAME_VERSION`], the framing version, not the
//!   protocol version, which [`Hello`]/[`Welcome`] negotiate).
//! * `type`: [`MessageType`]; an unknown type is [`DecodeError::UnknownType`] (fatal: the peer
//!   closes, since it cannot know the payload's meaning).
//! * `length` of the payload as an unsigned LEB128 varint, minimal encoding, at most 3 bytes and
//!   at most [`MAX_FRAME_LEN`] (1 MiB). [`check`] validates the header and waits for the whole frame
//!   ([`DecodeError::Incomplete`]) without allocating, so a `tokio_util` `Decoder` calls it on its
//!   buffer, then [`decode`], then advances by the returned length. A payload byte the message does
//!   not consume is [`DecodeError::TrailingBytes`].
//!
//! Header cost: 4 bytes for payloads < 128 bytes, 5 below 16 KiB, 6 above.
//!
//! # Messages
//!
//! Small messages are big-endian fixed-width fields (declared with deku); strings are a `u8`
//! length and UTF-8; blobs are a `u32` length and bytes, each with a cap checked before allocating.
//!
//! ```text
//! 0x01 Hello          G→C  max_version u16 | min_version u16 | firmware_version str(≤64)
//!                          | booted_slot u8 (0=A,1=B) | last_acked_seq u64 | capabilities u32
//!                          | roster_version u32
//! 0x02 Welcome        C→G  version u16 | server_time u64 | config_version u32 | roster_version u32
//!                          | last_committed_seq u64
//! 0x03 Roster         G→C  version varint | count varint (≤16384) | count × (shared u8 |
//!                          suffix_len u8 | suffix bytes): each id ≤32 bytes, front-coded against
//!                          the previous one (shared = the longest common prefix, checked)
//! 0x04 ReadingsBatch  G→C  see below
//! 0x05 Ack            C→G  seq u64                         (cumulative: everything ≤ seq committed)
//! 0x06 Nack           C→G  seq u64 | code u16 | detail str(≤255)
//! 0x07 Ping / 0x08 Pong    nonce u32                       (either direction)
//! 0x09 Event          G→C  seq u64 | time u64 | kind u8 | kind fields
//!                          0x01 Health: uptime_secs u32 | queue_len u32 | free_data_kib u32
//!                                       | rssi_dbm i8 | meters_seen u32
//!                          0x02 MeterAlarm: meter_index u32 | code u16
//!                          0x03 MeterLost: meter_index u32
//!                          0x04 Health2 (protocol ≥ 2): Health's fields | bytes_used_today u64
//! 0x0a Command        C→G  id u64 | kind u8 | kind fields
//!                          0x01 UpdateAvailable: manifest blob(≤64 KiB, signed release manifest, opaque)
//!                          0x02 SetConfig: config_version u32 | config blob(≤64 KiB)
//!                          0x03 Reboot: delay_secs u32
//! 0x0b CommandResult  G→C  id u64 | status u8 (0 accepted, 1 succeeded, 2 failed, 3 rejected)
//!                          | code u16 | detail str(≤255)
//! ```
//!
//! [`NackCode`]s are `u16`; unknown codes decode as [`NackCode::Unknown`] so a newer cloud never
//! breaks an older gateway.
//!
//! # Session
//!
//! ```text
//! gateway                                   cloud
//!   Hello(versions, fw, slot, last_acked_seq, caps, roster_version) ─▶
//!   ◀─ Welcome(version, server_time, config_version, roster_version, last_committed_seq)
//!      (or Nack UnsupportedVersion, close)
//!   Roster ─▶                               if the roster versions differ
//!   ReadingsBatch(seq n, sync) ─▶ ReadingsBatch(n+1) ─▶ Event(n+2) ─▶ …
//!   ◀─ Ack(n+2)                             cumulative, after the database commit
//!   ◀─ Command(id) … CommandResult(id) ─▶
//!   Ping ─▶ ◀─ Pong                         keep cellular NAT bindings alive
//! ```
//!
//! Readings batches and events share one per-gateway sequence space starting at 1: the gateway's
//! durable outgoing queue. The gateway deletes entries ≤ an [`Ack`]'s seq, and on reconnect resends
//! everything after `max(last acked, Welcome.last_committed_seq)`. The cloud deduplicates by
//! `(gateway, seq)`, so a resend after a lost ack stores nothing twice. The gateway's identity is its
//! client certificate, never a payload field.
//!
//! # Readings batches
//!
//! Both ends know the roster, so a meter is its position in it; timestamps follow the schedule
//! (`interval_start + i × interval_secs`) except where an offset says otherwise; registers are
//! integer Wh, sent as deltas against the meter's previous value, or as the error of predicting
//! that delta, Rice-coded per interval.
//!
//! ```text
//! flags u8 (bit0 sync) | seq varint | roster_version varint | roster_len varint (≤16384)
//! | interval_start varint (unix s) | interval_secs varint (>0) | interval_count varint (1..=96)
//! | interval_count × interval
//!
//! interval:
//! +-------+---------+----------+-------------+-------------+---------------------------+
//! | flags | [ratio] | presence | [registers] | offsets     | values                    |
//! +-------+---------+----------+-------------+-------------+---------------------------+
//!  flags u8: bits 0–1 presence mode, bit 2 absolute (keyframe), bit 3 scaled (not with bit 2),
//!            bit 4 window, others zero
//!  ratio:    scaled only: u16 big-endian, r/1024 (RATIO_ONE = 1024 = 1.0)
//!  presence: [window: first meter varint | length varint], then by mode, over the window's
//!    meters (indices relative to its first) or, without bit 4, over the whole roster:
//!    0 none      nothing (no meter reported)
//!    1 all-but   count varint, then the ABSENT meters as gaps (usual: a few missed reads)
//!    2 bitmap    ceil(roster_len/8) bytes, meter i = bit (i mod 8) of byte i/8; padding zero
//!    3 list      count varint, then the PRESENT meters as gaps (few meters reported)
//!    (gaps: first index, then index − previous − 1, varints. The encoder writes the shortest
//!    mode, with the window from the first to the last present meter if that is shorter: a
//!    batch cut by reading count holds the tail of one interval and the head of the next)
//!  registers (exceptions): delta intervals only: count varint, then per entry (increasing meter,
//!    a present meter): meter gap varint | absolute register varint
//!  offsets: count varint; if count > 0: kg << 4 | ko u8, then per entry (increasing meter, a
//!    present meter) Rice(meter gap, kg) Rice(zigzag(seconds), ko), MSB-first, zero-padded to a
//!    byte; seconds non-zero. The meter's value stays in `values`: a late read costs ~10 bits.
//!  values: one per present meter without a register entry, in meter order:
//!    absolute interval: varint registers
//!    delta interval:    k u8 (≤40), then Rice codes MSB-first, zero-padded to a byte:
//!                       Rice(v, k): q = v >> k; q < 16: q one-bits, a zero bit, the k low bits of v
//!                       else: 16 one-bits, (width(v) − 1) in 6 bits, v in width(v) bits (escape)
//!      not scaled: v = the meter's delta (register − previous register)
//!      scaled:     v = zigzag(delta − ⌊(p·r + 512) / 1024⌋) for a meter with a previous delta p
//!                  (see Codec context), v = delta for a meter without one
//! ```
//!
//! Deltas are unsigned: an import register never decreases, so a decrease is a reset or a
//! replaced meter and is sent as an absolute register. The escape keeps one commercial meter's
//! outlier from costing hundreds of unary bits.
//!
//! Households peak together, so the fleet-wide ratio `r ≈ Σ delta / Σ previous delta` follows the
//! day's load shape and the residuals are mostly the meters' own noise. The encoder builds both
//! forms of each delta interval and sends the scaled one when it is shorter including the ratio's
//! two bytes; it also picks `k` and the presence mode. `r = 1024` is plain second-order
//! prediction (delta minus previous delta).
//!
//! Canonical form: varints are minimal, padding is zero, counts must match, flags have no
//! unknown bits, and the decoder recomputes the presence section from the meters it found and
//! refuses any other mode or window than the encoder's; so a [`ReadingsBatch`] value has exactly
//! one byte encoding and the decoder accepts no other. The encoder's choices of scaled or not,
//! `r` and `k` are part of that value: the same readings could be sent as several valid batches, and the decoder accepts
//! each of them. Refusing all but the encoder's pick would need the codec context inside
//! `decode` and would tie every receiver to one encoder heuristic; nothing depends on a
//! canonical *readings → bytes* mapping (ingest deduplicates by sequence number, not bytes).
//!
//! Measured on a simulated day of 1000 meters × 96 intervals of the meter simulator
//! (`examples/ledger_bytes.rs` on `spark-meter-sim --seed 7`, 5 % late reads, 1 % missed, ±10 %
//! noise on shared load shapes): 0.984 frame bytes per reading sent one interval per batch,
//! 0.971 hourly (1.375 and 1.361 with plain deltas and 5-byte late-read exceptions), 1.011 in
//! 2048-reading chunks as spark-uplinkd cuts batches (1.109 without the presence window). On the
//! heavier-tailed day of `tests/bytes_per_reading.rs`: 1.150 and 1.136.
//!
//! # Codec context
//!
//! [`CodecContext`] is the state both ends keep for deltas: the roster version and length, and per
//! meter the last register value of this session, the scheduled time of that reading, and the
//! meter's previous delta: that register minus the one before it, if the one before was scheduled
//! exactly `interval_secs` earlier and was not higher. A reading scheduled at `T` is predicted
//! from the previous delta only if the meter's last reading was scheduled at `T − interval_secs`;
//! after a missed read, a gap between batches, a changed schedule, a reset, a session reset or a
//! roster change the meter has no previous delta and sends a plain delta, also in a scaled
//! interval. Both ends derive all of it from the registers and scheduled times they exchanged,
//! so it needs no bytes of its own. The gateway builds batches from plain
//! [`Sample`]s with [`CodecContext::build_batch`]; the cloud turns them back with
//! [`CodecContext::expand`]. Resynchronisation:
//!
//! * Both ends call [`CodecContext::reset_session`] on each new connection (the link drops often,
//!   the gateway may have rebooted). The next batch has the `sync` flag and no references, so its
//!   intervals are absolute keyframes until every reporting meter has a reference again.
//! * After a [`Nack`] of a batch both ends reset too. Until the resent, sync batch arrives, the
//!   cloud's [`CodecContext::expand`] refuses batches with [`ExpandError::AwaitingSync`] and
//!   ingest drops them without another Nack (TCP keeps order, so "until" is well defined).
//! * Every [`DEFAULT_KEYFRAME_EVERY`] intervals (daily) the encoder sends a whole interval absolute,
//!   which bounds any silent divergence to a day.
//! * A roster change ([`CodecContext::set_roster`]) drops references; a batch built for another
//!   roster version is refused ([`ExpandError::RosterMismatch`] → [`NackCode::RosterMismatch`]).
//!
//! Batches are built from the durable queue when sent, never stored encoded: a resend after a
//! reconnect is re-encoded against the new session.

mod batch;
pub(crate) mod bits;
mod context;
mod error;
mod frame;
mod message;
mod roster;

pub use batch::{
    Exception, IntervalReadings, MAX_INTERVALS_PER_BATCH, MAX_READINGS_PER_BATCH, RATIO_ONE,
    ReadingsBatch, TimeOffset,
};
pub use context::{BuildError, CodecContext, DEFAULT_KEYFRAME_EVERY, ExpandError, Sample};
pub use error::{DecodeError, EncodeError};
pub use frame::{
    FRAME_VERSION, Header, MAGIC, MAX_FRAME_LEN, MAX_HEADER_LEN, Message, MessageType, check,
    decode, encode,
};
pub use message::*;
pub use roster::{MAX_METER_ID_LEN, MAX_METERS, Roster};
