//! The `spark-image` binary as a user runs it: exit codes, messages and JSON output.

mod common;

use std::process::Command;

use common::*;

fn spark_image(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spark-image"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bundle_info_verify_and_a_tampered_bundle() {
    let pki = Pki::ecdsa();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 400 * 1024);
    let bundle = work.path().join("cli.raucb");
    let p = |p: &std::path::Path| p.display().to_string();
    let build = |version: &str| {
        spark_image(&[
            "bundle",
            "--rootfs",
            &p(&image),
            "--compatible",
            COMPATIBLE,
            "--version",
            version,
            "--cert",
            &p(&pki.pki.signer_cert()),
            "--key",
            &p(&pki.pki.signer_key()),
            &p(&bundle),
        ])
    };
    let out = build("9.9.9");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Building again over an existing file is refused, and the file is left alone.
    let before = std::fs::read(&bundle).unwrap();
    let again = build("1");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&bundle).unwrap(), before);

    let keyring = p(&pki.pki.keyring());
    let info = spark_image(&["info", &p(&bundle), "--keyring", &keyring, "--json"]);
    assert!(info.status.success());
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["compatible"], COMPATIBLE);
    assert_eq!(v["version"], "9.9.9");
    assert_eq!(v["format"], "verity");
    assert_eq!(v["verified"], true);
    assert_eq!(v["images"][0]["size"], 400 * 1024);

    let ok = spark_image(&[
        "verify",
        &p(&bundle),
        "--keyring",
        &keyring,
        "--compatible",
        COMPATIBLE,
    ]);
    assert!(ok.status.success());
    let wrong = spark_image(&[
        "verify",
        &p(&bundle),
        "--keyring",
        &keyring,
        "--compatible",
        "other",
    ]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("'other' was required"));

    flip(&bundle, 5000);
    let bad = spark_image(&["verify", &p(&bundle), "--keyring", &keyring]);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("error:") && err.contains("verity"), "{err}");
}

#[test]
fn stream_upload_is_spooled_hashed_and_verified() {
    let pki = Pki::ecdsa();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("rootfs.ext4");
    rootfs_image(&image, 300 * 1024);
    let bundle = work.path().join("up.raucb");
    build(
        &pki,
        spark_image::BundleFormat::Plain,
        &image,
        "1.0.0",
        &bundle,
    );
    let bytes = std::fs::read(&bundle).unwrap();
    let spooled = spark_image::Bundle::from_stream(&bytes[..], work.path()).unwrap();
    assert_eq!(spooled.size(), bytes.len() as u64);
    let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    assert_eq!(spooled.sha256(), digest);
    spooled
        .bundle()
        .verify(
            &pki.keyring(),
            &Default::default(),
            &indicatif::ProgressBar::hidden(),
        )
        .unwrap();
    let stored = work.path().join("stored.raucb");
    spooled.persist(&stored).unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), bytes);
}
