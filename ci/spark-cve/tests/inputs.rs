//! Inventory readers on inputs shaped like Yocto's: SPDX 3 (Yocto 6.0), SPDX 2.2 (Yocto 5.0),
//! the cve-check JSON manifest, and errors that name the file and place.

mod common;

use serde_json::json;
use spark_cve::inventory::{Inventory, SbomFormat};
use spark_cve::model::{Origin, SbomStatus};

#[test]
fn spdx3_components_vex_and_patches() {
    let dir = tempfile::tempdir().unwrap();
    let (lock, sbom) = common::write_inventory(dir.path());
    let mut inv = Inventory::default();
    assert_eq!(inv.add_sbom(&sbom).unwrap(), SbomFormat::Spdx3);
    let names: Vec<&str> = inv.components.iter().map(|c| c.name.as_str()).collect();
    // busybox-syslog (a binary package without CPE) is not a component; the crate is, unversioned.
    assert_eq!(
        names,
        [
            "busybox",
            "openssl",
            "zlib",
            "curl",
            "linux-yocto",
            "smallvec"
        ]
    );
    let busybox = &inv.components[0];
    assert_eq!(busybox.patches, ["CVE-2024-0002.patch"]);
    assert_eq!(busybox.evidence["CVE-2024-0002"].status, SbomStatus::Fixed);
    let kernel = &inv.components[4];
    assert_eq!(kernel.origin, Origin::Kernel);
    assert_eq!(
        kernel.evidence["CVE-2024-0005"].status,
        SbomStatus::NotAffected
    );
    assert!(
        kernel.evidence["CVE-2024-0005"]
            .detail
            .contains("componentNotPresent")
    );
    assert_eq!(inv.components[5].origin, Origin::Crate);
    assert_eq!(inv.components[5].version, None);
    // Cargo.lock supplies the version: the unversioned SBOM crate is dropped.
    inv.add_cargo_lock(&lock).unwrap();
    inv.finish();
    let smallvecs: Vec<_> = inv
        .components
        .iter()
        .filter(|c| c.name == "smallvec")
        .collect();
    assert_eq!(smallvecs.len(), 1);
    assert_eq!(smallvecs[0].version.as_deref(), Some("1.6.0"));
}

#[test]
fn spdx22_recipe_with_cves_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("recipe-busybox.spdx.json");
    common::write_json(
        &p,
        &json!({
            "SPDXID": "SPDXRef-DOCUMENT", "spdxVersion": "SPDX-2.2", "dataLicense": "CC0-1.0",
            "name": "recipe-busybox", "documentNamespace": "http://spdx.org/spdxdoc/recipe-busybox-0000",
            "creationInfo": {"created": "2024-05-01T00:00:00Z", "creators": ["Tool: OpenEmbedded Core create-spdx.bbclass"]},
            "packages": [
                {"SPDXID": "SPDXRef-Recipe-busybox", "name": "busybox", "versionInfo": "1.36.1",
                 "downloadLocation": "NOASSERTION", "licenseConcluded": "NOASSERTION",
                 "externalRefs": [{"referenceCategory": "SECURITY", "referenceType": "cpe23Type",
                    "referenceLocator": "cpe:2.3:a:busybox:busybox:1.36.1:*:*:*:*:*:*:*"}],
                 "sourceInfo": "CVEs fixed: CVE-2022-28391 CVE-2022-30065"},
                {"SPDXID": "SPDXRef-Package-busybox-syslog", "name": "busybox-syslog", "versionInfo": "1.36.1",
                 "downloadLocation": "NOASSERTION"}
            ]
        }),
    );
    let mut inv = Inventory::default();
    assert_eq!(inv.add_sbom(&p).unwrap(), SbomFormat::Spdx2);
    assert_eq!(inv.components.len(), 1);
    let c = &inv.components[0];
    assert_eq!(c.label(), "busybox@1.36.1");
    assert_eq!(
        c.evidence.keys().collect::<Vec<_>>(),
        ["CVE-2022-28391", "CVE-2022-30065"]
    );
}

