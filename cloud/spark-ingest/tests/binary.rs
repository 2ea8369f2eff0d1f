//! The `spark-ingest` binary as the README runs it: config file with relative paths, SQLite in
//! the data dir, a gateway session, the internal API, the in-process data pipeline, SIGTERM for
//! a clean stop of all of them.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{ApiClient, Gateway, Pki, T0, roster, samples};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_runs_from_its_config_and_stops_on_sigterm() {
    let pki = Pki::new();
    let dir = pki.dir.path();
    let (port, api_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("ingest.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\n\
             internal-listen = \"127.0.0.1:{api_port}\"\n\
             data-dir = \"data\"\n\
             internal-clients = [\"spark-ota\"]\n\
             [tls]\n\
             cert = \"server.cert.pem\"\nkey = \"server.key.pem\"\n\
             device-ca = \"device-ca.cert.pem\"\nserver-ca = \"server-ca.cert.pem\"\n\
             [pipeline]\nbatch-wait-ms = 0\npoll-interval-ms = 20\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("ingest.log")).unwrap();
    let mut child = Proc(
        Command::new(env!("CARGO_BIN_EXE_spark-ingest"))
            .arg("--config")
            .arg(dir.join("ingest.toml"))
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log_text = || std::fs::read_to_string(dir.join("ingest.log")).unwrap_or_default();
    assert!(up, "spark-ingest did not listen; log:\n{}", log_text());

    let r = roster(1, "BIN", 10);
    let (mut gw, _) = Gateway::open(addr, pki.gateway_tls("GW-BIN"), 0, &r).await;
    let m = gw.batch(1, T0, &samples(10, T0, 4, 7));
    gw.send(&m).await.unwrap();
    gw.expect_ack(1).await;

    let (cert, key) = pki.service_client("spark-ota");
    let api = ApiClient {
        addr: ([127, 0, 0, 1], api_port).into(),
        tls: pki.client_tls(&cert, &key),
    };
    let (status, gws) = api
        .request("GET", "/v1/gateways/GW-BIN", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{gws}");
    assert_eq!(gws["connected"], true);
    assert_eq!(gws["last_committed_seq"], 1);

    // The pipeline runs in the same process: the batch becomes consumption rows.
    let db = dir.join("data/ingest.db");
    let db_url = format!("sqlite://{}?mode=rwc", db.display());
    let pipeline = spark_pipeline::Store::connect(&db_url, 1).await.unwrap();
    let mut consumed = false;
    for _ in 0..500 {
        if pipeline.cursors().await.unwrap() == [("GW-BIN".to_owned(), 1, 40)] {
            consumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(consumed, "the batch was not consumed; log:\n{}", log_text());
    pipeline.close().await;

    let kill = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(gw.until_closed().await.is_empty(), "nothing more to ack");
    let mut status = None;
    for _ in 0..500 {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = status.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", log_text()));
    assert!(status.success(), "exit {status}; log:\n{}", log_text());

    assert!(db.exists(), "the SQLite file lives in the data dir");
    let store = spark_ingest::Store::connect(&db_url).await.unwrap();
    assert_eq!(store.reading_count(Some("GW-BIN")).await.unwrap(), 40);
    // 10 meters × 4 readings 15 minutes apart within hour 0: 3 intervals each.
    let pipeline = spark_pipeline::Store::connect(&db_url, 1).await.unwrap();
    let hourly = pipeline.hourly().await.unwrap();
    assert_eq!(hourly.len(), 10, "{hourly:?}");
    for (m, (_, meter, _, wh)) in hourly.iter().enumerate() {
        assert_eq!(meter, &format!("MTR-BIN-{m:04}"));
        assert_eq!(*wh, 3 * (50 + (m as i64 % 7) * 13), "{meter}");
    }
    assert!(
        log_text().contains("data pipeline stopped"),
        "{}",
        log_text()
    );
}

#[test]
fn bad_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "listen = 42\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spark-ingest"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml"), "{err}");
}
