//! One daemon or service of the fleet as a child process: its output in a log file, an orderly
//! stop (SIGTERM, as systemd sends at shutdown, then SIGKILL after a bound), a power cut
//! (SIGKILL), and no process left behind when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::FleetError;

/// How often a child or a condition is looked at while waiting.
pub const POLL: Duration = Duration::from_millis(50);

/// A running program of the fleet.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon, FleetError> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(FleetError::io("open log", log))?;
        let err = out.try_clone().map_err(FleetError::io("open log", log))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| FleetError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        tracing::debug!(name, pid = child.id(), "started");
        Ok(Daemon {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An error unless the process still runs; `during` says what was being waited for.
    pub fn check_running(&mut self, during: &str) -> Result<(), FleetError> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.exited("stopped", during));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(&status.to_string(), during)),
            Err(e) => Err(self.exited(&e.to_string(), during)),
        }
    }

    fn exited(&self, status: &str, during: &str) -> FleetError {
        FleetError::Exited {
            name: self.name.clone(),
            status: status.to_owned(),
            during: during.to_owned(),
            log: self.log.clone(),
            tail: tail(&self.log, 20),
        }
    }

    /// Waits (bounded) for the process to end by itself; an error if it fails or outlasts
    /// `limit` (it is killed then).
    pub fn wait_exit(&mut self, what: &str, limit: Duration) -> Result<(), FleetError> {
        let deadline = Instant::now() + limit;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    self.child = None;
                    return Ok(());
                }
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(self.exited(&status.to_string(), what));
                }
                Ok(None) if Instant::now() > deadline => {
                    self.kill();
                    return Err(FleetError::Timeout {
                        what: format!("{} to finish {what}", self.name),
                        secs: limit.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => return Err(self.exited(&e.to_string(), what)),
            }
        }
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; reaps it either way.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        tracing::warn!(name = %self.name, "did not stop within {grace:?} of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL and reap: a power cut as far as this program is concerned.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `ready` every [`POLL`] until it returns `Some`, for at most `limit`; `alive` is checked
/// on each round so a crashed process fails at once with its log rather than at the deadline.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut alive: impl FnMut() -> Result<(), FleetError>,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T, FleetError> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = ready() {
            return Ok(v);
        }
        alive()?;
        if Instant::now() > deadline {
            return Err(FleetError::Timeout {
                what: what.to_owned(),
                secs: limit.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: the small window in which another
/// program could take it is acceptable for a fleet on one machine).
pub fn free_port() -> Result<u16, FleetError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(FleetError::io("bind", "127.0.0.1:0"))?;
    Ok(l.local_addr()
        .map_err(FleetError::io("read address of", "127.0.0.1:0"))?
        .port())
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}
