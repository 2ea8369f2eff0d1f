//! Replacing the signed manifest of a release already in the catalog (`PUT
//! /v1/releases/{id}/manifest`, `spark-ota release manifest ID MANIFEST`): renewing one that
//! expired, and re-signing a release as an allowed downgrade so that a rollback rollout can go
//! back to it. A manifest for another bundle, version or compatible, an older one, one that does
//! not verify, garbage, and a replacement of a yanked release are refused and change nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use spark_ota::client::AdminClient;
use spark_ota::rollouts::RolloutStatus;
use spark_ota::store::ReleaseRecord;
use spark_release::{Policy, SignedRelease, Timestamp, TrustedKeys, Version};

use crate::common::*;

/// How long the first manifest of the renewal test is valid: long enough for its upload on a
/// loaded machine, short enough to wait out.
const SHORT_VALIDITY: Duration = Duration::from_secs(5);

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

async fn shown(admin: &AdminClient, id: i64) -> ReleaseRecord {
    admin.get(&format!("/v1/releases/{id}")).await.unwrap()
}

/// The replacement of release `id` by the file `manifest` is refused with `status`, the
/// message says `expect`, and the stored release is as it was.
async fn refused(admin: &AdminClient, id: i64, manifest: &Path, status: u16, expect: &str) {
    let before = serde_json::to_value(shown(admin, id).await).unwrap();
    let err = spark_ota::cli::release_manifest(admin, id, manifest, true)
        .await
        .unwrap_err();
    match &err {
        spark_ota::ClientError::Status { status: s, message } => {
            assert_eq!(s.as_u16(), status, "{}: {message}", manifest.display());
            assert!(
                message.contains(expect),
                "{}: expected {expect:?} in {message:?}",
                manifest.display()
            );
        }
        other => panic!("{}: not refused by the server: {other}", manifest.display()),
    }
    let after = serde_json::to_value(shown(admin, id).await).unwrap();
    assert_eq!(before, after, "a refused replacement changed the release");
}

