//! The result of a scan as one serialisable [`Report`], the CI verdict, and the baseline diff.
//! Renderers for the terminal, Markdown, HTML and SARIF live in [`render`].
//!
//! # Exit codes (the CI gate)
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | no untriaged finding at or above the CVSS threshold, snapshot fresh enough |
//! | 1 | untriaged findings at or above the threshold (unknown CVSS counts as above) |
//! | 2 | bad input: unreadable or malformed SBOM, lock file, VEX, snapshot, or a usage error |
//! | 3 | the snapshot is older than the configured limit (checked first: old data proves nothing) |

pub mod render;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::SourceInfo;
use crate::error::{Error, Result};
use crate::model::{Finding, Status};

/// Exit code: clean.
pub const EXIT_OK: u8 = 0;
/// Exit code: untriaged findings at or above the threshold.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code: bad input.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: snapshot too old.
pub const EXIT_STALE: u8 = 3;

/// The gate's policy; `spark-cve.toml` `[policy]` or flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Policy {
    /// Untriaged findings with CVSS >= this fail the gate.
    #[serde(default = "default_threshold")]
    pub fail_cvss: f64,
    /// Age (days) from which the report warns that the snapshot is getting old.
    #[serde(default = "default_warn")]
    pub warn_age_days: i64,
    /// Age (days) past which the snapshot is stale and the gate fails (exit 3).
    #[serde(default = "default_max")]
    pub max_age_days: i64,
    /// Also fail on undecidable findings (at or above the threshold).
    #[serde(default)]
    pub fail_on_undecidable: bool,
}

fn default_threshold() -> f64 {
    7.0
}
fn default_warn() -> i64 {
    7
}
fn default_max() -> i64 {
    30
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            fail_cvss: default_threshold(),
            warn_age_days: default_warn(),
            max_age_days: default_max(),
            fail_on_undecidable: false,
        }
    }
}

/// The config file of `spark-cve scan` (`--config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub policy: Policy,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = crate::error::read_to_string(path)?;
        toml::from_str(&text).map_err(|e| Error::toml(path, &text, &e))
    }
}

/// How old the snapshot's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Freshness {
    Fresh,
    Old,
    Stale,
}

/// What the report says about the snapshot it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub path: String,
    pub created: String,
    pub sha256: String,
    pub advisories: usize,
    pub sources: Vec<SourceInfo>,
    /// The date the data is as fresh as (the stalest source's newest record).
    pub data_date: String,
    pub age_days: i64,
    pub freshness: Freshness,
}

/// Counts per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub components: usize,
    pub affected: usize,
    pub undecidable: usize,
    pub triaged: usize,
    pub patched: usize,
    pub not_affected: usize,
    /// Findings that fail the gate.
    pub gating: usize,
}

/// What changed since the baseline report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub baseline: String,
    /// Open now, not open in the baseline.
    pub new: Vec<DiffEntry>,
    /// Open in the baseline, not open now.
    pub fixed: Vec<DiffEntry>,
    /// In both, with another status or component version.
    pub changed: Vec<DiffEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffEntry {
    pub id: String,
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// The verdict of the gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub exit_code: u8,
    pub reasons: Vec<String>,
}

/// One scan's full result; `--format json` writes it and `--baseline` reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub generated: String,
    pub inputs: Vec<String>,
    pub snapshot: SnapshotSummary,
    pub policy: Policy,
    pub summary: Summary,
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    pub verdict: Verdict,
}

/// Does this finding fail the gate under `policy`?
pub fn gates(f: &Finding, policy: &Policy) -> bool {
    let open = match f.status {
        Status::Affected => true,
        Status::Undecidable => policy.fail_on_undecidable,
        _ => false,
    };
    // Informational RustSec advisories (unmaintained, unsound) are warnings, as in cargo-audit.
    // Unknown severity counts as above the threshold: not knowing is no reason to ship.
    open && f.informational.is_none() && f.cvss.is_none_or(|s| s >= policy.fail_cvss)
}

/// Days between two `YYYY-MM-DD…` dates (`to - from`), `None` if either is unreadable.
fn days_between(from: &str, to: time::Date) -> Option<i64> {
    let from = crate::triage::parse_date(from)?;
    Some((to - from).whole_days())
}

