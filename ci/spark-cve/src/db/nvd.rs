//! NVD CVE API 2.0 JSON: a response page (or a yearly 2.0 feed file, same shape):
//! `{"format": "NVD_CVE", "version": "2.0", "timestamp", "vulnerabilities": [{"cve": {"id",
//! "published", "lastModified", "vulnStatus", "descriptions", "metrics", "configurations"}}]}`.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Advisory, Affected, Cvss};

pub fn parse(path: &Path, doc: &Value) -> Result<Vec<Advisory>> {
    let Some(vulns) = doc.get("vulnerabilities").and_then(Value::as_array) else {
        return Err(Error::invalid(
            path,
            "/vulnerabilities",
            "missing or not an array",
        ));
    };
    let mut out = Vec::with_capacity(vulns.len());
    for (i, v) in vulns.iter().enumerate() {
        let place = format!("/vulnerabilities/{i}/cve");
        let Some(cve) = v.get("cve") else {
            return Err(Error::invalid(path, place, "missing"));
        };
        let Some(id) = cve.get("id").and_then(Value::as_str) else {
            return Err(Error::invalid(
                path,
                format!("{place}/id"),
                "missing or not a string",
            ));
        };
        if cve.get("vulnStatus").and_then(Value::as_str) == Some("Rejected") {
            continue;
        }
        let configurations: Vec<crate::cpe::Configuration> = match cve.get("configurations") {
            None => Vec::new(),
            Some(c) => serde_json::from_value(c.clone())
                .map_err(|e| Error::invalid(path, format!("{place}/configurations ({id})"), e))?,
        };
        let affected = if configurations.is_empty() {
            Vec::new()
        } else {
            vec![Affected::Nvd { configurations }]
        };
        out.push(Advisory {
            id: id.to_string(),
            aliases: Vec::new(),
            summary: english(cve.get("descriptions")),
            published: str_field(cve, "published"),
            modified: str_field(cve, "lastModified"),
            cvss: metrics(cve.get("metrics")),
            informational: None,
            affected,
            sources: vec!["nvd".into()],
        });
    }
    Ok(out)
}

pub(crate) fn str_field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The English description (first one if none is marked "en").
pub(crate) fn english(descs: Option<&Value>) -> String {
    let Some(arr) = descs.and_then(Value::as_array) else {
        return String::new();
    };
    arr.iter()
        .find(|d| {
            d.get("lang")
                .and_then(Value::as_str)
                .is_some_and(|l| l.starts_with("en"))
        })
        .or(arr.first())
        .and_then(|d| d.get("value"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// The best CVSS NVD gives: v3.1, then v3.0, v4.0, v2; the "Primary" (NVD's own) entry first.
fn metrics(m: Option<&Value>) -> Option<Cvss> {
    let m = m?;
    for key in [
        "cvssMetricV31",
        "cvssMetricV30",
        "cvssMetricV40",
        "cvssMetricV2",
    ] {
        let Some(list) = m.get(key).and_then(Value::as_array) else {
            continue;
        };
        let pick = list
            .iter()
            .find(|x| x.get("type").and_then(Value::as_str) == Some("Primary"))
            .or(list.first());
        if let Some(data) = pick.and_then(|x| x.get("cvssData"))
            && let Some(score) = data.get("baseScore").and_then(Value::as_f64)
        {
            return Some(Cvss {
                version: data
                    .get("version")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                score,
                vector: str_field(data, "vectorString").unwrap_or_default(),
            });
        }
    }
    None
}
