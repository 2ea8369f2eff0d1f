//! NVD configurations (CVE API 2.0 shape) evaluated against a platform of shipped components.

use spark_cve::cpe::{Component, Configuration, Evaluation, Operator, evaluate, evaluate_any};
use spark_cve::version::{Ecosystem, Tri};

fn component(cpe: &str, ecosystem: Ecosystem) -> Component {
    Component {
        cpe: cpe.parse().unwrap(),
        ecosystem,
    }
}

fn configs(json: &str) -> Vec<Configuration> {
    serde_json::from_str(json).unwrap()
}

fn result(e: &Evaluation) -> (Tri, &[usize]) {
    (e.result, &e.vulnerable_components)
}

/// CVE-2023-38545 (curl SOCKS5 heap overflow): one OR node with a range.
const CURL: &str = r#"[
  {
    "nodes": [
      {
        "operator": "OR",
        "negate": false,
        "cpeMatch": [
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:haxx:curl:*:*:*:*:*:*:*:*",
            "versionStartIncluding": "7.69.0",
            "versionEndExcluding": "8.4.0",
            "matchCriteriaId": "F6B3D5E8-5C47-4AF8-A3E3-6F5F2E5B8A49"
          },
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:haxx:libcurl:*:*:*:*:*:*:*:*",
            "versionStartIncluding": "7.69.0",
            "versionEndExcluding": "8.4.0",
            "matchCriteriaId": "A0D9B2C1-2A5B-4B1A-9E0B-7F3A8C2D1E0F"
          }
        ]
      }
    ]
  }
]"#;

#[test]
fn simple_or_list() {
    let cfgs = configs(CURL);
    assert_eq!(cfgs.len(), 1);
    assert_eq!(cfgs[0].operator, None);
    assert_eq!(cfgs[0].nodes[0].operator, Operator::Or);
    assert_eq!(
        cfgs[0].nodes[0].cpe_match[0]
            .version_end_excluding
            .as_deref(),
        Some("8.4.0")
    );
    let platform = [
        component("cpe:2.3:a:gnu:glibc:2.38:*:*:*:*:*:*:*", Ecosystem::Yocto),
        component(
            "cpe:2.3:a:haxx:libcurl:8.2.1:*:*:*:*:*:*:*",
            Ecosystem::Yocto,
        ),
    ];
    let e = evaluate(&cfgs[0], &platform);
    assert_eq!(result(&e), (Tri::Yes, &[1][..]));
    assert!(e.undecidable_components.is_empty());

    // The fixed release and a release before the range are not affected.
    for v in ["8.4.0", "8.5.0", "7.68.0"] {
        let platform = [component(
            &format!("cpe:2.3:a:haxx:curl:{v}:*:*:*:*:*:*:*"),
            Ecosystem::Yocto,
        )];
        assert_eq!(evaluate(&cfgs[0], &platform).result, Tri::No, "curl {v}");
    }
    // Nothing shipped: not affected.
    assert_eq!(evaluate(&cfgs[0], &[]), evaluate(&cfgs[0], &[]));
    assert_eq!(evaluate(&cfgs[0], &[]).result, Tri::No);
}

/// An application CVE that needs a particular OS: `operator: AND` across two nodes, the OS
/// criteria marked `vulnerable: false` (shape of e.g. CVE-2021-44228 vendor entries).
const APP_ON_WINDOWS: &str = r#"[
  {
    "operator": "AND",
    "nodes": [
      {
        "operator": "OR",
        "negate": false,
        "cpeMatch": [
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:zlib:zlib:*:*:*:*:*:*:*:*",
            "versionEndExcluding": "1.3.1",
            "matchCriteriaId": "11111111-1111-1111-1111-111111111111"
          }
        ]
      },
      {
        "operator": "OR",
        "negate": false,
        "cpeMatch": [
          {
            "vulnerable": false,
            "criteria": "cpe:2.3:o:microsoft:windows:-:*:*:*:*:*:*:*",
            "matchCriteriaId": "22222222-2222-2222-2222-222222222222"
          }
        ]
      }
    ]
  }
]"#;

