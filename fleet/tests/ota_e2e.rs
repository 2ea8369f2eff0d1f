//! End to end: three gateways running the real daemons (`spark-meterd` with its radio
//! simulator, `spark-uplinkd`, `spark-updated`) on boards with the real `rauc service` update
//! from 1.0.0 to 2.0.0 through the real `spark-ota`, which pushes the release through the real
//! `spark-ingest` (the agents' poll interval is an hour, so only the push can start them), in a
//! two-wave rollout on a compressed clock whose gates hold the second wave until the first
//! gateway reported success and kept sending telemetry. Then: every board runs 2.0.0 from slot
//! B marked good, OTA server and ingest both see 2.0.0 on B, every reading the meters produced
//! across the reboots is stored once, and the dashboard, loaded in headless Chromium, shows it.
//!
//! Needs root, `rauc`, `dbus-daemon`, `sqlite3`, `chromium`, and the workspace's binaries
//! (`cargo test --workspace` builds them; alone: `cargo build -p spark-ingest -p spark-ota
//! -p spark-meterd -p spark-uplinkd -p spark-updated` first).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use spark_fleet::{Binaries, Cloud, CloudOptions, Gateway, GatewayOptions, ReleaseSpec, noise};
use spark_ota::rollouts::{CreateRollout, RolloutStatus};
use spark_testbed::{Slot, chromium};

const COMPATIBLE: &str = "spark-bbb";
/// Serial and site; one region, so the waves' stratification (by region and hardware
/// revision, each stratum represented in the first wave) has one stratum of three.
const GATEWAYS: [(&str, &str); 3] = [
    ("GW-E2E-1", "mzuzu-1"),
    ("GW-E2E-2", "mzuzu-2"),
    ("GW-E2E-3", "lilongwe-7"),
];
/// The whole rollout must finish within this (real time).
const ROLLOUT_LIMIT: Duration = Duration::from_secs(240);

/// The fleet of a test: the cloud with release 2.0.0 uploaded and three gateways on the factory
/// image 1.0.0, all sending telemetry.
struct Fleet {
    cloud: Cloud,
    gateways: Vec<Gateway>,
    release: spark_ota::catalog::Uploaded,
    dir: PathBuf,
    // Removed last (fields drop in order), after every process is gone.
    _work: Option<tempfile::TempDir>,
}

fn fleet(name: &str) -> Fleet {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "spark_fleet=info".into()),
        )
        .with_test_writer()
        .try_init();
    chromium::present().unwrap();
    let bins = Binaries::locate(None).unwrap();
    let work = tempfile::Builder::new()
        .prefix(&format!("spark-fleet-{name}-"))
        .tempdir()
        .unwrap();
    // SPARK_FLEET_KEEP=1 keeps the fleet's directory (configs, logs, databases) afterwards.
    let dir = work.path().to_owned();
    let work = match std::env::var_os("SPARK_FLEET_KEEP") {
        Some(_) => {
            let _ = work.keep();
            None
        }
        None => Some(work),
    };
    println!("fleet directory: {}", dir.display());

    // The cloud, on a clock 300 times real time: an hour of rollout time is twelve seconds.
    let mut opts = CloudOptions::new(dir.join("cloud"));
    opts.clock_factor = Some(300);
    opts.tick_secs = 0.5;
    let mut cloud = Cloud::start(&bins, &opts).unwrap();

    // Release 2.0.0, made offline and uploaded.
    let releases = dir.join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    let v2 = ReleaseSpec {
        compatible: COMPATIBLE,
        version: "2.0.0",
        rootfs: &noise(2, 256 << 10),
        allow_downgrade: false,
        valid_for: Duration::from_secs(7 * 86400),
    }
    .build(cloud.pki(), &releases)
    .unwrap();
    let release = cloud.upload(&v2).unwrap();
    assert_eq!(release.version, "2.0.0");

    // Three gateways on the factory image 1.0.0, provisioned with their region and site.
    let link = cloud.link();
    let mut gateways: Vec<Gateway> = GATEWAYS
        .iter()
        .enumerate()
        .map(|(i, (serial, site))| {
            cloud
                .set_device(
                    serial,
                    &serde_json::json!({"hardware_rev": "bbb-rev-c", "tags": {"region": "malawi", "site": site}}),
                )
                .unwrap();
            let mut o = GatewayOptions::new(serial, dir.join(serial), COMPATIBLE);
            o.seed = i as u64 + 1;
            Gateway::start(&bins, &link, o).unwrap()
        })
        .collect();
    for gw in &gateways {
        assert_eq!(gw.booted(), Slot::A);
        assert_eq!(gw.version(), "1.0.0");
    }

    // Telemetry flows before the rollout: ingest knows all three on 1.0.0 / A.
    wait(
        &mut cloud,
        &mut gateways,
        Duration::from_secs(60),
        |cloud, _| {
            cloud
            .ingest_query("SELECT count(*) FROM gateways WHERE firmware_version = '1.0.0' AND booted_slot = 'A'")
            .ok()
            .is_some_and(|n| n == "3")
        },
    );
    Fleet {
        cloud,
        gateways,
        release,
        dir,
        _work: work,
    }
}

