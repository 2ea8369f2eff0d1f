//! Pulling readings from `spark-meterd` into the outgoing queue, and queueing Health events.
//!
//! Every batch window the puller fetches everything after its cursor (`Meters1.Fetch` in chunks
//! of [`METERS1_FETCH_MAX`] until a fetch comes back empty), appending each chunk durably before
//! the next `Fetch` passes the new cursor, because that call is what lets meterd drop the
//! readings. `ReadingsAvailable` signals pull early only when a full fetch is waiting, which
//! keeps meterd's buffer small without turning a 15-minute window into a batch per reading; the
//! window timer is the poll fallback when signals are lost (meterd restarted, bus hiccup).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use spark_dbus::{METERS1_FETCH_MAX, Meters1Proxy};
use spark_proto::EventKind;
use tokio::sync::watch;

use crate::config::Tunables;
use crate::counting::Counters;
use crate::queue::Queue;
use crate::store::free_kib;
use crate::usage::LinkUsage;

/// Most `Fetch` calls in one pull: 4096 × 2048 readings is far beyond a month of a full roster,
/// and the next window continues where this one stopped.
const MAX_FETCHES_PER_PULL: usize = 4096;

/// Signal strength for Health events when the modem does not say (no modem daemon yet).
pub const RSSI_UNKNOWN: i8 = i8::MIN;

/// What the puller needs.
pub struct Puller {
    pub conn: zbus::Connection,
    pub queue: Arc<Mutex<Queue>>,
    /// Bumped with the queue head after every append (the link waits on it).
    pub head: watch::Sender<u64>,
    pub tunables: watch::Receiver<Tunables>,
    pub data_dir: PathBuf,
    pub started: Instant,
    /// The cloud link's byte counters and today's total from them (Health's `bytes_used_today`).
    pub counters: Arc<Counters>,
    pub usage: Arc<Mutex<LinkUsage>>,
}

