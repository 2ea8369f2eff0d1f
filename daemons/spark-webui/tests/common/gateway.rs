//! The real gateway daemons in this process on the test's bus: spark-meterd reading the meter
//! radio simulator over a Unix socket, and spark-uplinkd pulling from it (its cloud address
//! refuses connections, so it stays disconnected and its queue fills, as on a site whose
//! modem is down).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use spark_meterd::link::RadioAddress;
use spark_meterd::sim::{self, Faults, Module, RunOptions, SimOptions, Simulator};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::WAIT;

/// A daemon running in-process; dropping it aborts it.
pub struct Running<E: Send + 'static> {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), E>>>,
}

impl<E: Send + std::fmt::Debug + 'static> Running<E> {
    async fn start<F, Fut>(start: F) -> Self
    where
        F: FnOnce(
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
            Box<dyn FnOnce() + Send>,
        ) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(start(
            Box::pin(async move {
                let _ = stopped.await;
            }),
            Box::new(move || {
                let _ = ready_tx.send(());
            }),
        ));
        tokio::time::timeout(WAIT, ready_rx)
            .await
            .expect("daemon ready in time")
            .expect("daemon started");
        Running {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("daemon stops in time")
                .unwrap()
                .unwrap();
        }
    }
}

impl<E: Send + 'static> Drop for Running<E> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The simulator and meterd.
pub struct Meters {
    pub meter_ids: Vec<String>,
    pub module: Module,
    meterd: Option<Running<spark_meterd::DaemonError>>,
    serve: JoinHandle<std::io::Result<()>>,
    generate: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Meters {
    /// `meters` meters read for `intervals` intervals, 50 ms of real time each.
    pub async fn start(bus: &str, meters: usize, intervals: u64) -> Meters {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("radio.sock");
        let options = RunOptions {
            stop_file: None,
            sim: SimOptions {
                meters,
                seed: 5,
                miss_rate: 0.0,
                alarm_rate: 0.0,
                ..SimOptions::default()
            },
            interval: Duration::from_millis(50),
            intervals: Some(intervals),
            ledger: None,
            epoch: 1,
        };
        let meter_ids = Simulator::new(options.sim.clone()).meter_ids();
        let module = Module::new(options.epoch, meter_ids.clone());
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
            max_buffered: 100_000,
            ping_interval_ms: 300,
            reconnect_max_ms: 200,
        };
        let meterd = Running::start(|stop, ready| spark_meterd::run(config, stop, ready)).await;
        let generate = {
            let module = module.clone();
            tokio::spawn(async move { sim::generate(&module, &options).await })
        };
        Meters {
            meter_ids,
            module,
            meterd: Some(meterd),
            serve,
            generate,
            _dir: dir,
        }
    }

    pub async fn stop(mut self) {
        if let Some(m) = self.meterd.take() {
            m.stop().await;
        }
    }

    /// Waits until every interval is generated and meterd has acknowledged all of it.
    pub async fn wait_all_stored(&self) {
        super::wait_for("the simulator's readings stored by meterd", || async {
            let s = self.module.state();
            s.finished && s.acked == s.newest && s.newest > 0
        })
        .await;
    }
}

impl Drop for Meters {
    fn drop(&mut self) {
        self.serve.abort();
        self.generate.abort();
    }
}

/// uplinkd with a dev PKI and a cloud address nobody listens on.
pub struct Uplink {
    pub uplinkd: Running<spark_uplinkd::DaemonError>,
    _dir: tempfile::TempDir,
}

impl Uplink {
    pub async fn start(bus: &str) -> Uplink {
        let dir = tempfile::tempdir().unwrap();
        let pki = spark_keys::init_dev(
            &dir.path().join("pki"),
            &spark_keys::DevPkiOptions::default(),
        )
        .unwrap();
        let (cert, key) =
            spark_keys::issue_device(&dir.path().join("pki"), "GW-WEBUI-1", false).unwrap();
        // A port that was free a moment ago: connections are refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let toml = format!(
            r#"
data-dir = "{data}"
bus-address = "{bus}"
firmware-version = "2026.11.0"
booted-slot = "A"
batch-window-secs = 0.1
health-interval-secs = 3600

[cloud]
address = "{closed}"
server-name = "localhost"
server-ca = "{ca}"
device-cert = "{cert}"
device-key = "{key}"
backoff-min-secs = 0.5
backoff-max-secs = 2
"#,
            data = dir.path().join("uplinkd").display(),
            ca = pki.server_ca_cert().display(),
            cert = cert.display(),
            key = key.display(),
        );
        let config =
            spark_uplinkd::Config::parse(&toml, std::path::Path::new("uplinkd-test.toml")).unwrap();
        let uplinkd = Running::start(|stop, ready| spark_uplinkd::run(config, stop, ready)).await;
        Uplink { uplinkd, _dir: dir }
    }
}
