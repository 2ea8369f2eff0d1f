//! Golden byte vectors: one file per message in `tests/data/`. Encoding the fixed messages below
//! must give exactly the committed bytes, and decoding the files must give the messages back, so
//! any drift of the wire format fails CI. After an intended format change, regenerate with
//! `SPARK_PROTO_BLESS=1 cargo test -p spark-proto --test golden` and review the diff.

use spark_proto::*;
use std::path::PathBuf;

fn samples() -> Vec<(&'static str, Message)> {
    let hello = Hello {
        max_version: 1,
        min_version: 1,
        firmware_version: "2026.11.3".into(),
        booted_slot: BootSlot::B,
        last_acked_seq: 41,
        capabilities: Capabilities::UPDATES | Capabilities::EVENTS,
        roster_version: 3,
    };
    let welcome = Welcome {
        version: 1,
        server_time: 1_764_115_200,
        config_version: 7,
        roster_version: 3,
        last_committed_seq: 42,
    };
    let roster = Roster {
        version: 3,
        meters: vec![
            b"1ESY1161234567".to_vec(),
            vec![0x2c, 0x2d, 0x78, 0x56, 0x34, 0x12, 0x01, 0x07],
            b"EMH0001".to_vec(),
        ],
    };
    // Three meters, three intervals: a sync keyframe, then deltas with a missed read, a late read
    // and a register reset.
    let mut gw = CodecContext::new(3, 3);
    let t0 = 1_764_115_200;
    let batch = gw
        .build_batch(
            43,
            t0,
            900,
            &[
                Sample {
                    meter: 0,
                    timestamp: t0,
                    wh: 12_345_678,
                },
                Sample {
                    meter: 1,
                    timestamp: t0,
                    wh: 500,
                },
                Sample {
                    meter: 2,
                    timestamp: t0,
                    wh: 9_000_000,
                },
                Sample {
                    meter: 0,
                    timestamp: t0 + 900,
                    wh: 12_345_790,
                },
                Sample {
                    meter: 2,
                    timestamp: t0 + 937,
                    wh: 9_000_350,
                },
                Sample {
                    meter: 0,
                    timestamp: t0 + 1800,
                    wh: 12_345_801,
                },
                Sample {
                    meter: 1,
                    timestamp: t0 + 1800,
                    wh: 3,
                },
                Sample {
                    meter: 2,
                    timestamp: t0 + 1800,
                    wh: 9_000_351,
                },
            ],
        )
        .unwrap();
    vec![
        ("hello", Message::Hello(hello)),
        (
            "readings_batch_scaled",
            Message::ReadingsBatch(scaled_batch().0),
        ),
        (
            "readings_batch_window",
            Message::ReadingsBatch(window_batch().0),
        ),
        ("welcome", Message::Welcome(welcome)),
        ("roster", Message::Roster(roster)),
        ("readings_batch", Message::ReadingsBatch(batch)),
        ("ack", Message::Ack(Ack { seq: 43 })),
        (
            "nack",
            Message::Nack(Nack {
                seq: 44,
                code: NackCode::ResyncRequired,
                detail: "no reference for meter 2".into(),
            }),
        ),
        ("ping", Message::Ping(Ping { nonce: 0xdead_beef })),
        ("pong", Message::Pong(Pong { nonce: 0xdead_beef })),
        (
            "event_health",
            Message::Event(Event {
                seq: 45,
                time: t0 + 60,
                kind: EventKind::Health {
                    uptime_secs: 86_400,
                    queue_len: 2,
                    free_data_kib: 512_000,
                    rssi_dbm: -87,
                    meters_seen: 998,
                },
            }),
        ),
        (
            "event_health2",
            Message::Event(Event {
                seq: 47,
                time: t0 + 62,
                kind: EventKind::Health2 {
                    uptime_secs: 86_460,
                    queue_len: 3,
                    free_data_kib: 511_000,
                    rssi_dbm: -85,
                    meters_seen: 999,
                    bytes_used_today: 1_234_567,
                },
            }),
        ),
        (
            "event_meter_alarm",
            Message::Event(Event {
                seq: 46,
                time: t0 + 61,
                kind: EventKind::MeterAlarm {
                    meter_index: 2,
                    code: 0x0101,
                },
            }),
        ),
        (
            "event_meter_lost",
            Message::Event(Event {
                seq: 47,
                time: t0 + 62,
                kind: EventKind::MeterLost { meter_index: 1 },
            }),
        ),
        (
            "command_update_available",
            Message::Command(Command {
                id: 9,
                kind: CommandKind::UpdateAvailable {
                    manifest: b"{\"version\":\"2026.12.0\"}\n--sig--".to_vec(),
                },
            }),
        ),
        (
            "command_set_config",
            Message::Command(Command {
                id: 10,
                kind: CommandKind::SetConfig {
                    config_version: 8,
                    config: b"ping-secs = 240\n".to_vec(),
                },
            }),
        ),
        (
            "command_reboot",
            Message::Command(Command {
                id: 11,
                kind: CommandKind::Reboot { delay_secs: 30 },
            }),
        ),
        (
            "command_result",
            Message::CommandResult(CommandResult {
                id: 9,
                status: CommandStatus::Failed,
                code: 3,
                detail: "manifest signature invalid".into(),
            }),
        ),
    ]
}

