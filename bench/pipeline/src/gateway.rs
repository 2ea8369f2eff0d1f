//! A protocol-level simulated gateway: spark-proto over mutual TLS (copied from
//! `bench/telemetry`, whose binary crate cannot be depended on). Registers grow steadily, so the
//! pipeline does the normal work of every reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::{Buf, BytesMut};
use spark_proto::{
    BootSlot, Capabilities, CodecContext, DecodeError, Hello, Message, Roster, Sample, Welcome,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long any single wait for the server may take before the benchmark gives up.
const WAIT: Duration = Duration::from_secs(120);

pub struct SimGateway {
    stream: TlsStream<TcpStream>,
    buf: BytesMut,
    pub codec: CodecContext,
    out: Vec<u8>,
}

/// A roster of `n` meters whose ids start with `prefix`.
pub fn roster(prefix: &str, n: usize) -> Roster {
    Roster {
        version: 1,
        meters: (0..n)
            .map(|i| format!("{prefix}-{i:05}").into_bytes())
            .collect(),
    }
}

/// Register of meter `m` at interval `i`: a deterministic, increasing, household-like series.
pub fn register(gateway: usize, meter: u32, interval: u64) -> u64 {
    let base = 1_000_000 + (gateway as u64 * 7919 + meter as u64 * 104_729) % 5_000_000;
    let per_interval = 50 + (meter as u64 * 37 + gateway as u64) % 400;
    base + interval * per_interval + (interval * interval) % 13
}

impl SimGateway {
    /// TLS handshake, Hello, Welcome, and the roster when the cloud's differs.
    pub async fn open(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
        roster: &Roster,
    ) -> anyhow::Result<(SimGateway, Welcome)> {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let stream = tokio::time::timeout(WAIT, TlsConnector::from(tls).connect(name, tcp))
            .await
            .context("TLS handshake timed out")??;
        let mut gw = SimGateway {
            stream,
            buf: BytesMut::with_capacity(256),
            codec: CodecContext::new(roster.version, roster.meters.len() as u32),
            out: Vec::new(),
        };
        gw.send(&Message::Hello(Hello {
            max_version: spark_proto::PROTOCOL_VERSION,
            min_version: spark_proto::MIN_PROTOCOL_VERSION,
            firmware_version: "2026.11.3".into(),
            booted_slot: BootSlot::A,
            last_acked_seq: 0,
            capabilities: Capabilities::EVENTS,
            roster_version: roster.version,
        }))
        .await?;
        let welcome = match gw.recv().await? {
            Some(Message::Welcome(w)) => w,
            other => bail!("expected Welcome, got {other:?}"),
        };
        if welcome.roster_version != roster.version {
            gw.send(&Message::Roster(roster.clone())).await?;
        }
        Ok((gw, welcome))
    }

    pub async fn send(&mut self, msg: &Message) -> anyhow::Result<()> {
        self.out.clear();
        spark_proto::encode(msg, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// A readings batch of one interval for every meter.
    pub fn interval_batch(
        &mut self,
        gateway: usize,
        seq: u64,
        start: u64,
        interval: u64,
        meters: u32,
    ) -> anyhow::Result<Message> {
        let ts = start + interval * 900;
        let samples: Vec<Sample> = (0..meters)
            .map(|m| Sample {
                meter: m,
                timestamp: ts,
                wh: register(gateway, m, interval),
            })
            .collect();
        Ok(Message::ReadingsBatch(
            self.codec.build_batch(seq, ts, 900, &samples)?,
        ))
    }

    /// The next message; `None` when the server closed the connection.
    pub async fn recv(&mut self) -> anyhow::Result<Option<Message>> {
        tokio::time::timeout(WAIT, async {
            loop {
                match spark_proto::decode(&self.buf) {
                    Ok((msg, n)) => {
                        self.buf.advance(n);
                        return Ok(Some(msg));
                    }
                    Err(DecodeError::Incomplete) => {}
                    Err(e) => bail!("bad frame from ingest: {e}"),
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Ok(None);
                }
            }
        })
        .await
        .context("no message from ingest in time")?
    }
}
