//! The cloud link: one mutual-TLS connection to `spark-ingest` at a time, running the session of
//! spark-proto's docs, and reconnecting with jittered exponential backoff when it drops.
//!
//! ```text
//! connect ─▶ TLS (resumed when the cache has a ticket) ─▶ Hello ─▶ Welcome
//!   trim the queue through Welcome.last_committed_seq
//!   Roster, if the cloud's roster version differs
//!   send entries after max(acked, committed), at most `max-in-flight` unacknowledged,
//!   each encoded with the session's CodecContext when sent
//!   Ack n ─▶ trim through n         Nack ─▶ resync / roster / park / reconnect
//!   Command ─▶ forwarded; CommandResult when done
//!   Ping after `keepalive` of silence; no answer within `dead-peer-timeout` ─▶ reconnect
//! ```
//!
//! A batch the cloud calls `Malformed` (or `Rejected`) is *parked*: nothing at or after it is
//! sent again in this process, with a loud error, instead of resending it forever. It stays in
//! the queue; a restart (new firmware, say) tries it once more. The session stays up meanwhile
//! so commands (such as an update with the fix) still arrive.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use spark_proto::{
    Ack, BootSlot, Capabilities, CodecContext, CommandResult, DecodeError, EncodeError, Event,
    Hello, MIN_PROTOCOL_VERSION, Message, Nack, NackCode, PROTOCOL_VERSION, Ping, Pong, Welcome,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::commands::Commands;
use crate::config::Tunables;
use crate::counting::{Counted, Counters};
use crate::entry::Entry;
use crate::queue::Queue;
use crate::service::Status;
use crate::store::StoreError;

/// Frames are gathered into one TLS write up to this size (fewer TLS records on the link).
const WRITE_CHUNK: usize = 16 * 1024;
/// Entries read from the queue per step while filling the window.
const READ_STEP: usize = 16;
/// A session that lasted this long resets the backoff even without an Ack.
const STABLE_SESSION: Duration = Duration::from_secs(60);

/// What Hello says about the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloInfo {
    pub firmware_version: String,
    pub booted_slot: BootSlot,
}

/// Everything the link needs; [`Link::run`] consumes it.
pub struct Link {
    pub tls: Arc<ClientConfig>,
    /// `host:port` of the cloud.
    pub address: String,
    pub server_name: ServerName<'static>,
    pub hello: HelloInfo,
    pub handshake_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_in_flight: u32,
    pub queue: Arc<Mutex<Queue>>,
    /// Changes when entries are appended.
    pub head: watch::Receiver<u64>,
    pub status: watch::Sender<Status>,
    pub counters: Arc<Counters>,
    pub tunables: watch::Receiver<Tunables>,
    pub commands: Arc<Commands>,
    /// Results of commands, to send to the cloud.
    pub results: mpsc::Receiver<CommandResult>,
}

