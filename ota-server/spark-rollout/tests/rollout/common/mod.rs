//! Fleet and release builders shared by the test modules.

use spark_rollout::jiff::{SignedDuration, Timestamp};
use spark_rollout::{DeviceInfo, Gates, ReleaseTarget, TelemetryGate};

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

/// `n` devices on `version` (the simulator's fleet: three hardware revisions, five regions).
pub fn fleet(n: usize, version: &str) -> Vec<DeviceInfo> {
    spark_rollout::sim::fleet(n, &version.parse().unwrap())
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