impl Puller {
    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let proxy = match Meters1Proxy::builder(&self.conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // Only a malformed name could fail here; without a proxy nothing can be pulled.
                tracing::error!(error = %e, "cannot create the io.spark.Meters1 proxy; no readings will be pulled");
                let _ = shutdown.wait_for(|s| *s).await;
                return;
            }
        };
        let mut signals = match proxy.receive_readings_available().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to ReadingsAvailable; polling every batch window");
                None
            }
        };
        let mut meterd_ok = true;
        let now = Instant::now();
        let mut next_pull = now;
        let mut next_health = now + self.tunables.borrow().health_interval();
        loop {
            let tun = self.tunables.borrow().clone();
            let wake = next_pull.min(next_health);
            enum Wake {
                Shutdown,
                Timer,
                Tunables,
                Signal(u64),
                SignalsEnded,
            }
            let wake = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => Wake::Shutdown,
                _ = tokio::time::sleep_until(wake.into()) => Wake::Timer,
                _ = crate::link::changed(&mut self.tunables) => Wake::Tunables,
                sig = next_signal(&mut signals) => match sig {
                    Some(position) => Wake::Signal(position),
                    None => Wake::SignalsEnded,
                },
            };
            let mut early = false;
            match wake {
                Wake::Shutdown => return,
                Wake::Timer => {}
                Wake::Tunables => {
                    // A shorter window or health interval takes effect from now.
                    let t = self.tunables.borrow().clone();
                    next_pull = next_pull.min(Instant::now() + t.batch_window());
                    next_health = next_health.min(Instant::now() + t.health_interval());
                    continue;
                }
                Wake::Signal(position) => {
                    let cursor = self.lock().meters_cursor();
                    early = position.saturating_sub(cursor) >= u64::from(METERS1_FETCH_MAX);
                    if !early {
                        continue;
                    }
                }
                Wake::SignalsEnded => {
                    tracing::warn!(
                        "ReadingsAvailable subscription ended; polling every batch window"
                    );
                    signals = None;
                    continue;
                }
            }
            let now = Instant::now();
            if early || now >= next_pull {
                meterd_ok = self.pull(&proxy, meterd_ok).await;
                next_pull = Instant::now() + tun.batch_window();
            }
            if now >= next_health {
                self.health();
                next_health = Instant::now() + tun.health_interval();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One pull; returns whether meterd answered (to log state changes once, not every window).
    async fn pull(&self, proxy: &Meters1Proxy<'_>, was_ok: bool) -> bool {
        match proxy.meters().await {
            Ok(ids) => {
                if let Err(e) = self.lock().add_meters(&ids) {
                    tracing::error!(error = %e, "cannot store the roster");
                    return was_ok;
                }
            }
            Err(e) => {
                if was_ok {
                    tracing::warn!(error = %e, "io.spark.Meters1 does not answer; retrying every batch window");
                }
                return false;
            }
        }
        if !was_ok {
            tracing::info!("io.spark.Meters1 answers again");
        }
        let (mut readings, mut entries) = (0usize, 0usize);
        for _ in 0..MAX_FETCHES_PER_PULL {
            let cursor = self.lock().meters_cursor();
            let mut chunk = match proxy.fetch(cursor, METERS1_FETCH_MAX).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, cursor, "Meters1.Fetch failed; retrying next window");
                    break;
                }
            };
            // A reading at or before the cursor is one we have: meterd should not send it.
            chunk.retain(|r| r.position > cursor);
            if chunk.is_empty() {
                break;
            }
            if chunk.windows(2).any(|w| w[0].position >= w[1].position) {
                chunk.sort_by_key(|r| r.position);
                chunk.dedup_by_key(|r| r.position);
            }
            let result = self.lock().append_readings(&chunk);
            match result {
                Ok(a) => {
                    readings += a.readings;
                    entries += a.entries;
                    let head = self.lock().head();
                    self.head.send_replace(head);
                }
                Err(e) => {
                    // Disk full or failing: keep the readings in meterd (its cursor did not move).
                    tracing::error!(error = %e, "cannot append readings to the queue; meterd keeps them until the next window");
                    break;
                }
            }
        }
        if readings > 0 {
            tracing::info!(readings, entries, "readings queued");
        }
        true
    }

    fn health(&self) {
        let uptime = system_uptime().unwrap_or_else(|| self.started.elapsed());
        let free = free_kib(&self.data_dir);
        let now = unix_now();
        let bytes_used_today = {
            let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let today = u.update(now, self.counters.sent() + self.counters.received());
            if let Err(e) = u.save() {
                tracing::warn!(error = %e, "cannot save today's link usage; a restart would count from an older figure");
            }
            today
        };
        let mut q = self.lock();
        // Health2 is queued; the link sends it as Health to a protocol-1 cloud.
        let kind = EventKind::Health2 {
            uptime_secs: u32::try_from(uptime.as_secs()).unwrap_or(u32::MAX),
            queue_len: u32::try_from(q.depth()).unwrap_or(u32::MAX),
            free_data_kib: free,
            rssi_dbm: RSSI_UNKNOWN,
            meters_seen: q.take_meters_seen(),
            bytes_used_today,
        };
        match q.append_event(now, kind) {
            Ok(seq) => {
                drop(q);
                tracing::debug!(seq, "health event queued");
                self.head.send_replace(seq);
            }
            Err(e) => tracing::error!(error = %e, "cannot queue a health event"),
        }
    }
}

async fn next_signal(signals: &mut Option<spark_dbus::ReadingsAvailableStream>) -> Option<u64> {
    match signals {
        Some(s) => s
            .next()
            .await
            .map(|sig| sig.args().map(|a| a.position).unwrap_or(0)),
        // No subscription: never fires.
        None => std::future::pending().await,
    }
}

/// Seconds since boot from `/proc/uptime`.
fn system_uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