/// Assembles the report and its verdict.
pub fn assemble(
    snapshot: &crate::db::Snapshot,
    inputs: Vec<String>,
    components: usize,
    findings: Vec<Finding>,
    policy: &Policy,
    now: time::OffsetDateTime,
    baseline: Option<(&str, &Report)>,
) -> Report {
    let header = &snapshot.header;
    let data_date = header.data_date();
    let age_days = days_between(&data_date, now.date()).unwrap_or(i64::MAX);
    let freshness = if age_days > policy.max_age_days {
        Freshness::Stale
    } else if age_days > policy.warn_age_days {
        Freshness::Old
    } else {
        Freshness::Fresh
    };
    let mut summary = Summary {
        components,
        ..Summary::default()
    };
    for f in &findings {
        match f.status {
            Status::Affected => summary.affected += 1,
            Status::Undecidable => summary.undecidable += 1,
            Status::Triaged => summary.triaged += 1,
            Status::Patched => summary.patched += 1,
            Status::NotAffected => summary.not_affected += 1,
        }
        if gates(f, policy) {
            summary.gating += 1;
        }
    }
    let mut reasons = Vec::new();
    let exit_code = if freshness == Freshness::Stale {
        reasons.push(format!(
            "snapshot data is {age_days} days old (from {data_date}), limit {} days: rebuild it with `spark-cve db build`",
            policy.max_age_days
        ));
        EXIT_STALE
    } else if summary.gating > 0 {
        reasons.push(format!(
            "{} untriaged finding(s) with CVSS >= {} (or unknown severity)",
            summary.gating, policy.fail_cvss
        ));
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    if freshness == Freshness::Stale && summary.gating > 0 {
        reasons.push(format!(
            "also {} untriaged finding(s) over the threshold",
            summary.gating
        ));
    }
    let diff = baseline.map(|(path, b)| diff(path, &b.findings, &findings));
    // RFC 3339 formatting of a valid UTC time cannot fail.
    let generated = now
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formats any UTC time");
    Report {
        tool: format!("spark-cve {}", env!("CARGO_PKG_VERSION")),
        generated,
        inputs,
        snapshot: SnapshotSummary {
            path: snapshot.path.display().to_string(),
            created: header.created.clone(),
            sha256: header.sha256.clone(),
            advisories: header.advisories,
            sources: header.sources.clone(),
            data_date,
            age_days,
            freshness,
        },
        policy: policy.clone(),
        summary,
        findings,
        diff,
        verdict: Verdict { exit_code, reasons },
    }
}

/// Compares findings with a baseline's by (advisory id, component).
pub fn diff(baseline_path: &str, before: &[Finding], after: &[Finding]) -> Diff {
    let index = |fs: &[Finding]| -> BTreeMap<(String, String), (Status, Option<String>)> {
        fs.iter()
            .map(|f| (f.key(), (f.status, f.version.clone())))
            .collect()
    };
    let b = index(before);
    let a = index(after);
    let label = |s: Status, v: &Option<String>| {
        format!(
            "{} @ {}",
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            v.as_deref().unwrap_or("?")
        )
    };
    let mut d = Diff {
        baseline: baseline_path.into(),
        ..Diff::default()
    };
    for (key, (s, v)) in &a {
        let entry = |before: Option<String>| DiffEntry {
            id: key.0.clone(),
            component: key.1.clone(),
            before,
            after: Some(label(*s, v)),
        };
        match b.get(key) {
            None if s.is_open() => d.new.push(entry(None)),
            None => {}
            Some((bs, bv)) => {
                if bs.is_open() && !s.is_open() {
                    d.fixed.push(entry(Some(label(*bs, bv))));
                } else if !bs.is_open() && s.is_open() {
                    d.new.push(entry(Some(label(*bs, bv))));
                } else if bs != s || bv != v {
                    d.changed.push(entry(Some(label(*bs, bv))));
                }
            }
        }
    }
    for (key, (bs, bv)) in &b {
        if !a.contains_key(key) && bs.is_open() {
            d.fixed.push(DiffEntry {
                id: key.0.clone(),
                component: key.1.clone(),
                before: Some(label(*bs, bv)),
                after: None,
            });
        }
    }
    d
}

/// Reads a previous JSON report for `--baseline`.
pub fn read_report(path: &Path) -> Result<Report> {
    let text = crate::error::read_to_string(path)?;
    crate::error::parse_json(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_inline_toml() {
        let c: Config = toml::from_str("[policy]\nfail-cvss = 9.0\nmax-age-days = 14\n").unwrap();
        assert_eq!(c.policy.fail_cvss, 9.0);
        assert_eq!(c.policy.max_age_days, 14);
        assert_eq!(c.policy.warn_age_days, 7);
        assert!(toml::from_str::<Config>("[policy]\nfail-cvs = 9.0\n").is_err());
    }
}
