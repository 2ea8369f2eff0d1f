//! The generated bundle signer against the real OpenSSL and RAUC 1.8: it must pass OpenSSL's
//! S/MIME-signing purpose, sign a bundle with `rauc bundle`, and be accepted by `rauc info` both
//! with RAUC's default purpose check and with `check-purpose=codesign`.

mod common;

use std::path::Path;

use common::{build_bundle, describe, p, rauc_info, run_ok, system_conf};
use spark_keys::{
    CertificateAuthority, DevPki, DevPkiOptions, ExtendedKeyUsage, KeyAlgorithm, LeafProfile,
    init_dev,
};

fn make_pki(dir: &Path, algorithm: KeyAlgorithm, intermediate: bool) -> DevPki {
    init_dev(
        dir,
        &DevPkiOptions {
            algorithm,
            intermediate,
            ..DevPkiOptions::default()
        },
    )
    .expect("init_dev")
}

/// openssl verify, rauc bundle, rauc info (default purpose and codesign) for one PKI shape.
fn signer_accepted(algorithm: KeyAlgorithm, intermediate: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(&tmp.path().join("pki"), algorithm, intermediate);
    assert_eq!(pki.intermediate_cert().is_some(), intermediate);

    let keyring = pki.keyring();
    let signer = pki.signer_cert();
    let mut verify = vec!["verify", "-CAfile", p(&keyring)];
    let intermediate_cert = pki.intermediate_cert();
    if let Some(i) = &intermediate_cert {
        verify.extend(["-untrusted", p(i)]);
    }
    verify.extend(["-purpose", "smimesign", p(&signer)]);
    let out = run_ok("openssl", &verify);
    assert!(out.contains(": OK"), "{out}");

    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bundle = build_bundle(
        &work,
        &signer,
        &pki.signer_key(),
        intermediate_cert.as_deref(),
    );
    for check_purpose in [None, Some("codesign")] {
        let conf = system_conf(&work, &keyring, check_purpose);
        let out = rauc_info(&conf, &keyring, &bundle);
        assert!(
            out.status.success(),
            "rauc info rejected {algorithm} signer (intermediate: {intermediate}, check-purpose: {check_purpose:?}):\n{}",
            describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Spark Dev Bundle Signer"), "{stdout}");
    }
}

#[test]
fn ecdsa_signer_accepted_by_rauc() {
    signer_accepted(KeyAlgorithm::EcdsaP256, false);
}

#[test]
fn ecdsa_signer_via_intermediate_accepted_by_rauc() {
    signer_accepted(KeyAlgorithm::EcdsaP256, true);
}

#[test]
fn rsa_signer_accepted_by_rauc() {
    signer_accepted(KeyAlgorithm::RSA_2048, false);
}

#[test]
fn rsa_signer_via_intermediate_accepted_by_rauc() {
    signer_accepted(KeyAlgorithm::RSA_2048, true);
}

/// Signs a bundle with a leaf issued from the PKI's signer CA with the given EKUs and returns
/// whether `rauc info` accepts it without check-purpose and with `check-purpose=codesign`.
fn rauc_accepts_leaf_with(ekus: Vec<ExtendedKeyUsage>) -> (bool, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(&tmp.path().join("pki"), KeyAlgorithm::EcdsaP256, false);
    let ca = pki.signer_issuer().expect("load firmware CA");
    let leaf = ca
        .issue(&LeafProfile {
            extended_key_usages: ekus,
            ..LeafProfile::bundle_signer("Odd Signer")
        })
        .expect("issue");
    let (cert, key) = (
        tmp.path().join("odd.cert.pem"),
        tmp.path().join("odd.key.pem"),
    );
    leaf.write(&cert, &key, false).unwrap();

    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bundle = build_bundle(&work, &cert, &key, None);
    let keyring = pki.keyring();
    let accepted = |purpose| {
        let conf = system_conf(&work, &keyring, purpose);
        rauc_info(&conf, &keyring, &bundle).status.success()
    };
    (accepted(None), accepted(Some("codesign")))
}

/// RAUC-FACTS: without check-purpose, OpenSSL's S/MIME-signing purpose refuses a codeSigning-only
/// leaf. That the dev signer passes proves emailProtection in our profile is what makes it work.
#[test]
fn codesigning_only_signer_rejected_by_default_purpose() {
    let (default, codesign) = rauc_accepts_leaf_with(vec![ExtendedKeyUsage::CodeSigning]);
    assert!(
        !default,
        "rauc info accepted a codeSigning-only signer without check-purpose"
    );
    assert!(
        codesign,
        "rauc info with check-purpose=codesign rejected a codeSigning signer"
    );
}

/// And the converse: `check-purpose=codesign` needs the codeSigning EKU.
#[test]
fn email_only_signer_rejected_by_codesign_purpose() {
    let (default, codesign) = rauc_accepts_leaf_with(vec![ExtendedKeyUsage::EmailProtection]);
    assert!(
        default,
        "rauc info rejected an emailProtection signer without check-purpose"
    );
    assert!(
        !codesign,
        "check-purpose=codesign accepted a signer without codeSigning"
    );
}

/// A CA loaded back from disk issues leaves that chain to the on-disk certificate (same subject
/// and key identifier), so spark-image tests can add signers to an existing dev PKI.
#[test]
fn loaded_ca_issues_signers_rauc_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(&tmp.path().join("pki"), KeyAlgorithm::RSA_2048, true);
    let ca = CertificateAuthority::load(
        &pki.intermediate_cert().unwrap(),
        &pki.intermediate_key().unwrap(),
    )
    .unwrap();
    let leaf = ca
        .issue(&LeafProfile::bundle_signer("Second Signer"))
        .unwrap();
    let (cert, key) = (
        tmp.path().join("s2.cert.pem"),
        tmp.path().join("s2.key.pem"),
    );
    leaf.write(&cert, &key, false).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bundle = build_bundle(&work, &cert, &key, pki.intermediate_cert().as_deref());
    let keyring = pki.keyring();
    let conf = system_conf(&work, &keyring, Some("codesign"));
    let out = rauc_info(&conf, &keyring, &bundle);
    assert!(out.status.success(), "{}", describe(&out));
}
