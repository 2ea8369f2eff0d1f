//! A test gateway (spark-proto over tokio-rustls with a device certificate) and an in-process
//! spark-ingest with its internal push API, for the command round trip.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use spark_proto::{BootSlot, Capabilities, CodecContext, Hello, Message, Roster, Sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Pki;

const WAIT: Duration = Duration::from_secs(15);

/// spark-ingest in-process: telemetry listener and internal API (only CN `spark-api` allowed).
pub struct Ingest {
    pub telemetry: SocketAddr,
    pub internal: SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Ingest {
    pub async fn start(pki: &Pki, url: &str) -> Ingest {
        let store = spark_ingest::Store::connect(url).await.unwrap();
        let config = spark_ingest::ServerConfig::from_files(
            &pki.pki.server_cert(),
            &pki.pki.server_key(),
            &pki.pki.device_ca_cert(),
        )
        .unwrap();
        let server = spark_ingest::Server::new(config, store.clone()).unwrap();
        let hub = server.hub();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let telemetry = listener.local_addr().unwrap();
        let t1 = tokio::spawn(async move {
            server.run(listener, std::future::pending()).await.unwrap();
        });
        let api_config = spark_ingest::api::ApiConfig::from_files(
            &pki.pki.server_cert(),
            &pki.pki.server_key(),
            &pki.pki.server_ca_cert(),
            vec!["spark-api".to_owned()],
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let internal = listener.local_addr().unwrap();
        let app = spark_ingest::api::router(hub, store);
        let t2 = tokio::spawn(async move {
            let _ =
                spark_ingest::api::serve(listener, api_config, app, std::future::pending()).await;
        });
        Ingest {
            telemetry,
            internal,
            tasks: vec![t1, t2],
        }
    }

    /// spark-api's client of the internal API, with the certificate `spark-keys issue-service
    /// spark-api` makes.
    pub fn client(&self, pki: &Pki) -> spark_api::ingest::IngestClient {
        let (cert, key) = pki.service("spark-api");
        spark_api::ingest::IngestClient::from_files(&spark_api::config::IngestFiles {
            url: format!("https://{}", self.internal),
            cert,
            key,
            ca: pki.pki.server_ca_cert(),
        })
        .unwrap()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A gateway speaking spark-proto.
pub struct Gateway {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    pub codec: CodecContext,
}

impl Gateway {
    /// Connects with a device certificate for `serial`, says Hello and sends its roster.
    pub async fn open(pki: &Pki, addr: SocketAddr, serial: &str, meters: &[&str]) -> Gateway {
        let (cert, key) = spark_keys::issue_device(pki.dir.path(), serial, true).unwrap();
        let tls =
            Arc::new(spark_tls::client_config(&pki.pki.server_ca_cert(), &cert, &key).unwrap());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = TlsConnector::from(tls).connect(name, tcp).await.unwrap();
        let mut gw = Gateway {
            stream,
            buf: BytesMut::new(),
            codec: CodecContext::new(0, 0),
        };
        gw.send(&Message::Hello(Hello {
            max_version: spark_proto::PROTOCOL_VERSION,
            min_version: spark_proto::MIN_PROTOCOL_VERSION,
            firmware_version: "2026.11.3".into(),
            booted_slot: BootSlot::B,
            last_acked_seq: 0,
            capabilities: Capabilities::UPDATES | Capabilities::EVENTS,
            roster_version: 1,
        }))
        .await;
        match gw.recv().await {
            Some(Message::Welcome(_)) => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
        let roster = Roster {
            version: 1,
            meters: meters.iter().map(|m| m.as_bytes().to_vec()).collect(),
        };
        gw.send(&Message::Roster(roster)).await;
        gw.codec = CodecContext::new(1, meters.len() as u32);
        gw
    }

    pub async fn send(&mut self, msg: &Message) {
        let mut out = Vec::new();
        spark_proto::encode(msg, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends readings batch `seq` and waits for its Ack.
    pub async fn readings(&mut self, seq: u64, start: u64, samples: &[Sample]) {
        let batch = self.codec.build_batch(seq, start, 900, samples).unwrap();
        self.send(&Message::ReadingsBatch(batch)).await;
        loop {
            match self.recv().await {
                Some(Message::Ack(a)) if a.seq >= seq => return,
                Some(Message::Ack(_)) => {}
                other => panic!("expected Ack {seq}, got {other:?}"),
            }
        }
    }

    pub async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, async {
            loop {
                match spark_proto::decode(&self.buf) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Some(msg);
                    }
                    Err(spark_proto::DecodeError::Incomplete) => {}
                    Err(e) => panic!("ingest sent a bad frame: {e}"),
                }
                self.buf.reserve(4096);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no message from ingest in time")
    }
}
