//! The vulnerability snapshot: one file, built offline by `spark-cve db build` from local copies
//! of NVD CVE API 2.0 JSON, CVE JSON 5 records, OSV records and the RustSec advisory database.
//!
//! # File format (`spark-cve-snapshot/1`)
//!
//! UTF-8 text, one record per line, so a scan can stream it and parse only what may match:
//!
//! ```text
//! line 1      {"format":"spark-cve-snapshot/1","created":…,"sources":[…],"advisories":N,"sha256":…}
//! line 2..N+1 KEYS \t ADVISORY-JSON
//! ```
//!
//! `KEYS` are the lower-cased product / crate / package names the advisory can match, joined by
//! spaces; a scan parses the JSON only when one of its keys is in the inventory. `sha256` is the
//! SHA-256 of all advisory lines (each with its `\n`); a reader checks it and the line count, so a
//! truncated or edited snapshot is an error, never a silently smaller database. Lines are sorted
//! by advisory id and the build is deterministic (same inputs and `--date` → same bytes).

mod cve5;
mod cvss;
mod nvd;
mod osv;
mod rustsec;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{Advisory, Affected};

pub use cvss::v3_base_score;

/// The format tag of the first line.
pub const FORMAT: &str = "spark-cve-snapshot/1";

/// Kinds of source a snapshot is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Nvd,
    Cve5,
    Osv,
    Rustsec,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Nvd => "nvd",
            SourceKind::Cve5 => "cve5",
            SourceKind::Osv => "osv",
            SourceKind::Rustsec => "rustsec",
        }
    }
}

/// One input of a snapshot build, as recorded in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub kind: SourceKind,
    /// The name of the file or directory given to `db build` (not the whole path, so the same
    /// data gives the same snapshot on every machine).
    pub path: String,
    pub records: usize,
    /// Newest modification date of any record of this source: how fresh this source is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
}

/// The first line of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// When the snapshot was built (RFC 3339, UTC).
    pub created: String,
    pub sources: Vec<SourceInfo>,
    pub advisories: usize,
    pub sha256: String,
}

impl Header {
    /// The date the data is as fresh as: the oldest of the sources' newest records (the stalest
    /// source decides), or the build date if no source has dated records.
    pub fn data_date(&self) -> String {
        self.sources
            .iter()
            .filter_map(|s| s.date.clone())
            .min()
            .unwrap_or_else(|| self.created.clone())
    }
}

/// Inputs of `db build`.
#[derive(Debug, Clone, Default)]
pub struct BuildInput {
    pub sources: Vec<(SourceKind, PathBuf)>,
    /// Build date written to the header (RFC 3339); deterministic builds pass one.
    pub created: String,
}

/// Builds a snapshot and writes it to `out`. Returns the header written.
pub fn build(input: &BuildInput, out: &Path) -> Result<Header> {
    let mut merged: BTreeMap<String, Advisory> = BTreeMap::new();
    let mut infos = Vec::new();
    for (kind, root) in &input.sources {
        let files = collect_files(root, *kind)?;
        let mut records = 0;
        let mut newest: Option<String> = None;
        for file in files {
            for adv in parse_file(*kind, &file)? {
                records += 1;
                if let Some(m) = &adv.modified {
                    let day = m.get(..10).unwrap_or(m).to_string();
                    if newest.as_ref().is_none_or(|n| *n < day) {
                        newest = Some(day);
                    }
                }
                merge(&mut merged, adv);
            }
        }
        infos.push(SourceInfo {
            kind: *kind,
            path: root.file_name().map_or_else(
                || root.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            records,
            date: newest,
        });
    }
    let mut body = Vec::new();
    for adv in merged.values() {
        write_line(&mut body, adv);
    }
    let header = Header {
        format: FORMAT.into(),
        created: input.created.clone(),
        sources: infos,
        advisories: merged.len(),
        sha256: hex::encode(Sha256::digest(&body)),
    };
    let mut file = std::fs::File::create(out).map_err(|source| Error::Write {
        path: out.into(),
        source,
    })?;
    // Serialising our own plain structs cannot fail.
    let head = serde_json::to_string(&header).expect("header serialises");
    (|| -> std::io::Result<()> {
        file.write_all(head.as_bytes())?;
        file.write_all(b"\n")?;
        file.write_all(&body)?;
        file.sync_all()
    })()
    .map_err(|source| Error::Write {
        path: out.into(),
        source,
    })?;
    Ok(header)
}

fn write_line(out: &mut Vec<u8>, adv: &Advisory) {
    let keys: Vec<String> = keys(adv).into_iter().collect();
    out.extend_from_slice(keys.join(" ").as_bytes());
    out.push(b'\t');
    // Serialising our own plain structs cannot fail.
    serde_json::to_writer(&mut *out, adv).expect("advisory serialises");
    out.push(b'\n');
}

/// The lower-cased names an advisory can match: CPE products, CVE 5 products, package names.
pub fn keys(adv: &Advisory) -> std::collections::BTreeSet<String> {
    let mut k = std::collections::BTreeSet::new();
    for a in &adv.affected {
        match a {
            Affected::Nvd { configurations } => {
                for c in configurations {
                    collect_criteria_products(c, &mut k);
                }
            }
            Affected::Product { product, .. } => {
                k.insert(product.to_lowercase());
            }
            Affected::Package { name, .. } => {
                k.insert(name.to_lowercase());
            }
            Affected::Rustsec { package, .. } => {
                k.insert(package.to_lowercase());
            }
        }
    }
    k
}

fn collect_criteria_products(
    cfg: &crate::cpe::Configuration,
    out: &mut std::collections::BTreeSet<String>,
) {
    for m in cfg.nodes.iter().flat_map(|n| &n.cpe_match) {
        // Only vulnerable criteria name what is affected; platform CPEs (vulnerable: false)
        // just qualify, and indexing them would parse every Linux-only CVE for every scan.
        if m.vulnerable
            && let Some((_, p)) = crate::inventory::cpe_vendor_product(&m.criteria)
        {
            out.insert(p.to_lowercase());
        }
    }
}

/// Merges an advisory into the map by id: aliases and affected entries are united; the summary,
/// dates and CVSS of the first source that has one are kept (NVD and CVE 5 before OSV).
fn merge(map: &mut BTreeMap<String, Advisory>, adv: Advisory) {
    match map.get_mut(&adv.id) {
        None => {
            map.insert(adv.id.clone(), adv);
        }
        Some(old) => {
            for a in adv.aliases {
                if !old.aliases.contains(&a) {
                    old.aliases.push(a);
                }
            }
            if old.summary.is_empty() {
                old.summary = adv.summary;
            }
            if old.cvss.is_none() {
                old.cvss = adv.cvss;
            }
            old.published = old.published.take().or(adv.published);
            if adv.modified > old.modified {
                old.modified = adv.modified;
            }
            old.informational = old.informational.take().or(adv.informational);
            for a in adv.affected {
                if !old.affected.contains(&a) {
                    old.affected.push(a);
                }
            }
            for s in adv.sources {
                if !old.sources.contains(&s) {
                    old.sources.push(s);
                }
            }
        }
    }
}

fn collect_files(root: &Path, kind: SourceKind) -> Result<Vec<PathBuf>> {
    let wanted = |p: &Path| -> bool {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match kind {
            SourceKind::Rustsec => name.starts_with("RUSTSEC-") && name.ends_with(".md"),
            _ => name.ends_with(".json"),
        }
    };
    let meta = std::fs::metadata(root).map_err(|source| Error::Read {
        path: root.into(),
        source,
    })?;
    if meta.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            let p = entry.path();
            let name = entry.file_name();
            // Skip .git and other hidden folders of a cloned database.
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if wanted(&p) {
                out.push(p);
            }
        }
    }
    // Sorted so the merge order, and with it the output, is deterministic.
    out.sort();
    Ok(out)
}

