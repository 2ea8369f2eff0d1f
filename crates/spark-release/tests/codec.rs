//! The canonical form and the wire and JSON forms: golden vectors, documented byte layout,
//! round trips, strict decoding and tamper detection.

mod common;

use std::path::PathBuf;

use common::*;
use proptest::prelude::*;
use spark_release::{
    DecodeError, InvalidManifest, KeyId, MAX_LOCATIONS, MAX_SIGNED_LEN, Policy, ReleaseError,
    ReleaseManifest, SIGNING_CONTEXT, SignedRelease, Timestamp,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Compares `actual` with the golden file; `SPARK_RELEASE_BLESS=1` (re)writes it instead. Only
/// bless on purpose: a changed golden vector means every deployed verifier breaks.
fn golden(name: &str, actual: &[u8]) {
    let path = data(name);
    if std::env::var_os("SPARK_RELEASE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; generate it once with SPARK_RELEASE_BLESS=1 cargo test -p spark-release",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "{name} drifted from the golden vector: the canonical form changed, which breaks every \
         deployed verifier; use a new format byte instead\nexpected {}\nactual   {}",
        hex::encode(&expected),
        hex::encode(actual)
    );
}

fn golden_release() -> SignedRelease {
    SignedRelease::sign(golden_manifest(), &golden_key()).unwrap()
}

#[test]
fn golden_vectors_are_reproduced() {
    let release = golden_release();
    golden("golden.manifest.bin", release.canonical_manifest());
    golden("golden.release.bin", &release.to_bytes());
    golden("golden.release.json", release.to_json().as_bytes());
    golden(
        "golden.pub.hex",
        format!("{}\n", hex::encode(golden_key().verifying_key().as_bytes())).as_bytes(),
    );
}

#[test]
fn golden_files_decode_and_verify() {
    let keys = trusting(&golden_key());
    let policy = Policy::new(ts("2026-11-27T00:00:00Z"))
        .with_compatible("spark-bbb")
        .with_installed_version(v("1.3.0"));
    let bin = std::fs::read(data("golden.release.bin")).unwrap();
    let json = std::fs::read(data("golden.release.json")).unwrap();
    for bytes in [&bin, &json] {
        let release = SignedRelease::parse(bytes).unwrap();
        assert_eq!(release.manifest(), &golden_manifest());
        release.verify(&keys, &policy).unwrap();
    }
}

#[test]
fn byte_layout_matches_the_documentation() {
    let release = golden_release();
    let m = release.canonical_manifest();
    let be64 = |at: usize| u64::from_be_bytes(m[at..at + 8].try_into().unwrap());
    assert_eq!(m[0], 0x01, "format");
    assert_eq!(m[1], 0x00, "flags");
    assert_eq!(be64(2), ts("2026-11-26T00:00:00Z").unix());
    assert_eq!(be64(10), ts("2026-12-26T00:00:00Z").unix());
    assert_eq!(be64(18), 80_803_077);
    assert_eq!(&m[26..58], &golden_manifest().bundle_sha256);
    let mut at = 58;
    let mut str8 = |expected: &str| {
        assert_eq!(usize::from(m[at]), expected.len());
        assert_eq!(&m[at + 1..at + 1 + expected.len()], expected.as_bytes());
        at += 1 + expected.len();
    };
    str8("spark-bbb");
    str8("1.4.2-rc.1+build.7");
    str8("1.2.0");
    str8("2026-w48");
    assert_eq!(m[at], 2, "location count");
    at += 1;
    for url in &golden_manifest().locations {
        assert_eq!(
            usize::from(u16::from_be_bytes([m[at], m[at + 1]])),
            url.len()
        );
        assert_eq!(&m[at + 2..at + 2 + url.len()], url.as_bytes());
        at += 2 + url.len();
    }
    assert_eq!(at, m.len());

    // Wire form: manifest || key id || signature; key id = SHA-256(public key)[..8].
    let wire = release.to_bytes();
    assert_eq!(wire.len(), m.len() + 8 + 64);
    assert_eq!(&wire[..m.len()], m);
    let key_id = KeyId::of(&golden_key().verifying_key());
    assert_eq!(&wire[m.len()..m.len() + 8], &key_id.0);
    assert_eq!(&wire[m.len() + 8..], release.signature());

    // The signature covers the domain-separation prefix followed by the manifest.
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(m);
    let signature = ed25519_dalek::Signature::from_bytes(release.signature());
    golden_key()
        .verifying_key()
        .verify_strict(&message, &signature)
        .unwrap();
    assert_eq!(SIGNING_CONTEXT, b"spark-release-v1\0");
}

#[test]
fn minimal_release_is_compact() {
    let release = SignedRelease::sign(minimal_manifest(), &golden_key()).unwrap();
    // 58 fixed + 10 compatible + 6 version + 1 + 1 + 1 count + 8 key id + 64 signature.
    assert_eq!(release.to_bytes().len(), 149);
}

#[test]
fn round_trips_through_both_forms() {
    let mut downgrade = minimal_manifest();
    downgrade.allow_downgrade = true;
    downgrade.min_version = Some(v("3.0.0")); // allowed only with allow_downgrade
    let mut max = golden_manifest();
    max.locations = (0..MAX_LOCATIONS)
        .map(|i| format!("https://m{i}.test/{}", "x".repeat(2000)))
        .collect();
    max.compatible = "c".repeat(255);
    max.rollout = Some("r".repeat(255));
    for manifest in [golden_manifest(), minimal_manifest(), downgrade, max] {
        let release = SignedRelease::sign(manifest.clone(), &golden_key()).unwrap();
        let wire = release.to_bytes();
        assert!(wire.len() <= MAX_SIGNED_LEN);
        let from_wire = SignedRelease::from_bytes(&wire).unwrap();
        assert_eq!(from_wire, release);
        assert_eq!(from_wire.to_bytes(), wire);
        let from_json = SignedRelease::from_json(&release.to_json()).unwrap();
        assert_eq!(from_json, release);
        assert_eq!(from_json.to_json(), release.to_json());
        assert_eq!(
            ReleaseManifest::from_canonical_bytes(release.canonical_manifest()).unwrap(),
            manifest
        );
    }
}

#[test]
fn every_truncation_and_trailing_byte_is_rejected() {
    let wire = golden_release().to_bytes();
    for len in 0..wire.len() {
        match SignedRelease::from_bytes(&wire[..len]) {
            Err(DecodeError::Truncated { .. }) => {}
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
    let mut long = wire.clone();
    long.push(0);
    assert!(matches!(
        SignedRelease::from_bytes(&long),
        Err(DecodeError::TrailingBytes { count: 1 })
    ));
    let huge = vec![0x01; MAX_SIGNED_LEN + 1];
    assert!(matches!(
        SignedRelease::from_bytes(&huge),
        Err(DecodeError::TooLong { .. })
    ));
}

#[test]
fn tampering_with_any_signed_byte_fails() {
    let keys = trusting(&golden_key());
    let policy = Policy::new(ts("2026-11-27T00:00:00Z"));
    let wire = golden_release().to_bytes();
    for i in 0..wire.len() {
        for bit in [0x01u8, 0x80] {
            let mut bad = wire.clone();
            bad[i] ^= bit;
            // Either it no longer decodes, or the key is unknown (key id byte), or the
            // signature fails: never accepted.
            match SignedRelease::from_bytes(&bad) {
                Err(_) => {}
                Ok(release) => match release.verify(&keys, &policy) {
                    Err(ReleaseError::BadSignature { .. } | ReleaseError::UnknownKey { .. }) => {}
                    other => panic!("flipping bit {bit:#x} of byte {i} gave {other:?}"),
                },
            }
        }
    }
}

#[test]
fn tampered_json_fields_fail_the_signature() {
    let keys = trusting(&golden_key());
    let policy = Policy::new(ts("2026-11-27T00:00:00Z"));
    let json = golden_release().to_json();
    for (from, to) in [
        ("\"1.4.2-rc.1+build.7\"", "\"1.4.3\""),
        ("80803077", "80803078"),
        ("\"allow_downgrade\": false", "\"allow_downgrade\": true"),
        ("https://ota.spark.test", "https://evil.test"),
        ("2026-12-26T00:00:00Z", "2027-12-26T00:00:00Z"),
        ("\"2026-w48\"", "\"2026-w49\""),
    ] {
        assert!(json.contains(from), "{from}");
        let release = SignedRelease::from_json(&json.replacen(from, to, 1)).unwrap();
        assert!(
            matches!(
                release.verify(&keys, &policy),
                Err(ReleaseError::BadSignature { .. })
            ),
            "{from} -> {to}"
        );
    }
}

#[test]
fn decoding_is_strict() {
    let good = golden_release().canonical_manifest().to_vec();
    let decode = |bytes: &[u8]| ReleaseManifest::from_canonical_bytes(bytes);

    let mut bad = good.clone();
    bad[0] = 0x02;
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::UnsupportedFormat { found: 0x02 })
    ));

    let mut bad = good.clone();
    bad[1] = 0x02;
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::ReservedFlags { flags: 0x02 })
    ));

    let mut bad = good.clone();
    bad[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::TimestampOutOfRange {
            field: "issued_at",
            ..
        })
    ));

    // expires_at == issued_at
    let mut bad = good.clone();
    let issued: [u8; 8] = bad[2..10].try_into().unwrap();
    bad[10..18].copy_from_slice(&issued);
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::Invalid(
            InvalidManifest::ExpiresNotAfterIssued { .. }
        ))
    ));

    // compatible "spark-bbb" -> invalid UTF-8, then a control character
    let mut bad = good.clone();
    bad[59] = 0xff;
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::Utf8 {
            field: "compatible"
        })
    ));
    let mut bad = good.clone();
    bad[59] = b'\n';
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::Invalid(InvalidManifest::BadCharacter {
            field: "compatible"
        }))
    ));

    // compatible of length 0
    let mut bad = good.clone();
    bad[58] = 0;
    bad.drain(59..68);
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::Invalid(InvalidManifest::EmptyField {
            field: "compatible"
        }))
    ));

    // version "1.4.2-rc.1+build.7" -> non-semver and non-canonical spellings
    let version_at = 58 + 1 + 9;
    for text in ["v1.4.2", "1.4", "01.4.2", "1.4.2 "] {
        let mut bad = good[..version_at].to_vec();
        bad.push(text.len() as u8);
        bad.extend_from_slice(text.as_bytes());
        bad.extend_from_slice(&good[version_at + 1 + 18..]);
        let err = decode(&bad).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Version {
                    field: "version",
                    ..
                }
            ),
            "{text}: {err:?}"
        );
    }

    // too many locations
    let mut bad = good.clone();
    let urls: usize = golden_manifest()
        .locations
        .iter()
        .map(|u| 2 + u.len())
        .sum();
    let count_at = good.len() - urls - 1;
    assert_eq!(bad[count_at], 2);
    bad[count_at] = 9;
    assert!(matches!(
        decode(&bad),
        Err(DecodeError::Invalid(InvalidManifest::TooManyLocations {
            count: 9,
            ..
        }))
    ));
}

