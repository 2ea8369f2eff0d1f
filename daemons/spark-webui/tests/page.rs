//! What a person sees. On the bus of a testbed running the real `rauc service` (file-backed
//! A/B slots, simulated U-Boot; slot B holds an installed bundle and boots next), the web UI
//! starts first, with none of Spark's daemons on the bus: its page says so. Then the real
//! spark-meterd (reading the meter radio simulator) and spark-uplinkd (its cloud unreachable)
//! start in-process, and a test `io.spark.Update1` (see `common/update1.rs` for why not the real
//! agent); the live stream (`/events`) shows each part appear. Then headless Chromium logs in
//! through the form the way a person does (types the password, presses the button; driven over
//! the DevTools protocol, see `common/cdp.rs`), and the test reads the page as the browser built
//! it: the meters with their last readings (compared with what meterd serves), the link, the
//! slots as RAUC reports them, the update state. The agent then moves on; the page follows
//! without a reload (server-sent events), and shows the agent gone when it leaves the bus. A
//! screenshot is saved in the test's temp dir (its path is printed; `SPARK_TESTBED_KEEP=1` keeps
//! the directory).

mod common;

use std::time::Duration;

use common::cdp::Browser;
use common::gateway::{Meters, Uplink};
use common::update1::{AgentState, TestUpdate1};
use common::{PASSWORD, WAIT, WebUi, by_id, logs};
use hyper::StatusCode;
use spark_testbed::chromium::{cell, row};
use spark_testbed::fixture::TestPki;
use spark_testbed::{Testbed, TestbedOptions};

