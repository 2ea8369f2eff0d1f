//! uplinkd against the real spark-ingest (in-process, SQLite) on a private D-Bus bus, fed by a
//! small in-memory `io.spark.Meters1` (readings on demand): TLS session resumption across
//! reconnects, cloud commands to their owner and their results back. The delivery scenarios
//! with the real meterd are in `end_to_end.rs`.

mod common;

use std::sync::atomic::Ordering;

use common::meters::FakeMeters;
use common::*;
use spark_testbed::PrivateBus;

const SERIAL: &str = "GW-LINK-1";

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
    // A release the agent refuses: rejected with the agent's reason.
    let (_, body) = cloud
        .command(
            SERIAL,
            serde_json::json!({"kind": "update_available", "manifest_b64": b64(b"expired"), "wait_secs": 10}),
        )
        .await;
    assert_eq!(
        (body["status"].as_str(), body["code"].as_u64()),
        (Some("rejected"), Some(7)),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("release-rejected: expired"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_holds_an_idle_link_and_a_dead_peer_is_noticed() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let cloud = Cloud::start(&pki).await;
    let proxy = FaultProxy::start(cloud.addr, Fault::Pass, 3).await;
    let meters = FakeMeters::start(bus.address(), 5).await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud: proxy.addr,
        data_dir: data.path(),
    };
    let toml = setup
        .toml()
        .replace("keepalive-secs = 300", "keepalive-secs = 0.2")
        .replace("dead-peer-timeout-secs = 5", "dead-peer-timeout-secs = 1")
        .replace("health-interval-secs = 1.0", "health-interval-secs = 3600");
    let config = spark_uplinkd::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();
    let uplink = InProcess::start(config).await;
    let conn = zbus::connection::Builder::address(bus.address())
        .unwrap()
        .build()
        .await
        .unwrap();
    let uplink1 = spark_dbus::Uplink1Proxy::new(&conn).await.unwrap();
    wait_for("connected", || async { cloud.is_connected(SERIAL) }).await;

    // Idle for several keepalive periods and longer than the dead-peer timeout: pings are
    // answered, so the one connection stays, and the pings show in the byte counters.
    let before = uplink1.bytes_sent().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);
    assert!(uplink1.bytes_sent().await.unwrap() > before);

    // The link freezes without a FIN or RST (radio gone): the unanswered ping gives it away.
    proxy.stall_all();
    meters.interval().await;
    wait_for("a new connection after the dead peer", || async {
        proxy.connections.load(Ordering::SeqCst) >= 2
    })
    .await;
    let want = meters.generated().len() as u64;
    wait_for("readings stored over the new connection", || async {
        cloud.store.reading_count(Some(SERIAL)).await.unwrap() >= want
    })
    .await;
    assert_exactly_once(&meters.generated(), &cloud.readings(SERIAL).await);
    uplink.stop().await;
}
