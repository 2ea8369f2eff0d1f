//! `CertificateAuthority::load` refuses what would silently produce certificates that chain to
//! nothing, and leaf profiles can be bent into deliberately bad signers.

mod common;

use common::run_ok;
use spark_keys::{
    CertificateAuthority, DevPkiOptions, KeyAlgorithm, KeyUsage, KeysError, LeafProfile, init_dev,
};
use time::{Duration, OffsetDateTime};

#[test]
fn load_rejects_leaf_and_mismatched_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(tmp.path(), &DevPkiOptions::default()).unwrap();

    let err = CertificateAuthority::load(&pki.signer_cert(), &pki.signer_key()).unwrap_err();
    assert!(
        matches!(err, KeysError::NotACa { ref path } if *path == pki.signer_cert()),
        "{err:?}"
    );

    let err =
        CertificateAuthority::load(&pki.firmware_ca_cert(), &pki.device_ca_key()).unwrap_err();
    assert!(matches!(err, KeysError::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let err = CertificateAuthority::load(&pki.firmware_ca_cert(), &pki.release_pub()).unwrap_err();
    assert!(matches!(err, KeysError::ParseKey { .. }), "{err:?}");
}

#[test]
fn profiles_can_make_bad_signers() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = init_dev(tmp.path(), &DevPkiOptions::default()).unwrap();
    let ca = pki.signer_issuer().unwrap();
    let now = OffsetDateTime::now_utc();

    let expired = ca
        .issue(&LeafProfile {
            not_before: now - Duration::days(30),
            not_after: now - Duration::days(1),
            ..LeafProfile::bundle_signer("Expired Signer")
        })
        .unwrap();
    let path = tmp.path().join("expired.pem");
    std::fs::write(&path, &expired.cert_pem).unwrap();
    let out = common::run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            common::p(&pki.keyring()),
            common::p(&path),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("expired")
            || String::from_utf8_lossy(&out.stderr).contains("expired")
    );

    let no_ds = ca
        .issue(&LeafProfile {
            key_usages: vec![KeyUsage::KeyEncipherment],
            algorithm: KeyAlgorithm::RSA_2048,
            ..LeafProfile::bundle_signer("No digitalSignature")
        })
        .unwrap();
    std::fs::write(&path, &no_ds.cert_pem).unwrap();
    let text = run_ok(
        "openssl",
        &["x509", "-in", common::p(&path), "-noout", "-text"],
    );
    assert!(
        text.contains("Key Encipherment") && !text.contains("Digital Signature"),
        "{text}"
    );

    let err = ca
        .issue(&LeafProfile {
            not_after: now - Duration::days(400),
            ..LeafProfile::bundle_signer("Backwards")
        })
        .unwrap_err();
    assert!(matches!(err, KeysError::InvalidValidity { .. }), "{err:?}");
}
