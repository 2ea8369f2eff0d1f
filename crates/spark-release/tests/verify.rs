//! Verification: one test per `ReleaseError` variant, and the boundaries of each check.

mod common;

use std::time::Duration;

use common::*;
use spark_release::{
    DEFAULT_CLOCK_SKEW, DecodeError, KeyId, Policy, ReleaseError, ReleaseManifest, SignedRelease,
    TrustedKeys, decode_and_verify, digest_reader,
};

/// A gateway on spark-bbb running 1.3.0, one day after the golden release was issued.
fn gateway() -> Policy {
    Policy::new(ts("2026-11-27T00:00:00Z"))
        .with_compatible("spark-bbb")
        .with_installed_version(v("1.3.0"))
}

fn signed(manifest: ReleaseManifest) -> SignedRelease {
    SignedRelease::sign(manifest, &golden_key()).unwrap()
}

fn verify(manifest: ReleaseManifest, policy: &Policy) -> Result<(), ReleaseError> {
    signed(manifest)
        .verify(&trusting(&golden_key()), policy)
        .map(|_| ())
}

#[test]
fn accepts_a_good_release() {
    let release = signed(golden_manifest());
    let manifest = release
        .verify(&trusting(&golden_key()), &gateway())
        .unwrap();
    assert_eq!(manifest, &golden_manifest());
    let owned =
        decode_and_verify(&release.to_bytes(), &trusting(&golden_key()), &gateway()).unwrap();
    assert_eq!(owned, golden_manifest());
}

#[test]
fn malformed() {
    let err = decode_and_verify(b"\x01\x00", &trusting(&golden_key()), &gateway()).unwrap_err();
    assert!(
        matches!(err, ReleaseError::Malformed(DecodeError::Truncated { .. })),
        "{err:?}"
    );
    assert_eq!(err.code(), "malformed");
}

#[test]
fn unknown_key() {
    let err = signed(golden_manifest())
        .verify(&trusting(&other_key()), &gateway())
        .unwrap_err();
    let expected = KeyId::of(&golden_key().verifying_key());
    assert!(
        matches!(err, ReleaseError::UnknownKey { key_id } if key_id == expected),
        "{err:?}"
    );
    assert_eq!(err.code(), "unknown-key");
    let err = signed(golden_manifest())
        .verify(&TrustedKeys::new(), &gateway())
        .unwrap_err();
    assert!(matches!(err, ReleaseError::UnknownKey { .. }));
}

#[test]
fn bad_signature() {
    // A valid signature by another key, relabelled with the trusted key's id.
    let forged = SignedRelease::sign(golden_manifest(), &other_key()).unwrap();
    let mut wire = forged.to_bytes();
    let id_at = forged.canonical_manifest().len();
    wire[id_at..id_at + 8].copy_from_slice(&KeyId::of(&golden_key().verifying_key()).0);
    let err = decode_and_verify(&wire, &trusting(&golden_key()), &gateway()).unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err:?}");
    assert_eq!(err.code(), "bad-signature");
}

#[test]
fn key_rotation_trusts_either_key() {
    let mut keys = trusting(&golden_key());
    keys.insert(other_key().verifying_key()).unwrap();
    for key in [golden_key(), other_key()] {
        SignedRelease::sign(golden_manifest(), &key)
            .unwrap()
            .verify(&keys, &gateway())
            .unwrap();
    }
    assert_eq!(keys.ids().count(), 2);
}

#[test]
fn weak_keys_are_refused() {
    // The identity point: every signature with R = identity and s = 0 would "verify".
    let weak = spark_release::VerifyingKey::from_bytes(&{
        let mut b = [0; 32];
        b[0] = 1;
        b
    })
    .unwrap();
    assert!(TrustedKeys::new().insert(weak).is_err());
}

#[test]
fn wrong_compatible() {
    let policy = gateway().with_compatible("spark-rpi");
    let err = verify(golden_manifest(), &policy).unwrap_err();
    assert!(
        matches!(&err, ReleaseError::WrongCompatible { expected, found } if expected == "spark-rpi" && found == "spark-bbb"),
        "{err:?}"
    );
    assert_eq!(err.code(), "wrong-compatible");
}

#[test]
fn not_yet_valid_beyond_clock_skew() {
    let issued = golden_manifest().issued_at;
    // Within the tolerance: accepted.
    let mut policy = gateway();
    policy.now = issued.saturating_sub(DEFAULT_CLOCK_SKEW);
    verify(golden_manifest(), &policy).unwrap();
    // One second more: not yet valid.
    policy.now = issued.saturating_sub(DEFAULT_CLOCK_SKEW + Duration::from_secs(1));
    let err = verify(golden_manifest(), &policy).unwrap_err();
    assert!(matches!(err, ReleaseError::NotYetValid { .. }), "{err:?}");
    assert_eq!(err.code(), "not-yet-valid");
    // A gateway whose clock reset to 1970 accepts nothing.
    policy.now = ts("1970-01-01T00:00:00Z");
    assert!(matches!(
        verify(golden_manifest(), &policy),
        Err(ReleaseError::NotYetValid { .. })
    ));
}

