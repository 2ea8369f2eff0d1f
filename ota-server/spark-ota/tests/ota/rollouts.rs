//! Staged rollouts through the real server: the spark-rollout engine behind check-in, status
//! reports and the tick, on a `ManualClock` (the test moves time; `tick-secs` is an hour so only
//! the test's `POST /v1/rollouts/tick` calls evaluate gates) and a telemetry source of the
//! test's choosing. Devices are real mutual-TLS connections with their own certificates.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use hyper::StatusCode;
use spark_ota::clock::ServerClock;
use spark_ota::rollouts::RolloutStatus;
use spark_ota::telemetry::{LastSeen, LastSeenFuture, TelemetrySource};
use spark_rollout::jiff::{SignedDuration, Timestamp};
use spark_rollout::{ManualClock, Phase, RolloutEvent};

use crate::common::*;

const START: &str = "2026-11-30T00:00:00Z";

/// Telemetry the test controls: devices listed in `online` are seen "now" at every read.
#[derive(Debug, Default)]
pub struct FakeTelemetry {
    pub clock: Option<ServerClock>,
    pub online: Mutex<Vec<String>>,
    pub last: Mutex<HashMap<String, Timestamp>>,
}

impl TelemetrySource for FakeTelemetry {
    fn last_seen(&self) -> LastSeenFuture<'_> {
        let mut last = self.last.lock().unwrap();
        if let Some(c) = &self.clock {
            for d in self.online.lock().unwrap().iter() {
                last.insert(d.clone(), c.now());
            }
        }
        let out: LastSeen = last.clone();
        Box::pin(async move { Ok(out) })
    }
}

/// Server, admin client, devices and a release of 2.0.0 for devices on 1.0.0.
struct Rig {
    pki: Pki,
    db: TestDb,
    server: TestServer,
    admin: spark_ota::client::AdminClient,
    clock: Arc<ManualClock>,
    telemetry: Arc<FakeTelemetry>,
    release: i64,
    conns: BTreeMap<String, DeviceConn>,
    seq: HashMap<String, u64>,
    _work: tempfile::TempDir,
}

const REGIONS: [(&str, &str); 3] = [
    ("eu", "Europe/Berlin"),
    ("us", "America/New_York"),
    ("jp", "Asia/Tokyo"),
];

impl Rig {
    async fn new(kind: Kind, n: usize) -> Rig {
        init_tracing();
        let pki = Pki::new();
        let db = TestDb::new(kind).await;
        Rig::start(pki, db, n).await
    }

    async fn start(pki: Pki, db: TestDb, n: usize) -> Rig {
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let (server, telemetry) = Rig::server(&pki, &db, &clock).await;
        let admin = server.admin(&pki).await;
        let work = tempfile::tempdir().unwrap();
        let up = pki.upload_release(&admin, work.path(), "2.0.0").await;
        let rig = Rig {
            pki,
            db,
            server,
            admin,
            clock,
            telemetry,
            release: up.release,
            conns: BTreeMap::new(),
            seq: HashMap::new(),
            _work: work,
        };
        // Registered by an admin: hardware revision, region and site time zone.
        for i in 0..n {
            let (region, tz) = REGIONS[(i / 3) % REGIONS.len()];
            rig.set(
                &dev(i),
                serde_json::json!({
                    "hardware_rev": format!("rev-{}", ["a", "b", "c"][i % 3]),
                    "tags": {"region": region, "site": format!("{region}-{}", i / 9)},
                    "time_zone": tz,
                }),
            )
            .await;
        }
        rig
    }

    async fn server(
        pki: &Pki,
        db: &TestDb,
        clock: &Arc<ManualClock>,
    ) -> (TestServer, Arc<FakeTelemetry>) {
        let data_dir = tempfile::tempdir().unwrap();
        let text =
            TestServer::config_text(pki, db, data_dir.path(), "[rollouts]\ntick-secs = 3600\n");
        let telemetry = Arc::new(FakeTelemetry {
            clock: Some(ServerClock::custom(clock.clone())),
            ..FakeTelemetry::default()
        });
        let server = TestServer::start_hooked(
            &text,
            data_dir,
            Some(ServerClock::custom(clock.clone())),
            Some(Some(telemetry.clone() as Arc<dyn TelemetrySource>)),
        )
        .await;
        (server, telemetry)
    }

    async fn set(&self, device: &str, attrs: serde_json::Value) {
        let _: serde_json::Value = self
            .admin
            .put(&format!("/v1/devices/{device}/attributes"), &attrs)
            .await
            .unwrap();
    }

