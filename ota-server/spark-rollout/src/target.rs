//! Who a rollout is for: the release it installs (built from a manifest the server has already
//! verified), the device facts the server knows, and the target filter.
//!
//! The seam with signed releases: the engine never sees signatures. The server verifies a
//! release's `SignedRelease` (signature and key) on upload, and builds a [`ReleaseTarget`] from the
//! verified manifest with [`ReleaseTarget::from_verified_manifest`]. The only signed fact the
//! engine relies on is `allow_downgrade`: a [`RolloutKind::Rollback`] rollout, and any offer of a
//! version older than the device's, needs it.

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

/// The release a rollout installs, as far as the engine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseTarget {
    /// The server's id of the release (what check-in answers with).
    pub release_id: String,
    /// RAUC `compatible` of the devices it is for.
    pub compatible: String,
    /// The release's version.
    pub version: Version,
    /// Lowest installed version the release may be installed over.
    #[serde(default)]
    pub min_version: Option<Version>,
    /// The manifest is signed as an allowed downgrade.
    #[serde(default)]
    pub allow_downgrade: bool,
}

impl ReleaseTarget {
    /// The target for a release manifest. Call it only with a manifest whose signature the server
    /// has verified (`SignedRelease::verify_signature`): `allow_downgrade` is trusted as signed.
    pub fn from_verified_manifest(
        release_id: impl Into<String>,
        manifest: &spark_release::ReleaseManifest,
    ) -> ReleaseTarget {
        ReleaseTarget {
            release_id: release_id.into(),
            compatible: manifest.compatible.clone(),
            version: manifest.version.clone(),
            min_version: manifest.min_version.clone(),
            allow_downgrade: manifest.allow_downgrade,
        }
    }
}

/// Forward rollouts move devices up to the release; rollback rollouts move devices that run a
/// newer version back down to it (allowed only with a manifest signed as an allowed downgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    /// Devices older than the release.
    #[default]
    Forward,
    /// Devices newer than the release.
    Rollback,
}

/// What the server knows about a device at check-in (from its registration, its certificate and
/// what the check-in says).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id (the CN of its client certificate).
    pub id: String,
    /// RAUC `compatible` the device reports.
    pub compatible: String,
    /// Hardware revision (e.g. `bbb-rev-c`).
    #[serde(default)]
    pub hardware_rev: String,
    /// Free tags such as `site`, `region`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Installed firmware version, when known.
    #[serde(default)]
    pub version: Option<Version>,
    /// IANA time zone of the device's site (e.g. `Europe/Berlin`); UTC when absent.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// Which devices a rollout is for, beyond the release's own `compatible`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFilter {
    /// Only these hardware revisions (empty: any).
    #[serde(default)]
    pub hardware_revs: Vec<String>,
    /// Tag constraints: for each key, the allowed values (a device must match every key).
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Installed version must match this requirement (e.g. `>=1.2, <1.4`); devices of unknown
    /// version are then excluded.
    #[serde(default)]
    pub current_version: Option<VersionReq>,
}

/// Why a device is not part of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Ineligible {
    /// The device's `compatible` differs from the release's.
    WrongCompatible,
    /// Hardware revision not in the filter.
    HardwareRev,
    /// A tag constraint does not match.
    Tag {
        /// The tag key that did not match.
        key: String,
    },
    /// Installed version outside the filter's requirement, or unknown while one is set.
    CurrentVersion,
    /// Installed version is below the release's `min_version`.
    BelowMinVersion,
    /// Already runs the release's version.
    AlreadyCurrent,
    /// Runs a newer version and this is a forward rollout.
    Newer,
    /// Runs an older version and this is a rollback rollout.
    Older,
}

impl Ineligible {
    /// Short stable name for reports.
    pub fn code(&self) -> &'static str {
        match self {
            Ineligible::WrongCompatible => "wrong_compatible",
            Ineligible::HardwareRev => "hardware_rev",
            Ineligible::Tag { .. } => "tag",
            Ineligible::CurrentVersion => "current_version",
            Ineligible::BelowMinVersion => "below_min_version",
            Ineligible::AlreadyCurrent => "already_current",
            Ineligible::Newer => "newer",
            Ineligible::Older => "older",
        }
    }
}

/// Whether `device` is in a rollout's scope: the release's `compatible`, and the filter's
/// hardware revisions and tags (the facts about where and what a unit is, which an update does
/// not change). [`eligibility`] adds the version rules to it.
pub fn scope(
    device: &DeviceInfo,
    release: &ReleaseTarget,
    filter: &TargetFilter,
) -> Result<(), Ineligible> {
    if device.compatible != release.compatible {
        return Err(Ineligible::WrongCompatible);
    }
    if !filter.hardware_revs.is_empty() && !filter.hardware_revs.contains(&device.hardware_rev) {
        return Err(Ineligible::HardwareRev);
    }
    for (key, allowed) in &filter.tags {
        match device.tags.get(key) {
            Some(v) if allowed.contains(v) => {}
            _ => return Err(Ineligible::Tag { key: key.clone() }),
        }
    }
    Ok(())
}

