//! What the page shows, read over D-Bus from the daemons that own it: `io.spark.Meters1`
//! (meterd), `io.spark.Uplink1` (uplinkd), `io.spark.Update1` (the update agent) and RAUC's
//! slot status, through the proxies of `spark-dbus` and `rauc-client`.
//!
//! One task (the [`Watcher`]) keeps a [`Snapshot`] of all of it in a `watch` channel. It re-reads
//! everything when a daemon signals a change (`PropertiesChanged` under `/io/spark`, RAUC's
//! `PropertiesChanged`, a name appearing or going away), when a page asks for a fresh view, and
//! every `refresh` while someone watches the live page; never more often than [`MIN_GAP`]. With
//! nobody looking it reads nothing (meterd signals several times a second on a busy site; the
//! RAUC slot status runs the bootloader tool).
//!
//! Each part is read on its own with a deadline: a daemon that is not running shows as
//! [`Part::NotRunning`], one that fails as [`Part::Failed`], and the rest of the page is
//! unaffected. Without a bus at all the watcher retries with a bounded backoff and the page says
//! so; when the bus or a daemon comes back, the next read shows it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rauc_client::{RaucClient, RaucError};
use spark_dbus::{Meters1Proxy, Update1Proxy, Uplink1Proxy};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use zbus::proxy::CacheProperties;

/// Shortest time between two reads of everything.
pub const MIN_GAP: Duration = Duration::from_secs(1);
/// Deadline of one part's reads.
const PART_DEADLINE: Duration = Duration::from_secs(3);
/// How long a page waits for a fresh read before it shows what is there.
const FRESH_WAIT: Duration = Duration::from_secs(2);
/// Longest wait between attempts to reach the bus.
const BUS_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One part of the page as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part<T> {
    /// Not read yet (just started, or no bus).
    Unknown,
    /// Its daemon does not own its bus name.
    NotRunning,
    /// Its daemon answered with an error, or not in time.
    Failed(String),
    Ok(T),
}

/// The meter side (`io.spark.Meters1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meters {
    pub radio_online: bool,
    /// Readings meterd holds that uplinkd has not taken yet.
    pub buffered: u64,
    /// Every meter of the roster, in roster order, with its newest reading if known.
    pub meters: Vec<MeterRow>,
    /// Why the last readings could not be read (an older meterd without `LastReadings`).
    pub last_readings_error: Option<String>,
}

/// One meter and its newest reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRow {
    pub id: String,
    /// (unix seconds, Wh) of the newest reading.
    pub last: Option<(u64, u64)>,
}

/// The cloud link (`io.spark.Uplink1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub connected: bool,
    pub queue_depth: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// `None` from an uplinkd without `BytesUsedToday`.
    pub bytes_used_today: Option<u64>,
    pub last_ack_seq: u64,
}

/// The update agent (`io.spark.Update1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub state: String,
    pub progress: u32,
    pub current_version: String,
    pub pending_version: String,
    pub last_error: String,
}

/// One A/B slot as RAUC reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// RAUC's name (`rootfs.0`).
    pub name: String,
    /// The bootloader's name (`A`, `B`).
    pub bootname: Option<String>,
    /// Version of the bundle last installed into it.
    pub version: Option<String>,
    pub booted: bool,
    /// `good` / `bad` as the bootloader says.
    pub boot_status: Option<String>,
    /// Whether it boots next.
    pub primary: Option<bool>,
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Counts completed reads, so a page can wait for one newer than its request.
    pub generation: u64,
    /// Why the bus cannot be reached, when it cannot.
    pub bus_error: Option<String>,
    pub meters: Part<Meters>,
    pub uplink: Part<Uplink>,
    pub update: Part<Update>,
    pub slots: Part<Vec<Slot>>,
}

impl Snapshot {
    fn unknown() -> Self {
        Self {
            generation: 0,
            bus_error: None,
            meters: Part::Unknown,
            uplink: Part::Unknown,
            update: Part::Unknown,
            slots: Part::Unknown,
        }
    }
}

