//! The data model every other module shares: what is in the image ([`Component`]), what is known
//! to be vulnerable ([`Advisory`]), and what a scan concludes about the pair ([`Finding`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a component came from; decides which advisories and which version rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// A crate from a `Cargo.lock` (crates.io / RustSec, semver rules).
    Crate,
    /// A Yocto recipe or package from an SBOM or cve-check manifest (CPE / NVD rules).
    Yocto,
    /// The Linux kernel (OSV "Linux" records and NVD `linux:linux_kernel`).
    Kernel,
}

/// What an SBOM (or cve-check manifest) itself says about one vulnerability for one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SbomStatus {
    /// Fixed by a patch or configuration (VEX "fixed", `CVE_STATUS` "fixed-version"/"backported-patch", a CVE patch).
    Fixed,
    /// Not affected (VEX "not_affected", `CVE_STATUS` "not-applicable-*", "cpe-incorrect", ...).
    NotAffected,
    /// Explicitly affected; recorded so a report can say the build system agrees.
    Affected,
}

/// One statement about a vulnerability found inside an input, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub status: SbomStatus,
    /// Human-readable reason, e.g. "SPDX VEX fixedIn" or "patch file CVE-2023-1234.patch".
    pub detail: String,
}

/// One thing in the image that can be vulnerable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// `None` when the input does not say (Yocto's SBOM lists Rust crates without versions).
    pub version: Option<String>,
    pub origin: Origin,
    /// CPE 2.3 names the input gives (Yocto writes one per `CVE_PRODUCT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cpes: Vec<String>,
    /// Patch files applied to this component (names only); part of what triage is bound to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<String>,
    /// What the input says per vulnerability id (CVE or other), e.g. from SPDX VEX or `CVE_STATUS`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evidence: BTreeMap<String, Evidence>,
    /// The input file this component was read from.
    pub source: String,
}

impl Component {
    /// The version rules of this component's ecosystem.
    pub fn ecosystem(&self) -> crate::version::Ecosystem {
        match self.origin {
            Origin::Crate => crate::version::Ecosystem::Crates,
            Origin::Yocto => crate::version::Ecosystem::Yocto,
            Origin::Kernel => crate::version::Ecosystem::Linux,
        }
    }

    pub fn new(
        name: impl Into<String>,
        version: Option<String>,
        origin: Origin,
        source: impl Into<String>,
    ) -> Self {
        Component {
            name: name.into(),
            version,
            origin,
            cpes: Vec::new(),
            patches: Vec::new(),
            evidence: BTreeMap::new(),
            source: source.into(),
        }
    }

    /// Records patch files, and for every `CVE-YYYY-N` in a patch name, "fixed" evidence: that is
    /// how Yocto's cve-check itself recognises patches (`oe.cve_check.get_patched_cves`).
    pub fn add_patch(&mut self, name: &str) {
        let base = name.rsplit('/').next().unwrap_or(name).to_string();
        for cve in cve_ids_in(&base) {
            self.evidence.entry(cve).or_insert_with(|| Evidence {
                status: SbomStatus::Fixed,
                detail: format!("patch file {base}"),
            });
        }
        if !self.patches.contains(&base) {
            self.patches.push(base);
        }
    }

    /// `name@version` (or `name@?`) for messages.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version.as_deref().unwrap_or("?"))
    }
}

/// Every `CVE-YYYY-NNNN` id in a text, upper-cased, in order of appearance, without duplicates.
pub fn cve_ids_in(text: &str) -> Vec<String> {
    let upper = text.to_ascii_uppercase();
    let b = upper.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(pos) = upper[i..].find("CVE-") {
        let start = i + pos;
        let mut j = start + 4;
        let year_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j - year_start == 4 && j < b.len() && b[j] == b'-' {
            let num_start = j + 1;
            let mut k = num_start;
            while k < b.len() && b[k].is_ascii_digit() {
                k += 1;
            }
            if k - num_start >= 4 {
                let id = format!("CVE-{}-{}", &upper[year_start..j], &upper[num_start..k]);
                if !out.contains(&id) {
                    out.push(id);
                }
                i = k;
                continue;
            }
        }
        i = start + 4;
    }
    out
}

/// A version interval with the four bounds NVD uses; OSV events and CVE 5 versions become these.
pub use crate::version::VersionRange as Interval;

/// Package ecosystems an advisory can name (OSV's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PackageEcosystem {
    #[serde(rename = "crates.io")]
    CratesIo,
    Linux,
}

