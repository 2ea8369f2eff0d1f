//! The telemetry path with real parts: the meter-radio simulator → spark-meterd → (D-Bus,
//! private bus) → spark-uplinkd → (mutual TLS) → spark-ingest on SQLite. What the simulator
//! generated (its ledger) must be what ingest stored: every reading, once. Then the same with
//! the link cut again and again by a fault-injecting proxy, and with ingest restarted.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::meterd::RealMeters;
use common::*;
use futures_util::StreamExt;
use spark_testbed::PrivateBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_arrives_exactly_once_and_uplink1_reports_it() {
    const SERIAL: &str = "GW-E2E-1";
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: cloud.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    let conn = zbus::connection::Builder::address(bus.address())
        .unwrap()
        .build()
        .await
        .unwrap();
    let proxy = spark_dbus::Uplink1Proxy::new(&conn).await.unwrap();
    let mut acks = proxy.receive_last_ack_seq_changed().await;

    let meters = RealMeters::start(bus.address(), 80, 40, Duration::from_millis(25), 11).await;
    meters.wait_finished(WAIT).await;
    let generated = meters.generated();
    assert!(generated.len() > 80 * 30, "{}", generated.len());
    wait_for("every reading stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= generated.len()
    })
    .await;
    assert_exactly_once(&generated, &cloud.readings(SERIAL).await);
    assert_eq!(cloud.store.duplicate_readings().await.unwrap(), 0);

    // Uplink1 follows: connected, acked (PropertiesChanged), queue drained, bytes counted.
    let changed = tokio::time::timeout(WAIT, acks.next())
        .await
        .unwrap()
        .unwrap();
    assert!(changed.get().await.unwrap() > 0);
    wait_for("queue drained and counters published", || async {
        proxy.queue_depth().await.unwrap() == 0 && proxy.bytes_received().await.unwrap() > 0
    })
    .await;
    assert!(proxy.connected().await.unwrap());
    let sent = proxy.bytes_sent().await.unwrap();
    // The socket bytes include the TLS handshake (certificates both ways, ~3 KB) and a TLS
    // record per write; still far below JSON's ~60 bytes a reading.
    let per_reading = sent as f64 / generated.len() as f64;
    assert!(
        sent > 0 && per_reading < 6.0,
        "{sent} bytes for {} readings",
        generated.len()
    );
    let info = cloud.store.gateway(SERIAL).await.unwrap().unwrap();
    assert_eq!(info.firmware_version.as_deref(), Some("2026.11.0-test"));
    assert_eq!(info.booted_slot.as_deref(), Some("B"));
    assert_eq!(proxy.last_ack_seq().await.unwrap(), info.last_committed_seq);
    // The cloud's roster is the simulator's meters.
    let (_, roster) = cloud.store.roster(SERIAL).await.unwrap();
    assert_eq!(roster.len(), 80);

    // Health events travel in the same sequence space.
    wait_for("a health event stored", || async {
        cloud
            .store
            .events(SERIAL)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "health")
    })
    .await;
    // Protocol 2's health carries today's cellular data use, counted on the TLS socket: at
    // least the handshake (certificates both ways) and the batches already sent.
    let events = cloud.store.events(SERIAL).await.unwrap();
    let health = events.iter().rfind(|e| e.kind == "health").unwrap();
    let data: serde_json::Value = serde_json::from_str(&health.data).unwrap();
    let used = data["bytes_used_today"].as_u64().unwrap_or(0);
    assert!(used > 1000, "bytes_used_today in {}", health.data);

    // Uplink1.BytesUsedToday: the day's count, published with the byte counters (the data
    // directory is fresh, so it is what this run moved) ...
    wait_for("BytesUsedToday published with the counters", || async {
        let today = proxy.bytes_used_today().await.unwrap();
        let moved = proxy.bytes_sent().await.unwrap() + proxy.bytes_received().await.unwrap();
        today == moved && today >= used
    })
    .await;
    let today = proxy.bytes_used_today().await.unwrap();
    uplink.stop().await;
    // ... and continued by the next start (saved at shutdown), before any byte moves.
    let uplink = InProcess::start(setup.config()).await;
    let fresh = spark_dbus::Uplink1Proxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let continued = fresh.bytes_used_today().await.unwrap();
    assert!(
        continued >= today,
        "restart counted today from {continued}, was {today}"
    );
    uplink.stop().await;
    meters.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_again_and_again_still_exactly_once() {
    const SERIAL: &str = "GW-E2E-CUT";
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    // Cuts anywhere from inside the TLS handshake to a few batches in.
    let proxy = FaultProxy::start(
        cloud.addr,
        Fault::CutAfter {
            min: 100,
            max: 4000,
        },
        7,
    )
    .await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: proxy.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    let meters = RealMeters::start(bus.address(), 60, 200, Duration::from_millis(20), 12).await;
    meters.wait_finished(WAIT).await;
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    assert!(cuts >= 8, "only {cuts} cuts");
    proxy.set(Fault::Pass);
    let generated = meters.generated();
    wait_for("every reading stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= generated.len()
    })
    .await;
    assert_exactly_once(&generated, &cloud.readings(SERIAL).await);
    // Cuts inside handshakes cost the ticket too, but some reconnects did resume.
    let connections = proxy.connections.load(Ordering::SeqCst);
    let resumed = cloud.resumed.load(Ordering::SeqCst);
    assert!(
        resumed > 0,
        "no resumed session in {connections} connections"
    );
    uplink.stop().await;
    meters.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_restarts_still_exactly_once() {
    const SERIAL: &str = "GW-E2E-RESTART";
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let mut cloud = Cloud::start(&pki).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: cloud.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    let meters = RealMeters::start(bus.address(), 40, 100, Duration::from_millis(20), 13).await;
    for round in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cloud.restart().await;
        tracing::info!(round, "ingest restarted");
    }
    meters.wait_finished(WAIT).await;
    let generated = meters.generated();
    wait_for("every reading stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= generated.len()
    })
    .await;
    assert_exactly_once(&generated, &cloud.readings(SERIAL).await);
    uplink.stop().await;
    meters.stop().await;
}
