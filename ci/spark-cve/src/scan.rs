//! Matching: which advisories apply to which components, and what the build says about them.
//!
//! | component | advisory data used | version rules |
//! | --- | --- | --- |
//! | crate (`Cargo.lock`) | RustSec `patched`/`unaffected` (cargo-audit's rule), OSV crates.io ranges | semver |
//! | Yocto recipe | NVD configurations (whole logic, [`crate::cpe::evaluate_any`]); CVE 5 vendor/product versions only when NVD has none | Yocto |
//! | kernel | the same, plus OSV "Linux" ranges | Linux |
//!
//! The result of a match is three-valued. `Undecidable` (unknown version, versions that cannot be
//! compared honestly) becomes its own status and is never turned into "patched". Evidence from
//! the build (SPDX VEX, `CVE_STATUS`, CVE patches) then marks findings patched or not affected;
//! [`crate::triage`] applies people's statements last.

use std::collections::{BTreeMap, HashSet};

use crate::cpe::{self, Cpe};
use crate::inventory::{Inventory, cpe_vendor_product};
use crate::model::{
    Advisory, Affected, Component, Finding, Origin, PackageEcosystem, SbomStatus, Status,
};
use crate::version::{self, Tri};

/// The lower-cased names that can key an advisory to this inventory (see [`crate::db::keys`]).
pub fn inventory_keys(inv: &Inventory) -> HashSet<String> {
    let mut keys = HashSet::new();
    for c in &inv.components {
        keys.insert(c.name.to_lowercase());
        for cpe in &c.cpes {
            if let Some((_, p)) = cpe_vendor_product(cpe) {
                keys.insert(p.to_lowercase());
            }
        }
        if c.origin == Origin::Kernel {
            // OSV's Linux ecosystem calls the kernel "Kernel"; NVD calls it linux_kernel.
            keys.insert("kernel".into());
            keys.insert("linux_kernel".into());
            // The kernel CNA's CVE 5 records: vendor "Linux", product "Linux".
            keys.insert("linux".into());
        }
    }
    keys
}

/// The platform handed to the NVD configuration logic: every non-crate component with a CPE
/// (one entry per CPE), or a CPE made from its name when the input gave none.
struct Platform {
    entries: Vec<cpe::Component>,
    /// `entries[i]` belongs to `inv.components[owner[i]]`.
    owner: Vec<usize>,
    /// Lower-cased product → indices into `entries`.
    by_product: std::collections::HashMap<String, Vec<usize>>,
}

