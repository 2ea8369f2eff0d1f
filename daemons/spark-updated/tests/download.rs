//! The resumable downloader against a small mutual-TLS HTTPS server that cuts the link on demand.

mod common;

use std::time::{Duration, Instant};

use common::{OtaServer, Pki, noise, within};
use spark_updated::download::{self, DownloadError, DownloadOptions, part_path};

fn fast() -> DownloadOptions {
    DownloadOptions {
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        max_attempts: 5,
        reserve: 0,
        ..DownloadOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_link_cuts_fetch_every_byte_once() {
    let pki = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bundle = noise(1, 3 << 20);
    let release = pki.sign(|_| {}, &bundle);
    server.publish(&release, bundle.clone());
    const CHUNK: u64 = 100 << 10;
    server.cut(CHUNK, 20);

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b.raucb");
    let url = format!("{}{}", server.base(), OtaServer::bundle_path(&bundle))
        .parse()
        .unwrap();
    let summary = within(download::download(
        &pki.client(),
        &url,
        release.manifest(),
        &dest,
        &fast(),
        |_, _| {},
    ))
    .await
    .expect("download completes despite 20 cuts");
    assert_eq!(std::fs::read(&dest).unwrap(), bundle);
    assert!(!part_path(&dest).exists());
    assert_eq!(summary.requests, 21);
    assert_eq!(summary.fetched, bundle.len() as u64);
    let served = server.served();
    let refetched = served - bundle.len() as u64;
    // Figure: bytes the server sent that the client did not keep, per cut.
    eprintln!(
        "served {served} bytes for a {} byte bundle over 20 cuts: {} bytes refetched per cut",
        bundle.len(),
        refetched / 20
    );
    assert!(
        served <= bundle.len() as u64 + 20 * CHUNK,
        "served {served}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_part_file() {
    let pki = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bundle = noise(2, 1 << 20);
    let release = pki.sign(|_| {}, &bundle);
    server.publish(&release, bundle.clone());

    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b.raucb");
    // What an earlier run (killed mid-download) left behind.
    std::fs::write(part_path(&dest), &bundle[..400_000]).unwrap();
    let url = format!("{}{}", server.base(), OtaServer::bundle_path(&bundle))
        .parse()
        .unwrap();
    let summary = within(download::download(
        &pki.client(),
        &url,
        release.manifest(),
        &dest,
        &fast(),
        |_, _| {},
    ))
    .await
    .unwrap();
    assert_eq!(summary.resumed_from, 400_000);
    assert_eq!(summary.fetched, bundle.len() as u64 - 400_000);
    assert_eq!(server.served(), bundle.len() as u64 - 400_000);
    assert_eq!(std::fs::read(&dest).unwrap(), bundle);

    // Once complete and renamed, a further call fetches nothing.
    let again = within(download::download(
        &pki.client(),
        &url,
        release.manifest(),
        &dest,
        &fast(),
        |_, _| {},
    ))
    .await
    .unwrap();
    assert_eq!((again.fetched, again.requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_truncated_file_and_short_space_are_refused() {
    let pki = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bundle = noise(3, 256 << 10);
    let release = pki.sign(|_| {}, &bundle);
    let path = OtaServer::bundle_path(&bundle);
    let url = format!("{}{path}", server.base()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b.raucb");
    let client = pki.client();

    // Same size, one bit flipped: SHA-256 mismatch, nothing kept.
    let mut tampered = bundle.clone();
    tampered[1000] ^= 1;
    server.put(&path, tampered);
    let err = within(download::download(
        &client,
        &url,
        release.manifest(),
        &dest,
        &fast(),
        |_, _| {},
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("SHA-256"), "{err}");
    // The error names where the wrong bytes came from, not a local file.
    assert!(err.to_string().contains(&url.to_string()), "{err}");
    assert!(!dest.exists() && !part_path(&dest).exists());

    // Regression (issue 4): the final size check names the URL, not the local path.
    let short = dir.path().join("short.raucb.part");
    std::fs::write(&short, &bundle[..1000]).unwrap();
    let err = download::verify(&short, &url.to_string(), release.manifest())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DownloadError::SizeMismatch { served: 1000, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&url.to_string()), "{text}");
    assert!(!text.contains("short.raucb"), "{text}");
    std::fs::remove_file(&short).unwrap();

    // A truncated file on the server: refused from the size the server announces.
    server.put(&path, bundle[..100_000].to_vec());
    let err = within(download::download(
        &client,
        &url,
        release.manifest(),
        &dest,
        &fast(),
        |_, _| {},
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            DownloadError::SizeMismatch {
                served: 100_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dest.exists());

    // Not enough room: refused before any request.
    let requests = server
        .state
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    let opts = DownloadOptions {
        reserve: u64::MAX / 2,
        ..fast()
    };
    let err = within(download::download(
        &client,
        &url,
        release.manifest(),
        &dest,
        &opts,
        |_, _| {},
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::NoSpace { .. }), "{err}");
    assert_eq!(
        server
            .state
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_cap_slows_the_download() {
    let pki = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bundle = noise(4, 512 << 10);
    let release = pki.sign(|_| {}, &bundle);
    server.publish(&release, bundle.clone());
    let url = format!("{}{}", server.base(), OtaServer::bundle_path(&bundle))
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DownloadOptions {
        rate_limit: Some(1 << 20),
        ..fast()
    };
    let start = Instant::now();
    within(download::download(
        &pki.client(),
        &url,
        release.manifest(),
        &dir.path().join("b"),
        &opts,
        |_, _| {},
    ))
    .await
    .unwrap();
    // 512 KiB at 1 MiB/s: at least ~0.5 s (the last chunk's sleep may be skipped).
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_device_certificate_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let server = OtaServer::start(&pki).await;
    let bundle = noise(5, 4096);
    let release = pki.sign(|_| {}, &bundle);
    server.publish(&release, bundle.clone());
    let url = format!("{}{}", server.base(), OtaServer::bundle_path(&bundle))
        .parse()
        .unwrap();
    // Trusts the right server CA but presents a device certificate from another PKI.
    let client = spark_updated::https::HttpsClient::from_pem_files(
        &pki.pki.server_ca_cert(),
        &other.device_cert,
        &other.device_key,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = DownloadOptions {
        max_attempts: 1,
        ..fast()
    };
    let err = within(download::download(
        &client,
        &url,
        release.manifest(),
        &dir.path().join("b"),
        &opts,
        |_, _| {},
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::Exhausted { .. }), "{err}");
    assert_eq!(server.served(), 0);
}
