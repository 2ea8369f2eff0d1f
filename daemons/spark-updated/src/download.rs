//! Resumable bundle download to `/data`.
//!
//! The bundle is written to `<name>.part`; the file's length **is** the resume point, so a link
//! cut, a daemon restart or a power cut all resume with `Range: bytes=<len>-` and never fetch a
//! byte twice (the file is fsync'd every [`DownloadOptions::sync_every`] bytes; what the file
//! system lost in a power cut is simply fetched again). Only once size and SHA-256 match the
//! signed manifest is the file renamed to its final name, which is the only name RAUC ever sees.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::{StatusCode, Uri};
use spark_release::{BundleDigest, ReleaseManifest};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

use crate::https::{HttpError, HttpsClient};

/// How a download behaves.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Maximum bytes per second; `None` for no cap.
    pub rate_limit: Option<u64>,
    /// fsync the partial file after this many new bytes.
    pub sync_every: u64,
    /// Consecutive failed attempts (no new byte) before giving up.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles up to `max_backoff`.
    pub backoff: Duration,
    /// Upper bound of the wait between attempts.
    pub max_backoff: Duration,
    /// Space to leave free on the file system besides the bundle.
    pub reserve: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            rate_limit: None,
            sync_every: 1 << 20,
            max_attempts: 10,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            reserve: 8 << 20,
        }
    }
}

/// What a completed download did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSummary {
    /// The verified bundle.
    pub path: PathBuf,
    /// Bytes already on disk when the download started (from an earlier run).
    pub resumed_from: u64,
    /// Body bytes received from the network in this run.
    pub fetched: u64,
    /// HTTP requests made.
    pub requests: u32,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// Not enough free space for the rest of the bundle.
    #[error(
        "not enough space in {}: need {needed} bytes (plus {reserve} reserved), {available} free; free space on /data or raise the reserve",
        dir.display()
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        reserve: u64,
        available: u64,
    },
    /// A local file operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The server answered with an error status.
    #[error("{url} answered {status}: check that the OTA server has this bundle")]
    Status { url: String, status: StatusCode },
    /// The server's idea of the file size differs from the signed manifest.
    #[error(
        "{url} serves {served} bytes but the signed manifest says {expected}: the server holds a different or truncated bundle"
    )]
    SizeMismatch {
        url: String,
        expected: u64,
        served: u64,
    },
    /// The complete file does not hash to the manifest's SHA-256; it was deleted.
    #[error(
        "bundle from {url} has SHA-256 {found} but the signed manifest says {expected}: the file was altered on the server or in transit; it was deleted and will be fetched again"
    )]
    DigestMismatch {
        url: String,
        expected: String,
        found: String,
    },
    /// Gave up after the attempts without progress.
    #[error("download from {url} failed {attempts} times in a row, last: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        last: HttpError,
    },
    /// The manifest names no URL and no server was configured.
    #[error("the release names no download location and no OTA server is configured")]
    NoLocation,
}

