//! `kill -9` of the real `spark-pipeline` binary at random points while readings keep arriving;
//! restarted each time; at the end the aggregates equal the offline reference computed from the
//! raw rows, and the events equal those of an uninterrupted run over the same data.
//!
//! The size is a parameter: `SPARK_CHAOS_READINGS` (default 40 000 on PostgreSQL, 15 000 on
//! SQLite, a few seconds each). `ci/pipeline-chaos.sh` runs it with 1 000 000 readings.

use std::time::{Duration, Instant};

use rand::Rng;

use super::*;

fn readings(default: usize) -> usize {
    std::env::var("SPARK_CHAOS_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn kill9(kind: Kind, default_readings: usize) {
    common::init_tracing();
    let n = readings(default_readings);
    let gateways = 8;
    let meters = 100;
    let started = Instant::now();
    let data = DataSet::generate(2026, n, gateways, meters);
    let total = data.readings();
    let db = TestDb::new(kind).await;
    // Pipeline tables exist before the first kill (the binary would create them too).
    db.pipeline().await.close().await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "database = {:?}\nworkers = 4\nbatch-readings = 4000\nbatch-wait-ms = 100\npoll-interval-ms = 20\n",
            db.url
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_spark-pipeline");

    // Ingest's side: messages arrive round-robin across gateways while the pipeline runs.
    let url = db.url.clone();
    let feed_data: Vec<(String, Vec<Vec<common::R>>)> = data.gateways.clone();
    let feeder = tokio::spawn(async move {
        let mut feed = common::Feeder::connect(&url, kind).await;
        let intervals = feed_data[0].1.len();
        for i in 0..intervals {
            for (g, messages) in &feed_data {
                feed.message(g, i as i64 + 1, &messages[i]).await;
            }
        }
    });

    let mut kills = 0;
    let mut rng = rand::thread_rng();
    while !feeder.is_finished() || kills < 6 {
        let mut child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start spark-pipeline");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..700))).await;
        child.start_kill().unwrap(); // SIGKILL
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited: {status:?}");
        kills += 1;
    }
    feeder.await.unwrap();
    let fed = started.elapsed();

    // Finish: the binary as a catch-up job.
    let status = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--until-idle")
        .env("RUST_LOG", "warn")
        .status()
        .await
        .unwrap();
    assert!(status.success());

    let store = db.pipeline().await;
    let consumed: i64 = store.cursors().await.unwrap().iter().map(|c| c.2).sum();
    assert_eq!(
        consumed as usize, total,
        "every reading consumed exactly once"
    );
    check_against_reference(&db, &data).await;

    // Events: the same as one uninterrupted run over the same data.
    let clean = TestDb::new(kind).await;
    data.store_all(&mut clean.feeder().await).await;
    let clean_store = clean.pipeline().await;
    spark_pipeline::drain(clean_store.clone(), config_for_events())
        .await
        .unwrap();
    let events = store.events().await.unwrap();
    assert_eq!(events, clean_store.events().await.unwrap());
    println!(
        "chaos {kind:?}: {total} readings, {gateways} gateways, {kills} kill -9, {} events, equal to the reference; {:.1} s",
        events.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = fed;
}

fn config_for_events() -> PipelineConfig {
    config(10_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_postgres() {
    kill9(Kind::Postgres, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_sqlite() {
    kill9(Kind::Sqlite, 8_000).await;
}
