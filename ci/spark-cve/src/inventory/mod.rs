//! Reading what is in the image: `Cargo.lock` files, Yocto SBOMs (SPDX 3 JSON-LD from Yocto 6.0,
//! SPDX 2.2 JSON from Yocto 5.0), the older cve-check JSON manifest, and a kernel version.
//!
//! Every reader returns [`Component`]s with the evidence the input itself carries (VEX, `CVE_STATUS`,
//! patch names). [`Inventory::finish`] then drops the version-less crates Yocto lists when a
//! `Cargo.lock` supplies them with versions.

mod cargo_lock;
mod cve_check;
mod spdx2;
mod spdx3;

use std::path::Path;

use crate::error::{Error, Result, read_to_string};
use crate::model::{Component, Origin};

pub use cargo_lock::read_cargo_lock;
pub use cve_check::read_cve_check;
pub use spdx2::read_spdx2;
pub use spdx3::read_spdx3;

/// Formats `read_sbom` recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx3,
    Spdx2,
    CveCheck,
}

/// Everything the scan looks at.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    pub components: Vec<Component>,
}

impl Inventory {
    /// Adds the components of a `Cargo.lock`.
    pub fn add_cargo_lock(&mut self, path: &Path) -> Result<()> {
        let text = read_to_string(path)?;
        self.components.extend(read_cargo_lock(path, &text)?);
        Ok(())
    }

    /// Adds the components of a Yocto SBOM or cve-check manifest, detecting its format.
    pub fn add_sbom(&mut self, path: &Path) -> Result<SbomFormat> {
        let text = read_to_string(path)?;
        let value: serde_json::Value = crate::error::parse_json(path, &text)?;
        let format = detect(path, &value)?;
        let found = match format {
            SbomFormat::Spdx3 => read_spdx3(path, &value)?,
            SbomFormat::Spdx2 => read_spdx2(path, &value)?,
            SbomFormat::CveCheck => read_cve_check(path, &value)?,
        };
        self.components.extend(found);
        Ok(format)
    }

    /// Adds the running kernel's version as a component (`cpe:2.3:o:linux:linux_kernel:V`).
    pub fn add_kernel(&mut self, version: &str) {
        let mut c = Component::new(
            "linux",
            Some(version.to_string()),
            Origin::Kernel,
            "--kernel-version",
        );
        c.cpes.push(format!(
            "cpe:2.3:o:linux:linux_kernel:{version}:*:*:*:*:*:*:*"
        ));
        self.components.push(c);
    }

