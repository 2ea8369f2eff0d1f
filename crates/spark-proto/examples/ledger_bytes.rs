//! Frame bytes per reading on a real ledger, so the compactness figure is reproducible on the
//! data the daemons see (the meter simulator's), not only on `tests/common/load.rs`.
//!
//! ```text
//! ./target/debug/spark-meter-sim --socket /tmp/x.sock --meters 1000 --intervals 96 \
//!     --interval-ms 5 --seed 7 --ledger /tmp/l.csv
//! cargo run --release -p spark-proto --example ledger_bytes -- /tmp/l.csv   # or SPARK_LEDGER=…
//! ```
//!
//! The ledger is CSV `meter_id,timestamp,wh` (a header line is skipped). Meters are numbered in
//! sorted id order (the simulator's roster order), the schedule is 900 s from the first timestamp
//! rounded down. The day is encoded twice, one batch per interval and one batch per hour (four
//! intervals), each through a fresh context as after a connect (so the first batch is a sync
//! keyframe), decoded, expanded and compared with the input.

use spark_proto::{CodecContext, Message, Sample, decode, encode};
use std::collections::BTreeMap;

const SECS: u64 = 900;

fn main() {
    let path = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SPARK_LEDGER").ok())
        .unwrap_or_else(|| {
            eprintln!("usage: ledger_bytes LEDGER.csv (or SPARK_LEDGER=LEDGER.csv)");
            std::process::exit(2)
        });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("cannot read {path}: {e}");
        std::process::exit(1)
    });
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 3 {
            continue;
        }
        match (f[1].parse::<u64>(), f[2].parse::<u64>()) {
            (Ok(t), Ok(wh)) => rows.push((f[0].to_string(), t, wh)),
            _ if n == 0 => {} // header
            _ => {
                eprintln!("{path}:{}: not meter_id,timestamp,wh", n + 1);
                std::process::exit(1)
            }
        }
    }
    if rows.is_empty() {
        eprintln!("{path}: no readings");
        std::process::exit(1)
    }
    let ids: BTreeMap<&str, u32> = {
        let mut ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().zip(0..).collect()
    };
    let start = rows.iter().map(|r| r.1).min().unwrap_or(0) / SECS * SECS;
    let mut slots: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
    for (id, t, wh) in &rows {
        // Nearest slot, as build_batch places it.
        let slot = (t - start + SECS / 2) / SECS;
        slots.entry(slot).or_default().push(Sample {
            meter: ids[id.as_str()],
            timestamp: *t,
            wh: *wh,
        });
    }
    let roster_len = ids.len() as u32;
    let n_slots = slots.keys().last().map_or(0, |s| s + 1);
    println!(
        "{path}: {} readings, {roster_len} meters, {n_slots} intervals of {SECS} s",
        rows.len()
    );
    // As spark-uplinkd cuts them: consecutive chunks of 2048 readings (one `Meters1.Fetch`),
    // each starting at its first reading's schedule point, so intervals straddle batches.
    {
        let ordered: Vec<Sample> = slots.values().flatten().copied().collect();
        let (mut bytes, mut batches) = (0, 0);
        let mut gw = CodecContext::new(1, roster_len);
        let mut cloud = CodecContext::new(1, roster_len);
        let mut frame = Vec::new();
        for chunk in ordered.chunks(2048) {
            let first = chunk.iter().map(|s| s.timestamp).min().unwrap_or(0);
            let chunk_start = start + (first - start + SECS / 2) / SECS * SECS;
            batches += 1;
            let batch = gw
                .build_batch(batches as u64, chunk_start, SECS as u32, chunk)
                .expect("chunk builds into a batch");
            frame.clear();
            encode(&Message::ReadingsBatch(batch), &mut frame).expect("batch encodes");
            bytes += frame.len();
            let Ok((Message::ReadingsBatch(back), _)) = decode(&frame) else {
                panic!("batch {batches} does not decode")
            };
            let mut got = cloud.expand(&back).expect("batch expands");
            let mut want = chunk.to_vec();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "chunk {batches} does not round-trip");
        }
        println!(
            "2048-reading chunks (as spark-uplinkd cuts them): {batches} batches, {bytes} frame bytes = {:.3} B/reading",
            bytes as f64 / rows.len() as f64
        );
    }
    for per_batch in [1u64, 4] {
        let (bytes, batches) = run(&slots, n_slots, per_batch, start, roster_len);
        println!(
            "{:>2} interval(s) per batch: {batches} batches, {bytes} frame bytes = {:.3} B/reading",
            per_batch,
            bytes as f64 / rows.len() as f64
        );
    }
}

/// Encodes the day in batches of `per_batch` intervals; returns (frame bytes, batches).
fn run(
    slots: &BTreeMap<u64, Vec<Sample>>,
    n_slots: u64,
    per_batch: u64,
    start: u64,
    roster_len: u32,
) -> (usize, usize) {
    let mut gw = CodecContext::new(1, roster_len);
    let mut cloud = CodecContext::new(1, roster_len);
    let (mut bytes, mut batches, mut frame) = (0, 0, Vec::new());
    let mut first = 0;
    while first < n_slots {
        let samples: Vec<Sample> = slots
            .range(first..first + per_batch)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        let batch_start = start + first * SECS;
        first += per_batch;
        if samples.is_empty() {
            continue;
        }
        batches += 1;
        let batch = gw
            .build_batch(batches as u64, batch_start, SECS as u32, &samples)
            .expect("ledger rows build into a batch");
        frame.clear();
        encode(&Message::ReadingsBatch(batch), &mut frame).expect("batch encodes");
        bytes += frame.len();
        let Ok((Message::ReadingsBatch(back), _)) = decode(&frame) else {
            panic!("batch {batches} does not decode")
        };
        let mut got = cloud.expand(&back).expect("batch expands");
        let mut want = samples;
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "batch {batches} does not round-trip");
    }
    (bytes, batches)
}
