//! The daemon: opens the buffer, serves `io.spark.Meters1`, and keeps a session with the radio
//! module, reconnecting with a bounded backoff whenever it goes away.
//!
//! A session: send `Hello`; the module answers `Status` (its epoch and what it has had
//! acknowledged), the roster, then every unacknowledged reading. Readings are taken only in
//! sequence order (`seq` = last stored + 1): copies of stored ones are dropped, a gap (a frame
//! damaged on the line) asks the module to `Resend` from the missing one. Whatever arrived in one
//! read is appended to the journal in one fsync, and only then acknowledged, so the module keeps
//! anything meterd has not made durable.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use zbus::object_server::InterfaceRef;

use crate::config::Config;
use crate::link::{self, LinkReader, LinkWriter, RadioAddress};
use crate::radio::{Frame, FrameDecoder, FrameError, RadioReading, VERSION};
use crate::service::{self, Changes, Meters1, Shared};
use crate::store::{Store, StoreError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "D-Bus: {0}; is the system bus running and does its policy let meterd own io.spark.Meters1?"
    )]
    Bus(#[from] zbus::Error),
}

/// Why a radio session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("radio link: {0}")]
    Io(#[from] std::io::Error),
    #[error("the radio module closed the link")]
    Closed,
    #[error("the radio module did not answer for {0:?}")]
    Silent(Duration),
}

/// Settings of the radio side.
#[derive(Debug, Clone)]
pub struct RadioSettings {
    pub address: RadioAddress,
    pub baud: Option<u32>,
    pub ping_interval: Duration,
    pub reconnect_max: Duration,
}

impl RadioSettings {
    /// How long an incomplete frame may wait for its remaining bytes before the decoder gives
    /// up on it: 500 ms, or twice the time the longest frame takes on a slow serial line.
    pub fn partial_timeout(&self) -> Duration {
        let bits = (crate::radio::MAX_PAYLOAD as u64 + 6) * 10;
        let line = Duration::from_micros(
            bits * 2_000_000 / u64::from(self.baud.unwrap_or(115_200).max(300)),
        );
        line.max(Duration::from_millis(500))
    }

    pub fn from_config(config: &Config) -> Self {
        Self {
            address: config.radio.clone(),
            baud: Some(config.baud),
            ping_interval: config.ping_interval(),
            reconnect_max: config.reconnect_max(),
        }
    }
}

/// Runs meterd until `shutdown` resolves. `ready` is called once the D-Bus name is owned.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let store = Store::open(&config.data_dir, config.max_buffered)?;
    tracing::info!(
        data_dir = %config.data_dir.display(),
        head = store.head(),
        buffered = store.buffered(),
        meters = store.roster().len(),
        "reading buffer open"
    );
    let shared = Shared::new(store);
    let conn = match &config.bus_address {
        Some(address) => {
            zbus::connection::Builder::address(address.as_str())?
                .build()
                .await?
        }
        None => zbus::Connection::system().await?,
    };
    conn.object_server()
        .at(spark_dbus::METERS1_PATH, Meters1::new(shared.clone()))
        .await?;
    let iface = conn
        .object_server()
        .interface::<_, Meters1>(spark_dbus::METERS1_PATH)
        .await?;
    conn.request_name(spark_dbus::METERS1_NAME).await?;
    ready();
    let settings = RadioSettings::from_config(&config);
    tokio::select! {
        _ = shutdown => {}
        () = radio_loop(settings, shared, Some(iface)) => {}
    }
    tracing::info!("stopping");
    Ok(())
}

/// Connects to the module and runs sessions forever, waiting 100 ms doubling up to
/// `reconnect_max` between failed attempts.
pub async fn radio_loop(
    settings: RadioSettings,
    shared: Arc<Shared>,
    iface: Option<InterfaceRef<Meters1>>,
) {
    let first_wait = Duration::from_millis(100);
    let mut wait = first_wait;
    let mut failures = 0u32;
    loop {
        match link::connect(&settings.address, settings.baud).await {
            Ok((r, w)) => {
                let mut session = Session::new(&settings, &shared, iface.as_ref());
                let result = session.run(r, w).await;
                if session.was_online {
                    wait = first_wait;
                    failures = 0;
                }
                match result {
                    Ok(()) => {}
                    Err(e) if session.was_online => {
                        tracing::warn!(error = %e, radio = %settings.address, "radio session ended; reconnecting");
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, radio = %settings.address, "radio did not come up")
                    }
                }
            }
            Err(e) => {
                // Loud once, then quiet: a module that is away for hours should not fill the log.
                if failures == 0 {
                    tracing::warn!(error = %e, radio = %settings.address, "cannot open the radio link; retrying");
                } else {
                    tracing::debug!(error = %e, "radio link still not there");
                }
                failures = failures.saturating_add(1);
            }
        }
        if shared.online.swap(false, Ordering::Relaxed) {
            tracing::warn!("radio offline");
            service::announce(
                iface.as_ref(),
                Changes {
                    online: true,
                    ..Changes::default()
                },
            )
            .await;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(settings.reconnect_max);
    }
}

