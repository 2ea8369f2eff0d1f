//! The data pipeline in-process (`[pipeline]` in ingest.toml): readings sent by a gateway over
//! the real protocol path become consumption rows without a second process, equal to the
//! hand-computed values and to what the separate pipeline (`spark_pipeline::drain`, the code of
//! `spark-pipeline --until-idle`) computes; `enabled = false` leaves them to that process; the
//! shutdown signal stops both.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Gateway, Kind, Pki, T0, TestDb, WAIT, roster, samples};
use spark_proto::Sample;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type Rows = Vec<(String, String, i64, i64)>;

const METERS: u32 = 10;
const INTERVALS: u32 = 8;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `spark_ingest::run` (what the binary runs) from config text, until the returned sender fires.
async fn start(
    pki: &Pki,
    db: &TestDb,
    pipeline: &str,
) -> (
    std::net::SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), spark_ingest::IngestError>>,
) {
    let port = free_port();
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\ndatabase = {url:?}\n\
         [tls]\ncert = \"server.cert.pem\"\nkey = \"server.key.pem\"\n\
         device-ca = \"device-ca.cert.pem\"\n{pipeline}",
        url = db.url,
    );
    let config = spark_ingest::Config::parse(&text, &pki.dir.path().join("ingest.toml")).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(spark_ingest::run(
        config,
        async {
            let _ = stopped.await;
        },
        move || {
            let _ = ready_tx.send(());
        },
    ));
    tokio::time::timeout(WAIT, ready_rx)
        .await
        .expect("ingest not ready in time")
        .expect("ingest failed to start");
    (([127, 0, 0, 1], port).into(), stop, task)
}

/// Two readings batches (hours 0 and 1 of T0, four 15-minute intervals each) from GW-PIP.
async fn send_readings(pki: &Pki, addr: std::net::SocketAddr) {
    let r = roster(1, "PIP", METERS as usize);
    let (mut gw, _) = Gateway::open(addr, pki.gateway_tls("GW-PIP"), 0, &r).await;
    let all = samples(METERS, T0, INTERVALS, 7);
    let (first, second): (Vec<Sample>, Vec<Sample>) =
        all.into_iter().partition(|s| s.timestamp < T0 + 3600);
    let m = gw.batch(1, T0, &first);
    gw.send(&m).await.unwrap();
    let m = gw.batch(2, T0 + 3600, &second);
    gw.send(&m).await.unwrap();
    gw.expect_ack(2).await;
}

/// What the readings must give: meter m grows by `50 + (m % 7) * 13` Wh every 15 minutes; the
/// 01:00 reading closes hour 0 (4 intervals), hour 1 has the other 3.
fn expected() -> (Rows, Rows) {
    let (mut hourly, mut daily) = (Vec::new(), Vec::new());
    for m in 0..METERS {
        let step = 50 + i64::from(m % 7) * 13;
        let meter = format!("MTR-PIP-{m:04}");
        hourly.push(("GW-PIP".into(), meter.clone(), T0 as i64, 4 * step));
        hourly.push(("GW-PIP".into(), meter.clone(), T0 as i64 + 3600, 3 * step));
        daily.push(("GW-PIP".into(), meter, T0 as i64, 7 * step));
    }
    (hourly, daily)
}

async fn pipeline_store(db: &TestDb) -> spark_pipeline::Store {
    spark_pipeline::Store::connect(&db.url, 2).await.unwrap()
}

async fn embedded_pipeline_computes_consumption(kind: Kind) {
    common::init_tracing();
    let pki = Pki::new();
    let db = TestDb::new(kind).await;
    let (addr, stop, task) = start(
        &pki,
        &db,
        "[pipeline]\nbatch-wait-ms = 0\npoll-interval-ms = 20\n",
    )
    .await;
    send_readings(&pki, addr).await;

    let p = pipeline_store(&db).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let cursors = p.cursors().await.unwrap();
        if cursors == [("GW-PIP".to_owned(), 2, i64::from(METERS * INTERVALS))] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the in-process pipeline did not consume both batches: cursors {cursors:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (hourly, daily) = expected();
    assert_eq!(p.hourly().await.unwrap(), hourly);
    assert_eq!(p.daily().await.unwrap(), daily);
    p.close().await;

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("ingest and its pipeline did not stop in time")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipeline_computes_consumption_sqlite() {
    embedded_pipeline_computes_consumption(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_pipeline_computes_consumption_postgres() {
    embedded_pipeline_computes_consumption(Kind::Postgres).await;
}

/// `enabled = false`: ingest consumes nothing; the separate pipeline then computes exactly the
/// rows the in-process one did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_leaves_it_to_the_separate_pipeline() {
    let pki = Pki::new();
    let db = TestDb::sqlite();
    let (addr, stop, task) = start(&pki, &db, "[pipeline]\nenabled = false\n").await;
    send_readings(&pki, addr).await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    let p = pipeline_store(&db).await;
    let stats = spark_pipeline::drain(p.clone(), spark_pipeline::PipelineConfig::default())
        .await
        .unwrap();
    assert_eq!(
        stats.readings,
        u64::from(METERS * INTERVALS),
        "nothing was consumed before"
    );
    let (hourly, daily) = expected();
    assert_eq!(p.hourly().await.unwrap(), hourly);
    assert_eq!(p.daily().await.unwrap(), daily);
    p.close().await;
}

#[test]
fn pipeline_table_in_the_config() {
    let tls = "[tls]\ncert = \"c\"\nkey = \"k\"\ndevice-ca = \"d\"\n";
    let path = Path::new("/etc/spark/ingest.toml");
    let c = spark_ingest::Config::parse(tls, path).unwrap();
    assert!(c.pipeline.enabled, "on by default");
    assert_eq!(c.pipeline.config, spark_pipeline::PipelineConfig::default());

    let c = spark_ingest::Config::parse(
        &format!(
            "{tls}[pipeline]\nworkers = 2\ndatabase-connections = 3\n\
             [pipeline.events]\noutage-min-meters = 5\n"
        ),
        path,
    )
    .unwrap();
    assert!(c.pipeline.enabled);
    assert_eq!(c.pipeline.config.workers, 2);
    assert_eq!(c.pipeline.database_connections, 3);
    assert_eq!(c.pipeline.config.events.outage_min_meters, 5);

    for (bad, needle) in [
        ("[pipeline]\nwokers = 2\n", "wokers"),
        ("[pipeline]\nworkers = 0\n", "workers"),
        ("[pipeline]\nenabled = \"no\"\n", "pipeline.enabled"),
    ] {
        let e = spark_ingest::Config::parse(&format!("{tls}{bad}"), path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ingest.toml") && e.contains(needle), "{e}");
    }
}
