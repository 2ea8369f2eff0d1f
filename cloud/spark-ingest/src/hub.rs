//! The hub: which gateways are connected to this ingest node, a bounded command queue into each
//! connection, and a broadcast of command results for callers waiting on the push API.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use spark_proto::Command;
use tokio::sync::{Notify, broadcast, mpsc};

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
    commands: mpsc::Sender<Command>,
    replaced: Arc<Notify>,
    peer: SocketAddr,
}

/// What a session gets when it registers its gateway.
#[derive(Debug)]
pub(crate) struct Registration {
    pub id: u64,
    pub commands: mpsc::Receiver<Command>,
    /// Notified when a newer connection of the same gateway registers: this one should close
    /// (it is most likely a half-open TCP connection the gateway has given up on).
    pub replaced: Arc<Notify>,
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
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let replaced = Arc::new(Notify::new());
        let old = self.conns().insert(
            gateway.to_owned(),
            Conn {
                id,
                commands: tx,
                replaced: replaced.clone(),
                peer,
            },
        );
        if let Some(old) = old {
            tracing::info!(gateway, old_peer = %old.peer, new_peer = %peer,
                "gateway reconnected; closing its previous connection");
            old.replaced.notify_one();
        }
        Registration {
            id,
            commands: rx,
            replaced,
        }
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
        conn.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Busy,
            mpsc::error::TrySendError::Closed(_) => SendError::NotConnected,
        })
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