#[test]
fn expired_at_and_after_expiry() {
    let expires = golden_manifest().expires_at;
    let mut policy = gateway();
    policy.now = expires.saturating_sub(Duration::from_secs(1));
    verify(golden_manifest(), &policy).unwrap();
    policy.now = expires;
    let err = verify(golden_manifest(), &policy).unwrap_err();
    assert!(matches!(err, ReleaseError::Expired { .. }), "{err:?}");
    assert_eq!(err.code(), "expired");
}

#[test]
fn below_minimum() {
    // golden: min 1.2.0
    verify(
        golden_manifest(),
        &gateway().with_installed_version(v("1.2.0")),
    )
    .unwrap();
    let err = verify(
        golden_manifest(),
        &gateway().with_installed_version(v("1.1.9")),
    )
    .unwrap_err();
    assert!(matches!(err, ReleaseError::BelowMinimum { .. }), "{err:?}");
    assert_eq!(err.code(), "below-minimum");
    // A pre-release of the minimum is below it.
    let err = verify(
        golden_manifest(),
        &gateway().with_installed_version(v("1.2.0-rc.1")),
    )
    .unwrap_err();
    assert!(matches!(err, ReleaseError::BelowMinimum { .. }), "{err:?}");
}

#[test]
fn not_newer_is_refused_unless_signed_as_downgrade() {
    // golden: 1.4.2-rc.1+build.7
    for installed in ["1.4.2-rc.1", "1.4.2-rc.1+other.build", "1.4.2", "2.0.0"] {
        let err = verify(
            golden_manifest(),
            &gateway().with_installed_version(v(installed)),
        )
        .unwrap_err();
        assert!(
            matches!(err, ReleaseError::NotNewer { .. }),
            "{installed}: {err:?}"
        );
        assert_eq!(err.code(), "not-newer");
    }
    verify(
        golden_manifest(),
        &gateway().with_installed_version(v("1.4.2-rc.0")),
    )
    .unwrap();

    let mut downgrade = golden_manifest();
    downgrade.allow_downgrade = true;
    for installed in ["1.4.2-rc.1", "2.0.0"] {
        verify(
            downgrade.clone(),
            &gateway().with_installed_version(v(installed)),
        )
        .unwrap();
    }
    // A downgrade still honours the minimum.
    let err = verify(downgrade, &gateway().with_installed_version(v("1.0.0"))).unwrap_err();
    assert!(matches!(err, ReleaseError::BelowMinimum { .. }));
}

#[test]
fn the_downgrade_flag_cannot_be_added_after_signing() {
    let release = signed(golden_manifest());
    let mut wire = release.to_bytes();
    wire[1] |= 0x01;
    let err = decode_and_verify(
        &wire,
        &trusting(&golden_key()),
        &gateway().with_installed_version(v("2.0.0")),
    )
    .unwrap_err();
    assert!(matches!(err, ReleaseError::BadSignature { .. }), "{err:?}");
}

#[test]
fn checks_run_in_the_documented_order() {
    // Everything wrong at once: the signature is reported first, then compatible, time,
    // minimum, newer.
    let mut policy = Policy::new(ts("2030-01-01T00:00:00Z"))
        .with_compatible("other")
        .with_installed_version(v("0.1.0"));
    let release = signed(golden_manifest());
    let bad = release.verify(&trusting(&other_key()), &policy);
    assert!(matches!(bad, Err(ReleaseError::UnknownKey { .. })));
    let order = ["wrong-compatible", "expired", "below-minimum", "not-newer"];
    for code in order {
        let err = verify(golden_manifest(), &policy).unwrap_err();
        assert_eq!(err.code(), code);
        match code {
            "wrong-compatible" => policy.compatible = Some("spark-bbb".to_owned()),
            "expired" => policy.now = ts("2026-11-27T00:00:00Z"),
            "below-minimum" => policy.installed_version = Some(v("9.0.0")),
            _ => policy.installed_version = None,
        }
    }
    verify(golden_manifest(), &policy).unwrap();
}

#[test]
fn messages_say_what_to_do_next() {
    let err = verify(
        golden_manifest(),
        &gateway().with_installed_version(v("2.0.0")),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "release 1.4.2-rc.1+build.7 is not newer than installed 2.0.0: refusing a rollback; sign it with --allow-downgrade if intended"
    );
}

#[test]
fn bundle_digest_is_checked() {
    let bundle = vec![0x5a; 200_000];
    let digest = digest_reader(&bundle[..]).unwrap();
    assert_eq!(digest.size, 200_000);
    let mut manifest = minimal_manifest();
    manifest.bundle_sha256 = digest.sha256;
    manifest.bundle_size = digest.size;
    manifest.check_bundle(&digest).unwrap();
    let other = digest_reader(&bundle[1..]).unwrap();
    assert!(manifest.check_bundle(&other).is_err());
}
