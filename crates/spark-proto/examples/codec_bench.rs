//! Codec speed and size on the hot path, and deku against hand-written code.
//!
//! `cargo run --release -p spark-proto --example codec_bench`
//!
//! 1. The real codec: build + encode, and decode + expand, of one 1000-meter interval batch and of
//!    a 4-interval (hourly) batch, from the realistic day in `tests/common/load.rs`.
//! 2. deku vs hand-written on the same bytes: a 1000-value varint vector (the shape of a batch body
//!    if it were byte-aligned) read and written through deku's `Reader`/`Writer` with a `Varint`
//!    element type, against a plain loop. This is what decided to hand-write batches.
//! 3. deku on a small message (`Hello`) through the public `encode`/`decode`, to show deku costs
//!    nothing that matters where it is used.

#[path = "../tests/common/load.rs"]
mod load;

use deku::prelude::*;
use deku::writer::Writer;
use spark_proto::{BootSlot, Capabilities, CodecContext, Hello, Message, Sample, decode, encode};
use std::hint::black_box;
use std::io::{Read, Seek, Write};
use std::time::Instant;

/// Runs `f` repeatedly for about 0.3 s; returns nanoseconds per call (best of 5 rounds).
fn time<T>(mut f: impl FnMut() -> T) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        if t.elapsed().as_millis() >= 60 {
            break;
        }
        iters *= 2;
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Varint(u64);

impl<'a> DekuReader<'a, deku::ctx::Endian> for Varint {
    fn from_reader_with_ctx<R: Read + Seek>(
        reader: &mut Reader<R>,
        _: deku::ctx::Endian,
    ) -> Result<Self, DekuError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = u8::from_reader_with_ctx(reader, ())?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(Varint(v));
            }
        }
        Err(DekuError::Parse("varint overflow".into()))
    }
}

impl DekuWriter<deku::ctx::Endian> for Varint {
    fn to_writer<W: Write + Seek>(
        &self,
        writer: &mut Writer<W>,
        _: deku::ctx::Endian,
    ) -> Result<(), DekuError> {
        let mut buf = [0u8; 10];
        let n = put(&mut buf, self.0);
        writer.write_bytes(&buf[..n])
    }
}

fn put(buf: &mut [u8; 10], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = v as u8 | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

#[derive(Debug, PartialEq, DekuRead, DekuWrite)]
#[deku(endian = "big")]
struct DekuBody {
    seq: u64,
    count: u16,
    #[deku(count = "count")]
    values: Vec<Varint>,
}

fn hand_write(seq: u64, values: &[u64], out: &mut Vec<u8>) {
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(values.len() as u16).to_be_bytes());
    let mut buf = [0u8; 10];
    for &v in values {
        let n = put(&mut buf, v);
        out.extend_from_slice(&buf[..n]);
    }
}

fn hand_read(b: &[u8]) -> Option<(u64, Vec<u64>)> {
    let seq = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let count = u16::from_be_bytes(b.get(8..10)?.try_into().ok()?) as usize;
    let mut values = Vec::with_capacity(count);
    let mut pos = 10;
    for _ in 0..count {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let byte = *b.get(pos)?;
            pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift >= 64 {
                return None;
            }
        }
        values.push(v);
    }
    Some((seq, values))
}

