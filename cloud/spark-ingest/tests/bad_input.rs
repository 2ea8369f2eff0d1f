//! Bad input closes the connection with a log line naming the gateway and the reason, and stores
//! nothing from the offending frame: garbage, an over-long length, an unknown type, trailing
//! bytes, a wrong protocol or frame version, frames before Hello, unknown-CA and expired client
//! certificates, and a gateway whose payload looks like another gateway's.

mod common;

use std::time::Duration;

use common::{Gateway, Ingest, Pki, T0, TestDb, assert_refused, roster, samples, wait_log};
use spark_proto::{Message, NackCode};

struct Rig {
    pki: Pki,
    _db: TestDb,
    ingest: Ingest,
}

async fn rig() -> Rig {
    common::capture_logs();
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let mut config = pki.server_config();
    config.hello_timeout = Duration::from_secs(1);
    let ingest = Ingest::start(config, db.store().await).await;
    Rig {
        pki,
        _db: db,
        ingest,
    }
}

/// Opens a session for `serial`, commits one batch of 10 readings (seq 1) and returns the
/// gateway, ready for the bad bytes.
async fn session_with_one_batch(rig: &Rig, serial: &str) -> Gateway {
    let (mut gw, _) = Gateway::open(
        rig.ingest.addr,
        rig.pki.gateway_tls(serial),
        0,
        &roster(1, serial, 10),
    )
    .await;
    let m = gw.batch(1, T0, &samples(10, T0, 1, 500));
    gw.send(&m).await.unwrap();
    gw.expect_ack(1).await;
    gw
}

/// After the bad bytes: a Nack with `code` (if given), then the close; the log names the
/// gateway and `reason`; only the first batch is stored.
async fn assert_closed(
    rig: &Rig,
    mut gw: Gateway,
    serial: &str,
    code: Option<NackCode>,
    reason: &str,
) {
    let seen = gw.until_closed().await;
    if let Some(code) = code {
        assert!(
            seen.iter()
                .any(|m| matches!(m, Message::Nack(n) if n.code == code)),
            "expected a Nack {code:?} before the close, got {seen:?}"
        );
    }
    let line = wait_log(&["WARN", serial, reason]).await;
    assert!(line.contains("closing connection"), "{line}");
    assert_eq!(rig.ingest.store.received_count(serial).await.unwrap(), 1);
    assert_eq!(
        rig.ingest.store.reading_count(Some(serial)).await.unwrap(),
        10
    );
    assert!(!rig.ingest.hub.is_connected(serial));
}

#[tokio::test]
async fn garbage() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-GARBAGE").await;
    gw.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-GARBAGE",
        Some(NackCode::Malformed),
        "bad magic byte 0x47",
    )
    .await;
}

#[tokio::test]
async fn over_long_length() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-LONG").await;
    // ReadingsBatch announcing 2^21 − 1 bytes (> 1 MiB): refused before anything is allocated.
    gw.send_raw(&[0x53, 0x01, 0x04, 0xff, 0xff, 0x7f])
        .await
        .unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-LONG",
        Some(NackCode::Malformed),
        "exceeds the maximum",
    )
    .await;
}

#[tokio::test]
async fn unknown_type() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-TYPE").await;
    gw.send_raw(&[0x53, 0x01, 0x7f, 0x00]).await.unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-TYPE",
        Some(NackCode::Malformed),
        "unknown message type 0x7f",
    )
    .await;
}

#[tokio::test]
async fn trailing_bytes_in_a_batch_store_nothing() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-TRAIL").await;
    // A valid batch 2 whose frame carries one byte more than the batch uses.
    let m = gw.batch(2, T0 + 900, &samples(10, T0 + 900, 1, 900));
    let mut frame = Vec::new();
    spark_proto::encode(&m, &mut frame).unwrap();
    let payload = frame[4..].to_vec();
    assert!(payload.len() < 127, "test assumes a 1-byte length");
    let mut bad = vec![0x53, 0x01, 0x04, payload.len() as u8 + 1];
    bad.extend_from_slice(&payload);
    bad.push(0x00);
    gw.send_raw(&bad).await.unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-TRAIL",
        Some(NackCode::Malformed),
        "trailing bytes",
    )
    .await;
}

#[tokio::test]
async fn wrong_frame_version() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-FRAMEV").await;
    gw.send_raw(&[0x53, 0x02, 0x07, 0x04, 0, 0, 0, 1])
        .await
        .unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-FRAMEV",
        Some(NackCode::Malformed),
        "unsupported frame version 2",
    )
    .await;
}