/// Renewal of an expired manifest; every refusal; the live-rollout guard; a yanked release.
async fn replace_manifest(kind: Kind) {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let server = TestServer::start(&pki, &db, "").await;
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let key = pki.pki.release_key();
    let bundle = dir.join("v2.raucb");
    pki.bundle("2.0.0", 20_000, &bundle);

    // 2.0.0 with a manifest issued an hour ago that expires in a few seconds.
    let now = Timestamp::now();
    let first = pki.sign_release_with(&bundle, "2.0.0", &key, |m| {
        m.issued_at = now.saturating_sub(Duration::from_secs(3600));
        m.expires_at = now.checked_add(SHORT_VALIDITY).unwrap();
    });
    let first_file = write(dir, "first.release.json", first.to_json());
    let up = admin
        .upload(&bundle, &first_file, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    let created = shown(&admin, up.release).await;
    spark_ota::cli::rollout_create(&admin, up.release, Some("w1"), true)
        .await
        .unwrap();

    // Offered with the first manifest until it expires, then to nobody.
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-1"))
        .await
        .unwrap();
    let poll = "/v1/devices/GW-1/release?current-version=1.0.0";
    let deadline = Instant::now() + SHORT_VALIDITY + Duration::from_secs(20);
    loop {
        let a = dev.get(poll, &[]).await;
        match a.status {
            StatusCode::OK => assert_eq!(a.body, first.to_json().as_bytes()),
            StatusCode::NO_CONTENT => break,
            other => panic!("unexpected {other}: {:?}", a.body),
        }
        assert!(
            Instant::now() < deadline,
            "the expired release is still offered"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(Timestamp::now() >= first.manifest().expires_at);

    // Renewed (signed now, valid 30 days): same release, new manifest, offered again with the
    // new bytes.
    let renewed = pki.sign_release(&bundle, "2.0.0");
    let renewed_file = write(dir, "renewed.release.json", renewed.to_json());
    let r = spark_ota::cli::release_manifest(&admin, up.release, &renewed_file, true)
        .await
        .unwrap();
    let m = renewed.manifest();
    assert_eq!(r.release, up.release);
    assert!(!r.unchanged);
    assert_eq!(
        (r.manifest.issued_at, r.manifest.expires_at),
        (m.issued_at.unix() as i64, m.expires_at.unix() as i64)
    );
    assert_eq!(
        r.previous.expires_at,
        first.manifest().expires_at.unix() as i64
    );
    let now_stored = shown(&admin, up.release).await;
    assert_eq!(
        now_stored.signed.as_deref(),
        Some(renewed.to_json().as_str())
    );
    assert_eq!(now_stored.expires_at, m.expires_at.unix() as i64);
    assert_eq!(now_stored.issued_at, m.issued_at.unix() as i64);
    assert_eq!(now_stored.key_id, renewed.key_id().to_string());
    assert_eq!(
        (
            now_stored.id,
            now_stored.created_at,
            &now_stored.bundle_sha256
        ),
        (created.id, created.created_at, &created.bundle_sha256)
    );
    let a = dev.get(poll, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, renewed.to_json().as_bytes());
    // The same manifest again, in its wire form: accepted, nothing changes.
    let wire_file = write(dir, "renewed.release.bin", renewed.to_bytes());
    let r = spark_ota::cli::release_manifest(&admin, up.release, &wire_file, true)
        .await
        .unwrap();
    assert!(r.unchanged);
    assert_eq!(
        serde_json::to_value(shown(&admin, up.release).await).unwrap(),
        serde_json::to_value(&now_stored).unwrap()
    );

    // Refused, nothing changed: a manifest for something else than this release.
    let other = |name: &str, edit: &dyn Fn(&mut spark_release::ReleaseManifest)| {
        let s = pki.sign_release_with(&bundle, "2.0.0", &key, edit);
        write(dir, name, s.to_json())
    };
    let id = up.release;
    let f = other("version.json", &|m| m.version = Version::new(2, 0, 1));
    refused(
        &admin,
        id,
        &f,
        422,
        "it names version 2.0.1, the release has 2.0.0",
    )
    .await;
    let f = other("sha.json", &|m| m.bundle_sha256 = [0x11; 32]);
    refused(&admin, id, &f, 422, "bundle SHA-256 1111").await;
    let f = other("size.json", &|m| m.bundle_size += 1);
    refused(&admin, id, &f, 422, "bundle size").await;
    let f = other("compatible.json", &|m| m.compatible = "other-board".into());
    refused(&admin, id, &f, 422, "compatible \"other-board\"").await;
    // Older than the stored one: a replay of an old manifest (even one still valid).
    let f = other("older.json", &|m| {
        m.issued_at = m.issued_at.saturating_sub(Duration::from_secs(60))
    });
    refused(&admin, id, &f, 409, "never put back").await;
    // The first manifest, which has expired meanwhile.
    refused(&admin, id, &first_file, 422, "expired").await;
    // Does not verify: expired, signed by a key the server does not trust, altered.
    let f = other("expired.json", &|m| {
        m.issued_at = now.saturating_sub(Duration::from_secs(2 * 86_400));
        m.expires_at = now.saturating_sub(Duration::from_secs(86_400));
    });
    refused(&admin, id, &f, 422, "expired").await;
    let stranger = Pki::new();
    let s = pki.sign_release_with(&bundle, "2.0.0", &stranger.pki.release_key(), |_| {});
    let f = write(dir, "unknown-key.json", s.to_json());
    refused(&admin, id, &f, 422, "unknown key").await;
    let mut altered = serde_json::from_str::<serde_json::Value>(&renewed.to_json()).unwrap();
    altered["manifest"]["allow_downgrade"] = true.into();
    let f = write(dir, "altered.json", altered.to_string());
    refused(&admin, id, &f, 422, "bad signature").await;
    // Not a manifest at all.
    let f = write(dir, "garbage.json", b"{\"hello\": 1}");
    refused(&admin, id, &f, 400, "malformed").await;
    let f = write(dir, "empty", b"");
    refused(&admin, id, &f, 400, "malformed").await;
    let err = spark_ota::cli::release_manifest(&admin, 9999, &renewed_file, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("404") && err.contains("no release 9999"),
        "{err}"
    );

    // A live rollout was planned with the release's minimum version: changing it waits until
    // the rollout is aborted.
    let min = other("min.json", &|m| m.min_version = Some(Version::new(1, 5, 0)));
    refused(&admin, id, &min, 409, "rollout(s) w1 of release").await;
    spark_ota::cli::rollout_action(&admin, "w1", "abort", None)
        .await
        .unwrap();
    let r = spark_ota::cli::release_manifest(&admin, id, &min, true)
        .await
        .unwrap();
    assert_eq!(r.manifest.min_version.as_deref(), Some("1.5.0"));
    assert_eq!(r.previous.min_version, None);
    assert_eq!(
        shown(&admin, id).await.min_version.as_deref(),
        Some("1.5.0")
    );

    // Yanked: refused, with what to do instead.
    spark_ota::cli::release_yank(&admin, id, Some("bad driver"))
        .await
        .unwrap();
    let later = other("later.json", &|m| {
        m.issued_at = m.issued_at.checked_add(Duration::from_secs(1)).unwrap()
    });
    refused(&admin, id, &later, 409, "is yanked").await;
    refused(&admin, id, &later, 409, "new version").await;

    assert_eq!(server.catalog_rows().await, (1, 1));
    assert_eq!(server.stored_files(), vec![format!("blobs/{}", up.sha256)]);
    server.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_manifest_sqlite() {
    replace_manifest(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_manifest_postgres() {
    replace_manifest(Kind::Postgres).await;
}

/// The rollback the catalog could not do before: 1.0.0 is in the catalog, signed as usual;
/// devices went on to 2.0.0. Uploading 1.0.0 again with an allow-downgrade manifest is refused
/// (the release exists; the message names `release manifest`); replacing its manifest with the
/// re-signed one makes a rollback rollout to the same release id possible, and devices on
/// 2.0.0 are offered 1.0.0's new manifest, which a gateway on 2.0.0 accepts.
async fn rollback_to_a_release_in_the_catalog(kind: Kind) {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let server = TestServer::start(&pki, &db, "").await;
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let v1 = pki.upload_release(&admin, dir, "1.0.0").await;
    let v2 = pki.upload_release(&admin, dir, "2.0.0").await;

    // GW-1 goes from 1.0.0 to 2.0.0.
    spark_ota::cli::rollout_create(&admin, v2.release, Some("fw"), true)
        .await
        .unwrap();
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-1"))
        .await
        .unwrap();
    let a = dev
        .get("/v1/devices/GW-1/release?current-version=1.0.0", &[])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let mut seq = 0;
    send(
        &mut dev,
        &mut seq,
        ["offered", "downloading", "1.0.0", "2.0.0"],
    )
    .await;
    send(&mut dev, &mut seq, ["committed", "idle", "2.0.0", "2.0.0"]).await;

    // 2.0.0 is bad. 1.0.0 as signed first cannot be rolled back to.
    let rollback = serde_json::json!({"release": v1.release, "id": "rb", "kind": "rollback"});
    let err = admin
        .post::<RolloutStatus>("/v1/rollouts", &rollback)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not signed as an allowed downgrade"), "{err}");
    // Signed again with --allow-downgrade: uploading it with the bundle is refused, and the
    // refusal says how to proceed.
    let bundle1 = dir.join("1.0.0.raucb");
    let downgrade = pki.sign_release_with(&bundle1, "1.0.0", &pki.pki.release_key(), |m| {
        m.allow_downgrade = true
    });
    let file = write(dir, "1.0.0-downgrade.release.json", downgrade.to_json());
    let err = admin
        .upload(&bundle1, &file, &indicatif::ProgressBar::hidden())
        .await
        .unwrap_err()
        .to_string();
    let hint = format!("spark-ota release manifest {} MANIFEST", v1.release);
    assert!(err.contains("409") && err.contains(&hint), "{err}");
    assert_eq!(server.catalog_rows().await, (2, 2));

    // Replaced: release 1.0.0 keeps its id and now allows a downgrade.
    let r = spark_ota::cli::release_manifest(&admin, v1.release, &file, false)
        .await
        .unwrap();
    assert!(r.manifest.allow_downgrade && !r.previous.allow_downgrade);
    assert_eq!(r.release, v1.release);
    let st: RolloutStatus = admin.post("/v1/rollouts", &rollback).await.unwrap();
    assert_eq!(
        (st.kind.as_str(), st.version.as_str()),
        ("rollback", "1.0.0")
    );
    assert_eq!(st.waves[0].devices, 1, "{st:?}");

    // GW-1 on 2.0.0 is offered 1.0.0's new manifest, which its agent accepts as a downgrade.
    let a = dev
        .get("/v1/devices/GW-1/release?current-version=2.0.0", &[])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, downgrade.to_json().as_bytes());
    let mut keys = TrustedKeys::new();
    keys.load_pem_file(&pki.pki.release_pub()).unwrap();
    let policy = Policy::new(Timestamp::now())
        .with_compatible(COMPATIBLE)
        .with_installed_version(Version::new(2, 0, 0));
    let offered = SignedRelease::from_json(std::str::from_utf8(&a.body).unwrap()).unwrap();
    let m = offered.verify(&keys, &policy).unwrap();
    assert_eq!(m.version, Version::new(1, 0, 0));
    // The manifest it replaced would have been refused by that agent.
    let old =
        SignedRelease::from_json(&std::fs::read_to_string(dir.join("1.0.0.release.json")).unwrap())
            .unwrap();
    let refusal = old.verify(&keys, &policy).unwrap_err();
    assert_eq!(refusal.code(), "not-newer", "{refusal}");

    // Back on 1.0.0: the rollback counts it updated; nothing more is offered.
    send(
        &mut dev,
        &mut seq,
        ["offered", "downloading", "2.0.0", "1.0.0"],
    )
    .await;
    send(&mut dev, &mut seq, ["committed", "idle", "1.0.0", "1.0.0"]).await;
    let st: RolloutStatus = admin.get("/v1/rollouts/rb").await.unwrap();
    assert_eq!((st.waves[0].updated, st.waves[0].failed), (1, 0), "{st:?}");
    let a = dev
        .get("/v1/devices/GW-1/release?current-version=1.0.0", &[])
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let fw: RolloutStatus = admin.get("/v1/rollouts/fw").await.unwrap();
    assert_eq!(fw.waves[0].failed, 0, "{fw:?}");
    server.stop().await;
    db.drop_schema().await;
}

/// GW-1's status report number `seq + 1`: `[reason, to, current version, release version]`.
async fn send(dev: &mut DeviceConn, seq: &mut u64, [reason, to, current, release]: [&str; 4]) {
    *seq += 1;
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-1", *seq, reason, to, current, release),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_release_in_the_catalog_sqlite() {
    rollback_to_a_release_in_the_catalog(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_release_in_the_catalog_postgres() {
    rollback_to_a_release_in_the_catalog(Kind::Postgres).await;
}
