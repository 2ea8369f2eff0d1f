//! Shared test rig: a private bus, the simulator in-process, meterd in-process or as the real
//! binary, and a reader that fetches with a cursor like uplinkd does.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spark_dbus::{MeterReading, Meters1Proxy};
use spark_meterd::Config;
use spark_meterd::link::RadioAddress;
use spark_meterd::sim::{self, Faults, Module, Pty, RunOptions, SimOptions, Simulator};
use spark_testbed::PrivateBus;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// meterd's logs in the test's output (shown when a test fails).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("spark_meterd=debug")
        .with_test_writer()
        .try_init();
}

/// A test's private world: bus, temp dir, file names.
pub struct Rig {
    pub bus: PrivateBus,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub fn new() -> Self {
        let bus = PrivateBus::start().expect("start a private dbus-daemon");
        let dir = tempfile::Builder::new()
            .prefix("meterd-test-")
            .tempdir()
            .unwrap();
        Self { bus, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn ledger(&self) -> PathBuf {
        self.path("ledger.csv")
    }

    pub fn config(&self, radio: RadioAddress) -> Config {
        Config {
            radio,
            baud: 115_200,
            data_dir: self.path("data"),
            bus_address: Some(self.bus.address().to_owned()),
            max_buffered: 1_000_000,
            ping_interval_ms: 300,
            reconnect_max_ms: 400,
        }
    }

    pub async fn client(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.bus.address())
            .unwrap()
            .build()
            .await
            .unwrap()
    }
}

/// Simulator options for tests: small, fast, with every kind of irregularity.
pub fn run_options(rig: &Rig, meters: usize, intervals: u64, seed: u64) -> RunOptions {
    RunOptions {
        stop_file: None,
        sim: SimOptions {
            meters,
            seed,
            miss_rate: 0.03,
            reset_rate: 0.01,
            late_rate: 0.1,
            alarm_rate: 0.01,
            ..SimOptions::default()
        },
        interval: Duration::from_millis(40),
        intervals: Some(intervals),
        ledger: Some(rig.ledger()),
        epoch: 7,
    }
}

/// The simulator running in this process.
pub struct SimRun {
    pub module: Module,
    pub pause: Arc<Mutex<Option<Duration>>>,
    pub serve: JoinHandle<std::io::Result<()>>,
    pub generate: JoinHandle<std::io::Result<()>>,
    pub pty_path: Option<PathBuf>,
}

impl SimRun {
    /// Serves on a Unix socket at `socket`.
    pub fn unix(options: RunOptions, socket: &Path, faults: Faults) -> Self {
        let module = Module::new(
            options.epoch,
            Simulator::new(options.sim.clone()).meter_ids(),
        );
        let pause = Arc::new(Mutex::new(None));
        let serve = tokio::spawn(sim::serve_unix(
            module.clone(),
            socket.to_owned(),
            faults,
            pause.clone(),
        ));
        let generate = spawn_generate(&module, options);
        Self {
            module,
            pause,
            serve,
            generate,
            pty_path: None,
        }
    }

    /// Serves on a new pty.
    pub fn pty(options: RunOptions, faults: Faults) -> Self {
        let module = Module::new(
            options.epoch,
            Simulator::new(options.sim.clone()).meter_ids(),
        );
        let pty = Pty::open().expect("open a pty");
        let pty_path = Some(pty.slave_path.clone());
        let serve = tokio::spawn(sim::serve_pty(module.clone(), pty, faults));
        let generate = spawn_generate(&module, options);
        Self {
            module,
            pause: Arc::new(Mutex::new(None)),
            serve,
            generate,
            pty_path,
        }
    }

