//! Malformed input → the right typed error, never a panic.

use spark_proto::*;

fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 128);
    let mut f = vec![MAGIC, FRAME_VERSION, ty, payload.len() as u8];
    f.extend_from_slice(payload);
    f
}

fn ping() -> Vec<u8> {
    let mut b = Vec::new();
    encode(&Message::Ping(Ping { nonce: 7 }), &mut b).unwrap();
    b
}

/// A valid batch payload header for 8 meters and one interval, to which tests append an interval.
fn batch_head() -> Vec<u8> {
    vec![0x00, 0x01, 0x01, 0x08, 0x80, 0x07, 0x84, 0x07, 0x01]
}

#[test]
fn malformed_table() {
    use MessageType as T;
    let batch = |interval: &[u8]| frame(0x04, &[batch_head(), interval.to_vec()].concat());
    let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty", vec![], DecodeError::Incomplete),
        ("magic only", vec![MAGIC], DecodeError::Incomplete),
        (
            "header without length",
            vec![MAGIC, FRAME_VERSION, 0x07],
            DecodeError::Incomplete,
        ),
        (
            "length continues",
            vec![MAGIC, FRAME_VERSION, 0x07, 0x80],
            DecodeError::Incomplete,
        ),
        (
            "payload short",
            ping()[..6].to_vec(),
            DecodeError::Incomplete,
        ),
        (
            "bad magic",
            vec![0x16, 0x03, 0x01, 0x00],
            DecodeError::BadMagic { found: 0x16 },
        ),
        (
            "wrong version",
            vec![MAGIC, 0x02, 0x07, 0x04, 0, 0, 0, 7],
            DecodeError::UnsupportedVersion { found: 2 },
        ),
        (
            "unknown type",
            vec![MAGIC, FRAME_VERSION, 0x7f, 0x00],
            DecodeError::UnknownType { found: 0x7f },
        ),
        (
            "type zero",
            vec![MAGIC, FRAME_VERSION, 0x00, 0x00],
            DecodeError::UnknownType { found: 0x00 },
        ),
        (
            "length over 3 bytes",
            vec![MAGIC, FRAME_VERSION, 0x07, 0x80, 0x80, 0x80, 0x01],
            DecodeError::BadLength,
        ),
        (
            "length overlong",
            vec![MAGIC, FRAME_VERSION, 0x07, 0x84, 0x00],
            DecodeError::BadLength,
        ),
        (
            "length over max",
            vec![MAGIC, FRAME_VERSION, 0x07, 0x81, 0x80, 0x40],
            DecodeError::FrameTooLong { len: (1 << 20) + 1 },
        ),
        (
            "max length is checked before the payload",
            vec![MAGIC, FRAME_VERSION, 0x04, 0xff, 0xff, 0x7f],
            DecodeError::FrameTooLong { len: (1 << 21) - 1 },
        ),
        (
            "ping truncated inside frame",
            frame(0x07, &[0, 0, 7]),
            DecodeError::Truncated {
                msg_type: T::Ping,
                field: "payload",
            },
        ),
        (
            "ping trailing bytes",
            frame(0x07, &[0, 0, 0, 7, 0]),
            DecodeError::TrailingBytes {
                msg_type: T::Ping,
                count: 1,
            },
        ),
        (
            "ack trailing bytes",
            frame(0x05, &[0; 9]),
            DecodeError::TrailingBytes {
                msg_type: T::Ack,
                count: 1,
            },
        ),
        (
            "hello bad boot slot",
            frame(
                0x01,
                &[
                    0, 1, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
            ),
            DecodeError::Invalid {
                msg_type: T::Hello,
                field: "payload",
                reason: "Parse error: Could not match enum variant: ID 7 not found on BootSlot"
                    .into(),
            },
        ),
        (
            "nack detail not UTF-8",
            frame(0x06, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 0xff, 0xfe]),
            invalid_any(T::Nack),
        ),
        (
            "roster count beyond payload",
            frame(0x03, &[0x01, 0x05, 0x01, 0xaa]),
            DecodeError::Truncated {
                msg_type: T::Roster,
                field: "meter ids",
            },
        ),
        (
            "roster id over cap",
            frame(0x03, &[0x01, 0x01, 0, 33]),
            invalid_field(T::Roster, "meter id length"),
        ),
        (
            "roster shared prefix beyond the previous id",
            frame(0x03, &[0x01, 0x01, 1, 1, b'a']),
            invalid_field(T::Roster, "meter id length"),
        ),
        (
            "roster shared prefix not the longest",
            frame(0x03, &[0x01, 0x02, 0, 2, b'a', b'b', 1, 1, b'b']),
            invalid_field(T::Roster, "meter id shared prefix"),
        ),
        (
            "roster count over cap",
            frame(0x03, &[0x01, 0x81, 0x80, 0x01]),
            invalid_any(T::Roster),
        ),
        (
            "batch varint overflow",
            frame(
                0x04,
                &[
                    0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
            ),
            DecodeError::VarintOverflow {
                msg_type: T::ReadingsBatch,
                field: "seq",
            },
        ),
        (
            "batch varint overlong",
            frame(0x04, &[0x00, 0x81, 0x00]),
            DecodeError::VarintOverflow {
                msg_type: T::ReadingsBatch,
                field: "seq",
            },
        ),
        (
            "batch unknown flags",
            frame(0x04, &[0x80]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch zero intervals",
            frame(
                0x04,
                &[0x00, 0x01, 0x01, 0x08, 0x80, 0x07, 0x84, 0x07, 0x00],
            ),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch zero interval_secs",
            frame(0x04, &[0x00, 0x01, 0x01, 0x08, 0x80, 0x07, 0x00, 0x01]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch roster over cap",
            frame(0x04, &[0x00, 0x01, 0x01, 0x81, 0x80, 0x02]),
            invalid_any(T::ReadingsBatch),
        ),
        // Interval: flags 0x01 (all except), 0 absent, 0 exceptions, 0 offsets, k=3, then 8 values.
        (
            "batch rice truncated",
            batch(&[0x01, 0x00, 0x00, 0x00, 0x03, 0x00]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch rice k over cap",
            batch(&[0x01, 0x00, 0x00, 0x00, 41, 0, 0, 0, 0, 0, 0, 0, 0]),
            invalid_any(T::ReadingsBatch),
        ),
        // 8 values of 1 bit each (k=0, value 0) fill one byte exactly: valid, so one more byte trails.
        (
            "batch trailing bytes",
            batch(&[0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
            DecodeError::TrailingBytes {
                msg_type: T::ReadingsBatch,
                count: 1,
            },
        ),
        // Bitmap: meters 0 and 1; k=0; values 0,0 = two bits; the other six bits must be zero.
        (
            "batch non-zero padding",
            batch(&[0x02, 0x03, 0x00, 0x00, 0x00, 0x01]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch exception for absent meter",
            batch(&[0x02, 0x01, 0x01, 0x03, 0x05]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch absent meter beyond roster",
            batch(&[0x01, 0x01, 0x08, 0x00]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch too many readings for payload",
            frame(
                0x04,
                &[
                    0x00, 0x01, 0x01, 0x80, 0x40, 0x80, 0x07, 0x84, 0x07, 0x01, 0x01, 0x00,
                ],
            ),
            invalid_any(T::ReadingsBatch),
        ),
        // Offsets: count, a byte of Rice parameters (gaps << 4 | offsets), then bits.
        (
            "batch zero time offset",
            batch(&[0x02, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05]),
            invalid_field(T::ReadingsBatch, "time offset"),
        ),
        (
            "batch offset for absent meter",
            batch(&[0x02, 0x01, 0x00, 0x01, 0x00, 0xc0, 0x00, 0x05]),
            invalid_field(T::ReadingsBatch, "offset meter"),
        ),
        (
            "batch offset meter beyond roster",
            batch(&[0x01, 0x00, 0x00, 0x01, 0x00, 0xff, 0x00]),
            invalid_field(T::ReadingsBatch, "offset meter"),
        ),
        (
            "batch offsets non-zero padding",
            batch(&[0x02, 0x01, 0x00, 0x01, 0x00, 0x61, 0x00, 0x05]),
            invalid_field(T::ReadingsBatch, "offsets"),
        ),
        (
            "batch offsets truncated",
            batch(&[0x01, 0x00, 0x00, 0x02, 0x00, 0xff]),
            invalid_field(T::ReadingsBatch, "offsets"),
        ),
        (
            "batch presence list where the bitmap is shorter",
            batch(&[0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]),
            invalid_field(T::ReadingsBatch, "presence"),
        ),
        (
            "batch presence window that does not pay",
            batch(&[0x11, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00]),
            invalid_field(T::ReadingsBatch, "presence"),
        ),
        (
            "batch presence window beyond the roster",
            batch(&[0x11, 0x02, 0x07, 0x00]),
            invalid_field(T::ReadingsBatch, "window length"),
        ),
        (
            "batch scaled keyframe",
            batch(&[0x0d, 0x04, 0x00, 0x00, 0x00, 0x00]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch unknown interval flag",
            batch(&[0x21, 0x00, 0x00, 0x00, 0x00, 0x00]),
            invalid_any(T::ReadingsBatch),
        ),
        (
            "batch ratio truncated",
            batch(&[0x09, 0x04]),
            DecodeError::Truncated {
                msg_type: T::ReadingsBatch,
                field: "ratio",
            },
        ),
        (
            "batch truncated interval",
            batch(&[0x02]),
            DecodeError::Truncated {
                msg_type: T::ReadingsBatch,
                field: "presence bitmap",
            },
        ),
        (
            "command manifest over cap",
            frame(
                0x0a,
                &[0, 0, 0, 0, 0, 0, 0, 1, 0x01, 0x00, 0x01, 0x00, 0x01],
            ),
            invalid_any(T::Command),
        ),
        (
            "command unknown kind",
            frame(0x0a, &[0, 0, 0, 0, 0, 0, 0, 1, 0x09]),
            invalid_any(T::Command),
        ),
    ];
    for (name, bytes, want) in cases {
        let got = decode(&bytes).map(|(m, _)| m);
        match (&got, &want) {
            (
                Err(DecodeError::Invalid {
                    msg_type, field, ..
                }),
                DecodeError::Invalid {
                    msg_type: w,
                    field: wf,
                    reason,
                },
            ) if reason == ANY => {
                assert_eq!(msg_type, w, "{name}: {got:?}");
                if !wf.is_empty() {
                    assert_eq!(field, wf, "{name}: {got:?}");
                }
            }
            _ => assert_eq!(got, Err(want), "{name}"),
        }
    }
}

const ANY: &str = "<any reason>";

/// Any `Invalid` error of this type on this field.
fn invalid_field(msg_type: MessageType, field: &'static str) -> DecodeError {
    DecodeError::Invalid {
        msg_type,
        field,
        reason: ANY.into(),
    }
}

fn invalid_any(msg_type: MessageType) -> DecodeError {
    DecodeError::Invalid {
        msg_type,
        field: "",
        reason: ANY.into(),
    }
}

#[test]
fn every_prefix_of_a_valid_frame_is_incomplete() {
    let mut b = Vec::new();
    let roster = Roster {
        version: 1,
        meters: vec![vec![1; 20]; 10],
    };
    encode(&Message::Roster(roster), &mut b).unwrap();
    for n in 0..b.len() {
        assert_eq!(check(&b[..n]), Err(DecodeError::Incomplete), "prefix {n}");
    }
    assert_eq!(check(&b), Ok(b.len()));
}

#[test]
fn encode_refuses_over_cap_values() {
    let mut out = Vec::new();
    let long = Message::Hello(Hello {
        max_version: 1,
        min_version: 1,
        firmware_version: "x".repeat(MAX_VERSION_LEN + 1),
        booted_slot: BootSlot::A,
        last_acked_seq: 0,
        capabilities: Capabilities::default(),
        roster_version: 0,
    });
    assert!(matches!(
        encode(&long, &mut out),
        Err(EncodeError::Invalid {
            msg_type: MessageType::Hello,
            ..
        })
    ));
    let big = Message::Command(Command {
        id: 1,
        kind: CommandKind::UpdateAvailable {
            manifest: vec![0; MAX_MANIFEST_LEN + 1],
        },
    });
    assert!(encode(&big, &mut out).is_err());
    let bad = Message::ReadingsBatch(ReadingsBatch {
        seq: 1,
        sync: false,
        roster_version: 1,
        roster_len: 2,
        interval_start: 0,
        interval_secs: 900,
        intervals: vec![IntervalReadings {
            absolute: false,
            present: vec![0, 5],
            values: vec![1, 2],
            ..Default::default()
        }],
    });
    assert!(matches!(
        encode(&bad, &mut out),
        Err(EncodeError::Invalid {
            msg_type: MessageType::ReadingsBatch,
            ..
        })
    ));
    assert!(out.is_empty(), "nothing appended on error");
}

#[test]
fn nack_codes_round_trip_including_unknown() {
    for v in 0..=20u16 {
        assert_eq!(u16::from(NackCode::from(v)), v);
    }
    assert_eq!(NackCode::from(0x0004), NackCode::ResyncRequired);
    assert_eq!(NackCode::from(0x1234), NackCode::Unknown(0x1234));
}

#[test]
fn expand_errors_leave_the_context_untouched() {
    let mut gw = CodecContext::new(1, 2);
    let s = |m, t, wh| Sample {
        meter: m,
        timestamp: t,
        wh,
    };
    let b1 = gw
        .build_batch(1, 900, 900, &[s(0, 900, 10), s(1, 900, 20)])
        .unwrap();
    let b2 = gw
        .build_batch(2, 1800, 900, &[s(0, 1800, 15), s(1, 1800, 27)])
        .unwrap();
    assert!(b1.sync && !b2.sync);
    let mut cloud = CodecContext::new(1, 2);
    // The cloud missed b1 (say, it Nacked it): a fresh context waits for a sync batch.
    assert_eq!(cloud.expand(&b2), Err(ExpandError::AwaitingSync { seq: 2 }));
    assert_eq!(cloud.expand(&b1).unwrap().len(), 2);
    assert_eq!(
        cloud.expand(&b2).unwrap(),
        vec![s(0, 1800, 15), s(1, 1800, 27)]
    );
    // A delta for a meter the session has no reference for is refused, and changes nothing.
    let mut b3 = b2.clone();
    b3.seq = 3;
    b3.intervals[0].present = vec![1];
    b3.intervals[0].values = vec![5];
    let mut fresh = CodecContext::new(1, 2);
    let mut only_meter_0 = b1.clone();
    only_meter_0.intervals[0].present = vec![0];
    only_meter_0.intervals[0].values = vec![10];
    fresh.expand(&only_meter_0).unwrap();
    let before = format!("{fresh:?}");
    assert_eq!(
        fresh.expand(&b3),
        Err(ExpandError::NoReference {
            meter: 1,
            interval: 0
        })
    );
    assert_eq!(format!("{fresh:?}"), before);
    assert_eq!(
        ExpandError::NoReference {
            meter: 1,
            interval: 0
        }
        .nack_code(),
        NackCode::ResyncRequired
    );
    // A batch for another roster version is refused.
    let mut other = CodecContext::new(2, 2);
    assert!(matches!(
        other.expand(&b2),
        Err(ExpandError::RosterMismatch { .. })
    ));
}

#[test]
fn build_errors() {
    let mut gw = CodecContext::new(1, 2);
    let s = |m, t| Sample {
        meter: m,
        timestamp: t,
        wh: 1,
    };
    assert_eq!(gw.build_batch(1, 900, 900, &[]), Err(BuildError::Empty));
    assert_eq!(
        gw.build_batch(1, 900, 0, &[s(0, 900)]),
        Err(BuildError::ZeroInterval)
    );
    assert_eq!(
        gw.build_batch(1, 900, 900, &[s(2, 900)]),
        Err(BuildError::UnknownMeter {
            meter: 2,
            roster_len: 2
        })
    );
    assert_eq!(
        gw.build_batch(1, 900, 900, &[s(0, 449)]),
        Err(BuildError::BeforeStart {
            meter: 0,
            timestamp: 449,
            start: 900
        })
    );
    assert_eq!(
        gw.build_batch(1, 900, 900, &[s(0, 900), s(0, 1000)]),
        Err(BuildError::DuplicateSample {
            meter: 0,
            interval: 0
        })
    );
    assert_eq!(
        gw.build_batch(1, 0, 900, &[s(0, 96 * 900)]),
        Err(BuildError::TooManyIntervals { needed: 97 })
    );
}

#[test]
fn expand_refuses_hand_built_inconsistent_batches() {
    let mut ctx = CodecContext::new(1, 2);
    let batch = |present: Vec<u32>, values: Vec<u64>| ReadingsBatch {
        seq: 1,
        sync: true,
        roster_version: 1,
        roster_len: 2,
        interval_start: 0,
        interval_secs: 900,
        intervals: vec![IntervalReadings {
            absolute: true,
            present,
            values,
            ..Default::default()
        }],
    };
    assert!(matches!(
        ctx.expand(&batch(vec![0, 7], vec![1, 2])),
        Err(ExpandError::Inconsistent { .. })
    ));
    assert!(matches!(
        ctx.expand(&batch(vec![0, 1], vec![1])),
        Err(ExpandError::Inconsistent { .. })
    ));
    let mut scaled_keyframe = batch(vec![0, 1], vec![1, 2]);
    scaled_keyframe.intervals[0].ratio = Some(RATIO_ONE);
    assert!(matches!(
        ctx.expand(&scaled_keyframe),
        Err(ExpandError::Inconsistent { .. })
    ));
    let mut stray_offset = batch(vec![0], vec![1]);
    stray_offset.intervals[0].offsets = vec![TimeOffset { meter: 1, secs: 3 }];
    assert!(matches!(
        ctx.expand(&stray_offset),
        Err(ExpandError::Inconsistent { .. })
    ));
    assert_eq!(ctx.expand(&batch(vec![0, 1], vec![1, 2])).unwrap().len(), 2);
}

/// A scaled interval whose residual would take the delta below zero or the register past u64
/// is refused, and the context stays as it was.
#[test]
fn expand_refuses_scaled_residuals_out_of_range() {
    let mut gw = CodecContext::new(1, 1);
    let mut cloud = CodecContext::new(1, 1);
    let s = |t: u64, wh| Sample {
        meter: 0,
        timestamp: t,
        wh,
    };
    // Two intervals give meter 0 a previous delta of 100 on both ends.
    let b = gw
        .build_batch(1, 0, 900, &[s(0, 1000), s(900, 1100), s(1800, 1200)])
        .unwrap();
    cloud.expand(&b).unwrap();
    let scaled = |seq, residual: u64| ReadingsBatch {
        seq,
        sync: false,
        roster_version: 1,
        roster_len: 1,
        interval_start: 2700,
        interval_secs: 900,
        intervals: vec![IntervalReadings {
            ratio: Some(RATIO_ONE),
            present: vec![0],
            values: vec![residual],
            ..Default::default()
        }],
    };
    // zigzag 201 = −101: predicted 100, delta −1.
    assert_eq!(
        cloud.expand(&scaled(2, 201)),
        Err(ExpandError::Overflow { meter: 0 })
    );
    // zigzag 4 = +2: predicted 100, delta 102 — the context was left as it was.
    assert_eq!(cloud.expand(&scaled(2, 4)).unwrap(), vec![s(2700, 1302)]);
}

#[test]
fn version_negotiation() {
    let hello = |min_version, max_version| Hello {
        max_version,
        min_version,
        firmware_version: String::new(),
        booted_slot: BootSlot::A,
        last_acked_seq: 0,
        capabilities: Capabilities::default(),
        roster_version: 0,
    };
    assert_eq!(PROTOCOL_VERSION, 2);
    assert_eq!(hello(1, 1).negotiate(), Some(1), "a version-1 gateway");
    assert_eq!(hello(1, 2).negotiate(), Some(2));
    assert_eq!(
        hello(1, 9).negotiate(),
        Some(PROTOCOL_VERSION),
        "a newer gateway talks our version"
    );
    assert_eq!(
        hello(3, 9).negotiate(),
        None,
        "a gateway that dropped our version"
    );
    assert_eq!(
        hello(0, 0).negotiate(),
        None,
        "a gateway older than we accept"
    );
}
