//! The dashboard in a real browser: headless Chromium (Debian `chromium`) signs in with an admin
//! token through the login form (the cookie path a person takes), loads every page of a server
//! that has a release, a rollout paused by its failure gate, devices that checked in, reported
//! and downloaded, and the test reads the page as Chromium built it (`--dump-dom`): what a person
//! would see. A screenshot of the rollout page is saved under the test's temp dir.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hyper::StatusCode;
use spark_ota::rollouts::RolloutStatus;
use spark_testbed::chromium;

use crate::common::*;

/// One headless Chromium run (`spark_testbed::chromium::browse`): the DOM of `url`, or a
/// failure with Chromium's log.
fn browse(dir: &Path, name: &str, url: &str, screenshot: Option<&Path>) -> String {
    let started = Instant::now();
    let dom = chromium::browse(dir, name, url, screenshot).unwrap_or_else(|e| {
        panic!(
            "headless Chromium on the {name} page ({url}): {e}\n--- its log ---\n{}",
            std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
        )
    });
    println!(
        "chromium: {name} in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    dom
}

/// A local page that signs in like a person does: the form of `/ui/login` with the token typed
/// in, submitted; the server sets the cookie and moves on to `next`.
fn sign_in_page(dir: &Path, name: &str, admin_url: &str, token: &str, next: &str) -> String {
    chromium::post_form_page(
        dir,
        &format!("sign-in-{name}"),
        &format!("{admin_url}/ui/login"),
        &[("token", token), ("next", next)],
    )
    .unwrap()
}

/// The `<tr id="ID">` row of a page; the test fails, showing the page, without one.
fn row<'a>(dom: &'a str, id: &str) -> &'a str {
    chromium::row(dom, id).unwrap_or_else(|| panic!("no row {id} in the page:\n{dom}"))
}

