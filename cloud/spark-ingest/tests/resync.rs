//! Recovery paths of the session: Nacks and resynchronisation as spark-proto specifies them,
//! sequence gaps, a gateway reconnecting over a half-open connection, idle connections.

mod common;

use std::time::Duration;

use common::{Gateway, Ingest, Pki, T0, TestDb, roster, samples};
use spark_proto::{CodecContext, Event, EventKind, Message, NackCode};

struct Rig {
    pki: Pki,
    _db: TestDb,
    ingest: Ingest,
}

async fn rig() -> Rig {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    Rig {
        pki,
        _db: db,
        ingest,
    }
}

fn interval(gw: &mut Gateway, seq: u64, meters: u32) -> Message {
    let start = T0 + (seq - 1) * 900;
    gw.batch(seq, start, &samples(meters, start, 1, 100 + seq * 1_000))
}

/// Reads until a Nack (returned) or an Ack (test failure).
async fn expect_nack(gw: &mut Gateway) -> spark_proto::Nack {
    match gw.recv().await {
        Some(Message::Nack(n)) => n,
        other => panic!("expected a Nack, got {other:?}"),
    }
}

/// Nothing arrives for a little while (no extra Nack for frames already in flight).
async fn expect_silence(gw: &mut Gateway) {
    gw.send(&Message::Ping(spark_proto::Ping { nonce: 9 }))
        .await
        .unwrap();
    match gw.recv().await {
        Some(Message::Pong(p)) => assert_eq!(p.nonce, 9),
        other => panic!("expected only the Pong, got {other:?}"),
    }
}

/// The gateway changes its roster and sends batches built for it before the Roster: the first is
/// Nacked RosterMismatch, the one in flight after it is dropped quietly; after the Roster and a
/// sync resend everything is stored once, under the new meter ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_mismatch_then_resync() {
    let rig = rig().await;
    let tls = rig.pki.gateway_tls("GW-ROSTER");
    let v1 = roster(1, "V1", 5);
    let (mut gw, _) = Gateway::open(rig.ingest.addr, tls, 0, &v1).await;
    let m = interval(&mut gw, 1, 5);
    gw.send(&m).await.unwrap();
    gw.expect_ack(1).await;

    let v2 = roster(2, "V2", 6);
    gw.codec.set_roster(2, 6);
    for seq in 2..=3 {
        let m = interval(&mut gw, seq, 6);
        gw.send(&m).await.unwrap();
    }
    let nack = expect_nack(&mut gw).await;
    assert_eq!((nack.seq, nack.code), (2, NackCode::RosterMismatch));
    expect_silence(&mut gw).await;

    gw.send(&Message::Roster(v2)).await.unwrap();
    gw.codec = CodecContext::new(2, 6);
    for seq in 2..=3 {
        let m = interval(&mut gw, seq, 6);
        gw.send(&m).await.unwrap();
    }
    gw.expect_ack(3).await;
    let store = &rig.ingest.store;
    assert_eq!(
        store.reading_count(Some("GW-ROSTER")).await.unwrap(),
        5 + 12
    );
    let readings = store.readings("GW-ROSTER").await.unwrap();
    assert_eq!(
        readings
            .iter()
            .filter(|r| r.meter_id.starts_with("MTR-V2-"))
            .count(),
        12
    );
    assert_eq!(store.roster("GW-ROSTER").await.unwrap().0, 2);
}

/// A session that starts with a delta batch (the gateway did not reset its codec) is Nacked
/// ResyncRequired; the resent sync batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_without_reference_is_nacked_then_resynced() {
    let rig = rig().await;
    let r = roster(1, "D", 4);
    let (mut gw, _) = Gateway::open(rig.ingest.addr, rig.pki.gateway_tls("GW-DELTA"), 0, &r).await;
    let first = interval(&mut gw, 1, 4);
    let second = interval(&mut gw, 2, 4); // deltas against the first
    gw.send(&first).await.unwrap();
    gw.expect_ack(1).await;
    drop(gw);

    let (mut gw, welcome) =
        Gateway::open(rig.ingest.addr, rig.pki.gateway_tls("GW-DELTA"), 1, &r).await;
    assert_eq!(welcome.last_committed_seq, 1);
    gw.send(&second).await.unwrap();
    let nack = expect_nack(&mut gw).await;
    assert_eq!((nack.seq, nack.code), (2, NackCode::ResyncRequired));
    gw.codec.reset_session();
    let again = interval(&mut gw, 2, 4);
    gw.send(&again).await.unwrap();
    gw.expect_ack(2).await;
    assert_eq!(
        rig.ingest
            .store
            .reading_count(Some("GW-DELTA"))
            .await
            .unwrap(),
        8
    );
    assert_eq!(rig.ingest.store.duplicate_readings().await.unwrap(), 0);
}

