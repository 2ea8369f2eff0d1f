//! A batch the cloud calls Malformed is parked, not resent forever: against a scripted cloud
//! (spark-proto over real mutual TLS) that refuses the first batch it sees once, uplinkd sends
//! it exactly once per process, keeps the session up, and a restart tries it again.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::meters::FakeMeters;
use common::*;
use spark_proto::{Ack, Message, Nack, NackCode, Pong, Welcome};
use spark_testbed::PrivateBus;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SERIAL: &str = "GW-PARK-1";

#[derive(Debug, Default)]
struct Seen {
    connections: u32,
    /// Sequence numbers of every batch received, in order.
    batches: Vec<u64>,
    /// Refuse the next batch with Malformed (once).
    refuse_next: bool,
}

/// A scripted cloud: Welcome with nothing committed, then Malformed for the first batch after
/// `refuse_next` is set, Ack for the others.
async fn scripted_cloud(pki: &Pki, seen: Arc<Mutex<Seen>>) -> std::net::SocketAddr {
    let tls = spark_tls::server_config(
        &pki.pki.server_cert(),
        &pki.pki.server_key(),
        &pki.pki.device_ca_cert(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            seen.lock().unwrap().connections += 1;
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut committed = 0u64;
                loop {
                    let msg = loop {
                        match spark_proto::decode(&buf) {
                            Ok((m, n)) => {
                                buf.drain(..n);
                                break m;
                            }
                            Err(spark_proto::DecodeError::Incomplete) => {
                                let mut chunk = [0u8; 4096];
                                match tls.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            Err(e) => panic!("uplinkd sent garbage: {e}"),
                        }
                    };
                    let reply = match msg {
                        Message::Hello(_) => Some(Message::Welcome(Welcome {
                            version: 1,
                            server_time: 0,
                            config_version: 0,
                            roster_version: 0,
                            last_committed_seq: committed,
                        })),
                        Message::ReadingsBatch(b) => {
                            let mut s = seen.lock().unwrap();
                            s.batches.push(b.seq);
                            if std::mem::take(&mut s.refuse_next) {
                                Some(Message::Nack(Nack {
                                    seq: b.seq,
                                    code: NackCode::Malformed,
                                    detail: "scripted refusal".into(),
                                }))
                            } else {
                                committed = b.seq;
                                Some(Message::Ack(Ack { seq: b.seq }))
                            }
                        }
                        Message::Ping(p) => Some(Message::Pong(Pong { nonce: p.nonce })),
                        _ => None,
                    };
                    if let Some(reply) = reply {
                        let mut out = Vec::new();
                        spark_proto::encode(&reply, &mut out).unwrap();
                        if tls.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_batch_is_parked_not_resent_forever() {
    init_tracing();
    let bus = PrivateBus::start().unwrap();
    let pki = Pki::new(SERIAL);
    let seen = Arc::new(Mutex::new(Seen {
        refuse_next: true,
        ..Seen::default()
    }));
    let cloud = scripted_cloud(&pki, seen.clone()).await;
    let meters = FakeMeters::start(bus.address(), 4).await;
    meters.interval().await;
    let data = tempfile::tempdir().unwrap();
    let setup = Setup {
        pki: &pki,
        bus: bus.address(),
        cloud,
        data_dir: data.path(),
    };
    let toml = setup
        .toml()
        .replace("health-interval-secs = 1.0", "health-interval-secs = 3600");
    let config = spark_uplinkd::Config::parse(&toml, std::path::Path::new("t.toml")).unwrap();

    let uplink = InProcess::start(config.clone()).await;
    wait_for("the first batch refused", || async {
        !seen.lock().unwrap().batches.is_empty()
    })
    .await;
    // More readings arrive; none of them may pass the parked entry, and it is not resent.
    meters.interval().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.batches, vec![1], "{s:?}");
        assert_eq!(s.connections, 1, "the session should stay up: {s:?}");
    }
    uplink.stop().await;

    // A restart (new firmware, say) tries the parked entry once more; now the cloud takes it
    // and everything after it.
    let uplink = InProcess::start(config).await;
    wait_for("entries after the parked one sent", || async {
        seen.lock().unwrap().batches.len() >= 3
    })
    .await;
    let batches = seen.lock().unwrap().batches.clone();
    assert_eq!(&batches[..3], &[1, 1, 2], "{batches:?}");
    uplink.stop().await;
}
