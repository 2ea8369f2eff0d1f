//! The push channel: an internal caller (CN `spark-ota`, server CA) sends a Command to a
//! connected gateway over the internal API and learns its CommandResult.

mod common;

use base64::Engine as _;
use common::{ApiClient, Gateway, Ingest, Kind, Pki, TestDb, roster, start_api};
use serde_json::json;
use spark_proto::{CommandKind, CommandResult, CommandStatus, Message};

struct Rig {
    pki: Pki,
    _db: TestDb,
    ingest: Ingest,
    api: ApiClient,
}

async fn rig(kind: Kind) -> Rig {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let ingest = Ingest::start(pki.server_config(), db.store().await).await;
    let addr = start_api(&pki, &ingest).await;
    let (cert, key) = pki.service_client("spark-ota");
    let api = ApiClient {
        addr,
        tls: pki.client_tls(&cert, &key),
    };
    Rig {
        pki,
        _db: db,
        ingest,
        api,
    }
}

/// The gateway answers each Command with the given statuses, in order.
fn answer(
    mut gw: Gateway,
    statuses: Vec<CommandStatus>,
) -> tokio::task::JoinHandle<(Gateway, Vec<CommandKind>)> {
    tokio::spawn(async move {
        let mut kinds = Vec::new();
        loop {
            match gw.recv().await {
                Some(Message::Command(c)) => {
                    kinds.push(c.kind.clone());
                    for status in &statuses {
                        gw.send(&Message::CommandResult(CommandResult {
                            id: c.id,
                            status: *status,
                            code: 7,
                            detail: format!("{status:?} by the test gateway"),
                        }))
                        .await
                        .unwrap();
                    }
                    return (gw, kinds);
                }
                Some(_) => {}
                None => panic!("connection closed before a command came"),
            }
        }
    })
}

