//! Fleet and release builders shared by the test modules.

use std::collections::BTreeMap;

use spark_rollout::jiff::{SignedDuration, Timestamp};
use spark_rollout::{DeviceInfo, Gates, ReleaseTarget, TelemetryGate};

/// Regions of the simulated fleet and their sites' time zones.
pub const REGIONS: [(&str, &str); 5] = [
    ("eu", "Europe/Berlin"),
    ("us", "America/New_York"),
    ("br", "America/Sao_Paulo"),
    ("jp", "Asia/Tokyo"),
    ("au", "Australia/Sydney"),
];

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn mins(n: i64) -> SignedDuration {
    SignedDuration::from_mins(n)
}

pub fn hours(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n)
}

pub fn release(version: &str) -> ReleaseTarget {
    ReleaseTarget {
        release_id: format!("rel-{version}"),
        compatible: "spark-bbb".into(),
        version: version.parse().unwrap(),
        min_version: None,
        allow_downgrade: false,
    }
}

/// `n` devices on version `version`, three hardware revisions, five regions, one site per 40.
pub fn fleet(n: usize, version: &str) -> Vec<DeviceInfo> {
    (0..n)
        .map(|i| {
            let (region, tz) = REGIONS[(i / 3) % REGIONS.len()];
            DeviceInfo {
                id: format!("gw-{i:05}"),
                compatible: "spark-bbb".into(),
                hardware_rev: format!("rev-{}", ["a", "b", "c"][i % 3]),
                tags: BTreeMap::from([
                    ("region".to_string(), region.to_string()),
                    ("site".to_string(), format!("{region}-site-{}", i / 40)),
                ]),
                version: Some(version.parse().unwrap()),
                time_zone: Some(tz.to_string()),
            }
        })
        .collect()
}

/// Gates for small unit tests: no telemetry gate unless asked.
pub fn plain_gates(max_failure_bp: u32, min_sample: u32, soak: SignedDuration) -> Gates {
    Gates {
        max_failure_bp,
        min_sample,
        soak,
        telemetry: None,
        offline_after: hours(2),
        install_timeout: hours(6),
    }
}

pub fn telemetry_gate(max_silence: SignedDuration, max_silent_bp: u32) -> Option<TelemetryGate> {
    Some(TelemetryGate {
        max_silence,
        max_silent_bp,
    })
}
