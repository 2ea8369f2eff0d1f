//! The hub: which gateways are connected to this ingest node, a bounded command queue into each
//! connection, and a broadcast of command results for callers waiting on the push API.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spark_proto::Command;
use tokio::sync::{Notify, broadcast};

use crate::store::CommandRecord;

/// Commands queued per connection before the API answers "busy": a gateway works through a
/// handful at a time, so more waiting means something is stuck.
const COMMAND_QUEUE: usize = 8;

/// Shared between the telemetry server and the internal API. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    conns: Mutex<HashMap<String, Conn>>,
    results: broadcast::Sender<CommandRecord>,
    next_id: AtomicU64,
}

impl Default for Inner {
    fn default() -> Self {
        Inner {
            conns: Mutex::default(),
            results: broadcast::channel(256).0,
            next_id: AtomicU64::new(1),
        }
    }
}

#[derive(Debug)]
struct Conn {
    id: u64,
    inbox: Arc<Inbox>,
    peer: SocketAddr,
}

/// What a session gets when it registers its gateway.
#[derive(Debug)]
pub(crate) struct Registration {
    pub id: u64,
    pub inbox: Arc<Inbox>,
}

/// A connection's command queue. Not a tokio mpsc channel: that allocates a block of slots per
/// channel up front, and every idle gateway connection has one; this allocates when used.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    queue: Mutex<VecDeque<Command>>,
    ready: Notify,
    /// Notified when a newer connection of the same gateway registers: this one should close
    /// (it is most likely a half-open TCP connection the gateway has given up on).
    pub replaced: Notify,
    closed: std::sync::atomic::AtomicBool,
}

impl Inbox {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Command>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, command: Command) -> Result<(), SendError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SendError::NotConnected);
        }
        let mut queue = self.queue();
        if queue.len() >= COMMAND_QUEUE {
            return Err(SendError::Busy);
        }
        queue.push_back(command);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The next command; waits for one. Cancel-safe: a command is only taken when returned.
    pub(crate) async fn next(&self) -> Command {
        loop {
            if let Some(c) = self.queue().pop_front() {
                return c;
            }
            // notify_one keeps a permit when nobody waits, so a push between the check above
            // and this wait is not missed.
            self.ready.notified().await;
        }
    }

    /// Refuses further commands and returns those never taken.
    pub(crate) fn close(&self) -> Vec<Command> {
        self.closed.store(true, Ordering::Release);
        self.queue().drain(..).collect()
    }
}

/// Why a command could not be handed to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    NotConnected,
    Busy,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conn>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.inner.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection of `gateway`; a previous connection of it is told to close.
    pub(crate) fn register(&self, gateway: &str, peer: SocketAddr) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let inbox = Arc::new(Inbox::default());
        let old = self.conns().insert(
            gateway.to_owned(),
            Conn {
                id,
                inbox: inbox.clone(),
                peer,
            },
        );
        if let Some(old) = old {
            tracing::info!(gateway, old_peer = %old.peer, new_peer = %peer,
                "gateway reconnected; closing its previous connection");
            old.inbox.replaced.notify_one();
        }
        Registration { id, inbox }
    }

    /// Removes the connection `id` of `gateway` (not a newer one that replaced it).
    pub(crate) fn unregister(&self, gateway: &str, id: u64) {
        let mut conns = self.conns();
        if conns.get(gateway).is_some_and(|c| c.id == id) {
            conns.remove(gateway);
        }
    }

    /// Whether `gateway` has a connection to this node.
    pub fn is_connected(&self, gateway: &str) -> bool {
        self.conns().contains_key(gateway)
    }

    /// Gateways connected to this node, sorted.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self.conns().keys().cloned().collect();
        v.sort();
        v
    }

    /// Queues a command for the gateway's connection without waiting.
    pub(crate) fn send(&self, gateway: &str, command: Command) -> Result<(), SendError> {
        let conns = self.conns();
        let conn = conns.get(gateway).ok_or(SendError::NotConnected)?;
        conn.inbox.push(command)
    }

    /// Subscribes to command results (subscribe before sending, so none is missed).
    pub(crate) fn results(&self) -> broadcast::Receiver<CommandRecord> {
        self.inner.results.subscribe()
    }

    /// Publishes a command result to waiting callers.
    pub(crate) fn publish(&self, record: CommandRecord) {
        // No receiver is fine: nobody is waiting, the result is in the database.
        let _ = self.inner.results.send(record);
    }
}
