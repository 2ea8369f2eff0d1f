//! SPDX 3.0 JSON-LD as Yocto 6.0 (`oe/spdx30_tasks.py`) writes it: one `@graph` of elements.
//!
//! - `software_Package` with `externalIdentifier` of type `cpe23` (one per `CVE_PRODUCT`) are the
//!   recipes; packages with a `pkg:cargo/` purl or a `crate://` download location are Rust crates
//!   (Yocto knows no version for them: `Cargo.lock` supplies it).
//! - `security_Vulnerability` elements carry the CVE id as an `externalIdentifier` of type `cve`.
//! - `security_Vex{Fixed,NotAffected,Affected,UnderInvestigation}VulnAssessmentRelationship` link a
//!   vulnerability (`from`) to packages (`to`): this is where `CVE_STATUS` and CVE patches end up.
//! - `Relationship` of type `patchedBy` links a vulnerability to the patch `software_File`s.
//!
//! Both the compacted (`type`, `spdxId`) and expanded-looking (`@type`, `@id`) keys are accepted,
//! and element references may be strings or objects with an id.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Component, Evidence, Origin, SbomStatus};

use super::yocto_origin;

fn kind(e: &Value) -> &str {
    let t = e
        .get("type")
        .or_else(|| e.get("@type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    // Some writers prefix the namespace; keep the last segment.
    t.rsplit(['/', '#']).next().unwrap_or(t)
}

fn id(e: &Value) -> Option<&str> {
    e.get("spdxId")
        .or_else(|| e.get("@id"))
        .and_then(Value::as_str)
}

fn refs(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().or_else(|| id(x)))
            .collect(),
        Some(o @ Value::Object(_)) => id(o).into_iter().collect(),
        _ => Vec::new(),
    }
}

fn identifiers<'a>(e: &'a Value, wanted: &str) -> Vec<&'a str> {
    e.get("externalIdentifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|x| x.get("externalIdentifierType").and_then(Value::as_str) == Some(wanted))
        .filter_map(|x| x.get("identifier").and_then(Value::as_str))
        .collect()
}

pub fn read_spdx3(path: &Path, doc: &Value) -> Result<Vec<Component>> {
    let Some(graph) = doc.get("@graph").and_then(Value::as_array) else {
        return Err(Error::invalid(path, "/@graph", "missing or not an array"));
    };
    let source = path.display().to_string();
    let mut components: Vec<Component> = Vec::new();
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    let mut vulns: HashMap<&str, String> = HashMap::new();
    let mut files: HashMap<&str, &str> = HashMap::new();

    // First pass: packages, vulnerabilities, files.
    for (i, e) in graph.iter().enumerate() {
        match kind(e) {
            "software_Package" | "Package" => {
                let Some(name) = e.get("name").and_then(Value::as_str) else {
                    return Err(Error::invalid(
                        path,
                        format!("/@graph/{i}/name"),
                        "package without a name",
                    ));
                };
                let version = e
                    .get("software_packageVersion")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let cpes: Vec<String> = identifiers(e, "cpe23")
                    .into_iter()
                    .map(str::to_string)
                    .collect();
                let crate_purl = identifiers(e, "packageUrl")
                    .iter()
                    .chain(e.get("software_packageUrl").and_then(Value::as_str).iter())
                    .any(|p| p.starts_with("pkg:cargo/"));
                let download = e
                    .get("software_downloadLocation")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let origin = if crate_purl || download.starts_with("crate://") {
                    Origin::Crate
                } else {
                    yocto_origin(name, &cpes)
                };
                let mut c = Component::new(name, version, origin, source.clone());
                c.cpes = cpes;
                if let Some(pid) = id(e) {
                    by_id.insert(pid, components.len());
                }
                components.push(c);
            }
            "security_Vulnerability" | "Vulnerability" => {
                let Some(vid) = id(e) else {
                    return Err(Error::invalid(
                        path,
                        format!("/@graph/{i}"),
                        "vulnerability without spdxId",
                    ));
                };
                let cve = identifiers(e, "cve")
                    .first()
                    .map(|s| s.to_string())
                    .or_else(|| e.get("name").and_then(Value::as_str).map(str::to_string));
                let Some(cve) = cve else {
                    return Err(Error::invalid(
                        path,
                        format!("/@graph/{i}"),
                        "vulnerability without a cve externalIdentifier",
                    ));
                };
                vulns.insert(vid, cve);
            }
            "software_File" | "File" => {
                if let (Some(fid), Some(name)) = (id(e), e.get("name").and_then(Value::as_str)) {
                    files.insert(fid, name);
                }
            }
            _ => {}
        }
    }

    // Only recipes (packages with a CPE) and crates are components, unless there are none.
    let keep: Vec<bool> = {
        let any_cpe = components.iter().any(|c| !c.cpes.is_empty());
        components
            .iter()
            .map(|c| !any_cpe || !c.cpes.is_empty() || c.origin == Origin::Crate)
            .collect()
    };

    // Second pass: VEX assessments and patchedBy links.
    let mut patches_of_vuln: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut assessments: Vec<(usize, &str, SbomStatus, String)> = Vec::new();
    for (i, e) in graph.iter().enumerate() {
        let k = kind(e);
        let status = match k {
            "security_VexFixedVulnAssessmentRelationship" => {
                Some((SbomStatus::Fixed, "SPDX VEX fixedIn"))
            }
            "security_VexNotAffectedVulnAssessmentRelationship" => {
                Some((SbomStatus::NotAffected, "SPDX VEX doesNotAffect"))
            }
            "security_VexAffectedVulnAssessmentRelationship" => {
                Some((SbomStatus::Affected, "SPDX VEX affects"))
            }
            _ => None,
        };
        if let Some((status, what)) = status {
            let from = refs(e.get("from"));
            let Some(vid) = from.first() else {
                return Err(Error::invalid(
                    path,
                    format!("/@graph/{i}/from"),
                    "VEX relationship without from",
                ));
            };
            let mut detail = what.to_string();
            for key in ["security_justificationType", "security_impactStatement"] {
                if let Some(j) = e.get(key).and_then(Value::as_str) {
                    detail.push_str(": ");
                    detail.push_str(j);
                }
            }
            assessments.push((i, vid, status, detail));
        } else if k == "Relationship"
            && e.get("relationshipType").and_then(Value::as_str) == Some("patchedBy")
        {
            for vid in refs(e.get("from")) {
                patches_of_vuln
                    .entry(vid)
                    .or_default()
                    .extend(refs(e.get("to")));
            }
        }
    }
    for (i, vid, status, detail) in assessments {
        let Some(cve) = vulns.get(vid) else {
            return Err(Error::invalid(
                path,
                format!("/@graph/{i}/from"),
                format!("{vid} is not a security_Vulnerability of this document"),
            ));
        };
        let targets = refs(graph[i].get("to"));
        for t in targets {
            // A target outside this document (another SPDX document of the build) is skipped:
            // the document describing it carries its own assessment.
            let Some(&ci) = by_id.get(t) else { continue };
            let c = &mut components[ci];
            let mut detail = detail.clone();
            if status == SbomStatus::Fixed {
                let names: Vec<&str> = patches_of_vuln
                    .get(vid)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| files.get(f).copied())
                    .collect();
                for n in &names {
                    c.add_patch(n);
                }
                if !names.is_empty() {
                    detail = format!("{detail} (patch {})", names.join(", "));
                }
            }
            c.evidence.insert(cve.clone(), Evidence { status, detail });
        }
    }
    Ok(components
        .into_iter()
        .zip(keep)
        .filter_map(|(c, k)| k.then_some(c))
        .collect())
}