    async fn conn(&mut self, device: &str) -> &mut DeviceConn {
        if !self.conns.contains_key(device) {
            let c = DeviceConn::connect(self.server.device_addr, self.pki.device_tls(device))
                .await
                .unwrap();
            self.conns.insert(device.to_owned(), c);
        }
        self.conns.get_mut(device).unwrap()
    }

    /// The device polls on `version`; true when offered a release.
    async fn poll(&mut self, device: &str, version: &str) -> bool {
        self.offered(device, version).await.is_some()
    }

    /// The device polls on `version`: the signed release offered, if any.
    async fn offered(&mut self, device: &str, version: &str) -> Option<String> {
        let path = format!("/v1/devices/{device}/release?current-version={version}");
        let a = self.conn(device).await.get(&path, &[]).await;
        match a.status {
            StatusCode::OK => Some(String::from_utf8(a.body.to_vec()).unwrap()),
            StatusCode::NO_CONTENT => None,
            other => panic!("{device}: unexpected {other}: {:?}", a.body),
        }
    }

    /// The agent reports `reason` for release 2.0.0, coming from 1.0.0.
    async fn report(&mut self, device: &str, reason: &str, to: &str) {
        self.report_for(device, reason, to, "1.0.0", "2.0.0").await;
    }

    /// The agent reports `reason` for release `release`, running `from` until it commits.
    async fn report_for(
        &mut self,
        device: &str,
        reason: &str,
        to: &str,
        from: &str,
        release: &str,
    ) {
        let seq = {
            let s = self.seq.entry(device.to_owned()).or_insert(0);
            *s += 1;
            *s
        };
        let current = if reason == "committed" { release } else { from };
        let body = report(device, seq, reason, to, current, release);
        let a = self
            .conn(device)
            .await
            .post_json(&format!("/v1/devices/{device}/update-status"), &body)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.body);
    }

    async fn update(&mut self, device: &str, ok: bool) {
        self.report(device, "offered", "downloading").await;
        if ok {
            self.report(device, "committed", "idle").await;
        } else {
            self.report(device, "install-failed", "failed").await;
        }
    }

    async fn create(&self, body: serde_json::Value) -> RolloutStatus {
        self.admin.post("/v1/rollouts", &body).await.unwrap()
    }

    async fn tick(&self) -> Vec<RolloutEvent> {
        let v: serde_json::Value = self
            .admin
            .post("/v1/rollouts/tick", &serde_json::json!({}))
            .await
            .unwrap();
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| serde_json::from_value(e["event"].clone()).unwrap())
            .collect()
    }

    async fn status(&self, id: &str) -> RolloutStatus {
        self.admin.get(&format!("/v1/rollouts/{id}")).await.unwrap()
    }

    /// Device → wave (0-based), as the engine assigned them.
    async fn waves(&self, id: &str) -> BTreeMap<String, usize> {
        let d: BTreeMap<String, serde_json::Value> = self
            .admin
            .get(&format!("/v1/rollouts/{id}/devices"))
            .await
            .unwrap();
        d.into_iter()
            .map(|(k, v)| (k, v["wave"].as_u64().unwrap() as usize))
            .collect()
    }

    fn advance(&self, by: SignedDuration) {
        self.clock.advance(by);
    }

    fn at(&self, offset: SignedDuration) -> Timestamp {
        START
            .parse::<Timestamp>()
            .unwrap()
            .checked_add(offset)
            .unwrap()
    }

    async fn stop(self) {
        self.server.stop().await;
        self.db.drop_schema().await;
    }
}