/// The page side of the watcher: the latest snapshot and a way to ask for a fresh one.
#[derive(Debug, Clone)]
pub struct State {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    wake: Arc<Notify>,
}

impl State {
    /// The latest snapshot, without waiting.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// A snapshot read after this call, or the latest one if none arrives within a short wait.
    pub async fn fresh(&self) -> Arc<Snapshot> {
        let mut rx = self.tx.subscribe();
        let seen = rx.borrow_and_update().generation;
        self.wake.notify_one();
        let newer = rx.wait_for(|s| s.generation > seen);
        match tokio::time::timeout(FRESH_WAIT, newer).await {
            Ok(Ok(s)) => s.clone(),
            _ => self.latest(),
        }
    }

    /// Follows every new snapshot (the live page). While any such receiver exists the watcher
    /// also reads on its interval.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        let rx = self.tx.subscribe();
        self.wake.notify_one();
        rx
    }
}

/// The task that keeps the snapshot.
#[derive(Debug)]
pub struct Watcher {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    wake: Arc<Notify>,
    bus_address: Option<String>,
    refresh: Duration,
}

impl Watcher {
    /// A watcher of `bus_address` (the system bus when `None`) and its [`State`].
    pub fn new(bus_address: Option<String>, refresh: Duration) -> (Watcher, State) {
        let tx = Arc::new(watch::Sender::new(Arc::new(Snapshot::unknown())));
        let wake = Arc::new(Notify::new());
        let state = State {
            tx: tx.clone(),
            wake: wake.clone(),
        };
        (
            Watcher {
                tx,
                wake,
                bus_address,
                refresh,
            },
            state,
        )
    }

    /// Whether a live page (or a page waiting for a fresh read) is open.
    fn watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        self.tx.send_modify(|s| {
            let mut next = (**s).clone();
            change(&mut next);
            next.generation = s.generation + 1;
            *s = Arc::new(next);
        });
    }

    /// Runs until `stop` resolves.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = Duration::from_secs(1);
        loop {
            let conn = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    let text = e.to_string();
                    if self.latest_bus_error().as_deref() != Some(text.as_str()) {
                        tracing::warn!(error = %e, "cannot reach D-Bus; the page shows nothing but this until it is back");
                    }
                    self.publish(|s| {
                        *s = Snapshot {
                            generation: s.generation,
                            bus_error: Some(text),
                            ..Snapshot::unknown()
                        }
                    });
                    // A page asking for a fresh view tries again at once: it gets an answer
                    // (this one or the bus) instead of waiting out the backoff.
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.wake.notified() => {}
                    }
                    backoff = (backoff * 2).min(BUS_BACKOFF_MAX);
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            tracing::info!("on D-Bus");
            match self.follow(&conn, &mut stop).await {
                Followed::Stopped => return,
                Followed::BusLost => {
                    tracing::warn!("lost the D-Bus connection; reconnecting");
                }
            }
        }
    }

    fn latest_bus_error(&self) -> Option<String> {
        self.tx.borrow().bus_error.clone()
    }

    async fn connect(&self) -> zbus::Result<zbus::Connection> {
        match &self.bus_address {
            Some(address) => {
                zbus::connection::Builder::address(address.as_str())?
                    .build()
                    .await
            }
            None => zbus::Connection::system().await,
        }
    }

    /// Reads on signals, requests and the interval until the connection ends or `stop`.
    async fn follow(
        &self,
        conn: &zbus::Connection,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Followed {
        let signals = match signals(conn).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the daemons' signals");
                return Followed::BusLost;
            }
        };
        tokio::pin!(signals);
        let reader = Reader::new(conn).await;
        let mut tick = tokio::time::interval(self.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Read once at (re)connection whether or not anyone looks: the bus error must go.
        let mut due = true;
        let mut last_read: Option<Instant> = None;
        loop {
            if due {
                if let Some(at) = last_read {
                    tokio::time::sleep_until(at + MIN_GAP).await;
                }
                let before = self.tx.borrow().clone();
                let next = reader.read(&before).await;
                last_read = Some(Instant::now());
                self.publish(|s| {
                    *s = Snapshot {
                        generation: s.generation,
                        bus_error: None,
                        ..next
                    }
                });
                // Signals that came during the read are covered by it.
                while let Some(Some(signal)) = signals.next().now_or_never() {
                    if signal.is_err() {
                        return Followed::BusLost;
                    }
                }
            }
            tokio::select! {
                _ = &mut *stop => return Followed::Stopped,
                signal = signals.next() => match signal {
                    // Unwatched, a change waits for the next page request.
                    Some(Ok(_)) => due = self.watched(),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "signal stream error");
                        return Followed::BusLost;
                    }
                    None => return Followed::BusLost,
                },
                _ = tick.tick() => due = self.watched(),
                _ = self.wake.notified() => due = true,
            }
        }
    }
}

