//! Serving the router over mutual TLS: one task per connection, a cap on connections, the
//! client certificate's CN (optionally checked against `allowed-clients`) put into each request,
//! and a graceful shutdown that lets requests in progress finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::routes::Caller;

/// How the listener behaves.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Demands client certificates (from the server CA).
    pub tls: Arc<rustls::ServerConfig>,
    /// Client certificate CNs allowed; empty: any certificate the CA issued.
    pub allowed_clients: Vec<String>,
    pub handshake_timeout: Duration,
    /// Connections at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
}

impl ServeConfig {
    pub fn new(tls: rustls::ServerConfig, allowed_clients: Vec<String>) -> ServeConfig {
        let mut tls = tls;
        // HTTP/1.1 only (hyper's http1 server); say so in ALPN for clients that ask.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        ServeConfig {
            tls: Arc::new(tls),
            allowed_clients,
            handshake_timeout: Duration::from_secs(20),
            max_connections: 1024,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then waits (at most `drain`) for the
/// requests in progress.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = TlsAcceptor::from(config.tls.clone());
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.max_connections));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "spark-api listening (HTTPS, client certificates required)");
    }
    let accept = async {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (socket, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, config, app, stop) = (
                acceptor.clone(),
                config.clone(),
                app.clone(),
                stop_rx.clone(),
            );
            tokio::spawn(async move {
                connection(acceptor, &config, app, socket, peer, stop).await;
                drop(permit);
            });
        }
    };
    tokio::select! {
        () = accept => {}
        () = shutdown => {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all permits back means all done.
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    let _ = timeout(Duration::from_secs(90), slots.acquire_many(all)).await;
}

async fn connection(
    acceptor: TlsAcceptor,
    config: &ServeConfig,
    app: Router,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let stream = match timeout(config.handshake_timeout, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            warn!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let caller = match spark_tls::PeerIdentity::of_server_connection(stream.get_ref().1) {
        Ok(id) => id.common_name,
        Err(e) => {
            warn!(%peer, "unusable client certificate: {e}");
            return;
        }
    };
    if !config.allowed_clients.is_empty() && !config.allowed_clients.contains(&caller) {
        warn!(%peer, %caller, "client certificate CN not in allowed-clients; connection closed");
        return;
    }
    let service = WithCaller {
        inner: TowerToHyperService::new(app),
        caller: Caller(caller.into()),
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                info!(%peer, "connection ended: {e}");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = timeout(Duration::from_secs(80), conn).await;
        }
    }
}

/// Completes once shutdown is signalled (the watch guard is dropped inside, so the connection's
/// future stays `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Puts the caller's identity into each request's extensions.
#[derive(Debug, Clone)]
struct WithCaller {
    inner: TowerToHyperService<Router>,
    caller: Caller,
}

impl hyper::service::Service<Request<Incoming>> for WithCaller {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.caller.clone());
        self.inner.call(req)
    }
}
