//! CPE 2.3 formatted strings: parsing, printing, escapes and product matching.

use spark_cve::cpe::{ANY, Cpe, CpeError, NA};

/// Names as NVD writes them: each prints back byte for byte.
const ROUND_TRIP: &[&str] = &[
    "cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*",
    "cpe:2.3:o:linux:linux_kernel:6.2:rc1:*:*:*:*:*:*",
    "cpe:2.3:a:openbsd:openssh:8.9:p1:*:*:*:*:*:*",
    "cpe:2.3:h:ti:am335x:-:*:*:*:*:*:*:*",
    "cpe:2.3:a:hp:insight_diagnostics:7.4.0.1570:-:*:*:online:win2003:x64:*",
    "cpe:2.3:a:nodejs:node.js:*:*:*:*:*:*:*:*",
    "cpe:2.3:a:linux-pam:linux-pam:1.5.2:*:*:*:*:*:*:*",
    "cpe:2.3:a:foo\\:bar:baz\\!:1.0:*:*:*:*:*:*:*",
    "cpe:2.3:a:vendor:product\\(x86\\):1.0:*:*:*:*:*:*:*",
    "cpe:2.3:a:vendor:star\\*name:*:*:*:*:*:*:*:*",
    "cpe:2.3:a:vendor:back\\\\slash:*:*:*:*:*:*:*:*",
    "cpe:2.3:a:vendor:prod*:*:*:*:*:*:*:*:*",
    "cpe:2.3:a:vendor:\\-:*:*:*:*:*:*:*:*",
    "cpe:2.3:*:*:*:*:*:*:*:*:*:*:*",
];

#[test]
fn round_trips() {
    for s in ROUND_TRIP {
        let cpe: Cpe = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(cpe.to_string(), *s);
        let again: Cpe = cpe.to_string().parse().unwrap();
        assert_eq!(again, cpe);
    }
}

#[test]
fn values_are_stored_unescaped_except_wildcard_characters() {
    let cpe: Cpe = "cpe:2.3:a:foo\\:bar:baz\\!:1.0:*:*:*:*:*:*:*"
        .parse()
        .unwrap();
    assert_eq!(cpe.part, 'a');
    assert_eq!(cpe.vendor, "foo:bar");
    assert_eq!(cpe.product, "baz!");
    assert_eq!(cpe.version, "1.0");
    assert_eq!(cpe.update, ANY);

    let cpe: Cpe = "cpe:2.3:a:vendor:star\\*name:-:*:*:*:*:*:*:*"
        .parse()
        .unwrap();
    assert_eq!(cpe.product, "star\\*name");
    assert_eq!(cpe.version, NA);
}

#[test]
fn printing_escapes_what_needs_it() {
    let cpe = Cpe::new('a', "foo:bar", "c++ lib", "1.0");
    assert_eq!(
        cpe.to_string(),
        "cpe:2.3:a:foo\\:bar:c\\+\\+\\ lib:1.0:*:*:*:*:*:*:*"
    );
    assert_eq!(cpe.to_string().parse::<Cpe>().unwrap(), cpe);
}

#[test]
fn rejects_what_is_not_a_cpe_2_3_name() {
    let bad = |s: &str| s.parse::<Cpe>().unwrap_err();
    assert!(matches!(bad("cpe:/a:haxx:curl:8.4.0"), CpeError::Prefix(_)));
    assert!(matches!(
        bad("cpe:2.3:a:haxx:curl:8.4.0"),
        CpeError::AttributeCount { found: 4, .. }
    ));
    assert!(matches!(
        bad("cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*:*"),
        CpeError::AttributeCount { found: 12, .. }
    ));
    assert!(matches!(
        bad("cpe:2.3:x:haxx:curl:8.4.0:*:*:*:*:*:*:*"),
        CpeError::Part { .. }
    ));
    assert!(matches!(
        bad("cpe:2.3:a:haxx::8.4.0:*:*:*:*:*:*:*"),
        CpeError::Empty { index: 3, .. }
    ));
    assert!(matches!(
        bad("cpe:2.3:a:haxx:curl:*:*:*:*:*:*:*:x\\"),
        CpeError::Escape { index: 11, .. }
    ));
    // The message names the string.
    assert!(bad("cpe:2.3:a:b").to_string().contains("cpe:2.3:a:b"));
}