#[tokio::test]
async fn wrong_protocol_version() {
    let rig = rig().await;
    let mut gw = Gateway::connect(rig.ingest.addr, rig.pki.gateway_tls("GW-PROTO"))
        .await
        .unwrap();
    let mut hello = Gateway::hello(0, 1);
    hello.min_version = 7;
    hello.max_version = 9;
    gw.send(&Message::Hello(hello)).await.unwrap();
    let seen = gw.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Message::Nack(n)] if n.code == NackCode::UnsupportedVersion),
        "{seen:?}"
    );
    wait_log(&["WARN", "GW-PROTO", "no common protocol version"]).await;
    assert!(
        rig.ingest
            .store
            .gateway("GW-PROTO")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn frames_before_hello() {
    let rig = rig().await;
    let tls = rig.pki.gateway_tls("GW-EARLY");
    let mut gw = Gateway::connect(rig.ingest.addr, tls).await.unwrap();
    gw.codec = spark_proto::CodecContext::new(1, 10);
    let m = gw.batch(1, T0, &samples(10, T0, 1, 500));
    gw.send(&m).await.unwrap();
    let seen = gw.until_closed().await;
    assert!(
        matches!(seen.as_slice(), [Message::Nack(n)] if n.code == NackCode::Rejected),
        "{seen:?}"
    );
    wait_log(&["WARN", "GW-EARLY", "ReadingsBatch before Hello"]).await;
    assert_eq!(
        rig.ingest
            .store
            .reading_count(Some("GW-EARLY"))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn no_hello_in_time() {
    let rig = rig().await;
    let mut gw = Gateway::connect(rig.ingest.addr, rig.pki.gateway_tls("GW-SILENT"))
        .await
        .unwrap();
    let seen = gw.until_closed().await;
    assert!(matches!(seen.as_slice(), [Message::Nack(_)]), "{seen:?}");
    wait_log(&["WARN", "GW-SILENT", "no Hello within 1s"]).await;
}

#[tokio::test]
async fn second_hello_and_cloud_messages_from_a_gateway() {
    let rig = rig().await;
    let mut gw = session_with_one_batch(&rig, "GW-HELLO2").await;
    gw.send(&Message::Hello(Gateway::hello(1, 1)))
        .await
        .unwrap();
    assert_closed(&rig, gw, "GW-HELLO2", None, "a second Hello").await;

    let mut gw = session_with_one_batch(&rig, "GW-ACKER").await;
    gw.send(&Message::Ack(spark_proto::Ack { seq: 99 }))
        .await
        .unwrap();
    assert_closed(
        &rig,
        gw,
        "GW-ACKER",
        None,
        "Ack is a cloud-to-gateway message",
    )
    .await;
}

#[tokio::test]
async fn unknown_ca_is_refused_in_the_handshake() {
    let rig = rig().await;
    assert_refused(rig.ingest.addr, rig.pki.foreign_device("GW-FOREIGN")).await;
    wait_log(&["WARN", "TLS handshake failed", "UnknownIssuer"]).await;
    assert!(
        rig.ingest
            .store
            .gateway("GW-FOREIGN")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn expired_certificate_is_refused_in_the_handshake() {
    let rig = rig().await;
    assert_refused(rig.ingest.addr, rig.pki.expired_device("GW-EXPIRED")).await;
    let line = wait_log(&["WARN", "TLS handshake failed", "xpired"]).await;
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(
        rig.ingest
            .store
            .gateway("GW-EXPIRED")
            .await
            .unwrap()
            .is_none()
    );
}

/// Gateway A presents its own certificate but sends exactly what gateway B sends (B's roster,
/// B's readings, B's sequence numbers): everything is stored under A; B is untouched.
#[tokio::test]
async fn a_gateway_cannot_speak_for_another() {
    let rig = rig().await;
    let b_roster = roster(1, "GW-B", 10);
    let (mut b, _) =
        Gateway::open(rig.ingest.addr, rig.pki.gateway_tls("GW-B"), 0, &b_roster).await;
    let m = b.batch(1, T0, &samples(10, T0, 1, 500));
    b.send(&m).await.unwrap();
    b.expect_ack(1).await;

    let (mut a, welcome) =
        Gateway::open(rig.ingest.addr, rig.pki.gateway_tls("GW-A"), 0, &b_roster).await;
    assert_eq!(
        welcome.last_committed_seq, 0,
        "A starts from its own state, not B's"
    );
    for seq in 1..=2 {
        let start = T0 + (seq - 1) * 900;
        let m = a.batch(seq, start, &samples(10, start, 1, 9_000));
        a.send(&m).await.unwrap();
    }
    a.expect_ack(2).await;
    let store = &rig.ingest.store;
    assert_eq!(store.reading_count(Some("GW-A")).await.unwrap(), 20);
    assert_eq!(store.reading_count(Some("GW-B")).await.unwrap(), 10);
    assert_eq!(
        store
            .gateway("GW-B")
            .await
            .unwrap()
            .unwrap()
            .last_committed_seq,
        1
    );
    let mut b_sent: Vec<_> = samples(10, T0, 1, 500)
        .iter()
        .map(|s| spark_ingest::StoredReading {
            meter_id: format!("MTR-GW-B-{:04}", s.meter),
            ts: s.timestamp,
            wh: s.wh,
        })
        .collect();
    b_sent.sort();
    let mut b_stored = store.readings("GW-B").await.unwrap();
    b_stored.sort();
    assert_eq!(b_stored, b_sent);
}