/// How an advisory says what is affected. One advisory may carry several (NVD + CVE 5 + OSV).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Affected {
    /// NVD CVE API 2.0 `configurations` (matched by [`crate::cpe::evaluate_any`]).
    Nvd {
        configurations: Vec<crate::cpe::Configuration>,
    },
    /// CVE JSON 5 `containers.*.affected[]`: vendor/product with versions; used when NVD has not
    /// analysed the CVE yet (its backlog), so these CVEs are not silently missed.
    Product {
        vendor: String,
        product: String,
        /// Intervals with status "affected".
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ranges: Vec<Interval>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        versions: Vec<String>,
        #[serde(default)]
        default_affected: bool,
        /// Intervals and versions with status "unaffected": with `default_affected` (the kernel
        /// CNA's style) these are the fixed stable lines.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unaffected_ranges: Vec<Interval>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unaffected_versions: Vec<String>,
        /// Source files the fix touches (`programFiles`; the kernel CNA gives them), for the
        /// kernel configuration check ([`crate::kernel`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        program_files: Vec<String>,
    },
    /// An OSV package entry (crates.io or Linux).
    Package {
        ecosystem: PackageEcosystem,
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ranges: Vec<Interval>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        versions: Vec<String>,
    },
    /// A RustSec advisory: vulnerable unless a `patched` or `unaffected` semver requirement
    /// matches; exactly cargo-audit's rule.
    Rustsec {
        package: String,
        #[serde(default)]
        patched: Vec<String>,
        #[serde(default)]
        unaffected: Vec<String>,
    },
}

/// A CVSS score as the source gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cvss {
    /// "2.0", "3.0", "3.1" or "4.0".
    pub version: String,
    pub score: f64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vector: String,
}

/// One vulnerability record of the snapshot, merged across sources by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss: Option<Cvss>,
    /// RustSec `informational` ("unmaintained", "unsound", ...): cargo-audit lists these as
    /// warnings, not vulnerabilities, and so do we.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informational: Option<String>,
    #[serde(default)]
    pub affected: Vec<Affected>,
    /// Source kinds that contributed ("nvd", "cve5", "osv", "rustsec").
    #[serde(default)]
    pub sources: Vec<String>,
}

impl Advisory {
    /// Every `programFiles` entry of the CVE 5 data.
    pub fn program_files(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in &self.affected {
            if let Affected::Product { program_files, .. } = a {
                for f in program_files {
                    if !out.contains(f) {
                        out.push(f.clone());
                    }
                }
            }
        }
        out
    }

    /// The id and all aliases.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.aliases.iter().map(String::as_str))
    }

    /// The CVE id among id and aliases, if any (what Yocto's VEX and `CVE_STATUS` talk about).
    pub fn cve(&self) -> Option<&str> {
        self.ids().find(|i| i.starts_with("CVE-"))
    }
}

/// What a scan concludes for one (advisory, component) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Affected and nobody has said otherwise: this is what the gate counts.
    Affected,
    /// The version or configuration could not be decided (unknown version, unparsable version,
    /// a config depending on something not in the inventory). Never counted as patched.
    Undecidable,
    /// A triage statement (OpenVEX / CycloneDX VEX) that is still valid covers it.
    Triaged,
    /// The build says it is fixed (SPDX VEX, `CVE_STATUS`, a CVE patch).
    Patched,
    /// The build says it does not apply.
    NotAffected,
}

impl Status {
    /// Affected and undecidable findings are the ones someone still has to look at.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Affected | Status::Undecidable)
    }
}

/// A triage statement that applied (or used to apply) to a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageNote {
    pub status: String,
    pub owner: String,
    pub expires: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub justification: String,
    pub file: String,
}

/// One advisory matched against one component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub component: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub origin: Origin,
    pub source: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cvss: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Why the status is what it is, one line each, for the reports.
    pub reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage: Option<TriageNote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub informational: Option<String>,
}

impl Finding {
    /// Key used to compare two reports (baseline diff): advisory id and component name.
    pub fn key(&self) -> (String, String) {
        (self.id.clone(), self.component.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_ids_in_patch_names() {
        assert_eq!(
            cve_ids_in("0001-CVE-2023-1234-and-cve-2022-99999.patch"),
            ["CVE-2023-1234", "CVE-2022-99999"]
        );
        assert_eq!(cve_ids_in("CVE_2021_3999.patch"), Vec::<String>::new());
        assert!(cve_ids_in("CVE-2021_39999.patch").is_empty());
        assert!(cve_ids_in("fix-build.patch").is_empty());
        assert!(cve_ids_in("CVE-123-4567").is_empty());
    }
}
