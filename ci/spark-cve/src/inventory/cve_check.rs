//! The cve-check JSON manifest of older Yocto releases (`cve-summary.json`, `IMAGE.json`):
//! `{"version": "1", "package": [{"name", "version", "products": [{"product"}], "issue":
//! [{"id", "status": "Patched|Unpatched|Ignored", "detail"}]}]}`.
//!
//! Yocto's own verdicts are used only as evidence (Patched → fixed, Ignored → not affected); whether
//! a CVE applies at all is decided by our matching against the snapshot.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Component, Evidence, SbomStatus};

use super::yocto_origin;

pub fn read_cve_check(path: &Path, doc: &Value) -> Result<Vec<Component>> {
    let Some(packages) = doc.get("package").and_then(Value::as_array) else {
        return Err(Error::invalid(path, "/package", "missing or not an array"));
    };
    let mut out = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let place = format!("/package/{i}");
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(Error::invalid(
                path,
                format!("{place}/name"),
                "missing or not a string",
            ));
        };
        let version = p.get("version").and_then(Value::as_str).map(str::to_string);
        let mut cpes = Vec::new();
        for prod in p
            .get("products")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(product) = prod.get("product").and_then(Value::as_str) else {
                continue;
            };
            // CVE_PRODUCT entries may be "vendor:product".
            let (vendor, product) = product.split_once(':').unwrap_or(("*", product));
            let v = version.as_deref().unwrap_or("*");
            cpes.push(format!("cpe:2.3:a:{vendor}:{product}:{v}:*:*:*:*:*:*:*"));
        }
        let mut c = Component::new(
            name,
            version,
            yocto_origin(name, &cpes),
            path.display().to_string(),
        );
        if cpes.is_empty() {
            let v = c.version.as_deref().unwrap_or("*");
            cpes.push(format!("cpe:2.3:a:*:{name}:{v}:*:*:*:*:*:*:*"));
        }
        c.cpes = cpes;
        for (j, issue) in p
            .get("issue")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(id) = issue.get("id").and_then(Value::as_str) else {
                return Err(Error::invalid(
                    path,
                    format!("{place}/issue/{j}/id"),
                    "missing",
                ));
            };
            let status = issue.get("status").and_then(Value::as_str).unwrap_or("");
            let detail = issue.get("detail").and_then(Value::as_str).unwrap_or("");
            let status = match status {
                "Patched" => SbomStatus::Fixed,
                "Ignored" => SbomStatus::NotAffected,
                "Unpatched" => SbomStatus::Affected,
                other => {
                    return Err(Error::invalid(
                        path,
                        format!("{place}/issue/{j}/status"),
                        format!(
                            "unknown status {other:?} (expected Patched, Unpatched or Ignored)"
                        ),
                    ));
                }
            };
            let detail = if detail.is_empty() {
                "cve-check".to_string()
            } else {
                format!("cve-check CVE_STATUS {detail}")
            };
            c.evidence
                .insert(id.to_string(), Evidence { status, detail });
        }
        out.push(c);
    }
    Ok(out)
}
