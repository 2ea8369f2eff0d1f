//! Figure: resident memory of the real `spark-updated` binary, idle and while downloading.
//!
//! Starts the binary against a testbed (private dbus-daemon + real `rauc service`) and the test
//! OTA server, reads `/proc/PID/status` when it is idle and while it downloads a 4 MiB bundle at
//! 256 KiB/s, prints the figures and stops it with SIGTERM. The bundle is served tampered, so
//! the run ends in a digest mismatch and never reaches RAUC's install or `systemctl reboot`.
//!
//! ```text
//! cargo build --release -p spark-updated --bin spark-updated --example rss
//! target/release/examples/rss            # measures target/release/spark-updated
//! target/release/examples/rss PATH       # or another build of the binary
//! ```
//! Needs what the agent tests need (root, rauc, dbus-daemon).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{OtaServer, Pki, noise};
use spark_testbed::{Testbed, TestbedOptions};

/// `VmRSS`, `RssAnon`, `RssFile`, `VmHWM` (KiB) and `Threads` of a process.
fn memory(pid: u32) -> [u64; 5] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    [
        field("VmRSS"),
        field("RssAnon"),
        field("RssFile"),
        field("VmHWM"),
        field("Threads"),
    ]
}

/// Resident KiB per mapped file (anonymous mappings as "[anon]"), largest first.
fn by_mapping(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("process smaps");
    let mut sums: Vec<(String, u64)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let name = fields.nth(4).unwrap_or("[anon]");
            current = std::path::Path::new(name)
                .file_name()
                .map_or(name.to_owned(), |n| n.to_string_lossy().into_owned());
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match sums.iter_mut().find(|(n, _)| *n == current) {
                Some((_, total)) => *total += kib,
                None => sums.push((current.clone(), kib)),
            }
        }
    }
    sums.sort_by_key(|s| std::cmp::Reverse(s.1));
    sums
}

fn show(label: &str, m: [u64; 5]) {
    println!(
        "{label:<12} VmRSS {:>6} KiB  (anon {:>6} KiB, file {:>6} KiB)  peak {:>6} KiB  threads {}",
        m[0], m[1], m[2], m[3], m[4]
    );
}

async fn state(proxy: &spark_dbus::Update1Proxy<'_>, want: &str) {
    for _ in 0..600 {
        if proxy.state().await.unwrap_or_default() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the agent did not reach state {want} within 30 s");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let bin = std::env::args_os().nth(1).map_or_else(
        || {
            let exe = std::env::current_exe().expect("own path");
            // target/<profile>/examples/rss -> target/<profile>/spark-updated
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .join("spark-updated")
        },
        PathBuf::from,
    );
    let pki = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bed = Testbed::start(TestbedOptions::new(common::COMPATIBLE, pki.pki.keyring()))
        .expect("testbed");
    let bundle = noise(27, 4 << 20);
    let release = pki.sign(|_| {}, &bundle);
    let mut tampered = bundle.clone();
    tampered[0] ^= 1;
    server.publish(&release, bundle.clone());
    server.put(&OtaServer::bundle_path(&bundle), tampered);

    let data = pki.dir.path().join("data");
    let config = pki.dir.path().join("updated.toml");
    let p = &pki.pki;
    std::fs::write(
        &config,
        format!(
            "device = \"{device}\"\ndata-dir = \"{data}\"\nserver = \"{server}\"\n\
             server-ca = \"{ca}\"\ndevice-cert = \"{cert}\"\ndevice-key = \"{key}\"\n\
             release-keys = [\"{release}\"]\nfactory-version = \"1.0.0\"\n\
             poll-interval-secs = 3600\nrate-limit = 262144\nreserve-bytes = 0\n",
            device = common::DEVICE,
            data = data.display(),
            server = server.base(),
            ca = p.server_ca_cert().display(),
            cert = pki.device_cert.display(),
            key = pki.device_key.display(),
            release = p.release_pub().display(),
        ),
    )
    .expect("config");
    let mut child = tokio::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bed.bus_address())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let pid = child.id().expect("pid");
    let conn = zbus::connection::Builder::address(bed.bus_address())
        .expect("bus address")
        .build()
        .await
        .expect("bus");
    let proxy = spark_dbus::Update1Proxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .expect("proxy");
    println!("{}", bin.display());
    state(&proxy, "idle").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    show("idle", memory(pid));
    for (name, kib) in by_mapping(pid).into_iter().filter(|(_, k)| *k >= 64) {
        println!("    {kib:>6} KiB  {name}");
    }
    proxy.check_now().await.expect("CheckNow");
    state(&proxy, "downloading").await;
    for second in 1..=4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        show(&format!("download {second}s"), memory(pid));
    }
    state(&proxy, "failed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    show("idle again", memory(pid));
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exit within 10 s")
        .expect("exit status");
    assert!(status.success(), "{status}");
}
