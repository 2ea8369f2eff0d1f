//! Generates benchmark inputs in the real formats: NVD CVE API 2.0 pages with `--records` CVEs
//! (default 300,000), OSV crates.io records, a RustSec advisory-db tree, and a Yocto SPDX 3 SBOM
//! with `--packages` recipes (default 1,000). `ci/cve-bench.sh` times `spark-cve db build` and
//! `spark-cve scan` on them. Deterministic: the same arguments give the same files.
//!
//! ```text
//! cargo run --release -p spark-cve --example bench -- --out DIR [--records N] [--packages N]
//! ```

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// Products in the CVE data; the SBOM ships every `STRIDE`-th one.
const PRODUCTS: u64 = 20_000;
const STRIDE: u64 = 20;
const PAGE: u64 = 2_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: plenty for test data, and reproducible.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn product(i: u64) -> (String, String) {
    (format!("vendor{}", i % 5_000), format!("product{i}"))
}

fn cpe_match(vendor: &str, product: &str, rng: &mut Rng, vulnerable: bool) -> Value {
    let mut m = json!({
        "vulnerable": vulnerable,
        "criteria": format!("cpe:2.3:a:{vendor}:{product}:*:*:*:*:*:*:*:*"),
        "matchCriteriaId": format!("{:08X}-0000-0000-0000-000000000000", rng.below(1 << 32)),
    });
    if rng.below(4) != 0 {
        m["versionStartIncluding"] = json!(format!("1.{}.0", rng.below(5)));
    }
    m["versionEndExcluding"] = json!(format!("1.{}.{}", rng.below(12), rng.below(20)));
    m
}

fn cve(n: u64, rng: &mut Rng) -> Value {
    let p = rng.below(PRODUCTS);
    let (vendor, prod) = product(p);
    let mut nodes = vec![json!({"operator": "OR", "negate": false,
        "cpeMatch": [cpe_match(&vendor, &prod, rng, true)]})];
    let mut cfg = json!({"nodes": []});
    // One CVE in ten needs a platform too ("… running on Linux").
    if rng.below(10) == 0 {
        cfg["operator"] = json!("AND");
        nodes.push(json!({"operator": "OR", "negate": false, "cpeMatch": [{
            "vulnerable": false, "criteria": "cpe:2.3:o:linux:linux_kernel:*:*:*:*:*:*:*:*",
            "matchCriteriaId": "00000000-0000-0000-0000-000000000001"}]}));
    }
    cfg["nodes"] = json!(nodes);
    let score = (rng.below(100) as f64) / 10.0;
    json!({"cve": {
        "id": format!("CVE-{}-{:05}", 2000 + n % 26, n),
        "sourceIdentifier": "cve@mitre.org",
        "published": "2024-01-01T00:00:00.000",
        "lastModified": "2026-11-20T00:00:00.000",
        "vulnStatus": "Analyzed",
        "descriptions": [{"lang": "en", "value": format!("Generated vulnerability {n} in {prod}: a buffer overflow allows remote attackers to execute code via crafted input.")}],
        "metrics": {"cvssMetricV31": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": {
            "version": "3.1", "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "baseScore": score, "baseSeverity": "HIGH"}}]},
        "configurations": [cfg]
    }})
}

fn write(path: &Path, v: &Value) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    let f = std::fs::File::create(path).expect("create");
    let mut w = BufWriter::new(f);
    serde_json::to_writer(&mut w, v).expect("write");
    w.flush().expect("flush");
}

fn main() {
    let mut out = None;
    let mut records = 300_000u64;
    let mut packages = 1_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().expect("flag needs a value");
        match a.as_str() {
            "--out" => out = Some(PathBuf::from(val())),
            "--records" => records = val().parse().expect("--records N"),
            "--packages" => packages = val().parse().expect("--packages N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let out = out.expect("--out DIR");
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);

    let mut page = 0;
    let mut n = 0;
    while n < records {
        let count = PAGE.min(records - n);
        let vulns: Vec<Value> = (n..n + count).map(|i| cve(i, &mut rng)).collect();
        write(
            &out.join(format!("nvd/page-{page:04}.json")),
            &json!({"resultsPerPage": count, "startIndex": n, "totalResults": records,
                "format": "NVD_CVE", "version": "2.0", "timestamp": "2026-11-20T00:00:00.000",
                "vulnerabilities": vulns}),
        );
        n += count;
        page += 1;
    }
    for i in 0..1_000u64 {
        let name = format!("crate{}", i % 400);
        write(
            &out.join(format!("osv/GHSA-bench-{i:04}.json")),
            &json!({"id": format!("GHSA-bench-{i:04}"), "modified": "2026-11-20T00:00:00Z",
                "summary": "generated", "affected": [{"package": {"ecosystem": "crates.io", "name": name},
                "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": format!("0.{}.0", rng.below(9) + 1)}]}]}],
                "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]}),
        );
    }
    for i in 0..500u64 {
        let name = format!("crate{}", i % 400);
        let path = out.join(format!("advisory-db/crates/{name}/RUSTSEC-2026-{i:04}.md"));
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(
            path,
            format!(
                "```toml\n[advisory]\nid = \"RUSTSEC-2026-{i:04}\"\npackage = \"{name}\"\ndate = \"2026-11-20\"\n\
                 cvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\"\n\n[versions]\npatched = [\">= 0.{}.0\"]\n```\n\n# Generated\n",
                rng.below(9) + 1
            ),
        )
        .expect("write advisory");
    }
    let mut graph = vec![
        json!({"type": "CreationInfo", "@id": "_:c", "specVersion": "3.0.1",
        "created": "2026-11-25T00:00:00Z"}),
    ];
    for i in 0..packages {
        let (vendor, prod) = product(i * STRIDE % PRODUCTS);
        let version = format!("1.{}.{}", rng.below(12), rng.below(20));
        graph.push(
            json!({"type": "software_Package", "spdxId": format!("urn:bench:pkg{i}"),
            "creationInfo": "_:c", "name": prod, "software_packageVersion": version,
            "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cpe23",
                "identifier": format!("cpe:2.3:a:{vendor}:{prod}:{version}:*:*:*:*:*:*:*")}]}),
        );
    }
    graph.push(
        json!({"type": "software_Package", "spdxId": "urn:bench:kernel", "creationInfo": "_:c",
        "name": "linux-yocto", "software_packageVersion": "6.6.21",
        "externalIdentifier": [{"type": "ExternalIdentifier", "externalIdentifierType": "cpe23",
            "identifier": "cpe:2.3:o:linux:linux_kernel:6.6.21:*:*:*:*:*:*:*"}]}),
    );
    write(
        &out.join("sbom.spdx.json"),
        &json!({"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld", "@graph": graph}),
    );
    let mut lock = String::from("version = 4\n");
    for i in 0..400u64 {
        lock.push_str(&format!(
            "\n[[package]]\nname = \"crate{i}\"\nversion = \"0.{}.{}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
            rng.below(10),
            rng.below(5)
        ));
    }
    std::fs::write(out.join("Cargo.lock"), lock).expect("write Cargo.lock");
    eprintln!(
        "bench data in {}: {records} NVD records in {page} pages, 1000 OSV, 500 RustSec, {packages}+1 SBOM packages, 400 crates",
        out.display()
    );
}
