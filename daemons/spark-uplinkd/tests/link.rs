//! uplinkd against the real spark-ingest (in-process, SQLite) on a private D-Bus bus, fed by a
//! small in-memory `io.spark.Meters1`: exactly-once delivery through link cuts and ingest
//! restarts, TLS session resumption, Uplink1 properties, cloud commands.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::meters::FakeMeters;
use common::*;
use futures_util::StreamExt;
use spark_testbed::PrivateBus;

const SERIAL: &str = "GW-LINK-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_exactly_once_and_uplink1_reports_it() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let meters = FakeMeters::start(bus.address(), 40).await;
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
    for _ in 0..10 {
        meters.interval().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let want = meters.generated().len();
    wait_for("all readings stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= want
    })
    .await;
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);
    assert_eq!(cloud.store.duplicate_readings().await.unwrap(), 0);

    // Uplink1 follows: connected, acked, queue drained, bytes counted (TLS included).
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
    // 400 readings in spark-proto batches plus TLS: far below the ~20 bytes a reading would
    // cost in JSON, and more than the bare frames.
    assert!(sent > 400 && sent < 400 * 20, "bytes sent {sent}");
    let info = cloud.store.gateway(SERIAL).await.unwrap().unwrap();
    assert_eq!(info.firmware_version.as_deref(), Some("2026.11.0-test"));
    assert_eq!(info.booted_slot.as_deref(), Some("B"));
    assert_eq!(proxy.last_ack_seq().await.unwrap(), info.last_committed_seq);

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
    // meterd was told everything is safe: its buffer is empty.
    wait_for("meterd buffer released", || async {
        meters.buffered() == 0
    })
    .await;
    uplink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_again_and_again_still_exactly_once_with_resumed_sessions() {
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
    let meters = FakeMeters::start(bus.address(), 60).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: proxy.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    // Readings keep coming while the link keeps dying, until it died often enough.
    for _ in 0..400 {
        meters.interval().await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if proxy.cuts.load(Ordering::SeqCst) >= 12 {
            break;
        }
    }
    assert!(
        proxy.cuts.load(Ordering::SeqCst) >= 12,
        "the proxy never cut the link"
    );
    proxy.set(Fault::Pass);
    let want = meters.generated().len();
    wait_for("all readings stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= want
    })
    .await;
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);

    // Cuts inside handshakes cost the ticket too, but some reconnects did resume.
    let connections = proxy.connections.load(Ordering::SeqCst);
    let resumed = cloud.resumed.load(Ordering::SeqCst);
    assert!(
        resumed > 0,
        "no resumed session in {connections} connections"
    );
    uplink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resume_the_tls_session() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let proxy = FaultProxy::start(cloud.addr, Fault::Pass, 1).await;
    let meters = FakeMeters::start(bus.address(), 5).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: proxy.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    for round in 1..=6u64 {
        meters.interval().await;
        let want = meters.generated().len() as u64;
        wait_for("the interval stored", || async {
            cloud.store.reading_count(Some(SERIAL)).await.unwrap() >= want
        })
        .await;
        proxy.cut_all();
        wait_for("reconnected", || async {
            proxy.connections.load(Ordering::SeqCst) > round && cloud.is_connected(SERIAL)
        })
        .await;
    }
    // One full handshake at the start; every reconnect after it resumed.
    let connections = proxy.connections.load(Ordering::SeqCst);
    let resumed = cloud.resumed.load(Ordering::SeqCst);
    assert!(connections >= 7, "{connections}");
    assert_eq!(
        resumed,
        connections - 1,
        "{resumed} resumed of {connections} connections"
    );
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);
    uplink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_restarts_still_exactly_once() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let mut cloud = Cloud::start(&pki).await;
    let meters = FakeMeters::start(bus.address(), 30).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: cloud.addr,
        data_dir: data.path(),
    };
    let uplink = InProcess::start(setup.config()).await;
    for round in 0..5 {
        for _ in 0..4 {
            meters.interval().await;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        cloud.restart().await;
        tracing::info!(round, "ingest restarted");
    }
    let want = meters.generated().len();
    wait_for("all readings stored", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() as usize >= want
    })
    .await;
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);
    uplink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_commands_reach_their_owner_and_results_come_back() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let _meters = FakeMeters::start(bus.address(), 3).await;
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
    let uplink1 = spark_dbus::Uplink1Proxy::new(&conn).await.unwrap();
    wait_for("connected", || async { uplink1.connected().await.unwrap() }).await;
    wait_for("ingest sees the gateway", || async {
        cloud.is_connected(SERIAL)
    })
    .await;

    // Without io.spark.Update1 on the bus: failed, code 1, and it says why.
    let (status, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({"kind": "reboot", "delay_secs": 5, "wait_secs": 10}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["code"], 1, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("io.spark.Update1"),
        "{body}"
    );

    let update = TestUpdate1::start(bus.address()).await;
    let manifest = b"signed-release-bytes".to_vec();
    let (status, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({
                "kind": "update_available",
                "manifest_b64": "c2lnbmVkLXJlbGVhc2UtYnl0ZXM=",
                "wait_secs": 10
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "accepted", "{body}");
    let (status, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({"kind": "reboot", "delay_secs": 30, "wait_secs": 10}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("succeeded")),
        "{body}"
    );
    // The agent refusing as busy is a rejection, not a failure.
    let (_, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({"kind": "update_available", "manifest_b64": "YnVzeQ==", "wait_secs": 10}),
        )
        .await;
    assert_eq!(
        (body["status"].as_str(), body["code"].as_u64()),
        (Some("rejected"), Some(2)),
        "{body}"
    );
    {
        let calls = update.calls.lock().unwrap();
        assert!(
            calls.contains(&UpdateCall::UpdateAvailable(manifest)),
            "{calls:?}"
        );
        assert!(calls.contains(&UpdateCall::Reboot(30)), "{calls:?}");
    }

    // SetConfig: uplinkd applies its table and persists it; a bad document is rejected.
    let doc = "[uplinkd]\nkeepalive-secs = 600\n[meterd]\nwhatever = 1\n";
    let (_, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({
                "kind": "set_config",
                "config_version": 7,
                "config_b64": b64(doc.as_bytes()),
                "wait_secs": 10
            }),
        )
        .await;
    assert_eq!(body["status"], "succeeded", "{body}");
    let saved = std::fs::read_to_string(data.path().join("cloud-config.json")).unwrap();
    assert!(saved.contains("600"), "{saved}");
    let (_, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({
                "kind": "set_config",
                "config_version": 8,
                "config_b64": b64(b"[uplinkd]\nkeepalive-secs = -3\n"),
                "wait_secs": 10
            }),
        )
        .await;
    assert_eq!(
        (body["status"].as_str(), body["code"].as_u64()),
        (Some("rejected"), Some(5)),
        "{body}"
    );
    uplink.stop().await;
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