fn dev(i: usize) -> String {
    format!("GW-{i:03}")
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

/// The `fast`-shaped plan over 27 devices: wave 1 opens at once, wave 2 not before its offset
/// and only after wave 1's sample and soak, wave 3 at 6 h; every device updated, rollout done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_open_on_schedule() {
    let mut rig = Rig::new(Kind::Sqlite, 27).await;
    let all: Vec<String> = (0..27).map(dev).collect();
    *rig.telemetry.online.lock().unwrap() = all.clone();
    let st = rig
        .create(serde_json::json!({
            "release": rig.release, "id": "w1",
            "plan": "10%@0d,50%@2h,100%@6h",
            "gates": {"preset": "fast", "min_sample": 3, "soak": "30m",
                      "telemetry": {"max_silence": "PT15M", "max_silent_bp": 500}},
        }))
        .await;
    assert_eq!(st.state, "active");
    assert_eq!(st.waves.len(), 3);
    assert_eq!(st.waves[0].stage, "open");
    let waves = rig.waves("w1").await;
    assert_eq!(waves.len(), 27, "every registered device is targeted");
    // Stratified: 3 hardware revisions × 3 regions = 9 strata of 3; ceil(10% × 3) = 1 each.
    let in_wave = |k: usize| -> Vec<String> {
        waves
            .iter()
            .filter(|(_, w)| **w == k)
            .map(|(d, _)| d.clone())
            .collect()
    };
    assert_eq!(in_wave(0).len(), 9);

    // Only wave 1 is offered.
    for d in &all {
        assert_eq!(rig.poll(d, "1.0.0").await, waves[d] == 0, "{d}");
    }
    for d in in_wave(0) {
        rig.update(&d, true).await;
    }
    rig.advance(mins(5));
    let ev = rig.tick().await;
    assert!(
        ev.iter()
            .any(|e| matches!(e, RolloutEvent::SoakStarted { wave: 0, .. })),
        "{ev:?}"
    );
    rig.advance(mins(30));
    let ev = rig.tick().await;
    assert!(
        ev.iter()
            .any(|e| matches!(e, RolloutEvent::WavePassed { wave: 0, .. })),
        "{ev:?}"
    );
    // Wave 1 passed at 35 min, but wave 2 is planned at 2 h.
    for d in in_wave(1) {
        assert!(!rig.poll(&d, "1.0.0").await, "{d} before 2h");
    }
    rig.clock.set(rig.at(SignedDuration::from_hours(2)));
    let ev = rig.tick().await;
    assert!(
        ev.contains(&RolloutEvent::WaveOpened {
            wave: 1,
            at: rig.at(SignedDuration::from_hours(2))
        }),
        "{ev:?}"
    );
    for d in in_wave(1) {
        assert!(rig.poll(&d, "1.0.0").await, "{d}");
        rig.update(&d, true).await;
    }
    for d in in_wave(2) {
        assert!(!rig.poll(&d, "1.0.0").await, "{d} before 6h");
    }
    rig.advance(mins(5));
    rig.tick().await;
    rig.advance(mins(30));
    rig.tick().await;
    let st = rig.status("w1").await;
    assert_eq!(st.waves[1].stage, "passed", "{:?}", st.waves[1]);
    assert_eq!(st.waves[2].stage, "pending");
    assert!(
        st.waves[2].gate.starts_with("pending until"),
        "{}",
        st.waves[2].gate
    );

    rig.clock.set(rig.at(SignedDuration::from_hours(6)));
    let ev = rig.tick().await;
    assert!(
        ev.contains(&RolloutEvent::WaveOpened {
            wave: 2,
            at: rig.at(SignedDuration::from_hours(6))
        }),
        "{ev:?}"
    );
    for d in in_wave(2) {
        assert!(rig.poll(&d, "1.0.0").await, "{d}");
        rig.update(&d, true).await;
    }
    rig.advance(mins(5));
    rig.tick().await;
    rig.advance(mins(30));
    rig.tick().await;
    let st = rig.status("w1").await;
    assert_eq!(st.state, "done", "{st:?}");
    assert_eq!(st.waves.iter().map(|w| w.updated).sum::<u64>(), 27);
    // An updated device is not offered again.
    assert!(!rig.poll(&dev(0), "2.0.0").await);
    // The CLI's text view: one line per wave with failure rate and gate state.
    let text = spark_ota::cli::status_text(&st);
    assert!(text.contains("wave 1 (10%): 9/9"), "{text}");
    assert!(text.contains("rate 0.00%"), "{text}");
    assert!(text.contains("gate: passed at"), "{text}");
    rig.stop().await;
}

