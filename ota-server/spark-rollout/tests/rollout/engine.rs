//! One rule at a time on small fleets: gates, soak, windows at check-in, concurrency cap,
//! penalty box, pause/resume/abort, rollback, late joiners, persistence.

use std::collections::HashMap;

use spark_rollout::jiff::Timestamp;
use spark_rollout::{
    ControlError, CreateError, Decision, DeviceInfo, DeviceStatus, Gates, MaintenanceWindow,
    PauseCause, PenaltyPolicy, Phase, Plan, ReportError, Rollout, RolloutKind, RolloutSpec,
    StatusReport, WaitReason, WaveStage,
};

use crate::common::{fleet, hours, mins, plain_gates, release, telemetry_gate, ts};

const T0: &str = "2026-11-30T00:00:00Z";

fn one_wave(gates: Gates) -> RolloutSpec {
    RolloutSpec::with(release("1.1.0"), Plan::parse("100%@0d").unwrap(), gates)
}

fn at(m: i64) -> Timestamp {
    ts(T0).checked_add(mins(m)).unwrap()
}

fn offer(r: &mut Rollout, d: &DeviceInfo, now: Timestamp) {
    let got = r.check_in(d, now);
    assert!(matches!(got, Decision::Offer { .. }), "{}: {got:?}", d.id);
}

fn wait_code(r: &mut Rollout, d: &DeviceInfo, now: Timestamp) -> &'static str {
    match r.check_in(d, now) {
        Decision::Wait { reason } => reason.code(),
        Decision::Offer { .. } => "offer",
    }
}

fn fail(r: &mut Rollout, d: &DeviceInfo, now: Timestamp) {
    r.report(&d.id, StatusReport::Failed { code: "x".into() }, now)
        .unwrap();
}

fn succeed(r: &mut Rollout, d: &DeviceInfo, now: Timestamp) {
    r.report(&d.id, StatusReport::Succeeded, now).unwrap();
}

fn started(devices: &[DeviceInfo], gates: Gates) -> Rollout {
    let mut r = Rollout::create("r", one_wave(gates), devices, at(0)).unwrap();
    r.advance(at(0), None);
    assert!(matches!(r.waves()[0].stage, WaveStage::Open { .. }));
    r
}

#[test]
fn failure_rate_waits_for_the_sample() {
    // 100 devices, 20 % threshold, sample 10.
    let f = fleet(100, "1.0.0");
    let mut r = started(&f, plain_gates(2000, 10, hours(1)));
    for d in &f[..10] {
        offer(&mut r, d, at(1));
    }
    // 3 failures of 9 reports: 33 %, but the sample is not in yet and 3 ≤ 20 % of 100.
    for d in &f[..3] {
        fail(&mut r, d, at(2));
    }
    for d in &f[3..9] {
        succeed(&mut r, d, at(2));
    }
    assert_eq!(r.phase(), &Phase::Running);
    // The 10th report completes the sample: 3 / 10 = 30 % > 20 %.
    let events = r.report(&f[9].id, StatusReport::Succeeded, at(3)).unwrap();
    assert_eq!(events.len(), 1);
    let Phase::Paused { reason } = r.phase() else {
        panic!()
    };
    assert_eq!(
        reason.cause,
        PauseCause::FailureRate {
            failed: 3,
            reported: 10,
            wave_size: 100,
            max_failure_bp: 2000
        }
    );
    // Paused: a new device gets nothing.
    assert_eq!(wait_code(&mut r, &f[50], at(4)), "paused");
}

#[test]
fn failures_beyond_the_whole_wave_trip_before_the_sample() {
    // 10 devices, 20 % threshold, sample 8: three failures exceed 20 % of the whole wave.
    let f = fleet(10, "1.0.0");
    let mut r = started(&f, plain_gates(2000, 8, hours(1)));
    for d in &f[..3] {
        offer(&mut r, d, at(1));
    }
    fail(&mut r, &f[0], at(2));
    fail(&mut r, &f[1], at(2));
    assert_eq!(r.phase(), &Phase::Running);
    fail(&mut r, &f[2], at(2));
    assert!(matches!(r.phase(), Phase::Paused { .. }));
}

