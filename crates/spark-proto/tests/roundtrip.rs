//! Property tests: every message survives encode → decode; batches built from arbitrary samples
//! (missed reads, register resets, off-schedule reads, sync after reconnect, periodic keyframes)
//! expand back to exactly those samples; arbitrary bytes never panic the decoder.

use proptest::collection::vec;
use proptest::prelude::*;
use spark_proto::*;

fn short_string(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{}}}", max / 4)).unwrap()
}

fn batch() -> impl Strategy<Value = ReadingsBatch> {
    (0u32..40, 1usize..4).prop_flat_map(|(roster_len, n_intervals)| {
        let interval = vec(
            // Per meter: absent, plain value, or exception (absolute register); a value, an
            // optional time offset (0: none), and a scale. Per interval: an optional ratio.
            (
                vec(
                    (0u8..3, any::<u64>(), -450i32..450, 0u32..3),
                    roster_len as usize,
                ),
                proptest::option::of(any::<u16>()),
            ),
            n_intervals,
        );
        (
            any::<u64>(),
            any::<bool>(),
            any::<u32>(),
            any::<u64>(),
            1u32..,
            any::<bool>(),
            interval,
        )
            .prop_map(
                move |(seq, sync, roster_version, interval_start, interval_secs, absolute, ivs)| {
                    ReadingsBatch {
                        seq,
                        sync,
                        roster_version,
                        roster_len,
                        interval_start,
                        interval_secs,
                        intervals: ivs
                            .into_iter()
                            .map(|(meters, ratio)| {
                                let mut iv = IntervalReadings {
                                    absolute,
                                    ratio: ratio.filter(|_| !absolute),
                                    ..Default::default()
                                };
                                for (m, (what, value, offset, scale)) in
                                    meters.into_iter().enumerate()
                                {
                                    let meter = m as u32;
                                    // Scale values so both small deltas and full-width ones (escapes) occur.
                                    let value = value >> [56, 40, 0][scale as usize];
                                    match what {
                                        0 => continue,
                                        2 if !absolute => {
                                            iv.exceptions.push(Exception { meter, value })
                                        }
                                        _ => iv.values.push(value),
                                    }
                                    iv.present.push(meter);
                                    if offset != 0 {
                                        iv.offsets.push(TimeOffset {
                                            meter,
                                            secs: offset,
                                        });
                                    }
                                }
                                iv
                            })
                            .collect(),
                    }
                },
            )
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            short_string(64),
            any::<bool>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(
                    max_version,
                    min_version,
                    firmware_version,
                    b,
                    last_acked_seq,
                    caps,
                    roster_version,
                )| {
                    Message::Hello(Hello {
                        max_version,
                        min_version,
                        firmware_version,
                        booted_slot: if b { BootSlot::B } else { BootSlot::A },
                        last_acked_seq,
                        capabilities: Capabilities(caps),
                        roster_version,
                    })
                }
            ),
        (
            any::<u16>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>()
        )
            .prop_map(
                |(version, server_time, config_version, roster_version, last_committed_seq)| {
                    Message::Welcome(Welcome {
                        version,
                        server_time,
                        config_version,
                        roster_version,
                        last_committed_seq,
                    })
                }
            ),
        (
            any::<u32>(),
            vec(vec(any::<u8>(), 0..=MAX_METER_ID_LEN), 0..50)
        )
            .prop_map(|(version, meters)| Message::Roster(Roster { version, meters })),
        batch().prop_map(Message::ReadingsBatch),
        any::<u64>().prop_map(|seq| Message::Ack(Ack { seq })),
        (any::<u64>(), any::<u16>(), short_string(255)).prop_map(|(seq, code, detail)| {
            Message::Nack(Nack {
                seq,
                code: NackCode::from(code),
                detail,
            })
        }),
        any::<u32>().prop_map(|nonce| Message::Ping(Ping { nonce })),
        any::<u32>().prop_map(|nonce| Message::Pong(Pong { nonce })),
        (
            any::<u64>(),
            any::<u64>(),
            any::<(u32, u32, u32, i8, u32)>()
        )
            .prop_map(
                |(seq, time, (uptime_secs, queue_len, free_data_kib, rssi_dbm, meters_seen))| {
                    Message::Event(Event {
                        seq,
                        time,
                        kind: EventKind::Health {
                            uptime_secs,
                            queue_len,
                            free_data_kib,
                            rssi_dbm,
                            meters_seen,
                        },
                    })
                }
            ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<(u32, u32, u32, i8, u32)>(),
            any::<u64>()
        )
            .prop_map(
                |(
                    seq,
                    time,
                    (uptime_secs, queue_len, free_data_kib, rssi_dbm, meters_seen),
                    bytes_used_today,
                )| {
                    Message::Event(Event {
                        seq,
                        time,
                        kind: EventKind::Health2 {
                            uptime_secs,
                            queue_len,
                            free_data_kib,
                            rssi_dbm,
                            meters_seen,
                            bytes_used_today,
                        },
                    })
                }
            ),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<u16>()).prop_map(
            |(seq, time, meter_index, code)| Message::Event(Event {
                seq,
                time,
                kind: EventKind::MeterAlarm { meter_index, code }
            })
        ),
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(seq, time, meter_index)| {
            Message::Event(Event {
                seq,
                time,
                kind: EventKind::MeterLost { meter_index },
            })
        }),
        (any::<u64>(), vec(any::<u8>(), 0..2000)).prop_map(|(id, manifest)| Message::Command(
            Command {
                id,
                kind: CommandKind::UpdateAvailable { manifest }
            }
        )),
        (any::<u64>(), any::<u32>(), vec(any::<u8>(), 0..500)).prop_map(
            |(id, config_version, config)| Message::Command(Command {
                id,
                kind: CommandKind::SetConfig {
                    config_version,
                    config
                }
            })
        ),
        (any::<u64>(), any::<u32>()).prop_map(|(id, delay_secs)| Message::Command(Command {
            id,
            kind: CommandKind::Reboot { delay_secs }
        })),
        (any::<u64>(), 0u8..4, any::<u16>(), short_string(255)).prop_map(
            |(id, s, code, detail)| {
                let status = [
                    CommandStatus::Accepted,
                    CommandStatus::Succeeded,
                    CommandStatus::Failed,
                    CommandStatus::Rejected,
                ][s as usize];
                Message::CommandResult(CommandResult {
                    id,
                    status,
                    code,
                    detail,
                })
            }
        ),
    ]
}

