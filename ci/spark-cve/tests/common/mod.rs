//! Fixtures in the real formats, written by the tests themselves: NVD CVE API 2.0 pages, CVE 5
//! records, OSV records, a RustSec advisory-db tree, Yocto SBOMs (SPDX 3, SPDX 2.2, cve-check),
//! a Cargo.lock and VEX files. Shared by the test binaries (not all use every helper).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

pub fn write_json(path: &Path, v: &Value) {
    write(path, &serde_json::to_string_pretty(v).unwrap());
}

fn nvd_cve(id: &str, modified: &str, score: f64, configurations: Value) -> Value {
    json!({"cve": {
        "id": id,
        "sourceIdentifier": "secalert@example.org",
        "published": "2024-01-10T10:15:00.000",
        "lastModified": modified,
        "vulnStatus": "Analyzed",
        "descriptions": [{"lang": "en", "value": format!("Fixture vulnerability {id}.")}],
        "metrics": {"cvssMetricV31": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": {
            "version": "3.1", "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "baseScore": score, "baseSeverity": "CRITICAL"}}]},
        "configurations": configurations
    }})
}

fn simple_config(criteria: &str, end_excluding: &str) -> Value {
    json!([{"nodes": [{"operator": "OR", "negate": false, "cpeMatch": [{
        "vulnerable": true, "criteria": criteria, "versionEndExcluding": end_excluding,
        "matchCriteriaId": "00000000-0000-0000-0000-000000000000"}]}]}])
}

/// Writes the vulnerability sources; returns (nvd dir, cve5 dir, osv dir, rustsec dir).
pub fn write_sources(root: &Path) -> [PathBuf; 4] {
    let nvd = root.join("nvd");
    let page = json!({
        "resultsPerPage": 6, "startIndex": 0, "totalResults": 6,
        "format": "NVD_CVE", "version": "2.0", "timestamp": "2026-11-20T08:00:00.000",
        "vulnerabilities": [
            // busybox before 1.36.2: affects our 1.36.1.
            nvd_cve("CVE-2024-0001", "2026-11-19T10:00:00.000", 9.8,
                simple_config("cpe:2.3:a:busybox:busybox:*:*:*:*:*:*:*:*", "1.36.2")),
            // busybox again, but the SBOM's VEX says fixed (a CVE patch).
            nvd_cve("CVE-2024-0002", "2026-11-18T10:00:00.000", 7.5,
                simple_config("cpe:2.3:a:busybox:busybox:*:*:*:*:*:*:*:*", "1.37.0")),
            // openssl, but only when running on Windows: AND with a platform we do not ship.
            nvd_cve("CVE-2024-0003", "2026-11-17T10:00:00.000", 8.1, json!([{
                "operator": "AND",
                "nodes": [
                    {"operator": "OR", "negate": false, "cpeMatch": [{"vulnerable": true,
                        "criteria": "cpe:2.3:a:openssl:openssl:*:*:*:*:*:*:*:*",
                        "versionStartIncluding": "3.0.0", "versionEndExcluding": "3.0.14"}]},
                    {"operator": "OR", "negate": false, "cpeMatch": [{"vulnerable": false,
                        "criteria": "cpe:2.3:o:microsoft:windows:-:*:*:*:*:*:*:*"}]}
                ]}])),
            // zlib, whose SBOM version cannot be compared honestly: undecidable.
            // (1.3.1+git… may equal 1.3.1 or come after it: "up to and including 1.3.1" cannot
            // be answered.)
            nvd_cve("CVE-2024-0004", "2026-11-16T10:00:00.000", 9.1, json!([{"nodes": [{
                "operator": "OR", "negate": false, "cpeMatch": [{"vulnerable": true,
                "criteria": "cpe:2.3:a:zlib:zlib:*:*:*:*:*:*:*:*", "versionEndIncluding": "1.3.1"}]}]}])),
            // the kernel: affected below 6.6.30.
            nvd_cve("CVE-2024-0005", "2026-11-15T10:00:00.000", 5.5,
                simple_config("cpe:2.3:o:linux:linux_kernel:*:*:*:*:*:*:*:*", "6.6.30")),
            // openssl 3.0.x before 3.0.14 on any platform: affects us; a CycloneDX statement
            // for it has expired.
            nvd_cve("CVE-2024-0006", "2026-11-14T10:00:00.000", 7.4,
                simple_config("cpe:2.3:a:openssl:openssl:*:*:*:*:*:*:*:*", "3.0.14")),
        ]
    });
    write_json(&nvd.join("nvdcve-2.0-page-0.json"), &page);

    let cve5 = root.join("cvelistV5");
    // Not yet analysed by NVD: only the CNA's affected data says curl < 8.5.0.
    write_json(
        &cve5.join("cves/2024/1xxx/CVE-2024-1000.json"),
        &json!({
            "dataType": "CVE_RECORD", "dataVersion": "5.1",
            "cveMetadata": {"cveId": "CVE-2024-1000", "assignerOrgId": "00000000-0000-0000-0000-000000000000",
                "state": "PUBLISHED", "datePublished": "2024-02-01T00:00:00.000Z", "dateUpdated": "2026-11-21T00:00:00.000Z"},
            "containers": {"cna": {
                "providerMetadata": {"orgId": "00000000-0000-0000-0000-000000000000"},
                "descriptions": [{"lang": "en", "value": "curl fixture vulnerability."}],
                "affected": [{"vendor": "haxx", "product": "curl", "defaultStatus": "unaffected",
                    "versions": [{"version": "7.0.0", "lessThan": "8.5.0", "status": "affected", "versionType": "semver"}]}],
                "metrics": [{"cvssV3_1": {"version": "3.1", "baseScore": 8.8, "baseSeverity": "HIGH",
                    "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H"}}]
            }}
        }),
    );
    // A rejected record is left out.
    write_json(
        &cve5.join("cves/2024/1xxx/CVE-2024-1001.json"),
        &json!({
            "dataType": "CVE_RECORD", "dataVersion": "5.1",
            "cveMetadata": {"cveId": "CVE-2024-1001", "state": "REJECTED", "dateUpdated": "2026-11-21T00:00:00.000Z"},
            "containers": {"cna": {"rejectedReasons": [{"lang": "en", "value": "duplicate"}]}}
        }),
    );

    let osv = root.join("osv");
    // The same smallvec advisory as RustSec's, plus a GHSA alias record: one finding.
    write_json(
        &osv.join("crates.io/GHSA-43w2-9j62-hq99.json"),
        &json!({
            "schema_version": "1.6.0", "id": "GHSA-43w2-9j62-hq99", "modified": "2026-11-22T00:00:00Z",
            "published": "2021-08-25T00:00:00Z", "aliases": ["RUSTSEC-2021-0003", "CVE-2021-25900"],
            "summary": "Buffer overflow in SmallVec::insert_many",
            "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec", "purl": "pkg:cargo/smallvec"},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0.6.3"}, {"fixed": "0.6.14"}, {"introduced": "1.0.0"}, {"fixed": "1.6.1"}]}]}],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]
        }),
    );
    write_json(
        &osv.join("linux/CVE-2024-2000.json"),
        &json!({
            "id": "CVE-2024-2000", "modified": "2026-11-22T00:00:00Z",
            "summary": "kernel fixture: net: fix use-after-free",
            "affected": [{"package": {"ecosystem": "Linux", "name": "Kernel"},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "6.6.0"}, {"fixed": "6.6.25"}]},
                           {"type": "GIT", "repo": "https://example.invalid/linux.git", "events": [{"introduced": "0"}, {"fixed": "abc123"}]}]}],
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"}]
        }),
    );
    // Another ecosystem: skipped.
    write_json(
        &osv.join("pypi/PYSEC-2024-1.json"),
        &json!({
            "id": "PYSEC-2024-1", "modified": "2026-11-22T00:00:00Z",
            "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"}, "versions": ["2.0.0"]}]
        }),
    );

    let rustsec = root.join("advisory-db");
    write(
        &rustsec.join("crates/smallvec/RUSTSEC-2021-0003.md"),
        r#"```toml
[advisory]
id = "RUSTSEC-2021-0003"
package = "smallvec"
date = "2021-01-08"
url = "https://github.com/servo/rust-smallvec/issues/252"
categories = ["memory-corruption"]
keywords = ["buffer-overflow", "heap-overflow"]
aliases = ["CVE-2021-25900", "GHSA-43w2-9j62-hq99"]
cvss = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"

[versions]
patched = [">= 0.6.14, < 1.0.0", ">= 1.6.1"]
unaffected = ["< 0.6.3"]
```

# Buffer overflow in SmallVec::insert_many

A bug in the SmallVec::insert_many method caused it to allocate a buffer that was smaller than needed.
"#,
    );
    // Our `time` is newer than the patched version: not a finding.
    write(
        &rustsec.join("crates/time/RUSTSEC-2020-0071.md"),
        r#"```toml
[advisory]
id = "RUSTSEC-2020-0071"
package = "time"
date = "2020-11-18"
aliases = ["CVE-2020-26235", "GHSA-wcg3-cvx6-7396"]
cvss = "CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H"

[versions]
patched = [">= 0.2.23"]
unaffected = ["= 0.2.0", "= 0.2.1", "= 0.2.2", "= 0.2.3", "= 0.2.4", "= 0.2.5", "= 0.2.6"]
```

# Potential segfault in the time crate
"#,
    );
    // Informational: a warning, never a gate failure.
    write(
        &rustsec.join("crates/ansi_term/RUSTSEC-2021-0139.md"),
        r#"```toml
[advisory]
id = "RUSTSEC-2021-0139"
package = "ansi_term"
date = "2026-11-20"
informational = "unmaintained"

[versions]
patched = []
```

# ansi_term is Unmaintained
"#,
    );
    // Withdrawn: left out.
    write(
        &rustsec.join("crates/time/RUSTSEC-2099-0001.md"),
        r#"```toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "time"
date = "2099-01-01"
withdrawn = "2099-01-02"

[versions]
patched = []
```

# Withdrawn
"#,
    );
    [nvd, cve5, osv, rustsec]
}

/// The inventory: a Cargo.lock and a Yocto 6.0 SPDX 3 SBOM.
pub fn write_inventory(root: &Path) -> (PathBuf, PathBuf) {
    let lock = root.join("Cargo.lock");
    write(
        &lock,
        r#"# This file is automatically @generated by Cargo.
version = 4

[[package]]
name = "ansi_term"
version = "0.12.1"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "spark-meterd"
version = "0.1.0"
dependencies = ["ansi_term", "smallvec", "time"]

[[package]]
name = "time"
version = "0.3.44"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#,
    );
    let sbom = root.join("spark-image-bbb.spdx.json");
    write_json(&sbom, &spdx3());
    (lock, sbom)
}

fn pkg(id: &str, name: &str, version: Option<&str>, cpe: Option<&str>) -> Value {
    let mut p = json!({
        "type": "software_Package", "spdxId": id, "creationInfo": "_:CreationInfo1",
        "name": name, "software_primaryPurpose": "install"
    });
    if let Some(v) = version {
        p["software_packageVersion"] = json!(v);
    }
    if let Some(c) = cpe {
        p["externalIdentifier"] = json!([{"type": "ExternalIdentifier", "externalIdentifierType": "cpe23", "identifier": c}]);
    }
    p
}

/// SPDX 3.0.1 JSON-LD as Yocto's spdx30_tasks writes it (trimmed to what matters).
pub fn spdx3() -> Value {
    let ns = "http://spdx.org/spdxdocs/spark-image-bbb-0000";
    let id = |s: &str| format!("{ns}/{s}");
    json!({
        "@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld",
        "@graph": [
            {"type": "CreationInfo", "@id": "_:CreationInfo1", "specVersion": "3.0.1", "created": "2026-11-25T00:00:00Z",
             "createdBy": [id("agent/OpenEmbedded")]},
            {"type": "SpdxDocument", "spdxId": id("document"), "creationInfo": "_:CreationInfo1", "name": "spark-image-bbb"},
            pkg(&id("package/busybox"), "busybox", Some("1.36.1"), Some("cpe:2.3:a:busybox:busybox:1.36.1:*:*:*:*:*:*:*")),
            pkg(&id("package/busybox-syslog"), "busybox-syslog", Some("1.36.1"), None),
            pkg(&id("package/openssl"), "openssl", Some("3.0.13"), Some("cpe:2.3:a:openssl:openssl:3.0.13:*:*:*:*:*:*:*")),
            pkg(&id("package/zlib"), "zlib", Some("1.3.1+gitAUTOINC+c9a1bd4bd8"), Some("cpe:2.3:a:zlib:zlib:1.3.1\\+gitAUTOINC\\+c9a1bd4bd8:*:*:*:*:*:*:*")),
            pkg(&id("package/curl"), "curl", Some("8.4.0"), Some("cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*")),
            pkg(&id("package/linux-yocto"), "linux-yocto", Some("6.6.21"), Some("cpe:2.3:o:linux:linux_kernel:6.6.21:*:*:*:*:*:*:*")),
            {"type": "software_Package", "spdxId": id("package/crate-smallvec"), "creationInfo": "_:CreationInfo1",
             "name": "smallvec", "software_downloadLocation": "crate://crates.io/smallvec"},
            {"type": "software_File", "spdxId": id("file/CVE-2024-0002.patch"), "creationInfo": "_:CreationInfo1",
             "name": "CVE-2024-0002.patch", "software_primaryPurpose": "patch"},
            {"type": "security_Vulnerability", "spdxId": id("vuln/CVE-2024-0002"), "creationInfo": "_:CreationInfo1",
             "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cve", "identifier": "CVE-2024-0002",
                "identifierLocator": ["https://cveawg.mitre.org/api/cve/CVE-2024-0002"]}]},
            {"type": "security_VexFixedVulnAssessmentRelationship", "spdxId": id("vex/fixed-CVE-2024-0002"),
             "creationInfo": "_:CreationInfo1", "relationshipType": "fixedIn",
             "from": id("vuln/CVE-2024-0002"), "to": [id("package/busybox")], "security_vexVersion": "1.0.0"},
            {"type": "Relationship", "spdxId": id("rel/patched-CVE-2024-0002"), "creationInfo": "_:CreationInfo1",
             "relationshipType": "patchedBy", "from": id("vuln/CVE-2024-0002"), "to": [id("file/CVE-2024-0002.patch")]},
            {"type": "security_Vulnerability", "spdxId": id("vuln/CVE-2024-0005"), "creationInfo": "_:CreationInfo1",
             "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cve", "identifier": "CVE-2024-0005"}]},
            {"type": "security_VexNotAffectedVulnAssessmentRelationship", "spdxId": id("vex/na-CVE-2024-0005"),
             "creationInfo": "_:CreationInfo1", "relationshipType": "doesNotAffect",
             "from": id("vuln/CVE-2024-0005"), "to": [id("package/linux-yocto")],
             "security_justificationType": "componentNotPresent",
             "security_impactStatement": "CVE_STATUS: not-applicable-config: driver not built"}
        ]
    })
}

/// OpenVEX: curl's CVE triaged not_affected until 2099 (valid), smallvec's until 2020 (expired).
pub fn write_openvex(root: &Path) -> PathBuf {
    let p = root.join("triage.openvex.json");
    write_json(
        &p,
        &json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "https://example.invalid/spark/vex/1",
            "author": "security@spark.example",
            "timestamp": "2026-11-01T00:00:00Z",
            "version": 1,
            "statements": [
                {"vulnerability": {"name": "CVE-2024-1000"}, "products": [{"@id": "pkg:yocto/meta/curl@8.4.0"}],
                 "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
                 "owner": "alice", "expires": "2099-12-31"},
                {"vulnerability": {"name": "RUSTSEC-2021-0003"}, "products": ["pkg:cargo/smallvec@1.6.0"],
                 "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path",
                 "owner": "bob", "expires": "2020-01-01"}
            ]
        }),
    );
    p
}

/// CycloneDX VEX: openssl's CVE-2024-0006 triaged for a version we no longer ship.
pub fn write_cyclonedx(root: &Path) -> PathBuf {
    let p = root.join("triage.cdx.json");
    write_json(
        &p,
        &json!({
            "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
            "components": [{"bom-ref": "openssl-old", "type": "library", "name": "openssl", "version": "3.0.12", "purl": "pkg:yocto/meta/openssl@3.0.12"}],
            "vulnerabilities": [{
                "id": "CVE-2024-0006",
                "analysis": {"state": "not_affected", "justification": "code_not_reachable", "detail": "no TLS server"},
                "affects": [{"ref": "openssl-old"}],
                "properties": [{"name": "spark:owner", "value": "carol"}, {"name": "spark:expires", "value": "2099-01-01"}]
            }]
        }),
    );
    p
}
