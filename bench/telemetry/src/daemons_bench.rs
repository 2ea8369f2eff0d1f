//! Benchmarks 1 and 4 of issue 3, on the real gateway daemons: the meter-radio simulator feeds the
//! real `spark-meterd`, the real `spark-uplinkd` sends to the real `spark-ingest` (SQLite) over
//! mutual TLS, on a private D-Bus bus, on a compressed clock.
//!
//! - `wire`: bytes on the wire per reading for one simulated day, TLS records and TCP/IP headers
//!   included, against the same readings (from the simulator's ledger) published to a real
//!   Mosquitto over mutual TLS: MQTT 3.1.1 QoS 1, JSON, one message per reading, and one JSON batch
//!   per interval. Bytes are read from the loopback interface's counters in a network namespace
//!   of the benchmark's own whose loopback has a 1500-byte MTU, like a cellular link: IP bytes =
//!   `tx_bytes − 14 × tx_packets` (loopback frames carry a 14-byte Ethernet header).
//! - `rss`: resident memory of meterd and uplinkd with 2000 meters, sampled through a run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sqlx::Connection;

use crate::mqtt::Publisher;
use crate::procs::{Proc, free_port, wait_listening};

#[derive(Debug, clap::Args)]
pub struct WireArgs {
    /// Meters on the gateway.
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// 15-minute intervals to simulate (96 = one day).
    #[arg(long, default_value_t = 96)]
    intervals: u64,
    /// Real milliseconds per simulated 15 minutes.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Already inside the benchmark's network namespace (set by the benchmark itself).
    #[arg(long, hide = true)]
    inside_netns: bool,
}

#[derive(Debug, clap::Args)]
pub struct RssArgs {
    /// Meters on the gateway.
    #[arg(long, default_value_t = 2000)]
    meters: usize,
    /// 15-minute intervals to simulate.
    #[arg(long, default_value_t = 96)]
    intervals: u64,
    /// Real milliseconds per simulated 15 minutes.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
}

/// The dev PKI with one gateway certificate.
struct Rig {
    dir: tempfile::TempDir,
    pki: spark_keys::DevPki,
    bus: spark_testbed::PrivateBus,
}

const GATEWAY: &str = "GW-BENCH-1";