#[test]
fn cve_check_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cve-summary.json");
    common::write_json(
        &p,
        &json!({"version": "1", "package": [
            {"name": "openssl", "layer": "meta", "version": "3.0.13",
             "products": [{"product": "openssl", "cvesInRecord": "Yes"}],
             "issue": [
                {"id": "CVE-2023-0464", "status": "Patched", "detail": "backported-patch", "link": "https://nvd.nist.gov/vuln/detail/CVE-2023-0464"},
                {"id": "CVE-2023-6129", "status": "Ignored", "detail": "not-applicable-platform"},
                {"id": "CVE-2024-0727", "status": "Unpatched", "detail": "version-in-range"}]},
            {"name": "libgcrypt", "layer": "meta", "version": "1.10.3",
             "products": [{"product": "gnupg:libgcrypt", "cvesInRecord": "No"}], "issue": []}
        ]}),
    );
    let mut inv = Inventory::default();
    assert_eq!(inv.add_sbom(&p).unwrap(), SbomFormat::CveCheck);
    let o = &inv.components[0];
    assert_eq!(o.cpes, ["cpe:2.3:a:*:openssl:3.0.13:*:*:*:*:*:*:*"]);
    assert_eq!(o.evidence["CVE-2023-0464"].status, SbomStatus::Fixed);
    assert_eq!(o.evidence["CVE-2023-6129"].status, SbomStatus::NotAffected);
    assert_eq!(o.evidence["CVE-2024-0727"].status, SbomStatus::Affected);
    assert_eq!(
        inv.components[1].cpes,
        ["cpe:2.3:a:gnupg:libgcrypt:1.10.3:*:*:*:*:*:*:*"]
    );
}

#[test]
fn bad_inputs_name_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let mut inv = Inventory::default();

    let truncated = dir.path().join("image.spdx.json");
    common::write(
        &truncated,
        "{\n  \"@context\": \"https://spdx.org/rdf/3.0.1/spdx-context.jsonld\",\n  \"@graph\": [\n",
    );
    let e = inv.add_sbom(&truncated).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:4:", truncated.display())), "{e}");

    let unknown = dir.path().join("bom.json");
    common::write(&unknown, "{\"hello\": 1}");
    let e = inv.add_sbom(&unknown).unwrap_err().to_string();
    assert!(e.contains("bom.json: unknown format"), "{e}");

    let bad_vex = dir.path().join("x.spdx.json");
    common::write_json(
        &bad_vex,
        &json!({"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": [
        {"type": "security_VexFixedVulnAssessmentRelationship", "from": "urn:nope", "to": ["urn:pkg"]}]}),
    );
    let e = inv.add_sbom(&bad_vex).unwrap_err().to_string();
    assert!(
        e.contains("x.spdx.json: /@graph/0/from: urn:nope is not a security_Vulnerability"),
        "{e}"
    );

    let bad_status = dir.path().join("cve.json");
    common::write_json(
        &bad_status,
        &json!({"package": [{"name": "a", "issue": [{"id": "CVE-1", "status": "Maybe"}]}]}),
    );
    let e = inv.add_sbom(&bad_status).unwrap_err().to_string();
    assert!(
        e.contains("cve.json: /package/0/issue/0/status: unknown status \"Maybe\""),
        "{e}"
    );

    let vex = dir.path().join("t.openvex.json");
    common::write_json(
        &vex,
        &json!({"@context": "https://openvex.dev/ns/v0.2.0", "author": "a",
        "statements": [{"vulnerability": {"name": "CVE-1"}, "products": ["x"], "status": "not_affected"}]}),
    );
    let e = spark_cve::triage::read_vex(&vex).unwrap_err().to_string();
    assert!(
        e.contains("t.openvex.json: /statements/0/expires: no expiry"),
        "{e}"
    );
}