#[test]
fn serde_as_string() {
    let cpe: Cpe = serde_json::from_str(r#""cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*""#).unwrap();
    assert_eq!(cpe.product, "curl");
    assert_eq!(
        serde_json::to_string(&cpe).unwrap(),
        r#""cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*""#
    );
    assert!(serde_json::from_str::<Cpe>(r#""curl""#).is_err());
}

fn cpe(s: &str) -> Cpe {
    s.parse().unwrap()
}

#[test]
fn matches_product_ignores_version_and_update() {
    let criteria = cpe("cpe:2.3:a:haxx:curl:*:*:*:*:*:*:*:*");
    assert!(criteria.matches_product(&cpe("cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*")));
    assert!(criteria.matches_product(&cpe("cpe:2.3:a:haxx:curl:7.1:beta:*:*:*:*:*:*")));
    assert!(!criteria.matches_product(&cpe("cpe:2.3:a:haxx:libcurl:8.4.0:*:*:*:*:*:*:*")));
    assert!(!criteria.matches_product(&cpe("cpe:2.3:o:haxx:curl:8.4.0:*:*:*:*:*:*:*")));
    // Even a concrete criteria version is left to the ranges.
    let exact = cpe("cpe:2.3:a:haxx:curl:7.0:*:*:*:*:*:*:*");
    assert!(exact.matches_product(&cpe("cpe:2.3:a:haxx:curl:8.4.0:*:*:*:*:*:*:*")));
}

#[test]
fn matches_product_attribute_rules() {
    // Case does not matter.
    assert!(
        cpe("cpe:2.3:a:OpenSSL:OpenSSL:*:*:*:*:*:*:*:*")
            .matches_product(&cpe("cpe:2.3:a:openssl:openssl:3.0.0:*:*:*:*:*:*:*"))
    );
    // A target_sw restriction: only the Node.js package of a library.
    let criteria = cpe("cpe:2.3:a:vendor:lib:*:*:*:*:*:node.js:*:*");
    assert!(criteria.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:node.js:*:*")));
    assert!(!criteria.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:python:*:*")));
    assert!(!criteria.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:-:*:*")));
    // We do not know our target_sw: not knowing must not hide the CVE.
    assert!(criteria.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:*:*:*")));
    // NA matches only NA (and ANY).
    let na = cpe("cpe:2.3:a:vendor:lib:*:*:*:*:*:-:*:*");
    assert!(na.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:-:*:*")));
    assert!(!na.matches_product(&cpe("cpe:2.3:a:vendor:lib:1.0:*:*:*:*:python:*:*")));
    // Wildcards at the ends of a criteria value.
    let glob = cpe("cpe:2.3:a:vendor:lib*:*:*:*:*:*:*:*:*");
    assert!(glob.matches_product(&cpe("cpe:2.3:a:vendor:libfoo:1:*:*:*:*:*:*:*")));
    assert!(glob.matches_product(&cpe("cpe:2.3:a:vendor:lib:1:*:*:*:*:*:*:*")));
    assert!(!glob.matches_product(&cpe("cpe:2.3:a:vendor:xlib:1:*:*:*:*:*:*:*")));
    let one = cpe("cpe:2.3:a:vendor:lib?:*:*:*:*:*:*:*:*");
    assert!(one.matches_product(&cpe("cpe:2.3:a:vendor:lib2:1:*:*:*:*:*:*:*")));
    assert!(!one.matches_product(&cpe("cpe:2.3:a:vendor:lib:1:*:*:*:*:*:*:*")));
    // An escaped asterisk is a literal character.
    let literal = cpe("cpe:2.3:a:vendor:lib\\*:*:*:*:*:*:*:*:*");
    assert!(!literal.matches_product(&cpe("cpe:2.3:a:vendor:libfoo:1:*:*:*:*:*:*:*")));
    assert!(literal.matches_product(&cpe("cpe:2.3:a:vendor:lib\\*:1:*:*:*:*:*:*:*")));
}

#[test]
fn full_version_joins_a_concrete_update() {
    assert_eq!(
        cpe("cpe:2.3:o:linux:linux_kernel:6.2:rc1:*:*:*:*:*:*")
            .full_version()
            .as_deref(),
        Some("6.2-rc1")
    );
    assert_eq!(
        cpe("cpe:2.3:a:openbsd:openssh:8.9:p1:*:*:*:*:*:*")
            .full_version()
            .as_deref(),
        Some("8.9-p1")
    );
    assert_eq!(
        cpe("cpe:2.3:a:haxx:curl:8.4.0:-:*:*:*:*:*:*")
            .full_version()
            .as_deref(),
        Some("8.4.0")
    );
    assert_eq!(
        cpe("cpe:2.3:a:haxx:curl:*:*:*:*:*:*:*:*").full_version(),
        None
    );
    assert_eq!(
        cpe("cpe:2.3:h:ti:am335x:-:*:*:*:*:*:*:*").full_version(),
        None
    );
}
