//! Bad input of every kind: refused with a clear error, and nothing stored (no blob, no spool
//! file, no row).

use hyper::StatusCode;
use spark_ota::client::{AdminClient, Credentials};

use crate::common::*;

/// Uploads `bundle` with `doc` as the signed manifest; returns the error text.
async fn refused(admin: &AdminClient, dir: &std::path::Path, bundle: &[u8], doc: &[u8]) -> String {
    let b = dir.join("upload.raucb");
    let r = dir.join("upload.release");
    std::fs::write(&b, bundle).unwrap();
    std::fs::write(&r, doc).unwrap();
    admin
        .upload(&b, &r, &indicatif::ProgressBar::hidden())
        .await
        .expect_err("upload must be refused")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_store_nothing() {
    init_tracing();
    let pki = Pki::new();
    let other = Pki::new(); // a different firmware CA and release key
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, "").await;
    let admin = server.admin(&pki).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    // A real bundle, a matching manifest, for reference.
    let good = dir.join("good.raucb");
    pki.bundle("3.0.0", 200_000, &good);
    let good_bytes = std::fs::read(&good).unwrap();

    // 1. Garbage with a correctly signed manifest for exactly those bytes: not a bundle.
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let gpath = dir.join("garbage.bin");
    std::fs::write(&gpath, &garbage).unwrap();
    let doc = pki.sign_release(&gpath, "3.0.0").to_json();
    let e = refused(&admin, dir, &garbage, doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("bundle refused"), "{e}");

    // 2. A bundle signed by another firmware CA (not in our keyring).
    let foreign = dir.join("foreign.raucb");
    other.bundle("3.0.0", 200_000, &foreign);
    let doc = pki.sign_release(&foreign, "3.0.0").to_json();
    let e = refused(
        &admin,
        dir,
        &std::fs::read(&foreign).unwrap(),
        doc.as_bytes(),
    )
    .await;
    assert!(e.contains("422") && e.contains("bundle refused"), "{e}");

    // 3. An unsigned bundle: the squashfs alone (trailer and CMS cut off).
    let unsigned = &good_bytes[..good_bytes.len() / 4096 * 4096 - 4096];
    let upath = dir.join("unsigned.bin");
    std::fs::write(&upath, unsigned).unwrap();
    let doc = pki.sign_release(&upath, "3.0.0").to_json();
    let e = refused(&admin, dir, unsigned, doc.as_bytes()).await;
    assert!(e.contains("422"), "{e}");

    // 4. A bundle whose payload was altered after signing.
    let mut tampered = good_bytes.clone();
    tampered[5000] ^= 0x40;
    let tpath = dir.join("tampered.raucb");
    std::fs::write(&tpath, &tampered).unwrap();
    let doc = pki.sign_release(&tpath, "3.0.0").to_json();
    let e = refused(&admin, dir, &tampered, doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("bundle refused"), "{e}");

    // 5. Manifest signed with an untrusted release key.
    let doc = pki
        .sign_release_with(&good, "3.0.0", &other.pki.release_key(), |_| {})
        .to_json();
    let e = refused(&admin, dir, &good_bytes, doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("unknown key"), "{e}");
    // The same refusal for a bundle far bigger than the socket buffers: the server answers
    // before reading the body, so the client only sees the 422 (rather than a reset while
    // still sending) if the server reads the rest before closing.
    let big = dir.join("big.raucb");
    pki.bundle("3.0.0", 6_000_000, &big);
    let doc = pki
        .sign_release_with(&big, "3.0.0", &other.pki.release_key(), |_| {})
        .to_json();
    for _ in 0..3 {
        let e = refused(&admin, dir, &std::fs::read(&big).unwrap(), doc.as_bytes()).await;
        assert!(e.contains("422") && e.contains("unknown key"), "{e}");
    }

    // 6. Manifest altered after signing (version changed in the JSON).
    let doc = pki
        .sign_release(&good, "3.0.0")
        .to_json()
        .replace("3.0.0", "3.0.1");
    let e = refused(&admin, dir, &good_bytes, doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("bad signature"), "{e}");

    // 7. Manifest for another bundle (digest mismatch), and one whose version differs from the
    //    bundle's.
    let doc = pki.sign_release(&foreign, "3.0.0").to_json();
    let e = refused(&admin, dir, &good_bytes, doc.as_bytes()).await;
    assert!(e.contains("422") || e.contains("413"), "{e}");
    let doc = pki.sign_release(&good, "3.1.0").to_json();
    let e = refused(&admin, dir, &good_bytes, doc.as_bytes()).await;
    assert!(
        e.contains("422") && e.contains("version 3.0.0 differs"),
        "{e}"
    );

    // 8. Expired manifest.
    let doc = pki
        .sign_release_with(&good, "3.0.0", &pki.pki.release_key(), |m| {
            m.issued_at = spark_release::Timestamp::from_unix(1_600_000_000).unwrap();
            m.expires_at = spark_release::Timestamp::from_unix(1_600_000_100).unwrap();
        })
        .to_json();
    let e = refused(&admin, dir, &good_bytes, doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("expired"), "{e}");

    // 9. Garbage as the manifest, and an upload cut short.
    let e = refused(&admin, dir, &good_bytes, b"{not json").await;
    assert!(e.contains("400") && e.contains("malformed"), "{e}");
    let doc = pki.sign_release(&good, "3.0.0").to_json();
    let e = refused(&admin, dir, &good_bytes[..100_000], doc.as_bytes()).await;
    assert!(e.contains("422") && e.contains("declares"), "{e}");

    // 10. No manifest header at all; not base64.
    let raw = raw_admin(&server, &admin_token(&server).await).await;
    let (status, body) = raw("POST", "/v1/releases", vec![], good_bytes.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("Spark-Release"),
        "{body:?}"
    );
    let (status, _) = raw(
        "POST",
        "/v1/releases",
        vec![("spark-release", "!!not base64!!".into())],
        good_bytes.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Nothing stored by any of it.
    assert_eq!(server.catalog_rows().await, (0, 0));
    assert!(
        server.stored_files().is_empty(),
        "{:?}",
        server.stored_files()
    );

    // The good one still goes in afterwards.
    let doc = pki.sign_release(&good, "3.0.0").to_json();
    let r = dir.join("good.release.json");
    std::fs::write(&r, doc).unwrap();
    admin
        .upload(&good, &r, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    assert_eq!(server.catalog_rows().await, (1, 1));

    // Malformed JSON on admin endpoints.
    let (status, body) = raw("POST", "/v1/rollouts", vec![], b"{\"release\": ".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&body).contains("invalid rollout"),
        "{body:?}"
    );
    let (status, _) = raw(
        "POST",
        "/v1/rollouts",
        vec![],
        br#"{"release": 1, "bogus": 2}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = raw(
        "POST",
        "/v1/rollouts",
        vec![],
        br#"{"release": 99}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(server.store.rollouts().await.unwrap().len(), 0);

    server.stop().await;
}

/// A fresh token.
async fn admin_token(server: &TestServer) -> String {
    spark_ota::tokens::create(&server.store, &format!("raw-{}", rand::random::<u32>()))
        .await
        .unwrap()
}

type Raw = Box<
    dyn Fn(
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = (StatusCode, bytes::Bytes)> + Send>,
    >,
>;

/// A raw admin-API caller with `token` ("": no Authorization header).
async fn raw_admin(server: &TestServer, token: &str) -> Raw {
    let http = spark_ota::https::HttpsClient::new(
        &server.admin_url(),
        rustls::ClientConfig::builder_with_provider(spark_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(
                spark_tls::load_roots(&server.config.tls.admin_ca.clone().unwrap()).unwrap(),
            )
            .with_no_client_auth(),
    )
    .unwrap();
    let token = token.to_owned();
    Box::new(move |method, path, mut headers, body| {
        let http = http.clone();
        if !token.is_empty() {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        Box::pin(async move {
            http.call(
                method.parse().unwrap(),
                path,
                &headers,
                spark_ota::https::full(body),
            )
            .await
            .unwrap()
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_certificates_missing_tokens_and_bad_json_are_refused() {
    init_tracing();
    let pki = Pki::new();
    let other = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, "").await;

    // A device certificate from another device CA: the handshake fails, nothing is recorded.
    let foreign = other.device_tls("GW-X");
    // The foreign client trusts the other server CA; give it ours so only the client side is wrong.
    let (cert, key) = other.device("GW-X");
    let tls = std::sync::Arc::new(
        spark_tls::client_config(&pki.pki.server_ca_cert(), &cert, &key).unwrap(),
    );
    drop(foreign);
    let r = match DeviceConn::connect(server.device_addr, tls).await {
        Err(_) => None,
        // TLS 1.3: the client learns of the refusal on its first read.
        Ok(mut c) => Some(
            c.request(
                hyper::Method::GET,
                "/v1/devices/GW-X/release",
                &[],
                bytes::Bytes::new(),
            )
            .await,
        ),
    };
    assert!(
        matches!(r, None | Some(Err(_))),
        "foreign device certificate must be refused"
    );
    // No client certificate at all on the device listener.
    let nocert = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(spark_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(spark_tls::load_roots(&pki.pki.server_ca_cert()).unwrap())
            .with_no_client_auth(),
    );
    let r = match DeviceConn::connect(server.device_addr, nocert).await {
        Err(_) => None,
        Ok(mut c) => Some(
            c.request(
                hyper::Method::GET,
                "/v1/devices/GW-X/release",
                &[],
                bytes::Bytes::new(),
            )
            .await,
        ),
    };
    assert!(
        matches!(r, None | Some(Err(_))),
        "device listener requires a certificate"
    );

    // A valid device speaking for another one.
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-1"))
        .await
        .unwrap();
    let a = dev.get("/v1/devices/GW-2/release", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("only speak for itself")
    );
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-2", 1, "poll", "checking", "1.0.0", ""),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Malformed JSON from a device.
    let a = dev
        .post_json("/v1/devices/GW-1/update-status", "{\"device\": \"GW-1\", ")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid status report")
    );
    let a = dev
        .post_json(
            "/v1/devices/GW-1/update-status",
            &report("GW-1", 1, "no-such-reason", "checking", "1.0.0", ""),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = dev.post_json("/v1/devices/GW-1/check-in", "[1,2").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = dev
        .post_json("/v1/devices/GW-1/check-in", r#"{"current-version": "one"}"#)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = dev
        .get("/v1/devices/GW-1/release?current-version=1%2E0", &[])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = dev.get("/v1/bundles/../../etc/passwd", &[]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let counts = server.store.counts().await.unwrap();
    for (table, n) in counts {
        assert_eq!(n, 0, "{table} must be empty");
    }

    // Admin API: no token, a wrong token, a device certificate.
    let raw = raw_admin(&server, "").await;
    let (status, body) = raw("GET", "/v1/releases", vec![], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("missing admin token"));
    let raw = raw_admin(&server, "sota_0000").await;
    let (status, body) = raw("GET", "/v1/releases", vec![], vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("unknown admin token"));
    let (dcert, dkey) = pki.device("GW-1");
    let as_device = AdminClient::new(
        &server.admin_url(),
        &pki.pki.server_ca_cert(),
        Credentials::Certificate {
            cert: &dcert,
            key: &dkey,
        },
    )
    .unwrap();
    assert!(
        as_device
            .get::<serde_json::Value>("/v1/releases")
            .await
            .is_err()
    );
    // An admin certificate from the admin CA (server CA) works without a token.
    let (acert, akey) = spark_keys::issue_service(pki.dir.path(), "ops-alice", false).unwrap();
    let as_admin = AdminClient::new(
        &server.admin_url(),
        &pki.pki.server_ca_cert(),
        Credentials::Certificate {
            cert: &acert,
            key: &akey,
        },
    )
    .unwrap();
    let list: Vec<serde_json::Value> = as_admin.get("/v1/releases").await.unwrap();
    assert!(list.is_empty());
    // Tokens are stored hashed only.
    let token = admin_token(&server).await;
    let Store::Sqlite(pool) = &server.store else {
        unreachable!()
    };
    let stored: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM admin_tokens")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(
        !stored
            .iter()
            .any(|s| s.contains(&token) || token.contains(s.as_str()))
    );
    assert!(stored.contains(&spark_ota::api::token_hash(&token)));

    server.stop().await;
}

use spark_ota::Store;
