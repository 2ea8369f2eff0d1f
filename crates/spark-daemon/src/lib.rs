//! The start-up and shut-down every Spark daemon (gateway) and service (cloud) shares, so a
//! `main.rs` is only "parse flags, load the config, call the library's `run`":
//!
//! - [`init_logging`]: `tracing` to stderr (journald adds the timestamps), level from
//!   `RUST_LOG`; either full `EnvFilter` directives or, for gateway daemons that count every
//!   resident kilobyte, a plain level ([`Logging::Level`]: EnvFilter's directive parser and regex
//!   engine are ~1 MiB of code a size-optimised daemon would otherwise map).
//! - [`run`]: builds the tokio runtime the caller chose, pings the systemd watchdog at half of
//!   `WatchdogSec` when the unit sets one, hands the library a shutdown future (SIGTERM or
//!   Ctrl-C) and a ready callback that sends `READY=1`, and maps the result to an exit code.
//! - [`fail`]: prints an error with its whole chain of causes (`name: what: why: why`), which
//!   is what a person reading `journalctl` needs to act on.
//!
//! Why systemd's protocol and not a PID file or a fork: units use `Type=notify`, so systemd
//! knows when a daemon is really serving (`READY=1` comes after sockets are bound and the
//! D-Bus name is owned), and `WatchdogSec=` restarts a daemon whose runtime has wedged.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

/// How log lines are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// `RUST_LOG` as `tracing_subscriber::EnvFilter` directives (`info,spark_ingest=debug`).
    EnvFilter,
    /// `RUST_LOG` as one plain level (`error`…`trace`); small code, for gateway daemons.
    Level,
}

/// Starts logging to stderr; the default level is `info`.
pub fn init_logging(logging: Logging) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match logging {
        Logging::EnvFilter => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init(),
        Logging::Level => {
            let level = std::env::var("RUST_LOG")
                .ok()
                .and_then(|v| {
                    v.trim()
                        .parse::<tracing_subscriber::filter::LevelFilter>()
                        .ok()
                })
                .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_max_level(level)
                .init();
        }
    }
}

/// The future a library's `run` returns from when it should stop: SIGTERM or Ctrl-C.
pub type ShutdownSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `task` on a runtime from `runtime` (the caller picks current-thread for gateway
/// daemons, multi-thread for cloud services) with the systemd watchdog pinged while it runs.
/// `task` gets the shutdown signal and a callback to call once it serves (sends `READY=1`).
/// Returns success, or prints the error chain via [`fail`] and returns failure.
pub fn run<F, Fut, E>(name: &str, mut runtime: tokio::runtime::Builder, task: F) -> ExitCode
where
    F: FnOnce(ShutdownSignal, fn()) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Error,
{
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(name, &e),
    };
    let result = runtime.block_on(async {
        spawn_watchdog();
        task(Box::pin(shutdown_signal()), notify_ready).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(name, &e),
    }
}

/// Pings the systemd watchdog (`WATCHDOG=1`) at half of `WatchdogSec` from a task on the
/// current tokio runtime, if the unit sets one. For mains that do not use [`run`].
pub fn spawn_watchdog() {
    if let Some(period) = watchdog_period() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd the service is ready (`READY=1`); a no-op outside systemd.
pub fn notify_ready() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
}

/// Half the systemd watchdog timeout, if the unit sets `WatchdogSec=`.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}

/// Resolves on SIGTERM (systemd's stop) or Ctrl-C.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `e` and its causes, joined by `: `.
pub fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Prints `name: error: cause: cause` to stderr and returns the failure exit code.
pub fn fail(name: &str, e: &dyn Error) -> ExitCode {
    eprintln!("{name}: {}", error_chain(e));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot open /data/queue")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_names_every_cause() {
        let e = Outer(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&e), "cannot open /data/queue: disk full");
    }

    #[test]
    fn run_maps_results_to_exit_codes_and_calls_ready() {
        let ok = run(
            "t",
            tokio::runtime::Builder::new_current_thread(),
            |_shutdown, ready| async move {
                ready();
                Ok::<(), std::io::Error>(())
            },
        );
        assert_eq!(ok, ExitCode::SUCCESS);
        let err = run(
            "t",
            tokio::runtime::Builder::new_current_thread(),
            |_shutdown, _ready| async { Err(std::io::Error::other("boom")) },
        );
        assert_eq!(err, ExitCode::FAILURE);
    }
}