/// A release failing on 3 of the 10 devices that are online, in a wave of 30 (20 never heard
/// from). The 7 good reports come first; at the second failure 2/9 reported (22 %) is over the
/// 20 % threshold while 2/30 of the wave (6.7 %) is not: offline devices do not dilute the rate,
/// and the rollout pauses itself with its reason. Then manual resume (the failures seen are
/// accepted), a new failure pauses again, abort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_release_pauses_itself_offline_devices_do_not_dilute() {
    let mut rig = Rig::new(Kind::Sqlite, 30).await;
    let st = rig
        .create(serde_json::json!({
            "release": rig.release, "id": "bad",
            "gates": {"max_failure_bp": 2000, "min_sample": 5, "telemetry": null},
        }))
        .await;
    assert_eq!(st.waves[0].devices, 30);
    // Devices 0..10 are online; 0, 1, 2 fail.
    for i in 0..10 {
        assert!(rig.poll(&dev(i), "1.0.0").await);
    }
    for i in 3..10 {
        rig.update(&dev(i), true).await;
    }
    for i in 0..3 {
        rig.update(&dev(i), false).await;
    }
    let st = rig.status("bad").await;
    assert_eq!(st.state, "paused", "{st:?}");
    let Some(Phase::Paused { reason }) = &st.phase else {
        panic!("{st:?}")
    };
    assert_eq!(reason.cause.code(), "failure_rate");
    let cause = serde_json::to_value(&reason.cause).unwrap();
    assert_eq!(cause["failed"], 2);
    assert_eq!(cause["reported"], 9);
    assert_eq!(cause["wave_size"], 30);
    let text = st.reason.clone().unwrap();
    assert!(
        text.contains("2 of 9 devices that reported failed (wave of 30); the limit is 20%"),
        "{text}"
    );
    assert!(
        st.waves[0].gate.starts_with("tripped: "),
        "{}",
        st.waves[0].gate
    );
    // The third failure arrived while paused: the wave's rate now is 3 of 10.
    assert_eq!(st.waves[0].failure_rate_bp, Some(3000));
    // Paused: a device not offered yet gets nothing.
    assert!(!rig.poll(&dev(20), "1.0.0").await);
    // Resume accepts the 3 failures seen: offers again.
    spark_ota::cli::rollout_action(&rig.admin, "bad", "resume", None)
        .await
        .unwrap();
    assert!(rig.poll(&dev(20), "1.0.0").await);
    // A new failure while the rate is still over the threshold pauses it again.
    rig.update(&dev(20), false).await;
    assert_eq!(rig.status("bad").await.state, "paused");
    // Abort: final.
    spark_ota::cli::rollout_action(&rig.admin, "bad", "abort", Some("bad driver"))
        .await
        .unwrap();
    assert!(!rig.poll(&dev(21), "1.0.0").await);
    let err = spark_ota::cli::rollout_action(&rig.admin, "bad", "resume", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("aborted"), "{err}");
    let st = rig.status("bad").await;
    assert_eq!(st.state, "aborted");
    assert_eq!(st.reason.as_deref(), Some("bad driver"));
    rig.stop().await;
}

/// The penalty box: after a failure the device waits `retry_after`; after `max_failures` in a
/// row it is held for `duration`, then tried again. (No gate trips: the threshold is 100 %.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn penalty_box_holds_a_repeatedly_failing_device() {
    let mut rig = Rig::new(Kind::Sqlite, 3).await;
    rig.create(serde_json::json!({
        "release": rig.release, "id": "pb",
        "gates": {"max_failure_bp": 10000, "telemetry": null},
        "penalty": {"retry_after": "10m", "max_failures": 2, "duration": "2h"},
    }))
    .await;
    let d = dev(0);
    assert!(rig.poll(&d, "1.0.0").await);
    rig.update(&d, false).await;
    // Failed: not before retry_after (the old rule "never again" is gone).
    assert!(!rig.poll(&d, "1.0.0").await);
    rig.advance(mins(10));
    assert!(rig.poll(&d, "1.0.0").await);
    rig.update(&d, false).await;
    // Second failure in a row: the penalty box, 2 h.
    rig.advance(mins(10));
    assert!(!rig.poll(&d, "1.0.0").await);
    let st = rig.status("pb").await;
    assert_eq!(st.waves[0].penalty_box, 1, "{:?}", st.waves[0]);
    assert_eq!(st.state, "active");
    rig.advance(SignedDuration::from_hours(2));
    assert!(rig.poll(&d, "1.0.0").await);
    // An interrupted download counts toward the box, not against the release.
    rig.report(&d, "download-failed", "failed").await;
    let st = rig.status("pb").await;
    assert_eq!(
        st.waves[0].failed, 1,
        "the earlier failure stays; no new one"
    );
    rig.stop().await;
}