/// Six meters, four intervals of a shared rising load with a little noise: the sync keyframe,
/// then delta intervals the encoder sends scaled (prediction from each meter's previous delta
/// times a fleet ratio). Meter 3 misses interval 2 (so in interval 3 it has no previous delta and
/// sends a plain delta inside the scaled interval), meter 4 reads 7 s late in interval 2 (an
/// offset, its value stays in the stream), meter 5 resets in interval 3 (an absolute exception).
fn scaled_batch() -> (ReadingsBatch, Vec<Sample>) {
    let t0 = 1_767_571_200;
    let scales = [120u64, 250, 310, 480, 95, 640];
    let shape = [0u64, 10, 18, 31];
    let noise = [0i64, 1, -1, 2, -2, 1, 1, -1];
    let mut samples = Vec::new();
    for (i, f) in shape.iter().enumerate() {
        for (m, scale) in scales.iter().enumerate() {
            if (m, i) == (3, 2) {
                continue;
            }
            let cumulative: u64 = shape[..=i].iter().sum::<u64>() * scale;
            let wh = if (m, i) == (5, 3) {
                17
            } else {
                (5_000_000 * m as u64 + cumulative)
                    .saturating_add_signed(noise[(m + i) % 8] * *f as i64)
            };
            let late = if (m, i) == (4, 2) { 7 } else { 0 };
            samples.push(Sample {
                meter: m as u32,
                timestamp: t0 + i as u64 * 900 + late,
                wh,
            });
        }
    }
    let batch = CodecContext::new(4, 6)
        .build_batch(44, t0, 900, &samples)
        .unwrap();
    (batch, samples)
}

/// A batch cut by reading count, as spark-uplinkd cuts them: the tail of one interval (meters
/// 30–39 of 40), then the head of the next (meters 0–11). Both intervals send their presence as
/// a window (first present meter, length) with "all but" inside it.
fn window_batch() -> (ReadingsBatch, Vec<Sample>) {
    let t0 = 1_767_571_200;
    let mut samples = Vec::new();
    for m in 30..40u32 {
        samples.push(Sample {
            meter: m,
            timestamp: t0,
            wh: 1_000 * u64::from(m),
        });
    }
    for m in 0..12u32 {
        samples.push(Sample {
            meter: m,
            timestamp: t0 + 900,
            wh: 1_000 * u64::from(m) + 200,
        });
    }
    let batch = CodecContext::new(5, 40)
        .build_batch(45, t0, 900, &samples)
        .unwrap();
    (batch, samples)
}