impl Rig {
    fn new() -> anyhow::Result<Rig> {
        let dir = tempfile::tempdir()?;
        let pki = spark_keys::init_dev(
            &dir.path().join("pki"),
            &spark_keys::DevPkiOptions::default(),
        )?;
        spark_keys::issue_device(&dir.path().join("pki"), GATEWAY, false)?;
        let bus = spark_testbed::PrivateBus::start()?;
        Ok(Rig { dir, pki, bus })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// One gateway's daemons plus ingest, for one run.
struct Run {
    ingest: Proc,
    sim: Proc,
    meterd: Proc,
    uplinkd: Proc,
    ledger: PathBuf,
    ingest_db: PathBuf,
}

/// How uplinkd batches and keeps the link alive, in simulated seconds.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    batch_window: u64,
    keepalive: u64,
    health: u64,
}

async fn start_run(
    rig: &Rig,
    tag: &str,
    meters: usize,
    intervals: u64,
    interval_ms: u64,
    cadence: Cadence,
    before_uplink: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Run> {
    let work = rig.path(tag);
    std::fs::create_dir_all(&work)?;
    // Simulated seconds to real seconds.
    let scale = interval_ms as f64 / 1000.0 / 900.0;

    let port = free_port()?;
    let ingest_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let ingest_conf = work.join("ingest.toml");
    std::fs::write(
        &ingest_conf,
        format!(
            "listen = \"{ingest_addr}\"\ndata-dir = {data:?}\n[pipeline]\nenabled = false\n[tls]\ncert = {cert:?}\nkey = {key:?}\ndevice-ca = {ca:?}\n",
            data = work.join("ingest"),
            cert = rig.pki.server_cert(),
            key = rig.pki.server_key(),
            ca = rig.pki.device_ca_cert(),
        ),
    )?;
    let log = work.join("ingest.log");
    let mut ingest = Proc::spawn("spark-ingest", &["--config", utf8(&ingest_conf)?], &log)?;
    wait_listening(ingest_addr, &mut ingest, &log).await?;

    let socket = work.join("radio.sock");
    let ledger = work.join("ledger.csv");
    let sim = Proc::spawn(
        "spark-meter-sim",
        &[
            "--socket",
            utf8(&socket)?,
            "--meters",
            &meters.to_string(),
            "--intervals",
            &intervals.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
            "--seed",
            "7",
            "--ledger",
            utf8(&ledger)?,
        ],
        &work.join("sim.log"),
    )?;
    wait_path(&socket).await?;

    let meterd_conf = work.join("meterd.toml");
    std::fs::write(
        &meterd_conf,
        format!(
            "radio = \"unix:{}\"\ndata-dir = {:?}\nbus-address = {:?}\n",
            socket.display(),
            work.join("meterd"),
            rig.bus.address(),
        ),
    )?;
    let meterd = Proc::spawn(
        "spark-meterd",
        &["--config", utf8(&meterd_conf)?],
        &work.join("meterd.log"),
    )?;

    before_uplink()?;
    let uplinkd_conf = work.join("uplinkd.toml");
    std::fs::write(
        &uplinkd_conf,
        format!(
            "data-dir = {data:?}\nbus-address = {bus:?}\nfirmware-version = \"2026.11.3\"\nbooted-slot = \"A\"\n\
             keepalive-secs = {keepalive}\ndead-peer-timeout-secs = {dead}\nbatch-window-secs = {window}\nhealth-interval-secs = {health}\n\
             [cloud]\naddress = \"{ingest_addr}\"\nserver-name = \"localhost\"\nserver-ca = {ca:?}\ndevice-cert = {cert:?}\ndevice-key = {key:?}\n\
             backoff-min-secs = 0.2\nbackoff-max-secs = 2.0\n",
            data = work.join("uplinkd"),
            bus = rig.bus.address(),
            keepalive = cadence.keepalive as f64 * scale,
            dead = (cadence.keepalive as f64 * scale).max(5.0) * 3.0,
            window = cadence.batch_window as f64 * scale,
            health = cadence.health as f64 * scale,
            ca = rig.pki.server_ca_cert(),
            cert = rig.pki.device_cert(GATEWAY),
            key = rig.pki.device_key(GATEWAY),
        ),
    )?;
    let uplinkd = Proc::spawn(
        "spark-uplinkd",
        &["--config", utf8(&uplinkd_conf)?],
        &work.join("uplinkd.log"),
    )?;
    Ok(Run {
        ingest,
        sim,
        meterd,
        uplinkd,
        ledger,
        ingest_db: work.join("ingest").join("ingest.db"),
    })
}

fn utf8(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("non-UTF-8 temporary path")
}

async fn wait_path(path: &Path) -> anyhow::Result<()> {
    for _ in 0..300 {
        if path.exists() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{} did not appear", path.display())
}

fn ledger_lines(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.is_empty()).count() as u64)
        .unwrap_or(0)
}

impl Run {
    /// Waits until the simulator is done and ingest holds every reading it generated.
    async fn wait_delivered(&mut self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        let url = format!("sqlite://{}?mode=ro", self.ingest_db.display());
        loop {
            let sim_done = self.sim.child.try_wait()?.is_some();
            let generated = ledger_lines(&self.ledger);
            if sim_done && self.ingest_db.exists() {
                let mut conn = sqlx::SqliteConnection::connect(&url).await?;
                let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await.ok();
                if stored as u64 == generated {
                    return Ok(generated);
                }
                if stored as u64 > generated {
                    bail!("ingest stored {stored} readings but only {generated} were generated");
                }
            }
            for p in [&mut self.meterd, &mut self.uplinkd, &mut self.ingest] {
                if let Some(status) = p.child.try_wait()? {
                    bail!("{} exited early with {status}", p.name);
                }
            }
            if Instant::now() > deadline {
                bail!("readings not all delivered within {limit:?} ({generated} generated)");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Loopback counters of this network namespace: (IP bytes, packets).
fn lo_counters() -> anyhow::Result<(u64, u64)> {
    let read = |f: &str| -> anyhow::Result<u64> {
        Ok(
            std::fs::read_to_string(format!("/sys/class/net/lo/statistics/{f}"))?
                .trim()
                .parse()?,
        )
    };
    let (bytes, packets) = (read("tx_bytes")?, read("tx_packets")?);
    Ok((bytes - 14 * packets, packets))
}

/// Runs the benchmark again inside a network namespace of its own with a 1500-byte loopback MTU,
/// so the interface counters see only its traffic, cut into realistically sized packets.
async fn reexec_in_netns(args: &WireArgs) -> anyhow::Result<()> {
    let ns = format!("spark-bench-{}", std::process::id());
    let ip = |a: &[&str]| -> anyhow::Result<()> {
        let st = std::process::Command::new("ip").args(a).status()?;
        if !st.success() {
            bail!("ip {} failed (needs root and iproute2)", a.join(" "));
        }
        Ok(())
    };
    ip(&["netns", "add", &ns])?;
    let result = async {
        ip(&[
            "netns", "exec", &ns, "ip", "link", "set", "lo", "mtu", "1500", "up",
        ])?;
        let me = std::env::current_exe()?;
        let status = tokio::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(me)
            .args([
                "wire",
                "--inside-netns",
                "--meters",
                &args.meters.to_string(),
                "--intervals",
                &args.intervals.to_string(),
                "--interval-ms",
                &args.interval_ms.to_string(),
            ])
            .status()
            .await?;
        if !status.success() {
            bail!("benchmark inside the namespace failed ({status})");
        }
        anyhow::Ok(())
    }
    .await;
    let _ = ip(&["netns", "del", &ns]);
    result
}

/// One row of the wire table.
struct Row {
    what: String,
    bytes: u64,
    packets: u64,
    readings: u64,
}

pub async fn wire(args: WireArgs) -> anyhow::Result<()> {
    if !args.inside_netns {
        return reexec_in_netns(&args).await;
    }
    println!(
        "wire: {} meters x {} intervals of 15 min, loopback MTU 1500, bytes = IP packets (TLS and TCP/IP headers included)",
        args.meters, args.intervals
    );
    let rig = Rig::new()?;
    let mut rows = Vec::new();

    for (label, cadence) in [
        (
            "Spark, hourly batches (keepalive 60 min, health hourly)",
            Cadence {
                batch_window: 3600,
                keepalive: 3600,
                health: 3600,
            },
        ),
        (
            "Spark, a batch every 15 min (keepalive 20 min, health hourly)",
            Cadence {
                batch_window: 900,
                keepalive: 1200,
                health: 3600,
            },
        ),
    ] {
        let tag = format!("run{}", rows.len());
        let mut start = (0, 0);
        let mut run = start_run(
            &rig,
            &tag,
            args.meters,
            args.intervals,
            args.interval_ms,
            cadence,
            || {
                start = lo_counters()?;
                Ok(())
            },
        )
        .await?;
        let limit =
            Duration::from_millis(args.interval_ms * args.intervals) * 3 + Duration::from_secs(60);
        let readings = run.wait_delivered(limit).await?;
        // Let the last Ack and TCP ACKs pass, then read the counters before anything closes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let end = lo_counters()?;
        rows.push(Row {
            what: label.to_owned(),
            bytes: end.0 - start.0,
            packets: end.1 - start.1,
            readings,
        });
        // The ledger of the first run is what MQTT replays.
        if rows.len() == 1 {
            std::fs::copy(&run.ledger, rig.path("ledger.csv"))?;
        }
        drop(run);
    }

    let ledger = read_ledger(&rig.path("ledger.csv"))?;
    rows.extend(mqtt_runs(&rig, &ledger).await?);

    let spark = rows[0].bytes as f64 / rows[0].readings as f64;
    println!("| path | readings | packets | wire bytes | bytes/reading | vs Spark hourly |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for row in &rows {
        let per = row.bytes as f64 / row.readings as f64;
        println!(
            "| {} | {} | {} | {} | {per:.3} | {:.1}x |",
            row.what,
            row.readings,
            row.packets,
            row.bytes,
            per / spark
        );
    }
    println!("goal: <= 1.3 bytes per reading; Spark hourly: {spark:.3}");
    Ok(())
}

/// `(meter_id, timestamp, wh)` per line, grouped by timestamp interval later.
fn read_ledger(path: &Path) -> anyhow::Result<Vec<(String, u64, u64)>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut p = l.split(',');
            let id = p.next().context("ledger line")?.to_owned();
            let ts = p.next().context("ledger line")?.parse()?;
            let wh = p.next().context("ledger line")?.parse()?;
            Ok((id, ts, wh))
        })
        .collect()
}

/// Starts Mosquitto with a mutual-TLS listener inside the namespace and publishes the ledger
/// twice: one message per reading, then one batch per interval.
async fn mqtt_runs(rig: &Rig, ledger: &[(String, u64, u64)]) -> anyhow::Result<Vec<Row>> {
    let port = free_port()?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let conf = rig.path("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\npersistence false\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
             cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n",
            ca = rig.pki.device_ca_cert().display(),
            cert = rig.pki.server_cert().display(),
            key = rig.pki.server_key().display(),
        ),
    )?;
    let log = rig.path("mosquitto.log");
    let mosquitto = which("mosquitto")?;
    let log_file = std::fs::File::create(&log)?;
    let mut broker = tokio::process::Command::new(mosquitto)
        .args(["-c", utf8(&conf)?])
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("start mosquitto (Debian package mosquitto)")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if broker.try_wait()?.is_some() || Instant::now() > deadline {
            bail!(
                "mosquitto did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = Arc::new(spark_tls::client_config(
        &rig.pki.server_ca_cert(),
        &rig.pki.device_cert(GATEWAY),
        &rig.pki.device_key(GATEWAY),
    )?);
    let topic = format!("spark/{GATEWAY}/readings");
    let mut rows = Vec::new();