#[test]
fn offline_devices_shrink_the_sample_not_the_rate() {
    // 40 devices, half of them never seen; min_sample 30.
    let f = fleet(40, "1.0.0");
    let mut r = started(&f, plain_gates(1000, 30, hours(1)));
    for d in &f[..20] {
        offer(&mut r, d, at(1));
    }
    // During the first `offline_after` (2 h) of the wave the silent half may just not have
    // polled yet: the full sample is needed.
    let c = r.counts(0, at(2), None);
    assert_eq!((c.size, c.reachable, c.sample_needed), (40, 20, 30));
    for d in &f[..20] {
        succeed(&mut r, d, at(3));
    }
    r.advance(at(119), None);
    assert!(matches!(r.waves()[0].stage, WaveStage::Open { .. }));
    // After it, the unheard-of half is offline: the sample is min(30, reachable = 20), and the
    // wave moves on instead of waiting for them.
    r.advance(at(120), None);
    assert_eq!(r.counts(0, at(120), None).sample_needed, 20);
    assert!(matches!(r.waves()[0].stage, WaveStage::Soaking { .. }));
    // One failure among 20 reports is 5 %, under the 10 % limit: offline units neither count
    // as successes nor as failures.
    assert_eq!(r.phase(), &Phase::Running);
}

