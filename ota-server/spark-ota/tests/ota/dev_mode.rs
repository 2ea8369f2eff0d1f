//! Dev mode (`[dev] release-key`): a demo server holds the dev release key and signs a manifest
//! itself for an upload that comes without one, which devices verify with the public key alone.
//! Without dev mode such an upload is refused; a dev key whose public half is not among
//! `release-keys` stops the server at start.

use std::path::Path;

use spark_ota::{Config, Server};
use spark_release::{Policy, SignedRelease, Timestamp, TrustedKeys, Version};

use crate::common::*;

fn dev_section(key: &Path) -> String {
    format!("[dev]\nrelease-key = \"{}\"\n", key.display())
}

fn trusting(public: &Path) -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.load_pem_file(public).unwrap();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_signs_uploads_without_a_manifest() {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, &dev_section(&pki.pki.release_key())).await;
    assert!(server.store.releases().await.unwrap().is_empty());
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("v2.raucb");
    pki.bundle("2.0.0", 50_000, &bundle);
    let digest = spark_release::digest_file(&bundle).unwrap();
    let sha = hex::encode(digest.sha256);

    let before = Timestamp::now();
    let up = spark_ota::cli::release_upload(&admin, &bundle, None, true)
        .await
        .unwrap();
    assert!(up.dev_signed);
    assert_eq!(
        (up.compatible.as_str(), up.version.as_str(), up.size),
        (COMPATIBLE, "2.0.0", digest.size)
    );
    assert_eq!(up.sha256, sha);
    assert_eq!(server.stored_files(), vec![format!("blobs/{sha}")]);

    // The stored manifest verifies with the public key alone, as a gateway on 1.0.0 checks it,
    // and names exactly this bundle; it expires like sign-release's default (30 days).
    let shown: serde_json::Value = admin
        .get(&format!("/v1/releases/{}", up.release))
        .await
        .unwrap();
    let text = shown["signed"].as_str().unwrap().to_owned();
    let signed = SignedRelease::from_json(&text).unwrap();
    let policy = Policy::new(Timestamp::now())
        .with_compatible(COMPATIBLE)
        .with_installed_version(Version::new(1, 0, 0));
    let m = signed
        .verify(&trusting(&pki.pki.release_pub()), &policy)
        .unwrap();
    m.check_bundle(&digest).unwrap();
    assert_eq!(m.version, Version::new(2, 0, 0));
    assert!(!m.allow_downgrade);
    assert!(m.min_version.is_none() && m.locations.is_empty() && m.rollout.is_none());
    assert!(m.issued_at.unix() >= before.unix() && m.issued_at.unix() <= Timestamp::now().unix());
    assert_eq!(m.expires_at.unix() - m.issued_at.unix(), 30 * 86_400);
    assert_eq!(shown["key_id"], signed.key_id().to_string());
    // Another release key does not verify it: it really is the dev key's signature.
    let other = Pki::new();
    assert!(
        signed
            .verify(&trusting(&other.pki.release_pub()), &policy)
            .is_err()
    );

    // A device is offered it as stored, byte for byte.
    spark_ota::cli::rollout_create(&admin, up.release, Some("demo"), true)
        .await
        .unwrap();
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-1"))
        .await
        .unwrap();
    let a = dev
        .get("/v1/devices/GW-1/release?current-version=1.0.0", &[])
        .await;
    assert_eq!(a.status, hyper::StatusCode::OK);
    assert_eq!(a.body, text.as_bytes());

    // With a manifest, an upload is taken as signed offline, even in dev mode.
    let up2 = pki.upload_release(&admin, work.path(), "2.1.0").await;
    assert!(!up2.dev_signed);

    // The same bundle again: refused, nothing more stored.
    let err = spark_ota::cli::release_upload(&admin, &bundle, None, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("409") && err.contains("already exists"),
        "{err}"
    );
    // Not a bundle: refused after the upload, nothing stored.
    let garbage = work.path().join("garbage.raucb");
    std::fs::write(&garbage, vec![0x5a; 30_000]).unwrap();
    let err = spark_ota::cli::release_upload(&admin, &garbage, None, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("422") && err.contains("bundle refused"),
        "{err}"
    );
    let mut files = server.stored_files();
    files.sort();
    let mut expect = vec![format!("blobs/{sha}"), format!("blobs/{}", up2.sha256)];
    expect.sort();
    assert_eq!(files, expect);
    assert_eq!(server.catalog_rows().await, (2, 2));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_without_manifest_is_refused_without_dev_mode() {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, "").await;
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("v2.raucb");
    pki.bundle("2.0.0", 50_000, &bundle);
    let err = spark_ota::cli::release_upload(&admin, &bundle, None, true)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("400"), "{err}");
    assert!(err.contains("spark-keys sign-release"), "{err}");
    assert!(err.contains("dev mode"), "{err}");
    assert!(server.stored_files().is_empty());
    assert_eq!(server.catalog_rows().await, (0, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_key_devices_cannot_verify_stops_the_server() {
    init_tracing();
    let pki = Pki::new();
    let other = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let data = tempfile::tempdir().unwrap();
    let start = |key: &Path| {
        let text = TestServer::config_text(&pki, &db, data.path(), &dev_section(key));
        let config = Config::parse(&text, &data.path().join("ota.toml")).unwrap();
        async move { Server::from_config(&config).await }
    };

    // Another PKI's release key: its public half is not in release-keys.
    let key = other.pki.release_key();
    let err = start(&key).await.unwrap_err().to_string();
    assert!(err.contains("is not among `release-keys`"), "{err}");
    assert!(err.contains(&key.display().to_string()), "{err}");
    // No such file; a public key where the private one belongs.
    let missing = data.path().join("nope.pem");
    let err = start(&missing).await.unwrap_err().to_string();
    assert!(
        err.contains("dev-mode release key") && err.contains("nope.pem"),
        "{err}"
    );
    let err = start(&pki.pki.release_pub()).await.unwrap_err().to_string();
    assert!(err.contains("not an Ed25519 private key"), "{err}");
    // The PKI's own release key: starts, in dev mode.
    let server = start(&pki.pki.release_key()).await.unwrap();
    assert!(server.state.catalog.dev_mode());
}
