//! One gateway connection after the TLS handshake: the spark-proto session (see the crate docs
//! of `spark-proto` for the message flow and resync rules).
//!
//! Reading and committing alternate in one task. Every complete frame already buffered is
//! handled; sequenced messages (readings batches, events) collect into a group that is committed
//! in one transaction when the buffer runs dry (or the group is full), and one cumulative Ack
//! follows the commit. Only then is the socket read again, so read-ahead is bounded by one
//! buffer (at most one frame plus one read) and the kernel's socket buffers: a gateway that sends
//! faster than the database commits is slowed down by TCP, never queued in memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use spark_proto::{
    Ack, BootSlot, CodecContext, Command, CommandStatus, DecodeError, Event, ExpandError, Header,
    Message, Nack, NackCode, Pong, ReadingsBatch, Roster, Welcome,
};
use spark_tls::ServerStream;
use tokio::time::{Instant, timeout};
use tracing::{debug, error, info, warn};

use crate::error::StoreError;
use crate::hub::Registration;
use crate::server::{Shared, Shutdown};
use crate::store::{HelloRecord, Item, MAX_TS, MeterIds, meter_id_text};

/// Socket read size of a connection that drained its socket last time (an idle gateway, mostly).
const READ_IDLE: usize = 4096;
/// Read size while data keeps coming: many batches per read, so many per transaction.
const READ_BURST: usize = 64 * 1024;
/// Read size before the session is up (Hello, a small frame).
const READ_MIN: usize = 4096;
/// Sequenced messages committed in one transaction at most.
const MAX_GROUP_ITEMS: usize = 64;
/// Readings committed in one transaction at most (bounds the memory of a group).
const MAX_GROUP_READINGS: usize = 200_000;
/// Time allowed to say goodbye (a last Nack, TLS close_notify) to a gateway that may be gone.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The gateway closed the connection.
    Closed,
    Shutdown,
    /// A newer connection of the same gateway took over.
    Replaced,
    /// Nothing received for the idle timeout.
    Idle,
    /// The gateway sent something we refuse; closes the connection. The Nack code and reason
    /// go to the gateway before the close.
    Bad {
        code: NackCode,
        reason: String,
    },
    Io(std::io::Error),
    WriteTimeout,
    Store(StoreError),
}

