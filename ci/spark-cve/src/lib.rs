//! spark-cve: offline security patch tracking for everything in a Spark image.
//!
//! One scan reads the image's inventory ([`inventory`]: Yocto SBOMs, cve-check manifests,
//! `Cargo.lock` files, the kernel version), one vulnerability snapshot ([`db`]: built offline from
//! NVD, CVE 5, OSV and RustSec copies), matches them ([`scan`], with [`cpe`] and [`version`]),
//! applies what the build says is patched and what people triaged ([`triage`]), and renders
//! reports and the CI verdict ([`report`]). [`run_scan`] is the whole pipeline; `main.rs` only
//! parses flags around it.

pub mod cpe;
pub mod db;
pub mod error;
pub mod inventory;
pub mod kernel;
pub mod model;
pub mod report;
pub mod scan;
pub mod triage;
pub mod version;

use std::path::PathBuf;

pub use error::{Error, Result};

/// Everything one `spark-cve scan` needs.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub snapshot: PathBuf,
    pub cargo_locks: Vec<PathBuf>,
    pub sboms: Vec<PathBuf>,
    pub kernel_version: Option<String>,
    /// The kernel's `.config` and source tree: kernel CVEs whose files are not built are
    /// "not affected" ([`kernel`]). Both or neither.
    pub kernel_config: Option<(PathBuf, PathBuf)>,
    /// Folders of patch files per recipe (`DIR/<recipe>/*.patch`), read for `CVE:` lines.
    pub patch_dirs: Vec<PathBuf>,
    pub vex: Vec<PathBuf>,
    pub baseline: Option<PathBuf>,
    pub policy: report::Policy,
    /// "Now" for snapshot age and triage expiry (a flag, so CI over a fixture is reproducible).
    pub now: time::OffsetDateTime,
}

/// Reads all inputs, scans, triages and assembles the report with its verdict.
pub fn run_scan(req: &ScanRequest) -> Result<report::Report> {
    let mut inv = inventory::Inventory::default();
    let mut inputs = Vec::new();
    for p in &req.cargo_locks {
        inv.add_cargo_lock(p)?;
        inputs.push(p.display().to_string());
    }
    for p in &req.sboms {
        let format = inv.add_sbom(p)?;
        tracing::debug!(path = %p.display(), ?format, "read SBOM");
        inputs.push(p.display().to_string());
    }
    if let Some(v) = &req.kernel_version {
        inv.add_kernel(v);
        inputs.push(format!("kernel {v}"));
    }
    for p in &req.patch_dirs {
        inv.add_patch_dir(p)?;
        inputs.push(p.display().to_string());
    }
    inv.finish();
    let mut statements = Vec::new();
    for p in &req.vex {
        statements.extend(triage::read_vex(p)?);
        inputs.push(p.display().to_string());
    }
    // The baseline is read before the heavy work so a wrong path fails fast.
    let baseline = match &req.baseline {
        Some(p) => Some((p.display().to_string(), report::read_report(p)?)),
        None => None,
    };
    let keys = scan::inventory_keys(&inv);
    let snapshot = db::load(&req.snapshot, |k| keys.contains(k))?;
    tracing::debug!(
        loaded = snapshot.advisories.len(),
        total = snapshot.header.advisories,
        "snapshot advisories keyed to the inventory"
    );
    let mut findings = scan::scan(&inv, &snapshot.advisories);
    if let Some((config, src)) = &req.kernel_config {
        let config = kernel::KernelConfig::read(config)?;
        let mut tree = kernel::KernelTree::new(src);
        let files: std::collections::HashMap<&str, Vec<String>> = snapshot
            .advisories
            .iter()
            .map(|a| (a.id.as_str(), a.program_files()))
            .collect();
        for f in findings
            .iter_mut()
            .filter(|f| f.origin == model::Origin::Kernel && f.status.is_open())
        {
            let program_files = files.get(f.id.as_str()).map_or(&[][..], |v| v.as_slice());
            if let Some(why) = kernel::not_built(&mut tree, &config, program_files) {
                f.status = model::Status::NotAffected;
                f.reasons.push(why);
            }
        }
        inputs.push(format!("kernel config {}", src.display()));
    }
    triage::apply(&mut findings, &inv.components, &statements, req.now.date());
    Ok(report::assemble(
        &snapshot,
        inputs,
        inv.components.len(),
        findings,
        &req.policy,
        req.now,
        baseline.as_ref().map(|(p, r)| (p.as_str(), r)),
    ))
}
