//! Property test: any sequence of the server's calls keeps the engine's invariants.

use proptest::prelude::*;
use spark_rollout::{
    Decision, DeviceStatus, Phase, Plan, Rollout, RolloutSpec, StatusReport, WaveStage,
};

use crate::common::{fleet, hours, mins, plain_gates, release, telemetry_gate, ts};

#[derive(Debug, Clone)]
enum Op {
    CheckIn { device: usize, updated: bool },
    Report { device: usize, kind: u8 },
    Advance,
    Tick { minutes: i64 },
    Pause,
    Resume,
    Abort,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..30, any::<bool>()).prop_map(|(device, updated)| Op::CheckIn { device, updated }),
        4 => (0usize..30, 0u8..4).prop_map(|(device, kind)| Op::Report { device, kind }),
        2 => Just(Op::Advance),
        3 => (1i64..180).prop_map(|minutes| Op::Tick { minutes }),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => (0u8..8).prop_filter_map("rare", |b| (b == 0).then_some(Op::Abort)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold(ops in prop::collection::vec(op(), 1..120),
                       cap in prop::option::of(1u32..4),
                       with_telemetry in any::<bool>()) {
        let devices = fleet(30, "1.0.0");
        let mut gates = plain_gates(3000, 3, hours(1));
        if with_telemetry {
            gates.telemetry = telemetry_gate(mins(30), 3000);
        }
        let mut spec = RolloutSpec::with(
            release("1.1.0"),
            Plan::parse("10%@0d,50%@1h,100%@2h").unwrap(),
            gates,
        );
        spec.concurrency_cap = cap;
        spec.gates.install_timeout = hours(2);
        let mut now = ts("2026-11-30T00:00:00Z");
        let mut r = Rollout::create("prop", spec, &devices, now).unwrap();
        // Every device sends telemetry at every step except the ones the ops mark updated-silent.
        let mut seen = std::collections::HashMap::new();
        for o in ops {
            for d in &devices {
                seen.insert(d.id.clone(), now);
            }
            match o {
                Op::CheckIn { device, updated } => {
                    let mut d = devices[device].clone();
                    if updated {
                        d.version = Some("1.1.0".parse().unwrap());
                    }
                    let before = r.device(&d.id).unwrap().clone();
                    let phase = r.phase().clone();
                    if let Decision::Offer { wave, .. } = r.check_in(&d, now) {
                        prop_assert!(!updated);
                        let aborted = matches!(phase, Phase::Aborted { .. });
                        prop_assert!(!aborted, "offer from an aborted rollout");
                        prop_assert_ne!(r.waves()[wave].stage, WaveStage::Pending);
                        let was_in_flight = matches!(
                            before.status,
                            DeviceStatus::Offered { .. } | DeviceStatus::Installing { .. }
                        );
                        if matches!(phase, Phase::Paused { .. }) {
                            prop_assert!(was_in_flight, "new offer while paused");
                        }
                        let succeeded = matches!(before.status, DeviceStatus::Succeeded { .. });
                        prop_assert!(!succeeded, "a succeeded device offered again");
                    }
                }
                Op::Report { device, kind } => {
                    let report = match kind {
                        0 => StatusReport::Progress { stage: "downloading".into() },
                        1 => StatusReport::Succeeded,
                        2 => StatusReport::Failed { code: "install_failed".into() },
                        _ => StatusReport::Interrupted { code: "download_failed".into() },
                    };
                    let waiting = r.device(&devices[device].id).unwrap().status == DeviceStatus::Waiting;
                    prop_assert_eq!(r.report(&devices[device].id, report, now).is_err(), waiting);
                }
                Op::Advance => {
                    let t = if with_telemetry { Some(&seen as &dyn spark_rollout::Telemetry) } else { None };
                    r.advance(now, t);
                }
                Op::Tick { minutes } => now = now.checked_add(mins(minutes)).unwrap(),
                Op::Pause => { let _ = r.pause("p", now); }
                Op::Resume => { let _ = r.resume(now, None); }
                Op::Abort => { let _ = r.abort("a", now); }
            }
            // Waves open in order, each after the previous one passed.
            for k in 1..r.waves().len() {
                if r.waves()[k].stage != WaveStage::Pending {
                    let passed = matches!(r.waves()[k - 1].stage, WaveStage::Passed { .. });
                    prop_assert!(passed);
                }
            }
            // Never more devices updating than the cap.
            if let Some(cap) = cap {
                let c: u32 = r.wave_counts(now, None).iter().map(|c| c.in_progress).sum();
                prop_assert!(c <= cap, "{} in progress, cap {}", c, cap);
            }
            // The state survives persistence.
            let back: Rollout = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            prop_assert_eq!(&back, &r);
        }
    }
}