#[test]
fn patch_dir_cve_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (_, sbom) = common::write_inventory(dir.path());
    let patches = dir.path().join("patches");
    common::write(
        &patches.join("openssl/0001-fix-x509.patch"),
        "From 1234 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] fix x509\n\nUpstream-Status: Backport\nCVE: CVE-2024-0006 CVE-2024-0007\n---\n",
    );
    common::write(&patches.join("openssl/CVE-2024-0008.patch"), "no header\n");
    let mut inv = Inventory::default();
    inv.add_sbom(&sbom).unwrap();
    inv.add_patch_dir(&patches).unwrap();
    let o = inv.components.iter().find(|c| c.name == "openssl").unwrap();
    assert_eq!(o.patches, ["0001-fix-x509.patch", "CVE-2024-0008.patch"]);
    let fixed: Vec<&str> = o.evidence.keys().map(String::as_str).collect();
    assert_eq!(fixed, ["CVE-2024-0006", "CVE-2024-0007", "CVE-2024-0008"]);
    assert_eq!(
        o.evidence["CVE-2024-0006"].detail,
        "patch 0001-fix-x509.patch (CVE: line)"
    );
}

#[test]
fn duplicate_packages_merge_their_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dup.spdx.json");
    let cpe = "cpe:2.3:a:busybox:busybox:1.36.1:*:*:*:*:*:*:*";
    common::write_json(
        &p,
        &json!({"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": [
            {"type": "software_Package", "spdxId": "urn:a", "name": "busybox", "software_packageVersion": "1.36.1",
             "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cpe23", "identifier": cpe}]},
            {"type": "software_Package", "spdxId": "urn:b", "name": "busybox", "software_packageVersion": "1.36.1",
             "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cpe23", "identifier": cpe}]},
            {"type": "security_Vulnerability", "spdxId": "urn:v", "externalIdentifier": [{"externalIdentifierType": "cve", "identifier": "CVE-2024-0001"}]},
            {"type": "security_VexFixedVulnAssessmentRelationship", "relationshipType": "fixedIn", "from": "urn:v", "to": ["urn:b"]}
        ]}),
    );
    let mut inv = Inventory::default();
    inv.add_sbom(&p).unwrap();
    inv.finish();
    assert_eq!(inv.components.len(), 1);
    assert_eq!(inv.components[0].cpes, [cpe]);
    assert_eq!(
        inv.components[0].evidence["CVE-2024-0001"].status,
        SbomStatus::Fixed
    );
}

/// Yocto 5.0 writes one SPDX 2.2 document per recipe and per package: the same recipe from two
/// documents is one component with the evidence of both.
#[test]
fn same_recipe_from_two_documents_is_one_component() {
    let dir = tempfile::tempdir().unwrap();
    let doc = |name: &str, cpe: bool, fixed: &str| {
        let mut p =
            json!({"SPDXID": "SPDXRef-Recipe-openssl", "name": "openssl", "versionInfo": "3.0.13"});
        if cpe {
            p["externalRefs"] = json!([{"referenceCategory": "SECURITY", "referenceType": "cpe23Type",
                "referenceLocator": "cpe:2.3:a:openssl:openssl:3.0.13:*:*:*:*:*:*:*"}]);
        }
        if !fixed.is_empty() {
            p["sourceInfo"] = json!(format!("CVEs fixed: {fixed}"));
        }
        let path = dir.path().join(name);
        common::write_json(&path, &json!({"spdxVersion": "SPDX-2.2", "packages": [p]}));
        path
    };
    let a = doc("recipe-openssl.spdx.json", true, "CVE-2024-0001");
    let b = doc("openssl.spdx.json", false, "CVE-2024-0002");
    let mut inv = Inventory::default();
    inv.add_sbom(&a).unwrap();
    inv.add_sbom(&b).unwrap();
    inv.finish();
    assert_eq!(inv.components.len(), 1, "{:?}", inv.components);
    let c = &inv.components[0];
    assert_eq!(c.evidence.len(), 2);
    assert!(c.source.contains("recipe-openssl.spdx.json") && c.source.contains(", "));
}
