//! The table of known version quirks: each row is a comparison that Yocto's `cve-check`, a naive
//! string compare or a naive semver parse gets wrong or decides on a guess.

use std::cmp::Ordering::{self, Equal, Greater, Less};

use spark_cve::version::{Ecosystem, Ecosystem::*, Tri, VersionRange, compare, equals};

/// `(ecosystem, a, b, compare(a, b))`; every row is also checked the other way round.
const QUIRKS: &[(Ecosystem, &str, &str, Option<Ordering>)] = &[
    // The issue's examples.
    (Yocto, "1.0.2k", "1.0.2l", Some(Less)),
    (Linux, "6.2-rc1", "6.2", Some(Less)),
    (Yocto, "6.2-rc1", "6.2", Some(Less)),
    (Yocto, "1.0", "1.0.0", Some(Equal)),
    (Crates, "1.0", "1.0.0", Some(Equal)),
    (Linux, "6.2", "6.2.0", Some(Equal)),
    (Generic, "1.0", "1.0.0", Some(Equal)),
    (Yocto, "2.0~rc1", "2.0", Some(Less)),
    (Yocto, "2.0~beta2", "2.0~rc1", Some(Less)),
    (Yocto, "2.0~1", "2.0", Some(Less)),
    (Yocto, "2.0~1", "2.0~rc1", None), // an unlabelled `~` pre-release has no rank
    (Yocto, "1:2.0", "1:1.9", Some(Greater)),
    (Yocto, "1:2.0", "2:1.0", Some(Less)),
    (Yocto, "0:2.0", "0:2.0.0", Some(Equal)),
    // Against an epoch-less (NVD) version the epoch is left out: bitbake would say Greater.
    (Yocto, "1:2.0", "3.0", Some(Less)),
    (Linux, "1:6.1", "6.1", None),
    (Generic, "1:2.0", "2.0", None),
    // Numbers, not strings.
    (Yocto, "100", "99", Some(Greater)),
    (Yocto, "2.3.1", "2.2.3", Some(Greater)),
    (Yocto, "1.10", "1.9", Some(Greater)),
    (Crates, "0.10.0", "0.9.9", Some(Greater)),
    (Yocto, "v1.2.3", "1.2.3", Some(Equal)),
    (Yocto, "7_88_1", "7.88.1", Some(Equal)),
    // OpenSSL letters: none < a < b.
    (Yocto, "1.0.2", "1.0.2a", Some(Less)),
    (Yocto, "1.0.2z", "1.0.3", Some(Less)),
    (Yocto, "1.1.1w", "1.1.1W", Some(Equal)),
    (Linux, "1.0.2k", "1.0.2", None),
    // OpenSSH patch levels.
    (Yocto, "8.9p1", "8.9", Some(Greater)),
    (Yocto, "8.9p1", "8.9-p2", Some(Less)),
    (Yocto, "8.9p1", "9.0", Some(Less)),
    // Pre-releases.
    (Yocto, "1.0-rc1", "1.0-rc2", Some(Less)),
    (Yocto, "1.0_rc2", "1.0rc10", Some(Less)),
    (Yocto, "1.0-rc", "1.0-rc1", Some(Less)),
    (Yocto, "1.0.pre", "1.0", Some(Less)),
    (Yocto, "1.0alpha", "1.0beta", Some(Less)),
    (Yocto, "1.0-beta3", "1.0-rc1", Some(Less)),
    (Yocto, "1.0-dev", "1.0-alpha", Some(Less)),
    (Yocto, "1.0-pre1", "1.0-rc1", None), // projects use both for the last step
    (Yocto, "1.0-rc1", "0.9", Some(Greater)),
    (Linux, "6.2-rc7", "6.1.99", Some(Greater)),
    (Linux, "6.2-beta1", "6.2", None),
    (Crates, "1.0.0-alpha", "1.0.0", Some(Less)),
    (Crates, "1.0.0-alpha.1", "1.0.0-alpha.beta", Some(Less)),
    (Crates, "1.0.0+build1", "1.0.0+build2", Some(Equal)),
    // Dates compare with dates only.
    (Yocto, "2021-01-21", "2020-12-25", Some(Greater)),
    (Yocto, "20230115", "20221231", Some(Greater)),
    (Yocto, "20230115", "1.2", None),
    (Yocto, "2023.01", "1.2", None),
    // `+git` snapshots: after their base, before the next release.
    (Yocto, "1.2.3+gitAUTOINC+1a2b3c4d5e", "1.2.4", Some(Less)),
    (Yocto, "1.2.3+git", "1.2.2", Some(Greater)),
    (Yocto, "1.2.3+git", "1.2.3", None),
    (Yocto, "1.2.3+git", "1.2.3+git", None),
    (Linux, "6.1.55+gitAUTOINC+abcdef0123", "6.1.56", Some(Less)),
    (Generic, "1.2.3+git", "1.2.4", None),
    // Garbage is undecidable, never a guess.
    (Yocto, "1a2b3c4d", "1.2", None),
    (Yocto, "deadbeef", "1.2", None),
    (Yocto, "1.2-g1a2b3c", "1.2", None),
    (Yocto, "1.2.3-yocto", "1.2.3", None),
    (Yocto, "1234567890", "1.2", None),
    (Yocto, "", "1.2", None),
    (Yocto, "*", "1.2", None),
    (Yocto, "-", "1.2", None),
    (Crates, "1.2.3.4", "1.2.3", None),
    (Crates, "not-a-version", "1.0.0", None),
    (Crates, "1.0.0-rc1", "1.0.0-rc1", Some(Equal)),
];

