//! The compactness figure: 1000 meters × 96 fifteen-minute intervals of realistic load
//! (see `common/load.rs`), one batch per interval as the gateway sends them live.

mod common;

use common::load;
use spark_proto::{CodecContext, Message, Sample, decode, encode};

/// Wire overhead assumed per batch on top of the frame, for the modelled figure:
/// TLS 1.3 record (5 header + 1 type + 16 AEAD tag) + TCP/IPv4 with timestamps (52) for the batch,
/// the cloud's Ack frame in its own record and segment (12 + 22 + 52), and the gateway's bare TCP
/// ACK of it (52).
const PER_BATCH_OVERHEAD: usize = 22 + 52 + (12 + 22 + 52) + 52;

#[test]
fn one_day_of_1000_meters_is_compact_and_round_trips() {
    let start = 1_764_115_200; // 2025-11-26T00:00:00Z
    let day = load::day(1000, 96, start, 7);
    let mut gw = CodecContext::new(1, 1000);
    let mut cloud = CodecContext::new(1, 1000);
    let (mut frame_bytes, mut readings, mut frame) = (0usize, 0usize, Vec::new());
    for (i, samples) in day.iter().enumerate() {
        let batch = gw
            .build_batch(i as u64 + 1, start + i as u64 * 900, 900, samples)
            .unwrap();
        frame.clear();
        encode(&Message::ReadingsBatch(batch), &mut frame).unwrap();
        frame_bytes += frame.len();
        readings += samples.len();
        let (Message::ReadingsBatch(back), used) = decode(&frame).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(used, frame.len());
        let mut want: Vec<Sample> = samples.to_vec();
        want.sort_by_key(|s| s.meter);
        assert_eq!(cloud.expand(&back).unwrap(), want, "interval {i}");
    }
    let payload = frame_bytes as f64 / readings as f64;
    let wire = (frame_bytes + 96 * PER_BATCH_OVERHEAD) as f64 / readings as f64;
    println!(
        "1000 meters x 96 intervals: {readings} readings, {frame_bytes} frame bytes = {payload:.3} B/reading; modelled wire (TLS+TCP/IP, acks) {wire:.3} B/reading"
    );
    // A regression guard, with some slack over today's figure (1.150).
    assert!(payload < 1.2, "{payload:.3} bytes per reading");
}

/// The same day sent hourly (four intervals per batch), as the gateway does when it batches to
/// save airtime: per-batch overhead shrinks fourfold.
#[test]
fn hourly_batches_amortise_overhead() {
    let start = 1_764_115_200;
    let day = load::day(1000, 96, start, 7);
    let mut gw = CodecContext::new(1, 1000);
    let mut cloud = CodecContext::new(1, 1000);
    let (mut frame_bytes, mut readings, mut frame) = (0usize, 0usize, Vec::new());
    for (h, hour) in day.chunks(4).enumerate() {
        let samples: Vec<Sample> = hour.concat();
        let batch = gw
            .build_batch(h as u64 + 1, start + h as u64 * 3600, 900, &samples)
            .unwrap();
        frame.clear();
        encode(&Message::ReadingsBatch(batch), &mut frame).unwrap();
        frame_bytes += frame.len();
        readings += samples.len();
        let (Message::ReadingsBatch(back), _) = decode(&frame).unwrap() else {
            panic!("not a batch")
        };
        let mut want = samples;
        want.sort_by_key(|s| (s.timestamp / 900, s.meter));
        assert_eq!(cloud.expand(&back).unwrap(), want, "hour {h}");
    }
    let payload = frame_bytes as f64 / readings as f64;
    // An hourly batch of ~5 KB spans 4 TCP segments (MSS 1400): 4 × 52 + one TLS record.
    let overhead = 24 * (22 + 4 * 52 + (12 + 22 + 52) + 52);
    let wire = (frame_bytes + overhead) as f64 / readings as f64;
    println!("hourly batches: {payload:.3} B/reading payload; modelled wire {wire:.3} B/reading");
    assert!(payload < 1.2, "{payload:.3} bytes per reading");
}
