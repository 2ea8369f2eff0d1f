//! Triage: people's statements about findings, from OpenVEX and CycloneDX VEX files.
//!
//! Every statement needs an owner and an expiry, because a "not affected" nobody owns and that
//! never ends is how real vulnerabilities hide. We read them from:
//!
//! - OpenVEX (`@context` openvex.dev): `statements[]` with `vulnerability.name` (and `aliases`),
//!   `products[]` (`@id` strings or objects), `status`, `justification`/`impact_statement`; owner
//!   from the statement's `owner` or else the document's `author`; expiry from the statement's
//!   `expires` (`YYYY-MM-DD`, an extension field); optional `patches` (patch file names).
//! - CycloneDX VEX (`bomFormat` CycloneDX): `vulnerabilities[]` with `id`, `analysis.state`,
//!   `analysis.justification`/`detail`, `affects[].ref` (a purl, or a `bom-ref` of `components[]`);
//!   owner, expiry and patches from `properties` `spark:owner`, `spark:expires`, `spark:patches`
//!   (comma-separated).
//!
//! A product is a purl (`pkg:cargo/smallvec@1.6.0`, `pkg:yocto/meta/busybox@1.36.1`), a plain
//! `name@version` or `name`. A statement stops applying — the finding resurfaces, with the reason —
//! when it has expired, when it names a version and the component now has another one, or when it
//! lists patches and the component's patch set differs.

use std::path::Path;

use serde_json::Value;
use time::Date;

use crate::error::{Error, Result};
use crate::model::{Component, Finding, Status, TriageNote};

/// What a statement says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VexStatus {
    NotAffected,
    Fixed,
    Affected,
    UnderInvestigation,
}

impl VexStatus {
    fn as_str(self) -> &'static str {
        match self {
            VexStatus::NotAffected => "not_affected",
            VexStatus::Fixed => "fixed",
            VexStatus::Affected => "affected",
            VexStatus::UnderInvestigation => "under_investigation",
        }
    }
}

/// One triage statement about one vulnerability and one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The vulnerability id and its aliases.
    pub ids: Vec<String>,
    pub product: String,
    pub version: Option<String>,
    pub status: VexStatus,
    pub justification: String,
    pub owner: String,
    pub expires: Date,
    pub patches: Option<Vec<String>>,
    /// `file` and place in it, for messages.
    pub file: String,
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// Parses a `YYYY-MM-DD` date, or the date part of an RFC 3339 timestamp.
pub fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s.get(..10)?, DATE).ok()
}

/// Reads a triage file (OpenVEX or CycloneDX VEX, detected by content).
pub fn read_vex(path: &Path) -> Result<Vec<Statement>> {
    let text = crate::error::read_to_string(path)?;
    let doc: Value = crate::error::parse_json(path, &text)?;
    let context = doc.get("@context").and_then(Value::as_str).unwrap_or("");
    if context.contains("openvex") {
        openvex(path, &doc)
    } else if doc.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        cyclonedx(path, &doc)
    } else {
        Err(Error::UnknownFormat {
            path: path.into(),
            hint: "expected OpenVEX (@context https://openvex.dev/ns/…) or CycloneDX VEX \
                   (\"bomFormat\": \"CycloneDX\")"
                .into(),
        })
    }
}

fn required_date(path: &Path, place: &str, v: Option<&str>) -> Result<Date> {
    let Some(s) = v else {
        return Err(Error::invalid(
            path,
            place,
            "no expiry: every triage statement needs one (YYYY-MM-DD)",
        ));
    };
    parse_date(s)
        .ok_or_else(|| Error::invalid(path, place, format!("expiry {s:?} is not YYYY-MM-DD")))
}

