//! The real reading side: spark-meterd (its library `run`, in-process) reading the meter-radio
//! simulator over a Unix socket. The simulator's ledger is the list of generated readings the
//! cloud must end up with, exactly once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spark_meterd::link::RadioAddress;
use spark_meterd::sim::{self, Faults, Module, RunOptions, SimOptions, Simulator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::WAIT;

/// Simulator + meterd.
pub struct RealMeters {
    pub module: Module,
    bus: String,
    ledger: PathBuf,
    serve: JoinHandle<std::io::Result<()>>,
    generate: JoinHandle<std::io::Result<()>>,
    stop: Option<oneshot::Sender<()>>,
    meterd: Option<JoinHandle<Result<(), spark_meterd::DaemonError>>>,
    _dir: tempfile::TempDir,
}

impl RealMeters {
    /// `meters` meters read for `intervals` scheduled intervals, one every `every` of real time,
    /// with missed reads, late reads and register resets.
    pub async fn start(
        bus: &str,
        meters: usize,
        intervals: u64,
        every: Duration,
        seed: u64,
    ) -> RealMeters {
        let dir = tempfile::Builder::new()
            .prefix("uplinkd-meterd-")
            .tempdir()
            .unwrap();
        let socket = dir.path().join("radio.sock");
        let ledger = dir.path().join("ledger.csv");
        let options = RunOptions {
            stop_file: None,
            sim: SimOptions {
                meters,
                seed,
                miss_rate: 0.03,
                reset_rate: 0.01,
                late_rate: 0.1,
                alarm_rate: 0.0,
                ..SimOptions::default()
            },
            interval: every,
            intervals: Some(intervals),
            ledger: Some(ledger.clone()),
            epoch: 3,
        };
        let module = Module::new(
            options.epoch,
            Simulator::new(options.sim.clone()).meter_ids(),
        );
        let serve = tokio::spawn(sim::serve_unix(
            module.clone(),
            socket.clone(),
            Faults::none(),
            Arc::new(Mutex::new(None)),
        ));
        let config = spark_meterd::Config {
            radio: RadioAddress::Unix(socket),
            baud: 115_200,
            data_dir: dir.path().join("meterd"),
            bus_address: Some(bus.to_owned()),
            max_buffered: 1_000_000,
            ping_interval_ms: 300,
            reconnect_max_ms: 200,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let meterd = tokio::spawn(spark_meterd::run(
            config,
            async move {
                let _ = stopped.await;
            },
            move || {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("meterd ready")
            .expect("meterd started");
        // Generate only once meterd serves Meters1, like a gateway that booted.
        let generate = {
            let module = module.clone();
            tokio::spawn(async move { sim::generate(&module, &options).await })
        };
        RealMeters {
            module,
            bus: bus.to_owned(),
            ledger,
            serve,
            generate,
            stop: Some(stop),
            meterd: Some(meterd),
            _dir: dir,
        }
    }

    /// Whether the simulator generated every interval.
    pub fn finished(&self) -> bool {
        self.module.state().finished
    }

    /// Waits until every interval is generated.
    pub async fn wait_finished(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.finished() {
            assert!(
                !self.generate.is_finished() || self.finished(),
                "the simulator failed"
            );
            assert!(
                Instant::now() < deadline,
                "simulator not finished within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the simulator generated (its ledger).
    pub fn generated(&self) -> Vec<(String, u64, u64)> {
        sim::read_ledger(&self.ledger).unwrap_or_default()
    }

    /// Readings meterd still holds (not yet released by uplinkd's cursor).
    pub async fn buffered(&self) -> u64 {
        let conn = zbus::connection::Builder::address(self.bus.as_str())
            .unwrap()
            .build()
            .await
            .unwrap();
        let proxy = spark_dbus::Meters1Proxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .unwrap();
        proxy.buffered().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.meterd.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("meterd stops")
                .unwrap()
                .unwrap();
        }
        self.serve.abort();
    }
}

impl Drop for RealMeters {
    fn drop(&mut self) {
        self.serve.abort();
        self.generate.abort();
        if let Some(task) = self.meterd.take() {
            task.abort();
        }
    }
}
