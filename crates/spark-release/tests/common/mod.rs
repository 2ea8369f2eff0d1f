//! Fixtures shared by the spark-release tests: a fixed-seed release key and a sample manifest.

#![allow(dead_code)] // each test binary uses a different subset

use spark_release::{ReleaseManifest, SigningKey, Timestamp, TrustedKeys, Version};

/// The golden vectors' key: a fixed seed so the signature (deterministic in Ed25519) is fixed too.
pub fn golden_key() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// A second key, trusted by nobody unless a test says so.
pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[0x17; 32])
}

pub fn trusting(key: &SigningKey) -> TrustedKeys {
    let mut keys = TrustedKeys::new();
    keys.insert(key.verifying_key()).unwrap();
    keys
}

pub fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

pub fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

/// The golden manifest: every field set, including both optional strings and two locations.
pub fn golden_manifest() -> ReleaseManifest {
    ReleaseManifest {
        compatible: "spark-bbb".to_owned(),
        version: v("1.4.2-rc.1+build.7"),
        bundle_sha256: core::array::from_fn(|i| i as u8),
        bundle_size: 80_803_077,
        locations: vec![
            "https://ota.spark.test/bundles/1.4.2.raucb".to_owned(),
            "https://mirror.spark.test/b/1.4.2.raucb".to_owned(),
        ],
        min_version: Some(v("1.2.0")),
        issued_at: ts("2026-11-26T00:00:00Z"),
        expires_at: ts("2026-12-26T00:00:00Z"),
        allow_downgrade: false,
        rollout: Some("2026-w48".to_owned()),
    }
}

/// A minimal manifest: no optional field, no location.
pub fn minimal_manifest() -> ReleaseManifest {
    ReleaseManifest {
        compatible: "spark-bbb".to_owned(),
        version: v("2.0.0"),
        bundle_sha256: [0xab; 32],
        bundle_size: 4096,
        locations: Vec::new(),
        min_version: None,
        issued_at: ts("2026-11-26T00:00:00Z"),
        expires_at: ts("2026-12-26T00:00:00Z"),
        allow_downgrade: false,
        rollout: None,
    }
}