    // One JSON message per reading.
    let start = lo_counters()?;
    let mut publisher = Publisher::connect(addr, tls.clone(), GATEWAY, 3600).await?;
    for (meter, ts, wh) in ledger {
        let payload = format!(r#"{{"meter":"{meter}","ts":{ts},"wh":{wh}}}"#);
        publisher.publish(&topic, payload.as_bytes()).await?;
    }
    publisher.drain().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = lo_counters()?;
    drop(publisher);
    rows.push(Row {
        what: "MQTT 3.1.1 QoS 1 over mutual TLS, JSON, one message per reading".into(),
        bytes: end.0 - start.0,
        packets: end.1 - start.1,
        readings: ledger.len() as u64,
    });

    // One JSON batch per 15-minute interval.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = lo_counters()?;
    let mut publisher = Publisher::connect(addr, tls, GATEWAY, 3600).await?;
    let mut i = 0;
    while i < ledger.len() {
        let slot = ledger[i].1 / 900;
        let mut payload = format!(r#"{{"interval":{},"readings":["#, slot * 900);
        let mut first = true;
        while i < ledger.len() && ledger[i].1 / 900 == slot {
            let (meter, ts, wh) = &ledger[i];
            if !first {
                payload.push(',');
            }
            first = false;
            payload.push_str(&format!(r#"{{"meter":"{meter}","ts":{ts},"wh":{wh}}}"#));
            i += 1;
        }
        payload.push_str("]}");
        publisher.publish(&topic, payload.as_bytes()).await?;
    }
    publisher.drain().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = lo_counters()?;
    rows.push(Row {
        what: "MQTT 3.1.1 QoS 1 over mutual TLS, JSON, one batch per interval".into(),
        bytes: end.0 - start.0,
        packets: end.1 - start.1,
        readings: ledger.len() as u64,
    });
    broker.kill().await.ok();
    Ok(rows)
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found; install the Debian package {name}")
}

pub async fn rss(args: RssArgs) -> anyhow::Result<()> {
    println!(
        "rss: {} meters x {} intervals, meterd and uplinkd sampled every 100 ms",
        args.meters, args.intervals
    );
    let rig = Rig::new()?;
    let mut run = start_run(
        &rig,
        "rss",
        args.meters,
        args.intervals,
        args.interval_ms,
        Cadence {
            batch_window: 3600,
            keepalive: 3600,
            health: 3600,
        },
        || Ok(()),
    )
    .await?;
    let (mut meterd_max, mut uplinkd_max) = (0u64, 0u64);
    let limit =
        Duration::from_millis(args.interval_ms * args.intervals) * 3 + Duration::from_secs(60);
    let deadline = Instant::now() + limit;
    let readings = loop {
        meterd_max = meterd_max.max(run.meterd.rss_kib().unwrap_or(0));
        uplinkd_max = uplinkd_max.max(run.uplinkd.rss_kib().unwrap_or(0));
        match tokio::time::timeout(Duration::from_millis(100), run.wait_delivered(limit)).await {
            Ok(done) => break done?,
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => bail!("run did not finish in {limit:?}"),
        }
    };
    let meterd_hwm = run.meterd.peak_rss_kib()?;
    let uplinkd_hwm = run.uplinkd.peak_rss_kib()?;
    let ingest_hwm = run.ingest.peak_rss_kib()?;
    println!("| daemon | max VmRSS sampled | VmHWM (peak) | goal |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, max, hwm) in [
        ("spark-meterd", meterd_max, meterd_hwm),
        ("spark-uplinkd", uplinkd_max, uplinkd_hwm),
    ] {
        println!(
            "| {name} | {:.1} MiB | {:.1} MiB | <= 10 MB |",
            max as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    println!(
        "({readings} readings delivered; spark-ingest peak {:.1} MiB, for reference)",
        ingest_hwm as f64 / 1024.0
    );
    Ok(())
}