impl Platform {
    /// Indices of the entries a configuration's criteria can name (all of them when a criteria's
    /// product is a wildcard pattern), sorted.
    fn subset(&self, configurations: &[cpe::Configuration]) -> Vec<usize> {
        let mut out = Vec::new();
        for m in configurations
            .iter()
            .flat_map(|c| &c.nodes)
            .flat_map(|n| &n.cpe_match)
        {
            let product = m
                .criteria
                .parse::<Cpe>()
                .ok()
                .map(|c| c.product.to_lowercase());
            match product {
                Some(p) if !p.contains(['*', '?']) => {
                    out.extend(self.by_product.get(&p).into_iter().flatten().copied());
                }
                // Unreadable criteria (the logic makes it undecidable) or a wildcard product.
                _ => return (0..self.entries.len()).collect(),
            }
        }
        // Entries whose own product is unknown ("*") can match any criteria.
        out.extend(self.by_product.get("*").into_iter().flatten().copied());
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn platform(inv: &Inventory) -> Platform {
    let mut entries = Vec::new();
    let mut owner = Vec::new();
    let mut by_product: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for (ci, c) in inv.components.iter().enumerate() {
        if c.origin == Origin::Crate {
            continue;
        }
        let version = c.version.as_deref().unwrap_or("*");
        let mut cpes: Vec<Cpe> = c
            .cpes
            .iter()
            .filter_map(|s| match s.parse::<Cpe>() {
                Ok(cpe) => Some(cpe),
                Err(e) => {
                    tracing::warn!(component = %c.label(), cpe = %s, error = %e, "unreadable CPE in SBOM, ignored");
                    None
                }
            })
            .collect();
        if cpes.is_empty() {
            let made = format!("cpe:2.3:*:*:{}:{}:*:*:*:*:*:*:*", c.name, version);
            if let Ok(cpe) = made.parse() {
                cpes.push(cpe);
            }
        }
        for cpe in cpes {
            by_product
                .entry(cpe.product.to_lowercase())
                .or_default()
                .push(entries.len());
            entries.push(cpe::Component {
                cpe,
                ecosystem: c.ecosystem(),
            });
            owner.push(ci);
        }
    }
    Platform {
        entries,
        owner,
        by_product,
    }
}

/// One match result under construction.
struct Hit {
    tri: Tri,
    reasons: Vec<String>,
}

/// Matches every advisory against the inventory and applies the build's own evidence.
pub fn scan(inv: &Inventory, advisories: &[Advisory]) -> Vec<Finding> {
    let platform = platform(inv);
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in inv.components.iter().enumerate() {
        by_name.entry(c.name.as_str()).or_default().push(i);
    }
    let mut findings = Vec::new();
    for adv in advisories {
        let mut hits: BTreeMap<usize, Hit> = BTreeMap::new();
        let mut add = |ci: usize, tri: Tri, reason: String| {
            if tri == Tri::No {
                return;
            }
            let h = hits.entry(ci).or_insert(Hit {
                tri: Tri::No,
                reasons: Vec::new(),
            });
            h.tri = h.tri.or(tri);
            h.reasons.push(reason);
        };
        let has_nvd = adv
            .affected
            .iter()
            .any(|a| matches!(a, Affected::Nvd { .. }));
        for affected in &adv.affected {
            match affected {
                Affected::Rustsec {
                    package,
                    patched,
                    unaffected,
                } => {
                    for &ci in by_name.get(package.as_str()).into_iter().flatten() {
                        let c = &inv.components[ci];
                        if c.origin != Origin::Crate {
                            continue;
                        }
                        let (tri, why) = rustsec_match(c, patched, unaffected);
                        add(ci, tri, why);
                    }
                }
                Affected::Package {
                    ecosystem,
                    name,
                    ranges,
                    versions,
                } => {
                    let candidates: Vec<usize> = match ecosystem {
                        PackageEcosystem::CratesIo => by_name
                            .get(name.as_str())
                            .into_iter()
                            .flatten()
                            .copied()
                            .filter(|&ci| inv.components[ci].origin == Origin::Crate)
                            .collect(),
                        PackageEcosystem::Linux => inv
                            .components
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| c.origin == Origin::Kernel)
                            .map(|(i, _)| i)
                            .collect(),
                    };
                    for ci in candidates {
                        let c = &inv.components[ci];
                        let (tri, why) = ranges_match(c, ranges, versions, "OSV");
                        add(ci, tri, why);
                    }
                }
                Affected::Nvd { configurations } => {
                    // Only components whose product some criteria names can match it, so the
                    // configuration logic runs on that subset: same answer, far less work on a
                    // 1,000-package image.
                    let subset = platform.subset(configurations);
                    let entries: Vec<cpe::Component> = subset
                        .iter()
                        .map(|&i| platform.entries[i].clone())
                        .collect();
                    let e = cpe::evaluate_any(configurations, &entries);
                    let owner = |i: usize| platform.owner[subset[i]];
                    let mut owners: Vec<(usize, Tri)> = Vec::new();
                    match e.result {
                        Tri::No => {}
                        Tri::Yes => {
                            for &i in &e.vulnerable_components {
                                owners.push((owner(i), Tri::Yes));
                            }
                        }
                        Tri::Undecidable => {
                            for &i in e
                                .vulnerable_components
                                .iter()
                                .chain(&e.undecidable_components)
                            {
                                owners.push((owner(i), Tri::Undecidable));
                            }
                        }
                    }
                    for (ci, tri) in owners {
                        let why = match tri {
                            Tri::Yes => "NVD configuration matches".to_string(),
                            _ => format!(
                                "NVD configuration undecidable for {}: version cannot be compared honestly",
                                inv.components[ci].label()
                            ),
                        };
                        add(ci, tri, why);
                    }
                }
                Affected::Product {
                    vendor,
                    product,
                    ranges,
                    versions,
                    default_affected,
                    unaffected_ranges,
                    unaffected_versions,
                    ..
                } => {
                    // NVD's analysis, when there is one, is more precise (platform logic).
                    if has_nvd {
                        continue;
                    }
                    for (ci, c) in inv.components.iter().enumerate() {
                        if c.origin == Origin::Crate || !names_product(c, vendor, product) {
                            continue;
                        }
                        let (mut tri, mut why) = ranges_match(c, ranges, versions, "CVE 5");
                        if *default_affected && tri != Tri::Yes {
                            // Affected unless an "unaffected" entry covers this version.
                            let (unaffected, _) =
                                ranges_match(c, unaffected_ranges, unaffected_versions, "");
                            let by_default = !unaffected;
                            if by_default != Tri::No && tri == Tri::No {
                                why = match by_default {
                                    Tri::Yes => format!(
                                        "CVE 5: {} affected by default, no unaffected range covers it",
                                        c.label()
                                    ),
                                    _ => format!(
                                        "CVE 5: {} cannot be compared honestly with the unaffected ranges",
                                        c.label()
                                    ),
                                };
                            }
                            tri = tri.or(by_default);
                        }
                        add(ci, tri, why);
                    }
                }
            }
        }
        for (ci, hit) in hits {
            if hit.tri == Tri::No {
                continue;
            }
            findings.push(finding(adv, &inv.components[ci], hit));
        }
    }
    dedup(&mut findings);
    findings.sort_by(|a, b| {
        (a.component.as_str(), a.id.as_str()).cmp(&(b.component.as_str(), b.id.as_str()))
    });
    findings
}

fn finding(adv: &Advisory, c: &Component, hit: Hit) -> Finding {
    let mut status = match hit.tri {
        Tri::Yes => Status::Affected,
        _ => Status::Undecidable,
    };
    let mut reasons = hit.reasons;
    // The build's own word, by any of the advisory's ids (Yocto speaks CVE ids).
    if let Some(ev) = adv.ids().find_map(|id| c.evidence.get(id)) {
        match ev.status {
            SbomStatus::Fixed => status = Status::Patched,
            SbomStatus::NotAffected => status = Status::NotAffected,
            SbomStatus::Affected => {}
        }
        reasons.push(ev.detail.clone());
    }
    Finding {
        id: adv.id.clone(),
        aliases: adv.aliases.clone(),
        component: c.name.clone(),
        version: c.version.clone(),
        origin: c.origin,
        source: c.source.clone(),
        status,
        cvss: adv.cvss.as_ref().map(|c| c.score),
        summary: adv.summary.clone(),
        reasons,
        triage: None,
        informational: adv.informational.clone(),
    }
}

/// cargo-audit's rule: vulnerable unless a `patched` or `unaffected` requirement matches.
fn rustsec_match(c: &Component, patched: &[String], unaffected: &[String]) -> (Tri, String) {
    let Some(v) = c.version.as_deref() else {
        return (
            Tri::Undecidable,
            "RustSec: crate version unknown (not in any Cargo.lock)".into(),
        );
    };
    let Ok(v) = semver::Version::parse(v) else {
        return (Tri::Undecidable, format!("RustSec: {v:?} is not semver"));
    };
    let safe = patched.iter().chain(unaffected).any(|r| {
        // db build checked every requirement parses.
        semver::VersionReq::parse(r).is_ok_and(|req| req.matches(&v))
    });
    if safe {
        (Tri::No, String::new())
    } else if patched.is_empty() {
        (
            Tri::Yes,
            format!("RustSec: {v} affected, no patched version"),
        )
    } else {
        (
            Tri::Yes,
            format!("RustSec: {v} not in patched {}", patched.join(", ")),
        )
    }
}

/// OSV / CVE 5 ranges and exact versions under the component's ecosystem rules.
fn ranges_match(
    c: &Component,
    ranges: &[crate::model::Interval],
    versions: &[String],
    what: &str,
) -> (Tri, String) {
    let Some(v) = c.version.as_deref() else {
        return (
            Tri::Undecidable,
            format!("{what}: component version unknown"),
        );
    };
    let eco = c.ecosystem();
    let tri = Tri::any(versions.iter().map(|x| version::equals(eco, v, x)))
        .or(Tri::any(ranges.iter().map(|r| r.contains(eco, v))));
    let why = match tri {
        Tri::Yes => format!("{what}: {v} is in an affected range"),
        Tri::Undecidable => {
            format!("{what}: {v} cannot be compared honestly with the affected ranges")
        }
        Tri::No => String::new(),
    };
    (tri, why)
}

/// Does a CVE 5 vendor/product name this component (by its CPEs, else by its name)?
fn names_product(c: &Component, vendor: &str, product: &str) -> bool {
    // The kernel CNA names the kernel "Linux"/"Linux"; NVD's CPE says linux:linux_kernel.
    if c.origin == Origin::Kernel
        && vendor.eq_ignore_ascii_case("linux")
        && product.eq_ignore_ascii_case("linux")
    {
        return true;
    }
    if c.cpes.is_empty() {
        return c.name.eq_ignore_ascii_case(product);
    }
    c.cpes.iter().any(|cpe| {
        cpe_vendor_product(cpe).is_some_and(|(v, p)| {
            p.eq_ignore_ascii_case(product)
                && (v == "*" || vendor.is_empty() || v.eq_ignore_ascii_case(vendor))
        })
    })
}

/// One finding per component and vulnerability: a GHSA or OSV record aliasing a RustSec id (or a
/// CVE) that matched the same component is folded into the first.
fn dedup(findings: &mut Vec<Finding>) {
    let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
    for f in findings.drain(..) {
        let ids: HashSet<&str> = std::iter::once(f.id.as_str())
            .chain(f.aliases.iter().map(String::as_str))
            .collect();
        let same = kept.iter_mut().find(|k| {
            k.component == f.component
                && k.version == f.version
                && k.source == f.source
                && (ids.contains(k.id.as_str())
                    || k.aliases.iter().any(|a| ids.contains(a.as_str())))
        });
        match same {
            Some(k) => {
                // For crates the RustSec id leads, as in cargo-audit; its reasons come first.
                let f = if f.id.starts_with("RUSTSEC-") && !k.id.starts_with("RUSTSEC-") {
                    std::mem::replace(k, f)
                } else {
                    f
                };
                for a in std::iter::once(&f.id).chain(&f.aliases) {
                    if *a != k.id && !k.aliases.contains(a) {
                        k.aliases.push(a.clone());
                    }
                }
                k.aliases.retain(|a| *a != k.id);
                for r in f.reasons {
                    if !k.reasons.contains(&r) {
                        k.reasons.push(r);
                    }
                }
                if k.cvss.is_none() {
                    k.cvss = f.cvss;
                }
                if k.summary.is_empty() {
                    k.summary = f.summary;
                }
            }
            None => kept.push(f),
        }
    }
    *findings = kept;
}
