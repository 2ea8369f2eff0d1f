//! Benchmark 4 helper (not part of the normal run): peak RSS of the uplinkd binary moving a day
//! of 2000 meters to the real ingest. Run the release build with
//!
//! ```sh
//! cargo build --release -p spark-uplinkd
//! SPARK_UPLINKD_BIN=$PWD/target/release/spark-uplinkd \
//!   cargo test -p spark-uplinkd --test rss -- --ignored --nocapture
//! ```

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::meters::FakeMeters;
use common::*;
use spark_testbed::PrivateBus;

const SERIAL: &str = "GW-RSS-1";

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run the release binary by hand (see the file docs)"]
async fn rss_with_2000_meters() {
    // An absolute path: cargo runs tests in the package directory.
    let bin = std::env::var("SPARK_UPLINKD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_spark-uplinkd").to_owned());
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let meters = FakeMeters::start(bus.address(), 2000).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: cloud.addr,
        data_dir: &data,
    };
    let config = dir.path().join("uplinkd.toml");
    std::fs::write(&config, setup.toml()).unwrap();
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // A day of readings, 96 intervals of 2000 meters, as fast as the link takes them.
    for _ in 0..96 {
        meters.interval().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = meters.generated().len() as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while cloud.store.reading_count(Some(SERIAL)).await.unwrap() < want {
        assert!(Instant::now() < deadline, "readings did not all arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (hwm, rss) = (status_kib(pid, "VmHWM:"), status_kib(pid, "VmRSS:"));
    println!(
        "spark-uplinkd ({bin}): 2000 meters, {want} readings: peak RSS {:.1} MiB, idle RSS {:.1} MiB",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(cloud.store.reading_count(Some(SERIAL)).await.unwrap(), want);
}
