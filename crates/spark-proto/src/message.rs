//! The small, fixed-shape messages. Their bodies are declared with deku (big-endian, fixed-width
//! integers, `u8`-length strings, `u32`-length byte blobs with caps): they are rare on the wire
//! (a handful per connection), so clarity beats the last byte. The two bulky messages, the
//! roster and readings batches, are hand-written in [`crate::roster`] and [`crate::batch`].

use deku::ctx::Endian;
use deku::prelude::*;
use deku::writer::Writer;
use std::io::{Read, Seek, Write};

/// Longest firmware version string (`u8` length prefix; semver text fits easily).
pub const MAX_VERSION_LEN: usize = 64;
/// Longest human-readable detail in a [`Nack`] or [`CommandResult`].
pub const MAX_DETAIL_LEN: usize = 255;
/// Largest signed release manifest an [`CommandKind::UpdateAvailable`] may carry. The manifest is
/// opaque here (the `spark-release` crate defines it); the cap bounds what a gateway allocates.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;
/// Largest configuration document a [`CommandKind::SetConfig`] may carry.
pub const MAX_CONFIG_LEN: usize = 64 * 1024;

/// Protocol versions this build speaks, negotiated by [`Hello`]/[`Welcome`].
///
/// - 1: the first version.
/// - 2: adds [`EventKind::Health2`] (health with the link's bytes used today). A gateway sends
///   it only when the session's version is ≥ 2 ([`EventKind::for_version`]); everything else is
///   as in version 1.
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest protocol version this build still accepts from a peer.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Gateway → cloud, first message of every connection.
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Hello {
    /// Highest protocol version the gateway speaks.
    pub max_version: u16,
    /// Lowest protocol version the gateway speaks.
    pub min_version: u16,
    /// Running firmware version (semver text), e.g. `2026.11.3`.
    #[deku(
        reader = "read_str(deku::reader, MAX_VERSION_LEN)",
        writer = "write_str(deku::writer, &self.firmware_version, MAX_VERSION_LEN)"
    )]
    pub firmware_version: String,
    /// The A/B root filesystem slot the gateway booted from.
    pub booted_slot: BootSlot,
    /// Highest sequence number the gateway has seen acknowledged (0: none yet; sequences start at 1).
    pub last_acked_seq: u64,
    /// Optional features the gateway supports.
    pub capabilities: Capabilities,
    /// Version of the roster the gateway holds; the cloud compares it with its copy.
    pub roster_version: u32,
}

impl Hello {
    /// The protocol version to use with this gateway: the highest both sides speak, or `None`
    /// (answer [`Nack`] with [`NackCode::UnsupportedVersion`] and close).
    pub fn negotiate(&self) -> Option<u16> {
        let v = self.max_version.min(PROTOCOL_VERSION);
        (v >= self.min_version.max(MIN_PROTOCOL_VERSION)).then_some(v)
    }
}

/// Cloud → gateway, the answer to [`Hello`] when a common protocol version exists
/// (otherwise the cloud sends a [`Nack`] with [`NackCode::UnsupportedVersion`] and closes).
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Welcome {
    /// The protocol version both sides use from now on.
    pub version: u16,
    /// Cloud time, unix seconds: the gateway corrects its clock drift against it.
    pub server_time: u64,
    /// Version of the configuration the cloud wants the gateway to run; a differing gateway
    /// expects a [`CommandKind::SetConfig`].
    pub config_version: u32,
    /// Roster version the cloud holds for this gateway; if it differs from the gateway's, the
    /// gateway sends a [`crate::Roster`] before any readings.
    pub roster_version: u32,
    /// Highest sequence number the cloud has committed for this gateway. It may be ahead of
    /// [`Hello::last_acked_seq`] when an ack was lost with the link; the gateway drops those.
    pub last_committed_seq: u64,
}

/// The A/B slot a gateway booted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(id_type = "u8", ctx = "_endian: Endian")]
pub enum BootSlot {
    #[deku(id = 0x00)]
    A,
    #[deku(id = 0x01)]
    B,
}

/// Optional features, a bit set. Unknown bits are kept (a newer peer may set them) and ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "endian", ctx = "endian: Endian")]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// The gateway executes [`CommandKind::UpdateAvailable`] (has `spark-updated`).
    pub const UPDATES: Capabilities = Capabilities(1 << 0);
    /// The gateway sends [`Event`]s.
    pub const EVENTS: Capabilities = Capabilities(1 << 1);
    /// The gateway applies [`CommandKind::SetConfig`].
    pub const CONFIG: Capabilities = Capabilities(1 << 2);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        Capabilities(self.0 | rhs.0)
    }
}

/// Cloud → gateway: every message with sequence number ≤ `seq` ([`crate::ReadingsBatch`] and
/// [`Event`]) is durably committed; the gateway may delete them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Ack {
    pub seq: u64,
}