#[test]
fn json_is_strict() {
    let json = golden_release().to_json();
    for (from, to) in [
        (
            "\"format\": \"spark-release-v1\"",
            "\"format\": \"spark-release-v2\"",
        ),
        ("\"rollout\"", "\"rollout_id\""),
        ("\"key_id\": \"", "\"key_id\": \"00"),
        ("2026-11-26T00:00:00Z", "2026-11-26T00:00:00.5Z"),
        ("\"1.2.0\"", "\"1.2\""),
    ] {
        assert!(json.contains(from), "{from}");
        let err = SignedRelease::from_json(&json.replacen(from, to, 1)).unwrap_err();
        assert!(
            matches!(err, DecodeError::Json(_)),
            "{from} -> {to}: {err:?}"
        );
    }
}

#[test]
fn invalid_manifests_cannot_be_signed() {
    let key = golden_key();
    let sign = |m: ReleaseManifest| SignedRelease::sign(m, &key).map(|_| ()).unwrap_err();

    let mut m = minimal_manifest();
    m.compatible.clear();
    assert_eq!(
        sign(m),
        InvalidManifest::EmptyField {
            field: "compatible"
        }
    );

    let mut m = minimal_manifest();
    m.compatible = "x".repeat(256);
    assert!(matches!(
        sign(m),
        InvalidManifest::FieldTooLong {
            field: "compatible",
            len: 256,
            ..
        }
    ));

    let mut m = minimal_manifest();
    m.locations = vec!["https://a.test/x y".to_owned()];
    assert_eq!(sign(m), InvalidManifest::BadCharacter { field: "location" });

    let mut m = minimal_manifest();
    m.locations = vec!["u".to_owned(); MAX_LOCATIONS + 1];
    assert!(matches!(sign(m), InvalidManifest::TooManyLocations { .. }));

    let mut m = minimal_manifest();
    m.rollout = Some(String::new());
    assert_eq!(sign(m), InvalidManifest::EmptyField { field: "rollout" });

    let mut m = minimal_manifest();
    m.expires_at = m.issued_at;
    assert!(matches!(
        sign(m),
        InvalidManifest::ExpiresNotAfterIssued { .. }
    ));

    let mut m = minimal_manifest();
    m.min_version = Some(v("2.0.1"));
    assert!(matches!(
        sign(m),
        InvalidManifest::MinimumAboveVersion { .. }
    ));
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9._~:/é-]{{1,{max}}}")).unwrap()
}