/// Whether `device` is targeted by a rollout of `release` with `filter` and `kind`: in its
/// [`scope`], and the version rules.
///
/// Version rules: a forward rollout takes devices older than the release; a rollback rollout
/// takes devices newer than the release (and may only be created with `allow_downgrade`, checked
/// at creation). Devices of unknown version are taken by forward rollouts without a version
/// filter (the device's own manifest check is the last word), never by rollbacks.
pub fn eligibility(
    device: &DeviceInfo,
    release: &ReleaseTarget,
    kind: RolloutKind,
    filter: &TargetFilter,
) -> Result<(), Ineligible> {
    scope(device, release, filter)?;
    if let Some(req) = &filter.current_version {
        match &device.version {
            Some(v) if req.matches(v) => {}
            _ => return Err(Ineligible::CurrentVersion),
        }
    }
    match &device.version {
        None if kind == RolloutKind::Rollback => Err(Ineligible::CurrentVersion),
        None => Ok(()),
        Some(v) => {
            if let Some(min) = &release.min_version
                && v < min
            {
                return Err(Ineligible::BelowMinVersion);
            }
            match (v.cmp(&release.version), kind) {
                (std::cmp::Ordering::Equal, _) => Err(Ineligible::AlreadyCurrent),
                (std::cmp::Ordering::Less, RolloutKind::Forward) => Ok(()),
                (std::cmp::Ordering::Greater, RolloutKind::Forward) => Err(Ineligible::Newer),
                (std::cmp::Ordering::Greater, RolloutKind::Rollback) => Ok(()),
                (std::cmp::Ordering::Less, RolloutKind::Rollback) => Err(Ineligible::Older),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> ReleaseTarget {
        ReleaseTarget {
            release_id: "r1".into(),
            compatible: "spark-bbb".into(),
            version: Version::new(1, 4, 0),
            min_version: Some(Version::new(1, 0, 0)),
            allow_downgrade: false,
        }
    }

    fn device(version: &str) -> DeviceInfo {
        DeviceInfo {
            id: "gw-1".into(),
            compatible: "spark-bbb".into(),
            hardware_rev: "rev-c".into(),
            tags: [("region".to_string(), "north".to_string())].into(),
            version: Some(version.parse().unwrap()),
            time_zone: None,
        }
    }

    #[test]
    fn scope_is_the_filter_without_versions() {
        let r = release();
        let f = TargetFilter {
            hardware_revs: vec!["rev-c".into()],
            current_version: Some(">=1.3".parse().unwrap()),
            ..TargetFilter::default()
        };
        // Below min_version, outside the version filter, newer or current: in scope all the same.
        for v in ["0.1.0", "1.2.0", "1.4.0", "2.0.0"] {
            assert_eq!(scope(&device(v), &r, &f), Ok(()), "{v}");
        }
        assert_eq!(
            eligibility(&device("1.2.0"), &r, RolloutKind::Forward, &f),
            Err(Ineligible::CurrentVersion)
        );
        let f = TargetFilter {
            hardware_revs: vec!["rev-b".into()],
            ..TargetFilter::default()
        };
        assert_eq!(
            scope(&device("1.3.0"), &r, &f),
            Err(Ineligible::HardwareRev)
        );
        let mut d = device("1.3.0");
        d.compatible = "other".into();
        assert_eq!(
            scope(&d, &r, &TargetFilter::default()),
            Err(Ineligible::WrongCompatible)
        );
    }

    #[test]
    fn filter_rules() {
        let r = release();
        let f = TargetFilter::default();
        let fw = RolloutKind::Forward;
        assert_eq!(eligibility(&device("1.3.0"), &r, fw, &f), Ok(()));
        assert_eq!(
            eligibility(&device("1.4.0"), &r, fw, &f),
            Err(Ineligible::AlreadyCurrent)
        );
        assert_eq!(
            eligibility(&device("1.5.0"), &r, fw, &f),
            Err(Ineligible::Newer)
        );
        assert_eq!(
            eligibility(&device("0.9.0"), &r, fw, &f),
            Err(Ineligible::BelowMinVersion)
        );
        let mut d = device("1.3.0");
        d.compatible = "other".into();
        assert_eq!(
            eligibility(&d, &r, fw, &f),
            Err(Ineligible::WrongCompatible)
        );

        let f = TargetFilter {
            hardware_revs: vec!["rev-b".into()],
            ..TargetFilter::default()
        };
        assert_eq!(
            eligibility(&device("1.3.0"), &r, fw, &f),
            Err(Ineligible::HardwareRev)
        );
        let f = TargetFilter {
            tags: [("region".to_string(), vec!["south".to_string()])].into(),
            ..TargetFilter::default()
        };
        assert_eq!(
            eligibility(&device("1.3.0"), &r, fw, &f),
            Err(Ineligible::Tag {
                key: "region".into()
            })
        );
        let f = TargetFilter {
            current_version: Some(">=1.2.0, <1.3.0".parse().unwrap()),
            ..TargetFilter::default()
        };
        assert_eq!(eligibility(&device("1.2.5"), &r, fw, &f), Ok(()));
        assert_eq!(
            eligibility(&device("1.3.0"), &r, fw, &f),
            Err(Ineligible::CurrentVersion)
        );
        let mut unknown = device("1.0.0");
        unknown.version = None;
        assert_eq!(
            eligibility(&unknown, &r, fw, &f),
            Err(Ineligible::CurrentVersion)
        );
        // Prerelease precedence is semver's, not string order.
        assert_eq!(
            eligibility(&device("1.4.0-rc.1"), &r, fw, &TargetFilter::default()),
            Ok(())
        );
    }

    #[test]
    fn rollback_targets_newer_devices_only() {
        let r = release();
        let f = TargetFilter::default();
        let rb = RolloutKind::Rollback;
        assert_eq!(eligibility(&device("1.5.0"), &r, rb, &f), Ok(()));
        assert_eq!(
            eligibility(&device("1.3.0"), &r, rb, &f),
            Err(Ineligible::Older)
        );
    }
}