impl DownloadError {
    /// True when trying again later (next poll) may succeed without anyone's help.
    pub fn is_transient(&self) -> bool {
        matches!(self, DownloadError::Exhausted { .. })
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError {
    let path = path.to_owned();
    move |source| DownloadError::Io {
        action,
        path,
        source,
    }
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
pub fn free_space(dir: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The `.part` file for a final path.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".part");
    path.with_file_name(name)
}

/// Downloads the bundle `manifest` names from `url` to `dest`, resuming `dest.part`, then checks
/// size and SHA-256. `on_progress` gets (bytes on disk, total).
pub async fn download(
    client: &HttpsClient,
    url: &Uri,
    manifest: &ReleaseManifest,
    dest: &Path,
    opts: &DownloadOptions,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<DownloadSummary, DownloadError> {
    let total = manifest.bundle_size;
    let part = part_path(dest);
    let dir = dest.parent().unwrap_or(Path::new("."));

    // A complete, verified file from an earlier run (power cut after rename).
    if let Ok(meta) = tokio::fs::metadata(dest).await
        && meta.len() == total
        && verify(dest, &url.to_string(), manifest).await.is_ok()
    {
        return Ok(DownloadSummary {
            path: dest.to_owned(),
            resumed_from: total,
            fetched: 0,
            requests: 0,
        });
    }

    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .await
        .map_err(io("open", &part))?;
    let mut have = file.metadata().await.map_err(io("stat", &part))?.len();
    if have > total {
        // Not this bundle's prefix (an older release's leftover): start over.
        file.set_len(0).await.map_err(io("truncate", &part))?;
        have = 0;
    }
    let resumed_from = have;

    let needed = total - have;
    let available = free_space(dir).map_err(io("statvfs", dir))?;
    if available < needed.saturating_add(opts.reserve) {
        return Err(DownloadError::NoSpace {
            dir: dir.to_owned(),
            needed,
            reserve: opts.reserve,
            available,
        });
    }

    let mut fetched = 0u64;
    let mut requests = 0u32;
    let mut failures = 0u32;
    let mut backoff = opts.backoff;
    let started = Instant::now();
    let mut unsynced = 0u64;
    on_progress(have, total);
    while have < total {
        requests += 1;
        let before = have;
        let attempt = fetch_range(
            client,
            url,
            &mut file,
            &part,
            total,
            &mut have,
            &mut FetchState {
                fetched: &mut fetched,
                unsynced: &mut unsynced,
                started,
                opts,
                on_progress: &mut on_progress,
            },
        )
        .await;
        match attempt {
            Ok(()) => {}
            Err(FetchError::Fatal(e)) => return Err(e),
            Err(FetchError::Transient(e)) => {
                if have > before {
                    failures = 0;
                    backoff = opts.backoff;
                }
                failures += 1;
                tracing::info!(%url, have, total, failures, error = %e, "download interrupted, resuming");
                if failures >= opts.max_attempts {
                    return Err(DownloadError::Exhausted {
                        url: url.to_string(),
                        attempts: failures,
                        last: e,
                    });
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
    file.sync_all().await.map_err(io("fsync", &part))?;
    drop(file);

    if let Err(e) = verify(&part, &url.to_string(), manifest).await {
        // A wrong file must not be resumed: its prefix is already wrong.
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    tokio::fs::rename(&part, dest)
        .await
        .map_err(io("rename", &part))?;
    sync_dir(dir).await?;
    Ok(DownloadSummary {
        path: dest.to_owned(),
        resumed_from,
        fetched,
        requests,
    })
}

/// Makes a rename durable.
pub async fn sync_dir(dir: &Path) -> Result<(), DownloadError> {
    File::open(dir)
        .await
        .map_err(io("open", dir))?
        .sync_all()
        .await
        .map_err(io("fsync", dir))
}

/// Checks size and SHA-256 of `path`, fetched from `url`, against the manifest. Errors name the
/// URL (where the wrong bytes came from, which is what an operator can fix), not the local file.
pub async fn verify(
    path: &Path,
    url: &str,
    manifest: &ReleaseManifest,
) -> Result<(), DownloadError> {
    let owned = path.to_owned();
    let digest: BundleDigest =
        tokio::task::spawn_blocking(move || spark_release::digest_file(&owned))
            .await
            .map_err(|e| DownloadError::Io {
                action: "hash",
                path: path.to_owned(),
                source: std::io::Error::other(e),
            })?
            .map_err(io("hash", path))?;
    manifest.check_bundle(&digest).map_err(|m| {
        if m.found.size != m.expected.size {
            DownloadError::SizeMismatch {
                url: url.to_owned(),
                expected: m.expected.size,
                served: m.found.size,
            }
        } else {
            DownloadError::DigestMismatch {
                url: url.to_owned(),
                expected: hex::encode(m.expected.sha256),
                found: hex::encode(m.found.sha256),
            }
        }
    })
}

enum FetchError {
    Transient(HttpError),
    Fatal(DownloadError),
}

struct FetchState<'a, P> {
    fetched: &'a mut u64,
    unsynced: &'a mut u64,
    started: Instant,
    opts: &'a DownloadOptions,
    on_progress: &'a mut P,
}

/// One request for `bytes=have-`; appends what arrives, advancing `have`.
async fn fetch_range<P: FnMut(u64, u64)>(
    client: &HttpsClient,
    url: &Uri,
    file: &mut File,
    part: &Path,
    total: u64,
    have: &mut u64,
    st: &mut FetchState<'_, P>,
) -> Result<(), FetchError> {
    let range = format!("bytes={}-", *have);
    let response = client
        .send(
            url,
            |b| b.method("GET").header(hyper::header::RANGE, range),
            bytes::Bytes::new(),
        )
        .await
        .map_err(FetchError::Transient)?;
    let fatal = FetchError::Fatal;
    let served_total = match response.status() {
        StatusCode::PARTIAL_CONTENT => {
            let (start, served) = content_range(&response).unzip();
            if start != Some(*have) {
                return Err(fatal(DownloadError::Status {
                    url: url.to_string(),
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                }));
            }
            served
        }
        StatusCode::OK => {
            if *have > 0 {
                // The server ignores Range: only a full refetch is possible.
                tracing::warn!(%url, "server ignores Range; fetching the bundle from the start");
                file.set_len(0)
                    .await
                    .map_err(|e| fatal(io("truncate", part)(e)))?;
                *have = 0;
            }
            response
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }
        status => {
            return Err(fatal(DownloadError::Status {
                url: url.to_string(),
                status,
            }));
        }
    };
    if let Some(served) = served_total
        && served != total
    {
        return Err(fatal(DownloadError::SizeMismatch {
            url: url.to_string(),
            expected: total,
            served,
        }));
    }

    let mut body = response.into_body();
    let authority = url.authority().map_or_else(String::new, |a| a.to_string());
    loop {
        let frame = tokio::time::timeout(client.timeout, body.frame())
            .await
            .map_err(|_| {
                FetchError::Transient(HttpError::Timeout {
                    authority: authority.clone(),
                    timeout: client.timeout,
                })
            })?;
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(source)) => {
                // Keep what arrived: it is the next resume point.
                file.flush()
                    .await
                    .map_err(|e| fatal(io("write", part)(e)))?;
                return Err(FetchError::Transient(HttpError::Http {
                    authority: authority.clone(),
                    source,
                }));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        // Never grow past the signed size, whatever the server sends.
        let room = (total - *have) as usize;
        let data = &data[..data.len().min(room)];
        file.write_all(data)
            .await
            .map_err(|e| fatal(io("write", part)(e)))?;
        let n = data.len() as u64;
        *have += n;
        *st.fetched += n;
        *st.unsynced += n;
        if *st.unsynced >= st.opts.sync_every {
            file.sync_data()
                .await
                .map_err(|e| fatal(io("fsync", part)(e)))?;
            *st.unsynced = 0;
        }
        (st.on_progress)(*have, total);
        if let Some(rate) = st.opts.rate_limit.filter(|r| *r > 0) {
            // Sleep until the average rate since the start is back under the cap.
            let due = Duration::from_secs_f64(*st.fetched as f64 / rate as f64);
            let elapsed = st.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        if *have == total {
            break;
        }
    }
    file.flush()
        .await
        .map_err(|e| fatal(io("write", part)(e)))?;
    if *have < total {
        return Err(FetchError::Transient(HttpError::Truncated { authority }));
    }
    Ok(())
}

/// Start and total of `Content-Range: bytes start-end/total`.
fn content_range(response: &hyper::Response<hyper::body::Incoming>) -> Option<(u64, u64)> {
    let value = response
        .headers()
        .get(hyper::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let (range, total) = value.strip_prefix("bytes ")?.rsplit_once('/')?;
    let start = range.split_once('-')?.0.parse().ok()?;
    Some((start, total.parse().ok()?))
}