#[test]
fn quirks_table() {
    assert!(QUIRKS.len() >= 30);
    let mut failures = Vec::new();
    for &(eco, a, b, want) in QUIRKS {
        let got = compare(eco, a, b);
        if got != want {
            failures.push(format!(
                "{eco:?} {a:?} vs {b:?}: want {want:?}, got {got:?}"
            ));
        }
        let back = compare(eco, b, a);
        let want_back = want.map(Ordering::reverse);
        if back != want_back {
            failures.push(format!(
                "{eco:?} {b:?} vs {a:?}: want {want_back:?}, got {back:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_readable_version_equals_itself() {
    for &(eco, a, b, _) in QUIRKS {
        for v in [a, b] {
            let got = compare(eco, v, v);
            // Snapshots are the exception: two builds of `X+git` may be different commits.
            if !v.contains("+git") && got.is_some() {
                assert_eq!(got, Some(Equal), "{eco:?} {v:?}");
            }
        }
    }
}

#[test]
fn equals_decides_where_compare_cannot() {
    // `1.2.3+git` is Equal or Greater than 1.2.3: compare says None, equality is Undecidable…
    assert_eq!(equals(Yocto, "1.2.3+git", "1.2.3"), Tri::Undecidable);
    // …but it is certainly not 1.2.4 nor 1.2.2.
    assert_eq!(equals(Yocto, "1.2.3+git", "1.2.4"), Tri::No);
    assert_eq!(equals(Yocto, "1.2.3+git", "1.2.2"), Tri::No);
    assert_eq!(equals(Yocto, "1.0", "1.0.0"), Tri::Yes);
    assert_eq!(equals(Yocto, "1.0.2k", "1.0.2"), Tri::No);
    assert_eq!(equals(Yocto, "deadbeef", "1.0"), Tri::Undecidable);
}

#[test]
fn tri_is_kleene() {
    use Tri::*;
    let all = [Yes, No, Undecidable];
    for a in all {
        for b in all {
            let and = a.and(b);
            let or = a.or(b);
            assert_eq!(and, b.and(a));
            assert_eq!(or, b.or(a));
            // De Morgan holds in Kleene logic.
            assert_eq!(!and, (!a).or(!b));
        }
    }
    assert_eq!(Yes.or(Undecidable), Yes);
    assert_eq!(No.or(Undecidable), Undecidable);
    assert_eq!(No.and(Undecidable), No);
    assert_eq!(Yes.and(Undecidable), Undecidable);
    assert_eq!(!Undecidable, Undecidable);
    assert_eq!(Tri::all([]), Yes);
    assert_eq!(Tri::any([]), No);
}

fn range(si: Option<&str>, se: Option<&str>, ei: Option<&str>, ee: Option<&str>) -> VersionRange {
    VersionRange {
        start_including: si.map(str::to_owned),
        start_excluding: se.map(str::to_owned),
        end_including: ei.map(str::to_owned),
        end_excluding: ee.map(str::to_owned),
    }
}

#[test]
fn range_boundaries() {
    use Tri::*;
    // [1.0.2, 1.0.2l): OpenSSL fixed in 1.0.2l.
    let r = range(Some("1.0.2"), None, None, Some("1.0.2l"));
    let rows = [
        ("1.0.1z", No),
        ("1.0.2", Yes),
        ("1.0.2.0", Yes),
        ("1.0.2a", Yes),
        ("1.0.2k", Yes),
        ("1.0.2l", No),
        ("1.0.2m", No),
        ("1.1.0", No),
        ("1.0.2-g1a2b3c", Undecidable),
    ];
    for (v, want) in rows {
        assert_eq!(r.contains(Yocto, v), want, "[1.0.2, 1.0.2l) contains {v}");
    }

    // (2.0, 2.4]
    let r = range(None, Some("2.0"), Some("2.4"), None);
    for (v, want) in [
        ("2.0", No),
        ("2.0.0", No),
        ("2.0.1", Yes),
        ("2.4", Yes),
        ("2.4.0", Yes),
        ("2.4.1", No),
        ("2.5~rc1", No),
        ("2.4~rc1", Yes),
    ] {
        assert_eq!(r.contains(Yocto, v), want, "(2.0, 2.4] contains {v}");
    }
}

#[test]
fn range_kernel_release_candidates() {
    use Tri::*;
    // Fixed in 6.2: every 6.2 release candidate is still affected.
    let r = range(Some("5.10"), None, None, Some("6.2"));
    assert_eq!(r.contains(Linux, "6.2-rc1"), Yes);
    assert_eq!(r.contains(Linux, "6.2-rc8"), Yes);
    assert_eq!(r.contains(Linux, "6.2"), No);
    assert_eq!(r.contains(Linux, "6.1.55"), Yes);
    assert_eq!(r.contains(Linux, "5.10-rc3"), No);
}

#[test]
fn range_with_snapshots_decides_when_both_answers_agree() {
    use Tri::*;
    // Fixed in 1.2.3: a snapshot after 1.2.3 is outside whether or not it is 1.2.3 itself.
    assert_eq!(
        range(None, None, None, Some("1.2.3")).contains(Yocto, "1.2.3+git"),
        No
    );
    // Fixed in 1.2.4: a snapshot after 1.2.3 is before 1.2.4.
    assert_eq!(
        range(None, None, None, Some("1.2.4")).contains(Yocto, "1.2.3+git"),
        Yes
    );
    // Affected up to and including 1.2.3: is the snapshot 1.2.3 or later? Unknown.
    assert_eq!(
        range(None, None, Some("1.2.3"), None).contains(Yocto, "1.2.3+git"),
        Undecidable
    );
    assert_eq!(
        range(Some("1.2.3"), None, None, None).contains(Yocto, "1.2.3+git"),
        Yes
    );
}

#[test]
fn range_undecidable_only_when_it_matters() {
    use Tri::*;
    // A date-like version against a dotted start bound cannot be compared…
    let r = range(Some("1.0"), None, None, Some("2.0"));
    assert_eq!(r.contains(Yocto, "20230115"), Undecidable);
    // …and a bound that is itself unreadable is as bad.
    let r = range(None, None, None, Some("2.0-g1a2b3c"));
    assert_eq!(r.contains(Yocto, "1.0"), Undecidable);
    // But when one bound already excludes the version, the other does not matter.
    let r = range(Some("3.0"), None, None, Some("garbage"));
    assert_eq!(r.contains(Yocto, "2.0"), No);
}

#[test]
fn unbounded_range_contains_everything() {
    let r = VersionRange::default();
    assert!(r.is_unbounded());
    assert_eq!(r.contains(Yocto, "1.0"), Tri::Yes);
    assert_eq!(r.contains(Yocto, "garbage"), Tri::Yes);
    assert!(!range(None, None, None, Some("1")).is_unbounded());
}

#[test]
fn crates_ranges_follow_semver() {
    use Tri::*;
    let r = range(Some("0.9"), None, None, Some("1.0.0"));
    assert_eq!(r.contains(Crates, "1.0.0-rc.1"), Yes);
    assert_eq!(r.contains(Crates, "0.9.0"), Yes);
    assert_eq!(r.contains(Crates, "1.0.0"), No);
    assert_eq!(r.contains(Crates, "0.8.99"), No);
    assert_eq!(r.contains(Crates, "1.0.0.1"), Undecidable);
}

#[test]
fn range_serde_uses_nvd_names() {
    let r: VersionRange = serde_json::from_str(
        r#"{"versionStartIncluding": "1.0", "versionEndExcluding": "1.0.2l"}"#,
    )
    .unwrap();
    assert_eq!(r, range(Some("1.0"), None, None, Some("1.0.2l")));
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"versionStartIncluding":"1.0","versionEndExcluding":"1.0.2l"}"#
    );
    let eco: Ecosystem = serde_json::from_str(r#""yocto""#).unwrap();
    assert_eq!(eco, Yocto);
}

/// Versions of every shape the parser knows, for the consistency checks below (no epochs: an
/// epoch is deliberately left out against an epoch-less version, which is not transitive).
const SHAPES: &[&str] = &[
    "0.9",
    "1.0",
    "1.0.0",
    "1.0.1",
    "1.0.2",
    "1.0.2a",
    "1.0.2k",
    "1.0.2l",
    "1.0.3",
    "1.0-rc1",
    "1.0-rc2",
    "1.0~beta1",
    "1.0.pre",
    "1.0-dev",
    "1.1",
    "1.1+git",
    "1.1.0+gitAUTOINC+abc",
    "1.2",
    "2.0",
    "8.9",
    "8.9p1",
    "8.9p2",
    "9.0",
    "20230115",
    "20240101",
    "2021-01-21",
    "deadbeef",
    "1.2-g1a2b3c",
];

#[test]
fn comparisons_are_consistent() {
    for eco in [Yocto, Linux, Generic] {
        for a in SHAPES {
            for b in SHAPES {
                let ab = compare(eco, a, b);
                assert_eq!(
                    ab.map(Ordering::reverse),
                    compare(eco, b, a),
                    "{eco:?} {a} {b}"
                );
                for c in SHAPES {
                    // a ≤ b ≤ c must never come with c < a.
                    if matches!(ab, Some(Less | Equal))
                        && matches!(compare(eco, b, c), Some(Less | Equal))
                    {
                        let ac = compare(eco, a, c);
                        assert!(
                            !matches!(ac, Some(Greater)),
                            "{eco:?}: {a} <= {b} <= {c} but {a} > {c}"
                        );
                        if ab == Some(Less) || compare(eco, b, c) == Some(Less) {
                            assert_ne!(ac, Some(Equal), "{eco:?}: {a} < {c} expected");
                        }
                    }
                }
            }
        }
    }
}