/// Two waves: one gateway first, the rest an hour later, once the first reported success,
/// soaked an hour and kept sending telemetry (silent for 45 minutes is silent).
fn create_rollout(f: &Fleet) -> RolloutStatus {
    let req: CreateRollout = serde_json::from_value(serde_json::json!({
        "release": f.release.release,
        "id": "e2e",
        "plan": "33%@0h,100%@1h",
        "gates": {
            "max_failure_bp": 0,
            "min_sample": 1,
            "soak": "PT1H",
            "telemetry": {"max_silence": "PT45M", "max_silent_bp": 0},
        },
    }))
    .unwrap();
    let created = f.cloud.create_rollout(&req).unwrap();
    assert_eq!(created.waves.len(), 2);
    assert_eq!(created.waves.iter().map(|w| w.devices).sum::<u64>(), 3);
    assert_eq!(created.waves[0].devices, 1, "{created:?}");
    created
}

#[test]
fn three_gateways_update_through_ota_and_ingest_push() {
    let f = fleet("e2e");
    create_rollout(&f);
    let Fleet {
        mut cloud,
        mut gateways,
        release: uploaded,
        dir,
        _work,
    } = f;

    // Run the fleet until the rollout is done; note when each gateway rebooted into 2.0.0 and
    // what the rollout looked like then.
    let started = Instant::now();
    let mut rebooted: BTreeMap<String, (Duration, RolloutStatus)> = BTreeMap::new();
    let status = loop {
        assert!(
            started.elapsed() < ROLLOUT_LIMIT,
            "rollout not done within {ROLLOUT_LIMIT:?}: {:#?}\n(SPARK_FLEET_KEEP=1 keeps the logs)",
            cloud.rollout("e2e").ok(),
        );
        for serial in service(&mut cloud, &mut gateways, started) {
            let s = cloud.rollout("e2e").unwrap();
            rebooted.insert(serial, (started.elapsed(), s));
        }
        let s = cloud.rollout("e2e").unwrap();
        let updated: u64 = s.waves.iter().map(|w| w.updated).sum();
        if updated == 3 {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "rollout done in {:.1} s real time: {:?}",
        started.elapsed().as_secs_f64(),
        status.waves
    );

    // Every gateway rebooted once, into B, holding 2.0.0, and RAUC marked B good.
    for gw in &gateways {
        assert_eq!(gw.boots(), 2, "{}", gw.serial());
        assert_eq!(gw.booted(), Slot::B, "{}", gw.serial());
        assert_eq!(gw.version(), "2.0.0", "{}", gw.serial());
        let rauc = gw.board().status().unwrap();
        let b = rauc.slot(Slot::B).unwrap();
        assert_eq!(
            b.boot_status.as_deref(),
            Some("good"),
            "{}: {rauc:?}",
            gw.serial()
        );
        assert_eq!(rauc.boot_primary.as_deref(), Some("rootfs.1"), "{rauc:?}");
        assert_eq!(
            gw.board().bootloader().boot_order().unwrap(),
            [Slot::B, Slot::A]
        );
    }
    // The waves kept their order: the first wave's gateway updated before the second wave
    // opened, so when a second-wave gateway rebooted the first had already reported success.
    assert_eq!(status.waves.iter().map(|w| w.failed).sum::<u64>(), 0);
    let mut order: Vec<_> = rebooted.iter().collect();
    order.sort_by_key(|(_, (t, _))| *t);
    let (first, _) = order[0];
    for (serial, (_, s)) in &order[1..] {
        assert!(
            s.waves[0].updated == 1 && s.waves[0].opened_at < s.waves[1].opened_at,
            "{serial} updated before the first wave ({first}) passed its gates: {s:?}"
        );
    }
    // Each gateway fetched the bundle once, and every byte counts toward the rollout's data
    // cost (the push records the offer before the gateway can start downloading).
    assert_eq!(status.bytes_served, 3 * uploaded.size as i64, "{status:?}");

    // The release reached them by push through ingest, one per gateway, under this rollout.
    let pushes = cloud.get("/v1/pushes").unwrap();
    let pushes = pushes.as_array().unwrap();
    for (serial, _) in GATEWAYS {
        assert!(
            pushes
                .iter()
                .any(|p| p["device"] == serial && p["rollout"] == "e2e"),
            "no push to {serial}: {pushes:?}"
        );
    }

    // Both ends of the fleet agree on what runs where.
    let devices = cloud.devices().unwrap();
    for (serial, _) in GATEWAYS {
        let d = devices
            .iter()
            .find(|d| d["device"] == serial)
            .unwrap_or_else(|| panic!("{serial} not in {devices:?}"));
        assert_eq!(d["current_version"], "2.0.0", "{d}");
        assert_eq!(d["last_reason"], "committed", "{d}");
    }
    wait(
        &mut cloud,
        &mut gateways,
        Duration::from_secs(30),
        |cloud, _| {
            cloud
            .ingest_query("SELECT count(*) FROM gateways WHERE firmware_version = '2.0.0' AND booted_slot = 'B'")
            .ok()
            .is_some_and(|n| n == "3")
        },
    );

    // No reading lost or stored twice across the update reboots.
    for gw in &mut gateways {
        let generated = gw.finish_radio(Duration::from_secs(120)).unwrap();
        assert!(generated > 0);
        let serial = gw.serial().to_owned();
        let sql = format!("SELECT count(*) FROM readings WHERE gateway = '{serial}'");
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            let stored: u64 = cloud.ingest_query(&sql).unwrap().parse().unwrap();
            if stored == generated {
                break;
            }
            assert!(
                Instant::now() < limit,
                "{serial}: {generated} readings generated, {stored} stored"
            );
            gw.service().unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("{serial}: {generated} readings generated = stored");
    }
    let dupes = cloud
        .ingest_query("SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY gateway, meter_id, ts HAVING count(*) > 1)")
        .unwrap();
    assert_eq!(dupes, "0");

    // The dashboard shows it, as a person signed in with the admin token sees it.
    let pages = dir.join("browser");
    std::fs::create_dir_all(&pages).unwrap();
    let admin = cloud.admin_url();
    let dom = chromium::browse(
        &pages,
        "rollout",
        &sign_in(&pages, "rollout", &admin, cloud.token(), "/ui/rollouts/e2e"),
        Some(&pages.join("rollout.png")),
    )
    .unwrap();
    for (n, wave) in status.waves.iter().enumerate() {
        let row = chromium::row(&dom, &format!("wave-{}", n + 1))
            .unwrap_or_else(|| panic!("no wave {} on the rollout page:\n{dom}", n + 1));
        assert_eq!(
            chromium::cell(row, "updated").unwrap(),
            wave.devices.to_string(),
            "{row}"
        );
        assert_eq!(chromium::cell(row, "failed").unwrap(), "0", "{row}");
    }
    let dom = chromium::browse(
        &pages,
        "devices",
        &sign_in(&pages, "devices", &admin, cloud.token(), "/ui/devices"),
        None,
    )
    .unwrap();
    for (serial, _) in GATEWAYS {
        let row = chromium::row(&dom, &format!("device-{serial}"))
            .unwrap_or_else(|| panic!("no {serial} on the devices page:\n{dom}"));
        assert_eq!(chromium::cell(row, "version").unwrap(), "2.0.0", "{row}");
        assert!(
            chromium::cell(row, "report")
                .unwrap()
                .starts_with("committed"),
            "{row}"
        );
    }
    println!(
        "dashboard screenshot: {}",
        pages.join("rollout.png").display()
    );

    drop(gateways);
    cloud.stop();
}

/// The first wave's gateway cannot run 2.0.0 (its health check fails after the update): its
/// agent marks slot B bad and goes back to A on 1.0.0, reports it, and the failure gate pauses
/// the rollout by itself, so the second wave never opens and the other two stay on 1.0.0.
#[test]
fn a_release_failing_its_health_check_rolls_back_and_pauses_the_rollout() {
    let f = fleet("health");
    create_rollout(&f);
    let Fleet {
        mut cloud,
        mut gateways,
        dir: _dir,
        _work,
        ..
    } = f;
    let waves: serde_json::Value = cloud.get("/v1/rollouts/e2e/devices").unwrap();
    let first = waves
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, d)| d["wave"] == 0)
        .map(|(serial, _)| serial.clone())
        .unwrap();
    let bad = gateways.iter().position(|g| g.serial() == first).unwrap();
    gateways[bad].set_fail_health_on(Some("2.0.0".into()));

    // Run until the rollout pauses itself.
    let started = Instant::now();
    let paused = loop {
        assert!(
            started.elapsed() < ROLLOUT_LIMIT,
            "rollout did not pause within {ROLLOUT_LIMIT:?}: {:#?}",
            cloud.rollout("e2e").ok()
        );
        service(&mut cloud, &mut gateways, started);
        let s = cloud.rollout("e2e").unwrap();
        if s.state == "paused" {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "paused after {:.1} s: {:?}",
        started.elapsed().as_secs_f64(),
        paused.reason
    );
    assert!(
        paused.reason.as_deref().is_some_and(|r| r.contains("fail")),
        "{paused:?}"
    );
    assert_eq!(paused.waves[0].failed, 1, "{paused:?}");

    // The bad unit is back on A, running 1.0.0, with B marked bad by the agent; the report
    // reached the server.
    wait(
        &mut cloud,
        &mut gateways,
        Duration::from_secs(60),
        |cloud, gws| {
            gws[bad].booted() == Slot::A
                && cloud.devices().ok().is_some_and(|ds| {
                    ds.iter()
                        .any(|d| d["device"] == first.as_str() && d["current_version"] == "1.0.0")
                })
        },
    );
    let gw = &gateways[bad];
    assert_eq!(gw.version(), "1.0.0");
    assert_eq!(gw.boots(), 3, "factory boot, into B, back to A");
    let rauc = gw.board().status().unwrap();
    assert_eq!(
        rauc.slot(Slot::B).unwrap().boot_status.as_deref(),
        Some("bad"),
        "{rauc:?}"
    );
    assert_eq!(
        rauc.slot(Slot::A).unwrap().boot_status.as_deref(),
        Some("good"),
        "{rauc:?}"
    );

    // An hour and more of rollout time later the second wave is still shut: the other two
    // were never offered 2.0.0 and still run 1.0.0 from A.
    let until = Instant::now() + Duration::from_secs(15);
    wait(
        &mut cloud,
        &mut gateways,
        Duration::from_secs(30),
        |_, _| Instant::now() > until,
    );
    let s = cloud.rollout("e2e").unwrap();
    assert_eq!(s.state, "paused", "{s:?}");
    assert_eq!(s.waves[1].offered, 0, "{s:?}");
    assert!(s.waves[1].opened_at.is_none(), "{s:?}");
    for (i, gw) in gateways.iter().enumerate() {
        if i != bad {
            assert_eq!(
                (gw.booted(), gw.version(), gw.boots()),
                (Slot::A, "1.0.0", 1)
            );
        }
    }
    drop(gateways);
    cloud.stop();
}