fn main() {
    let start = 1_764_115_200;
    let day = load::day(1000, 96, start, 7);

    // 1. The real codec.
    let mut ctx = CodecContext::new(1, 1000);
    ctx.build_batch(1, start, 900, &day[0]).unwrap(); // past the sync keyframe
    let samples = &day[40]; // 10:00, a delta interval
    let snapshot = ctx.clone();
    let mut frame = Vec::new();
    let enc_ns = time(|| {
        let mut c = snapshot.clone();
        let b = c.build_batch(2, start + 40 * 900, 900, samples).unwrap();
        frame.clear();
        encode(&Message::ReadingsBatch(b), &mut frame).unwrap();
        frame.len()
    });
    let mut c = snapshot.clone();
    let batch = c.build_batch(2, start + 40 * 900, 900, samples).unwrap();
    frame.clear();
    encode(&Message::ReadingsBatch(batch.clone()), &mut frame).unwrap();
    let mut cloud = CodecContext::new(1, 1000);
    let (Message::ReadingsBatch(first), _) = decode(&{
        let mut f = Vec::new();
        encode(
            &Message::ReadingsBatch(
                CodecContext::new(1, 1000)
                    .build_batch(1, start, 900, &day[0])
                    .unwrap(),
            ),
            &mut f,
        )
        .unwrap();
        f
    })
    .unwrap() else {
        unreachable!()
    };
    cloud.expand(&first).unwrap();
    let dec_ns = time(|| {
        let (m, _) = decode(&frame).unwrap();
        let Message::ReadingsBatch(b) = m else {
            unreachable!()
        };
        cloud.clone().expand(&b).unwrap().len()
    });
    let decode_only_ns = time(|| decode(&frame).unwrap().1);
    let encode_only_ns = time(|| {
        let mut out = Vec::with_capacity(2048);
        encode(&Message::ReadingsBatch(batch.clone()), &mut out).unwrap();
        out.len()
    });
    println!(
        "real codec, one 15-min interval of {} readings, frame {} bytes ({:.3} B/reading):",
        samples.len(),
        frame.len(),
        frame.len() as f64 / samples.len() as f64
    );
    println!(
        "  build+encode   {:8.1} µs   ({:.1} ns/reading)",
        enc_ns / 1e3,
        enc_ns / samples.len() as f64
    );
    println!("  encode only    {:8.1} µs", encode_only_ns / 1e3);
    println!("  decode only    {:8.1} µs", decode_only_ns / 1e3);
    println!(
        "  decode+expand  {:8.1} µs   ({:.1} ns/reading)",
        dec_ns / 1e3,
        dec_ns / samples.len() as f64
    );

    // Whole day, one batch per interval and hourly batches.
    for per in [1usize, 4] {
        let mut gw = CodecContext::new(1, 1000);
        let (mut bytes, mut n) = (0, 0);
        for (i, chunk) in day.chunks(per).enumerate() {
            let s: Vec<Sample> = chunk.concat();
            let b = gw
                .build_batch(i as u64 + 1, start + (i * per) as u64 * 900, 900, &s)
                .unwrap();
            let mut f = Vec::new();
            encode(&Message::ReadingsBatch(b), &mut f).unwrap();
            bytes += f.len();
            n += s.len();
        }
        println!(
            "day of 1000 meters x 96 intervals, {per} interval(s)/batch: {n} readings, {bytes} frame bytes = {:.3} B/reading",
            bytes as f64 / n as f64
        );
    }

    // 2. deku vs hand-written on a 1000-value varint vector with the deltas of that interval.
    let deltas: Vec<u64> = batch.intervals[0].values.clone();
    let body = DekuBody {
        seq: 2,
        count: deltas.len() as u16,
        values: deltas.iter().map(|&v| Varint(v)).collect(),
    };
    let deku_bytes = body.to_bytes().unwrap();
    let mut hand_bytes = Vec::new();
    hand_write(2, &deltas, &mut hand_bytes);
    assert_eq!(deku_bytes, hand_bytes, "both produce the same bytes");
    assert_eq!(hand_read(&hand_bytes).unwrap().1, deltas);
    let deku_read_ns = time(|| {
        DekuBody::from_bytes((&deku_bytes, 0))
            .unwrap()
            .1
            .values
            .len()
    });
    let hand_read_ns = time(|| hand_read(&hand_bytes).unwrap().1.len());
    let deku_write_ns = time(|| body.to_bytes().unwrap().len());
    let hand_write_ns = time(|| {
        let mut out = Vec::with_capacity(2048);
        hand_write(2, &deltas, &mut out);
        out.len()
    });
    println!(
        "{} varints ({} bytes), deku vs hand-written:",
        deltas.len(),
        hand_bytes.len()
    );
    println!(
        "  decode  deku {:8.1} µs   hand {:8.1} µs   ({:.1}x)",
        deku_read_ns / 1e3,
        hand_read_ns / 1e3,
        deku_read_ns / hand_read_ns
    );
    println!(
        "  encode  deku {:8.1} µs   hand {:8.1} µs   ({:.1}x)",
        deku_write_ns / 1e3,
        hand_write_ns / 1e3,
        deku_write_ns / hand_write_ns
    );

    // 3. deku on a small message, through the public API.
    let hello = Message::Hello(Hello {
        max_version: 1,
        min_version: 1,
        firmware_version: "2026.11.3".into(),
        booted_slot: BootSlot::A,
        last_acked_seq: 41,
        capabilities: Capabilities::UPDATES,
        roster_version: 3,
    });
    let mut hb = Vec::new();
    encode(&hello, &mut hb).unwrap();
    let he = time(|| {
        let mut out = Vec::with_capacity(64);
        encode(&hello, &mut out).unwrap();
        out.len()
    });
    let hd = time(|| decode(&hb).unwrap().1);
    println!(
        "Hello ({} bytes) via deku: encode {:.0} ns, decode {:.0} ns",
        hb.len(),
        he,
        hd
    );
}
