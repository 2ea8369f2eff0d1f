//! The `spark-cve` binary: exit codes (0 clean, 1 findings, 2 bad input, 3 stale snapshot),
//! error messages that name the file, and `db build` / `db info`.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn spark_cve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spark-cve"))
        .args(args)
        .output()
        .unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn exit_codes_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let [nvd, cve5, osv, rustsec] = common::write_sources(&dir.path().join("sources"));
    let snap = dir.path().join("snap.jsonl");
    let out = spark_cve(&[
        "db",
        "build",
        "--nvd",
        p(&nvd),
        "--cve5",
        p(&cve5),
        "--osv",
        p(&osv),
        "--rustsec",
        p(&rustsec),
        "--date",
        "2026-11-23",
        "-o",
        p(&snap),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = spark_cve(&["db", "info", p(&snap)]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("\"advisories\": 12"));

    let (lock, sbom) = common::write_inventory(dir.path());
    let json = dir.path().join("report.json");
    let sarif = dir.path().join("report.sarif");
    let base = [
        "scan",
        "--db",
        p(&snap),
        "--cargo-lock",
        p(&lock),
        "--sbom",
        p(&sbom),
        "--now",
        "2026-11-25",
    ];
    let reports = [
        "--report".to_string(),
        format!("json={}", p(&json)),
        "--report".to_string(),
        format!("sarif={}", p(&sarif)),
    ];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(reports.iter().map(String::as_str));
    let out = spark_cve(&args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
    assert!(json.exists() && sarif.exists());

    let mut relaxed = base.to_vec();
    relaxed.extend(["--fail-cvss", "10"]);
    assert_eq!(spark_cve(&relaxed).status.code(), Some(0));

    let mut stale = base.to_vec();
    stale.extend(["--max-age-days", "3"]);
    let out = spark_cve(&stale);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("STALE"));

    // Bad input: exit 2, and the message names the file and the place.
    let bad = dir.path().join("broken.spdx.json");
    common::write(
        &bad,
        "{\"@context\": \"https://spdx.org/rdf/3.0.1/spdx-context.jsonld\",\n\"@graph\": [ {\"type\": ",
    );
    let out = spark_cve(&["scan", "--db", p(&snap), "--sbom", p(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");

    let cut = dir.path().join("cut.jsonl");
    let bytes = std::fs::read(&snap).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = spark_cve(&["scan", "--db", p(&cut), "--cargo-lock", p(&lock)]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.jsonl") && err.contains("truncated"),
        "{err}"
    );

    let out = spark_cve(&["scan", "--db", p(&snap)]);
    assert_eq!(out.status.code(), Some(2));
}

/// The policy and triage files the release pipeline (ci/release.gitlab-ci.yml) uses must parse.
#[test]
fn release_pipeline_config_and_triage_files_parse() {
    let ci = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let c = spark_cve::report::Config::load(&ci.join("spark-cve.toml")).unwrap();
    assert_eq!(c.policy.fail_cvss, 7.0);
    spark_cve::triage::read_vex(&ci.join("triage/spark.openvex.json")).unwrap();
}