#[test]
fn soak_and_offsets_decide_when_the_next_wave_opens() {
    let f = fleet(200, "1.0.0");
    let spec = RolloutSpec::with(
        release("1.1.0"),
        Plan::parse("50%@0d,100%@2h").unwrap(),
        plain_gates(500, 5, hours(3)),
    );
    let mut r = Rollout::create("soak", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    let wave0: Vec<DeviceInfo> = f
        .iter()
        .filter(|d| r.device(&d.id).unwrap().wave == 0)
        .cloned()
        .collect();
    let wave1: Vec<DeviceInfo> = f
        .iter()
        .filter(|d| r.device(&d.id).unwrap().wave == 1)
        .cloned()
        .collect();
    assert_eq!(wait_code(&mut r, &wave1[0], at(1)), "wave_not_open");
    for d in &wave0[..5] {
        offer(&mut r, d, at(1));
        succeed(&mut r, d, at(10));
    }
    r.advance(at(10), None); // sample in: soak 3 h from minute 10
    assert!(matches!(r.waves()[0].stage, WaveStage::Soaking { .. }));
    r.advance(at(120), None); // offset reached, soak not done
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
    r.advance(at(189), None);
    assert_eq!(r.waves()[1].stage, WaveStage::Pending);
    let events = r.advance(at(190), None);
    assert!(matches!(r.waves()[0].stage, WaveStage::Passed { .. }));
    assert_eq!(r.waves()[1].stage.opened_at(), Some(at(190)), "{events:?}");
    offer(&mut r, &wave1[0], at(191));
}

#[test]
fn telemetry_gate_needs_updated_units_to_keep_reporting() {
    let f = fleet(20, "1.0.0");
    let mut gates = plain_gates(5000, 5, hours(3));
    gates.telemetry = telemetry_gate(hours(1), 1000);
    let mut r = started(&f, gates);
    let mut seen: HashMap<String, Timestamp> = HashMap::new();
    for d in &f[..10] {
        offer(&mut r, d, at(1));
        succeed(&mut r, d, at(30));
    }
    // All keep reporting for the first hour; one stops at minute 40.
    for m in [40, 60, 90] {
        for d in &f[..10] {
            if d.id != f[0].id || m == 40 {
                seen.insert(d.id.clone(), at(m));
            }
        }
        r.advance(at(m), Some(&seen));
        assert_eq!(r.phase(), &Phase::Running, "minute {m}");
    }
    // Minute 101: f[0] silent for > 1 h since minute 40 → 1 of 10 updated = 10 %, not above.
    r.advance(at(101), Some(&seen));
    assert_eq!(r.phase(), &Phase::Running);
    assert_eq!(r.counts(0, at(101), Some(&seen)).silent, 1);
    // A second silent unit: 20 % > 10 %.
    seen.insert(f[1].id.clone(), at(40));
    r.advance(at(101), Some(&seen));
    let Phase::Paused { reason } = r.phase() else {
        panic!()
    };
    assert_eq!(reason.cause.code(), "telemetry_silent");
    let PauseCause::TelemetrySilent {
        silent,
        updated,
        examples,
        ..
    } = &reason.cause
    else {
        panic!()
    };
    assert_eq!((*silent, *updated), (2, 10));
    assert_eq!(examples, &vec![f[0].id.clone(), f[1].id.clone()]);
}

#[test]
fn without_telemetry_a_wave_does_not_pass_its_soak() {
    let f = fleet(5, "1.0.0");
    let mut gates = plain_gates(500, 5, hours(1));
    gates.telemetry = telemetry_gate(hours(1), 1000);
    let spec = RolloutSpec::with(
        release("1.1.0"),
        Plan::parse("50%@0d,100%@0d").unwrap(),
        gates,
    );
    let mut r = Rollout::create("blind", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    let w0: Vec<&DeviceInfo> = f
        .iter()
        .filter(|d| r.device(&d.id).unwrap().wave == 0)
        .collect();
    for d in &w0 {
        offer(&mut r, d, at(1));
        succeed(&mut r, d, at(2));
    }
    r.advance(at(3), None);
    r.advance(at(300), None);
    assert!(matches!(r.waves()[0].stage, WaveStage::Soaking { .. }));
    let seen: HashMap<String, Timestamp> = f.iter().map(|d| (d.id.clone(), at(299))).collect();
    r.advance(at(300), Some(&seen));
    assert!(matches!(r.waves()[0].stage, WaveStage::Passed { .. }));
}

#[test]
fn gates_that_contradict_are_refused() {
    let mut gates = plain_gates(500, 5, hours(1));
    gates.telemetry = telemetry_gate(hours(2), 500);
    let err = Rollout::create("x", one_wave(gates), &fleet(3, "1.0.0"), at(0)).unwrap_err();
    assert!(matches!(err, CreateError::Gates { .. }), "{err}");
    let err = Rollout::create("x", one_wave(plain_gates(10_001, 5, hours(1))), &[], at(0));
    assert!(matches!(err, Err(CreateError::Gates { .. })));
    let mut spec = one_wave(plain_gates(500, 5, hours(1)));
    spec.concurrency_cap = Some(0);
    let err = Rollout::create("x", spec, &[], at(0)).unwrap_err();
    assert!(err.to_string().contains("concurrency_cap"), "{err}");
    let mut spec = one_wave(plain_gates(500, 5, hours(1)));
    spec.penalty.duration = -hours(1);
    assert!(Rollout::create("x", spec, &[], at(0)).is_err());
    assert_eq!(
        Rollout::create("", one_wave(plain_gates(500, 5, hours(1))), &[], at(0)).unwrap_err(),
        CreateError::EmptyId
    );
}

#[test]
fn windows_apply_in_site_local_time_at_check_in() {
    let mut f = fleet(2, "1.0.0");
    f[0].time_zone = Some("Europe/Berlin".into());
    f[1].time_zone = Some("Asia/Tokyo".into());
    let mut spec = one_wave(plain_gates(500, 1, hours(1)));
    spec.windows =
        vec![MaintenanceWindow::daily("02:00".parse().unwrap(), "05:00".parse().unwrap()).unwrap()];
    let mut r = Rollout::create("w", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    // 01:30 UTC = 02:30 in Berlin, 10:30 in Tokyo.
    offer(&mut r, &f[0], at(90));
    match r.check_in(&f[1], at(90)) {
        Decision::Wait {
            reason: WaitReason::OutsideWindow { next_open },
        } => {
            assert_eq!(next_open, Some(ts("2026-11-30T17:00:00Z")));
        }
        other => panic!("{other:?}"),
    }
    offer(&mut r, &f[1], ts("2026-11-30T17:00:00Z"));
}

#[test]
fn concurrency_cap_limits_devices_updating_at_once() {
    let f = fleet(6, "1.0.0");
    let mut spec = one_wave(plain_gates(5000, 1, hours(1)));
    spec.concurrency_cap = Some(2);
    spec.gates.install_timeout = hours(1);
    let mut r = Rollout::create("cap", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    offer(&mut r, &f[0], at(1));
    offer(&mut r, &f[1], at(1));
    assert_eq!(wait_code(&mut r, &f[2], at(1)), "concurrency_cap");
    // The devices already updating keep their offer.
    offer(&mut r, &f[0], at(2));
    succeed(&mut r, &f[0], at(5));
    offer(&mut r, &f[2], at(6));
    assert_eq!(wait_code(&mut r, &f[3], at(6)), "concurrency_cap");
    // A device silent past install_timeout frees its slot (and is not counted as failed).
    offer(&mut r, &f[3], at(62));
    let c = r.counts(0, at(62), None);
    assert_eq!((c.in_progress, c.stalled, c.failed), (2, 1, 0));
}

#[test]
fn penalty_box_holds_back_a_device_that_keeps_failing() {
    let f = fleet(50, "1.0.0");
    let mut spec = one_wave(plain_gates(10_000, 50, hours(1)));
    spec.penalty = PenaltyPolicy {
        retry_after: hours(1),
        max_failures: 3,
        duration: hours(24),
    };
    let mut r = Rollout::create("pen", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    let d = &f[0];
    offer(&mut r, d, at(1));
    fail(&mut r, d, at(2));
    assert_eq!(wait_code(&mut r, d, at(30)), "retry_later");
    offer(&mut r, d, at(62));
    fail(&mut r, d, at(63));
    offer(&mut r, d, at(123));
    fail(&mut r, d, at(124));
    match r.check_in(d, at(200)) {
        Decision::Wait {
            reason: WaitReason::PenaltyBox { until },
        } => {
            assert_eq!(until, at(124).checked_add(hours(24)).unwrap());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.counts(0, at(200), None).penalty_box, 1);
    assert_eq!(wait_code(&mut r, d, at(124 + 24 * 60 - 1)), "penalty_box");
    offer(&mut r, d, at(124 + 24 * 60));
    assert_eq!(r.device(&d.id).unwrap().attempts, 4);
    // A retry that succeeds replaces the failure in the gate's count.
    succeed(&mut r, d, at(124 + 24 * 60 + 30));
    assert_eq!(r.counts(0, at(2000), None).failed, 0);
}

#[test]
fn pause_resume_abort() {
    let f = fleet(100, "1.0.0");
    let mut r = started(&f, plain_gates(1000, 10, hours(1)));
    offer(&mut r, &f[0], at(1));
    r.pause("holiday freeze", at(2)).unwrap();
    assert_eq!(
        r.pause("again", at(2)),
        Err(ControlError::AlreadyPaused { id: "r".into() })
    );
    let Phase::Paused { reason } = r.phase() else {
        panic!()
    };
    assert_eq!(reason.cause.code(), "manual");
    assert_eq!(reason.to_string(), "paused by an admin: holiday freeze");
    // New devices wait; the one already updating keeps its offer.
    assert_eq!(wait_code(&mut r, &f[1], at(3)), "paused");
    offer(&mut r, &f[0], at(3));
    r.advance(at(100), None);
    assert!(matches!(r.phase(), Phase::Paused { .. }));
    r.resume(at(4), None).unwrap();
    assert_eq!(
        r.resume(at(4), None),
        Err(ControlError::NotPaused {
            id: "r".into(),
            phase: "running"
        })
    );
    offer(&mut r, &f[1], at(5));

    // An automatic pause, resumed: the failures seen are accepted; a new one re-trips while the
    // rate is still above the threshold.
    for d in &f[2..12] {
        offer(&mut r, d, at(6));
    }
    for d in &f[2..4] {
        fail(&mut r, d, at(7));
    }
    for d in &f[4..12] {
        succeed(&mut r, d, at(7));
    }
    assert!(matches!(r.phase(), Phase::Paused { .. }), "2 of 10 > 10 %");
    r.resume(at(8), None).unwrap();
    assert_eq!(r.phase(), &Phase::Running);
    succeed(&mut r, &f[0], at(9));
    assert_eq!(r.phase(), &Phase::Running, "a success does not re-trip");
    fail(&mut r, &f[1], at(9));
    assert!(
        matches!(r.phase(), Phase::Paused { .. }),
        "a new failure does"
    );

    r.abort("bad build", at(10)).unwrap();
    assert_eq!(wait_code(&mut r, &f[50], at(11)), "aborted");
    assert_eq!(
        r.resume(at(11), None),
        Err(ControlError::Aborted { id: "r".into() })
    );
    assert!(r.advance(at(12), None).is_empty());
    assert!(!r.is_active());
}

#[test]
fn rollback_needs_a_signed_downgrade() {
    let mut f = fleet(10, "1.2.0");
    f[0].version = Some("1.0.0".parse().unwrap());
    let mut spec = one_wave(plain_gates(500, 1, hours(1)));
    spec.release = release("1.1.0");
    spec.kind = RolloutKind::Rollback;
    let err = Rollout::create("rb", spec.clone(), &f, at(0)).unwrap_err();
    assert!(
        matches!(err, CreateError::DowngradeNotSigned { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("allow_downgrade"));

    spec.release.allow_downgrade = true;
    let mut r = Rollout::create("rb", spec, &f, at(0)).unwrap();
    assert_eq!(r.devices().count(), 9, "only devices newer than 1.1.0");
    r.advance(at(0), None);
    offer(&mut r, &f[1], at(1));
    assert_eq!(wait_code(&mut r, &f[0], at(1)), "not_targeted");
    // A forward rollout never offers an older release to a newer device.
    let mut fwd =
        Rollout::create("fw", one_wave(plain_gates(500, 1, hours(1))), &f, at(0)).unwrap();
    fwd.advance(at(0), None);
    assert_eq!(wait_code(&mut fwd, &f[1], at(1)), "not_targeted");
}

#[test]
fn rollback_target_comes_from_a_verified_manifest() {
    use spark_release::ReleaseManifest;
    let manifest = ReleaseManifest {
        compatible: "spark-bbb".into(),
        version: "1.1.0".parse().unwrap(),
        bundle_sha256: [7; 32],
        bundle_size: 1,
        locations: vec![],
        min_version: None,
        issued_at: spark_release::Timestamp::from_unix(1_800_000_000).unwrap(),
        expires_at: spark_release::Timestamp::from_unix(1_900_000_000).unwrap(),
        allow_downgrade: true,
        rollout: None,
    };
    let t = spark_rollout::ReleaseTarget::from_verified_manifest("rel-7", &manifest);
    assert!(t.allow_downgrade);
    assert_eq!(t.version, manifest.version);
}

#[test]
fn late_joiners_and_implicit_success() {
    let f = fleet(30, "1.0.0");
    let mut r = started(&f[..20], plain_gates(5000, 1, hours(1)));
    // A device registered after creation joins at its first check-in.
    let late = &f[25];
    assert!(r.device(&late.id).is_none());
    let _ = r.check_in(late, at(1));
    assert_eq!(r.device(&late.id).unwrap().wave, 0);
    // A device that reboots into the new version without its report getting through counts as
    // updated at its next check-in.
    let d = &f[0];
    offer(&mut r, d, at(2));
    let mut after = d.clone();
    after.version = Some("1.1.0".parse().unwrap());
    assert_eq!(wait_code(&mut r, &after, at(40)), "updated");
    assert!(matches!(
        r.device(&d.id).unwrap().status,
        DeviceStatus::Succeeded { .. }
    ));
    // Unknown or later versions are not a fallback; the old version after a success is.
    let mut unknown = d.clone();
    unknown.version = None;
    let _ = r.check_in(&unknown, at(41));
    let mut later = d.clone();
    later.version = Some("1.2.0".parse().unwrap());
    let _ = r.check_in(&later, at(41));
    assert!(matches!(
        r.device(&d.id).unwrap().status,
        DeviceStatus::Succeeded { .. }
    ));
    let _ = r.check_in(d, at(42));
    match &r.device(&d.id).unwrap().status {
        DeviceStatus::Failed { code, .. } => assert_eq!(code, "reverted_after_success"),
        other => panic!("{other:?}"),
    }
    // Reports from devices never offered are refused.
    assert!(matches!(
        r.report(&f[5].id, StatusReport::Succeeded, at(41)),
        Err(ReportError::NotOffered { .. })
    ));
    assert!(matches!(
        r.report("nobody", StatusReport::Succeeded, at(41)),
        Err(ReportError::NotOffered { .. })
    ));
}

#[test]
fn running_the_release_after_a_reported_failure_is_not_a_success() {
    // A unit whose health check failed still runs the release until the reboot that rolls it
    // back; a check-in (or ingest's view of it) in that window must not undo the failure.
    let f = fleet(4, "1.0.0");
    let mut r = started(&f, plain_gates(10_000, 1, hours(1)));
    let d = &f[0];
    offer(&mut r, d, at(1));
    r.report(
        &d.id,
        StatusReport::Failed {
            code: "health-failed".into(),
        },
        at(5),
    )
    .unwrap();
    let mut on_release = d.clone();
    on_release.version = Some("1.1.0".parse().unwrap());
    assert_eq!(wait_code(&mut r, &on_release, at(6)), "updated");
    assert!(matches!(
        r.device(&d.id).unwrap().status,
        DeviceStatus::Failed { .. }
    ));
    let c = r.counts(0, at(6), None);
    assert_eq!((c.failed, c.succeeded), (1, 0));
    // An interruption it recovered from (a cut download, then the update went through with
    // its report lost) does count as updated.
    let e = &f[1];
    offer(&mut r, e, at(1));
    r.report(
        &e.id,
        StatusReport::Interrupted {
            code: "download-failed".into(),
        },
        at(2),
    )
    .unwrap();
    let mut e_on = e.clone();
    e_on.version = Some("1.1.0".parse().unwrap());
    assert_eq!(wait_code(&mut r, &e_on, at(7)), "updated");
    assert!(matches!(
        r.device(&e.id).unwrap().status,
        DeviceStatus::Succeeded { .. }
    ));
}

#[test]
fn state_survives_a_json_round_trip() {
    let f = fleet(50, "1.0.0");
    let mut r = started(&f, Gates::weekly());
    offer(&mut r, &f[0], at(1));
    fail(&mut r, &f[0], at(2));
    r.pause("x", at(3)).unwrap();
    let json = serde_json::to_string(&r).unwrap();
    let back: Rollout = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    // Split persistence: a header row plus one row per device.
    let header = serde_json::to_string(&r.header()).unwrap();
    let rows: Vec<(String, String)> = r
        .devices()
        .map(|(id, d)| (id.to_string(), serde_json::to_string(d).unwrap()))
        .collect();
    let back = Rollout::from_parts(
        serde_json::from_str(&header).unwrap(),
        rows.iter()
            .map(|(id, d)| (id.clone(), serde_json::from_str(d).unwrap())),
    )
    .unwrap();
    assert_eq!(back, r);
    let mut bad = r.device(&f[0].id).unwrap().clone();
    bad.wave = 7;
    assert!(matches!(
        Rollout::from_parts(r.header(), [(f[0].id.clone(), bad)]),
        Err(spark_rollout::StateError::DeviceWave { wave: 7, .. })
    ));
    // A spec written by hand (what the admin API accepts).
    let spec: RolloutSpec = serde_json::from_str(
        r#"{
          "release": {"release_id": "rel-1", "compatible": "spark-bbb", "version": "1.1.0"},
          "plan": {"name": "custom", "waves": [{"share_bp": 500, "offset": "0s"}, {"share_bp": 10000, "offset": "24h"}]},
          "filter": {"hardware_revs": ["rev-c"], "tags": {"region": ["eu"]}, "current_version": ">=1.0.0, <1.1.0"},
          "gates": {"max_failure_bp": 500, "min_sample": 20, "soak": "4h", "telemetry": {"max_silence": "2h", "max_silent_bp": 500},
                    "offline_after": "2h", "install_timeout": "6h"},
          "windows": [{"start": "02:00", "end": "05:00"}],
          "concurrency_cap": 100
        }"#,
    )
    .unwrap();
    let r = Rollout::create("json", spec, &f, at(0)).unwrap();
    assert!(r.devices().all(|(id, _)| {
        let d = f.iter().find(|d| d.id == id).unwrap();
        d.hardware_rev == "rev-c" && d.tags["region"] == "eu"
    }));
    assert!(r.devices().count() > 0);
}

#[test]
fn telemetry_is_judged_through_the_soak_only() {
    // Silence within max_silence of the update is not judged yet; silence long after the soak is
    // an ordinary outage, not blamed on the update.
    let f = fleet(4, "1.0.0");
    let mut gates = plain_gates(5000, 1, hours(2));
    gates.telemetry = telemetry_gate(hours(1), 1000);
    let mut r = started(&f, gates);
    offer(&mut r, &f[0], at(1));
    succeed(&mut r, &f[0], at(10));
    let quiet: HashMap<String, Timestamp> = HashMap::from([(f[0].id.clone(), at(10))]);
    let judged = |r: &Rollout, m: i64| {
        let c = r.counts(0, at(m), Some(&quiet));
        (c.updated_judged, c.silent)
    };
    assert_eq!(judged(&r, 69), (0, 0));
    assert_eq!(judged(&r, 71), (1, 1));
    assert_eq!(judged(&r, 10 + 180), (1, 1));
    assert_eq!(judged(&r, 10 + 181), (0, 0));
}

#[test]
fn interruptions_feed_the_penalty_box_not_the_gate() {
    let f = fleet(10, "1.0.0");
    let mut spec = one_wave(plain_gates(1000, 1, hours(1)));
    spec.penalty = PenaltyPolicy {
        retry_after: mins(30),
        max_failures: 2,
        duration: hours(6),
    };
    let mut r = Rollout::create("int", spec, &f, at(0)).unwrap();
    r.advance(at(0), None);
    let d = &f[0];
    offer(&mut r, d, at(1));
    let interrupted = StatusReport::Interrupted {
        code: "download_failed".into(),
    };
    r.report(&d.id, interrupted.clone(), at(2)).unwrap();
    // Not a failure of the release: 1 of 1 would be 100 % over a 10 % gate.
    assert_eq!(r.phase(), &Phase::Running);
    assert_eq!(r.counts(0, at(2), None).failed, 0);
    assert_eq!(wait_code(&mut r, d, at(20)), "retry_later");
    offer(&mut r, d, at(32));
    r.report(&d.id, interrupted, at(33)).unwrap();
    assert_eq!(wait_code(&mut r, d, at(100)), "penalty_box");
    assert_eq!(r.phase(), &Phase::Running);
}