#[test]
fn and_with_running_on_platform() {
    let cfg = &configs(APP_ON_WINDOWS)[0];
    assert_eq!(cfg.operator, Some(Operator::And));
    let zlib = component("cpe:2.3:a:zlib:zlib:1.2.13:*:*:*:*:*:*:*", Ecosystem::Yocto);
    let linux = component(
        "cpe:2.3:o:linux:linux_kernel:6.6.21:*:*:*:*:*:*:*",
        Ecosystem::Linux,
    );
    let windows = component(
        "cpe:2.3:o:microsoft:windows:-:*:*:*:*:*:*:*",
        Ecosystem::Generic,
    );

    // Our gateway: zlib on Linux. The OS part is not shipped at all: not affected.
    let e = evaluate(cfg, &[linux.clone(), zlib.clone()]);
    assert_eq!(result(&e), (Tri::No, &[][..]));

    // zlib on Windows: affected, and only zlib is vulnerable (Windows is the platform).
    let e = evaluate(cfg, &[windows.clone(), zlib.clone()]);
    assert_eq!(result(&e), (Tri::Yes, &[1][..]));

    // Windows alone: the "running on" criteria holds, but nothing vulnerable is shipped.
    let e = evaluate(cfg, std::slice::from_ref(&windows));
    assert_eq!(result(&e), (Tri::No, &[][..]));

    // The same criteria flattened into one OR node (what cve-check does) would flag Windows
    // itself; the vulnerable: false entry must still never mark it.
    let mut flat = cfg.clone();
    flat.operator = None;
    let e = evaluate(&flat, &[windows, linux]);
    assert_eq!(result(&e), (Tri::No, &[][..]));
}

/// A node-level AND (the older NVD shape, within one node) with a hardware platform.
const FIRMWARE_ON_BOARD: &str = r#"[
  {
    "nodes": [
      {
        "operator": "AND",
        "negate": false,
        "cpeMatch": [
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:o:ti:am335x_firmware:*:*:*:*:*:*:*:*",
            "versionEndIncluding": "2.4"
          },
          {
            "vulnerable": false,
            "criteria": "cpe:2.3:h:ti:am335x:-:*:*:*:*:*:*:*"
          }
        ]
      }
    ]
  }
]"#;

#[test]
fn node_and_needs_every_criteria() {
    let cfg = &configs(FIRMWARE_ON_BOARD)[0];
    let firmware = component(
        "cpe:2.3:o:ti:am335x_firmware:2.4.0:*:*:*:*:*:*:*",
        Ecosystem::Generic,
    );
    let board = component("cpe:2.3:h:ti:am335x:-:*:*:*:*:*:*:*", Ecosystem::Generic);
    assert_eq!(
        result(&evaluate(cfg, &[board.clone(), firmware.clone()])),
        (Tri::Yes, &[1][..])
    );
    assert_eq!(evaluate(cfg, &[firmware]).result, Tri::No);
    assert_eq!(evaluate(cfg, &[board]).result, Tri::No);
}

/// Affected unless a hardening module is present: the second node is negated.
const UNLESS_HARDENED: &str = r#"[
  {
    "operator": "AND",
    "nodes": [
      {
        "operator": "OR",
        "cpeMatch": [
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:busybox:busybox:*:*:*:*:*:*:*:*",
            "versionEndExcluding": "1.36.0"
          }
        ]
      },
      {
        "operator": "OR",
        "negate": true,
        "cpeMatch": [
          {
            "vulnerable": false,
            "criteria": "cpe:2.3:a:busybox:busybox_hardening:*:*:*:*:*:*:*:*"
          }
        ]
      }
    ]
  }
]"#;

