//! meterd against the simulator on a private D-Bus bus: every generated reading reaches a
//! cursor reader exactly once, over a socket and a pty, through damaged frames, radio outages,
//! reader crashes and `kill -9` of meterd.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use spark_meterd::link::RadioAddress;
use spark_meterd::sim::{Faults, SimRng, Simulator};

use common::{Binary, InProcess, Reader, Rig, SimRun, assert_exactly_once, run_options};

const LONG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_delivers_every_reading_exactly_once() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let options = run_options(&rig, 40, 30, 11);
    let meter_ids = Simulator::new(options.sim.clone()).meter_ids();
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    let mut available = reader.proxy.receive_readings_available().await.unwrap();

    let sim = SimRun::unix(options, &socket, Faults::none());
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);

    let signal = tokio::time::timeout(LONG, available.next())
        .await
        .unwrap()
        .unwrap();
    assert!(signal.args().unwrap().position > 0);
    assert_eq!(reader.proxy.meters().await.unwrap(), meter_ids);
    assert_eq!(reader.proxy.head().await.unwrap(), total as u64);
    assert!(reader.proxy.radio_online().await.unwrap());
    let alarms: u64 = reader.proxy.inner().get_property("Alarms").await.unwrap();
    assert!(alarms > 0, "the sim raised alarms at 1 %");
    // LastReadings: per meter, the newest by the meter's clock of what the reader got (late
    // readings arrive after newer ones), in roster order.
    let mut newest: std::collections::HashMap<&str, &spark_dbus::MeterReading> =
        std::collections::HashMap::new();
    for r in &reader.got {
        let e = newest.entry(&r.meter_id).or_insert(r);
        if r.timestamp >= e.timestamp {
            *e = r;
        }
    }
    let expected: Vec<spark_dbus::MeterReading> = meter_ids
        .iter()
        .filter_map(|id| newest.get(id.as_str()).map(|r| (*r).clone()))
        .collect();
    assert!(expected.len() > 30, "most of the 40 meters were read");
    assert_eq!(reader.proxy.last_readings().await.unwrap(), expected);
    // The reader's last cursor releases everything; the last readings stay.
    reader.fetch_once(10).await.unwrap();
    assert_eq!(reader.proxy.buffered().await.unwrap(), 0);
    assert_eq!(reader.proxy.last_readings().await.unwrap(), expected);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_delivers_every_reading_exactly_once() {
    common::logs();
    let rig = Rig::new();
    let options = run_options(&rig, 30, 25, 12);
    let sim = SimRun::pty(options, Faults::none());
    let tty = sim.pty_path.clone().unwrap();
    let meterd = InProcess::start(rig.config(RadioAddress::Tty(tty)));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_frames_are_skipped_and_nothing_bad_is_stored() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let options = run_options(&rig, 40, 25, 13);
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    let sim = SimRun::unix(options, &socket, Faults::new(13, 0.03, 0.02));
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);
    let errors: u64 = reader
        .proxy
        .inner()
        .get_property("RadioErrors")
        .await
        .unwrap();
    assert!(errors > 0, "damaged frames must be counted");
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_frames_over_a_pty_are_skipped_too() {
    common::logs();
    let rig = Rig::new();
    let options = run_options(&rig, 30, 20, 14);
    let sim = SimRun::pty(options, Faults::new(14, 0.03, 0.03));
    let meterd = InProcess::start(rig.config(RadioAddress::Tty(sim.pty_path.clone().unwrap())));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_crashes_before_storing_fetches_the_same_again() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let options = run_options(&rig, 20, 10, 15);
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    let conn = rig.client().await;
    let reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    let sim = SimRun::unix(options, &socket, Faults::none());
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest;

    // Fetched but "crashed" before storing: the same cursor gives the same readings.
    let first = reader.proxy.fetch(0, 50).await.unwrap();
    assert_eq!(first.len(), 50);
    let again = reader.proxy.fetch(0, 50).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(reader.proxy.buffered().await.unwrap(), total);
    // Stored through 30 this time: those are released, the rest comes again.
    let next = reader.proxy.fetch(first[29].position, 50).await.unwrap();
    assert_eq!(next[..20], first[30..]);
    assert_eq!(reader.proxy.buffered().await.unwrap(), total - 30);
    // A restart of meterd changes nothing for the reader.
    meterd.stop().await;
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    reader.wait_ready(LONG).await;
    let after = reader.proxy.fetch(first[29].position, 50).await.unwrap();
    assert_eq!(after, next);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radio_outage_shows_offline_then_recovers() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let options = run_options(&rig, 20, 40, 16);
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    assert!(!reader.proxy.radio_online().await.unwrap());
    let sim = SimRun::unix(options, &socket, Faults::none());
    reader.wait_online(true, LONG).await;

    // The module goes away for a second (the socket disappears), readings keep coming into it.
    *sim.pause.lock().unwrap() = Some(Duration::from_millis(1000));
    sim.module.drop_session();
    reader.wait_online(false, LONG).await;
    reader.wait_online(true, LONG).await;
    assert!(sim.module.state().sessions >= 2);

    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_meterd_at_random_moments_loses_and_doubles_nothing() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let mut options = run_options(&rig, 60, 60, 17);
    options.interval = Duration::from_millis(50);
    let config = rig.config(RadioAddress::Unix(socket.clone()));
    let config_path = Binary::write_config(&rig, &config);
    let log = rig.path("meterd.log");
    let mut meterd = Binary::start(&config_path, &log);
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    let sim = SimRun::unix(options, &socket, Faults::none());

    let mut rng = SimRng::new(17);
    for _ in 0..5 {
        // The reader keeps fetching while meterd runs, and is cut off mid-call by the kills.
        let until = tokio::time::Instant::now() + Duration::from_millis(150 + rng.below(400));
        while tokio::time::Instant::now() < until {
            let _ = reader.fetch_once(1 + rng.below(200) as u32).await;
            tokio::time::sleep(Duration::from_millis(rng.below(30))).await;
        }
        meterd.kill9();
        meterd = Binary::start(&config_path, &log);
        reader.wait_ready(LONG).await;
    }
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest as usize;
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&rig.ledger(), &reader.got);
    assert!(sim.module.state().sessions >= 6, "every restart reconnects");
    drop(meterd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_binaries_over_a_pty() {
    common::logs();
    use std::io::BufRead;
    let rig = Rig::new();
    let ledger = rig.ledger();
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_spark-meter-sim"))
        .args([
            "--pty",
            "--meters",
            "25",
            "--intervals",
            "12",
            "--interval-ms",
            "40",
        ])
        .args([
            "--seed",
            "18",
            "--miss-rate",
            "0.05",
            "--reset-rate",
            "0.01",
        ])
        .arg("--ledger")
        .arg(&ledger)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let tty = line
        .trim()
        .strip_prefix("pty: ")
        .expect("the sim prints its pty");
    let config = rig.config(RadioAddress::Tty(tty.into()));
    let _meterd = Binary::start(
        &Binary::write_config(&rig, &config),
        &rig.path("meterd.log"),
    );
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;

    // The sim exits by itself once meterd has acknowledged everything.
    let deadline = std::time::Instant::now() + LONG;
    let status = loop {
        if let Some(status) = sim.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = sim.kill();
            panic!("the simulator did not finish within {LONG:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success());
    let total = spark_meterd::sim::read_ledger(&ledger).unwrap().len();
    reader.fetch_until(total, LONG).await;
    assert_exactly_once(&ledger, &reader.got);
    assert_eq!(reader.proxy.meters().await.unwrap().len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_reading_is_skipped_not_stored_and_does_not_stall_the_stream() {
    common::logs();
    use spark_meterd::sim::SimReading;
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let mut options = run_options(&rig, 5, 1, 19);
    options.ledger = None;
    let meterd = InProcess::start(rig.config(RadioAddress::Unix(socket.clone())));
    let conn = rig.client().await;
    let mut reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    let sim = SimRun::unix(options, &socket, Faults::none());
    sim.wait_all_acked(LONG).await;
    let before = sim.module.state().newest as usize;
    let reading = |id: &str, wh| SimReading {
        meter_id: id.into(),
        timestamp: 1_767_600_000,
        wh,
        flags: 0,
    };
    // The module sends a meter id with a control character: its CRC is right, so a resend
    // would bring the same bytes.
    sim.module.take(
        vec![
            reading("OK-1", 10),
            reading("BAD\u{7}", 20),
            reading("OK-2", 30),
        ],
        Vec::new(),
    );
    sim.wait_all_acked(LONG).await;
    reader.fetch_until(before + 2, LONG).await;
    let last: Vec<_> = reader.got[before..]
        .iter()
        .map(|r| (r.meter_id.as_str(), r.wh))
        .collect();
    assert_eq!(last, [("OK-1", 10), ("OK-2", 30)]);
    let errors: u64 = reader
        .proxy
        .inner()
        .get_property("RadioErrors")
        .await
        .unwrap();
    assert!(errors >= 1);
    meterd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_the_oldest_readings_are_dropped_and_counted() {
    common::logs();
    let rig = Rig::new();
    let socket = rig.path("radio.sock");
    let options = run_options(&rig, 20, 10, 20);
    let mut config = rig.config(RadioAddress::Unix(socket.clone()));
    config.max_buffered = 50;
    let meterd = InProcess::start(config);
    let conn = rig.client().await;
    let reader = Reader::new(&conn).await;
    reader.wait_ready(LONG).await;
    // Nobody fetches: the buffer fills up to its cap and then keeps the newest.
    let sim = SimRun::unix(options, &socket, Faults::none());
    sim.wait_all_acked(LONG).await;
    let total = sim.module.state().newest;
    assert!(total > 100);
    assert_eq!(reader.proxy.buffered().await.unwrap(), 50);
    assert_eq!(reader.proxy.head().await.unwrap(), total);
    let dropped: u64 = reader.proxy.inner().get_property("Dropped").await.unwrap();
    assert_eq!(dropped, total - 50);
    let kept = reader.proxy.fetch(0, 100).await.unwrap();
    assert_eq!(kept.len(), 50);
    assert_eq!(kept[0].position, total - 49);
    let ledger = spark_meterd::sim::read_ledger(&rig.ledger()).unwrap();
    let newest: Vec<_> = ledger[ledger.len() - 50..]
        .iter()
        .map(|(id, ts, wh)| (id.clone(), *ts, *wh))
        .collect();
    let got: Vec<_> = kept
        .iter()
        .map(|r| (r.meter_id.clone(), r.timestamp, r.wh))
        .collect();
    assert_eq!(got, newest);
    meterd.stop().await;
}
