//! OSV records (crates.io and Linux ecosystems): `{"id", "modified", "withdrawn", "aliases",
//! "summary", "details", "severity": [{"type": "CVSS_V3", "score": vector}], "affected":
//! [{"package": {"ecosystem", "name"}, "ranges": [{"type", "events": [{"introduced"} |
//! {"fixed"} | {"last_affected"}]}], "versions": [...]}]}`. Other ecosystems are skipped.

use std::path::Path;

use serde_json::Value;

use super::nvd::str_field;
use crate::error::{Error, Result};
use crate::model::{Advisory, Affected, Cvss, Interval, PackageEcosystem};

pub fn parse(path: &Path, doc: &Value) -> Result<Option<Advisory>> {
    let Some(id) = doc.get("id").and_then(Value::as_str) else {
        return Err(Error::invalid(path, "/id", "missing or not a string"));
    };
    if doc.get("withdrawn").is_some_and(|w| !w.is_null()) {
        return Ok(None);
    }
    let mut affected = Vec::new();
    for (ai, a) in doc
        .get("affected")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let place = format!("/affected/{ai}");
        let eco = a
            .pointer("/package/ecosystem")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ecosystem = match eco {
            "crates.io" => PackageEcosystem::CratesIo,
            "Linux" => PackageEcosystem::Linux,
            _ => continue,
        };
        let Some(name) = a.pointer("/package/name").and_then(Value::as_str) else {
            return Err(Error::invalid(
                path,
                format!("{place}/package/name"),
                "missing",
            ));
        };
        let mut ranges = Vec::new();
        for (ri, r) in a
            .get("ranges")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            // GIT ranges name commits, which an SBOM cannot be compared with.
            if r.get("type").and_then(Value::as_str) == Some("GIT") {
                continue;
            }
            let Some(events) = r.get("events").and_then(Value::as_array) else {
                return Err(Error::invalid(
                    path,
                    format!("{place}/ranges/{ri}/events"),
                    "missing",
                ));
            };
            ranges.extend(events_to_intervals(events));
        }
        let versions = a
            .get("versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        affected.push(Affected::Package {
            ecosystem,
            name: name.to_string(),
            ranges,
            versions,
        });
    }
    if affected.is_empty() {
        return Ok(None);
    }
    let cvss = doc
        .get("severity")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("score").and_then(Value::as_str))
        .map(|vector| Cvss {
            version: vector
                .strip_prefix("CVSS:")
                .and_then(|r| r.split('/').next())
                .unwrap_or("")
                .to_string(),
            score: super::cvss::v3_base_score(vector).unwrap_or(f64::NAN),
            vector: vector.to_string(),
        })
        .find(|c| !c.score.is_nan());
    let aliases = doc
        .get("aliases")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let summary = str_field(doc, "summary")
        .filter(|s| !s.is_empty())
        .or_else(|| str_field(doc, "details"))
        .unwrap_or_default();
    Ok(Some(Advisory {
        id: id.to_string(),
        aliases,
        summary,
        published: str_field(doc, "published"),
        modified: str_field(doc, "modified"),
        cvss,
        informational: None,
        affected,
        sources: vec!["osv".into()],
    }))
}

/// OSV events, sorted as the spec requires, into intervals: `introduced` opens one, `fixed`
/// (exclusive) or `last_affected` (inclusive) closes it; an open one runs to infinity.
fn events_to_intervals(events: &[Value]) -> Vec<Interval> {
    let mut out = Vec::new();
    let mut open: Option<Option<String>> = None;
    for e in events {
        if let Some(v) = e.get("introduced").and_then(Value::as_str) {
            let start = (v != "0").then(|| v.to_string());
            open = Some(start);
        } else if let Some(v) = e.get("fixed").and_then(Value::as_str) {
            if let Some(start) = open.take() {
                out.push(Interval {
                    start_including: start,
                    end_excluding: Some(v.to_string()),
                    ..Interval::default()
                });
            }
        } else if let Some(v) = e.get("last_affected").and_then(Value::as_str)
            && let Some(start) = open.take()
        {
            out.push(Interval {
                start_including: start,
                end_including: Some(v.to_string()),
                ..Interval::default()
            });
        }
    }
    if let Some(start) = open {
        out.push(Interval {
            start_including: start,
            ..Interval::default()
        });
    }
    out
}