/// Services the fleet until `done` holds (bounded).
fn wait(
    cloud: &mut Cloud,
    gateways: &mut [Gateway],
    limit: Duration,
    mut done: impl FnMut(&Cloud, &[Gateway]) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(cloud, gateways) {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        service(cloud, gateways, deadline - limit);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One round of keeping the fleet going (reboots carried out, crashes caught); prints and
/// returns the gateways that rebooted.
fn service(cloud: &mut Cloud, gateways: &mut [Gateway], started: Instant) -> Vec<String> {
    cloud.check_running().unwrap();
    let mut rebooted = Vec::new();
    for gw in gateways.iter_mut() {
        if gw.service().unwrap() {
            println!(
                "{:>6.1} s  {} rebooted into {} on slot {}",
                started.elapsed().as_secs_f64(),
                gw.serial(),
                gw.version(),
                gw.booted()
            );
            rebooted.push(gw.serial().to_owned());
        }
    }
    rebooted
}

/// A local page that signs in like a person does: the dashboard's login form with the token
/// typed in, submitted; the server sets its cookie and moves on to `next`.
fn sign_in(dir: &Path, name: &str, admin_url: &str, token: &str, next: &str) -> String {
    chromium::post_form_page(
        dir,
        &format!("sign-in-{name}"),
        &format!("{admin_url}/ui/login"),
        &[("token", token), ("next", next)],
    )
    .unwrap()
}
