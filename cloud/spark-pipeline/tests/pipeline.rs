//! The pipeline against real databases (SQLite files and PostgreSQL schemas of their own, with
//! ingest's schema applied by spark-ingest itself): aggregates against an independent offline
//! reference, late data, events, two pipelines at once, shutdown, and `kill -9` of the binary.

mod common;

use common::{DataSet, Kind, T0, TestDb, as_sums, assert_sums_eq, raw_rows, reference};
use spark_pipeline::PipelineConfig;

fn config(batch_readings: u64) -> PipelineConfig {
    PipelineConfig {
        batch_readings,
        batch_wait_ms: 0,
        poll_interval_ms: 20,
        ..PipelineConfig::default()
    }
}

async fn check_against_reference(db: &TestDb, data: &DataSet) {
    let store = db.pipeline().await;
    let c = PipelineConfig::default().consumption;
    let (hourly, daily) = reference(&raw_rows(data), c.max_power_w, c.max_gap_secs);
    assert!(!hourly.is_empty());
    assert_sums_eq(&as_sums(store.hourly().await.unwrap()), &hourly, "hourly");
    assert_sums_eq(&as_sums(store.daily().await.unwrap()), &daily, "daily");
    store.close().await;
}

mod consumption {
    use super::*;

    /// A data set with resets, rollovers, gaps and late readings, consumed in small batches:
    /// equal to the offline reference; then consumed again from scratch with other batch sizes
    /// and the same events come out.
    async fn matches_reference(kind: Kind) {
        common::init_tracing();
        let data = DataSet::generate(11, 12_000, 3, 40);
        let db = TestDb::new(kind).await;
        data.store_all(&mut db.feeder().await).await;
        let store = db.pipeline().await;
        let stats = spark_pipeline::drain(store.clone(), config(7))
            .await
            .unwrap();
        assert_eq!(stats.readings as usize, data.readings());
        assert!(stats.late > 0, "the data set has late readings");
        assert!(stats.batches > 100, "small batches: {}", stats.batches);
        check_against_reference(&db, &data).await;
        let events = store.events().await.unwrap();
        for kind in ["meter_reset", "meter_rollover", "meter_zero_usage"] {
            assert!(events.iter().any(|e| e.kind == kind), "no {kind} event");
        }
        let cursors = store.cursors().await.unwrap();
        assert_eq!(cursors.len(), 3);
        assert!(
            cursors
                .iter()
                .all(|c| c.1 == data.gateways[0].1.len() as i64)
        );

        // The same data in one big batch per gateway: same aggregates and events.
        let db2 = TestDb::new(kind).await;
        data.store_all(&mut db2.feeder().await).await;
        let store2 = db2.pipeline().await;
        spark_pipeline::drain(store2.clone(), config(1_000_000))
            .await
            .unwrap();
        check_against_reference(&db2, &data).await;
        assert_eq!(store2.events().await.unwrap(), events);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matches_reference_sqlite() {
        matches_reference(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn matches_reference_postgres() {
        matches_reference(Kind::Postgres).await;
    }

    /// A reading that arrives after its hours were aggregated re-apportions the interval it
    /// falls in; the totals stay those of the whole series.
    async fn late_reading(kind: Kind) {
        let db = TestDb::new(kind).await;
        let mut feed = db.feeder().await;
        let store = db.pipeline().await;
        let m = |ts: i64, wh: i64| ("M1".to_string(), ts, wh);
        // 10:00 → 13:00, 300 Wh over a three-hour gap: 100 per hour.
        let h10 = T0 + 10 * 3600;
        feed.message("GW", 1, &[m(h10, 1000), m(h10 + 3 * 3600, 1300)])
            .await;
        spark_pipeline::drain(store.clone(), config(100))
            .await
            .unwrap();
        let hours = |rows: Vec<(String, String, i64, i64)>| {
            rows.into_iter()
                .map(|r| ((r.2 - h10) / 3600, r.3))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            hours(store.hourly().await.unwrap()),
            vec![(0, 100), (1, 100), (2, 100)]
        );
        // The 11:00 reading arrives late: 250 Wh were used 10–11, 50 over 11–13.
        feed.message("GW", 2, &[m(h10 + 3600, 1250)]).await;
        let stats = spark_pipeline::drain(store.clone(), config(100))
            .await
            .unwrap();
        assert_eq!(stats.late, 1);
        assert_eq!(
            hours(store.hourly().await.unwrap()),
            vec![(0, 250), (1, 25), (2, 25)]
        );
        assert_eq!(store.daily().await.unwrap()[0].3, 300);
        // A late reading before the first one: its interval is added in front.
        feed.message("GW", 3, &[m(h10 - 1800, 900)]).await;
        spark_pipeline::drain(store.clone(), config(100))
            .await
            .unwrap();
        let got = store.hourly().await.unwrap();
        assert_eq!(got.first().map(|r| (r.2, r.3)), Some((h10 - 3600, 100)));
        // The series keeps going from its newest reading, not from the late one.
        feed.message("GW", 4, &[m(h10 + 3 * 3600 + 900, 1310)])
            .await;
        spark_pipeline::drain(store.clone(), config(100))
            .await
            .unwrap();
        let total: i64 = store.hourly().await.unwrap().iter().map(|r| r.3).sum();
        assert_eq!(total, 1310 - 900);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_reading_sqlite() {
        late_reading(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn late_reading_postgres() {
        late_reading(Kind::Postgres).await;
    }

    /// Two pipeline nodes on one PostgreSQL at once: the cursor's compare-and-set lets only one
    /// of them write each batch; nothing is counted twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_nodes_count_once() {
        let data = DataSet::generate(5, 8_000, 4, 25);
        let db = TestDb::new(Kind::Postgres).await;
        data.store_all(&mut db.feeder().await).await;
        let (a, b) = (db.pipeline().await, db.pipeline().await);
        let (ra, rb) = tokio::join!(
            spark_pipeline::drain(a, config(50)),
            spark_pipeline::drain(b, config(50))
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.readings + rb.readings, data.readings() as u64);
        check_against_reference(&db, &data).await;
    }
}

mod events {
    use super::*;

    /// Outage (6 of 10 meters silent at once for two hours), register anomalies, zero usage.
    async fn found(kind: Kind) {
        let db = TestDb::new(kind).await;
        let mut feed = db.feeder().await;
        let store = db.pipeline().await;
        let mut seq = 0;
        // 30 hours of 15-minute readings. Meter 9 never changes (zero usage); meters 0..6 are
        // silent from interval 20 to 27 (10:00 + 2 h); meter 7 resets at 40, meter 8 drops
        // a little at 50 (unexplained).
        for i in 0..120i64 {
            let t = T0 + i * 900;
            let msg: Vec<_> = (0..10usize)
                .filter(|&m| !(m < 6 && (20..28).contains(&i)))
                .map(|m| {
                    let wh = match m {
                        9 => 5000,
                        7 if i >= 40 => 10 + (i - 40) * 10,
                        8 if i >= 50 => 2_000_000 + i * 100 - 500,
                        _ => 2_000_000 + i * 100,
                    };
                    (format!("M{m:02}"), t, wh)
                })
                .collect();
            seq += 1;
            feed.message("GW-E", seq, &msg).await;
        }
        spark_pipeline::drain(store.clone(), config(35))
            .await
            .unwrap();
        let events = store.events().await.unwrap();
        let of = |k: &str| {
            events
                .iter()
                .filter(|e| e.kind == k)
                .cloned()
                .collect::<Vec<_>>()
        };

        let outages = of("outage");
        assert_eq!(outages.len(), 1, "{events:#?}");
        // Last heard at interval 19; silent for an hour at interval 23; back at 28.
        assert_eq!(outages[0].start_ts, T0 + 19 * 900);
        assert_eq!(outages[0].end_ts, Some(T0 + 28 * 900));
        assert!(
            outages[0].data.contains("\"meters\":6") || outages[0].data.contains("\"meters\": 6"),
            "{}",
            outages[0].data
        );
        assert_eq!(outages[0].meter_id, None);

        let resets = of("meter_reset");
        assert_eq!(resets.len(), 1);
        assert_eq!(
            (resets[0].meter_id.as_deref(), resets[0].start_ts),
            (Some("M07"), T0 + 40 * 900)
        );
        let back = of("meter_negative_delta");
        assert_eq!(back.len(), 1);
        assert_eq!(
            (back[0].meter_id.as_deref(), back[0].start_ts),
            (Some("M08"), T0 + 50 * 900)
        );

        // Meter 9: zero usage from its first interval, raised after 24 h, still open.
        let zero = of("meter_zero_usage");
        assert_eq!(zero.len(), 1, "{zero:#?}");
        assert_eq!(
            (
                zero[0].meter_id.as_deref(),
                zero[0].start_ts,
                zero[0].end_ts
            ),
            (Some("M09"), T0, None)
        );

        // Meter 9 uses energy again: the zero-usage event closes.
        seq += 1;
        let t = T0 + 120 * 900;
        feed.message("GW-E", seq, &[("M09".into(), t, 5100)]).await;
        spark_pipeline::drain(store.clone(), config(35))
            .await
            .unwrap();
        let zero: Vec<_> = store
            .events()
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == "meter_zero_usage")
            .collect();
        assert_eq!(zero[0].end_ts, Some(t));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn found_sqlite() {
        found(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn found_postgres() {
        found(Kind::Postgres).await;
    }

    /// Gateway silence from ingest's `last_seen`: opened once, closed when heard again.
    async fn gateway_silence(kind: Kind) {
        let db = TestDb::new(kind).await;
        let mut feed = db.feeder().await;
        let store = db.pipeline().await;
        let now = common::chrono_now();
        feed.last_seen("GW-QUIET", now - 7200).await;
        feed.last_seen("GW-LIVE", now - 10).await;
        assert_eq!(store.check_silence(now, 3600).await.unwrap(), (1, 0));
        assert_eq!(
            store.check_silence(now, 3600).await.unwrap(),
            (0, 0),
            "opened once"
        );
        let e = store.events().await.unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (
                e[0].gateway.as_str(),
                e[0].kind.as_str(),
                e[0].start_ts,
                e[0].end_ts
            ),
            ("GW-QUIET", "gateway_silent", now - 7200, None)
        );
        feed.last_seen("GW-QUIET", now - 5).await;
        assert_eq!(store.check_silence(now, 3600).await.unwrap(), (0, 1));
        assert_eq!(store.events().await.unwrap()[0].end_ts, Some(now - 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_silence_sqlite() {
        gateway_silence(Kind::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateway_silence_postgres() {
        gateway_silence(Kind::Postgres).await;
    }
}

mod service {
    use super::*;

    /// `run` consumes new messages as they arrive (batched by time when they are few) and stops
    /// on its shutdown future; a restart continues from the cursor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_live_and_stops() {
        let data = DataSet::generate(3, 6_000, 2, 30);
        let db = TestDb::new(Kind::Sqlite).await;
        let store = db.pipeline().await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = PipelineConfig {
            batch_readings: 1000,
            batch_wait_ms: 50,
            poll_interval_ms: 10,
            ..PipelineConfig::default()
        };
        let run = tokio::spawn(spark_pipeline::run(store.clone(), cfg.clone(), async {
            let _ = stop_rx.await;
        }));
        let mut feed = db.feeder().await;
        let half = data.gateways[0].1.len() / 2;
        for (g, messages) in &data.gateways {
            for (i, m) in messages.iter().enumerate().take(half) {
                feed.message(g, i as i64 + 1, m).await;
            }
        }
        // Consumed without being asked.
        let want: u64 = data
            .gateways
            .iter()
            .map(|(_, m)| m[..half].iter().map(|x| x.len() as u64).sum::<u64>())
            .sum();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let done: i64 = store.cursors().await.unwrap().iter().map(|c| c.2).sum();
            if done as u64 == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pipeline consumed {done} of {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        stop_tx.send(()).unwrap();
        let stats = run.await.unwrap().unwrap();
        assert_eq!(stats.readings, want);
        assert_eq!(stats.abandoned, 0);
        // The rest, after a restart.
        for (g, messages) in &data.gateways {
            for (i, m) in messages.iter().enumerate().skip(half) {
                feed.message(g, i as i64 + 1, m).await;
            }
        }
        spark_pipeline::drain(store.clone(), cfg).await.unwrap();
        check_against_reference(&db, &data).await;
    }

    /// Starting on a database without ingest's tables says what to do.
    #[tokio::test]
    async fn needs_ingest_schema() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("empty.db").display()
        );
        let e = spark_pipeline::Store::connect(&url, 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("start spark-ingest"), "{e}");
        let e = spark_pipeline::Store::connect("mysql://x", 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("unsupported database URL"), "{e}");
    }
}

mod chaos;