enum Followed {
    Stopped,
    BusLost,
}

/// The signals that mean "something on the page changed", merged.
async fn signals(
    conn: &zbus::Connection,
) -> zbus::Result<impl futures_util::Stream<Item = zbus::Result<zbus::Message>>> {
    use zbus::message::Type;
    let ours = zbus::MatchRule::builder()
        .msg_type(Type::Signal)
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace("/io/spark")?
        .build();
    let rauc = zbus::MatchRule::builder()
        .msg_type(Type::Signal)
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path("/")?
        .arg(0, "de.pengutronix.rauc.Installer")?
        .build();
    let owners = zbus::MatchRule::builder()
        .msg_type(Type::Signal)
        .sender("org.freedesktop.DBus")?
        .interface("org.freedesktop.DBus")?
        .member("NameOwnerChanged")?
        .build();
    // Small queues: only "something changed" matters, and a full queue drops the oldest.
    let ours = zbus::MessageStream::for_match_rule(ours, conn, Some(16)).await?;
    let rauc = zbus::MessageStream::for_match_rule(rauc, conn, Some(16)).await?;
    let owners = zbus::MessageStream::for_match_rule(owners, conn, Some(16)).await?;
    // NameOwnerChanged for any name: filter to the ones the page reads.
    let owners = owners.filter(|m| {
        let relevant = match m {
            Ok(m) => m
                .body()
                .deserialize::<(String, String, String)>()
                .map(|(name, _, _)| name.starts_with("io.spark.") || name == "de.pengutronix.rauc")
                .unwrap_or(false),
            Err(_) => true,
        };
        std::future::ready(relevant)
    });
    Ok(futures_util::stream::select(
        futures_util::stream::select(ours, rauc),
        owners,
    ))
}

/// The proxies of one connection.
struct Reader {
    meters: Option<Meters1Proxy<'static>>,
    uplink: Option<Uplink1Proxy<'static>>,
    update: Option<Update1Proxy<'static>>,
    rauc: Option<RaucClient>,
}

