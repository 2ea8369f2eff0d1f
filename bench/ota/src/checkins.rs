//! The check-in storm: every simulated device opens one kept-alive mutual-TLS connection with its
//! own certificate, then all of them POST check-ins back to back (one outstanding request per
//! device, as an agent does) for a warm-up and a measured window. A request counts when it both
//! starts and completes inside the window.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::fixture::{COMPATIBLE, CURRENT_VERSION};
use crate::http;

/// What a storm measured.
pub struct Storm {
    pub window: Duration,
    /// Check-ins completed in the window.
    pub done: u64,
    /// Answers in the window by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Failed requests (connection errors), over the whole run.
    pub errors: u64,
    /// Latency of each counted check-in, sorted.
    pub latencies: Vec<Duration>,
    /// Time to open all connections (TLS handshakes included).
    pub connect: Duration,
    pub tls: String,
}

impl Storm {
    pub fn per_second(&self) -> f64 {
        self.done as f64 / self.window.as_secs_f64()
    }

    /// The `p`th percentile latency in milliseconds (nearest rank).
    pub fn pct_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// Runs the storm: `devices` are (serial, client TLS).
pub async fn storm(
    addr: SocketAddr,
    devices: &[(String, Arc<rustls::ClientConfig>)],
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<Storm> {
    // Connect everyone first, a bounded number of handshakes at a time (the listen backlog).
    let t = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut connecting = tokio::task::JoinSet::new();
    for (i, (serial, tls)) in devices.iter().enumerate() {
        let (gate, tls, serial) = (gate.clone(), tls.clone(), serial.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire().await?;
            let conn = http::connect(addr, tls)
                .await
                .with_context(|| format!("connecting device {serial}"))?;
            anyhow::Ok((i, serial, conn))
        });
    }
    let mut conns = Vec::with_capacity(devices.len());
    while let Some(r) = connecting.join_next().await {
        conns.push(r??);
    }
    let connect = t.elapsed();
    let tls = conns.first().map(|c| c.2.tls.clone()).unwrap_or_default();

    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + warmup;
    let end = measure_from + window;
    let body = Bytes::from(
        serde_json::json!({
            "current-version": CURRENT_VERSION,
            "booted-slot": "A",
            "agent-state": "idle",
            "compatible": COMPATIBLE,
        })
        .to_string(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (_, serial, conn) in conns {
        let body = body.clone();
        let path = format!("/v1/devices/{serial}/check-in");
        tasks.spawn(async move {
            let mut sender = conn.sender;
            let mut lat = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut errors = 0u64;
            tokio::time::sleep_until(start.into()).await;
            while Instant::now() < end {
                let mut req = http::request(hyper::Method::POST, &path, body.clone());
                req.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                let t0 = Instant::now();
                match http::send_drain(&mut sender, req).await {
                    Ok((status, _)) => {
                        let t1 = Instant::now();
                        if t0 >= measure_from && t1 <= end {
                            lat.push(t1 - t0);
                            *statuses.entry(status.as_u16()).or_default() += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            (lat, statuses, errors)
        });
    }
    let mut out = Storm {
        window,
        done: 0,
        statuses: BTreeMap::new(),
        errors: 0,
        latencies: Vec::new(),
        connect,
        tls,
    };
    while let Some(r) = tasks.join_next().await {
        let (lat, statuses, errors) = r?;
        out.latencies.extend(lat);
        for (k, v) in statuses {
            *out.statuses.entry(k).or_default() += v;
        }
        out.errors += errors;
    }
    out.done = out.latencies.len() as u64;
    out.latencies.sort();
    Ok(out)
}
