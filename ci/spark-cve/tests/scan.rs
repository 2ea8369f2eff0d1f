//! The whole pipeline on fixtures in the real formats: snapshot build, inventory, matching,
//! build evidence, triage, verdict, baseline diff and every report format.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use spark_cve::db::{self, BuildInput, SourceKind};
use spark_cve::model::Status;
use spark_cve::report::{self, Policy, render::Format};
use spark_cve::{ScanRequest, run_scan};
use time::macros::datetime;

fn build_snapshot(dir: &Path) -> std::path::PathBuf {
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
            created: "2026-11-23T00:00:00Z".into(),
        },
        &out,
    )
    .unwrap();
    out
}

fn request(dir: &Path) -> ScanRequest {
    let snapshot = build_snapshot(dir);
    let (lock, sbom) = common::write_inventory(dir);
    ScanRequest {
        snapshot,
        cargo_locks: vec![lock],
        sboms: vec![sbom],
        kernel_version: None,
        patch_dirs: Vec::new(),
        kernel_config: None,
        vex: vec![common::write_openvex(dir), common::write_cyclonedx(dir)],
        baseline: None,
        policy: Policy::default(),
        now: datetime!(2026-11-25 12:00 UTC),
    }
}

fn statuses(r: &report::Report) -> BTreeMap<(String, String), Status> {
    r.findings.iter().map(|f| (f.key(), f.status)).collect()
}

fn key(id: &str, c: &str) -> (String, String) {
    (id.into(), c.into())
}

#[test]
fn fixture_scan_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run_scan(&request(dir.path())).unwrap();
    let s = statuses(&rep);
    let expect = [
        (key("CVE-2024-0001", "busybox"), Status::Affected),
        (key("CVE-2024-0002", "busybox"), Status::Patched),
        (key("CVE-2024-0004", "zlib"), Status::Undecidable),
        (key("CVE-2024-0005", "linux-yocto"), Status::NotAffected),
        (key("CVE-2024-0006", "openssl"), Status::Affected),
        (key("CVE-2024-1000", "curl"), Status::Triaged),
        (key("CVE-2024-2000", "linux-yocto"), Status::Affected),
        (key("RUSTSEC-2021-0003", "smallvec"), Status::Affected),
        (key("RUSTSEC-2021-0139", "ansi_term"), Status::Affected),
    ];
    assert_eq!(
        s,
        expect.into_iter().collect::<BTreeMap<_, _>>(),
        "{:#?}",
        rep.findings
    );
    // openssl on Windows only (AND with a platform we do not ship) is no finding at all.
    assert!(!s.contains_key(&key("CVE-2024-0003", "openssl")));
    let f = |id: &str| rep.findings.iter().find(|f| f.id == id).unwrap();
    // GHSA and RustSec records of the same bug fold into one finding with all ids.
    let sv = f("RUSTSEC-2021-0003");
    assert!(
        sv.aliases.contains(&"GHSA-43w2-9j62-hq99".to_string()),
        "{sv:?}"
    );
    // Triage that expired, or was made for another version, resurfaces with the reason.
    assert!(
        sv.reasons
            .iter()
            .any(|r| r.contains("expired on 2020-01-01")),
        "{sv:?}"
    );
    let ossl = f("CVE-2024-0006");
    assert!(
        ossl.reasons
            .iter()
            .any(|r| r.contains("was for version 3.0.12")),
        "{ossl:?}"
    );
    assert!(
        f("CVE-2024-0002")
            .reasons
            .iter()
            .any(|r| r.contains("CVE-2024-0002.patch"))
    );
    assert!(
        f("CVE-2024-1000")
            .triage
            .as_ref()
            .is_some_and(|t| t.owner == "alice")
    );
    // Informational advisories never gate; the rest with CVSS >= 7 do.
    assert_eq!(rep.summary.gating, 4, "{:#?}", rep.summary);
    assert_eq!(rep.verdict.exit_code, report::EXIT_FINDINGS);
    // The stalest source decides: NVD's newest record is from 2026-11-19.
    assert_eq!(rep.snapshot.data_date, "2026-11-19");
    assert_eq!(rep.snapshot.age_days, 6);
    assert_eq!(rep.snapshot.freshness, report::Freshness::Fresh);
}

#[test]
fn threshold_and_staleness_decide_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path());
    req.policy.fail_cvss = 10.0;
    let rep = run_scan(&req).unwrap();
    assert_eq!(rep.verdict.exit_code, report::EXIT_OK, "{:?}", rep.verdict);
    req.policy.max_age_days = 5;
    let rep = run_scan(&req).unwrap();
    assert_eq!(rep.verdict.exit_code, report::EXIT_STALE);
    assert!(rep.verdict.reasons[0].contains("days old"));
    req.policy.max_age_days = 30;
    req.policy.fail_on_undecidable = true;
    req.policy.fail_cvss = 9.0;
    let rep = run_scan(&req).unwrap();
    // busybox 9.8, smallvec 9.8, zlib (undecidable) 9.1.
    assert_eq!(rep.summary.gating, 3);
}