/// Cloud → gateway: the message with sequence `seq` (0 if the problem is not about a sequenced
/// message) was refused, for the machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Nack {
    pub seq: u64,
    #[deku(
        reader = "read_nack_code(deku::reader)",
        writer = "u16::from(self.code).to_writer(deku::writer, Endian::Big)"
    )]
    pub code: NackCode,
    /// For logs and people; never parsed.
    #[deku(
        reader = "read_str(deku::reader, MAX_DETAIL_LEN)",
        writer = "write_str(deku::writer, &self.detail, MAX_DETAIL_LEN)"
    )]
    pub detail: String,
}

/// Why the cloud refused something. On the wire a big-endian `u16`; codes this build does not
/// know decode as [`NackCode::Unknown`] so a newer cloud never breaks an older gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackCode {
    /// The frame or message could not be decoded. Gateway: reconnect.
    Malformed,
    /// No common protocol version (answer to [`Hello`]). Gateway: update firmware.
    UnsupportedVersion,
    /// A batch was encoded against another roster version. Gateway: send the [`crate::Roster`],
    /// then resend from `seq` with a sync batch.
    RosterMismatch,
    /// The cloud's codec context cannot expand the batch (a delta without a reference value).
    /// Gateway: reset its codec context and resend from `seq`; that batch has the sync flag.
    ResyncRequired,
    /// A sequence number went backwards or skipped. Gateway: resend from the cloud's
    /// committed sequence + 1.
    SequenceGap,
    /// The cloud is overloaded or its database is down. Gateway: back off, retry later.
    Busy,
    /// Some other, permanent refusal (see `detail`).
    Rejected,
    /// A code this build does not know.
    Unknown(u16),
}

impl From<u16> for NackCode {
    fn from(v: u16) -> Self {
        match v {
            0x0001 => NackCode::Malformed,
            0x0002 => NackCode::UnsupportedVersion,
            0x0003 => NackCode::RosterMismatch,
            0x0004 => NackCode::ResyncRequired,
            0x0005 => NackCode::SequenceGap,
            0x0006 => NackCode::Busy,
            0x0007 => NackCode::Rejected,
            other => NackCode::Unknown(other),
        }
    }
}

impl From<NackCode> for u16 {
    fn from(c: NackCode) -> u16 {
        match c {
            NackCode::Malformed => 0x0001,
            NackCode::UnsupportedVersion => 0x0002,
            NackCode::RosterMismatch => 0x0003,
            NackCode::ResyncRequired => 0x0004,
            NackCode::SequenceGap => 0x0005,
            NackCode::Busy => 0x0006,
            NackCode::Rejected => 0x0007,
            NackCode::Unknown(v) => v,
        }
    }
}

/// Keep-alive probe, either direction; the peer answers [`Pong`] with the same nonce. Cellular
/// NATs drop idle flows within minutes, so the gateway pings between readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Ping {
    pub nonce: u32,
}

/// Answer to [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Pong {
    pub nonce: u32,
}

/// Gateway → cloud: something happened. Events share the per-gateway sequence space with
/// readings batches (one durable outgoing queue, one cumulative [`Ack`]).
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Event {
    pub seq: u64,
    /// When it happened, unix seconds (gateway clock).
    pub time: u64,
    pub kind: EventKind,
}

/// What an [`Event`] reports.
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(id_type = "u8", endian = "endian", ctx = "endian: Endian")]
pub enum EventKind {
    /// Periodic gateway health.
    #[deku(id = 0x01)]
    Health {
        uptime_secs: u32,
        /// Messages waiting in the durable outgoing queue.
        queue_len: u32,
        /// Free space on `/data`, KiB.
        free_data_kib: u32,
        /// Cellular signal strength, dBm.
        rssi_dbm: i8,
        /// Meters heard from in the last schedule period.
        meters_seen: u32,
    },
    /// A meter raised an alarm (tamper, power loss, reverse flow, …).
    #[deku(id = 0x02)]
    MeterAlarm {
        /// Position of the meter in the roster.
        meter_index: u32,
        /// Alarm code as the meter reports it (vendor/OBIS specific, passed through).
        code: u16,
    },
    /// The radio lost contact with a meter for longer than the configured limit.
    #[deku(id = 0x03)]
    MeterLost { meter_index: u32 },
    /// [`EventKind::Health`] plus the cellular data the gateway used today (protocol version
    /// ≥ 2; on a version-1 session it is sent as `Health`, see [`EventKind::for_version`]).
    #[deku(id = 0x04)]
    Health2 {
        uptime_secs: u32,
        /// Messages waiting in the durable outgoing queue.
        queue_len: u32,
        /// Free space on `/data`, KiB.
        free_data_kib: u32,
        /// Cellular signal strength, dBm.
        rssi_dbm: i8,
        /// Meters heard from in the last schedule period.
        meters_seen: u32,
        /// Bytes sent plus received on the cloud link during the UTC day of the event's `time`
        /// (gateway clock): TLS records, handshakes included, as written to and read from the
        /// TCP socket; IP and TCP headers are not counted.
        bytes_used_today: u64,
    },
}