/// Maintenance windows in each site's local time: 02:00-04:00 opens at 01:00 UTC in Berlin,
/// 07:00 UTC in New York and 17:00 UTC in Tokyo (late November).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_window_in_site_time() {
    let mut rig = Rig::new(Kind::Sqlite, 9).await;
    rig.create(serde_json::json!({
        "release": rig.release, "id": "mw",
        "gates": {"telemetry": null},
        "windows": [{"start": "02:00", "end": "04:00"}],
    }))
    .await;
    // dev 0-2 Berlin, 3-5 New York, 6-8 Tokyo.
    let (ber, nyc, tyo) = (dev(0), dev(3), dev(6));
    for d in [&ber, &nyc, &tyo] {
        assert!(!rig.poll(d, "1.0.0").await, "{d} at 00:00 UTC");
    }
    rig.clock.set(rig.at(mins(60)));
    assert!(rig.poll(&ber, "1.0.0").await);
    assert!(!rig.poll(&nyc, "1.0.0").await);
    assert!(!rig.poll(&tyo, "1.0.0").await);
    rig.clock.set(rig.at(mins(7 * 60)));
    assert!(rig.poll(&nyc, "1.0.0").await);
    assert!(!rig.poll(&tyo, "1.0.0").await);
    rig.clock.set(rig.at(mins(17 * 60 + 30)));
    assert!(rig.poll(&tyo, "1.0.0").await);
    // Berlin at 18:30 local: outside its window again.
    assert!(!rig.poll(&dev(1), "1.0.0").await);
    rig.stop().await;
}

/// Updated units that stop sending telemetry pause the rollout (telemetry gate), naming them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_units_pause_the_rollout() {
    let mut rig = Rig::new(Kind::Sqlite, 10).await;
    // Devices 0..6 keep sending telemetry; 6..10 go silent after updating.
    *rig.telemetry.online.lock().unwrap() = (0..6).map(dev).collect();
    rig.create(serde_json::json!({
        "release": rig.release, "id": "tg",
        "gates": {"min_sample": 3, "soak": "30m",
                  "telemetry": {"max_silence": "PT10M", "max_silent_bp": 2000}},
    }))
    .await;
    for i in 0..10 {
        assert!(rig.poll(&dev(i), "1.0.0").await);
        rig.update(&dev(i), true).await;
    }
    rig.tick().await;
    rig.advance(mins(15));
    let ev = rig.tick().await;
    assert!(
        ev.iter().any(|e| matches!(e, RolloutEvent::Paused { .. })),
        "{ev:?}"
    );
    let st = rig.status("tg").await;
    let Some(Phase::Paused { reason }) = &st.phase else {
        panic!("{st:?}")
    };
    assert_eq!(reason.cause.code(), "telemetry_silent");
    let cause = serde_json::to_value(&reason.cause).unwrap();
    assert_eq!(cause["silent"], 4);
    let examples: Vec<String> = serde_json::from_value(cause["examples"].clone()).unwrap();
    assert_eq!(examples, (6..10).map(dev).collect::<Vec<_>>());
    assert_eq!(st.waves[0].silent, 4);
    rig.stop().await;
}