#[test]
fn negate_flips_a_node() {
    let cfg = &configs(UNLESS_HARDENED)[0];
    assert!(cfg.nodes[1].negate);
    assert!(!cfg.nodes[0].negate);
    let busybox = component(
        "cpe:2.3:a:busybox:busybox:1.35.0:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    let hardening = component(
        "cpe:2.3:a:busybox:busybox_hardening:1.0:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    assert_eq!(
        result(&evaluate(cfg, std::slice::from_ref(&busybox))),
        (Tri::Yes, &[0][..])
    );
    assert_eq!(evaluate(cfg, &[busybox.clone(), hardening]).result, Tri::No);

    // A negated node never marks what it matched as vulnerable, even if flagged so.
    let mut odd = cfg.clone();
    odd.nodes[1].cpe_match[0].vulnerable = true;
    let other = component("cpe:2.3:a:gnu:glibc:2.38:*:*:*:*:*:*:*", Ecosystem::Yocto);
    assert_eq!(
        result(&evaluate(&odd, &[other, busybox])),
        (Tri::Yes, &[1][..])
    );

    // An undecidable comparison inside a negated node stays undecidable.
    let unknown = component(
        "cpe:2.3:a:busybox:busybox_hardening:*:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    let mut ranged = cfg.clone();
    ranged.nodes[1].cpe_match[0].version_start_including = Some("2.0".into());
    let busybox = component(
        "cpe:2.3:a:busybox:busybox:1.35.0:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    let e = evaluate(&ranged, &[busybox, unknown]);
    assert_eq!(result(&e), (Tri::Undecidable, &[0][..]));
    assert_eq!(e.undecidable_components, [1]);
}

/// Two products in one OR node: one comparable, one not.
const TWO_PRODUCTS: &str = r#"[
  {
    "nodes": [
      {
        "operator": "OR",
        "negate": false,
        "cpeMatch": [
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:openssl:openssl:*:*:*:*:*:*:*:*",
            "versionStartIncluding": "3.0.0",
            "versionEndExcluding": "3.0.12"
          },
          {
            "vulnerable": true,
            "criteria": "cpe:2.3:a:gnu:glibc:*:*:*:*:*:*:*:*",
            "versionEndExcluding": "2.39"
          }
        ]
      }
    ]
  }
]"#;

#[test]
fn undecidable_propagates_honestly() {
    let cfg = &configs(TWO_PRODUCTS)[0];
    // glibc from a git snapshot with a hash version: cannot be compared.
    let glibc_hash = component(
        "cpe:2.3:a:gnu:glibc:1a2b3c4d:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    let openssl_old = component(
        "cpe:2.3:a:openssl:openssl:3.0.11:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );
    let openssl_new = component(
        "cpe:2.3:a:openssl:openssl:3.0.13:*:*:*:*:*:*:*",
        Ecosystem::Yocto,
    );

    // No OR Undecidable = Undecidable: never silently "patched".
    let e = evaluate(cfg, &[openssl_new.clone(), glibc_hash.clone()]);
    assert_eq!(result(&e), (Tri::Undecidable, &[][..]));
    assert_eq!(e.undecidable_components, [1]);

    // Yes OR Undecidable = Yes, and the undecidable one is still reported as such.
    let e = evaluate(cfg, &[openssl_old, glibc_hash.clone()]);
    assert_eq!(result(&e), (Tri::Yes, &[0][..]));
    assert_eq!(e.undecidable_components, [1]);

    // A shipped product whose version we do not know is undecidable too.
    let glibc_unknown = component("cpe:2.3:a:gnu:glibc:*:*:*:*:*:*:*:*", Ecosystem::Yocto);
    assert_eq!(evaluate(cfg, &[glibc_unknown]).result, Tri::Undecidable);

    // An unreadable criteria string is undecidable, not skipped.
    let mut broken = cfg.clone();
    broken.nodes[0].cpe_match[1].criteria = "cpe:/a:gnu:glibc".into();
    assert_eq!(
        evaluate(&broken, std::slice::from_ref(&openssl_new)).result,
        Tri::Undecidable
    );

    // AND dual: No AND Undecidable = No.
    let mut and = cfg.clone();
    and.nodes[0].operator = Operator::And;
    assert_eq!(evaluate(&and, &[openssl_new, glibc_hash]).result, Tri::No);
}

/// Exact versions in the criteria, no range (older NVD entries list every affected release).
const EXACT: &str = r#"[
  {
    "nodes": [
      {
        "operator": "OR",
        "negate": false,
        "cpeMatch": [
          {"vulnerable": true, "criteria": "cpe:2.3:a:openssl:openssl:1.0.2j:*:*:*:*:*:*:*"},
          {"vulnerable": true, "criteria": "cpe:2.3:a:openssl:openssl:1.0.2k:*:*:*:*:*:*:*"},
          {"vulnerable": true, "criteria": "cpe:2.3:a:gnu:bash:5.0:*:*:*:*:*:*:*"},
          {"vulnerable": true, "criteria": "cpe:2.3:o:linux:linux_kernel:6.2:rc1:*:*:*:*:*:*"},
          {"vulnerable": true, "criteria": "cpe:2.3:a:openbsd:openssh:8.9:p1:*:*:*:*:*:*"}
        ]
      }
    ]
  }
]"#;