impl Reader {
    async fn new(conn: &zbus::Connection) -> Reader {
        // No property cache: every read asks the daemon (the cache is only as fresh as the
        // signals that have arrived, and is empty for a daemon that started after us).
        Reader {
            meters: Meters1Proxy::builder(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .ok(),
            uplink: Uplink1Proxy::builder(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .ok(),
            update: Update1Proxy::builder(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .ok(),
            rauc: RaucClient::from_connection(conn.clone()).await.ok(),
        }
    }

    /// Reads every part at once, each with its deadline. `before` supplies the slots while
    /// RAUC is busy installing (it refuses status calls then).
    async fn read(&self, before: &Snapshot) -> Snapshot {
        let (meters, uplink, update, slots) = tokio::join!(
            deadline(self.read_meters()),
            deadline(self.read_uplink()),
            deadline(self.read_update()),
            self.read_slots(&before.slots),
        );
        Snapshot {
            generation: 0,
            bus_error: None,
            meters,
            uplink,
            update,
            slots,
        }
    }

    async fn read_meters(&self) -> Part<Meters> {
        let Some(p) = &self.meters else {
            return Part::Failed("no proxy".into());
        };
        let roster = match p.meters().await {
            Ok(r) => r,
            Err(e) => return part_error(&e),
        };
        let (radio_online, buffered) = match tokio::try_join!(p.radio_online(), p.buffered()) {
            Ok(v) => v,
            Err(e) => return part_error(&e),
        };
        let (last, last_readings_error) = match p.last_readings().await {
            Ok(last) => (last, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let mut newest: std::collections::HashMap<String, (u64, u64)> = last
            .into_iter()
            .map(|r| (r.meter_id, (r.timestamp, r.wh)))
            .collect();
        let meters = roster
            .into_iter()
            .map(|id| MeterRow {
                last: newest.remove(&id),
                id,
            })
            .collect();
        Part::Ok(Meters {
            radio_online,
            buffered,
            meters,
            last_readings_error,
        })
    }

    async fn read_uplink(&self) -> Part<Uplink> {
        let Some(p) = &self.uplink else {
            return Part::Failed("no proxy".into());
        };
        let read = async {
            let (connected, queue_depth, bytes_sent, bytes_received, last_ack_seq) = tokio::try_join!(
                p.connected(),
                p.queue_depth(),
                p.bytes_sent(),
                p.bytes_received(),
                p.last_ack_seq()
            )?;
            // Older uplinkd: no such property; the page says "unknown" for it alone.
            let bytes_used_today = p.bytes_used_today().await.ok();
            zbus::Result::Ok(Uplink {
                connected,
                queue_depth,
                bytes_sent,
                bytes_received,
                bytes_used_today,
                last_ack_seq,
            })
        };
        match read.await {
            Ok(u) => Part::Ok(u),
            Err(e) => part_error(&e),
        }
    }

    async fn read_update(&self) -> Part<Update> {
        let Some(p) = &self.update else {
            return Part::Failed("no proxy".into());
        };
        let read = async {
            let (state, progress, current_version, pending_version, last_error) = tokio::try_join!(
                p.state(),
                p.progress(),
                p.current_version(),
                p.pending_version(),
                p.last_error()
            )?;
            zbus::Result::Ok(Update {
                state,
                progress,
                current_version,
                pending_version,
                last_error,
            })
        };
        match read.await {
            Ok(u) => Part::Ok(u),
            Err(e) => part_error(&e),
        }
    }

    async fn read_slots(&self, before: &Part<Vec<Slot>>) -> Part<Vec<Slot>> {
        let Some(rauc) = &self.rauc else {
            return Part::Failed("no proxy".into());
        };
        match tokio::time::timeout(PART_DEADLINE, rauc.slot_status()).await {
            Ok(Ok(slots)) => Part::Ok(
                slots
                    .into_iter()
                    .map(|s| Slot {
                        booted: s.is_booted(),
                        bootname: s.bootname,
                        version: s.bundle_version,
                        boot_status: s.boot_status,
                        primary: s.is_primary,
                        name: s.name,
                    })
                    .collect(),
            ),
            Ok(Err(RaucError::NotRunning)) => Part::NotRunning,
            // While RAUC installs it answers no status calls; the slots have not changed yet.
            Ok(Err(RaucError::Busy { .. })) if matches!(before, Part::Ok(_)) => before.clone(),
            Ok(Err(e)) => Part::Failed(e.to_string()),
            Err(_) => Part::Failed(format!("RAUC did not answer within {PART_DEADLINE:?}")),
        }
    }
}

async fn deadline<T>(read: impl std::future::Future<Output = Part<T>>) -> Part<T> {
    tokio::time::timeout(PART_DEADLINE, read)
        .await
        .unwrap_or_else(|_| Part::Failed(format!("no answer within {PART_DEADLINE:?}")))
}

/// A daemon that is not on the bus, or another failure.
fn part_error<T>(e: &zbus::Error) -> Part<T> {
    const GONE: [&str; 2] = [
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    ];
    let not_running = match e {
        zbus::Error::MethodError(name, _, _) => GONE.contains(&name.as_str()),
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        ),
        _ => false,
    };
    if not_running {
        Part::NotRunning
    } else {
        Part::Failed(e.to_string())
    }
}