    /// Waits until every generated reading is acknowledged by meterd.
    pub async fn wait_all_acked(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.module.all_acked() {
            assert!(!self.serve.is_finished(), "the simulator stopped serving");
            assert!(
                Instant::now() < deadline,
                "not all readings acknowledged within {within:?}: {:?}",
                {
                    let s = self.module.state();
                    (s.finished, s.acked, s.newest, s.sessions)
                }
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_generate(module: &Module, options: RunOptions) -> JoinHandle<std::io::Result<()>> {
    let module = module.clone();
    tokio::spawn(async move { sim::generate(&module, &options).await })
}

/// meterd running in this process (library `run`).
pub struct InProcess {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), spark_meterd::DaemonError>>,
}

impl InProcess {
    pub fn start(config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(spark_meterd::run(
            config,
            async move {
                let _ = stopped.await;
            },
            || {},
        ));
        Self {
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("meterd stops within 5 s")
            .unwrap()
            .unwrap();
    }
}

/// The real `spark-meterd` binary with a config file written for it.
pub struct Binary {
    pub child: Child,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Binary {
    pub fn write_config(rig: &Rig, config: &Config) -> PathBuf {
        let radio = config.radio.to_string();
        let text = format!(
            "radio = {radio:?}\ndata-dir = {:?}\nbus-address = {:?}\nping-interval-ms = {}\nreconnect-max-ms = {}\n",
            config.data_dir.display().to_string(),
            config.bus_address.clone().unwrap(),
            config.ping_interval_ms,
            config.reconnect_max_ms,
        );
        let path = rig.path("meterd.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn start(config: &Path, log: &Path) -> Self {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_spark-meterd"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start spark-meterd");
        Self {
            child,
            config: config.to_owned(),
            log: log.to_owned(),
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reader like uplinkd: keeps a cursor and everything it fetched.
pub struct Reader {
    pub proxy: Meters1Proxy<'static>,
    pub cursor: u64,
    pub got: Vec<MeterReading>,
}

impl Reader {
    pub async fn new(conn: &zbus::Connection) -> Self {
        let proxy = Meters1Proxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .unwrap();
        Self {
            proxy,
            cursor: 0,
            got: Vec::new(),
        }
    }

    /// One fetch that advances the cursor; errors (meterd restarting) are returned.
    pub async fn fetch_once(&mut self, max: u32) -> zbus::Result<usize> {
        let batch = self.proxy.fetch(self.cursor, max).await?;
        let n = batch.len();
        for r in batch {
            assert!(
                r.position > self.cursor,
                "position {} not after cursor {}",
                r.position,
                self.cursor
            );
            self.cursor = r.position;
            self.got.push(r);
        }
        Ok(n)
    }

    /// Fetches until it holds `count` readings (failed calls are retried), within `within`.
    pub async fn fetch_until(&mut self, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.got.len() < count {
            assert!(
                Instant::now() < deadline,
                "fetched {} of {count} readings within {within:?}",
                self.got.len()
            );
            match self.fetch_once(500).await {
                Ok(n) if n > 0 => {}
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Waits until meterd answers on the bus.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.proxy.head().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "meterd not on the bus within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_online(&self, online: bool, within: Duration) {
        let deadline = Instant::now() + within;
        while self.proxy.radio_online().await.ok() != Some(online) {
            assert!(
                Instant::now() < deadline,
                "RadioOnline did not become {online} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Asserts that `got` holds every ledger reading exactly once and nothing else.
pub fn assert_exactly_once(ledger: &Path, got: &[MeterReading]) {
    let generated = sim::read_ledger(ledger).unwrap();
    let want: HashSet<(String, u64, u64)> = generated.iter().cloned().collect();
    assert_eq!(want.len(), generated.len(), "ledger has repeated readings");
    let mut seen = HashSet::new();
    for r in got {
        let key = (r.meter_id.clone(), r.timestamp, r.wh);
        assert!(
            want.contains(&key),
            "stored a reading never generated: {r:?}"
        );
        assert!(seen.insert(key), "reading delivered twice: {r:?}");
    }
    assert_eq!(
        seen.len(),
        want.len(),
        "{} of {} generated readings delivered",
        seen.len(),
        want.len()
    );
}