async fn round_trip(kind: Kind) {
    let rig = rig(kind).await;
    let (gw, _) = Gateway::open(
        rig.ingest.addr,
        rig.pki.gateway_tls("GW-PUSH"),
        0,
        &roster(1, "P", 2),
    )
    .await;
    let gateway_task = answer(gw, vec![CommandStatus::Accepted, CommandStatus::Succeeded]);

    let manifest = b"signed release manifest bytes".to_vec();
    let body = json!({
        "kind": "update_available",
        "manifest_b64": base64::engine::general_purpose::STANDARD.encode(&manifest),
        "wait_secs": 10,
    });
    let (status, resp) = rig
        .api
        .request("POST", "/v1/gateways/GW-PUSH/commands", Some(body))
        .await
        .unwrap();
    assert_eq!(status, 200, "{resp}");
    // The first CommandResult (Accepted) answers the waiting caller.
    assert_eq!(resp["status"], "accepted", "{resp}");
    assert_eq!(resp["code"], 7);
    assert_eq!(resp["gateway"], "GW-PUSH");
    assert_eq!(resp["kind"], "update_available");
    let id = resp["id"].as_u64().unwrap();
    let (_gw, kinds) = gateway_task.await.unwrap();
    assert_eq!(kinds, [CommandKind::UpdateAvailable { manifest }]);

    // The later Succeeded is kept: GET shows it.
    let mut last = json!(null);
    for _ in 0..100 {
        let (status, r) = rig
            .api
            .request("GET", &format!("/v1/commands/{id}"), None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        last = r;
        if last["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["detail"], "Succeeded by the test gateway");
    assert!(last["delivered_at"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_sqlite() {
    round_trip(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_postgres() {
    round_trip(Kind::Postgres).await;
}

/// A caller that does not wait gets 202 and finds the result later: it is never lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_is_kept_for_a_caller_that_did_not_wait() {
    let rig = rig(Kind::Sqlite).await;
    let (mut gw, _) = Gateway::open(
        rig.ingest.addr,
        rig.pki.gateway_tls("GW-LATER"),
        0,
        &roster(1, "L", 2),
    )
    .await;
    let (status, resp) = rig
        .api
        .request(
            "POST",
            "/v1/gateways/GW-LATER/commands",
            Some(json!({"kind": "reboot", "delay_secs": 30})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{resp}");
    assert_eq!(resp["status"], "pending");
    let id = resp["id"].as_u64().unwrap();
    let cmd = match gw.recv().await {
        Some(Message::Command(c)) => c,
        other => panic!("expected the command, got {other:?}"),
    };
    assert_eq!(cmd.id, id);
    assert_eq!(cmd.kind, CommandKind::Reboot { delay_secs: 30 });
    gw.send(&Message::CommandResult(CommandResult {
        id,
        status: CommandStatus::Rejected,
        code: 3,
        detail: "not now".into(),
    }))
    .await
    .unwrap();
    // Ping/Pong after the result: when the Pong comes, the result has been handled.
    gw.send(&Message::Ping(spark_proto::Ping { nonce: 1 }))
        .await
        .unwrap();
    assert!(matches!(gw.recv().await, Some(Message::Pong(_))));
    let (status, r) = rig
        .api
        .request("GET", &format!("/v1/commands/{id}"), None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(r["status"], "rejected");
    assert_eq!(r["code"], 3);
    assert_eq!(r["detail"], "not now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_when_not_connected_and_bad_requests() {
    let rig = rig(Kind::Sqlite).await;
    let (status, resp) = rig
        .api
        .request(
            "POST",
            "/v1/gateways/GW-NOWHERE/commands",
            Some(json!({"kind": "reboot", "delay_secs": 0})),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{resp}");
    assert!(resp["error"].as_str().unwrap().contains("not connected"));

    let (gw, _) = open_gateway(&rig, "GW-BAD").await;
    for (body, needle) in [
        (
            json!({"kind": "update_available", "manifest_b64": "%%%"}),
            "not base64",
        ),
        (json!({"kind": "format_disk"}), "unknown variant"),
        (json!({"kind": "reboot"}), "delay_secs"),
        (
            json!({"kind": "reboot", "delay_secs": 1, "extra": 1}),
            "extra",
        ),
    ] {
        let (status, resp) = rig
            .api
            .request("POST", "/v1/gateways/GW-BAD/commands", Some(body))
            .await
            .unwrap();
        assert_eq!(status, 400, "{resp}");
        assert!(resp["error"].as_str().unwrap().contains(needle), "{resp}");
    }
    let (status, _) = rig
        .api
        .request("GET", "/v1/commands/424242", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = rig
        .api
        .request("GET", "/v1/commands/abc", None)
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Disconnected again: 409.
    drop(gw);
    let mut status = 0;
    for _ in 0..100 {
        status = rig
            .api
            .request(
                "POST",
                "/v1/gateways/GW-BAD/commands",
                Some(json!({"kind": "reboot", "delay_secs": 0})),
            )
            .await
            .unwrap()
            .0;
        if status == 409 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 409);
}

async fn open_gateway(rig: &Rig, serial: &str) -> (Gateway, spark_proto::Welcome) {
    Gateway::open(
        rig.ingest.addr,
        rig.pki.gateway_tls(serial),
        0,
        &roster(1, serial, 2),
    )
    .await
}

/// Gateway status for the OTA server's health gate, and set_config's version in Welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_status_and_config_version() {
    let rig = rig(Kind::Sqlite).await;
    let (gw, welcome) = open_gateway(&rig, "GW-STAT").await;
    assert_eq!(welcome.config_version, 0);
    let (status, list) = rig.api.request("GET", "/v1/gateways", None).await.unwrap();
    assert_eq!(status, 200);
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == "GW-STAT")
        .unwrap()
        .clone();
    assert_eq!(me["connected"], true);
    assert_eq!(me["firmware_version"], "2026.11.3");
    assert_eq!(me["booted_slot"], "B");
    assert_eq!(me["last_committed_seq"], 0);
    assert!(me["last_seen"].as_u64().unwrap() > 1_700_000_000);

    let gateway_task = answer(gw, vec![CommandStatus::Succeeded]);
    let config = b"keepalive-secs = 600\n";
    let (status, resp) = rig
        .api
        .request(
            "POST",
            "/v1/gateways/GW-STAT/commands",
            Some(json!({
                "kind": "set_config", "config_version": 5,
                "config_b64": base64::engine::general_purpose::STANDARD.encode(config),
                "wait_secs": 10,
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["status"], "succeeded");
    let (gw, kinds) = gateway_task.await.unwrap();
    assert_eq!(
        kinds,
        [CommandKind::SetConfig {
            config_version: 5,
            config: config.to_vec()
        }]
    );
    drop(gw);

    let (_gw, welcome) = open_gateway(&rig, "GW-STAT").await;
    assert_eq!(
        welcome.config_version, 5,
        "Welcome carries the wanted config version"
    );
    let (status, one) = rig
        .api
        .request("GET", "/v1/gateways/GW-STAT", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(one["config_version"], 5);
    let (status, _) = rig
        .api
        .request("GET", "/v1/gateways/GW-NEVER", None)
        .await
        .unwrap();
    assert_eq!(status, 404);
}

/// A gateway answering for a command it was never sent changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_cannot_answer_for_another() {
    let rig = rig(Kind::Sqlite).await;
    let (mut target, _) = open_gateway(&rig, "GW-TARGET").await;
    let (mut other, _) = open_gateway(&rig, "GW-OTHER").await;
    let (status, resp) = rig
        .api
        .request(
            "POST",
            "/v1/gateways/GW-TARGET/commands",
            Some(json!({"kind": "reboot", "delay_secs": 1})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    let id = resp["id"].as_u64().unwrap();
    assert!(matches!(target.recv().await, Some(Message::Command(c)) if c.id == id));
    other
        .send(&Message::CommandResult(CommandResult {
            id,
            status: CommandStatus::Failed,
            code: 1,
            detail: "spoofed".into(),
        }))
        .await
        .unwrap();
    other
        .send(&Message::Ping(spark_proto::Ping { nonce: 2 }))
        .await
        .unwrap();
    assert!(matches!(other.recv().await, Some(Message::Pong(_))));
    let (_, r) = rig
        .api
        .request("GET", &format!("/v1/commands/{id}"), None)
        .await
        .unwrap();
    assert_eq!(r["status"], "pending", "{r}");
}

/// Only cloud services may call the API: a gateway's certificate (device CA) fails the
/// handshake, and a server-CA certificate whose CN is not allowed is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_cloud_services_get_in() {
    let rig = rig(Kind::Sqlite).await;
    let as_gateway = ApiClient {
        addr: rig.api.addr,
        tls: rig.pki.gateway_tls("GW-SNEAKY"),
    };
    assert!(
        as_gateway
            .request("GET", "/v1/gateways", None)
            .await
            .is_err()
    );
    let (cert, key) = rig.pki.service_client("spark-other");
    let other = ApiClient {
        addr: rig.api.addr,
        tls: rig.pki.client_tls(&cert, &key),
    };
    assert!(other.request("GET", "/v1/gateways", None).await.is_err());
    let (status, _) = rig.api.request("GET", "/v1/gateways", None).await.unwrap();
    assert_eq!(status, 200);
}