/// The engine state lives in the database: two server nodes on one database see each other's
/// changes (revision-checked writes, caches refreshed), and a restarted server carries on.
async fn state_is_persisted_and_shared(kind: Kind) {
    let mut rig = Rig::new(kind, 12).await;
    rig.create(serde_json::json!({
        "release": rig.release, "id": "p",
        "plan": "50%@0d,100%@1h",
        "gates": {"min_sample": 2, "max_failure_bp": 2000, "telemetry": null},
    }))
    .await;
    let waves = rig.waves("p").await;
    let first: Vec<String> = waves
        .iter()
        .filter(|(_, w)| **w == 0)
        .map(|(d, _)| d.clone())
        .collect();
    assert!(rig.poll(&first[0], "1.0.0").await);
    rig.update(&first[0], true).await;

    // A second node on the same database and clock.
    let (node2, _) = Rig::server(&rig.pki, &rig.db, &rig.clock).await;
    let admin2 = node2.admin(&rig.pki).await;
    let st: RolloutStatus = admin2.get("/v1/rollouts/p").await.unwrap();
    assert_eq!(st.waves[0].updated, 1);
    spark_ota::cli::rollout_action(&admin2, "p", "pause", Some("node 2"))
        .await
        .unwrap();
    // Node 1 sees the pause at once.
    assert!(!rig.poll(&first[1], "1.0.0").await);
    spark_ota::cli::rollout_action(&rig.admin, "p", "resume", None)
        .await
        .unwrap();
    assert!(rig.poll(&first[1], "1.0.0").await);
    rig.update(&first[1], false).await;
    // 1 failure of 2 reported > 20 %: paused, seen by node 2.
    let st: RolloutStatus = admin2.get("/v1/rollouts/p").await.unwrap();
    assert_eq!(st.state, "paused");
    node2.stop().await;

    // Restart node 1: the state comes back from the database.
    let before = rig.status("p").await;
    let Rig {
        pki,
        db,
        server,
        clock,
        ..
    } = rig;
    server.stop().await;
    let (server, _) = Rig::server(&pki, &db, &clock).await;
    let admin = server.admin(&pki).await;
    let after: RolloutStatus = admin.get("/v1/rollouts/p").await.unwrap();
    assert_eq!(after.state, "paused");
    assert_eq!(after.reason, before.reason);
    assert_eq!(after.waves, before.waves);
    let events: Vec<RolloutEvent> = admin.get("/v1/rollouts/p/events").await.unwrap();
    assert!(matches!(
        events[0],
        RolloutEvent::WaveOpened { wave: 0, .. }
    ));
    assert!(matches!(events.last(), Some(RolloutEvent::Paused { .. })));
    server.stop().await;
    db.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_persisted_and_shared_sqlite() {
    state_is_persisted_and_shared(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_persisted_and_shared_postgres() {
    state_is_persisted_and_shared(Kind::Postgres).await;
}

/// Bad rollout requests: a clear 4xx, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_requests_are_refused() {
    let rig = Rig::new(Kind::Sqlite, 1).await;
    for (body, expect) in [
        (
            serde_json::json!({"release": rig.release, "plan": "50%@0d"}),
            "last wave must be 100%",
        ),
        (
            serde_json::json!({"release": rig.release, "gates": {"preset": "slow"}}),
            "use weekly or fast",
        ),
        (
            serde_json::json!({"release": rig.release, "gates": {"soak": "10m", "telemetry": {"max_silence": "PT1H", "max_silent_bp": 500}}}),
            "longer than the soak",
        ),
        (
            serde_json::json!({"release": rig.release, "kind": "rollback"}),
            "not signed as an allowed downgrade",
        ),
        (
            serde_json::json!({"release": rig.release, "windows": [{"start": "02:00", "end": "02:00"}]}),
            "same time",
        ),
        (
            serde_json::json!({"release": rig.release, "concurrency_cap": 0}),
            "concurrency_cap 0",
        ),
    ] {
        let err = rig
            .admin
            .post::<serde_json::Value>("/v1/rollouts", &body)
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expect), "{body}: {err}");
    }
    let err = rig
        .admin
        .put::<serde_json::Value>(
            "/v1/devices/GW-X/attributes",
            &serde_json::json!({"time_zone": "Mars/Olympus"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    assert!(rig.server.store.rollouts().await.unwrap().is_empty());
    assert!(rig.server.store.device("GW-X").await.unwrap().is_none());

    // A rollout row from before the engine (as migration 3 leaves it) still lists.
    let legacy = spark_ota::store::RolloutRecord {
        id: "old".into(),
        release_id: rig.release,
        state: "aborted".into(),
        reason: Some("created before the rollout engine; create a new rollout".into()),
        plan: None,
        created_at: 0,
        updated_at: 0,
        revision: 0,
    };
    assert!(rig.server.store.insert_rollout(&legacy).await.unwrap());
    let list: Vec<RolloutStatus> = rig.admin.get("/v1/rollouts").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, "aborted");
    assert!(list[0].waves.is_empty());
    assert!(rig.tick().await.is_empty());
    rig.stop().await;
}

/// The version of the signed release a device was offered.
fn offered_version(signed: &str) -> String {
    spark_release::SignedRelease::from_json(signed)
        .unwrap()
        .manifest()
        .version
        .to_string()
}

/// A rollback rollout that works: 2.0.0 goes to devices through a forward rollout, then 1.0.0,
/// signed as an allowed downgrade, is rolled back to. Devices on 2.0.0 (known at creation, or
/// joining later) are offered 1.0.0's signed manifest byte for byte; devices on 1.0.0 or older
/// are offered nothing; `committed` reports count them updated and the rollout finishes. The
/// forward rollout, still live, does not offer 2.0.0 again to the devices rolled back (nor
/// count their return to 1.0.0 as failures), until a forward rollout created after the
/// rollback (a fixed 2.1.0) moves them on, which the rollback in turn does not undo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_rollout_moves_updated_devices_back() {
    let mut rig = Rig::new(Kind::Sqlite, 7).await;
    let gates = serde_json::json!({"min_sample": 4, "soak": "30m", "telemetry": null});
    rig.create(serde_json::json!({"release": rig.release, "id": "fw", "gates": gates}))
        .await;
    for i in 0..4 {
        assert!(rig.poll(&dev(i), "1.0.0").await);
        rig.update(&dev(i), true).await;
        assert!(!rig.poll(&dev(i), "2.0.0").await);
    }
    rig.tick().await;
    rig.advance(mins(30));
    rig.tick().await;
    assert_eq!(rig.status("fw").await.state, "done");

    // 1.0.0 again, signed as an allowed downgrade (spark-keys sign-release --allow-downgrade).
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("v1.raucb");
    rig.pki.bundle("1.0.0", 20_000, &bundle);
    let signed = rig
        .pki
        .sign_release_with(&bundle, "1.0.0", &rig.pki.pki.release_key(), |m| {
            m.allow_downgrade = true
        });
    let rel = work.path().join("v1.release.json");
    std::fs::write(&rel, signed.to_json()).unwrap();
    let v1 = rig
        .admin
        .upload(&bundle, &rel, &indicatif::ProgressBar::hidden())
        .await
        .unwrap();
    rig.advance(mins(1));
    let st = rig
        .create(serde_json::json!({
            "release": v1.release, "id": "rb", "kind": "rollback", "gates": gates,
        }))
        .await;
    assert_eq!(st.kind, "rollback");
    assert_eq!(st.version, "1.0.0");
    // Targeted: the 4 devices known to run 2.0.0 (devices of unknown version never are).
    assert_eq!(st.waves[0].devices, 4, "{st:?}");

    for i in 0..4 {
        let offer = rig.offered(&dev(i), "2.0.0").await;
        assert_eq!(
            offer.as_deref(),
            Some(signed.to_json().as_str()),
            "{}",
            dev(i)
        );
    }
    // Devices on 1.0.0 or older get nothing: not 1.0.0 (not a downgrade for them), and not
    // 2.0.0 from the forward rollout the rollback supersedes.
    assert_eq!(rig.offered(&dev(4), "1.0.0").await, None);
    assert_eq!(rig.offered(&dev(5), "0.9.0").await, None);
    // A device first heard of on 2.0.0 joins the rollback.
    let late = rig
        .offered(&dev(6), "2.0.0")
        .await
        .expect("late joiner offered");
    assert_eq!(offered_version(&late), "1.0.0");

    for i in [0, 1, 2, 3, 6] {
        rig.report_for(&dev(i), "offered", "downloading", "2.0.0", "1.0.0")
            .await;
        rig.report_for(&dev(i), "committed", "idle", "2.0.0", "1.0.0")
            .await;
    }
    let st = rig.status("rb").await;
    assert_eq!(st.waves[0].devices, 5);
    assert_eq!(st.waves[0].updated, 5, "{st:?}");
    assert_eq!(st.waves[0].failed, 0);
    rig.tick().await;
    rig.advance(mins(30));
    rig.tick().await;
    let st = rig.status("rb").await;
    assert_eq!(st.state, "done", "{st:?}");
    let d: BTreeMap<String, serde_json::Value> =
        rig.admin.get("/v1/rollouts/rb/devices").await.unwrap();
    for i in [0, 1, 2, 3, 6] {
        assert_eq!(d[&dev(i)]["status"]["status"], "succeeded", "{d:?}");
    }

    // Back on 1.0.0: nothing offered, now or after the forward rollout's retry time, and the
    // forward rollout neither counts them failed nor pauses.
    for i in [0, 1, 2, 3, 6] {
        assert_eq!(rig.offered(&dev(i), "1.0.0").await, None, "{}", dev(i));
    }
    rig.advance(SignedDuration::from_hours(2));
    for i in [0, 1, 2, 3, 6] {
        assert_eq!(rig.offered(&dev(i), "1.0.0").await, None, "{}", dev(i));
    }
    rig.tick().await;
    let fw = rig.status("fw").await;
    assert_eq!(fw.state, "done", "{fw:?}");
    assert_eq!(fw.waves[0].failed, 0, "{fw:?}");

    // A fixed 2.1.0 rolled out after the rollback is the newer decision: it is offered, and
    // the rollback does not pull the device back from it.
    let up = rig
        .pki
        .upload_release(&rig.admin, work.path(), "2.1.0")
        .await;
    rig.advance(mins(1));
    rig.create(serde_json::json!({"release": up.release, "id": "fix", "gates": gates}))
        .await;
    let offer = rig.offered(&dev(0), "1.0.0").await.expect("2.1.0 offered");
    assert_eq!(offered_version(&offer), "2.1.0");
    rig.report_for(&dev(0), "offered", "downloading", "1.0.0", "2.1.0")
        .await;
    rig.report_for(&dev(0), "committed", "idle", "1.0.0", "2.1.0")
        .await;
    assert_eq!(rig.offered(&dev(0), "2.1.0").await, None);
    rig.advance(SignedDuration::from_hours(2));
    assert_eq!(rig.offered(&dev(0), "2.1.0").await, None);
    rig.tick().await;
    let st = rig.status("rb").await;
    assert_eq!(
        (st.state.as_str(), st.waves[0].failed),
        ("done", 0),
        "{st:?}"
    );
    assert_eq!(rig.status("fix").await.waves[0].updated, 1);
    rig.stop().await;
}

/// The concurrency cap across check-ins: with `concurrency_cap` 2 over 6 devices in one open
/// wave, at most 2 are offered at any time, whoever polls; a final report (success or failure)
/// frees a slot for the next device; an offered device that goes silent frees its slot after
/// `install_timeout` (30 min here), and when it comes back it waits for a free slot like the
/// others, then is offered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_cap_limits_devices_updating_at_once() {
    let mut rig = Rig::new(Kind::Sqlite, 6).await;
    let st = rig
        .create(serde_json::json!({
            "release": rig.release, "id": "cap", "concurrency_cap": 2,
            "gates": {"max_failure_bp": 10000, "install_timeout": "30m", "telemetry": null},
        }))
        .await;
    assert_eq!(st.waves[0].devices, 6);
    assert_eq!(st.waves[0].stage, "open");
    // What each device runs; `polls` asks every device but `skip` and returns who was offered.
    let mut running: BTreeMap<String, &str> = (0..6).map(|i| (dev(i), "1.0.0")).collect();
    async fn polls(rig: &mut Rig, running: &BTreeMap<String, &str>, skip: &[usize]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (d, v)) in running.iter().enumerate() {
            if !skip.contains(&i) && rig.poll(d, v).await {
                out.push(d.clone());
            }
        }
        out
    }
    let offered = |ids: &[usize]| ids.iter().map(|&i| dev(i)).collect::<Vec<_>>();

    // Two slots: the first two to poll get them; polling again changes nothing.
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[0, 1]));
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[0, 1]));
    // A success frees a slot for the next device.
    rig.advance(mins(5));
    rig.update(&dev(0), true).await;
    running.insert(dev(0), "2.0.0");
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[1, 2]));
    // So does a failure (dev 1 then waits out its retry time).
    rig.advance(mins(5));
    rig.update(&dev(1), false).await;
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[2, 3]));
    let st = rig.status("cap").await;
    assert_eq!(
        (
            st.waves[0].in_progress,
            st.waves[0].updated,
            st.waves[0].failed
        ),
        (2, 1, 1),
        "{:?}",
        st.waves[0]
    );

    // Dev 2 (offered at 5 min) reports a download, then goes silent. Its slot is held until
    // 30 min after its offer, then freed for dev 4, though dev 2 never sent a final report.
    rig.report(&dev(2), "offered", "downloading").await;
    rig.clock.set(rig.at(mins(34)));
    assert_eq!(polls(&mut rig, &running, &[2]).await, offered(&[3]));
    rig.clock.set(rig.at(mins(35)));
    assert_eq!(polls(&mut rig, &running, &[2]).await, offered(&[3, 4]));
    let st = rig.status("cap").await;
    assert_eq!(
        (st.waves[0].in_progress, st.waves[0].stalled),
        (2, 1),
        "{:?}",
        st.waves[0]
    );
    assert_eq!(st.waves[0].failed, 1, "a timed-out device is not a failure");
    // Back again: no free slot, so it waits like dev 5; when dev 3 commits, it is offered anew.
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[3, 4]));
    rig.update(&dev(3), true).await;
    running.insert(dev(3), "2.0.0");
    assert_eq!(polls(&mut rig, &running, &[]).await, offered(&[2, 4]));
    let d: BTreeMap<String, serde_json::Value> =
        rig.admin.get("/v1/rollouts/cap/devices").await.unwrap();
    assert_eq!(d[&dev(2)]["attempts"], 2, "{:?}", d[&dev(2)]);
    assert_eq!(d[&dev(5)]["status"]["status"], "waiting");
    rig.stop().await;
}
