//! `kill -9` of the real spark-uplinkd binary at random moments while the simulator and the
//! real spark-meterd produce readings: every reading still reaches the cloud exactly once (the
//! queue, the roster and the meterd cursor recover from /data).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::meterd::RealMeters;
use common::*;
use rand::{Rng, SeedableRng};
use spark_testbed::PrivateBus;

const SERIAL: &str = "GW-KILL-1";

fn spawn(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_spark-uplinkd"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "spark_uplinkd=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_still_exactly_once() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
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
    let log = dir.path().join("uplinkd.log");

    // 300 intervals of 50 meters, one every 15 ms: about 4.5 s of readings.
    let meters = RealMeters::start(bus.address(), 50, 300, Duration::from_millis(15), 21).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for round in 0..10 {
        let mut child = spawn(&config, &log);
        // The kill lands anywhere: mid-fetch, mid-append, mid-batch, between a commit and its
        // Ack, during the TLS handshake.
        let run_for = Duration::from_millis(rng.gen_range(80..600));
        tokio::time::sleep(run_for).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        tracing::info!(round, ?run_for, "uplinkd killed");
        // meterd keeps reading while uplinkd is down.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
    }
    let mut child = spawn(&config, &log);
    meters.wait_finished(WAIT).await;
    let generated = meters.generated();
    let want = generated.len();
    let deadline = Instant::now() + WAIT;
    while (cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize) < want {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: String = text.lines().rev().take(40).collect::<Vec<_>>().join("\n");
            panic!("not all readings arrived; uplinkd log (newest first):\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing is left for meterd to keep: the last cursor covers everything.
    wait_for("meterd's buffer released", || async {
        meters.buffered().await == 0
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_exactly_once(&generated, &cloud.readings(SERIAL).await);
    assert_eq!(cloud.store.duplicate_readings().await.unwrap(), 0);
}