/// Per (meter, interval): absent, or a reading with a consumption step, an optional register
/// reset and an optional off-schedule offset.
#[derive(Debug, Clone)]
struct Read {
    present: bool,
    delta: u64,
    reset: Option<u64>,
    offset: i32,
}

fn reads(meters: usize, intervals: usize) -> impl Strategy<Value = Vec<Vec<Read>>> {
    let read = (
        0u8..20,
        0u64..5000,
        0u8..30,
        any::<u64>(),
        0u8..10,
        -449i32..=449,
    )
        .prop_map(|(p, delta, r, reset, o, offset)| Read {
            present: p != 0,
            // Mostly household-sized deltas, sometimes huge ones.
            delta: if delta == 0 { reset >> 20 } else { delta },
            reset: (r == 0).then_some(reset >> 24),
            offset: if o == 0 { offset } else { 0 },
        });
    vec(vec(read, meters), intervals)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).unwrap();
        prop_assert_eq!(check(&bytes), Ok(bytes.len()));
        let (back, used) = decode(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, msg);
        // Frames are self-delimiting: a following frame is left alone.
        bytes.extend_from_slice(&[MAGIC, FRAME_VERSION]);
        prop_assert_eq!(decode(&bytes).unwrap().1, used);
    }

    #[test]
    fn build_encode_decode_expand_is_identity(
        (meters, grid) in (1usize..30, 1usize..12).prop_flat_map(|(m, i)| (Just(m), reads(m, i))),
        start in 1_000u64..4_000_000_000,
        split in 1usize..6,
        reconnect_at in 0usize..4,
        keyframe_every in 0u32..4,
    ) {
        // Registers as the meters would show them.
        let mut reg: Vec<u64> = (0..meters as u64).map(|m| m * 1_000_003).collect();
        let mut per_interval: Vec<Vec<Sample>> = Vec::new();
        for (i, row) in grid.iter().enumerate() {
            let mut s = Vec::new();
            for (m, r) in row.iter().enumerate() {
                reg[m] = match r.reset { Some(v) => v, None => reg[m].saturating_add(r.delta) };
                if r.present {
                    let ts = (start + i as u64 * 900).checked_add_signed(i64::from(r.offset)).unwrap();
                    s.push(Sample { meter: m as u32, timestamp: ts, wh: reg[m] });
                }
            }
            per_interval.push(s);
        }
        let mut gw = CodecContext::new(5, meters as u32).with_keyframe_every(keyframe_every);
        let mut cloud = CodecContext::new(5, meters as u32);
        let mut seq = 0;
        for (c, chunk) in per_interval.chunks(split).enumerate() {
            if c == reconnect_at {
                // The link dropped: both ends start a new session.
                gw.reset_session();
                cloud.reset_session();
            }
            let first = c * split;
            let samples: Vec<Sample> = chunk.concat();
            if samples.is_empty() {
                continue;
            }
            seq += 1;
            let batch = gw.build_batch(seq, start + first as u64 * 900, 900, &samples).unwrap();
            let mut bytes = Vec::new();
            encode(&Message::ReadingsBatch(batch.clone()), &mut bytes).unwrap();
            let (msg, _) = decode(&bytes).unwrap();
            prop_assert_eq!(&msg, &Message::ReadingsBatch(batch));
            let Message::ReadingsBatch(b) = msg else { unreachable!() };
            let mut want = samples;
            want.sort_by_key(|s| ((s.timestamp as i64 - start as i64 + 450).div_euclid(900), s.meter));
            prop_assert_eq!(cloud.expand(&b).unwrap(), want);
        }
    }

    /// Loads that follow a shared shape, so the encoder picks the scaled prediction, with missed
    /// reads, resets, late reads, a huge jump, a reconnect and a skipped hour (a gap between
    /// batches that must drop the previous deltas on both ends).
    #[test]
    fn shaped_load_round_trips_through_scaled_prediction(
        scales in vec(1u64..3000, 1..40),
        shape in vec(1u64..4000, 2..16),
        noise in vec(vec((900u64..1100, 0u8..40, -449i32..=449), 40), 16),
        split in 1usize..5,
        reconnect_at in 0usize..6,
        skip in 0usize..6,
        jump in proptest::option::of((0usize..40, 0usize..16)),
    ) {
        let meters = scales.len();
        let start = 1_767_571_200u64;
        let mut reg: Vec<u64> = (0..meters as u64).map(|m| m * 7_919).collect();
        let mut per_interval = Vec::new();
        for (i, f) in shape.iter().enumerate() {
            let mut s = Vec::new();
            for m in 0..meters {
                let (n, event, offset) = noise[i][m];
                reg[m] = match event {
                    0 => 3, // register reset
                    _ if jump == Some((m, i)) => reg[m].saturating_add(1 << 63),
                    _ => reg[m].saturating_add(scales[m] * f * n / 1000),
                };
                if event != 1 {
                    let offset = if event < 4 { offset } else { 0 };
                    let ts = (start + i as u64 * 900).checked_add_signed(i64::from(offset)).unwrap();
                    s.push(Sample { meter: m as u32, timestamp: ts, wh: reg[m] });
                }
            }
            per_interval.push(s);
        }
        let mut gw = CodecContext::new(9, meters as u32);
        let mut cloud = CodecContext::new(9, meters as u32);
        let mut seq = 0;
        for (c, chunk) in per_interval.chunks(split).enumerate() {
            if c == skip && c > 0 {
                continue; // never sent: the next batch starts after a gap
            }
            if c == reconnect_at {
                gw.reset_session();
                cloud.reset_session();
            }
            let samples: Vec<Sample> = chunk.concat();
            if samples.is_empty() {
                continue;
            }
            seq += 1;
            let batch = gw.build_batch(seq, start + (c * split) as u64 * 900, 900, &samples).unwrap();
            let mut bytes = Vec::new();
            encode(&Message::ReadingsBatch(batch.clone()), &mut bytes).unwrap();
            let (msg, _) = decode(&bytes).unwrap();
            prop_assert_eq!(&msg, &Message::ReadingsBatch(batch));
            let Message::ReadingsBatch(b) = msg else { unreachable!() };
            let mut want = samples;
            want.sort_by_key(|s| ((s.timestamp as i64 - start as i64 + 450).div_euclid(900), s.meter));
            prop_assert_eq!(cloud.expand(&b).unwrap(), want);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        let _ = check(&bytes);
        if let Ok((msg, used)) = decode(&bytes) {
            // Whatever decodes re-encodes to something that decodes to the same message.
            let mut again = Vec::new();
            encode(&msg, &mut again).unwrap();
            prop_assert_eq!(decode(&again).unwrap().0, msg);
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn corrupted_frames_never_panic(msg in message(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = Vec::new();
        encode(&msg, &mut bytes).unwrap();
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Ok((Message::ReadingsBatch(b), _)) = decode(&bytes) {
            // Expanding garbage against a context is an error or samples, never a panic.
            let _ = CodecContext::new(b.roster_version, b.roster_len).expand(&b);
        }
    }
}
