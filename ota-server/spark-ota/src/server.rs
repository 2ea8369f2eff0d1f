//! The listeners: TLS accept loops for the device API (client certificate from the device CA
//! required, the device is its CN) and the admin API (an admin client certificate is optional;
//! without one the admin token decides), one task per connection, HTTP/1.1 keep-alive, a cap on
//! connections, graceful shutdown (in-flight requests finish; byte counters are flushed).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use spark_image::Keyring;
use spark_release::{KeyId, SigningKey, TrustedKeys};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::api::{self, AdminIdentity, AppState, DeviceIdentity};
use crate::catalog::Catalog;
use crate::clock::ServerClock;
use crate::config::Config;
use crate::download::Accounting;
use crate::error::ServeError;
use crate::push::Pusher;
use crate::rollouts::Rollouts;
use crate::store::Store;
use crate::telemetry::{IngestTelemetry, TelemetrySource};

/// Connections at once per listener; one more waits for a free slot.
pub const MAX_CONNECTIONS: usize = 20_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// A keep-alive connection that sends no request header within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(120);

/// A configured server, ready to run on two listeners.
pub struct Server {
    pub state: AppState,
    device_tls: Arc<rustls::ServerConfig>,
    admin_tls: Arc<rustls::ServerConfig>,
    admin_clients: Arc<Vec<String>>,
    pusher: Option<Pusher>,
    tick: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// The admin listener's TLS: a client certificate is verified against `admin_ca` when given, but
/// not required (token users have none); without `admin_ca` no certificate is asked for.
fn admin_tls(config: &Config) -> Result<rustls::ServerConfig, ServeError> {
    let builder = rustls::ServerConfig::builder_with_provider(spark_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(spark_tls::TlsError::from)?;
    let builder = match &config.tls.admin_ca {
        Some(ca) => {
            let roots = Arc::new(spark_tls::load_roots(ca)?);
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots, spark_tls::provider())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| spark_tls::TlsError::ClientVerifier {
                        path: ca.clone(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(builder
        .with_single_cert(
            spark_tls::load_certs(&config.tls.cert)?,
            spark_tls::load_key(&config.tls.key)?,
        )
        .map_err(spark_tls::TlsError::from)?)
}

/// Loads the dev-mode release key and checks that devices can verify what it signs: its public
/// half must be one of the trusted release keys. Warns loudly, once, at start-up.
fn dev_release_key(path: &Path, trusted: &TrustedKeys) -> Result<SigningKey, ServeError> {
    let key = spark_release::load_signing_key(path).map_err(|source| ServeError::DevKey {
        path: path.to_owned(),
        source,
    })?;
    let public = key.verifying_key();
    let key_id = KeyId::of(&public);
    if trusted.get(key_id) != Some(&public) {
        return Err(ServeError::DevKeyNotTrusted {
            path: path.to_owned(),
            key_id: key_id.to_string(),
        });
    }
    warn!(
        key = %path.display(),
        %key_id,
        "dev mode: this server holds a release private key; never in production (uploads without a signed manifest are signed by the server)"
    );
    Ok(key)
}

impl Server {
    /// Opens the database (applying migrations), the blob store, keys and TLS material. Rollouts
    /// run on the clock the config asks for and read telemetry from ingest when `[push]` is set.
    pub async fn from_config(config: &Config) -> Result<Server, ServeError> {
        Server::from_config_with(config, None, None).await
    }

    /// As [`Server::from_config`], with the rollout clock and the telemetry source chosen by the
    /// caller (`None`: as configured; `Some(None)` for telemetry: none).
    pub async fn from_config_with(
        config: &Config,
        clock: Option<ServerClock>,
        telemetry: Option<Option<Arc<dyn TelemetrySource>>>,
    ) -> Result<Server, ServeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let store = Store::connect(&config.database, config.database_connections).await?;
        let keyring = Keyring::load(&config.keyring).map_err(|source| ServeError::Keyring {
            path: config.keyring.clone(),
            source,
        })?;
        let mut keys = TrustedKeys::new();
        for path in &config.release_keys {
            keys.load_pem_file(path)
                .map_err(|source| ServeError::ReleaseKey {
                    path: path.clone(),
                    source,
                })?;
        }
        let dev_key = match &config.dev {
            None => None,
            Some(dev) => Some(dev_release_key(&dev.release_key, &keys)?),
        };
        let mut catalog = Catalog::new(
            store.clone(),
            &config.data_dir,
            keyring,
            config.verify.clone(),
            keys,
            config.max_bundle_bytes,
        )
        .map_err(|source| ServeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        if let Some(key) = dev_key {
            catalog = catalog.with_dev_key(key);
        }
        let device_tls =
            spark_tls::server_config(&config.tls.cert, &config.tls.key, &config.tls.device_ca)?;
        let clock = clock.unwrap_or_else(|| config.rollouts.clock());
        let telemetry =
            match telemetry {
                Some(t) => t,
                None => match &config.push {
                    Some(p) => Some(Arc::new(IngestTelemetry::new(p, clock.clone())?)
                        as Arc<dyn TelemetrySource>),
                    None => None,
                },
            };
        let push_wake = Arc::new(tokio::sync::Notify::new());
        let rollouts = Arc::new(Rollouts::new(
            store.clone(),
            clock,
            telemetry,
            push_wake.clone(),
        ));
        let state = AppState {
            store: store.clone(),
            catalog,
            accounting: Accounting::default(),
            push_wake,
            rollouts: rollouts.clone(),
        };
        let pusher = match &config.push {
            Some(p) => Some(Pusher::new(p, store, rollouts)?),
            None => None,
        };
        Ok(Server {
            state,
            device_tls: Arc::new(device_tls),
            admin_tls: Arc::new(admin_tls(config)?),
            admin_clients: Arc::new(config.admin_clients.clone()),
            pusher,
            tick: config.rollouts.tick,
        })
    }

    /// Serves both APIs until `shutdown` completes, then lets requests in flight finish.
    pub async fn run(
        self,
        devices: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = self.state.clone();
        let device_app = api::device_router(state.clone());
        let admin_app =
            api::admin_router(state.clone()).merge(crate::dashboard::router(state.clone()));
        let device_acceptor = TlsAcceptor::from(self.device_tls.clone());
        let admin_acceptor = TlsAcceptor::from(self.admin_tls.clone());
        let admin_clients = self.admin_clients.clone();

        let dev = tokio::spawn(accept_loop(
            devices,
            device_acceptor,
            device_app,
            stop_rx.clone(),
            Listener::Device,
            admin_clients.clone(),
        ));
        let adm = tokio::spawn(accept_loop(
            admin,
            admin_acceptor,
            admin_app,
            stop_rx.clone(),
            Listener::Admin,
            admin_clients,
        ));
        let flusher = {
            let state = state.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => break,
                    }
                    if let Err(e) = state.accounting.flush(&state.store).await {
                        warn!("cannot record bytes served (kept for the next try): {e}");
                    }
                }
            })
        };
        let ticker = {
            let rollouts = state.rollouts.clone();
            let mut stop = stop_rx.clone();
            let period = self.tick;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop.changed() => break,
                    }
                    if let Err(e) = rollouts.tick().await {
                        warn!("rollout tick failed (retried at the next): {e}");
                    }
                }
            })
        };
        let pusher = self.pusher.map(|p| {
            let wake = state.push_wake.clone();
            tokio::spawn(p.run(wake, stop_rx.clone()))
        });
        shutdown.await;
        info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
        let _ = dev.await;
        let _ = adm.await;
        let _ = flusher.await;
        let _ = ticker.await;
        if let Some(p) = pusher {
            let _ = p.await;
        }
        if let Err(e) = state.accounting.flush(&state.store).await {
            warn!("bytes served in the last second are not recorded: {e}");
        }
        state.store.close().await;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Device,
    Admin,
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
    kind: Listener,
    admin_clients: Arc<Vec<String>>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, listener = ?kind, "listening");
    }
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = socket.set_nodelay(true);
        let (acceptor, app, stop, admin_clients) = (
            acceptor.clone(),
            app.clone(),
            stop.clone(),
            admin_clients.clone(),
        );
        tasks.spawn(async move {
            connection(acceptor, app, socket, peer, stop, kind, &admin_clients).await;
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow with the history.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

async fn connection(
    acceptor: TlsAcceptor,
    app: Router,
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    kind: Listener,
    admin_clients: &[String],
) {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(%peer, listener = ?kind, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            warn!(%peer, listener = ?kind, "TLS handshake timed out");
            return;
        }
    };
    let cn =
        spark_tls::PeerIdentity::of_server_connection(stream.get_ref().1).map(|id| id.common_name);
    let service = match kind {
        Listener::Device => match cn {
            Ok(cn) => WithIdentity {
                inner: TowerToHyperService::new(app),
                identity: Identity::Device(DeviceIdentity(cn.into())),
            },
            Err(e) => {
                warn!(%peer, "device certificate unusable: {e}");
                return;
            }
        },
        Listener::Admin => {
            let cn = cn.ok();
            if let Some(cn) = &cn
                && !admin_clients.is_empty()
                && !admin_clients.contains(cn)
            {
                warn!(%peer, %cn, "admin client certificate CN not in admin-clients; closed");
                return;
            }
            WithIdentity {
                inner: TowerToHyperService::new(app),
                identity: Identity::Admin(AdminIdentity(cn.map(Into::into))),
            }
        }
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        }
    }
}

#[derive(Debug, Clone)]
enum Identity {
    Device(DeviceIdentity),
    Admin(AdminIdentity),
}

/// Puts the peer's identity into each request's extensions.
#[derive(Debug, Clone)]
struct WithIdentity {
    inner: TowerToHyperService<Router>,
    identity: Identity,
}

impl hyper::service::Service<Request<Incoming>> for WithIdentity {
    type Response =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Response;
    type Error = <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Error;
    type Future =
        <TowerToHyperService<Router> as hyper::service::Service<Request<Incoming>>>::Future;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        match &self.identity {
            Identity::Device(d) => {
                req.extensions_mut().insert(d.clone());
            }
            Identity::Admin(a) => {
                req.extensions_mut().insert(a.clone());
            }
        }
        self.inner.call(req)
    }
}

/// Binds both listeners from `config` and runs until `shutdown`; `ready` is called once both
/// listen (sd_notify READY in the binary).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let server = Server::from_config(&config).await?;
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.to_string(),
                source,
            })
    };
    let devices = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    ready();
    server.run(devices, admin, shutdown).await
}