#[test]
fn patch_set_change_resurfaces_triage() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path());
    let vex = dir.path().join("patches.openvex.json");
    common::write_json(
        &vex,
        &serde_json::json!({
            "@context": "https://openvex.dev/ns/v0.2.0", "author": "dave",
            "statements": [{"vulnerability": {"name": "CVE-2024-0001"}, "products": ["busybox@1.36.1"],
                "status": "not_affected", "expires": "2099-01-01", "patches": ["local-hardening.patch"]}]
        }),
    );
    req.vex = vec![vex];
    let rep = run_scan(&req).unwrap();
    let f = rep
        .findings
        .iter()
        .find(|f| f.id == "CVE-2024-0001")
        .unwrap();
    assert_eq!(f.status, Status::Affected);
    assert!(
        f.reasons
            .iter()
            .any(|r| r.contains("component now has [CVE-2024-0002.patch]")),
        "{f:?}"
    );
}

#[test]
fn baseline_diff_new_fixed_changed() {
    let dir = tempfile::tempdir().unwrap();
    let mut req = request(dir.path());
    let first = run_scan(&req).unwrap();
    let base = dir.path().join("previous.json");
    std::fs::write(&base, report::render::render(&first, Format::Json)).unwrap();
    // Next release: smallvec upgraded (fixed), curl's triage dropped (new), kernel bumped.
    let lock = std::fs::read_to_string(&req.cargo_locks[0])
        .unwrap()
        .replace("1.6.0", "1.13.2");
    std::fs::write(&req.cargo_locks[0], lock).unwrap();
    req.vex = vec![common::write_cyclonedx(dir.path())];
    req.baseline = Some(base);
    let rep = run_scan(&req).unwrap();
    let d = rep.diff.as_ref().unwrap();
    let ids = |l: &[report::DiffEntry]| l.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&d.fixed), ["RUSTSEC-2021-0003"]);
    assert_eq!(ids(&d.new), ["CVE-2024-1000"]);
    assert!(d.changed.is_empty(), "{d:?}");
}

#[test]
fn every_report_format_renders() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run_scan(&request(dir.path())).unwrap();
    let term = report::render::render(&rep, Format::Terminal);
    assert!(
        term.contains("sha256") && term.contains("verdict: exit 1"),
        "{term}"
    );
    assert!(term.contains("source rustsec"), "{term}");
    let sarif: serde_json::Value =
        serde_json::from_str(&report::render::render(&rep, Format::Sarif)).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(
        results
            .iter()
            .any(|r| r["level"] == "error" && r["ruleId"] == "CVE-2024-0001")
    );
    assert!(results.iter().any(|r| r["ruleId"] == "CVE-2024-1000" && r["suppressions"][0]["status"] == "accepted"));
    let md = report::render::render(&rep, Format::Markdown);
    assert!(
        md.contains("| CVE-2024-0001 | busybox | 1.36.1 | 9.8 | affected |"),
        "{md}"
    );
    let html = report::render::render(&rep, Format::Html);
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("CVE-2024-0001"));
    assert!(
        !html.contains("<script") && !html.contains("http-equiv"),
        "self-contained, no scripts"
    );
    let json: report::Report =
        serde_json::from_str(&report::render::render(&rep, Format::Json)).unwrap();
    assert_eq!(json, rep);
}

