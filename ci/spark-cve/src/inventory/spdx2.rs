//! SPDX 2.2 JSON as Yocto 5.0 (`create-spdx-2.2.bbclass`) writes it.
//!
//! Recipe packages carry `externalRefs` of type `cpe23Type` (one per `CVE_PRODUCT`) and the CVEs
//! the recipe's patches and `CVE_STATUS` fix in `sourceInfo` as `"CVEs fixed: CVE-… CVE-…"`.
//! Binary packages (`busybox-syslog`, …) carry no CPE; only packages with a CPE become
//! components, unless the document has none at all, when every package does.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{Component, Evidence, Origin, SbomStatus, cve_ids_in};

use super::yocto_origin;

pub fn read_spdx2(path: &Path, doc: &Value) -> Result<Vec<Component>> {
    let Some(packages) = doc.get("packages").and_then(Value::as_array) else {
        return Err(Error::invalid(path, "/packages", "missing or not an array"));
    };
    let mut with_cpe = Vec::new();
    let mut without = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let place = format!("/packages/{i}");
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            return Err(Error::invalid(
                path,
                format!("{place}/name"),
                "missing or not a string",
            ));
        };
        let version = p
            .get("versionInfo")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut cpes = Vec::new();
        let mut purl_cargo = false;
        if let Some(refs) = p.get("externalRefs") {
            let Some(refs) = refs.as_array() else {
                return Err(Error::invalid(
                    path,
                    format!("{place}/externalRefs"),
                    "not an array",
                ));
            };
            for r in refs {
                let kind = r.get("referenceType").and_then(Value::as_str).unwrap_or("");
                let loc = r
                    .get("referenceLocator")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match kind {
                    "cpe23Type" => cpes.push(loc.to_string()),
                    "purl" if loc.starts_with("pkg:cargo/") => purl_cargo = true,
                    _ => {}
                }
            }
        }
        let download = p
            .get("downloadLocation")
            .and_then(Value::as_str)
            .unwrap_or("");
        let origin = if purl_cargo || download.starts_with("crate://") {
            Origin::Crate
        } else {
            yocto_origin(name, &cpes)
        };
        let mut c = Component::new(name, version, origin, path.display().to_string());
        c.cpes = cpes;
        if let Some(info) = p.get("sourceInfo").and_then(Value::as_str)
            && let Some(rest) = info.split("CVEs fixed:").nth(1)
        {
            for cve in cve_ids_in(rest) {
                c.evidence.insert(
                    cve,
                    Evidence {
                        status: SbomStatus::Fixed,
                        detail: "SPDX 2.2 sourceInfo \"CVEs fixed\"".into(),
                    },
                );
            }
        }
        if c.cpes.is_empty() && c.origin != Origin::Crate {
            without.push(c);
        } else {
            with_cpe.push(c);
        }
    }
    if with_cpe.iter().all(|c| c.origin == Origin::Crate) {
        with_cpe.extend(without);
    }
    Ok(with_cpe)
}
