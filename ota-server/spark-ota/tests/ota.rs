//! The OTA server end to end over real TLS: releases uploaded by the CLI's client, verified with
//! spark-image against the dev PKI's keyring; device check-in, status reports and resumable
//! downloads with device certificates; rollouts; the data-cost report; bad input of every kind
//! refused with nothing stored. SQLite and PostgreSQL.

mod common;

use common::*;
use hyper::{Method, StatusCode};

/// Upload → rollout → check-in → download with Range/ETag/If-Range → reports → data cost,
/// then pause/resume/abort and yank, on one backend.
async fn release_lifecycle(kind: Kind) {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let server = TestServer::start(&pki, &db, "").await;
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();

    // A real bundle and its signed release manifest.
    let bundle = work.path().join("v2.raucb");
    pki.bundle("2.0.0", 300_000, &bundle);
    let signed = pki.sign_release(&bundle, "2.0.0");
    let release_file = work.path().join("v2.release.json");
    std::fs::write(&release_file, signed.to_json()).unwrap();
    let bundle_bytes = std::fs::read(&bundle).unwrap();
    let sha = hex::encode(spark_release::digest_file(&bundle).unwrap().sha256);

    let up = spark_ota::cli::release_upload(&admin, &bundle, Some(&release_file), true)
        .await
        .unwrap();
    assert_eq!(up.sha256, sha);
    assert_eq!(up.size, bundle_bytes.len() as u64);
    assert!(!up.duplicate_bundle);
    assert_eq!(server.stored_files(), vec![format!("blobs/{sha}")]);
    assert_eq!(
        std::fs::read(server.data_dir.path().join("blobs").join(&sha)).unwrap(),
        bundle_bytes
    );
    let list: Vec<serde_json::Value> = admin.get("/v1/releases").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["version"], "2.0.0");
    let shown: serde_json::Value = admin
        .get(&format!("/v1/releases/{}", up.release))
        .await
        .unwrap();
    assert_eq!(shown["signed"].as_str().unwrap(), signed.to_json());

    // The same bundle again: a duplicate by hash, refused before anything is stored.
    let err = admin
        .upload(&bundle, &release_file, &indicatif::ProgressBar::hidden())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("409"), "{err}");
    assert!(err.to_string().contains("already"), "{err}");

    // Devices: nothing offered before a rollout.
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-1"))
        .await
        .unwrap();
    let a = dev.get("/v1/devices/GW-1/release", &[]).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // The agent reports (poll) with its running version before it polls.
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-1", 1, "poll", "checking", "1.0.0", ""),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);

    let status = spark_ota::cli::rollout_create(&admin, up.release, Some("w48"), true)
        .await
        .unwrap();
    assert_eq!(status.state, "active");

    // Now the agent's plain GET poll gets the signed manifest, byte for byte as uploaded.
    let a = dev.get("/v1/devices/GW-1/release", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, signed.to_json().as_bytes());
    // A device already running 2.0.0 (told by query) gets nothing.
    let mut dev2 = DeviceConn::connect(server.device_addr, pki.device_tls("GW-2"))
        .await
        .unwrap();
    let a = dev2
        .get(
            "/v1/devices/GW-2/release?current-version=2.0.0&booted-slot=B&agent-state=idle",
            &[],
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // The JSON check-in: older version and the right compatible → offered; other hardware → not.
    let a = dev2
        .post_json(
            "/v1/devices/GW-2/check-in",
            r#"{"current-version":"1.5.0","booted-slot":"A","agent-state":"idle","compatible":"spark-bbb"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let mut dev3 = DeviceConn::connect(server.device_addr, pki.device_tls("GW-3"))
        .await
        .unwrap();
    let a = dev3
        .post_json(
            "/v1/devices/GW-3/check-in",
            r#"{"current-version":"1.0.0","compatible":"other-board"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);

    // Downloads: HEAD, full, ranges, validators.
    let path = format!("/v1/bundles/{sha}");
    let etag = format!("\"{sha}\"");
    let total = bundle_bytes.len();
    let a = dev
        .request(Method::HEAD, &path, &[], bytes::Bytes::new())
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-length"), Some(total.to_string().as_str()));
    assert_eq!(a.header("etag"), Some(etag.as_str()));
    assert_eq!(a.header("accept-ranges"), Some("bytes"));
    assert!(a.body.is_empty());
    let a = dev.get(&path, &[("range", "bytes=1000-")]).await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes 1000-{}/{total}", total - 1).as_str())
    );
    assert_eq!(&a.body[..], &bundle_bytes[1000..]);
    let a = dev
        .get(&path, &[("range", "bytes=10-19"), ("if-range", &etag)])
        .await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&a.body[..], &bundle_bytes[10..20]);
    let a = dev.get(&path, &[("range", "bytes=-100")]).await;
    assert_eq!(&a.body[..], &bundle_bytes[total - 100..]);
    // If-Range naming another entity: the whole file, 200.
    let a = dev
        .get(
            &path,
            &[("range", "bytes=10-19"), ("if-range", "\"stale\"")],
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body.len(), total);
    assert_eq!(&a.body[..], &bundle_bytes[..]);
    let a = dev
        .get(&path, &[("range", &format!("bytes={total}-"))])
        .await;
    assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        a.header("content-range"),
        Some(format!("bytes */{total}").as_str())
    );
    let a = dev.get(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(a.status, StatusCode::NOT_MODIFIED);
    assert!(a.body.is_empty());
    let a = dev
        .get(&format!("/v1/bundles/{}", "0".repeat(64)), &[])
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let served = (total - 1000) + 10 + 100 + total;

    // Status reports: stored once per seq; a resend changes nothing.
    for (seq, reason, to) in [
        (2, "offered", "downloading"),
        (3, "downloaded", "verifying"),
    ] {
        let a = dev
            .post_json(
                "/v1/devices/GW-1/update-status",
                &report("GW-1", seq, reason, to, "1.0.0", "2.0.0"),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-1", 3, "downloaded", "verifying", "1.0.0", "2.0.0"),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let shown: serde_json::Value = admin.get("/v1/devices/GW-1").await.unwrap();
    assert_eq!(shown["reports"].as_array().unwrap().len(), 3);
    assert_eq!(shown["device"]["last_reason"], "downloaded");
    assert_eq!(shown["device"]["agent_state"], "verifying");

    // Bytes served, per rollout and per device.
    let per_rollout: Vec<spark_ota::store::DataCost> = admin.get("/v1/data-cost").await.unwrap();
    assert_eq!(per_rollout.len(), 1, "{per_rollout:?}");
    assert_eq!(per_rollout[0].key, "w48");
    assert_eq!(per_rollout[0].bytes, served as i64);
    assert_eq!(per_rollout[0].requests, 4);
    let per_device: Vec<spark_ota::store::DataCost> =
        admin.get("/v1/data-cost?by=device").await.unwrap();
    assert_eq!(per_device.len(), 1);
    assert_eq!(per_device[0].key, "GW-1");

    // Pause stops new offers at once (a device not offered yet gets nothing); a device already
    // updating keeps its offer, so it can finish or resume its download. Resume brings new
    // offers back; abort ends them.
    spark_ota::cli::rollout_action(&admin, "w48", "pause", Some("looking at failures"))
        .await
        .unwrap();
    let mut dev4 = DeviceConn::connect(server.device_addr, pki.device_tls("GW-4"))
        .await
        .unwrap();
    assert_eq!(
        dev4.get("/v1/devices/GW-4/release?current-version=1.0.0", &[])
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        dev.get("/v1/devices/GW-1/release", &[]).await.status,
        StatusCode::OK
    );
    let st = spark_ota::cli::rollout_status(&admin, Some("w48"), true)
        .await
        .unwrap();
    assert_eq!(st[0].state, "paused");
    assert_eq!(
        st[0].reason.as_deref(),
        Some("paused by an admin: looking at failures")
    );
    let err = spark_ota::cli::rollout_action(&admin, "w48", "pause", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot pause"), "{err}");
    spark_ota::cli::rollout_action(&admin, "w48", "resume", None)
        .await
        .unwrap();
    assert_eq!(
        dev.get("/v1/devices/GW-1/release", &[]).await.status,
        StatusCode::OK
    );
    let st = spark_ota::cli::rollout_status(&admin, Some("w48"), true)
        .await
        .unwrap();
    assert_eq!(st[0].waves[0].offered, 2, "{st:?}");
    assert_eq!(st[0].bytes_served, served as i64);

    // A failure report: the device is not offered the release again before the penalty box's
    // retry time, and 1 failure of a wave of 3 is over the 5 % gate, so the rollout pauses
    // itself with the reason.
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-1", 4, "health-failed", "failed", "1.0.0", "2.0.0"),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        dev.get("/v1/devices/GW-1/release", &[]).await.status,
        StatusCode::NO_CONTENT
    );
    let st = spark_ota::cli::rollout_status(&admin, Some("w48"), true)
        .await
        .unwrap();
    assert_eq!(st[0].waves[0].failed, 1);
    assert_eq!(st[0].state, "paused", "{st:?}");
    let reason = st[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("1 of 1 devices that reported failed"),
        "{reason}"
    );
    match &st[0].phase {
        Some(spark_rollout::Phase::Paused { reason }) => {
            assert_eq!(reason.cause.code(), "failure_rate");
            assert_eq!(reason.wave, Some(0));
        }
        other => panic!("expected an automatic pause, got {other:?}"),
    }

    // Yanked: offered to nobody.
    spark_ota::cli::release_yank(&admin, up.release, Some("bad battery driver"))
        .await
        .unwrap();
    let a = dev2
        .post_json(
            "/v1/devices/GW-2/check-in",
            r#"{"current-version":"1.5.0"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    spark_ota::cli::rollout_action(&admin, "w48", "abort", Some("yanked"))
        .await
        .unwrap();
    let err = spark_ota::cli::rollout_action(&admin, "w48", "resume", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("aborted"), "{err}");

    server.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_lifecycle_sqlite() {
    release_lifecycle(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_lifecycle_postgres() {
    release_lifecycle(Kind::Postgres).await;
}

#[path = "ota/bad_input.rs"]
mod bad_input;
#[path = "ota/dashboard.rs"]
mod dashboard;
#[path = "ota/dev_mode.rs"]
mod dev_mode;
#[path = "ota/manifest.rs"]
mod manifest;
#[path = "ota/push.rs"]
mod push;
#[path = "ota/rollouts.rs"]
mod rollouts;
#[path = "ota/sim.rs"]
mod sim;
