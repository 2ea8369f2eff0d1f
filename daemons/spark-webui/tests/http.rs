//! The web UI at the HTTP level on a private bus where none of the daemons runs: the login and
//! its refusals (no password set, wrong password with its log line, the backoff, foreign or
//! missing Origin), the session cookie's flags, logout, what happens without a session, and
//! that malformed requests get a 4xx, never a 5xx. With no daemon on the bus the page still
//! renders, saying each part is not running.

mod common;

use std::time::Duration;

use common::{PASSWORD, WAIT, WebUi, by_id, form, logged, logs};
use hyper::StatusCode;
use spark_testbed::PrivateBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_session_and_refusals() {
    logs();
    let bus = PrivateBus::start().unwrap();
    let data = tempfile::tempdir().unwrap();
    let ui = WebUi::start(bus.address(), data.path()).await;
    let c = &ui.client;
    let origin = ui.origin();
    let same = [("origin", origin.as_str())];

    // No password yet: every page says how to set one; nobody can log in.
    let page = c.get("/", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        by_id(&page.body, "setup")
            .unwrap()
            .contains("spark-webui set-password"),
        "{}",
        page.body
    );
    let refused = c.post("/login", &same, &form("")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.header("set-cookie").is_none());

    ui.set_password(PASSWORD);
    let hash = std::fs::read_to_string(data.path().join("password")).unwrap();
    assert!(hash.starts_with("$argon2id$") && !hash.contains(PASSWORD));

    // Without a session: pages go to the form, the event stream is refused.
    let page = c.get("/", &[]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.header("location"), Some("/login"));
    let page = c.get("/login", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("<form method=\"post\" action=\"/login\"")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(c.get("/events", &[]).await.status, StatusCode::UNAUTHORIZED);
    let forged = [(
        "cookie",
        "__Host-spark-webui=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )];
    assert_eq!(c.get("/", &forged).await.status, StatusCode::SEE_OTHER);

    // CSRF: a POST without Origin, or from another origin, is refused before the password is
    // looked at (the right password does not help).
    for origin in [
        None,
        Some("https://evil.example"),
        Some("null"),
        Some(&format!("http://{}", ui.addr)[..]),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let r = c.post("/login", &headers, &form(PASSWORD)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "origin {origin:?}");
        assert!(r.header("set-cookie").is_none());
    }

    // A wrong password: 401, the form again with a message, a log line naming the client.
    let wrong = c.post("/login", &same, &form("tr0ub4dor&3")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        by_id(&wrong.body, "login-error").as_deref(),
        Some("Wrong password.")
    );
    assert!(wrong.header("set-cookie").is_none());
    assert!(
        logged().contains("wrong password on the login form client=127.0.0.1"),
        "{}",
        logged()
    );
    // Backoff: the next try within a second is refused without checking, even the right one.
    let blocked = c.post("/login", &same, &form(PASSWORD)).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(blocked.header("retry-after"), Some("1"));
    assert!(blocked.header("set-cookie").is_none());
    assert!(
        by_id(&blocked.body, "login-error")
            .unwrap()
            .contains("Too many wrong passwords")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A second miss doubles the wait.
    let wrong = c.post("/login", &same, &form("password123")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let blocked = c.post("/login", &same, &form(PASSWORD)).await;
    assert_eq!(blocked.header("retry-after"), Some("2"));
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The right password: a session cookie with every flag, and the page.
    let ok = c.post("/login", &same, &form(PASSWORD)).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "{}", ok.body);
    assert_eq!(ok.header("location"), Some("/"));
    let set = ok.header("set-cookie").unwrap();
    let (pair, flags) = set.split_once("; ").unwrap();
    let token = pair.strip_prefix("__Host-spark-webui=").unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert_eq!(
        flags,
        "Path=/; Max-Age=28800; Secure; HttpOnly; SameSite=Strict"
    );
    let cookie = ok.cookie();
    let with = [("cookie", cookie.as_str())];
    let page = c.get("/", &with).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    // No daemon on the bus: each part says so; the page is whole.
    for (id, daemon) in [
        ("spark-meterd-status", "spark-meterd"),
        ("spark-uplinkd-status", "spark-uplinkd"),
        ("spark-updated-status", "spark-updated"),
        ("rauc-status", "rauc"),
    ] {
        assert_eq!(
            by_id(&page.body, id).as_deref(),
            Some(&format!("unknown: {daemon} is not running")[..]),
            "{}",
            page.body
        );
    }
    assert!(page.body.ends_with("</html>"));
    assert_eq!(c.get("/login", &with).await.header("location"), Some("/"));

    // Malformed requests: 4xx, never 5xx.
    assert_eq!(c.get("/nope", &with).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        c.request("PUT", "/", &with, "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let big = "x".repeat(10_000);
    let r = c.post("/login", &same, &format!("password={big}")).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
    ] {
        let answer = c.raw(garbage).await;
        let status = answer.split(' ').nth(1).unwrap_or("none");
        assert!(status.starts_with('4'), "{garbage:?} got: {answer}");
    }

    // Logout: needs the Origin too; ends the session and clears the cookie.
    let r = c.post("/logout", &with, "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        c.get("/", &with).await.status,
        StatusCode::OK,
        "still logged in"
    );
    let r = c
        .post(
            "/logout",
            &[("cookie", cookie.as_str()), ("origin", origin.as_str())],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/login"));
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(c.get("/", &with).await.status, StatusCode::SEE_OTHER);
    assert_eq!(
        c.get("/events", &with).await.status,
        StatusCode::UNAUTHORIZED
    );

    // The certificate stays the device's: a restart serves the same one (the client pinned it).
    ui.stop().await;
    let ui = tokio::time::timeout(WAIT, WebUi::start(bus.address(), data.path()))
        .await
        .unwrap();
    assert_eq!(ui.client.get("/", &[]).await.status, StatusCode::SEE_OTHER);
    assert!(logged().contains("TLS certificate SHA-256 fingerprint"));
    ui.stop().await;
}

/// No bus at all (dbus-daemon not up yet, or restarting): the page still renders and says so;
/// when the bus appears at its address the page shows the daemons' parts again (here: none
/// running), without a restart of the web UI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bus_the_page_says_so_and_recovers() {
    logs();
    let bus_dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", bus_dir.path().join("bus.sock").display());
    let data = tempfile::tempdir().unwrap();
    let ui = WebUi::start(&address, data.path()).await;
    ui.set_password(PASSWORD);
    let cookie = ui.login().await;
    let with = [("cookie", cookie.as_str())];
    let page = ui.client.get("/", &with).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        by_id(&page.body, "bus-error")
            .unwrap()
            .starts_with("D-Bus is not reachable"),
        "{}",
        page.body
    );
    assert_eq!(
        by_id(&page.body, "spark-meterd-status").as_deref(),
        Some("unknown (not read yet)")
    );

    let _bus = PrivateBus::start_in(bus_dir.path(), Duration::from_secs(10)).unwrap();
    common::wait_for("the page to find the bus", || async {
        let page = ui.client.get("/", &with).await;
        by_id(&page.body, "bus-error").is_none()
            && by_id(&page.body, "spark-meterd-status").as_deref()
                == Some("unknown: spark-meterd is not running")
    })
    .await;
    ui.stop().await;
}