/// A skipped sequence number is Nacked SequenceGap once; later frames in flight are dropped
/// quietly; the gateway resends from the expected one and everything is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_gap() {
    let rig = rig().await;
    let r = roster(1, "Q", 3);
    let (mut gw, _) = Gateway::open(rig.ingest.addr, rig.pki.gateway_tls("GW-GAP"), 0, &r).await;
    let batches: Vec<Message> = (1..=4).map(|seq| interval(&mut gw, seq, 3)).collect();
    gw.send(&batches[0]).await.unwrap();
    gw.expect_ack(1).await;
    gw.send(&batches[2]).await.unwrap(); // 2 is missing
    gw.send(&Message::Event(Event {
        seq: 4,
        time: T0,
        kind: EventKind::MeterLost { meter_index: 1 },
    }))
    .await
    .unwrap();
    let nack = expect_nack(&mut gw).await;
    assert_eq!((nack.seq, nack.code), (3, NackCode::SequenceGap));
    assert!(
        nack.detail.contains("expected sequence 2"),
        "{}",
        nack.detail
    );
    expect_silence(&mut gw).await;

    gw.codec.reset_session();
    for seq in 2..=3 {
        let m = interval(&mut gw, seq, 3);
        gw.send(&m).await.unwrap();
    }
    gw.send(&Message::Event(Event {
        seq: 4,
        time: T0,
        kind: EventKind::Health {
            uptime_secs: 3600,
            queue_len: 2,
            free_data_kib: 1024,
            rssi_dbm: -71,
            meters_seen: 3,
        },
    }))
    .await
    .unwrap();
    gw.expect_ack(4).await;
    let store = &rig.ingest.store;
    assert_eq!(store.reading_count(Some("GW-GAP")).await.unwrap(), 9);
    let events = store.events("GW-GAP").await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "health");
    let data: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["rssi_dbm"], -71);
    assert_eq!(data["queue_len"], 2);
}

/// A gateway reconnecting while its old connection is still open (half-open after a link drop):
/// the old one is closed, the new one works and receives the commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_replaces_the_old_connection() {
    let rig = rig().await;
    let r = roster(1, "H", 2);
    let tls = rig.pki.gateway_tls("GW-TWICE");
    let (mut old, _) = Gateway::open(rig.ingest.addr, tls.clone(), 0, &r).await;
    let (mut new, _) = Gateway::open(rig.ingest.addr, tls, 0, &r).await;
    assert!(old.until_closed().await.is_empty());
    let m = interval(&mut new, 1, 2);
    new.send(&m).await.unwrap();
    new.expect_ack(1).await;
    assert!(rig.ingest.hub.is_connected("GW-TWICE"));
}

/// A silent connection is closed after the idle timeout, and its last contact is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_is_closed() {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let mut config = pki.server_config();
    config.idle_timeout = Duration::from_millis(500);
    let ingest = Ingest::start(config, db.store().await).await;
    let (mut gw, _) = Gateway::open(
        ingest.addr,
        pki.gateway_tls("GW-IDLE"),
        0,
        &roster(1, "I", 1),
    )
    .await;
    let started = std::time::Instant::now();
    assert!(gw.until_closed().await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
    for _ in 0..100 {
        if !ingest.hub.is_connected("GW-IDLE") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!ingest.hub.is_connected("GW-IDLE"));
    let info = ingest.store.gateway("GW-IDLE").await.unwrap().unwrap();
    assert!(info.last_seen >= info.first_seen);
}