impl End {
    fn bad(reason: impl Into<String>) -> End {
        End::Bad {
            code: NackCode::Malformed,
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for End {
    fn from(e: StoreError) -> End {
        End::Store(e)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the session of `gateway` (the CN of its verified client certificate) on an established
/// TLS stream to its end and closes the connection.
///
/// Memory: the session is built here, before any await, in an allocation of its own, and the
/// returned future holds a pointer to it. (An async fn keeps its arguments in its state *and*
/// the locals they are moved into, so taking the ~1.2 KB TLS stream by value would reserve it
/// twice for the life of the connection.) The closing steps are boxed too: an idle
/// connection's task then carries only the wait in `serve_frames`.
pub(crate) fn serve<'a>(
    shared: Arc<Shared>,
    stream: ServerStream,
    peer: SocketAddr,
    gateway: String,
    shutdown: &'a mut Shutdown,
) -> impl Future<Output = ()> + Send + 'a {
    let s = Box::new(Session {
        gateway,
        peer,
        stream,
        buf: BytesMut::new(),
        shared,
        codec: CodecContext::new(0, 0),
        roster: MeterIds::default(),
        next_seq: 1,
        committed: 0,
        ack_due: false,
        resend_requested: false,
        group: Vec::new(),
        group_readings: 0,
        last_touch: Instant::now(),
        heard_since_touch: false,
        last_frame: Instant::now(),
        last_read_filled: false,
    });
    serve_session(s, shutdown)
}

async fn serve_session(mut s: Box<Session>, shutdown: &mut Shutdown) {
    let mut registration = None;
    let end = s.run(shutdown, &mut registration).await;
    let (gw, peer) = (s.gateway.clone(), s.peer);
    match &end {
        End::Closed => info!(gateway = %gw, %peer, "gateway closed the connection"),
        End::Shutdown => info!(gateway = %gw, %peer, "closing connection: ingest is shutting down"),
        End::Replaced => {
            info!(gateway = %gw, %peer, "closing connection: the gateway connected again")
        }
        End::Idle => info!(gateway = %gw, %peer,
            "closing connection: nothing received for {}s", s.shared.config.idle_timeout.as_secs()),
        End::Bad { reason, .. } => warn!(gateway = %gw, %peer,
            "closing connection of gateway {gw}: {reason}; nothing of that frame was stored"),
        End::Io(e) => info!(gateway = %gw, %peer, "connection lost: {e}"),
        End::WriteTimeout => warn!(gateway = %gw, %peer,
            "closing connection: the gateway stopped reading (write timed out)"),
        End::Store(e) => error!(gateway = %gw, %peer,
            "closing connection: {e}; nothing uncommitted was acknowledged, the gateway will resend"),
    }
    // Best effort: tell the gateway why, then close TLS properly. It may already be gone.
    let goodbye = match end {
        End::Bad { code, reason } => Some((code, reason)),
        End::Store(_) => Some((NackCode::Busy, "database unavailable; retry later".into())),
        _ => None,
    };
    let _ = Box::pin(timeout(CLOSE_TIMEOUT, async {
        if let Some((code, reason)) = goodbye {
            let mut detail = reason;
            truncate_utf8(&mut detail, spark_proto::MAX_DETAIL_LEN);
            let _ = s
                .send(&Message::Nack(Nack {
                    seq: 0,
                    code,
                    detail,
                }))
                .await;
        }
        let _ = s.stream.shutdown().await;
    }))
    .await;
    if let Some(reg) = registration {
        s.shared.hub.unregister(&s.gateway, reg.id);
        // Commands queued for this connection never reached the gateway: say so.
        for cmd in reg.inbox.close() {
            match Box::pin(s.shared.store.command_undelivered(cmd.id, now())).await {
                Ok(Some(record)) => s.shared.hub.publish(record),
                Ok(None) => {}
                Err(e) => warn!(gateway = %s.gateway, command = cmd.id,
                    "cannot mark command undelivered: {e}"),
            }
        }
        if s.heard_since_touch
            && let Err(e) = Box::pin(s.shared.store.touch(&s.gateway, now())).await
        {
            warn!(gateway = %s.gateway, "cannot update last_seen: {e}");
        }
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

struct Session {
    gateway: String,
    peer: SocketAddr,
    stream: ServerStream,
    buf: BytesMut,
    shared: Arc<Shared>,
    codec: CodecContext,
    /// Meter ids of the stored roster, in order (index = meter index in batches).
    roster: MeterIds,
    /// The sequence number the next new message must have.
    next_seq: u64,
    /// Highest sequence number known committed.
    committed: u64,
    /// An Ack is owed (something committed, or a resend of committed messages arrived).
    ack_due: bool,
    /// A Nack asked the gateway to resend from `next_seq`: frames beyond it, already in flight,
    /// are dropped quietly instead of drawing a SequenceGap Nack each.
    resend_requested: bool,
    group: Vec<Item>,
    group_readings: usize,
    last_touch: Instant,
    heard_since_touch: bool,
    last_frame: Instant,
    /// The last read filled all the space it had: more is probably waiting in the socket.
    last_read_filled: bool,
}

impl Session {
    async fn run(
        &mut self,
        shutdown: &mut Shutdown,
        registration: &mut Option<Registration>,
    ) -> End {
        match self.run_inner(shutdown, registration).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn run_inner(
        &mut self,
        shutdown: &mut Shutdown,
        registration: &mut Option<Registration>,
    ) -> Result<std::convert::Infallible, End> {
        // Boxed, so the Hello, its records and the Welcome are freed once the session is up
        // instead of keeping their room in the task for the life of the connection.
        let inbox = Box::pin(self.open(shutdown, registration)).await?;
        self.serve_frames(shutdown, inbox).await
    }

    /// Hello → Welcome: registers the connection and returns its command inbox.
    async fn open(
        &mut self,
        shutdown: &mut Shutdown,
        registration: &mut Option<Registration>,
    ) -> Result<Arc<crate::hub::Inbox>, End> {
        let hello_timeout = self.shared.config.hello_timeout;
        let first = tokio::select! {
            biased;
            _ = shutdown.recv() => return Err(End::Shutdown),
            r = timeout(hello_timeout, self.read_message()) => match r {
                Ok(r) => r?,
                Err(_) => return Err(End::bad(format!(
                    "no Hello within {}s of the handshake", hello_timeout.as_secs()))),
            },
        };
        let Message::Hello(hello) = first else {
            return Err(End::Bad {
                code: NackCode::Rejected,
                reason: format!(
                    "{} before Hello (Hello must come first)",
                    first.message_type()
                ),
            });
        };
        let Some(version) = hello.negotiate() else {
            return Err(End::Bad {
                code: NackCode::UnsupportedVersion,
                reason: format!(
                    "no common protocol version: the gateway speaks {}..={}, ingest {}..={}",
                    hello.min_version,
                    hello.max_version,
                    spark_proto::MIN_PROTOCOL_VERSION,
                    spark_proto::PROTOCOL_VERSION
                ),
            });
        };
        let record = HelloRecord {
            firmware_version: hello.firmware_version.clone(),
            booted_slot: match hello.booted_slot {
                BootSlot::A => "A",
                BootSlot::B => "B",
            },
            protocol_version: version,
            capabilities: hello.capabilities.0,
            peer: self.peer.to_string(),
        };
        let start = Box::pin(self.shared.store.hello(&self.gateway, &record, now())).await?;
        self.last_touch = Instant::now();
        self.roster = MeterIds::new(&start.roster);
        self.codec = CodecContext::new(start.roster_version, self.roster.len() as u32);
        self.committed = start.last_committed_seq;
        // The gateway cannot resend what it already deleted (≤ its last ack), so a cloud
        // database that is behind (restored from a backup, say) must not wait for it.
        self.next_seq = self.committed.max(hello.last_acked_seq).saturating_add(1);
        let reg = registration.insert(self.shared.hub.register(&self.gateway, self.peer));
        let inbox = reg.inbox.clone();
        info!(gateway = %self.gateway, peer = %self.peer, firmware = %hello.firmware_version,
            slot = record.booted_slot, version, last_committed_seq = self.committed,
            gateway_last_acked = hello.last_acked_seq, roster_version = start.roster_version,
            "gateway connected");
        Box::pin(self.send(&Message::Welcome(Welcome {
            version,
            server_time: now(),
            config_version: start.config_version,
            roster_version: start.roster_version,
            last_committed_seq: self.committed,
        })))
        .await?;
        Ok(inbox)
    }

    /// Frames until the session ends: decode, handle, commit, Ack, then wait for the socket,
    /// a command, a replacement, shutdown or the idle timeout.
    async fn serve_frames(
        &mut self,
        shutdown: &mut Shutdown,
        inbox: Arc<crate::hub::Inbox>,
    ) -> Result<std::convert::Infallible, End> {
        loop {
            // The work between reads is boxed: the task of an idle connection then carries
            // only the waiting below, not the deepest state of handling a message.
            while let Some(msg) = self.decode_buffered()? {
                Box::pin(self.handle(msg)).await?;
                if self.group.len() >= MAX_GROUP_ITEMS || self.group_readings >= MAX_GROUP_READINGS
                {
                    Box::pin(self.flush()).await?;
                }
            }
            Box::pin(self.flush()).await?;
            Box::pin(self.maybe_touch()).await;

            // Read at least the rest of a frame whose header is in. Otherwise: after a read
            // that filled its space more is probably waiting, so read a lot (one transaction
            // for many batches); after one that drained the socket, read little. Nothing is
            // reserved before data arrives: an idle connection holds no read buffer at all,
            // here or in the TLS layer (spark_tls::ServerStream).
            let want = match Header::parse(&self.buf) {
                Ok(h) => (h.header_len + h.payload_len).saturating_sub(self.buf.len()),
                Err(_) => 0,
            };
            let read_size = if self.last_read_filled {
                want.max(READ_BURST)
            } else {
                want.max(READ_IDLE)
            };
            if self.buf.is_empty() {
                self.buf = BytesMut::new(); // give back what the last frames needed
            }
            let idle_deadline = self.last_frame + self.shared.config.idle_timeout;
            tokio::select! {
                biased;
                _ = shutdown.recv() => return Err(End::Shutdown),
                _ = inbox.replaced.notified() => return Err(End::Replaced),
                cmd = inbox.next() => Box::pin(self.deliver(cmd)).await?,
                r = self.stream.read_buf(&mut self.buf, read_size) => match r {
                    Ok(0) if self.buf.is_empty() => return Err(End::Closed),
                    Ok(0) => return Err(End::bad(format!(
                        "connection closed inside a frame ({} bytes of it received)", self.buf.len()))),
                    Ok(_) => self.last_read_filled = self.stream.read_filled(),
                    Err(e) => return Err(End::Io(e)),
                },
                _ = tokio::time::sleep_until(idle_deadline) => return Err(End::Idle),
            }
        }
    }

    /// The next message, reading from the socket as needed (used before the session is up).
    async fn read_message(&mut self) -> Result<Message, End> {
        loop {
            if let Some(m) = self.decode_buffered()? {
                return Ok(m);
            }
            match self.stream.read_buf(&mut self.buf, READ_MIN).await {
                Ok(0) if self.buf.is_empty() => return Err(End::Closed),
                Ok(0) => return Err(End::bad("connection closed inside a frame")),
                Ok(_) => {}
                Err(e) => return Err(End::Io(e)),
            }
        }
    }

    /// Decodes the frame at the front of the buffer, if it is complete. Anything malformed
    /// ends the session: after a framing error the stream cannot be trusted.
    fn decode_buffered(&mut self) -> Result<Option<Message>, End> {
        match spark_proto::decode(&self.buf) {
            Ok((msg, used)) => {
                self.buf.advance(used);
                self.last_frame = Instant::now();
                self.heard_since_touch = true;
                Ok(Some(msg))
            }
            Err(DecodeError::Incomplete) => Ok(None),
            Err(e) => Err(End::bad(format!("bad frame: {e}"))),
        }
    }

    async fn handle(&mut self, msg: Message) -> Result<(), End> {
        match msg {
            Message::ReadingsBatch(b) => self.on_batch(b).await,
            Message::Event(e) => self.on_event(e).await,
            Message::Roster(r) => {
                self.flush().await?;
                self.on_roster(r).await
            }
            Message::Ping(p) => {
                self.flush().await?;
                self.send(&Message::Pong(Pong { nonce: p.nonce })).await
            }
            Message::Pong(_) => Ok(()),
            Message::CommandResult(r) => self.on_result(r).await,
            Message::Hello(_) => Err(End::bad("a second Hello on one connection")),
            other @ (Message::Welcome(_)
            | Message::Ack(_)
            | Message::Nack(_)
            | Message::Command(_)) => Err(End::bad(format!(
                "{} is a cloud-to-gateway message",
                other.message_type()
            ))),
        }
    }

    /// Checks a sequenced message's number. `Ok(true)`: new, take it; `Ok(false)`: not to be
    /// stored (a resend of a committed one, or one after a gap, which was Nacked).
    async fn admit(&mut self, seq: u64, what: &str) -> Result<bool, End> {
        if seq == 0 || i64::try_from(seq).is_err() {
            return Err(End::bad(format!(
                "{what} with sequence number {seq} (valid: 1..2^63)"
            )));
        }
        if seq < self.next_seq {
            // Already committed (or in this group): a resend after a lost Ack. Ack again.
            debug!(gateway = %self.gateway, seq, "resent {what}: already stored");
            self.ack_due = true;
            return Ok(false);
        }
        if seq > self.next_seq {
            if !self.resend_requested {
                self.flush().await?;
                warn!(gateway = %self.gateway, seq, expected = self.next_seq,
                    "sequence gap: refusing {what} {seq} with SequenceGap");
                self.nack(
                    seq,
                    NackCode::SequenceGap,
                    format!("expected sequence {}", self.next_seq),
                )
                .await?;
                self.resend_requested = true;
            }
            return Ok(false);
        }
        self.resend_requested = false;
        Ok(true)
    }

    async fn on_batch(&mut self, batch: ReadingsBatch) -> Result<(), End> {
        let seq = batch.seq;
        let fresh = self.admit(seq, "readings batch").await?;
        if !fresh && seq > self.next_seq {
            // A gap (Nacked): the gateway resets and resends from our next sequence with a
            // sync batch, so drop our references too.
            self.codec.reset_session();
            return Ok(());
        }
        // Expand even a resend: its deltas move the codec context forward as the gateway's did.
        let samples = match self.codec.expand(&batch) {
            Ok(samples) => samples,
            Err(ExpandError::AwaitingSync { .. }) if !fresh => {
                // A resend built before the gateway learnt of our reset: drop it quietly (the
                // Nack that caused the reset makes the gateway resend it with the sync flag).
                debug!(gateway = %self.gateway, seq,
                    "dropping batch: awaiting the sync batch after a reset");
                return Ok(());
            }
            Err(e) => {
                self.flush().await?;
                warn!(gateway = %self.gateway, seq, "refusing readings batch: {e}");
                self.nack(seq, e.nack_code(), e.to_string()).await?;
                self.codec.reset_session();
                // Batches after it are in flight already; the gateway resends them after this.
                self.resend_requested = true;
                return Ok(());
            }
        };
        if !fresh {
            return Ok(());
        }
        if let Some(s) = samples.iter().find(|s| s.timestamp > MAX_TS) {
            return Err(End::bad(format!(
                "readings batch {seq}: timestamp {} of meter {} is after the year 9999",
                s.timestamp, s.meter
            )));
        }
        if let Some(s) = samples.iter().find(|s| i64::try_from(s.wh).is_err()) {
            return Err(End::bad(format!(
                "readings batch {seq}: register {} Wh of meter {} is beyond 2^63",
                s.wh, s.meter
            )));
        }
        self.group_readings += samples.len();
        self.group.push(Item::Readings { seq, samples });
        self.next_seq += 1;
        Ok(())
    }

    async fn on_event(&mut self, event: Event) -> Result<(), End> {
        if !self.admit(event.seq, "event").await? {
            return Ok(());
        }
        if event.time > MAX_TS {
            return Err(End::bad(format!(
                "event {}: time {} is after the year 9999",
                event.seq, event.time
            )));
        }
        self.next_seq += 1;
        self.group.push(Item::Event(event));
        Ok(())
    }

    async fn on_roster(&mut self, roster: Roster) -> Result<(), End> {
        let ids: Vec<String> = roster.meters.iter().map(|m| meter_id_text(m)).collect();
        let mut sorted: Vec<&String> = ids.iter().collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(End::Bad {
                code: NackCode::Rejected,
                reason: format!(
                    "roster version {} lists meter {} twice",
                    roster.version, w[0]
                ),
            });
        }
        Box::pin(
            self.shared
                .store
                .store_roster(&self.gateway, roster.version, &ids),
        )
        .await?;
        info!(gateway = %self.gateway, version = roster.version, meters = ids.len(), "roster stored");
        self.codec.set_roster(roster.version, ids.len() as u32);
        self.roster = MeterIds::new(&ids);
        Ok(())
    }

    async fn on_result(&mut self, r: spark_proto::CommandResult) -> Result<(), End> {
        let status = match r.status {
            CommandStatus::Accepted => "accepted",
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
        };
        match Box::pin(self.shared.store.command_result(
            &self.gateway,
            r.id,
            status,
            r.code,
            &r.detail,
            now(),
        ))
        .await?
        {
            Some(record) => {
                info!(gateway = %self.gateway, command = r.id, status, code = r.code,
                    detail = %r.detail, "command result");
                self.shared.hub.publish(record);
            }
            None => warn!(gateway = %self.gateway, command = r.id,
                "CommandResult for a command this gateway was never sent; ignored"),
        }
        Ok(())
    }

    async fn deliver(&mut self, cmd: Command) -> Result<(), End> {
        let id = cmd.id;
        if let Err(e) = self.send(&Message::Command(cmd)).await {
            match Box::pin(self.shared.store.command_undelivered(id, now())).await {
                Ok(Some(record)) => self.shared.hub.publish(record),
                Ok(None) => {}
                Err(e) => warn!(gateway = %self.gateway, command = id,
                    "cannot mark command undelivered: {e}"),
            }
            return Err(e);
        }
        info!(gateway = %self.gateway, command = id, "command sent");
        if let Err(e) = Box::pin(self.shared.store.command_delivered(id, now())).await {
            warn!(gateway = %self.gateway, command = id, "cannot record command delivery: {e}");
        }
        Ok(())
    }

    /// Commits the group, then sends the Ack it earned. Nothing is acknowledged before the
    /// database has committed it.
    async fn flush(&mut self) -> Result<(), End> {
        if !self.group.is_empty() {
            let items = std::mem::take(&mut self.group);
            self.group_readings = 0;
            let last = items.last().map_or(0, Item::seq);
            let outcome = Box::pin(self.shared.store.commit(
                &self.gateway,
                &items,
                &self.roster,
                now(),
            ))
            .await?;
            self.last_touch = Instant::now(); // the commit updated last_seen
            self.heard_since_touch = false;
            debug!(gateway = %self.gateway, through = last, stored = outcome.stored,
                duplicates = outcome.duplicates, readings = outcome.readings, "committed");
            self.committed = self.committed.max(last);
            self.ack_due = true;
        }
        if self.ack_due && self.committed > 0 {
            self.ack_due = false;
            self.send(&Message::Ack(Ack {
                seq: self.committed,
            }))
            .await?;
        }
        Ok(())
    }

    async fn nack(&mut self, seq: u64, code: NackCode, mut detail: String) -> Result<(), End> {
        truncate_utf8(&mut detail, spark_proto::MAX_DETAIL_LEN);
        self.send(&Message::Nack(Nack { seq, code, detail })).await
    }

    /// Writes `last_seen` when something was heard and the last write is old enough.
    async fn maybe_touch(&mut self) {
        if self.heard_since_touch
            && self.last_touch.elapsed() >= self.shared.config.last_seen_interval
        {
            self.last_touch = Instant::now();
            self.heard_since_touch = false;
            if let Err(e) = Box::pin(self.shared.store.touch(&self.gateway, now())).await {
                warn!(gateway = %self.gateway, "cannot update last_seen: {e}");
            }
        }
    }

    async fn send(&mut self, msg: &Message) -> Result<(), End> {
        let mut out = Vec::new();
        spark_proto::encode(msg, &mut out)
            .map_err(|e| End::bad(format!("cannot encode {}: {e}", msg.message_type())))?;
        match timeout(
            self.shared.config.write_timeout,
            self.stream.write_all(&out),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::WriteTimeout),
        }
    }
}
