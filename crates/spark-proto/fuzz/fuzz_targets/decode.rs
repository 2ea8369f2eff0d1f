//! Feeds arbitrary bytes to the frame decoder: `check` and `decode` must never panic, must agree
//! on the frame length, and whatever decodes must re-encode to bytes that decode to the same
//! message. A decoded readings batch is also expanded against a fresh context (errors are fine,
//! panics are not). Seed the corpus with `crates/spark-proto/tests/data/*.bin`.
//!
//! `cargo +nightly fuzz run decode` (from `crates/spark-proto/`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spark_proto::{CodecContext, Message, check, decode, encode};

fuzz_target!(|data: &[u8]| {
    let checked = check(data);
    match decode(data) {
        Ok((msg, used)) => {
            assert_eq!(
                checked,
                Ok(used),
                "check and decode disagree on the frame length"
            );
            let mut again = Vec::new();
            match encode(&msg, &mut again) {
                Ok(()) => {
                    let (back, _) = decode(&again).expect("a re-encoded message decodes");
                    assert_eq!(back, msg);
                }
                // The encoder picks the Rice parameter from a window around the mean, not the
                // global optimum: a crafted ~1 MiB batch may not fit again. Nothing else may fail.
                Err(spark_proto::EncodeError::FrameTooLong { .. }) => {}
                Err(e) => panic!("a decoded message does not re-encode: {e}"),
            }
            if let Message::ReadingsBatch(b) = &msg {
                let _ = CodecContext::new(b.roster_version, b.roster_len).expand(b);
            }
        }
        Err(e) => {
            // check only looks at the header: it may accept what the payload decoder refuses,
            // but an Incomplete from one is an Incomplete from the other.
            if checked == Err(spark_proto::DecodeError::Incomplete) {
                assert_eq!(e, spark_proto::DecodeError::Incomplete);
            }
        }
    }
});
