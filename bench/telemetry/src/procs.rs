//! Running the real binaries under measurement: find them next to this one, start them with a
//! config, wait until they listen, read their memory from /proc, stop them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A binary of this workspace, built into the same directory as the running benchmark; gateway
/// daemons come from `SPARK_BENCH_GATEWAY_DIR` when set (`target/gateway`, the size-optimised
/// profile they ship with).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locate the benchmark binary")?;
    let mut dir = me
        .parent()
        .context("benchmark binary has no directory")?
        .to_owned();
    if let Some(gateway) = std::env::var_os("SPARK_BENCH_GATEWAY_DIR")
        && (name == "spark-meterd" || name == "spark-uplinkd")
    {
        dir = PathBuf::from(gateway);
    }
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build the workspace first (cargo build --release --workspace)",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        // SPARK_BENCH_WRAP="valgrind --tool=massif" runs the binaries under a profiler.
        let wrap = std::env::var("SPARK_BENCH_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut command = match words.next() {
            Some(wrapper) => {
                let mut c = Command::new(wrapper);
                c.args(words).arg(workspace_binary(name)?);
                c
            }
            None => Command::new(workspace_binary(name)?),
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Proc {
            child,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("process already exited")
    }

    /// SIGTERM, then waits (bounded) for the exit, so profilers and logs finish their output.
    pub async fn terminate(&mut self) {
        if let Ok(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        }
    }

    /// Resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid()?, "VmRSS:")
    }

    /// Peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        status_kib(self.pid()?, "VmHWM:")
    }
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed status line")?
        .parse()?)
}

/// Waits (bounded) until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr, proc: &mut Proc, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = proc.child.try_wait()? {
            bail!(
                "{} exited with {status}:\n{}",
                proc.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            bail!("{} did not listen on {addr} within 30 s", proc.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: racy only against other benchmarks).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