    /// Reads patch files under `dir/<recipe>/` (e.g. a layer's `recipes-*/<recipe>/files`
    /// collected per recipe) and records, for the component named `<recipe>`, every CVE that a
    /// patch's `CVE:` header line or file name names as fixed: the convention Yocto's cve-check
    /// follows (`CVE: CVE-2024-1234 CVE-2024-5678` in the patch header).
    pub fn add_patch_dir(&mut self, dir: &Path) -> Result<()> {
        let read_dir = |d: &Path| {
            std::fs::read_dir(d).map_err(|source| Error::Read {
                path: d.into(),
                source,
            })
        };
        let mut recipes: Vec<_> = read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .collect();
        recipes.sort();
        for recipe_dir in recipes.into_iter().filter(|p| p.is_dir()) {
            let recipe = recipe_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files: Vec<_> = read_dir(&recipe_dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .collect();
            files.sort();
            let targets: Vec<usize> = (0..self.components.len())
                .filter(|&i| self.components[i].name == recipe)
                .collect();
            if targets.is_empty() {
                tracing::warn!(recipe, dir = %recipe_dir.display(), "patches for a recipe not in the inventory");
                continue;
            }
            for f in files.into_iter().filter(|p| p.is_file()) {
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Patches may hold binary hunks: read bytes, look at text lines only.
                let bytes = std::fs::read(&f).map_err(|source| Error::Read {
                    path: f.clone(),
                    source,
                })?;
                let text = String::from_utf8_lossy(&bytes);
                let mut cves = Vec::new();
                for line in text.lines() {
                    if let Some(rest) = line.strip_prefix("CVE:") {
                        cves.extend(crate::model::cve_ids_in(rest));
                    }
                }
                for &i in &targets {
                    let c = &mut self.components[i];
                    c.add_patch(&name);
                    for cve in &cves {
                        c.evidence
                            .entry(cve.clone())
                            .or_insert_with(|| crate::model::Evidence {
                                status: crate::model::SbomStatus::Fixed,
                                detail: format!("patch {name} (CVE: line)"),
                            });
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops version-less crates that a `Cargo.lock` lists with a version, and merges duplicates:
    /// the same recipe (origin, name, version) from any number of SBOM files, the same crate
    /// within one `Cargo.lock`.
    pub fn finish(&mut self) {
        let locked: std::collections::HashSet<String> = self
            .components
            .iter()
            .filter(|c| c.origin == Origin::Crate && c.version.is_some())
            .map(|c| c.name.clone())
            .collect();
        self.components.retain(|c| {
            !(c.origin == Origin::Crate && c.version.is_none() && locked.contains(&c.name))
        });
        // Duplicates (Yocto gives a recipe's CPE to several package elements) become one
        // component that keeps everything any of them said: CPEs, patches, evidence.
        let mut first: std::collections::HashMap<(Origin, String, Option<String>, String), usize> =
            std::collections::HashMap::new();
        let mut kept: Vec<Component> = Vec::with_capacity(self.components.len());
        for c in self.components.drain(..) {
            // Crates stay apart per Cargo.lock (each daemon's lock is its own finding); a recipe
            // read from several SBOM documents (Yocto 5.0 writes one per recipe and package) is
            // one component.
            let source = if c.origin == Origin::Crate {
                c.source.clone()
            } else {
                String::new()
            };
            let key = (c.origin, c.name.clone(), c.version.clone(), source);
            match first.get(&key) {
                Some(&i) => {
                    let k = &mut kept[i];
                    if !k.source.split(", ").any(|s| s == c.source) {
                        k.source = format!("{}, {}", k.source, c.source);
                    }
                    for cpe in c.cpes {
                        if !k.cpes.contains(&cpe) {
                            k.cpes.push(cpe);
                        }
                    }
                    for p in c.patches {
                        if !k.patches.contains(&p) {
                            k.patches.push(p);
                        }
                    }
                    for (id, ev) in c.evidence {
                        k.evidence.entry(id).or_insert(ev);
                    }
                }
                None => {
                    first.insert(key, kept.len());
                    kept.push(c);
                }
            }
        }
        self.components = kept;
    }
}

fn detect(path: &Path, v: &serde_json::Value) -> Result<SbomFormat> {
    if let Some(sv) = v.get("spdxVersion").and_then(|s| s.as_str()) {
        if sv.starts_with("SPDX-2.") {
            return Ok(SbomFormat::Spdx2);
        }
        return Err(Error::UnknownFormat {
            path: path.into(),
            hint: format!("spdxVersion {sv:?} is not SPDX 2.x"),
        });
    }
    let context = v.get("@context").map(|c| c.to_string()).unwrap_or_default();
    if context.contains("spdx.org/rdf/3.")
        || (v.get("@graph").is_some() && context.contains("spdx"))
    {
        return Ok(SbomFormat::Spdx3);
    }
    if v.get("package").is_some_and(|p| p.is_array()) {
        return Ok(SbomFormat::CveCheck);
    }
    Err(Error::UnknownFormat {
        path: path.into(),
        hint: "expected SPDX 3 JSON-LD (@context spdx.org/rdf/3.*), SPDX 2.x JSON (spdxVersion) \
               or a Yocto cve-check manifest (\"package\": [...])"
            .into(),
    })
}

/// Vendor and product of a CPE 2.3 formatted string, without needing the full parser.
pub(crate) fn cpe_vendor_product(cpe: &str) -> Option<(&str, &str)> {
    let mut parts = cpe.split(':');
    if parts.next()? != "cpe" || parts.next()? != "2.3" {
        return None;
    }
    let _part = parts.next()?;
    Some((parts.next()?, parts.next()?))
}

/// Origin of a Yocto recipe: the kernel recipes are `Kernel`, everything else `Yocto`.
pub(crate) fn yocto_origin(name: &str, cpes: &[String]) -> Origin {
    let kernel_cpe = cpes
        .iter()
        .any(|c| cpe_vendor_product(c) == Some(("linux", "linux_kernel")));
    if kernel_cpe || name == "linux-yocto" || name.starts_with("linux-yocto-") {
        Origin::Kernel
    } else {
        Origin::Yocto
    }
}