/// One connection's worth of protocol state.
struct Session<'a> {
    settings: &'a RadioSettings,
    shared: &'a Arc<Shared>,
    iface: Option<&'a InterfaceRef<Meters1>>,
    /// A Status arrived on this link.
    was_online: bool,
    roster: Vec<String>,
    /// The last Resend asked for, and when.
    last_resend: Option<(u64, Instant)>,
    acked_sent: u64,
    /// No reading arrived since the last Status.
    quiet_since_status: bool,
}

/// The same gap is reported to the module at most this often (frames already on their way would
/// each ask again otherwise).
const RESEND_SPACING: Duration = Duration::from_millis(500);

impl<'a> Session<'a> {
    fn new(
        settings: &'a RadioSettings,
        shared: &'a Arc<Shared>,
        iface: Option<&'a InterfaceRef<Meters1>>,
    ) -> Self {
        Self {
            settings,
            shared,
            iface,
            was_online: false,
            roster: Vec::new(),
            last_resend: None,
            acked_sent: 0,
            quiet_since_status: false,
        }
    }

    async fn run(
        &mut self,
        mut reader: LinkReader,
        mut writer: LinkWriter,
    ) -> Result<(), SessionError> {
        let (tx, mut rx) = mpsc::channel::<Frame>(64);
        // Writes go through their own future so a slow line never stops reading.
        let write_side = async move {
            let mut out = Vec::new();
            while let Some(frame) = rx.recv().await {
                out.clear();
                frame.encode(&mut out);
                while let Ok(more) = rx.try_recv() {
                    more.encode(&mut out);
                }
                writer.write_all(&out).await?;
                writer.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let read_side = async {
            let _ = tx.send(Frame::Hello { version: VERSION }).await;
            let mut dec = FrameDecoder::new();
            let mut buf = vec![0u8; 16 * 1024];
            let ping = self.settings.ping_interval;
            let mut next_ping = Instant::now() + ping;
            let mut last_heard = Instant::now();
            // Since when the frame at the front of the decoder has been incomplete. Counted
            // from the last decoding progress, not the last byte: a damaged length can make
            // the decoder wait for bytes that do arrive (pings answered) but belong to later
            // frames, which it would swallow for a long time.
            let mut partial_since: Option<Instant> = None;
            let partial_timeout = self.settings.partial_timeout();
            loop {
                let deadline = match partial_since {
                    Some(t) => next_ping.min(t + partial_timeout),
                    None => next_ping,
                };
                let read = tokio::time::timeout_at(deadline, reader.read(&mut buf)).await;
                let mut frames = Vec::new();
                match read {
                    Ok(Ok(0)) => return Err(SessionError::Closed),
                    Ok(Ok(n)) => {
                        last_heard = Instant::now();
                        dec.push(&buf[..n]);
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {}
                }
                if partial_since.is_some_and(|t| t.elapsed() >= partial_timeout) {
                    frames.extend(dec.abandon_partial().map(Err));
                }
                if Instant::now() >= next_ping {
                    let silent = last_heard.elapsed();
                    if silent > ping * 3 {
                        return Err(SessionError::Silent(silent));
                    }
                    let _ = tx.send(Frame::Ping).await;
                    next_ping = Instant::now() + ping;
                }
                let before = frames.len();
                while let Some(f) = dec.next_frame() {
                    frames.push(f);
                }
                if dec.buffered() == 0 {
                    partial_since = None;
                } else if frames.len() > before || partial_since.is_none() {
                    partial_since = Some(Instant::now());
                }
                self.handle(frames, &tx).await;
            }
        };
        tokio::select! {
            r = read_side => r,
            r = write_side => match r {
                Ok(()) => Err(SessionError::Closed),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Handles what one read brought: stores the readings in one append, then acknowledges.
    async fn handle(&mut self, frames: Vec<Result<Frame, FrameError>>, tx: &mpsc::Sender<Frame>) {
        let mut changes = Changes::default();
        let mut errors = 0;
        for e in frames.iter().filter_map(|f| f.as_ref().err()) {
            tracing::warn!(error = %e, "skipped a bad frame from the radio module");
            errors += 1;
        }
        if errors > 0 {
            self.shared
                .radio_errors
                .fetch_add(errors, Ordering::Relaxed);
            changes.radio_errors = true;
        }
        let mut batch: Vec<RadioReading> = Vec::new();
        let mut duplicates = 0u64;
        let mut gap = None;
        let mut to_send = Vec::new();
        for frame in frames {
            let frame = match frame {
                Ok(frame) => frame,
                Err(FrameError::UnusableReading { seq, reason }) => {
                    // Only when it is the next one: an earlier one is a copy, a later one
                    // leaves a gap that a resend fills first.
                    if self.was_online {
                        self.flush_batch(&mut batch, &mut changes);
                        let mut store = self.shared.store();
                        if seq == store.last_seq() + 1 {
                            tracing::error!(
                                seq,
                                reason,
                                "skipping an unusable reading from the radio module"
                            );
                            if let Err(e) = store.skip(seq) {
                                tracing::error!(error = %e, "cannot record the skip");
                            }
                        }
                    }
                    continue;
                }
                Err(_) => continue,
            };
            match frame {
                Frame::Status {
                    epoch,
                    acked,
                    newest,
                } => {
                    // Store what we have before the module's view moves the baseline.
                    self.flush_batch(&mut batch, &mut changes);
                    let mut store = self.shared.store();
                    if let Err(e) = store.module_status(epoch, acked) {
                        tracing::error!(error = %e, "cannot record the radio module's state");
                        continue;
                    }
                    let last = store.last_seq();
                    drop(store);
                    if acked < last {
                        // Stored but not acknowledged before a crash: tell the module now.
                        to_send.push(Frame::Ack { seq: last });
                        self.acked_sent = last;
                    }
                    if newest > last && self.was_online && self.quiet_since_status {
                        // The module holds readings we have not seen and none came since the
                        // last Status: the last one sent was damaged and nothing after it
                        // revealed the gap. (Not on the first Status: they are on their way.)
                        gap.get_or_insert(last + 1);
                    }
                    self.quiet_since_status = true;
                    if !self.was_online {
                        self.was_online = true;
                        self.acked_sent = self.acked_sent.max(acked);
                        tracing::info!(epoch, acked, newest, radio = %self.settings.address, "radio online");
                    }
                    if !self.shared.online.swap(true, Ordering::Relaxed) {
                        changes.online = true;
                    }
                }
                Frame::MeterList { offset, total, ids } => {
                    if offset == 0 {
                        self.roster.clear();
                    }
                    if usize::from(offset) != self.roster.len() {
                        // A chunk went missing; the next Hello brings the whole list again.
                        self.roster.clear();
                        continue;
                    }
                    self.roster.extend(ids);
                    if self.roster.len() == usize::from(total) {
                        let roster = std::mem::take(&mut self.roster);
                        let known = self.shared.store().roster().len();
                        let result = self
                            .shared
                            .store()
                            .add_meters(roster.iter().map(String::as_str));
                        match result {
                            Ok(true) => {
                                changes.meters = true;
                                let added = self.shared.store().roster().len() - known;
                                tracing::info!(
                                    meters = total,
                                    added,
                                    "new meters in the radio's roster"
                                );
                            }
                            Ok(false) => tracing::debug!(meters = total, "roster unchanged"),
                            Err(e) => tracing::error!(error = %e, "cannot store the roster"),
                        }
                    }
                }
                Frame::Reading(r) => {
                    self.quiet_since_status = false;
                    if !self.was_online {
                        // Left over from before our Hello; the module sends it again.
                        continue;
                    }
                    let next = self.shared.store().last_seq() + 1 + batch.len() as u64;
                    if r.seq < next {
                        duplicates += 1;
                    } else if r.seq == next {
                        batch.push(r);
                    } else {
                        gap.get_or_insert(next);
                    }
                }
                Frame::Alarm {
                    meter_id,
                    timestamp,
                    code,
                } => {
                    tracing::warn!(meter = %meter_id, timestamp, code, "meter alarm");
                    self.shared.alarms.fetch_add(1, Ordering::Relaxed);
                    changes.alarms = true;
                }
                other => tracing::debug!(frame = ?other, "ignored a host frame from the radio"),
            }
        }
        self.flush_batch(&mut batch, &mut changes);
        let last = self.shared.store().last_seq();
        if last > self.acked_sent || (duplicates > 0 && self.was_online) {
            to_send.push(Frame::Ack { seq: last });
            self.acked_sent = last;
        }
        if let Some(from) = gap.map(|from| from.min(last + 1))
            && self
                .last_resend
                .is_none_or(|(asked, t)| asked != from || t.elapsed() >= RESEND_SPACING)
        {
            // A new gap is asked for at once; the same one again only after a pause, since
            // frames sent before the module saw our Resend are still arriving.
            tracing::info!(from, "gap in the module's readings; asking for a resend");
            to_send.push(Frame::Resend { from });
            self.last_resend = Some((from, Instant::now()));
        }
        for frame in to_send {
            let _ = tx.send(frame).await;
        }
        service::announce(self.iface, changes).await;
    }

    fn flush_batch(&self, batch: &mut Vec<RadioReading>, changes: &mut Changes) {
        if batch.is_empty() {
            return;
        }
        let result = self.shared.store().append(batch);
        match result {
            Ok(done) => {
                tracing::debug!(readings = batch.len(), head = done.head, "stored");
                changes.stored = Some(done.head);
                changes.dropped |= done.dropped > 0;
            }
            // Not acknowledged, so the module keeps them; the next gap check asks again.
            Err(e) => {
                tracing::error!(error = %e, readings = batch.len(), "cannot store readings; the radio module keeps them")
            }
        }
        batch.clear();
    }
}