/// Why a session ended (logged; the link reconnects after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {address} failed: {source}")]
    Handshake {
        address: String,
        source: std::io::Error,
    },
    #[error("{what} timed out after {secs:.0} s")]
    Timeout { what: &'static str, secs: f64 },
    #[error("link I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("the cloud closed the connection")]
    Closed,
    #[error("undecodable frame from the cloud: {0}")]
    Decode(#[from] DecodeError),
    #[error("cannot encode {0}")]
    Encode(#[from] EncodeError),
    #[error("the cloud sent {got} {when}")]
    Unexpected {
        got: &'static str,
        when: &'static str,
    },
    #[error("the cloud refused (seq {seq}, {code:?}): {detail}")]
    Nack {
        seq: u64,
        code: NackCode,
        detail: String,
    },
    #[error("no answer from the cloud for {secs:.0} s (dead peer)")]
    DeadPeer { secs: f64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Link {
    /// Connects, runs sessions and reconnects until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut parked: Option<u64> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let started = Instant::now();
            let mut progressed = false;
            let result = self
                .session(&mut shutdown, &mut parked, &mut progressed)
                .await;
            self.status
                .send_if_modified(|s| std::mem::replace(&mut s.connected, false));
            match result {
                Ok(()) => return,
                Err(e) => {
                    if progressed || started.elapsed() >= STABLE_SESSION {
                        failures = 0;
                    }
                    let delay = backoff(self.backoff_min, self.backoff_max, failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cloud link down");
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One connection. `Ok` means shutdown was asked for.
    async fn session(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        parked: &mut Option<u64>,
        progressed: &mut bool,
    ) -> Result<(), SessionError> {
        let hs_timeout = self.handshake_timeout;
        let tls = tokio::time::timeout(hs_timeout, self.connect())
            .await
            .map_err(|_| SessionError::Timeout {
                what: "connect and TLS handshake",
                secs: hs_timeout.as_secs_f64(),
            })??;
        let kind = tls.get_ref().1.handshake_kind();
        tracing::debug!(?kind, address = %self.address, "TLS up");
        let (rd, wr) = tokio::io::split(tls);
        let (tx, mut rx) = mpsc::channel(16);
        let _reader = AbortOnDrop(tokio::spawn(read_frames(rd, tx)));
        let tun = self.tunables.borrow().clone();
        let mut w = Writer::new(wr, tun.dead_peer_timeout());

        let (local_acked, roster_version) = {
            let q = self.lock();
            (q.acked(), q.roster().version())
        };
        w.send(&Message::Hello(Hello {
            max_version: PROTOCOL_VERSION,
            min_version: MIN_PROTOCOL_VERSION,
            firmware_version: self.hello.firmware_version.clone(),
            booted_slot: self.hello.booted_slot,
            last_acked_seq: local_acked,
            capabilities: Capabilities::UPDATES | Capabilities::EVENTS | Capabilities::CONFIG,
            roster_version,
        }))
        .await?;
        let welcome = match tokio::time::timeout(hs_timeout, rx.recv()).await {
            Err(_) => {
                return Err(SessionError::Timeout {
                    what: "Welcome",
                    secs: hs_timeout.as_secs_f64(),
                });
            }
            Ok(None) => return Err(SessionError::Closed),
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(Message::Welcome(wel)))) => wel,
            Ok(Some(Ok(Message::Nack(n)))) => return Err(nack_error(n)),
            Ok(Some(Ok(other))) => {
                return Err(SessionError::Unexpected {
                    got: name(&other),
                    when: "instead of Welcome",
                });
            }
        };
        let mut acked = self.welcome(&welcome)?;
        if parked.is_some_and(|p| p <= acked) {
            *parked = None;
        }
        self.status.send_modify(|s| {
            s.connected = true;
            s.last_ack_seq = acked;
        });
        tracing::info!(
            address = %self.address,
            resumed = matches!(kind, Some(rustls::HandshakeKind::Resumed)),
            committed = welcome.last_committed_seq,
            acked,
            "cloud session up"
        );

        // The codec context of this session; Roster first if the cloud's copy differs.
        let mut ctx = {
            let q = self.lock();
            CodecContext::new(q.roster().version(), q.roster().len())
        };
        if welcome.roster_version != ctx.roster_version() {
            self.send_roster(&mut w, &mut ctx).await?;
        }

        let mut next = acked + 1;
        let mut ping: Option<u32> = None;
        let mut expect_since: Option<Instant> = None;
        loop {
            // Fill the window.
            let sent_any = self
                .fill(&mut w, &mut ctx, &mut next, acked, parked, welcome.version)
                .await?;
            if sent_any && expect_since.is_none() {
                expect_since = Some(Instant::now());
            }
            w.flush().await?;

            let tun = self.tunables.borrow().clone();
            w.timeout = tun.dead_peer_timeout();
            let keepalive_at = w.last_tx + tun.keepalive();
            let dead_at = expect_since.map(|t| t + tun.dead_peer_timeout());
            let wake_at = dead_at.map_or(keepalive_at, |d| d.min(keepalive_at));

            enum Wake {
                Shutdown,
                Frame(Option<Result<Message, SessionError>>),
                Appended,
                Result(Option<CommandResult>),
                Timer,
                Tunables,
            }
            let wake = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => Wake::Shutdown,
                m = rx.recv() => Wake::Frame(m),
                _ = changed(&mut self.head) => Wake::Appended,
                r = self.results.recv() => Wake::Result(r),
                _ = tokio::time::sleep_until(wake_at.into()) => Wake::Timer,
                _ = changed(&mut self.tunables) => Wake::Tunables,
            };
            match wake {
                Wake::Shutdown => {
                    // Unacknowledged entries stay in the queue; close_notify is a courtesy.
                    let _ = tokio::time::timeout(Duration::from_secs(2), w.wr.shutdown()).await;
                    return Ok(());
                }
                Wake::Appended | Wake::Tunables => {}
                Wake::Result(Some(r)) => {
                    w.send(&Message::CommandResult(r)).await?;
                }
                // All senders live in `Commands`, which outlives the link.
                Wake::Result(None) => {}
                Wake::Timer => {
                    let now = Instant::now();
                    if dead_at.is_some_and(|d| now >= d) {
                        return Err(SessionError::DeadPeer {
                            secs: tun.dead_peer_timeout().as_secs_f64(),
                        });
                    }
                    if now >= keepalive_at {
                        let nonce = rand::thread_rng().r#gen();
                        w.send(&Message::Ping(Ping { nonce })).await?;
                        ping = Some(nonce);
                        expect_since.get_or_insert(now);
                    }
                }
                Wake::Frame(None) => return Err(SessionError::Closed),
                Wake::Frame(Some(Err(e))) => return Err(e),
                Wake::Frame(Some(Ok(msg))) => {
                    match msg {
                        Message::Ack(Ack { seq }) => {
                            let seq = seq.min(next - 1);
                            if seq > acked {
                                acked = self.lock().ack(seq)?;
                                *progressed = true;
                                if parked.is_some_and(|p| p <= acked) {
                                    *parked = None;
                                }
                                let depth = self.lock().depth();
                                self.status.send_modify(|s| {
                                    s.last_ack_seq = acked;
                                    s.queue_depth = depth;
                                });
                            }
                        }
                        Message::Nack(n) => {
                            self.on_nack(n, &mut w, &mut ctx, &mut next, acked, parked)
                                .await?;
                        }
                        Message::Ping(Ping { nonce }) => {
                            w.send(&Message::Pong(Pong { nonce })).await?;
                        }
                        Message::Pong(Pong { nonce }) => {
                            if ping == Some(nonce) {
                                ping = None;
                            }
                        }
                        Message::Command(c) => {
                            tracing::info!(id = c.id, "command from the cloud");
                            self.commands.dispatch(c);
                        }
                        other => {
                            return Err(SessionError::Unexpected {
                                got: name(&other),
                                when: "during the session",
                            });
                        }
                    }
                    // Any frame shows the peer is alive; nothing outstanding stops the clock.
                    let outstanding = ping.is_some() || next - 1 > acked;
                    expect_since = outstanding.then(Instant::now);
                }
            }
        }
    }

    async fn connect(
        &self,
    ) -> Result<tokio_rustls::client::TlsStream<Counted<TcpStream>>, SessionError> {
        let tcp =
            TcpStream::connect(&self.address)
                .await
                .map_err(|source| SessionError::Connect {
                    address: self.address.clone(),
                    source,
                })?;
        // Frames are gathered before writing; Nagle would only delay Acks' answers.
        let _ = tcp.set_nodelay(true);
        let tcp = Counted::new(tcp, self.counters.clone());
        tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| SessionError::Handshake {
                address: self.address.clone(),
                source,
            })
    }

    /// Applies Welcome: trims what the cloud has committed. Returns the acked sequence.
    fn welcome(&self, welcome: &Welcome) -> Result<u64, SessionError> {
        let mut q = self.lock();
        let head = q.head();
        if welcome.last_committed_seq > head {
            // The cloud has sequence numbers this queue never wrote: /data was probably wiped.
            // New entries with those numbers would be taken for resends and dropped.
            tracing::error!(
                committed = welcome.last_committed_seq,
                head,
                "the cloud has committed more entries than this gateway ever queued; was /data reset? entries up to the cloud's number will be dropped by the cloud as duplicates"
            );
        }
        let acked = q.ack(welcome.last_committed_seq)?;
        let depth = q.depth();
        drop(q);
        self.status.send_modify(|s| s.queue_depth = depth);
        Ok(acked)
    }

    async fn send_roster<W: AsyncWrite + Unpin>(
        &self,
        w: &mut Writer<W>,
        ctx: &mut CodecContext,
    ) -> Result<(), SessionError> {
        let roster = self.lock().roster().to_message();
        tracing::info!(
            version = roster.version,
            meters = roster.meters.len(),
            "sending roster"
        );
        ctx.set_roster(roster.version, roster.meters.len() as u32);
        w.queue(&Message::Roster(roster))?;
        Ok(())
    }

    /// Sends entries from `next` while the window has room. Returns whether any was sent.
    async fn fill<W: AsyncWrite + Unpin>(
        &self,
        w: &mut Writer<W>,
        ctx: &mut CodecContext,
        next: &mut u64,
        acked: u64,
        parked: &mut Option<u64>,
        version: u16,
    ) -> Result<bool, SessionError> {
        let mut sent = false;
        loop {
            let head = self.lock().head();
            let window_end = acked.saturating_add(u64::from(self.max_in_flight.max(1)));
            let stop = parked.map_or(u64::MAX, |p| p - 1);
            let upto = head.min(window_end).min(stop);
            if *next > upto {
                return Ok(sent);
            }
            let want = ((upto - *next + 1) as usize).min(READ_STEP);
            let entries = self.lock().read_after(*next - 1, want, 1 << 20)?;
            if entries.is_empty() {
                return Ok(sent);
            }
            for (seq, entry) in entries {
                let msg = match entry {
                    Ok(Entry::Event(e)) => Message::Event(Event {
                        seq,
                        time: e.time,
                        // Queued in the newest form; a protocol-1 cloud gets the older one.
                        kind: e.kind.for_version(version),
                    }),
                    Ok(Entry::Readings(r)) => {
                        let roster_version = self.lock().roster().version();
                        if roster_version != ctx.roster_version() {
                            self.send_roster(w, ctx).await?;
                        }
                        match ctx.build_batch(seq, r.interval_start, r.interval_secs, &r.samples) {
                            Ok(b) => Message::ReadingsBatch(b),
                            Err(e) => {
                                park(parked, seq, &format!("cannot build its batch: {e}"));
                                return Ok(sent);
                            }
                        }
                    }
                    Err(e) => {
                        park(parked, seq, &e.to_string());
                        return Ok(sent);
                    }
                };
                if let Err(e) = w.queue(&msg) {
                    park(parked, seq, &format!("cannot encode it: {e}"));
                    return Ok(sent);
                }
                *next = seq + 1;
                sent = true;
                if w.buf.len() >= WRITE_CHUNK {
                    w.flush().await?;
                }
            }
        }
    }

    async fn on_nack<W: AsyncWrite + Unpin>(
        &self,
        n: Nack,
        w: &mut Writer<W>,
        ctx: &mut CodecContext,
        next: &mut u64,
        acked: u64,
        parked: &mut Option<u64>,
    ) -> Result<(), SessionError> {
        // The Nack's seq, if it names an entry we sent in this session.
        let about = (n.seq > acked && n.seq < *next).then_some(n.seq);
        match n.code {
            NackCode::ResyncRequired | NackCode::RosterMismatch if about.is_some() => {
                tracing::info!(seq = n.seq, code = ?n.code, detail = %n.detail, "cloud asks to resend");
                if n.code == NackCode::RosterMismatch {
                    self.send_roster(w, ctx).await?;
                } else {
                    ctx.reset_session();
                }
                *next = n.seq;
                Ok(())
            }
            NackCode::Malformed | NackCode::Rejected if about.is_some() => {
                park(
                    parked,
                    n.seq,
                    &format!("the cloud answered {:?}: {}", n.code, n.detail),
                );
                // Both ends reset after a Nack of a batch; nothing after the parked entry goes.
                ctx.reset_session();
                *next = n.seq;
                Ok(())
            }
            // About no entry of ours, or a code meaning "start over": reconnect.
            _ => Err(nack_error(n)),
        }
    }
}

fn park(parked: &mut Option<u64>, seq: u64, why: &str) {
    tracing::error!(
        seq,
        reason = why,
        "PARKED queue entry: it and everything after it stay queued but are not sent until uplinkd restarts (please report this)"
    );
    *parked = Some(parked.map_or(seq, |p| p.min(seq)));
}

fn nack_error(n: Nack) -> SessionError {
    SessionError::Nack {
        seq: n.seq,
        code: n.code,
        detail: n.detail,
    }
}

fn name(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Roster(_) => "Roster",
        Message::ReadingsBatch(_) => "ReadingsBatch",
        Message::Ack(_) => "Ack",
        Message::Nack(_) => "Nack",
        Message::Ping(_) => "Ping",
        Message::Pong(_) => "Pong",
        Message::Event(_) => "Event",
        Message::Command(_) => "Command",
        Message::CommandResult(_) => "CommandResult",
    }
}

/// `min · 2^failures`, capped at `max`, then a uniformly random part of it between half and all,
/// so a fleet that lost the cloud together does not come back together.
pub fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let base = min
        .checked_mul(1u32 << failures.min(20))
        .unwrap_or(max)
        .min(max)
        .max(min);
    base.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// The write side: frames are gathered in `buf` and written together.
struct Writer<W> {
    wr: W,
    buf: Vec<u8>,
    timeout: Duration,
    last_tx: Instant,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    fn new(wr: W, timeout: Duration) -> Self {
        Writer {
            wr,
            buf: Vec::with_capacity(4096),
            timeout,
            last_tx: Instant::now(),
        }
    }

    /// Adds a frame to the pending write.
    fn queue(&mut self, msg: &Message) -> Result<(), EncodeError> {
        spark_proto::encode(msg, &mut self.buf)
    }

    /// Writes what is pending.
    async fn flush(&mut self) -> Result<(), SessionError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let (wr, buf) = (&mut self.wr, &self.buf);
        tokio::time::timeout(self.timeout, async {
            wr.write_all(buf).await?;
            wr.flush().await
        })
        .await
        .map_err(|_| SessionError::Timeout {
            what: "write to the cloud",
            secs: self.timeout.as_secs_f64(),
        })?
        .map_err(SessionError::Io)?;
        self.buf.clear();
        // Shrink after a large burst so an idle daemon holds little memory.
        if self.buf.capacity() > 4 * WRITE_CHUNK {
            self.buf.shrink_to(4096);
        }
        self.last_tx = Instant::now();
        Ok(())
    }

    async fn send(&mut self, msg: &Message) -> Result<(), SessionError> {
        self.queue(msg)?;
        self.flush().await
    }
}

/// Reads frames and hands them to the session; ends on EOF or the first bad frame.
async fn read_frames<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Result<Message, SessionError>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        loop {
            match spark_proto::decode(&buf) {
                Ok((msg, n)) => {
                    buf.drain(..n);
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Err(DecodeError::Incomplete) => break,
                Err(e) => {
                    let _ = tx.send(Err(SessionError::Decode(e))).await;
                    return;
                }
            }
        }
        if buf.capacity() > 4 * 4096 && buf.len() < 4096 {
            buf.shrink_to(4096);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx.send(Err(SessionError::Closed)).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(Err(SessionError::Io(e))).await;
                return;
            }
        }
    }
}

/// Resolves when the watched value changes; never, once its sender is gone (at shutdown the
/// puller drops the head sender first, and a closed channel must not spin the loop).
pub(crate) async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..50 {
            let d0 = backoff(min, max, 0);
            assert!(d0 >= min / 2 && d0 <= min, "{d0:?}");
            let d3 = backoff(min, max, 3);
            assert!(d3 >= min * 4 && d3 <= min * 8, "{d3:?}");
            let big = backoff(min, max, 40);
            assert!(big >= max / 2 && big <= max, "{big:?}");
        }
    }
}