fn openvex(path: &Path, doc: &Value) -> Result<Vec<Statement>> {
    let author = doc.get("author").and_then(Value::as_str).unwrap_or("");
    let Some(statements) = doc.get("statements").and_then(Value::as_array) else {
        return Err(Error::invalid(
            path,
            "/statements",
            "missing or not an array",
        ));
    };
    let mut out = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        let place = format!("/statements/{i}");
        let vuln = s.get("vulnerability");
        let name = vuln
            .and_then(|v| v.as_str().or_else(|| v.get("name").and_then(Value::as_str)))
            .ok_or_else(|| {
                Error::invalid(path, format!("{place}/vulnerability"), "missing name")
            })?;
        let mut ids = vec![name.to_string()];
        for a in vuln
            .and_then(|v| v.get("aliases"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(a) = a.as_str() {
                ids.push(a.to_string());
            }
        }
        let status = match s.get("status").and_then(Value::as_str) {
            Some("not_affected") => VexStatus::NotAffected,
            Some("fixed") => VexStatus::Fixed,
            Some("affected") => VexStatus::Affected,
            Some("under_investigation") => VexStatus::UnderInvestigation,
            other => {
                return Err(Error::invalid(
                    path,
                    format!("{place}/status"),
                    format!("{other:?} is not an OpenVEX status"),
                ));
            }
        };
        let owner = s.get("owner").and_then(Value::as_str).unwrap_or(author);
        if owner.is_empty() {
            return Err(Error::invalid(
                path,
                &place,
                "no owner (statement owner or document author)",
            ));
        }
        let expires = required_date(
            path,
            &format!("{place}/expires"),
            s.get("expires").and_then(Value::as_str),
        )?;
        let justification = ["justification", "impact_statement", "action_statement"]
            .iter()
            .filter_map(|k| s.get(*k).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(": ");
        let patches = s.get("patches").and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        });
        let Some(products) = s.get("products").and_then(Value::as_array) else {
            return Err(Error::invalid(
                path,
                format!("{place}/products"),
                "missing or not an array",
            ));
        };
        for p in products {
            let Some(pid) = p.as_str().or_else(|| p.get("@id").and_then(Value::as_str)) else {
                return Err(Error::invalid(
                    path,
                    format!("{place}/products"),
                    "product without @id",
                ));
            };
            let (product, version) = product_ref(pid);
            out.push(Statement {
                ids: ids.clone(),
                product,
                version,
                status,
                justification: justification.clone(),
                owner: owner.to_string(),
                expires,
                patches: patches.clone(),
                file: format!("{}{place}", path.display()),
            });
        }
    }
    Ok(out)
}

fn cyclonedx(path: &Path, doc: &Value) -> Result<Vec<Statement>> {
    // bom-ref → purl (or name@version) of the document's components.
    let mut refs = std::collections::HashMap::new();
    for c in doc
        .get("components")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(r) = c.get("bom-ref").and_then(Value::as_str) {
            let target = c
                .get("purl")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    let name = c.get("name").and_then(Value::as_str)?;
                    Some(match c.get("version").and_then(Value::as_str) {
                        Some(v) => format!("{name}@{v}"),
                        None => name.to_string(),
                    })
                });
            if let Some(t) = target {
                refs.insert(r.to_string(), t);
            }
        }
    }
    let Some(vulns) = doc.get("vulnerabilities").and_then(Value::as_array) else {
        return Err(Error::invalid(
            path,
            "/vulnerabilities",
            "missing or not an array",
        ));
    };
    let mut out = Vec::new();
    for (i, v) in vulns.iter().enumerate() {
        let place = format!("/vulnerabilities/{i}");
        let Some(id) = v.get("id").and_then(Value::as_str) else {
            return Err(Error::invalid(path, format!("{place}/id"), "missing"));
        };
        let mut ids = vec![id.to_string()];
        for r in v
            .get("references")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(a) = r.get("id").and_then(Value::as_str) {
                ids.push(a.to_string());
            }
        }
        let analysis = v.get("analysis");
        let state = analysis
            .and_then(|a| a.get("state"))
            .and_then(Value::as_str);
        let status = match state {
            Some("not_affected" | "false_positive") => VexStatus::NotAffected,
            Some("resolved" | "resolved_with_pedigree") => VexStatus::Fixed,
            Some("exploitable") => VexStatus::Affected,
            Some("in_triage") => VexStatus::UnderInvestigation,
            other => {
                return Err(Error::invalid(
                    path,
                    format!("{place}/analysis/state"),
                    format!("{other:?} is not a CycloneDX analysis state"),
                ));
            }
        };
        let prop = |name: &str| -> Option<&str> {
            v.get("properties")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("value"))
                .and_then(Value::as_str)
        };
        let Some(owner) = prop("spark:owner") else {
            return Err(Error::invalid(
                path,
                format!("{place}/properties"),
                "no spark:owner property",
            ));
        };
        let expires = required_date(
            path,
            &format!("{place}/properties spark:expires"),
            prop("spark:expires"),
        )?;
        let patches = prop("spark:patches").map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        let justification = ["justification", "detail"]
            .iter()
            .filter_map(|k| analysis.and_then(|a| a.get(*k)).and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(": ");
        let Some(affects) = v.get("affects").and_then(Value::as_array) else {
            return Err(Error::invalid(
                path,
                format!("{place}/affects"),
                "missing or not an array",
            ));
        };
        for a in affects {
            let Some(r) = a.get("ref").and_then(Value::as_str) else {
                return Err(Error::invalid(
                    path,
                    format!("{place}/affects"),
                    "entry without ref",
                ));
            };
            let target = refs.get(r).map(String::as_str).unwrap_or(r);
            let (product, version) = product_ref(target);
            out.push(Statement {
                ids: ids.clone(),
                product,
                version,
                status,
                justification: justification.clone(),
                owner: owner.to_string(),
                expires,
                patches: patches.clone(),
                file: format!("{}{place}", path.display()),
            });
        }
    }
    Ok(out)
}

