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
    // Each row carries the sequence number of its batch (the data pipeline's cursor).
    let per_seq: Vec<(u64, u64)> = (1..=8).map(|seq| (seq, 200)).collect();
    assert_eq!(store.readings_per_seq("GW-1").await.unwrap(), per_seq);
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

/// Builds the batches `first..=last` (4 intervals × 20 meters each) from one codec context,
/// in order, as a gateway's queue would after a (re)connect.
fn batches(gw: &mut Gateway, first: u64, last: u64) -> Vec<Message> {
    (first..=last)
        .map(|seq| {
            let start = T0 + (seq - 1) * 4 * 900;
            let s = samples(20, start, 4, 1_000 + seq * 10_000);
            gw.batch(seq, start, &s)
        })
        .collect()
}

async fn wait_received(store: &spark_ingest::Store, gateway: &str, n: u64) {
    for _ in 0..500 {
        if store.received_count(gateway).await.unwrap() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("ingest did not store {n} messages of {gateway} in time");
}

/// The gateway sends batches 1..=3 and loses the link before the Ack arrives; it reconnects
/// not knowing they were committed and resends them (re-encoded, from a fresh codec), then 4.
async fn resend_after_lost_ack(kind: Kind) {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let tls = pki.gateway_tls("GW-R");
    let r = roster(3, "R", 20);

    let (mut gw, _) = Gateway::open(ingest.addr, tls.clone(), 0, &r).await;
    for m in batches(&mut gw, 1, 3) {
        gw.send(&m).await.unwrap();
    }
    wait_received(&ingest.store, "GW-R", 3).await;
    drop(gw); // the Ack is lost with the link

    let (mut gw, welcome) = Gateway::open(ingest.addr, tls, 0, &r).await;
    assert_eq!(welcome.last_committed_seq, 3);
    // A gateway that ignores Welcome.last_committed_seq resends anyway: ingest must not store
    // anything twice, and must still Ack.
    for m in batches(&mut gw, 1, 4) {
        gw.send(&m).await.unwrap();
    }
    assert_eq!(gw.expect_ack(4).await, 4);
    assert_eq!(
        ingest.store.reading_count(Some("GW-R")).await.unwrap(),
        4 * 80
    );
    assert_eq!(ingest.store.duplicate_readings().await.unwrap(), 0);
    assert_eq!(ingest.store.received_count("GW-R").await.unwrap(), 4);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_after_lost_ack_sqlite() {
    resend_after_lost_ack(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_after_lost_ack_postgres() {
    resend_after_lost_ack(Kind::Postgres).await;
}

/// Ingest is restarted (graceful stop, new process state: new pool, new server) while a gateway
/// streams 12 batches without waiting for Acks. The gateway resends everything after its last
/// Ack; in the end every reading is stored exactly once.
async fn restart_mid_stream(kind: Kind) {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let tls = pki.gateway_tls("GW-S");
    let r = roster(1, "S", 20);

    let (mut gw, _) = Gateway::open(ingest.addr, tls.clone(), 0, &r).await;
    let all = batches(&mut gw, 1, 12);
    for m in &all[..8] {
        gw.send(m).await.unwrap();
    }
    let acked = gw.expect_ack(2).await;
    let stopping = tokio::spawn(ingest.stop());
    // Everything the server says before it closes: Acks only, never beyond what it stored.
    let mut last_ack = acked;
    for m in gw.until_closed().await {
        match m {
            Message::Ack(a) => last_ack = last_ack.max(a.seq),
            other => panic!("unexpected {other:?} during shutdown"),
        }
    }
    stopping.await.unwrap();
    let store = db.store().await;
    assert!(store.received_count("GW-S").await.unwrap() >= last_ack);

    // "Restarted": a new store and server on the same database.
    let ingest = Ingest::start(pki.server_config(), store).await;
    let (mut gw, welcome) = Gateway::open(ingest.addr, tls, last_ack, &r).await;
    assert!(welcome.last_committed_seq >= last_ack);
    // Resend from the last Ack (not from Welcome's figure), so a committed-but-unacked batch
    // comes twice; a fresh codec context re-encodes them with the sync flag.
    for m in batches(&mut gw, last_ack + 1, 12) {
        gw.send(&m).await.unwrap();
    }
    assert_eq!(gw.expect_ack(12).await, 12);
    assert_eq!(
        ingest.store.reading_count(Some("GW-S")).await.unwrap(),
        12 * 80
    );
    assert_eq!(ingest.store.duplicate_readings().await.unwrap(), 0);
    ingest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_sqlite() {
    restart_mid_stream(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_stream_postgres() {
    restart_mid_stream(Kind::Postgres).await;
}

/// Shutdown while a frame is half received and many batches are in flight: every Ack the
/// gateway sees is committed, nothing uncommitted is acknowledged, the half frame is not
/// stored, and the stored batches are exactly 1..=n.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_mid_batch() {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let (mut gw, _) =
        Gateway::open(ingest.addr, pki.gateway_tls("GW-G"), 0, &roster(1, "G", 20)).await;
    let all = batches(&mut gw, 1, 40);
    for m in &all[..3] {
        gw.send(m).await.unwrap();
    }
    gw.expect_ack(3).await;
    // 36 more batches and half of the 40th.
    let mut bytes = Vec::new();
    for m in &all[3..39] {
        spark_proto::encode(m, &mut bytes).unwrap();
    }
    let mut last = Vec::new();
    spark_proto::encode(&all[39], &mut last).unwrap();
    bytes.extend_from_slice(&last[..last.len() / 2]);
    gw.send_raw(&bytes).await.unwrap();

    let store = ingest.store.clone();
    let stopping = tokio::spawn(ingest.stop());
    let mut last_ack = 3;
    for m in gw.until_closed().await {
        match m {
            Message::Ack(a) => {
                assert!(a.seq >= last_ack, "Acks go forward");
                last_ack = a.seq;
            }
            other => panic!("unexpected {other:?} during shutdown"),
        }
    }
    stopping.await.unwrap();
    let stored = store.received_count("GW-G").await.unwrap();
    assert!(
        stored >= last_ack,
        "acked {last_ack} but only {stored} stored"
    );
    assert!(stored <= 39, "the half frame must not be stored");
    assert_eq!(
        store.reading_count(Some("GW-G")).await.unwrap(),
        stored * 80
    );
    let info = store.gateway("GW-G").await.unwrap().unwrap();
    assert_eq!(
        info.last_committed_seq, stored,
        "stored batches are exactly 1..=n"
    );
    assert_eq!(store.duplicate_readings().await.unwrap(), 0);
}

/// Over the connection cap, a new connection is closed at once; once a slot frees up, the next
/// one gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap() {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let mut config = pki.server_config();
    config.max_connections = 2;
    let ingest = Ingest::start(config, db.store().await).await;
    let r = roster(1, "C", 2);
    let (gw1, _) = Gateway::open(ingest.addr, pki.gateway_tls("GW-C1"), 0, &r).await;
    let (_gw2, _) = Gateway::open(ingest.addr, pki.gateway_tls("GW-C2"), 0, &r).await;

    let tls3 = pki.gateway_tls("GW-C3");
    let refused = match Gateway::connect(ingest.addr, tls3.clone()).await {
        Err(_) => true, // closed during the handshake
        Ok(mut gw) => {
            // TLS 1.3: the client may finish its side before the server's close arrives.
            let _ = gw.send(&Message::Hello(Gateway::hello(0, 1))).await;
            gw.recv().await.is_none()
        }
    };
    assert!(refused, "a third connection must be closed at once");
    assert!(!ingest.hub.is_connected("GW-C3"));

    drop(gw1);
    let mut admitted = false;
    for _ in 0..100 {
        if let Ok(mut gw) = Gateway::connect(ingest.addr, tls3.clone()).await
            && gw.send(&Message::Hello(Gateway::hello(0, 1))).await.is_ok()
            && matches!(gw.recv().await, Some(Message::Welcome(_)))
        {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(admitted, "a freed slot must admit the next gateway");
    ingest.stop().await;
}

/// PostgreSQL: readings go to monthly partitions created on demand (rows that had landed in the
/// default partition move into a new month's partition); a far-off clock lands in the default.
/// (Partitions are made for months from 10 years back to 2 months ahead of the wall clock, so
/// this test expects to run after November 2026.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partitions() {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::postgres().await;
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let r = roster(1, "P", 3);
    let (mut gw, _) = Gateway::open(ingest.addr, pki.gateway_tls("GW-P"), 0, &r).await;
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // A row of January 2027 that reached the default partition before that month had one
    // (another node, or a clock ahead): creating the partition must move it, not fail.
    let jan = 1_798_761_600;
    sqlx::query("INSERT INTO readings VALUES ('GW-OTHER', 'M', to_timestamp($1), 5)")
        .bind(jan as i64 + 60)
        .execute(&mut conn)
        .await
        .unwrap();
    // Two intervals straddling a month boundary: 2026-11-30T23:45Z and 2026-12-01T00:00Z,
    // then one reading from 1990 (a gateway with a broken clock).
    let nov_end = 1_796_082_300;
    let s = samples(3, nov_end, 2, 100);
    let m = gw.batch(1, nov_end, &s);
    gw.send(&m).await.unwrap();
    let old = samples(3, 631_152_000, 1, 1_000_000);
    let m = gw.batch(2, 631_152_000, &old);
    gw.send(&m).await.unwrap();
    let m = gw.batch(3, jan, &samples(3, jan, 1, 2_000_000));
    gw.send(&m).await.unwrap();
    gw.expect_ack(3).await;
    assert_eq!(ingest.store.reading_count(Some("GW-P")).await.unwrap(), 12);

    let mut counts = Vec::new();
    for table in [
        "readings_p202611",
        "readings_p202612",
        "readings_p202701",
        "readings_default",
    ] {
        let c: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        counts.push(c);
    }
    assert_eq!(
        counts,
        [3, 3, 4, 3],
        "rows per partition (nov, dec, jan, default)"
    );
    let parts: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'readings' \
         AND p.relnamespace = current_schema()::regnamespace ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        parts,
        [
            "readings_default",
            "readings_p202611",
            "readings_p202612",
            "readings_p202701"
        ]
    );
    ingest.stop().await;
}
