//! CVE JSON 5 records (cvelistV5): `{"dataType": "CVE_RECORD", "cveMetadata": {"cveId", "state",
//! "dateUpdated"}, "containers": {"cna": {...}, "adp": [...]}}`. `affected[]` gives
//! vendor/product with `versions[]` (`version`, `lessThan`, `lessThanOrEqual`, `status`) and
//! `defaultStatus`; `metrics[]` gives `cvssV3_1`/`cvssV3_0`/`cvssV4_0`.

use std::path::Path;

use serde_json::Value;

use super::nvd::{english, str_field};
use crate::error::{Error, Result};
use crate::model::{Advisory, Affected, Cvss, Interval};

pub fn parse(path: &Path, doc: &Value) -> Result<Option<Advisory>> {
    let Some(meta) = doc.get("cveMetadata") else {
        return Err(Error::invalid(path, "/cveMetadata", "missing"));
    };
    let Some(id) = meta.get("cveId").and_then(Value::as_str) else {
        return Err(Error::invalid(
            path,
            "/cveMetadata/cveId",
            "missing or not a string",
        ));
    };
    if meta.get("state").and_then(Value::as_str) == Some("REJECTED") {
        return Ok(None);
    }
    let Some(cna) = doc.pointer("/containers/cna") else {
        return Err(Error::invalid(path, "/containers/cna", "missing"));
    };
    let containers: Vec<&Value> = std::iter::once(cna)
        .chain(
            doc.pointer("/containers/adp")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .collect();
    let mut affected = Vec::new();
    let mut cvss = None;
    for (ci, c) in containers.iter().enumerate() {
        for (ai, a) in c
            .get("affected")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let place = format!("container {ci} /affected/{ai}");
            let vendor = a
                .get("vendor")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            let product = a
                .get("product")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            if product.is_empty() || product == "n/a" {
                continue;
            }
            let default_affected =
                a.get("defaultStatus").and_then(Value::as_str) == Some("affected");
            // (affected, unaffected) × (ranges, exact versions)
            let mut lists: [(Vec<Interval>, Vec<String>); 2] = Default::default();
            for (vi, v) in a
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let Some(version) = v.get("version").and_then(Value::as_str) else {
                    return Err(Error::invalid(
                        path,
                        format!("{place}/versions/{vi}/version"),
                        "missing",
                    ));
                };
                let (ranges, versions) = match v.get("status").and_then(Value::as_str) {
                    Some("affected") => &mut lists[0],
                    Some("unaffected") => &mut lists[1],
                    _ => continue,
                };
                // Commit ids (the kernel CNA's git ranges) cannot be compared with a release
                // version; the same record also gives the release ranges.
                if v.get("versionType").and_then(Value::as_str) == Some("git") {
                    continue;
                }
                let start = (version != "0" && version != "*").then(|| version.to_string());
                if let Some(lt) = v.get("lessThan").and_then(Value::as_str) {
                    ranges.push(Interval {
                        start_including: start,
                        end_excluding: (lt != "*").then(|| lt.to_string()),
                        ..Interval::default()
                    });
                } else if let Some(le) = v.get("lessThanOrEqual").and_then(Value::as_str) {
                    let (end_including, end_excluding) = match wildcard_bound(le) {
                        // "6.1.*": every 6.1.x, i.e. below 6.2.
                        Some(b) => (None, Some(b)),
                        None => ((le != "*").then(|| le.to_string()), None),
                    };
                    ranges.push(Interval {
                        start_including: start,
                        end_including,
                        end_excluding,
                        ..Interval::default()
                    });
                } else if version != "n/a" {
                    versions.push(version.to_string());
                }
            }
            let [(ranges, versions), (unaffected_ranges, unaffected_versions)] = lists;
            if ranges.is_empty() && versions.is_empty() && !default_affected {
                continue;
            }
            affected.push(Affected::Product {
                vendor,
                product,
                ranges,
                versions,
                default_affected,
                unaffected_ranges,
                unaffected_versions,
                program_files: a
                    .get("programFiles")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            });
        }
        if cvss.is_none() {
            cvss = metrics(c.get("metrics"));
        }
    }
    Ok(Some(Advisory {
        id: id.to_string(),
        aliases: Vec::new(),
        summary: english(cna.get("descriptions")),
        published: str_field(meta, "datePublished"),
        modified: str_field(meta, "dateUpdated"),
        cvss,
        informational: None,
        affected,
        sources: vec!["cve5".into()],
    }))
}

fn metrics(m: Option<&Value>) -> Option<Cvss> {
    for entry in m?.as_array()? {
        for (key, version) in [
            ("cvssV3_1", "3.1"),
            ("cvssV3_0", "3.0"),
            ("cvssV4_0", "4.0"),
        ] {
            if let Some(d) = entry.get(key)
                && let Some(score) = d.get("baseScore").and_then(Value::as_f64)
            {
                return Some(Cvss {
                    version: version.into(),
                    score,
                    vector: str_field(d, "vectorString").unwrap_or_default(),
                });
            }
        }
    }
    None
}

/// The exclusive bound of a CVE 5 `lessThanOrEqual` wildcard: `6.2` for `6.1.*` (every
/// 6.1.x), `7` for `6.*`. A value it cannot read is kept as written; the version comparison then
/// says "undecidable" rather than guess.
fn wildcard_bound(v: &str) -> Option<String> {
    let prefix = v.strip_suffix(".*")?;
    let (head, last) = prefix.rsplit_once('.').unwrap_or(("", prefix));
    Some(match last.parse::<u64>() {
        Ok(n) if head.is_empty() => format!("{}", n + 1),
        Ok(n) => format!("{head}.{}", n + 1),
        Err(_) => v.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::wildcard_bound;

    #[test]
    fn wildcard_bounds() {
        assert_eq!(wildcard_bound("6.1.*").as_deref(), Some("6.2"));
        assert_eq!(wildcard_bound("6.*").as_deref(), Some("7"));
        assert_eq!(wildcard_bound("6.x.*").as_deref(), Some("6.x.*"));
        assert_eq!(wildcard_bound("6.1.5"), None);
    }
}
