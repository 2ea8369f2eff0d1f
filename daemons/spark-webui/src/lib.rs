//! `spark-webui`: the on-site status page site staff open over the gateway's Wi-Fi.
//!
//! ```text
//!  browser ──HTTPS (self-signed, per device)──▶ server ──▶ render ◀── state::Snapshot
//!                 login: password (Argon2id on /data), session cookie        ▲
//!                 /events: server-sent events                                │ D-Bus (read only)
//!        io.spark.Meters1 · io.spark.Uplink1 · io.spark.Update1 · de.pengutronix.rauc
//! ```
//!
//! Modules:
//! - [`config`] — the TOML config;
//! - [`tls`] — the listener's certificate (made at first start, fingerprint logged);
//! - [`password`] — the site password's hash on `/data` and `set-password`;
//! - [`session`] — sessions and the backoff after wrong passwords;
//! - [`state`] — what the page shows, read over D-Bus and kept current;
//! - [`render`] — the HTML;
//! - [`server`] — accept loop and routes;
//! - [`run`] — wires it together.

pub mod config;
pub mod password;
pub mod render;
pub mod server;
pub mod session;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use crate::config::{Config, ConfigError};
pub use crate::password::{PasswordError, PasswordFile};
pub use crate::tls::TlsSetupError;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(
        "cannot listen on {addr}: {source}; is another server on that port, and may this user bind it?"
    )]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Binds `config.listen` and serves until `shutdown` resolves; `ready` is called once the
/// listener is bound (sd_notify READY in `main`).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: config.listen,
            source,
        })?;
    run_on(config, listener, shutdown, ready).await
}

/// [`run`] on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn run_on(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let tls = tls::server_tls(&config)?;
    tracing::info!(
        fingerprint = %tls.fingerprint,
        cert = %tls.cert_path.display(),
        "TLS certificate SHA-256 fingerprint (print it on the device label; staff compare it with the browser's)"
    );
    let password = PasswordFile::new(&config.data_dir);
    if !password.is_set() {
        tracing::warn!(
            "no site password set: nobody can log in until `spark-webui set-password` sets one"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let (watcher, state) = state::Watcher::new(config.bus_address.clone(), config.refresh());
    let watcher = {
        let mut stop = stop_rx.clone();
        tokio::spawn(watcher.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let app = Arc::new(server::App {
        password,
        sessions: session::Sessions::new(config.session_lifetime()),
        backoff: session::Backoff::default(),
        state,
        host: tls::hostname(),
        stop: stop_rx.clone(),
        streams: Arc::new(Semaphore::new(server::MAX_EVENT_STREAMS)),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "spark-webui listening (HTTPS)");
    }
    ready();
    let server = tokio::spawn(server::serve(
        listener,
        acceptor,
        server::router(app),
        stop_rx,
    ));
    shutdown.await;
    tracing::info!("stopping");
    stop_tx.send_replace(true);
    let _ = server.await;
    let _ = watcher.await;
    Ok(())
}

/// `spark-webui set-password`: reads one line from `input` and stores its hash.
pub fn set_password(
    config: &Config,
    input: &mut impl std::io::BufRead,
) -> Result<(), PasswordError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|source| PasswordError::Io {
            action: "read the password from",
            path: "standard input".into(),
            source,
        })?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    let file = PasswordFile::new(&config.data_dir);
    file.set(password)?;
    tracing::info!(path = %file.path().display(), "site password set; existing sessions stay until they expire or the daemon restarts");
    Ok(())
}