fn parse_file(kind: SourceKind, path: &Path) -> Result<Vec<Advisory>> {
    let text = crate::error::read_to_string(path)?;
    if kind == SourceKind::Rustsec {
        return Ok(rustsec::parse(path, &text)?.into_iter().collect());
    }
    let doc: serde_json::Value = crate::error::parse_json(path, &text)?;
    match kind {
        SourceKind::Nvd => nvd::parse(path, &doc),
        SourceKind::Cve5 => Ok(cve5::parse(path, &doc)?.into_iter().collect()),
        SourceKind::Osv => Ok(osv::parse(path, &doc)?.into_iter().collect()),
        SourceKind::Rustsec => unreachable!("handled above"),
    }
}

/// A loaded snapshot: its header and the advisories a filter kept.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub header: Header,
    pub advisories: Vec<Advisory>,
    pub path: PathBuf,
}

/// Reads a snapshot, checking format, count and hash, and parsing only advisories with a key
/// `wanted` accepts (pass `|_| true` for all).
pub fn load(path: &Path, mut wanted: impl FnMut(&str) -> bool) -> Result<Snapshot> {
    let bad = |message: String| Error::Snapshot {
        path: path.into(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let read = |r: &mut BufReader<std::fs::File>, l: &mut Vec<u8>| {
        l.clear();
        r.read_until(b'\n', l).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })
    };
    read(&mut reader, &mut line)?;
    let header: Header = serde_json::from_slice(&line).map_err(|e| {
        bad(format!(
            "line 1: not a spark-cve snapshot header ({e}); build one with `spark-cve db build`"
        ))
    })?;
    if header.format != FORMAT {
        return Err(bad(format!(
            "line 1: format {:?}, this spark-cve reads {FORMAT:?}",
            header.format
        )));
    }
    let mut hasher = Sha256::new();
    let mut count = 0usize;
    let mut advisories = Vec::new();
    loop {
        let n = read(&mut reader, &mut line)?;
        if n == 0 {
            break;
        }
        count += 1;
        let lineno = count + 1;
        if line.last() != Some(&b'\n') {
            return Err(bad(format!("line {lineno}: truncated (no end of line)")));
        }
        hasher.update(&line);
        let Some(tab) = line.iter().position(|&b| b == b'\t') else {
            return Err(bad(format!("line {lineno}: no key field")));
        };
        let keys = std::str::from_utf8(&line[..tab])
            .map_err(|_| bad(format!("line {lineno}: keys are not UTF-8")))?;
        if keys.split(' ').any(&mut wanted) {
            let adv: Advisory = serde_json::from_slice(&line[tab + 1..]).map_err(|e| {
                bad(format!(
                    "line {lineno}, column {}: {e}",
                    e.column() + tab + 1
                ))
            })?;
            advisories.push(adv);
        }
    }
    if count != header.advisories {
        return Err(bad(format!(
            "truncated or padded: header says {} advisories, file has {count}",
            header.advisories
        )));
    }
    let digest = hex::encode(hasher.finalize());
    if digest != header.sha256 {
        return Err(bad(format!(
            "content hash {digest} does not match the header's {}: the file was modified",
            header.sha256
        )));
    }
    Ok(Snapshot {
        header,
        advisories,
        path: path.into(),
    })
}

/// A set of keys to load, from inventory names.
pub fn key_filter(names: &HashSet<String>) -> impl FnMut(&str) -> bool + '_ {
    move |k| names.contains(k)
}
