//! Push through the real spark-ingest: a gateway connected to ingest (speaking spark-proto over
//! mutual TLS) gets `UpdateAvailable` with the signed release as soon as a rollout makes it
//! eligible; a gateway that is not connected gets nothing pushed and still finds the release by
//! polling.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use hyper::StatusCode;
use spark_proto::{
    BootSlot, Capabilities, CommandKind, CommandResult, CommandStatus, Hello, Message,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::*;

/// A minimal gateway on ingest's telemetry port: Hello, then reads commands.
struct Gateway {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: BytesMut,
}

impl Gateway {
    async fn open(
        addr: std::net::SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        firmware: &str,
    ) -> Gateway {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(
                rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let mut gw = Gateway {
            stream,
            buf: BytesMut::new(),
        };
        gw.send(&Message::Hello(Hello {
            max_version: spark_proto::PROTOCOL_VERSION,
            min_version: spark_proto::MIN_PROTOCOL_VERSION,
            firmware_version: firmware.into(),
            booted_slot: BootSlot::A,
            last_acked_seq: 0,
            capabilities: Capabilities::UPDATES | Capabilities::EVENTS,
            roster_version: 0,
        }))
        .await;
        match gw.recv().await {
            Message::Welcome(_) => gw,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    async fn send(&mut self, msg: &Message) {
        let mut out = Vec::new();
        spark_proto::encode(msg, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn recv(&mut self) -> Message {
        tokio::time::timeout(std::time::Duration::from_secs(15), async {
            loop {
                match spark_proto::decode(&self.buf) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return msg;
                    }
                    Err(spark_proto::DecodeError::Incomplete) => {}
                    Err(e) => panic!("bad frame from ingest: {e}"),
                }
                self.buf.reserve(4096);
                assert!(
                    self.stream.read_buf(&mut self.buf).await.unwrap() > 0,
                    "ingest closed"
                );
            }
        })
        .await
        .expect("a message from ingest in time")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligible_connected_gateway_gets_update_available_through_ingest() {
    init_tracing();
    let pki = Pki::new();
    let p = &pki.pki;
    let work = tempfile::tempdir().unwrap();

    // The real ingest: telemetry listener and internal API (only CN spark-ota may call it).
    let ingest_store = spark_ingest::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        work.path().join("ingest.db").display()
    ))
    .await
    .unwrap();
    let ingest = spark_ingest::Server::new(
        spark_ingest::ServerConfig::from_files(
            &p.server_cert(),
            &p.server_key(),
            &p.device_ca_cert(),
        )
        .unwrap(),
        ingest_store.clone(),
    )
    .unwrap();
    let hub = ingest.hub();
    let tele = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tele_addr = tele.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut s1 = stop_rx.clone();
    let ingest_task = tokio::spawn(ingest.run(tele, async move {
        let _ = s1.changed().await;
    }));
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let mut s2 = stop_rx.clone();
    let api_task = tokio::spawn(spark_ingest::api::serve(
        api,
        spark_ingest::api::ApiConfig::from_files(
            &p.server_cert(),
            &p.server_key(),
            &p.server_ca_cert(),
            vec!["spark-ota".into()],
        )
        .unwrap(),
        spark_ingest::api::router(hub, ingest_store),
        async move {
            let _ = s2.changed().await;
        },
    ));

    // spark-ota with push configured, using its service certificate from the server CA.
    let (scert, skey) = spark_keys::issue_service(pki.dir.path(), "spark-ota", false).unwrap();
    let extra = format!(
        "[push]\ningest-url = \"https://127.0.0.1:{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ninterval-secs = 3600\n",
        api_addr.port(),
        p.server_ca_cert().display(),
        scert.display(),
        skey.display()
    );
    let db = TestDb::new(Kind::Sqlite).await;
    let server = TestServer::start(&pki, &db, &extra).await;
    let admin = server.admin(&pki).await;

    let mut gw = Gateway::open(tele_addr, pki.device_tls("GW-P"), "1.0.0").await;

    let bundle = work.path().join("v2.raucb");
    pki.bundle("2.0.0", 100_000, &bundle);
    let signed = pki.sign_release(&bundle, "2.0.0");
    let rel = work.path().join("v2.release.json");
    std::fs::write(&rel, signed.to_json()).unwrap();
    let up = admin
        .upload(&bundle, &rel, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    // Creating the rollout wakes the push task at once (its interval is an hour here).
    spark_ota::cli::rollout_create(&admin, up.release, Some("push-test"), true)
        .await
        .unwrap();

    let command = match gw.recv().await {
        Message::Command(c) => c,
        other => panic!("expected a Command, got {other:?}"),
    };
    match &command.kind {
        CommandKind::UpdateAvailable { manifest } => {
            assert_eq!(
                manifest,
                &signed.to_bytes(),
                "the signed release, wire form"
            );
        }
        other => panic!("expected UpdateAvailable, got {other:?}"),
    }
    gw.send(&Message::CommandResult(CommandResult {
        id: command.id,
        status: CommandStatus::Accepted,
        code: 0,
        detail: String::new(),
    }))
    .await;

    // Recorded once, with ingest's command id; the device's offer carries the rollout.
    let pushes = loop {
        let p = server.store.pushes().await.unwrap();
        if !p.is_empty() {
            break p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0]["device"], "GW-P");
    assert_eq!(pushes[0]["command"], command.id as i64);
    assert_eq!(pushes[0]["rollout"], "push-test");

    // The rollout tick reads the telemetry gate's last-seen times from the real ingest (its
    // internal API with this service's certificate): GW-P, connected, is seen.
    let tick = server.rollouts.tick().await.unwrap();
    assert!(tick.telemetry_error.is_none(), "{tick:?}");
    let source = spark_ota::telemetry::IngestTelemetry::new(
        server.config.push.as_ref().unwrap(),
        spark_ota::clock::ServerClock::real(),
    )
    .unwrap();
    let seen = spark_ota::telemetry::TelemetrySource::last_seen(&source)
        .await
        .unwrap();
    let at = seen.get("GW-P").expect("GW-P's last-seen from ingest");
    let age = spark_rollout::jiff::Timestamp::now().duration_since(*at);
    assert!(age.as_secs() < 600, "last seen {age:#} ago");

    // Another round pushes nothing again (once per device and release).
    let pusher = spark_ota::push::Pusher::new(
        server.config.push.as_ref().unwrap(),
        server.store.clone(),
        server.rollouts.clone(),
    )
    .unwrap();
    let round = pusher.round().await.unwrap();
    assert!(round.pushed.is_empty(), "{round:?}");

    // A gateway not connected to ingest: no push, but polling finds the release.
    let mut dev = DeviceConn::connect(server.device_addr, pki.device_tls("GW-Q"))
        .await
        .unwrap();
    let a = dev
        .get("/v1/devices/GW-Q/release?current-version=1.0.0", &[])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(server.store.pushes().await.unwrap().len(), 1);

    server.stop().await;
    let _ = stop_tx.send(true);
    drop(gw);
    let _ = ingest_task.await;
    let _ = api_task.await;
}
