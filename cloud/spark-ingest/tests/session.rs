//! The telemetry session against the real server on 127.0.0.1, with real TLS and a real
//! database (SQLite file and a PostgreSQL schema of its own): happy path, resends, restarts.

mod common;

use common::{Gateway, Ingest, Kind, Pki, T0, TestDb, roster, samples};
use spark_proto::{Event, EventKind, Message, Ping};

async fn happy_path(kind: Kind) {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let tls = pki.gateway_tls("GW-1");
    let r = roster(1, "A", 50);

    let (mut gw, welcome) = Gateway::open(ingest.addr, tls.clone(), 0, &r).await;
    assert_eq!(welcome.last_committed_seq, 0);
    assert_eq!(welcome.roster_version, 0, "nothing stored yet");

    // 8 batches of 4 intervals × 50 meters (the first one sync), then an event.
    let all = samples(50, T0, 32, 10_000);
    for b in 0..8u64 {
        let chunk: Vec<_> = all[(b as usize * 200)..((b as usize + 1) * 200)].to_vec();
        let msg = gw.batch(b + 1, T0 + b * 4 * 900, &chunk);
        gw.send(&msg).await.unwrap();
    }
    gw.send(&Message::Event(Event {
        seq: 9,
        time: T0 + 100,
        kind: EventKind::MeterAlarm {
            meter_index: 3,
            code: 0x0042,
        },
    }))
    .await
    .unwrap();
    assert_eq!(gw.expect_ack(9).await, 9);
    gw.send(&Message::Ping(Ping { nonce: 77 })).await.unwrap();
    match gw.recv().await {
        Some(Message::Pong(p)) => assert_eq!(p.nonce, 77),
        other => panic!("expected Pong, got {other:?}"),
    }

    let store = &ingest.store;
    assert_eq!(store.reading_count(Some("GW-1")).await.unwrap(), 1600);
    assert_eq!(store.reading_count(None).await.unwrap(), 1600);
    assert_eq!(store.duplicate_readings().await.unwrap(), 0);
    let stored = store.readings("GW-1").await.unwrap();
    let mut expected: Vec<_> = all
        .iter()
        .map(|s| spark_ingest::StoredReading {
            meter_id: format!("MTR-A-{:04}", s.meter),
            ts: s.timestamp,
            wh: s.wh,
        })
        .collect();
    expected.sort();
    let mut got = stored.clone();
    got.sort();
    assert_eq!(got, expected);
    let events = store.events("GW-1").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "meter_alarm");
    assert_eq!(events[0].meter_id.as_deref(), Some("MTR-A-0003"));
    let info = store.gateway("GW-1").await.unwrap().unwrap();
    assert_eq!(info.last_committed_seq, 9);
    assert_eq!(info.firmware_version.as_deref(), Some("2026.11.3"));
    assert_eq!(info.booted_slot.as_deref(), Some("B"));
    assert_eq!(info.roster_version, 1);
    assert!(ingest.hub.is_connected("GW-1"));
    drop(gw);

    // Reconnect: the cloud reports what it committed and knows the roster.
    let (mut gw, welcome) = Gateway::open(ingest.addr, tls, 9, &r).await;
    assert_eq!(welcome.last_committed_seq, 9);
    assert_eq!(welcome.roster_version, 1);
    let more = samples(50, T0 + 32 * 900, 1, 20_000_000);
    let msg = gw.batch(10, T0 + 32 * 900, &more);
    gw.send(&msg).await.unwrap();
    gw.expect_ack(10).await;
    assert_eq!(store.reading_count(Some("GW-1")).await.unwrap(), 1650);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_sqlite() {
    happy_path(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_postgres() {
    happy_path(Kind::Postgres).await;
}
