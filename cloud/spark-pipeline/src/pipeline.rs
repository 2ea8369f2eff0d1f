//! The scheduler: finds gateways with readings beyond their cursor, hands each to a worker as a
//! batch (by size, or once the readings waited `batch-wait-ms`), at most `workers` at once and
//! never one gateway twice at once (order per gateway), and stops cleanly.
//!
//! Backpressure: the scheduler reads nothing ahead. A batch is at most `batch-readings` readings
//! (plus one message) held by one worker; when all workers are busy nothing more is read until
//! one finishes, so a slow database slows the pipeline and never grows its memory.
//!
//! Shutdown: no new batch starts; batches in flight get `shutdown-grace-secs` to commit, then are
//! aborted, which rolls their transaction back (the batch is done again on the next start).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;

use crate::batch::{BatchOutcome, run_batch};
use crate::config::PipelineConfig;
use crate::error::{PipelineError, StoreError};
use crate::store::Store;

/// Totals of a run, for logs, tests and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    pub batches: u64,
    pub messages: u64,
    pub readings: u64,
    pub late: u64,
    pub failed_batches: u64,
    /// Batches still in flight at shutdown after the grace period, rolled back.
    pub abandoned: u64,
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Runs the pipeline on `store` until `shutdown` completes. This is what the `spark-pipeline`
/// binary runs, and what a service embedding the pipeline in-process (spark-ingest's main,
/// beside its server) calls with its own shutdown future.
pub async fn run(
    store: Store,
    config: PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunStats, PipelineError> {
    Scheduler::new(store, config).run(shutdown, false).await
}

/// Consumes everything stored now and returns (a batch job: tests, catch-up, the bench).
pub async fn drain(store: Store, config: PipelineConfig) -> Result<RunStats, PipelineError> {
    let mut config = config;
    config.batch_wait_ms = 0;
    let mut scheduler = Scheduler::new(store, config);
    scheduler.fail_fast = true;
    scheduler.run(std::future::pending(), true).await
}

struct Scheduler {
    store: Store,
    config: PipelineConfig,
    tasks: JoinSet<(String, Result<BatchOutcome, StoreError>)>,
    in_flight: HashSet<String>,
    first_seen: HashMap<String, Instant>,
    retry_at: HashMap<String, Instant>,
    stats: RunStats,
    rotate: usize,
    /// `drain`: a failed batch ends the run with its error instead of a retry.
    fail_fast: bool,
}

impl Scheduler {
    fn new(store: Store, config: PipelineConfig) -> Scheduler {
        Scheduler {
            store,
            config,
            tasks: JoinSet::new(),
            in_flight: HashSet::new(),
            first_seen: HashMap::new(),
            retry_at: HashMap::new(),
            stats: RunStats::default(),
            rotate: 0,
            fail_fast: false,
        }
    }

    async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        until_idle: bool,
    ) -> Result<RunStats, PipelineError> {
        tokio::pin!(shutdown);
        let silence_every = Duration::from_secs(self.config.events.silence_check_secs.max(1));
        let mut next_silence_check = Instant::now();
        loop {
            if Instant::now() >= next_silence_check && !until_idle {
                next_silence_check = Instant::now() + silence_every;
                match self
                    .store
                    .check_silence(unix_now(), self.config.events.gateway_silent_secs)
                    .await
                {
                    Ok((0, 0)) => {}
                    Ok((opened, closed)) => {
                        tracing::info!(opened, closed, "gateway silence events")
                    }
                    Err(e) => tracing::warn!(error = %e, "gateway silence check failed"),
                }
            }
            let dispatched = match self.dispatch().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list pending gateways; retrying");
                    0
                }
            };
            if until_idle && dispatched == 0 && self.tasks.is_empty() {
                // Nothing pending that is not waiting for a retry.
                if self.retry_at.is_empty() {
                    break;
                }
            }
            let wait = if dispatched > 0 && self.tasks.len() < self.config.workers {
                Duration::ZERO
            } else {
                self.config.poll_interval()
            };
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done)?,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.stop().await
    }

    /// Starts batches for gateways that are ready, while workers are free. Returns how many.
    async fn dispatch(&mut self) -> Result<usize, StoreError> {
        if self.tasks.len() >= self.config.workers {
            return Ok(0);
        }
        let mut pending = self.store.pending().await?;
        let now = Instant::now();
        self.retry_at.retain(|_, at| *at > now);
        let present: HashSet<&str> = pending.iter().map(|p| p.gateway.as_str()).collect();
        self.first_seen.retain(|g, _| present.contains(g.as_str()));
        if !pending.is_empty() {
            // Start the scan where the last one stopped: no gateway starves behind others.
            let k = self.rotate % pending.len();
            pending.rotate_left(k);
            self.rotate = self.rotate.wrapping_add(1);
        }
        let mut started = 0;
        for p in pending {
            if self.tasks.len() >= self.config.workers {
                break;
            }
            if self.in_flight.contains(&p.gateway) || self.retry_at.contains_key(&p.gateway) {
                continue;
            }
            let seen = *self.first_seen.entry(p.gateway.clone()).or_insert(now);
            let ready = seen.elapsed() >= self.config.batch_wait()
                || self.store.pending_readings(&p.gateway, p.cursor).await?
                    >= self.config.batch_readings as i64;
            if !ready {
                continue;
            }
            self.first_seen.remove(&p.gateway);
            self.in_flight.insert(p.gateway.clone());
            let (store, config, gateway) = (self.store.clone(), self.config.clone(), p.gateway);
            self.tasks.spawn(async move {
                let result = run_batch(&store, &gateway, &config, unix_now()).await;
                (gateway, result)
            });
            started += 1;
        }
        Ok(started)
    }

    fn finished(
        &mut self,
        done: Result<(String, Result<BatchOutcome, StoreError>), tokio::task::JoinError>,
    ) -> Result<(), PipelineError> {
        let (gateway, result) = match done {
            Ok(d) => d,
            Err(e) if e.is_cancelled() => return Ok(()),
            Err(e) => {
                return Err(PipelineError::Worker {
                    gateway: "?".into(),
                    detail: e.to_string(),
                });
            }
        };
        self.in_flight.remove(&gateway);
        match result {
            Ok(o) => {
                self.stats.batches += 1;
                self.stats.messages += o.messages as u64;
                self.stats.readings += o.readings;
                self.stats.late += o.late;
                tracing::debug!(
                    gateway,
                    messages = o.messages,
                    readings = o.readings,
                    seq = o.seq,
                    "batch committed"
                );
            }
            Err(e) if self.fail_fast => {
                return Err(PipelineError::Worker {
                    gateway,
                    detail: e.to_string(),
                });
            }
            Err(e) => {
                self.stats.failed_batches += 1;
                tracing::warn!(gateway, error = %e, retry_secs = self.config.retry_secs, "batch failed and was rolled back; retrying later");
                self.retry_at.insert(
                    gateway,
                    Instant::now() + Duration::from_secs(self.config.retry_secs),
                );
            }
        }
        Ok(())
    }

    async fn stop(mut self) -> Result<RunStats, PipelineError> {
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        let in_flight = self.tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, "stopping: letting batches in flight commit");
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => self.finished(done)?,
                Ok(None) => break,
                Err(_) => {
                    self.stats.abandoned = self.tasks.len() as u64;
                    tracing::warn!(
                        abandoned = self.stats.abandoned,
                        "batches did not commit within the grace period; rolled back"
                    );
                    self.tasks.shutdown().await;
                    break;
                }
            }
        }
        tracing::info!(
            batches = self.stats.batches,
            readings = self.stats.readings,
            "pipeline stopped"
        );
        Ok(self.stats)
    }
}
