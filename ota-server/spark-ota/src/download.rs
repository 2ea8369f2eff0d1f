//! Bundle downloads: `GET`/`HEAD /v1/bundles/{sha256}` with `Range`, `ETag`, `If-Range` and
//! `If-None-Match`, streamed from the blob file, and the byte accounting behind the data-cost
//! report.
//!
//! - The ETag is the bundle's SHA-256 (a strong validator: the blob never changes).
//! - One range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`) → 206 with `Content-Range`;
//!   a range starting past the end → 416 with `Content-Range: bytes */SIZE`; several ranges are
//!   answered with the whole file (200), which RFC 9110 allows and no agent of ours asks for.
//! - `If-Range` with an ETag other than ours (or a date: we send no Last-Modified) means the
//!   client's partial copy is of something else: the whole file is sent (200).
//! - Bytes are counted as the body hands them to hyper, per (device, bundle, rollout), in memory,
//!   and added to the `downloads` table by [`Accounting::flush`] (every second and at shutdown).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::error::StoreError;
use crate::store::Store;

/// Read size of the file stream: large enough that TLS records are full and syscalls few.
const CHUNK: usize = 256 * 1024;

/// A parsed `Range` header for a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// No (usable) Range: the whole file, 200.
    Full,
    /// One satisfiable range, inclusive bounds: 206.
    Partial { start: u64, end: u64 },
    /// Starts past the end: 416.
    Unsatisfiable,
}

/// Parses `Range` (RFC 9110 §14.1.2) for a file of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(h) = header else {
        return RangeSpec::Full;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        // Another unit: ignore the header, as RFC 9110 says.
        return RangeSpec::Full;
    };
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(_) if size == 0 => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => RangeSpec::Full,
        },
        // bytes=a-
        (false, true) => match num(a) {
            Some(start) if start < size => RangeSpec::Partial {
                start,
                end: size - 1,
            },
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Full,
        },
        // bytes=a-b
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= size {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Partial {
                        start,
                        end: end.min(size - 1),
                    }
                }
            }
            _ => RangeSpec::Full,
        },
        (true, true) => RangeSpec::Full,
    }
}

/// Whether an `If-Range` value lets the Range apply: only our exact strong ETag does.
pub fn if_range_matches(if_range: Option<&str>, etag: &str) -> bool {
    match if_range {
        None => true,
        Some(v) => v.trim() == etag,
    }
}

/// Whether an `If-None-Match` value names our ETag (or `*`).
pub fn none_match_hits(if_none_match: Option<&str>, etag: &str) -> bool {
    if_none_match.is_some_and(|v| {
        v.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t == etag || t.strip_prefix("W/") == Some(etag)
        })
    })
}

/// Key of the byte counters.
type Key = (Arc<str>, Arc<str>, Arc<str>);

/// In-memory byte counters, flushed to the database.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pending: Arc<Mutex<HashMap<Key, (u64, u64)>>>,
    /// Held through a whole flush: a flush that starts while another is writing waits for it,
    /// so whoever flushes before reading the figures sees every count taken so far (without
    /// it, a report could read the database while a concurrent flush still held its counts).
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Accounting {
    fn add(&self, key: &Key, bytes: u64, requests: u64) {
        // A poisoned lock only means another request panicked mid-add; the counts stay usable.
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(key.clone()).or_default();
        e.0 += bytes;
        e.1 += requests;
    }

    /// Writes the counters gathered so far to the database.
    pub async fn flush(&self, store: &Store) -> Result<(), StoreError> {
        let _flushing = self.flushing.lock().await;
        let taken: Vec<(Key, (u64, u64))> = {
            let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            map.drain().collect()
        };
        let now = crate::now();
        let mut taken = taken.into_iter();
        while let Some((key, (bytes, requests))) = taken.next() {
            let (device, sha, rollout) = &key;
            if let Err(e) = store
                .add_download(device, sha, rollout, bytes as i64, requests as i64, now)
                .await
            {
                // Not written: kept for the next flush rather than lost.
                self.add(&key, bytes, requests);
                for (key, (bytes, requests)) in taken {
                    self.add(&key, bytes, requests);
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The file bytes of one response, counted as they are handed to hyper; the count goes to the
/// accounting when the last chunk is handed over or the body is dropped (client gone).
pub struct CountedFile {
    inner: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    /// Bytes handed to hyper and not yet added to the accounting.
    sent: u64,
    /// Bytes of the response not yet handed to hyper.
    left: u64,
    key: Key,
    accounting: Accounting,
}

impl CountedFile {
    /// Streams `len` bytes of `file` from `start`.
    pub async fn open(
        mut file: tokio::fs::File,
        start: u64,
        len: u64,
        device: &str,
        sha: &str,
        rollout: &str,
        accounting: Accounting,
    ) -> std::io::Result<CountedFile> {
        if start > 0 {
            file.seek(std::io::SeekFrom::Start(start)).await?;
        }
        let key: Key = (device.into(), sha.into(), rollout.into());
        accounting.add(&key, 0, 1);
        Ok(CountedFile {
            inner: ReaderStream::with_capacity(file.take(len), CHUNK),
            sent: 0,
            left: len,
            key,
            accounting,
        })
    }
}

impl Stream for CountedFile {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let next = Pin::new(&mut this.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &next {
            this.sent += chunk.len() as u64;
            this.left = this.left.saturating_sub(chunk.len() as u64);
            // Counted when the last chunk goes to hyper, before the client can have all of it:
            // hyper drops the body only after it has written it, so counting on drop let a
            // report asked for right after a download miss that download (a CI race).
            if this.left == 0 {
                this.accounting
                    .add(&this.key, std::mem::take(&mut this.sent), 0);
            }
        }
        next
    }
}

impl Drop for CountedFile {
    fn drop(&mut self) {
        if self.sent > 0 {
            self.accounting.add(&self.key, self.sent, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range(None, 100), Full);
        assert_eq!(
            parse_range(Some("bytes=0-"), 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=10-19"), 100),
            Partial { start: 10, end: 19 }
        );
        assert_eq!(
            parse_range(Some("bytes=90-200"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=-10"), 100),
            Partial { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range(Some("bytes=-1000"), 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Full);
        assert_eq!(parse_range(Some("items=0-1"), 100), Full);
        assert_eq!(parse_range(Some("bytes=x-"), 100), Full);
        assert_eq!(parse_range(Some("bytes=+1-"), 100), Full);
    }

    #[test]
    fn validators() {
        let etag = "\"abc\"";
        assert!(if_range_matches(None, etag));
        assert!(if_range_matches(Some("\"abc\""), etag));
        assert!(!if_range_matches(Some("\"old\""), etag));
        assert!(!if_range_matches(
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            etag
        ));
        assert!(none_match_hits(Some("\"x\", \"abc\""), etag));
        assert!(none_match_hits(Some("*"), etag));
        assert!(!none_match_hits(Some("\"x\""), etag));
        assert!(!none_match_hits(None, etag));
    }
}