#[test]
fn exact_version_criteria() {
    let cfg = &configs(EXACT)[0];
    let check = |cpe: &str, eco: Ecosystem| evaluate(cfg, &[component(cpe, eco)]).result;
    use Ecosystem::*;
    assert_eq!(
        check("cpe:2.3:a:openssl:openssl:1.0.2k:*:*:*:*:*:*:*", Yocto),
        Tri::Yes
    );
    assert_eq!(
        check("cpe:2.3:a:openssl:openssl:1.0.2l:*:*:*:*:*:*:*", Yocto),
        Tri::No
    );
    assert_eq!(
        check("cpe:2.3:a:openssl:openssl:1.0.2:*:*:*:*:*:*:*", Yocto),
        Tri::No
    );
    // `5.0.0` is `5.0` by the recipe rules.
    assert_eq!(
        check("cpe:2.3:a:gnu:bash:5.0.0:*:*:*:*:*:*:*", Yocto),
        Tri::Yes
    );
    assert_eq!(
        check("cpe:2.3:a:gnu:bash:5.0.1:*:*:*:*:*:*:*", Yocto),
        Tri::No
    );
    // The update is part of the version: 6.2-rc1, not 6.2.
    assert_eq!(
        check("cpe:2.3:o:linux:linux_kernel:6.2-rc1:*:*:*:*:*:*:*", Linux),
        Tri::Yes
    );
    assert_eq!(
        check("cpe:2.3:o:linux:linux_kernel:6.2:rc1:*:*:*:*:*:*", Linux),
        Tri::Yes
    );
    assert_eq!(
        check("cpe:2.3:o:linux:linux_kernel:6.2:*:*:*:*:*:*:*", Linux),
        Tri::No
    );
    assert_eq!(
        check("cpe:2.3:a:openbsd:openssh:8.9p1:*:*:*:*:*:*:*", Yocto),
        Tri::Yes
    );
    assert_eq!(
        check("cpe:2.3:a:openbsd:openssh:8.9p2:*:*:*:*:*:*:*", Yocto),
        Tri::No
    );
    // A snapshot after 5.0 may be 5.0 itself or later: undecidable.
    assert_eq!(
        check("cpe:2.3:a:gnu:bash:5.0+git:*:*:*:*:*:*:*", Yocto),
        Tri::Undecidable
    );
    assert_eq!(
        check("cpe:2.3:a:gnu:bash:4.4+git:*:*:*:*:*:*:*", Yocto),
        Tri::No
    );
}

#[test]
fn any_configuration_of_a_cve() {
    let mut cfgs = configs(APP_ON_WINDOWS);
    cfgs.extend(configs(CURL));
    let platform = [
        component("cpe:2.3:a:zlib:zlib:1.2.13:*:*:*:*:*:*:*", Ecosystem::Yocto),
        component("cpe:2.3:a:haxx:curl:8.0.1:*:*:*:*:*:*:*", Ecosystem::Yocto),
    ];
    let e = evaluate_any(&cfgs, &platform);
    assert_eq!(result(&e), (Tri::Yes, &[1][..]));
    assert_eq!(evaluate_any(&[], &platform).result, Tri::No);
}

#[test]
fn configuration_serde_round_trip() {
    let cfgs = configs(APP_ON_WINDOWS);
    let json = serde_json::to_string(&cfgs).unwrap();
    assert!(json.contains(r#""operator":"AND""#));
    assert!(json.contains(r#""cpeMatch""#));
    assert!(json.contains(r#""versionEndExcluding":"1.3.1""#));
    assert!(json.contains(r#""matchCriteriaId""#));
    let back: Vec<Configuration> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfgs);
}