#[test]
fn golden_window_batch_expands() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bytes = std::fs::read(dir.join("readings_batch_window.bin")).unwrap();
    let (Message::ReadingsBatch(b), _) = decode(&bytes).unwrap() else {
        panic!("not a batch")
    };
    // Interval flags: all-but (1) | absolute (0x04) | window (0x10), right after the 16-byte
    // frame and batch header; the window starts at meter 30 and spans 10 meters, none absent.
    assert_eq!(bytes[16..20], [0x15, 30, 10, 0], "{bytes:02x?}");
    let mut got = CodecContext::new(5, 40).expand(&b).unwrap();
    let mut want = window_batch().1;
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}

/// The scaled vector uses what it is meant to show, and expands back to its samples.
#[test]
fn golden_scaled_batch_expands() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bytes = std::fs::read(dir.join("readings_batch_scaled.bin")).unwrap();
    let (Message::ReadingsBatch(b), _) = decode(&bytes).unwrap() else {
        panic!("not a batch")
    };
    let iv = &b.intervals;
    assert!(iv[0].absolute);
    assert!(iv[2].ratio.is_some(), "{b:#?}");
    assert_eq!(iv[2].offsets, vec![TimeOffset { meter: 4, secs: 7 }]);
    assert_eq!(
        iv[3].exceptions,
        vec![Exception {
            meter: 5,
            value: 17
        }]
    );
    let mut got = CodecContext::new(4, 6).expand(&b).unwrap();
    let mut want = scaled_batch().1;
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn golden_vectors() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bless = std::env::var_os("SPARK_PROTO_BLESS").is_some();
    let mut types_seen = std::collections::HashSet::new();
    for (name, msg) in samples() {
        types_seen.insert(msg.message_type());
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).unwrap();
        let path = dir.join(format!("{name}.bin"));
        if bless {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (SPARK_PROTO_BLESS=1 writes it)", path.display()));
        assert_eq!(
            bytes,
            golden,
            "{name}: encoding drifted from {}",
            path.display()
        );
        let (back, used) = decode(&golden).unwrap();
        assert_eq!(used, golden.len(), "{name}");
        assert_eq!(back, msg, "{name}");
    }
    assert_eq!(
        types_seen.len(),
        MessageType::ALL.len(),
        "every message type has a golden vector"
    );
}

/// The batch vector also expands back to its samples with a fresh cloud context.
#[test]
fn golden_batch_expands() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let bytes = std::fs::read(dir.join("readings_batch.bin")).unwrap();
    let (Message::ReadingsBatch(b), _) = decode(&bytes).unwrap() else {
        panic!("not a batch")
    };
    assert!(b.sync);
    let got = CodecContext::new(3, 3).expand(&b).unwrap();
    let t0 = 1_764_115_200;
    assert_eq!(got.len(), 8);
    assert_eq!(
        got[4],
        Sample {
            meter: 2,
            timestamp: t0 + 937,
            wh: 9_000_350
        }
    );
    assert_eq!(
        got[6],
        Sample {
            meter: 1,
            timestamp: t0 + 1800,
            wh: 3
        }
    );
}

/// Protocol version 2 added `Health2`; a version-1 session carries it as `Health`, and the
/// version-1 vector (`event_health.bin`) still decodes to `Health`.
#[test]
fn health2_on_a_version_1_session() {
    let h2 = EventKind::Health2 {
        uptime_secs: 86_400,
        queue_len: 2,
        free_data_kib: 512_000,
        rssi_dbm: -87,
        meters_seen: 998,
        bytes_used_today: 1 << 20,
    };
    let h1 = EventKind::Health {
        uptime_secs: 86_400,
        queue_len: 2,
        free_data_kib: 512_000,
        rssi_dbm: -87,
        meters_seen: 998,
    };
    assert_eq!(h2.clone().for_version(1), h1);
    assert_eq!(h2.clone().for_version(2), h2);
    assert_eq!(h1.clone().for_version(2), h1);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let (old, _) = decode(&std::fs::read(dir.join("event_health.bin")).unwrap()).unwrap();
    assert!(
        matches!(&old, Message::Event(Event { kind, .. }) if *kind == h1),
        "{old:?}"
    );
}
