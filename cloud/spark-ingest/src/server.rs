//! The telemetry listener: mutual-TLS TCP, one task per gateway connection, a semaphore capping
//! how many there are, and a broadcast shutdown that lets every connection finish its in-flight
//! commit (and Ack it) before it closes. The shape follows mini-redis' `server.rs`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spark_tls::ServerStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::timeout;
use tracing::{info, warn};

use crate::error::IngestError;
use crate::hub::Hub;
use crate::session;
use crate::store::Store;

/// How the telemetry server behaves. [`ServerConfig::new`] sets the defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requires a client certificate from the device CA (`spark_tls::server_config`).
    pub tls: Arc<rustls::ServerConfig>,
    /// Connections at once; one more is closed at once (and logged).
    pub max_connections: usize,
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time from the handshake to the gateway's Hello.
    pub hello_timeout: Duration,
    /// A connection that sends nothing for this long is closed. Gateways send readings every
    /// 15 minutes and ping when idle, so the default leaves room for both.
    pub idle_timeout: Duration,
    /// A write that cannot complete in this time (the gateway stopped reading) ends the session.
    pub write_timeout: Duration,
    /// `last_seen` is written at most this often (besides on Hello and on every commit).
    pub last_seen_interval: Duration,
}

impl ServerConfig {
    /// Defaults around a ready rustls configuration.
    pub fn new(tls: rustls::ServerConfig) -> ServerConfig {
        ServerConfig {
            tls: Arc::new(tls),
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(20),
            hello_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30 * 60),
            write_timeout: Duration::from_secs(60),
            last_seen_interval: Duration::from_secs(60),
        }
    }

    /// Defaults, with the server certificate chain and key and the device CA from PEM files.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        device_ca: &Path,
    ) -> Result<ServerConfig, IngestError> {
        Ok(ServerConfig::new(spark_tls::gateway_server_config(
            cert, key, device_ca,
        )?))
    }
}

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: ServerConfig,
    pub store: Store,
    pub hub: Hub,
}

/// The telemetry server. Build it, take its [`Hub`] for the internal API, then [`Server::run`].
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    pub fn new(config: ServerConfig, store: Store) -> Result<Server, IngestError> {
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                store,
                hub: Hub::new(),
            }),
        })
    }

    /// Connected gateways and the command path into their connections.
    pub fn hub(&self) -> Hub {
        self.shared.hub.clone()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Accepts connections on `listener` until `shutdown` completes, then waits for every
    /// connection to finish its in-flight commit, Ack it and close.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), IngestError> {
        let (notify_shutdown, _) = broadcast::channel::<()>(1);
        // Each connection task holds a sender; recv() returns None once all are gone.
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let limit = Arc::new(Semaphore::new(self.shared.config.max_connections));
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, max_connections = self.shared.config.max_connections,
                "telemetry listener ready");
        }

        let accept = async {
            let mut backoff = Duration::from_millis(10);
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(conn) => {
                        backoff = Duration::from_millis(10);
                        conn
                    }
                    Err(e) => {
                        // EMFILE and friends: wait a little instead of spinning.
                        warn!("accept failed: {e}; retrying in {backoff:?}");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    warn!(%peer, max = self.shared.config.max_connections,
                        "connection cap reached; closing the new connection");
                    drop(socket);
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let shared = self.shared.clone();
                let mut shutdown = Shutdown::new(notify_shutdown.subscribe());
                let done = done_tx.clone();
                tokio::spawn(async move {
                    connection(shared, socket, peer, &mut shutdown).await;
                    drop(permit);
                    drop(done);
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = shutdown => info!("shutting down: connections finish their in-flight commits"),
        }
        drop(listener);
        drop(notify_shutdown);
        drop(done_tx);
        let _ = done_rx.recv().await;
        info!("telemetry server stopped");
        Ok(())
    }
}

/// One connection: the TLS handshake, the gateway's identity from its certificate, the session.
///
/// Memory: this future is what a connection's task holds for hours, so both phases are boxed.
/// The handshake's state is freed when it ends, and the session's state is allocated at its own
/// size; unboxed, the task would reserve room for both phases plus a moved-from copy of the TLS
/// stream (measured: the task was ~5.6 KB of an idle connection's ~17 KB).
async fn connection(
    shared: Arc<Shared>,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: &mut Shutdown,
) {
    let session = {
        let handshake_timeout = shared.config.handshake_timeout;
        let handshake = Box::pin(timeout(
            handshake_timeout,
            ServerStream::accept(socket, shared.config.tls.clone()),
        ));
        let stream = tokio::select! {
            biased;
            () = shutdown.recv() => return,
            r = handshake => match r {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    warn!(%peer, "TLS handshake failed: {e} (unknown CA, expired or missing client \
                        certificate, or not TLS); connection closed");
                    return;
                }
                Err(_) => {
                    warn!(%peer, "TLS handshake not done within {}s; connection closed",
                        handshake_timeout.as_secs());
                    return;
                }
            },
        };
        // The verifier accepted the chain; the gateway is the certificate's CN and nothing else.
        let gateway = match spark_tls::PeerIdentity::of_server_connection(stream.common_state()) {
            Ok(id) => id.common_name,
            Err(e) => {
                warn!(%peer, "client certificate accepted but unusable: {e}; connection closed");
                return;
            }
        };
        // Built inside this block so no local copy of the stream outlives it.
        Box::pin(session::serve(shared, stream, peer, gateway, shutdown))
    };
    session.await;
}

/// Listens for the server's shutdown broadcast (mini-redis' `Shutdown`).
#[derive(Debug)]
pub(crate) struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    pub(crate) fn new(notify: broadcast::Receiver<()>) -> Shutdown {
        Shutdown {
            is_shutdown: false,
            notify,
        }
    }

    /// Completes once shutdown began (at once if it already had).
    pub(crate) async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Closed or a message: either way, shutdown.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}