/// The text of the `<td class="CLASS">` cell of a row; the test fails without one.
fn cell(row: &str, class: &str) -> String {
    chromium::cell(row, class).unwrap_or_else(|| panic!("no cell {class} in {row}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_pages_in_headless_chromium() {
    chromium::present()
        .unwrap_or_else(|e| panic!("the dashboard test needs headless Chromium: {e}"));
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, "").await;
    let token = spark_ota::tokens::create(&server.store, "dashboard-test")
        .await
        .unwrap();
    let admin = spark_ota::client::AdminClient::new(
        &server.admin_url(),
        &pki.pki.server_ca_cert(),
        spark_ota::client::Credentials::Token(token.clone()),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();

    // A release of 2.0.0.
    let up = pki.upload_release(&admin, work.path(), "2.0.0").await;
    let sha = up.sha256.clone();

    // Five registered devices; one site name is markup, which must show as text.
    let devices: Vec<String> = (1..=5).map(|i| format!("GW-D{i}")).collect();
    for (i, d) in devices.iter().enumerate() {
        let site = if i == 0 { "<b>north</b> & co" } else { "south" };
        let _: serde_json::Value = admin
            .put(
                &format!("/v1/devices/{d}/attributes"),
                &serde_json::json!({"hardware_rev": "rev-a", "tags": {"region": "eu", "site": site}}),
            )
            .await
            .unwrap();
    }
    let created: RolloutStatus = admin
        .post(
            "/v1/rollouts",
            &serde_json::json!({
                "release": up.release, "id": "wk48",
                "gates": {"max_failure_bp": 2000, "min_sample": 3, "telemetry": null},
            }),
        )
        .await
        .unwrap();
    assert_eq!(created.waves[0].devices, 5);

    // Four check in and are offered 2.0.0; GW-D1 downloads the bundle; D1 and D2 update, D3
    // fails (1 of 3 reported: over the 20 % gate, so the rollout pauses itself), D4 is busy.
    let mut conns = Vec::new();
    for d in &devices[..4] {
        let mut c = DeviceConn::connect(server.device_addr, pki.device_tls(d))
            .await
            .unwrap();
        let a = c
            .get(
                &format!("/v1/devices/{d}/release?current-version=1.0.0"),
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{d}");
        conns.push(c);
    }
    let a = conns[0].get(&format!("/v1/bundles/{sha}"), &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    let bundle_len = a.body.len();
    let steps: [&[(&str, &str, &str)]; 4] = [
        &[
            ("offered", "downloading", "1.0.0"),
            ("committed", "idle", "2.0.0"),
        ],
        &[
            ("offered", "downloading", "1.0.0"),
            ("committed", "idle", "2.0.0"),
        ],
        &[
            ("offered", "downloading", "1.0.0"),
            ("install-failed", "failed", "1.0.0"),
        ],
        &[("offered", "downloading", "1.0.0")],
    ];
    for (i, reports) in steps.iter().enumerate() {
        for (seq, (reason, to, current)) in reports.iter().enumerate() {
            let body = report(&devices[i], seq as u64 + 1, reason, to, current, "2.0.0");
            let a = conns[i]
                .post_json(&format!("/v1/devices/{}/update-status", devices[i]), &body)
                .await;
            assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
        }
    }
    let api: RolloutStatus = admin.get("/v1/rollouts/wk48").await.unwrap();
    assert_eq!(api.state, "paused", "{api:?}");
    assert_eq!(api.bytes_served, bundle_len as i64);
    let wave = &api.waves[0];
    assert_eq!((wave.devices, wave.updated, wave.failed), (5, 2, 1));
    let reason = api.reason.clone().unwrap();

    // The browser: five pages after signing in, the sign-in form for a stranger, a wrong token.
    let dir = work.path().to_owned();
    let url = server.admin_url();
    let shot = dir.join("rollout-wk48.png");
    let started = Instant::now();
    // Two browsers at a time (CI has 2 cores and other tests run beside this one).
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(2));
    let mut jobs = Vec::new();
    for (name, next) in [
        ("rollout", "/ui/rollouts/wk48"),
        ("overview", "/ui"),
        ("releases", "/ui/releases"),
        ("rollouts", "/ui/rollouts"),
        ("devices", "/ui/devices"),
    ] {
        let page = sign_in_page(&dir, name, &url, &token, next);
        let (dir, shot) = (dir.clone(), shot.clone());
        let slot = slots.clone().acquire_owned().await.unwrap();
        jobs.push(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let png = (name == "rollout").then_some(shot.as_path());
            browse(&dir, name, &page, png)
        }));
    }
    {
        let (dir, url) = (dir.clone(), url.clone());
        let slot = slots.clone().acquire_owned().await.unwrap();
        jobs.push(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            browse(&dir, "stranger", &format!("{url}/ui/devices"), None)
        }));
    }
    {
        let page = sign_in_page(&dir, "wrong", &url, "sota_00ff", "/ui/devices");
        let dir = dir.clone();
        let slot = slots.clone().acquire_owned().await.unwrap();
        jobs.push(tokio::task::spawn_blocking(move || {
            let _slot = slot;
            browse(&dir, "wrong", &page, None)
        }));
    }
    let mut pages = Vec::new();
    for j in jobs {
        pages.push(j.await.unwrap());
    }
    println!(
        "7 Chromium runs in {:.1} s; screenshot of the rollout page: {}",
        started.elapsed().as_secs_f64(),
        shot.display()
    );
    let [
        rollout,
        overview,
        releases,
        rollouts,
        devices_page,
        stranger,
        wrong,
    ] = &pages[..]
    else {
        unreachable!("seven jobs")
    };

    // The rollout page: id, state, the gate's pause reason, the release, a row per wave with its
    // counts and failure rate, bytes served.
    assert!(
        rollout.contains(r#"<span id="rollout-id">wk48</span>"#),
        "{rollout}"
    );
    assert!(rollout.contains(r#"<span class="state state-paused">paused</span>"#));
    assert!(
        rollout.contains("1 of 3 devices that reported failed (wave of 5); the limit is 20%"),
        "{reason}\n{rollout}"
    );
    assert!(rollout.contains(&dashboard_esc(&reason)), "{reason}");
    assert!(rollout.contains(">2.0.0</a> for spark-bbb"));
    let w1 = row(rollout, "wave-1");
    assert_eq!(cell(w1, "devices"), "5");
    assert_eq!(cell(w1, "offered"), "4");
    assert_eq!(cell(w1, "updated"), "2");
    assert_eq!(cell(w1, "failed"), "1");
    assert_eq!(cell(w1, "in-progress"), wave.in_progress.to_string());
    assert_eq!(cell(w1, "failure-rate"), "33.33 %");
    assert!(cell(w1, "gate").starts_with("tripped: "), "{w1}");
    assert_eq!(api.waves.len(), 1);
    assert!(
        rollout.contains(&format!("({bundle_len} bytes)")),
        "bytes served: {rollout}"
    );
    // The progress bar: 2 of 5 green (40 %), 1 red (20 %).
    assert!(rollout.contains(r#"<span class="ok" style="width:40.00%"></span>"#));
    assert!(rollout.contains(r#"<span class="bad" style="width:20.00%"></span>"#));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );

    // Overview, releases, rollouts list.
    assert!(
        overview.contains(r#"<dd id="releases-count">1</dd>"#),
        "{overview}"
    );
    assert!(overview.contains(r#"<dd id="devices-count">5</dd>"#));
    assert!(overview.contains("1 paused"));
    assert!(overview.contains(r#"href="/ui/rollouts/wk48""#));
    let r = row(releases, &format!("release-{}", up.release));
    assert_eq!(cell(r, "version"), "2.0.0");
    assert!(r.contains(&sha[..12]) && r.contains("available"), "{r}");
    let r = row(rollouts, "rollout-wk48");
    assert!(r.contains(">paused</span>"), "{r}");
    assert_eq!(cell(r, "updated"), "2 of 5");
    assert_eq!(cell(r, "failed"), "1");
    assert_eq!(cell(r, "failure-rate"), "33.33 %");

    // Devices: every id, versions, the last report, bytes; markup in a tag shows as text.
    for d in &devices {
        assert!(row(devices_page, &format!("device-{d}")).contains(d.as_str()));
    }
    let d1 = row(devices_page, "device-GW-D1");
    assert_eq!(cell(d1, "version"), "2.0.0");
    assert!(cell(d1, "report").starts_with("committed at "), "{d1}");
    assert_eq!(
        cell(d1, "bytes"),
        format!("{:.1} kB ({bundle_len} bytes)", bundle_len as f64 / 1e3)
    );
    assert!(
        d1.contains("site=&lt;b&gt;north&lt;/b&gt; &amp; co"),
        "{d1}"
    );
    assert!(!devices_page.contains("<b>north"));
    let d3 = cell(row(devices_page, "device-GW-D3"), "report");
    assert!(d3.starts_with("install-failed at "), "{d3}");

    // No cookie: the sign-in form, nothing of the fleet. A wrong token: refused, said so.
    assert!(stranger.contains("<h1>Sign in</h1>"), "{stranger}");
    assert!(stranger.contains(r#"value="/ui/devices""#));
    assert!(!stranger.contains("GW-D1"));
    assert!(wrong.contains("Unknown admin token"), "{wrong}");
    assert!(!wrong.contains("GW-D1"));

    // The session at the HTTP level: the cookie's flags, the API ignores it, no open redirect.
    let http = spark_ota::https::HttpsClient::new(
        &url,
        rustls::ClientConfig::builder_with_provider(spark_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(spark_tls::load_roots(&pki.pki.server_ca_cert()).unwrap())
            .with_no_client_auth(),
    )
    .unwrap();
    let form = format!("token={token}&next=https%3A%2F%2Fevil.example%2Fui");
    let answer = http
        .send(
            hyper::Method::POST,
            "/ui/login",
            &[("content-type", "application/x-www-form-urlencoded".into())],
            spark_ota::https::full(form),
        )
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();
    assert_eq!(session, format!("{}={token}", spark_ota::dashboard::COOKIE));
    let body = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains(r#"content="0;url=/ui""#), "{body}");
    assert!(!body.contains("evil.example"));
    let (status, _) = http
        .call(
            hyper::Method::GET,
            "/v1/releases",
            &[("cookie", session.clone())],
            spark_ota::https::full(""),
        )
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the JSON API takes no cookie"
    );
    let (status, _) = http
        .call(
            hyper::Method::GET,
            "/v1/nope",
            &[],
            spark_ota::https::full(""),
        )
        .await
        .unwrap();
    // Mounting the pages left the admin listener's other paths behind its authentication.
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, page) = http
        .call(
            hyper::Method::GET,
            "/ui/rollouts/no-such",
            &[("cookie", session)],
            spark_ota::https::full(""),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&page).contains("There is no rollout"));

    // Keep the screenshot for a person to look at when asked to.
    if let Ok(keep) = std::env::var("SPARK_OTA_DASHBOARD_SHOT") {
        std::fs::copy(&shot, PathBuf::from(keep)).unwrap();
    }
    server.stop().await;
}

fn dashboard_esc(s: &str) -> String {
    spark_ota::dashboard::esc(s)
}