/// The kernel CNA's CVE 5 style, not yet analysed by NVD: "Linux"/"Linux", affected by default,
/// git ranges (skipped) and unaffected stable lines given as `6.6.25 ..= 6.6.*`.
#[test]
fn kernel_cna_record_default_affected_with_unaffected_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cve5 = dir.path().join("cve5");
    common::write_json(
        &cve5.join("CVE-2024-3000.json"),
        &serde_json::json!({
            "dataType": "CVE_RECORD", "dataVersion": "5.1",
            "cveMetadata": {"cveId": "CVE-2024-3000", "state": "PUBLISHED", "dateUpdated": "2026-11-24T00:00:00Z"},
            "containers": {"cna": {
                "descriptions": [{"lang": "en", "value": "In the Linux kernel, the following vulnerability has been resolved: net: fix"}],
                "affected": [
                    {"product": "Linux", "vendor": "Linux", "defaultStatus": "unaffected", "versions": [
                        {"version": "1da177e4c3f4", "lessThan": "0c2e1d7a9e8f", "status": "affected", "versionType": "git"}]},
                    {"product": "Linux", "vendor": "Linux", "defaultStatus": "affected", "versions": [
                        {"version": "5.10", "status": "affected"},
                        {"version": "0", "lessThan": "5.10", "status": "unaffected", "versionType": "semver"},
                        {"version": "6.1.80", "lessThanOrEqual": "6.1.*", "status": "unaffected", "versionType": "semver"},
                        {"version": "6.6.25", "lessThanOrEqual": "6.6.*", "status": "unaffected", "versionType": "semver"},
                        {"version": "6.8", "lessThanOrEqual": "*", "status": "unaffected", "versionType": "original_commit_for_fix"}]}
                ]
            }}
        }),
    );
    let snap = dir.path().join("s.jsonl");
    db::build(
        &BuildInput {
            sources: vec![(SourceKind::Cve5, cve5)],
            created: "2026-11-25T00:00:00Z".into(),
        },
        &snap,
    )
    .unwrap();
    for (kernel, expect) in [
        ("6.6.21", Some(Status::Affected)),
        ("6.6.30", None),
        ("6.1.79", Some(Status::Affected)),
        ("6.1.90", None),
        ("5.4.200", None),
        ("6.9.1", None),
        ("6.7.3", Some(Status::Affected)),
    ] {
        let req = ScanRequest {
            snapshot: snap.clone(),
            cargo_locks: Vec::new(),
            sboms: Vec::new(),
            kernel_version: Some(kernel.into()),
            patch_dirs: Vec::new(),
            kernel_config: None,
            vex: Vec::new(),
            baseline: None,
            policy: Policy::default(),
            now: datetime!(2026-11-25 12:00 UTC),
        };
        let rep = run_scan(&req).unwrap();
        let got = rep.findings.first().map(|f| f.status);
        assert_eq!(got, expect, "kernel {kernel}: {:?}", rep.findings);
    }
}

/// A kernel CVE in a driver we do not build is "not affected", with the CONFIG_ symbol as reason.
#[test]
fn kernel_config_rules_out_unbuilt_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("linux");
    common::write(&src.join("drivers/Makefile"), "obj-y += net/\n");
    common::write(
        &src.join("drivers/net/Makefile"),
        "obj-$(CONFIG_NET_VENDOR_FOO) += foo/\nobj-y += loopback.o\n",
    );
    common::write(
        &src.join("drivers/net/foo/Makefile"),
        "obj-$(CONFIG_FOO_ETH) += fooeth.o\nfooeth-y := main.o \\\n\tring.o\n",
    );
    let cve5 = dir.path().join("cve5");
    for (id, file) in [
        ("CVE-2024-4000", "drivers/net/foo/ring.c"),
        ("CVE-2024-4001", "drivers/net/loopback.c"),
    ] {
        common::write_json(
            &cve5.join(format!("{id}.json")),
            &serde_json::json!({
                "cveMetadata": {"cveId": id, "state": "PUBLISHED", "dateUpdated": "2026-11-24T00:00:00Z"},
                "containers": {"cna": {"affected": [{"product": "Linux", "vendor": "Linux", "defaultStatus": "affected",
                    "programFiles": [file],
                    "versions": [{"version": "6.6.30", "lessThanOrEqual": "6.6.*", "status": "unaffected", "versionType": "semver"}]}]}}
            }),
        );
    }
    let snap = dir.path().join("s.jsonl");
    db::build(
        &BuildInput {
            sources: vec![(SourceKind::Cve5, cve5)],
            created: "2026-11-25T00:00:00Z".into(),
        },
        &snap,
    )
    .unwrap();
    let config = dir.path().join(".config");
    for (text, expect) in [
        (
            "CONFIG_NET_VENDOR_FOO=y\n# CONFIG_FOO_ETH is not set\n",
            Status::NotAffected,
        ),
        (
            "CONFIG_NET_VENDOR_FOO=y\nCONFIG_FOO_ETH=m\n",
            Status::Affected,
        ),
    ] {
        common::write(&config, text);
        let req = ScanRequest {
            snapshot: snap.clone(),
            cargo_locks: Vec::new(),
            sboms: Vec::new(),
            kernel_version: Some("6.6.21".into()),
            patch_dirs: Vec::new(),
            kernel_config: Some((config.clone(), src.clone())),
            vex: Vec::new(),
            baseline: None,
            policy: Policy::default(),
            now: datetime!(2026-11-25 12:00 UTC),
        };
        let rep = run_scan(&req).unwrap();
        let s = statuses(&rep);
        assert_eq!(
            s[&key("CVE-2024-4000", "linux")],
            expect,
            "{:?}",
            rep.findings
        );
        // loopback.o is built unconditionally: always affected.
        assert_eq!(s[&key("CVE-2024-4001", "linux")], Status::Affected);
        if expect == Status::NotAffected {
            let f = rep
                .findings
                .iter()
                .find(|f| f.id == "CVE-2024-4000")
                .unwrap();
            assert!(
                f.reasons
                    .iter()
                    .any(|r| r.contains("drivers/net/foo/ring.c needs CONFIG_FOO_ETH")),
                "{f:?}"
            );
        }
    }
}