impl EventKind {
    /// The form of this event a session of protocol `version` can carry: [`EventKind::Health2`]
    /// becomes [`EventKind::Health`] (without `bytes_used_today`) below version 2, since a
    /// version-1 peer would refuse the unknown kind and close the connection.
    pub fn for_version(self, version: u16) -> EventKind {
        match self {
            EventKind::Health2 {
                uptime_secs,
                queue_len,
                free_data_kib,
                rssi_dbm,
                meters_seen,
                ..
            } if version < 2 => EventKind::Health {
                uptime_secs,
                queue_len,
                free_data_kib,
                rssi_dbm,
                meters_seen,
            },
            other => other,
        }
    }
}

/// Cloud → gateway: do something. The gateway answers with [`CommandResult`] carrying the same id.
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct Command {
    /// Cloud-assigned id, echoed in [`CommandResult`]; a gateway ignores an id it has executed.
    pub id: u64,
    pub kind: CommandKind,
}

/// The commands.
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(id_type = "u8", endian = "endian", ctx = "endian: Endian")]
pub enum CommandKind {
    /// A release is available: the signed release manifest, opaque here (`spark-release` parses
    /// and verifies it on the gateway; this crate only bounds its size).
    #[deku(id = 0x01)]
    UpdateAvailable {
        #[deku(
            reader = "read_blob(deku::reader, MAX_MANIFEST_LEN)",
            writer = "write_blob(deku::writer, manifest, MAX_MANIFEST_LEN)"
        )]
        manifest: Vec<u8>,
    },
    /// Apply this configuration document (TOML, owned by the daemons) as version `config_version`.
    #[deku(id = 0x02)]
    SetConfig {
        config_version: u32,
        #[deku(
            reader = "read_blob(deku::reader, MAX_CONFIG_LEN)",
            writer = "write_blob(deku::writer, config, MAX_CONFIG_LEN)"
        )]
        config: Vec<u8>,
    },
    /// Reboot after `delay_secs` (after flushing the outgoing queue).
    #[deku(id = 0x03)]
    Reboot { delay_secs: u32 },
}

/// Gateway → cloud: outcome of a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
pub struct CommandResult {
    pub id: u64,
    pub status: CommandStatus,
    /// Machine-readable detail of a failure (0 = none); meaning depends on the command.
    pub code: u16,
    #[deku(
        reader = "read_str(deku::reader, MAX_DETAIL_LEN)",
        writer = "write_str(deku::writer, &self.detail, MAX_DETAIL_LEN)"
    )]
    pub detail: String,
}

/// State of a command on the gateway. A long command (an update) reports `Accepted` first, then
/// `Succeeded` or `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, DekuRead, DekuWrite)]
#[deku(id_type = "u8", ctx = "_endian: Endian")]
pub enum CommandStatus {
    #[deku(id = 0x00)]
    Accepted,
    #[deku(id = 0x01)]
    Succeeded,
    #[deku(id = 0x02)]
    Failed,
    /// Refused without trying (unknown command, bad signature, already running).
    #[deku(id = 0x03)]
    Rejected,
}

fn read_nack_code<R: Read + Seek>(reader: &mut Reader<R>) -> Result<NackCode, DekuError> {
    Ok(NackCode::from(u16::from_reader_with_ctx(
        reader,
        Endian::Big,
    )?))
}

/// `u8` length, then that many bytes of UTF-8.
fn read_str<R: Read + Seek>(reader: &mut Reader<R>, max: usize) -> Result<String, DekuError> {
    let len = usize::from(u8::from_reader_with_ctx(reader, ())?);
    if len > max {
        return Err(DekuError::Parse(
            format!("string of {len} bytes over the cap of {max}").into(),
        ));
    }
    let mut buf = vec![0u8; len];
    reader.read_bytes(len, &mut buf, deku::ctx::Order::Msb0)?;
    String::from_utf8(buf).map_err(|_| DekuError::Parse("string is not UTF-8".into()))
}

fn write_str<W: Write + Seek>(
    writer: &mut Writer<W>,
    s: &str,
    max: usize,
) -> Result<(), DekuError> {
    if s.len() > max {
        return Err(DekuError::InvalidParam(
            format!("string of {} bytes over the cap of {max}", s.len()).into(),
        ));
    }
    (s.len() as u8).to_writer(writer, ())?; // fits: max ≤ 255
    writer.write_bytes(s.as_bytes())
}

/// Big-endian `u32` length, then that many bytes. The cap is checked before allocating.
fn read_blob<R: Read + Seek>(reader: &mut Reader<R>, max: usize) -> Result<Vec<u8>, DekuError> {
    let len = u32::from_reader_with_ctx(reader, Endian::Big)? as usize;
    if len > max {
        return Err(DekuError::Parse(
            format!("blob of {len} bytes over the cap of {max}").into(),
        ));
    }
    let mut buf = vec![0u8; len];
    reader.read_bytes(len, &mut buf, deku::ctx::Order::Msb0)?;
    Ok(buf)
}

fn write_blob<W: Write + Seek>(
    writer: &mut Writer<W>,
    b: &[u8],
    max: usize,
) -> Result<(), DekuError> {
    if b.len() > max {
        return Err(DekuError::InvalidParam(
            format!("blob of {} bytes over the cap of {max}", b.len()).into(),
        ));
    }
    (b.len() as u32).to_writer(writer, Endian::Big)?;
    writer.write_bytes(b)
}
