//! The servers under test as child processes: the real `spark-ota serve` (release build, from the
//! bench's own target directory) and an unprivileged nginx on a loopback port. Each is stopped
//! with SIGTERM (then SIGKILL after a grace period) when its [`Proc`] is dropped, so the bench
//! leaves nothing running whether it ends normally, with an error, or on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running child server.
pub struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// Memory of a process from `/proc/PID/status`, in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident now.
    pub rss_kib: u64,
    /// Peak resident since start.
    pub hwm_kib: u64,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Proc {
            name,
            child,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `addr` accepts TCP connections; fails with the log's tail if the process
    /// exits or `timeout` passes first.
    pub async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!(
                    "{} not listening on {addr} after {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// VmRSS and VmHWM of the process.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = text
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name} in {path}"))?;
            Ok(line.trim().trim_end_matches("kB").trim().parse()?)
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// SIGTERM, up to 15 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop within 15 s of SIGTERM; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port (bound and released; the child binds it right after).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// Paths the servers share.
pub struct Tls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub device_ca: &'a Path,
}

/// Writes `spark-ota`'s config (SQLite in `data_dir`) to `path`.
#[allow(clippy::too_many_arguments)]
pub fn write_ota_config(
    path: &Path,
    device: SocketAddr,
    admin: SocketAddr,
    data_dir: &Path,
    keyring: &Path,
    release_pub: &Path,
    tls: &Tls<'_>,
) -> anyhow::Result<()> {
    let text = format!(
        r#"listen = "{device}"
admin-listen = "{admin}"
data-dir = "{data}"
keyring = "{keyring}"
release-keys = ["{release}"]
[tls]
cert = "{cert}"
key = "{key}"
device-ca = "{device_ca}"
"#,
        data = data_dir.display(),
        keyring = keyring.display(),
        release = release_pub.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        device_ca = tls.device_ca.display(),
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// Starts nginx serving the files of `root` on `addr` with the same server certificate and the
/// same device-CA client-certificate requirement as spark-ota: an instance of its own (prefix,
/// config, pid and logs in `dir`), 2 worker processes (the machine's cores; spark-ota's runtime
/// has as many threads), no access log.
pub fn start_nginx(
    nginx: &Path,
    dir: &Path,
    root: &Path,
    addr: SocketAddr,
    tls: &Tls<'_>,
) -> anyhow::Result<Proc> {
    // As root, nginx's workers drop to `nobody`, which must be able to read the served file.
    let user = if rustix::process::geteuid().is_root() {
        "user nobody nogroup;"
    } else {
        ""
    };
    let conf = format!(
        r#"{user}
worker_processes 2;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    # Reads of the file in 256 KiB, as spark-ota's download path does (default: 2 × 32 KiB).
    output_buffers 2 256k;
    server {{
        listen {addr} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_client_certificate {device_ca};
        ssl_verify_client on;
        ssl_protocols TLSv1.2 TLSv1.3;
        root {root};
        location / {{ }}
    }}
}}
"#,
        dir = dir.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
        device_ca = tls.device_ca.display(),
        root = root.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log")),
        &dir.join("nginx.out"),
    )
}