const COMPATIBLE: &str = "spark-bbb-webui-test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sees_the_gateway_live() {
    logs();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_owned();
    // The real RAUC, with version 2026.12.0 installed into slot B (which now boots next).
    let bed = tokio::task::spawn_blocking(move || {
        let pki = TestPki::generate(&dir).unwrap();
        let bed = Testbed::start(TestbedOptions::new(COMPATIBLE, &pki.ca_cert)).unwrap();
        let bundle = dir.join("update.raucb");
        pki.plain_bundle(
            &dir,
            COMPATIBLE,
            "2026.12.0",
            &vec![0x5a; 256 * 1024],
            &bundle,
        )
        .unwrap();
        bed.install(&bundle).unwrap();
        bed
    })
    .await
    .unwrap();
    let bus = bed.bus_address().to_owned();

    // The web UI alone on the bus (with RAUC).
    let data = work.path().join("webui");
    let ui = WebUi::start(&bus, &data).await;
    ui.set_password(PASSWORD);
    let cookie = ui.login().await;
    let page = ui.client.get("/", &[("cookie", &cookie)]).await;
    assert_eq!(page.status, StatusCode::OK);
    for (id, daemon) in [
        ("spark-meterd-status", "spark-meterd"),
        ("spark-uplinkd-status", "spark-uplinkd"),
        ("spark-updated-status", "spark-updated"),
    ] {
        assert_eq!(
            by_id(&page.body, id).as_deref(),
            Some(&format!("unknown: {daemon} is not running")[..]),
            "{}",
            page.body
        );
    }
    let mut events = ui.client.events(&cookie).await;

    // The daemons come up; the live stream shows each part appear.
    let meters = Meters::start(&bus, 12, 6).await;
    meters.wait_all_stored().await;
    let uplink = Uplink::start(&bus).await;
    let agent = TestUpdate1::start(
        &bus,
        AgentState {
            state: "downloading".into(),
            progress: 42,
            pending_version: "2026.12.1".into(),
            ..AgentState::default()
        },
    )
    .await;
    let last_id = meters.meter_ids.last().unwrap().clone();
    events
        .until("meters", WAIT, |html| {
            html.contains("data-value=\"true\"") && html.contains(&format!("meter-{last_id}"))
        })
        .await;
    events
        .until("link", WAIT, |html| {
            html.contains("id=\"link-connected\" data-value=\"false\"")
        })
        .await;
    events
        .until("update", WAIT, |html| {
            html.contains("id=\"update-state\" data-value=\"downloading\"")
        })
        .await;
    // uplinkd takes the readings into its queue; the page's figures are uplinkd's own.
    let conn = zbus::connection::Builder::address(bus.as_str())
        .unwrap()
        .build()
        .await
        .unwrap();
    let meters1 = spark_dbus::Meters1Proxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    let uplink1 = spark_dbus::Uplink1Proxy::builder(&conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    common::wait_for("uplinkd took every reading", || async {
        meters1.buffered().await.unwrap() == 0 && uplink1.queue_depth().await.unwrap() > 0
    })
    .await;
    let queue_depth = uplink1.queue_depth().await.unwrap();
    let last = meters1.last_readings().await.unwrap();
    assert_eq!(last.len(), 12, "every meter was read");

    // A person: open the page, get the login form, type the password, press the button.
    let mut browser = Browser::start(work.path()).await;
    browser.navigate(&ui.url("/")).await;
    browser
        .wait_until(
            "location.pathname === '/login' && !!document.querySelector('input[name=password]')",
        )
        .await;
    browser
        .eval("document.querySelector('input[name=password]').focus()")
        .await;
    browser.type_text(PASSWORD).await;
    browser
        .eval("document.querySelector('#login button').click()")
        .await;
    browser
        .wait_until(
            "location.pathname === '/' && document.getElementById('live').textContent === 'Live'",
        )
        .await;
    // What the browser shows once the stream caught up with the queue.
    let expect_queue =
        format!("document.getElementById('queue-depth').dataset.value === '{queue_depth}'");
    browser.wait_until(&expect_queue).await;
    let dom = browser.dom().await;

    // Meters: every meter with its newest reading, as meterd serves it.
    assert_eq!(by_id(&dom, "radio-online").as_deref(), Some("online"));
    assert_eq!(by_id(&dom, "meters-count").as_deref(), Some("12"));
    for r in &last {
        let tr = row(&dom, &format!("meter-{}", r.meter_id))
            .unwrap_or_else(|| panic!("no row for {} in\n{dom}", r.meter_id));
        assert_eq!(cell(tr, "meter").unwrap(), r.meter_id);
        assert_eq!(cell(tr, "wh").unwrap(), r.wh.to_string());
        assert_eq!(
            cell(tr, "time").unwrap(),
            spark_webui::render::time_text(r.timestamp)
        );
    }
    // Link: down (the cloud refuses), readings waiting in the queue.
    assert_eq!(
        by_id(&dom, "link-connected").as_deref(),
        Some("not connected")
    );
    let entries = if queue_depth == 1 { "entry" } else { "entries" };
    assert_eq!(
        by_id(&dom, "queue-depth").unwrap(),
        format!("{queue_depth} {entries} waiting for the cloud")
    );
    assert_eq!(by_id(&dom, "bytes-today").as_deref(), Some("0 B"));
    // Slots as RAUC reports them: A booted and good, B holds 2026.12.0 and boots next.
    let a = row(&dom, "slot-A").expect("slot A row");
    assert_eq!(cell(a, "booted").unwrap(), "booted");
    assert_eq!(cell(a, "boot-status").unwrap(), "good");
    assert_eq!(cell(a, "primary").unwrap(), "no");
    let b = row(&dom, "slot-B").expect("slot B row");
    assert_eq!(cell(b, "version").unwrap(), "2026.12.0");
    assert_eq!(cell(b, "booted").unwrap(), "no");
    assert_eq!(cell(b, "primary").unwrap(), "yes");
    // The update.
    assert_eq!(by_id(&dom, "update-state").as_deref(), Some("downloading"));
    assert_eq!(by_id(&dom, "update-progress").as_deref(), Some(" 42 %"));
    assert_eq!(by_id(&dom, "pending-version").as_deref(), Some("2026.12.1"));
    assert_eq!(by_id(&dom, "current-version").as_deref(), Some("2026.11.0"));
    assert_eq!(by_id(&dom, "last-error").as_deref(), Some("none"));

    // Live: the agent moves on; the page follows without reloading.
    browser.eval("window.stayed = true").await;
    agent
        .set(|s| {
            s.state = "installing".into();
            s.progress = 77;
        })
        .await;
    browser
        .wait_until(
            "document.getElementById('update-state').textContent === 'installing' && \
             document.getElementById('update-progress').dataset.value === '77' && window.stayed === true",
        )
        .await;
    let shot = work.path().join("spark-webui.png");
    browser.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    println!("screenshot of the status page: {}", shot.display());

    // The agent leaves the bus: the page says so, live; the rest stays.
    drop(agent);
    browser
        .wait_until(
            "(document.getElementById('spark-updated-status') || {}).textContent === \
             'unknown: spark-updated is not running' && window.stayed === true",
        )
        .await;
    assert_eq!(
        by_id(&browser.dom().await, "radio-online").as_deref(),
        Some("online")
    );

    // Logging out in the browser ends the session; the page goes back to the form.
    browser
        .eval("document.getElementById('logout').click()")
        .await;
    browser.wait_until("location.pathname === '/login'").await;
    browser.close().await;
    tokio::time::timeout(Duration::from_secs(5), events.next(Duration::from_secs(5)))
        .await
        .ok();

    ui.stop().await;
    uplink.uplinkd.stop().await;
    meters.stop().await;
    drop(bed);
    // Like the testbed: SPARK_TESTBED_KEEP=1 keeps the screenshot and browser profile.
    if std::env::var_os("SPARK_TESTBED_KEEP").is_some_and(|v| v == "1") {
        println!("kept {}", work.keep().display());
    }
}
