//! The snapshot file: built from sources in the real formats, deterministic, self-checking
//! (count and SHA-256), and the committed fixture `tests/data/snapshot.jsonl` is up to date.

mod common;

use std::path::{Path, PathBuf};

use spark_cve::db::{self, BuildInput, SourceKind};

const FIXTURE_DATE: &str = "2026-11-23T00:00:00Z";

fn build_from_fixtures(dir: &Path) -> PathBuf {
    let [nvd, cve5, osv, rustsec] = common::write_sources(&dir.join("sources"));
    let out = dir.join("snapshot.jsonl");
    db::build(
        &BuildInput {
            sources: vec![
                (SourceKind::Nvd, nvd),
                (SourceKind::Cve5, cve5),
                (SourceKind::Osv, osv),
                (SourceKind::Rustsec, rustsec),
            ],
            created: FIXTURE_DATE.into(),
        },
        &out,
    )
    .unwrap();
    out
}

fn committed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snapshot.jsonl")
}

/// CI scans our own Cargo.lock against this file (ci/test.sh). Regenerate it with
/// `SPARK_CVE_BLESS=1 cargo test -p spark-cve --test snapshot`.
#[test]
fn committed_fixture_snapshot_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    let built = std::fs::read(build_from_fixtures(dir.path())).unwrap();
    if std::env::var_os("SPARK_CVE_BLESS").is_some() {
        std::fs::write(committed(), &built).unwrap();
    }
    let have = std::fs::read(committed()).unwrap_or_default();
    assert!(
        have == built,
        "tests/data/snapshot.jsonl is out of date: SPARK_CVE_BLESS=1 cargo test -p spark-cve --test snapshot"
    );
}

#[test]
fn build_records_sources_and_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pa = build_from_fixtures(a.path());
    let pb = build_from_fixtures(b.path());
    assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    let s = db::load(&pa, |_| true).unwrap();
    let h = &s.header;
    assert_eq!(h.format, db::FORMAT);
    assert_eq!(h.created, FIXTURE_DATE);
    let kinds: Vec<(&str, &str, usize)> = h
        .sources
        .iter()
        .map(|s| (s.kind.as_str(), s.path.as_str(), s.records))
        .collect();
    // CVE 5: the rejected record is dropped; OSV: PyPI is skipped; RustSec: withdrawn dropped.
    assert_eq!(
        kinds,
        [
            ("nvd", "nvd", 6),
            ("cve5", "cvelistV5", 1),
            ("osv", "osv", 2),
            ("rustsec", "advisory-db", 3)
        ]
    );
    // GHSA (OSV) and RUSTSEC records stay separate ids; merging across ids is the scan's job.
    assert_eq!(h.advisories, 12);
    assert_eq!(s.advisories.len(), 12);
    let smallvec = s
        .advisories
        .iter()
        .find(|a| a.id == "RUSTSEC-2021-0003")
        .unwrap();
    assert_eq!(smallvec.cvss.as_ref().unwrap().score, 9.8);
    // The key filter parses only what can match.
    let only = db::load(&pa, |k| k == "curl").unwrap();
    assert_eq!(
        only.advisories
            .iter()
            .map(|a| a.id.as_str())
            .collect::<Vec<_>>(),
        ["CVE-2024-1000"]
    );
}

#[test]
fn truncated_or_modified_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = build_from_fixtures(dir.path());
    let bytes = std::fs::read(&p).unwrap();

    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let e = db::load(&cut, |_| true).unwrap_err().to_string();
    assert!(e.contains("cut.jsonl") && e.contains("truncated"), "{e}");

    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let dropped = dir.path().join("dropped.jsonl");
    std::fs::write(&dropped, lines[..lines.len() - 1].concat()).unwrap();
    let e = db::load(&dropped, |_| true).unwrap_err().to_string();
    assert!(e.contains("header says 12 advisories, file has 11"), "{e}");

    let edited = dir.path().join("edited.jsonl");
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"score\":9.8", "\"score\":1.0");
    std::fs::write(&edited, text).unwrap();
    let e = db::load(&edited, |_| true).unwrap_err().to_string();
    assert!(e.contains("does not match the header"), "{e}");

    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, b"{\"not\": \"a snapshot\"}\n").unwrap();
    let e = db::load(&junk, |_| true).unwrap_err().to_string();
    assert!(e.contains("junk.jsonl") && e.contains("line 1"), "{e}");
}

#[test]
fn malformed_source_names_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let nvd = dir.path().join("nvd.json");
    common::write(
        &nvd,
        "{\"vulnerabilities\": [{\"cve\": {\"id\": \"CVE-1\", \"configurations\": [{\"nodes\": 3}]}}]}",
    );
    let e = db::build(
        &BuildInput {
            sources: vec![(SourceKind::Nvd, nvd)],
            created: FIXTURE_DATE.into(),
        },
        &dir.path().join("out"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("nvd.json: /vulnerabilities/0/cve/configurations (CVE-1)"),
        "{e}"
    );

    let osv = dir.path().join("osv.json");
    common::write(&osv, "{\"id\": \"X\",\n \"affected\": [}");
    let e = db::build(
        &BuildInput {
            sources: vec![(SourceKind::Osv, osv)],
            created: FIXTURE_DATE.into(),
        },
        &dir.path().join("out"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("osv.json:2:"), "{e}");

    let rs = dir.path().join("crates/x/RUSTSEC-2024-0001.md");
    common::write(
        &rs,
        "```toml\n[advisory]\nid = \"RUSTSEC-2024-0001\"\npackage = \"x\"\ndate = \"2024-01-01\"\n[versions]\npatched = [\"not a req\"]\n```\n",
    );
    let e = db::build(
        &BuildInput {
            sources: vec![(SourceKind::Rustsec, dir.path().join("crates"))],
            created: FIXTURE_DATE.into(),
        },
        &dir.path().join("out"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("RUSTSEC-2024-0001.md: [versions]: \"not a req\" is not a semver requirement"),
        "{e}"
    );
}
