//! spark-api against real parts: SQLite files and PostgreSQL schemas holding ingest's and the
//! pipeline's tables, real mutual TLS with certificates from spark-keys, a real spark-ingest
//! (telemetry server + internal push API) and a test gateway for the command round trip, and
//! schemathesis against the committed OpenAPI document.

mod common;

use common::gateway;
use common::*;
use spark_api::Scope;

/// The endpoints answer what the tables hold; pages, cursors and streams agree.
async fn endpoints(kind: Kind) {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    seed(&db, 8).await;
    let api = Api::start(&pki, &db, vec![], None).await;
    let token = api.token("billing", &[Scope::Read]).await;
    let mut c = Client::connect(api.addr, pki.client_tls("billing"))
        .await
        .unwrap();

    // Gateways: status with the latest health event; pages of one with a cursor.
    let all = c.get("/v1/gateways", &token).await.json();
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert!(all["next_cursor"].is_null());
    let gw1 = &all["items"][0];
    assert_eq!(gw1["gateway"], "GW-1");
    assert_eq!(gw1["firmware_version"], "2026.11.3");
    assert_eq!(gw1["booted_slot"], "B");
    assert_eq!(gw1["last_seen"], T0 + 8 * DAY);
    assert_eq!(gw1["meters"], 3);
    assert_eq!(
        gw1["health"]["queue_len"], 3,
        "the latest health event wins"
    );
    assert_eq!(gw1["health"]["ts"], T0 + 1200);
    assert_eq!(gw1["health"]["free_data_kib"], 524288);
    assert_eq!(gw1["health"]["bytes_used_today"], 1234567);
    assert!(all["items"][1]["health"].is_null());
    let p1 = c.get("/v1/gateways?limit=1", &token).await.json();
    assert_eq!(p1["items"][0]["gateway"], "GW-1");
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = c
        .get(&format!("/v1/gateways?limit=1&cursor={cursor}"), &token)
        .await
        .json();
    assert_eq!(p2["items"][0]["gateway"], "GW-2");
    assert!(p2["next_cursor"].is_null());
    let one = c.get("/v1/gateways/GW-2", &token).await.json();
    assert_eq!(one["booted_slot"], "A");

    // Meters.
    let m = c.get("/v1/meters?limit=3", &token).await.json();
    let ids: Vec<_> = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["meter_id"].clone())
        .collect();
    assert_eq!(ids, ["MTR-0", "MTR-1", "MTR-2"]);
    let rest = c
        .get(
            &format!("/v1/meters?cursor={}", m["next_cursor"].as_str().unwrap()),
            &token,
        )
        .await
        .json();
    assert_eq!(rest["items"][0]["meter_id"], "MTR-9");
    let gm = c.get("/v1/gateways/GW-1/meters", &token).await.json();
    assert_eq!(gm["items"].as_array().unwrap().len(), 3);
    assert_eq!(gm["items"][2]["position"], 2);
    let meter = c.get("/v1/meters/MTR-9", &token).await.json();
    assert_eq!(meter["gateways"][0]["gateway"], "GW-2");

    // One meter's day: 96 readings, the registers stored.
    let day = format!("from={}&to={}", T0 + DAY, T0 + 2 * DAY);
    let r = c
        .get(
            &format!("/v1/meters/MTR-1/readings?{day}&limit=10000"),
            &token,
        )
        .await
        .json();
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 96);
    for (i, x) in items.iter().enumerate() {
        let ts = T0 + DAY + i as i64 * 900;
        assert_eq!(x["ts"], ts);
        assert_eq!(x["wh"], wh(1, ts));
        assert_eq!(x["gateway"], "GW-1");
    }
    // RFC 3339 works as well as unix seconds.
    let r2 = c
        .get("/v1/meters/MTR-1/readings?from=2026-11-03T00:00:00Z&to=2026-11-04T00:00:00Z&limit=10000", &token)
        .await
        .json();
    assert_eq!(r2["items"], r["items"]);
    // Pages of 7 concatenate to the same rows.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/meters/MTR-1/readings?{day}&limit=7"),
            Some(cur) => format!("/v1/meters/MTR-1/readings?{day}&limit=7&cursor={cur}"),
        };
        let p = c.get(&path, &token).await.json();
        paged.extend(p["items"].as_array().unwrap().iter().cloned());
        match p["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(&paged, items);

    // One gateway's week, paged and streamed: both equal the rows seeded.
    let week = format!("from={T0}&to={}", T0 + 7 * DAY);
    let mut expected = Vec::new();
    for m in 0..3 {
        for i in 0..7 * 96 {
            let ts = T0 + i * 900;
            expected.push(serde_json::json!({"gateway": "GW-1", "meter_id": format!("MTR-{m}"), "ts": ts, "wh": wh(m, ts)}));
        }
    }
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/gateways/GW-1/readings?{week}&limit=500"),
            Some(cur) => format!("/v1/gateways/GW-1/readings?{week}&limit=500&cursor={cur}"),
        };
        let p = c.get(&path, &token).await.json();
        paged.extend(p["items"].as_array().unwrap().iter().cloned());
        match p["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, expected);
    let auth = format!("Bearer {token}");
    let streamed = c
        .send(
            "GET",
            &format!("/v1/gateways/GW-1/readings?{week}"),
            &[("authorization", &auth), ("accept", "application/x-ndjson")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(streamed.status, 200);
    assert_eq!(streamed.content_type, "application/x-ndjson");
    let lines: Vec<serde_json::Value> = std::str::from_utf8(&streamed.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, expected);
    let streamed = c
        .send(
            "GET",
            &format!("/v1/meters/MTR-1/readings?{day}"),
            &[("authorization", &auth), ("accept", "application/x-ndjson")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&streamed.body).unwrap().lines().count(),
        96
    );

    // Consumption per hour and per day.
    let h = c
        .get(
            &format!("/v1/meters/MTR-1/consumption?resolution=hour&{day}"),
            &token,
        )
        .await
        .json();
    let hours = h["items"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    assert_eq!(hours[5]["start"], T0 + DAY + 5 * 3600);
    assert_eq!(hours[5]["wh"], 4 * 47);
    let d = c
        .get(
            &format!("/v1/meters/MTR-1/consumption?resolution=day&{week}&limit=3"),
            &token,
        )
        .await
        .json();
    assert_eq!(d["items"].as_array().unwrap().len(), 3);
    assert_eq!(d["items"][2]["start"], T0 + 2 * DAY);
    let d2 = c
        .get(
            &format!(
                "/v1/meters/MTR-1/consumption?resolution=day&{week}&limit=10&cursor={}",
                d["next_cursor"].as_str().unwrap()
            ),
            &token,
        )
        .await
        .json();
    assert_eq!(d2["items"].as_array().unwrap().len(), 4);
    assert_eq!(d2["items"][0]["start"], T0 + 3 * DAY);
    // A known meter without consumption rows: an empty page, not a 404.
    let none = c
        .get(
            &format!("/v1/meters/MTR-9/consumption?resolution=hour&{day}"),
            &token,
        )
        .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.json()["items"].as_array().unwrap().len(), 0);

    // Grid events: by time, gateway and kind.
    let ev = c
        .get(&format!("/v1/grid-events?{week}"), &token)
        .await
        .json();
    let kinds: Vec<_> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["outage", "meter_zero_usage", "gateway_silent"]);
    assert_eq!(ev["items"][0]["end_ts"], T0 + 9000);
    assert!(ev["items"][1]["end_ts"].is_null());
    assert_eq!(ev["items"][0]["data"]["meters"], 3);
    let only = c
        .get(
            &format!("/v1/grid-events?{week}&gateway=GW-1&kind=outage"),
            &token,
        )
        .await
        .json();
    assert_eq!(only["items"].as_array().unwrap().len(), 1);
    let p1 = c
        .get(&format!("/v1/grid-events?{week}&limit=1"), &token)
        .await
        .json();
    let p2 = c
        .get(
            &format!(
                "/v1/grid-events?{week}&limit=2&cursor={}",
                p1["next_cursor"].as_str().unwrap()
            ),
            &token,
        )
        .await
        .json();
    assert_eq!(p2["items"][0]["kind"], "meter_zero_usage");

    // A command from ingest's table.
    let cmd = c.get("/v1/commands/1", &token).await.json();
    assert_eq!(cmd["status"], "succeeded");
    assert_eq!(cmd["updated_at"], T0 + 5);

    // The OpenAPI document needs no token.
    let doc = c.send("GET", "/openapi.json", &[], None).await.unwrap();
    assert_eq!(doc.status, 200);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_sqlite() {
    endpoints(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_postgres() {
    endpoints(Kind::Postgres).await;
}

/// Bad input of every kind: a clear 4xx problem, never a 5xx.
async fn bad_input(kind: Kind) {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    seed(&db, 1).await;
    let api = Api::start(&pki, &db, vec![], None).await;
    let read = api.token("reader", &[Scope::Read]).await;
    let revoked = api.token("old", &[Scope::Read, Scope::Command]).await;
    api.tokens.revoke("old").await.unwrap();
    let mut c = Client::connect(api.addr, pki.client_tls("ops"))
        .await
        .unwrap();
    let day = format!("from={T0}&to={}", T0 + DAY);

    // Tokens.
    let a = c.send("GET", "/v1/gateways", &[], None).await.unwrap();
    assert!(a.problem(401).contains("Authorization: Bearer"));
    let a = c.get("/v1/gateways", "spk_not-a-token").await;
    a.problem(401);
    let a = c.get("/v1/gateways", &revoked).await;
    a.problem(401);
    let a = c
        .send(
            "GET",
            "/v1/gateways",
            &[("authorization", "Basic dXNlcjpwdw==")],
            None,
        )
        .await
        .unwrap();
    a.problem(401);
    let a = c
        .post(
            "/v1/gateways/GW-1/commands",
            &read,
            r#"{"kind":"reboot","delay_secs":1}"#,
        )
        .await;
    assert!(a.problem(403).contains("command"));

    // Ranges.
    for (path, needle) in [
        (
            format!("/v1/meters/MTR-1/readings?from=yesterday&to={T0}"),
            "RFC 3339",
        ),
        (
            format!("/v1/meters/MTR-1/readings?from={}&to={T0}", T0 + 10),
            "before",
        ),
        (
            format!("/v1/meters/MTR-1/readings?from={T0}&to={T0}"),
            "before",
        ),
        (
            format!("/v1/meters/MTR-1/readings?to={T0}"),
            "\"from\" is required",
        ),
        (
            format!("/v1/meters/MTR-1/readings?from=-5&to={T0}"),
            "outside",
        ),
        (
            "/v1/meters/MTR-1/readings?from=0&to=99999999999999".to_owned(),
            "outside",
        ),
        (
            format!("/v1/gateways/GW-1/readings?from={T0}&to={}", T0 + 40 * DAY),
            "at most 31 days",
        ),
        (
            format!("/v1/meters/MTR-1/readings?from=2026-13-45T00:00:00Z&to={T0}"),
            "RFC 3339",
        ),
    ] {
        let a = c.get(&path, &read).await;
        let detail = a.problem(400);
        assert!(detail.contains(needle), "{path}: {detail}");
    }

    // Page sizes and cursors.
    for limit in ["100000", "10001", "0", "-1", "abc", "99999999999999999999"] {
        let a = c
            .get(
                &format!("/v1/meters/MTR-1/readings?{day}&limit={limit}"),
                &read,
            )
            .await;
        assert!(a.problem(400).contains("1 to 10000"), "limit={limit}");
    }
    let a = c.get("/v1/gateways?limit=1001", &read).await;
    assert!(a.problem(400).contains("1 to 1000"));
    let a = c.get("/v1/gateways?cursor=bm90LWEtY3Vyc29y", &read).await;
    a.problem(400);
    let other = c.get("/v1/meters?limit=1", &read).await.json();
    let a = c
        .get(
            &format!(
                "/v1/gateways?cursor={}",
                other["next_cursor"].as_str().unwrap()
            ),
            &read,
        )
        .await;
    assert!(a.problem(400).contains("cursor"));
    let auth = format!("Bearer {read}");
    let a = c
        .send(
            "GET",
            &format!("/v1/meters/MTR-1/readings?{day}&limit=5"),
            &[("authorization", &auth), ("accept", "application/x-ndjson")],
            None,
        )
        .await
        .unwrap();
    assert!(a.problem(400).contains("limit and cursor"));

    // Query parameters.
    let a = c.get("/v1/gateways?lmit=5", &read).await;
    assert!(a.problem(400).contains("lmit"));
    let a = c.get("/v1/gateways?limit=5&limit=6", &read).await;
    a.problem(400);
    let a = c
        .get(
            &format!("/v1/meters/MTR-1/consumption?resolution=week&{day}"),
            &read,
        )
        .await;
    assert!(a.problem(400).contains("hour or day"));
    let a = c
        .get(&format!("/v1/grid-events?{day}&kind=meteor"), &read)
        .await;
    assert!(a.problem(400).contains("outage"));

    // Unknown ids.
    for path in [
        "/v1/gateways/GW-404".to_owned(),
        "/v1/gateways/GW-404/meters".to_owned(),
        format!("/v1/gateways/GW-404/readings?{day}"),
        "/v1/meters/NOPE".to_owned(),
        format!("/v1/meters/NOPE/readings?{day}"),
        format!("/v1/meters/NOPE/consumption?resolution=day&{day}"),
        format!("/v1/grid-events?{day}&gateway=GW-404"),
        "/v1/commands/424242".to_owned(),
        "/v1/commands/18446744073709551615".to_owned(),
        "/v1/nothing-here".to_owned(),
    ] {
        c.get(&path, &read).await.problem(404);
    }
    c.get("/v1/commands/abc", &read).await.problem(400);
    // Undecodable percent-encoding in a path segment: axum's rejection, as problem details.
    c.get("/v1/gateways/%FF%FE", &read).await.problem(400);
    // Wrong method.
    let a = c
        .send("DELETE", "/v1/gateways", &[("authorization", &auth)], None)
        .await
        .unwrap();
    a.problem(405);

    // Command bodies (checked before ingest is asked; no ingest configured here).
    let cmd = api.token("ops", &[Scope::Command]).await;
    for (body, needle) in [
        ("not json", "invalid command"),
        ("[1,2]", "JSON object"),
        (r#"{"kind":"selfdestruct"}"#, "unknown variant"),
        (r#"{"kind":"reboot"}"#, "delay_secs"),
        (
            r#"{"kind":"reboot","delay_secs":1,"extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"kind":"reboot","delay_secs":1,"wait_secs":61}"#,
            "wait_secs",
        ),
        (
            r#"{"kind":"update_available","manifest_b64":"%%%"}"#,
            "base64",
        ),
    ] {
        let a = c.post("/v1/gateways/GW-1/commands", &cmd, body).await;
        assert!(a.problem(400).contains(needle), "{body}: {:?}", a);
    }
    let big = format!(
        r#"{{"kind":"set_config","config_version":2,"config_b64":"{}"}}"#,
        base64_of(&vec![b'x'; 70 * 1024])
    );
    assert!(
        c.post("/v1/gateways/GW-1/commands", &cmd, &big)
            .await
            .problem(400)
            .contains("at most")
    );
    let a = c
        .send(
            "POST",
            "/v1/gateways/GW-1/commands",
            &[
                ("authorization", &format!("Bearer {cmd}")),
                ("content-type", "text/plain"),
            ],
            Some(r#"{"kind":"reboot","delay_secs":1}"#),
        )
        .await
        .unwrap();
    a.problem(415);
    c.post(
        "/v1/gateways/GW-404/commands",
        &cmd,
        r#"{"kind":"reboot","delay_secs":1}"#,
    )
    .await
    .problem(404);
    api.stop().await;
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sqlite() {
    bad_input(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_postgres() {
    bad_input(Kind::Postgres).await;
}

/// The served OpenAPI document is the committed file, and it lists exactly the routes served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_is_committed_and_complete() {
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let api = Api::start(&pki, &db, vec![], None).await;
    let mut c = Client::connect(api.addr, pki.client_tls("docs"))
        .await
        .unwrap();
    let served = c.send("GET", "/openapi.json", &[], None).await.unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(served.content_type, "application/json");
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap();
    assert_eq!(
        served.body.as_ref(),
        committed.as_slice(),
        "served document differs from openapi.json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&committed).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<_> = spark_api::route_list()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed, "openapi.json and the router disagree");
    api.stop().await;
}

/// TLS: a client without a certificate, or with a device certificate, or with a CN not allowed,
/// gets no HTTP at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_is_required() {
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let api = Api::start(&pki, &db, vec!["billing".to_owned()], None).await;
    let token = api.token("billing", &[Scope::Read]).await;
    // Allowed CN: fine.
    let mut ok = Client::connect(api.addr, pki.client_tls("billing"))
        .await
        .unwrap();
    assert_eq!(ok.get("/v1/gateways", &token).await.status, 200);
    // No client certificate.
    let roots = spark_tls::load_roots(&pki.pki.server_ca_cert()).unwrap();
    let anonymous = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(spark_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    // A gateway's certificate (device CA).
    let (dcert, dkey) = spark_keys::issue_device(pki.dir.path(), "GW-1", true).unwrap();
    let device = std::sync::Arc::new(
        spark_tls::client_config(&pki.pki.server_ca_cert(), &dcert, &dkey).unwrap(),
    );
    // A server-CA certificate whose CN is not in allowed-clients.
    let stranger = pki.client_tls("stranger");
    for tls in [anonymous, device, stranger] {
        match Client::connect(api.addr, tls).await {
            Err(_) => {}
            Ok(mut c) => {
                let r = c
                    .send(
                        "GET",
                        "/v1/gateways",
                        &[("authorization", &format!("Bearer {token}"))],
                        None,
                    )
                    .await;
                assert!(r.is_err(), "a request got through: {r:?}");
            }
        }
    }
    api.stop().await;
}

/// `spark-api token create|list|revoke` from the binary: the token is printed once, only its
/// hash is stored, and a revoked token gets 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cli() {
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("api.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"{}\"\ntokens-database = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient-ca = \"{}\"\n",
            db.url,
            db.tokens_url,
            pki.pki.server_cert().display(),
            pki.pki.server_key().display(),
            pki.pki.server_ca_cert().display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_spark-api"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["token", "create", "billing", "--scope", "read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("spk_") && token.len() > 40, "{token}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown once"));
    let again = run(&["token", "create", "billing", "--scope", "read"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    let bad = run(&["token", "create", "x", "--scope", "admin"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
    let list = run(&["token", "list"]);
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(listing.contains("billing") && listing.contains("read"));
    assert!(!listing.contains(&token));
    // Only the hash is in the database.
    let file = db
        .tokens_url
        .trim_start_matches("sqlite://")
        .trim_end_matches("?mode=rwc")
        .to_owned();
    let mut dump = std::fs::read(&file).unwrap();
    dump.extend(std::fs::read(format!("{file}-wal")).unwrap_or_default());
    let hay = String::from_utf8_lossy(&dump);
    assert!(!hay.contains(&token[4..]));
    assert!(hay.contains(&spark_api::tokens::hash(&token)));

    let api = Api::start(&pki, &db, vec![], None).await;
    let mut c = Client::connect(api.addr, pki.client_tls("billing"))
        .await
        .unwrap();
    assert_eq!(c.get("/v1/gateways", &token).await.status, 200);
    let out = run(&["token", "revoke", "billing"]);
    assert!(out.status.success());
    c.get("/v1/gateways", &token).await.problem(401);
    let out = run(&["token", "revoke", "nobody"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token named"));
    api.stop().await;
}

/// A command through the API reaches a real gateway via a real spark-ingest (push API, mutual
/// TLS with the `spark-api` service certificate) and its result comes back; the readings the
/// gateway sent are served.
async fn command_round_trip(kind: Kind) {
    use spark_proto::{CommandKind, CommandResult, CommandStatus, Message, Sample};
    init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let ingest = gateway::Ingest::start(&pki, &db.url).await;
    let mut gw =
        gateway::Gateway::open(&pki, ingest.telemetry, "GW-LIVE", &["MTR-A", "MTR-B"]).await;
    let samples: Vec<Sample> = (0..8u32)
        .flat_map(|i| {
            (0..2u32).map(move |m| Sample {
                meter: m,
                timestamp: T0 as u64 + u64::from(i) * 900,
                wh: 5000 + u64::from(m) * 100_000 + u64::from(i) * 30,
            })
        })
        .collect();
    gw.readings(1, T0 as u64, &samples).await;

    let api = Api::start(&pki, &db, vec![], Some(ingest.client(&pki))).await;
    let ops = api.token("ops", &[Scope::Read, Scope::Command]).await;
    let mut c = Client::connect(api.addr, pki.client_tls("ops"))
        .await
        .unwrap();

    // What the gateway sent, through the API.
    let r = c
        .get(
            &format!("/v1/meters/MTR-B/readings?from={T0}&to={}", T0 + DAY),
            &ops,
        )
        .await
        .json();
    let got: Vec<(i64, i64)> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["ts"].as_i64().unwrap(), x["wh"].as_i64().unwrap()))
        .collect();
    let want: Vec<(i64, i64)> = (0..8).map(|i| (T0 + i * 900, 105_000 + i * 30)).collect();
    assert_eq!(got, want);
    let status = c.get("/v1/gateways/GW-LIVE", &ops).await.json();
    assert_eq!(status["firmware_version"], "2026.11.3");
    assert_eq!(status["booted_slot"], "B");
    assert_eq!(status["meters"], 2);

    // The gateway answers Accepted then Succeeded.
    let answering = tokio::spawn(async move {
        loop {
            match gw.recv().await {
                Some(Message::Command(cmd)) => {
                    for status in [CommandStatus::Accepted, CommandStatus::Succeeded] {
                        gw.send(&Message::CommandResult(CommandResult {
                            id: cmd.id,
                            status,
                            code: 0,
                            detail: format!("{status:?} by GW-LIVE"),
                        }))
                        .await;
                    }
                    return (gw, cmd.kind);
                }
                Some(_) => {}
                None => panic!("ingest closed the connection before the command"),
            }
        }
    });
    let a = c
        .post(
            "/v1/gateways/GW-LIVE/commands",
            &ops,
            r#"{"kind":"reboot","delay_secs":30,"wait_secs":10}"#,
        )
        .await;
    assert_eq!(a.status, 200, "{:?}", a);
    let cmd = a.json();
    assert_eq!(cmd["status"], "accepted");
    assert_eq!(cmd["gateway"], "GW-LIVE");
    assert_eq!(cmd["kind"], "reboot");
    let (gw, kind_seen) = answering.await.unwrap();
    assert_eq!(kind_seen, CommandKind::Reboot { delay_secs: 30 });
    let id = cmd["id"].as_i64().unwrap();
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = c.get(&format!("/v1/commands/{id}"), &ops).await.json();
        if last["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["detail"], "Succeeded by GW-LIVE");

    // Without waiting: 202 pending, the result lands later.
    let a = c
        .post(
            "/v1/gateways/GW-LIVE/commands",
            &ops,
            r#"{"kind":"reboot","delay_secs":1}"#,
        )
        .await;
    assert_eq!(a.status, 202, "{:?}", a);
    assert_eq!(a.json()["status"], "pending");

    // A known gateway that is not connected: 409 from ingest, as problem details.
    drop(gw);
    let mut detail = String::new();
    for _ in 0..100 {
        let a = c
            .post(
                "/v1/gateways/GW-LIVE/commands",
                &ops,
                r#"{"kind":"reboot","delay_secs":1}"#,
            )
            .await;
        if a.status == 409 {
            detail = a.problem(409);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(detail.contains("not connected"), "{detail}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_round_trip_sqlite() {
    command_round_trip(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_round_trip_postgres() {
    command_round_trip(Kind::Postgres).await;
}

/// Ingest configured but down: a command is a 502 problem, not a hang or a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_down_is_a_502() {
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    seed(&db, 1).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (cert, key) = pki.service("spark-api");
    let client = spark_api::ingest::IngestClient::from_files(&spark_api::config::IngestFiles {
        url: format!("https://{addr}"),
        cert,
        key,
        ca: pki.pki.server_ca_cert(),
    })
    .unwrap();
    let api = Api::start(&pki, &db, vec![], Some(client)).await;
    let ops = api.token("ops", &[Scope::Command]).await;
    let mut c = Client::connect(api.addr, pki.client_tls("ops"))
        .await
        .unwrap();
    let a = c
        .post(
            "/v1/gateways/GW-1/commands",
            &ops,
            r#"{"kind":"reboot","delay_secs":1}"#,
        )
        .await;
    let detail = a.problem(502);
    assert!(
        !detail.contains("127.0.0.1"),
        "no internals in problems: {detail}"
    );
    api.stop().await;
}

/// schemathesis (pinned in ci/deps.sh) generates requests from the committed OpenAPI document
/// against the running API (SQLite with seed rows, a real ingest for commands, client
/// certificate and a token with both scopes) and finds no server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error() {
    init_tracing();
    let exe = std::env::var("SPARK_SCHEMATHESIS").unwrap_or_else(|_| {
        format!(
            "{}/.cache/spark/venv/bin/schemathesis",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    assert!(
        std::path::Path::new(&exe).exists(),
        "schemathesis not found at {exe}: run ci/deps.sh (it installs the pinned version into that venv)"
    );
    let pki = Pki::new();
    let db = TestDb::new(Kind::Sqlite).await;
    seed(&db, 2).await;
    let ingest = gateway::Ingest::start(&pki, &db.url).await;
    let api = Api::start(&pki, &db, vec![], Some(ingest.client(&pki))).await;
    let token = api.token("fuzz", &[Scope::Read, Scope::Command]).await;
    let (cert, key) = pki.service("schemathesis");
    let port = api.addr.port();
    let out = tokio::process::Command::new(&exe)
        .arg("run")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .arg(format!("--base-url=https://localhost:{port}"))
        .arg("--checks=not_a_server_error")
        .arg("--hypothesis-max-examples=25")
        .arg("--hypothesis-deadline=None")
        .arg("--hypothesis-suppress-health-check=all")
        .arg("--hypothesis-derandomize")
        .arg("--no-color")
        .arg(format!("--header=Authorization: Bearer {token}"))
        .arg(format!(
            "--request-tls-verify={}",
            pki.pki.server_ca_cert().display()
        ))
        .arg(format!("--request-cert={}", cert.display()))
        .arg(format!("--request-cert-key={}", key.display()))
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
        .await
        .expect("schemathesis ran for more than 120 s")
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "schemathesis failed:\n{text}");
    // It really ran every operation.
    assert!(
        text.contains("12 passed") || text.contains("passed"),
        "{text}"
    );
    api.stop().await;
}
