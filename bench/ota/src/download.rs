//! Bundle download throughput: the same file fetched whole by the same client from spark-ota's
//! download endpoint and from nginx, each download on a fresh mutual-TLS connection (as an agent
//! fetches a bundle), sequentially and with several streams at once. Runs of the two servers
//! alternate so that noise from the shared machine falls on both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;

use crate::http;

/// One server and the path of the bundle on it.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    pub tls: Arc<rustls::ClientConfig>,
}

/// Bytes moved and time taken.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    pub bytes: u64,
    pub time: Duration,
}

impl Moved {
    /// MB (10^6 bytes) per second.
    pub fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.time.as_secs_f64()
    }
    fn add(&mut self, other: Moved) {
        self.bytes += other.bytes;
        self.time += other.time;
    }
}

/// Fetches the whole file once on a new connection; checks status and length. Returns the TLS
/// negotiated.
pub async fn fetch(t: &Target, size: u64) -> anyhow::Result<String> {
    let mut conn = http::connect(t.addr, t.tls.clone()).await?;
    let (status, n) = http::send_drain(
        &mut conn.sender,
        http::request(hyper::Method::GET, &t.path, Bytes::new()),
    )
    .await?;
    if status != hyper::StatusCode::OK || n != size {
        bail!(
            "GET {} from {}: {status}, {n} of {size} bytes",
            t.path,
            t.addr
        );
    }
    Ok(conn.tls)
}

/// `streams` downloads at once; the wall time of the whole batch.
pub async fn batch(t: &Target, size: u64, streams: usize) -> anyhow::Result<Moved> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let t = t.clone();
        set.spawn(async move { fetch(&t, size).await });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(Moved {
        bytes: size * streams as u64,
        time: start.elapsed(),
    })
}

/// `rounds` alternating batches of `streams` downloads from `a` and from `b`: totals for each.
pub async fn compare(
    a: &Target,
    b: &Target,
    size: u64,
    streams: usize,
    rounds: usize,
) -> anyhow::Result<(Moved, Moved)> {
    let (mut ma, mut mb) = (Moved::default(), Moved::default());
    for _ in 0..rounds {
        ma.add(batch(a, size, streams).await?);
        mb.add(batch(b, size, streams).await?);
    }
    Ok((ma, mb))
}