/// Name and optional version of a product reference: a purl or `name@version`.
pub fn product_ref(s: &str) -> (String, Option<String>) {
    let s = s.split(['?', '#']).next().unwrap_or(s);
    let s = match s.strip_prefix("pkg:") {
        Some(rest) => rest.rsplit('/').next().unwrap_or(rest),
        None => s,
    };
    match s.split_once('@') {
        Some((n, v)) => (percent_decode(n), Some(percent_decode(v))),
        None => (percent_decode(s), None),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(x);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Applies statements to open findings (affected / undecidable), as of `today`.
pub fn apply(
    findings: &mut [Finding],
    components: &[Component],
    statements: &[Statement],
    today: Date,
) {
    for f in findings.iter_mut().filter(|f| f.status.is_open()) {
        let ids: Vec<&str> = std::iter::once(f.id.as_str())
            .chain(f.aliases.iter().map(String::as_str))
            .collect();
        let Some(st) = statements
            .iter()
            .filter(|s| s.product == f.component && s.ids.iter().any(|i| ids.contains(&i.as_str())))
            // Prefer a statement for this exact version, then the latest-expiring one.
            .max_by_key(|s| (s.version == f.version, s.expires))
        else {
            continue;
        };
        let note = TriageNote {
            status: st.status.as_str().into(),
            owner: st.owner.clone(),
            expires: st.expires.to_string(),
            justification: st.justification.clone(),
            file: st.file.clone(),
        };
        f.triage = Some(note);
        if st.expires < today {
            f.reasons.push(format!(
                "triage by {} expired on {}: resurfaced",
                st.owner, st.expires
            ));
            continue;
        }
        if let Some(v) = &st.version
            && Some(v) != f.version.as_ref()
        {
            f.reasons.push(format!(
                "triage by {} was for version {v}, component is now {}: resurfaced",
                st.owner,
                f.version.as_deref().unwrap_or("?")
            ));
            continue;
        }
        if let Some(want) = &st.patches {
            let have = components
                .iter()
                .find(|c| c.name == f.component && c.version == f.version && c.source == f.source)
                .map(|c| c.patches.clone())
                .unwrap_or_default();
            let mut a = want.clone();
            let mut b = have;
            a.sort();
            b.sort();
            if a != b {
                f.reasons.push(format!(
                    "triage by {} was for patches [{}], component now has [{}]: resurfaced",
                    st.owner,
                    a.join(", "),
                    b.join(", ")
                ));
                continue;
            }
        }
        match st.status {
            VexStatus::NotAffected | VexStatus::Fixed => {
                f.status = Status::Triaged;
                f.reasons.push(format!(
                    "triaged {} by {} until {}",
                    st.status.as_str(),
                    st.owner,
                    st.expires
                ));
            }
            VexStatus::Affected | VexStatus::UnderInvestigation => {
                f.reasons.push(format!(
                    "{} per {} until {}",
                    st.status.as_str(),
                    st.owner,
                    st.expires
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_refs() {
        assert_eq!(
            product_ref("pkg:cargo/smallvec@1.6.0"),
            ("smallvec".into(), Some("1.6.0".into()))
        );
        assert_eq!(
            product_ref("pkg:yocto/meta/busybox@1.36.1?arch=arm"),
            ("busybox".into(), Some("1.36.1".into()))
        );
        assert_eq!(product_ref("openssl"), ("openssl".into(), None));
        assert_eq!(
            product_ref("pkg:npm/%40scope%2Fx@1"),
            (
                "%40scope%2Fx"
                    .rsplit('/')
                    .next()
                    .map(percent_decode)
                    .unwrap(),
                Some("1".into())
            )
        );
    }
}