fn arb_version() -> impl Strategy<Value = spark_release::Version> {
    (
        0u64..1000,
        0u64..1000,
        0u64..1000,
        proptest::option::of("[a-z]{1,6}(\\.[1-9][0-9]{0,2})?"),
    )
        .prop_map(|(a, b, c, pre)| match pre {
            Some(pre) => v(&format!("{a}.{b}.{c}-{pre}")),
            None => v(&format!("{a}.{b}.{c}")),
        })
}

fn arb_manifest() -> impl Strategy<Value = ReleaseManifest> {
    (
        arb_text(40),
        arb_version(),
        any::<[u8; 32]>(),
        any::<u64>(),
        proptest::collection::vec(arb_text(300), 0..=MAX_LOCATIONS),
        0..Timestamp::MAX.unix(),
        1u64..10_000_000,
        any::<bool>(),
        proptest::option::of(arb_text(30)),
    )
        .prop_map(
            |(
                compatible,
                version,
                sha,
                size,
                locations,
                issued,
                life,
                allow_downgrade,
                rollout,
            )| {
                let issued_at = Timestamp::from_unix(issued).unwrap();
                ReleaseManifest {
                    compatible,
                    // A minimum equal to the version is always allowed.
                    min_version: allow_downgrade.then(|| version.clone()),
                    version,
                    bundle_sha256: sha,
                    bundle_size: size,
                    locations,
                    issued_at,
                    expires_at: Timestamp::from_unix(issued_at.unix() + life)
                        .unwrap_or(Timestamp::MAX),
                    allow_downgrade,
                    rollout,
                }
            },
        )
        .prop_filter("non-empty validity", |m| m.expires_at > m.issued_at)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_valid_manifest_round_trips(manifest in arb_manifest()) {
        let release = SignedRelease::sign(manifest.clone(), &golden_key()).unwrap();
        let wire = release.to_bytes();
        let back = SignedRelease::from_bytes(&wire).unwrap();
        prop_assert_eq!(back.manifest(), &manifest);
        prop_assert_eq!(back.to_bytes(), wire);
        let json = SignedRelease::from_json(&release.to_json()).unwrap();
        prop_assert_eq!(json, release);
        back.verify_signature(&trusting(&golden_key())).unwrap();
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SignedRelease::from_bytes(&bytes);
        let _ = SignedRelease::parse(&bytes);
    }
}
