//! Version comparison per ecosystem, honest about what it cannot know.
//!
//! A CVE applies to a component when the version we ship lies inside NVD's range. Today's tools
//! (Yocto's `cve-check`, `sbom-cve-check`) compare versions with a regular expression that
//! silently drops whatever it does not understand (`1:2.0` becomes `1`, `1.2-g1a2b3c` becomes
//! `1.2`) and so call a version "patched" on a guess. Here a comparison returns
//! `None` when it cannot be made honestly, and [`VersionRange::contains`] answers
//! [`Tri::Undecidable`], which the report puts in its own bucket.
//!
//! # Rules per ecosystem
//!
//! | ecosystem | rules |
//! | --- | --- |
//! | [`Ecosystem::Crates`] | Semantic Versioning 2.0 precedence (`semver`), build metadata ignored; `1` and `1.2` are read as `1.0.0` and `1.2.0` (NVD writes them so); anything else that is not semver: `None` |
//! | [`Ecosystem::Yocto`] | what `oe.cve_check.Version` and bitbake's `vercmp` agree on, made strict (below) |
//! | [`Ecosystem::Linux`] | the Yocto rules restricted to what kernel versions use: numbers, `-rcN`, `+git`; a letter suffix or `-beta` is `None` |
//! | [`Ecosystem::Generic`] | the Yocto rules without epochs and `+git` snapshots (both `None`) |
//!
//! A Yocto version (the recipe's `CVE_VERSION`, else `PV`; the caller chooses) is read as
//!
//! ```text
//!   [epoch:] [v] release [letter] [p|patch N] [pre-release] [+git…]
//!   1:       v   1.0.2   k
//!                6.2                           -rc1
//!                8.9            p1
//!                2.0                           ~beta2
//!                1.2.3                                      +gitAUTOINC+1a2b3c4d5e
//! ```
//!
//! and compared field by field, in this order:
//!
//! - **release**: numbers separated by `.`, `-` or `_`, compared numerically; trailing zeros do
//!   not count, so `1.0` = `1.0.0` (as `cve-check` does; NVD writes both for the same release).
//!   A date-like release (`20230115`, `2023.01.15`, `2021-01-21`) compares only with another
//!   date-like release: against `1.2` it is `None`.
//! - **letter**: OpenSSL style, no letter < `a` < `b`: `1.0.2` < `1.0.2a`, `1.0.2k` < `1.0.2l`.
//! - **patch level** (`p1`, `patch2`, OpenSSH style): none < `p1` < `p2`.
//! - **pre-release**: `-rc1`, `_rc2`, `.pre`, `alpha`, `beta`, `dev`, `preview`, or anything after
//!   `~`, sorts *before* the release: `6.2-rc1` < `6.2`, `2.0~rc1` < `2.0`. Labels rank
//!   `dev` < `alpha` < `beta` < `pre`/`preview`/`rc`, then by number (`rc` < `rc1` < `rc2`).
//!   `pre` against `rc` is `None`: projects use both for the last step before a release.
//! - **epoch**: `1:2.0` against `2:1.0` compares epochs first. Against a version *without* an
//!   epoch (every NVD version) the epoch is left out: bitbake would read the bare side as epoch 0
//!   and call `1:2.0` newer than `3.0`, silently "patched"; but `PE` only orders packages and
//!   `2.0` is the upstream version that NVD's `3.0` speaks of.
//! - **`+git` snapshots** (`+git`, `+gitAUTOINC+hash`, `+svn`, `+hg`): a snapshot `X+git` is a
//!   commit at or after release `X` and before the next release, so against `Y > X` it is
//!   `Less`, against `Y < X` `Greater`, and against `X` itself either `Equal` or `Greater`: which
//!   one is unknown, so [`compare`] says `None`, while [`VersionRange::contains`] still decides
//!   when both answers agree (`X+git` is outside `versionEndExcluding: X` either way).
//!
//! Anything left over (a bare git hash, `1.2-g1a2b3c`, `1.2.3-yocto`, an empty string, NVD's
//! `*` or `-`) makes the version unreadable, and every comparison with it `None`.
//!
//! # Ranges
//!
//! Each bound of an NVD range is checked against the *set* of orderings that are possible between
//! the version and the bound, and the bounds are joined with Kleene's AND ([`Tri`]):
//!
//! | bound | condition | possible orderings | answer |
//! | --- | --- | --- | --- |
//! | `versionEndExcluding: 1.2.4` | v < bound | {Less} (`1.2.3+git`) | Yes |
//! | `versionEndExcluding: 1.2.3` | v < bound | {Equal, Greater} (`1.2.3+git`) | No |
//! | `versionEndIncluding: 1.2.3` | v ≤ bound | {Equal, Greater} (`1.2.3+git`) | Undecidable |
//! | any | any | {} (`1a2b3c4` against `1.2`) | Undecidable |

use std::cmp::Ordering;
use std::fmt;

/// Which rules compare two versions of a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ecosystem {
    /// Rust crates from `Cargo.lock`: semantic versioning.
    Crates,
    /// Yocto recipes (`CVE_VERSION` / `PV`): `cve-check` and `vercmp` rules, made strict.
    Yocto,
    /// The Linux kernel: numbers and `-rcN` only (`6.2-rc1` < `6.2`).
    Linux,
    /// Anything else: dotted numbers with the usual suffixes; no epochs, no snapshots.
    Generic,
}

/// Three-valued (Kleene) truth: the answer to "is this affected?" when some answers are unknown.
///
/// | a | b | a AND b | a OR b |
/// | --- | --- | --- | --- |
/// | Yes | Undecidable | Undecidable | Yes |
/// | No | Undecidable | No | Undecidable |
/// | Undecidable | Undecidable | Undecidable | Undecidable |
///
/// NOT swaps Yes and No and keeps Undecidable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tri {
    Yes,
    No,
    Undecidable,
}

impl Tri {
    /// `Yes` for true, `No` for false.
    pub fn from_bool(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }

    /// Kleene AND: `No` wins, then `Undecidable`.
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::No, _) | (_, Tri::No) => Tri::No,
            (Tri::Yes, Tri::Yes) => Tri::Yes,
            _ => Tri::Undecidable,
        }
    }

    /// Kleene OR: `Yes` wins, then `Undecidable`.
    pub fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::Yes, _) | (_, Tri::Yes) => Tri::Yes,
            (Tri::No, Tri::No) => Tri::No,
            _ => Tri::Undecidable,
        }
    }

    /// AND over all items; `Yes` for none (the empty conjunction).
    pub fn all(items: impl IntoIterator<Item = Tri>) -> Tri {
        items.into_iter().fold(Tri::Yes, Tri::and)
    }

    /// OR over all items; `No` for none (the empty disjunction).
    pub fn any(items: impl IntoIterator<Item = Tri>) -> Tri {
        items.into_iter().fold(Tri::No, Tri::or)
    }
}

impl std::ops::Not for Tri {
    type Output = Tri;

    fn not(self) -> Tri {
        match self {
            Tri::Yes => Tri::No,
            Tri::No => Tri::Yes,
            Tri::Undecidable => Tri::Undecidable,
        }
    }
}

impl fmt::Display for Tri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tri::Yes => "yes",
            Tri::No => "no",
            Tri::Undecidable => "undecidable",
        })
    }
}

/// Compares `a` with `b` under the rules of `eco`.
///
/// `Some(ordering)` when the two are honestly comparable, `None` when they are not (one is
/// unreadable, a date against a release, `pre` against `rc`, a snapshot against its own base).
pub fn compare(eco: Ecosystem, a: &str, b: &str) -> Option<Ordering> {
    possible(eco, a, b).single()
}

/// Is `v` the same version as `exact` (NVD criteria with a concrete version and no range)?
///
/// Unlike `compare(..) == Some(Equal)` this says `No` when every possible ordering is unequal.
pub fn equals(eco: Ecosystem, v: &str, exact: &str) -> Tri {
    possible(eco, v, exact).test(|o| o == Ordering::Equal)
}

/// The orderings that `a` may have relative to `b`: empty when nothing can be said.
///
/// A bit set of Less, Equal, Greater; a single bit is an honest answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Possible(u8);

impl Possible {
    const NONE: Possible = Possible(0);
    const LESS: u8 = 1;
    const EQUAL: u8 = 2;
    const GREATER: u8 = 4;

    fn of(o: Ordering) -> Possible {
        Possible(match o {
            Ordering::Less => Self::LESS,
            Ordering::Equal => Self::EQUAL,
            Ordering::Greater => Self::GREATER,
        })
    }

    fn single(self) -> Option<Ordering> {
        match self.0 {
            Self::LESS => Some(Ordering::Less),
            Self::EQUAL => Some(Ordering::Equal),
            Self::GREATER => Some(Ordering::Greater),
            _ => None,
        }
    }

    /// Does `cond` hold for every possible ordering (Yes), for none (No), or for some (Undecidable)?
    /// Nothing possible means nothing is known: Undecidable.
    fn test(self, cond: impl Fn(Ordering) -> bool) -> Tri {
        if self == Self::NONE {
            return Tri::Undecidable;
        }
        let mut seen_true = false;
        let mut seen_false = false;
        for o in [Ordering::Less, Ordering::Equal, Ordering::Greater] {
            if self.0 & Possible::of(o).0 != 0 {
                if cond(o) {
                    seen_true = true;
                } else {
                    seen_false = true;
                }
            }
        }
        match (seen_true, seen_false) {
            (true, false) => Tri::Yes,
            (false, true) => Tri::No,
            _ => Tri::Undecidable,
        }
    }
}

fn possible(eco: Ecosystem, a: &str, b: &str) -> Possible {
    match eco {
        Ecosystem::Crates => match (parse_semver(a), parse_semver(b)) {
            (Some(a), Some(b)) => Possible::of(a.cmp_precedence(&b)),
            _ => Possible::NONE,
        },
        Ecosystem::Yocto | Ecosystem::Linux | Ecosystem::Generic => {
            match (Parsed::parse(eco, a), Parsed::parse(eco, b)) {
                (Some(a), Some(b)) => a.possible(&b),
                _ => Possible::NONE,
            }
        }
    }
}

/// Strict semver, except that `1` and `1.2` (all digits) are read as `1.0.0` and `1.2.0`.
fn parse_semver(s: &str) -> Option<semver::Version> {
    let s = s.trim();
    let s = s.strip_prefix('v').unwrap_or(s);
    if let Ok(v) = semver::Version::parse(s) {
        return Some(v);
    }
    let parts: Vec<&str> = s.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    if parts.len() < 3 && parts.iter().all(numeric) {
        let padded = format!("{}{}", s, ".0".repeat(3 - parts.len()));
        return semver::Version::parse(&padded).ok();
    }
    None
}

/// A pre-release label, ranked. `Rc` and `Pre` share a rank but do not compare with each other.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PreLabel {
    Dev,
    Alpha,
    Beta,
    Pre,
    Rc,
    /// Something after `~` that is none of the above: before the release, but against another
    /// pre-release comparable only when identical.
    Other(String),
}

impl PreLabel {
    fn rank(&self) -> Option<u8> {
        match self {
            PreLabel::Dev => Some(0),
            PreLabel::Alpha => Some(1),
            PreLabel::Beta => Some(2),
            PreLabel::Pre | PreLabel::Rc => Some(3),
            PreLabel::Other(_) => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pre {
    label: PreLabel,
    number: Option<u64>,
}

/// A version read by the Yocto/Linux/Generic rules (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Parsed {
    epoch: Option<u64>,
    /// Trailing zeros removed.
    release: Vec<u64>,
    date_like: bool,
    letter: Option<u8>,
    patch: Option<u64>,
    pre: Option<Pre>,
    snapshot: bool,
}

/// Splits a leading run of ASCII digits off `s`.
fn take_digits(s: &str) -> Option<(u64, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 19 {
        // No digits, or too many to be a version number (a hash or a timestamp with seconds).
        return None;
    }
    Some((s[..end].parse().ok()?, &s[end..]))
}

fn strip_sep(s: &str) -> &str {
    s.strip_prefix(['-', '_', '.']).unwrap_or(s)
}

impl Parsed {
    fn parse(eco: Ecosystem, s: &str) -> Option<Parsed> {
        let s = s.trim().to_ascii_lowercase();
        let mut rest = s.as_str();

        // Epoch.
        let mut epoch = None;
        if let Some((e, after)) = rest.split_once(':') {
            if eco != Ecosystem::Yocto {
                return None;
            }
            let (n, tail) = take_digits(e)?;
            if !tail.is_empty() {
                return None;
            }
            epoch = Some(n);
            rest = after;
        }

        // Snapshot suffix: everything from `+git` on is the SCM revision.
        let mut snapshot = false;
        for scm in ["+git", "+svn", "+hg", "+bzr", "+cvs"] {
            if let Some(at) = rest.find(scm) {
                if eco == Ecosystem::Generic {
                    return None;
                }
                snapshot = true;
                rest = &rest[..at];
                break;
            }
        }

        rest = rest.strip_prefix('v').unwrap_or(rest);

        // Release: numbers joined by `.`, `-` or `_`.
        let (first, mut after) = take_digits(rest)?;
        let mut release = vec![first];
        let first_len = rest.len() - after.len();
        loop {
            let mut chars = after.chars();
            match chars.next() {
                Some('.' | '-' | '_') => match take_digits(chars.as_str()) {
                    Some((n, tail)) => {
                        release.push(n);
                        after = tail;
                    }
                    None => break,
                },
                _ => break,
            }
        }
        // `20230115` is a date; a longer single number is a hash or a timestamp, not a version.
        if release.len() == 1 && first_len > 8 {
            return None;
        }
        let date_like = (first_len == 8 && (19..=20).contains(&(first / 1_000_000)))
            || (first_len == 4 && (1970..=2100).contains(&first) && release.len() >= 2);
        rest = after;

        // OpenSSL-style letter: exactly one letter glued to the last number, not the start of a word.
        let mut letter = None;
        {
            let b = rest.as_bytes();
            if !b.is_empty()
                && b[0].is_ascii_lowercase()
                && b.get(1).is_none_or(|c| !c.is_ascii_alphabetic())
                && !(b[0] == b'p' && b.get(1).is_some_and(u8::is_ascii_digit))
            {
                letter = Some(b[0]);
                rest = &rest[1..];
            }
        }

        // Patch level: `p1`, `patch1`, optionally after a separator.
        let mut patch = None;
        {
            let r = strip_sep(rest);
            for word in ["patch", "p"] {
                if let Some(tail) = r.strip_prefix(word)
                    && let Some((n, tail)) = take_digits(tail)
                {
                    patch = Some(n);
                    rest = tail;
                    break;
                }
            }
        }

        // Pre-release.
        let mut pre = None;
        if let Some(tail) = rest.strip_prefix('~') {
            let (label, tail) = pre_label(tail).unwrap_or((PreLabel::Other(tail.to_owned()), ""));
            let (number, tail) = pre_number(tail);
            if !tail.is_empty() {
                return None;
            }
            pre = Some(Pre { label, number });
            rest = "";
        } else if !rest.is_empty() {
            let (label, tail) = pre_label(strip_sep(rest))?;
            let (number, tail) = pre_number(tail);
            pre = Some(Pre { label, number });
            rest = tail;
        }
        if !rest.is_empty() {
            return None;
        }

        if eco == Ecosystem::Linux
            && (letter.is_some()
                || patch.is_some()
                || pre.as_ref().is_some_and(|p| p.label != PreLabel::Rc))
        {
            return None;
        }

        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        Some(Parsed {
            epoch,
            release,
            date_like,
            letter,
            patch,
            pre,
            snapshot,
        })
    }

    /// The orderings `self` may have relative to `other`.
    fn possible(&self, other: &Parsed) -> Possible {
        if let (Some(a), Some(b)) = (self.epoch, other.epoch)
            && a != b
        {
            return Possible::of(a.cmp(&b));
        }
        if self.date_like != other.date_like {
            return Possible::NONE;
        }
        let Some(base) = self.cmp_base(other) else {
            return Possible::NONE;
        };
        match (self.snapshot, other.snapshot, base) {
            (false, false, o) => Possible::of(o),
            // Different bases: a snapshot stays before the next release.
            (_, _, Ordering::Less) => Possible::of(Ordering::Less),
            (_, _, Ordering::Greater) => Possible::of(Ordering::Greater),
            (true, false, Ordering::Equal) => Possible(Possible::EQUAL | Possible::GREATER),
            (false, true, Ordering::Equal) => Possible(Possible::EQUAL | Possible::LESS),
            (true, true, Ordering::Equal) => {
                Possible(Possible::LESS | Possible::EQUAL | Possible::GREATER)
            }
        }
    }

    /// Compares everything but epoch and snapshot; `None` when the pre-release labels cannot be ranked.
    fn cmp_base(&self, other: &Parsed) -> Option<Ordering> {
        let by_release = self
            .release
            .cmp(&other.release)
            .then(self.letter.cmp(&other.letter))
            .then(self.patch.cmp(&other.patch));
        if by_release != Ordering::Equal {
            return Some(by_release);
        }
        match (&self.pre, &other.pre) {
            (None, None) => Some(Ordering::Equal),
            (Some(_), None) => Some(Ordering::Less),
            (None, Some(_)) => Some(Ordering::Greater),
            (Some(a), Some(b)) => {
                if a.label != b.label {
                    let (ra, rb) = (a.label.rank()?, b.label.rank()?);
                    if ra == rb {
                        return None; // `pre` against `rc`
                    }
                    return Some(ra.cmp(&rb));
                }
                Some(a.number.cmp(&b.number))
            }
        }
    }
}

fn pre_label(s: &str) -> Option<(PreLabel, &str)> {
    // Longest words first so `preview` is not read as `pre` + `view`.
    for (word, label) in [
        ("preview", PreLabel::Pre),
        ("alpha", PreLabel::Alpha),
        ("beta", PreLabel::Beta),
        ("pre", PreLabel::Pre),
        ("dev", PreLabel::Dev),
        ("rc", PreLabel::Rc),
    ] {
        if let Some(tail) = s.strip_prefix(word) {
            return Some((label, tail));
        }
    }
    None
}

fn pre_number(s: &str) -> (Option<u64>, &str) {
    match take_digits(strip_sep(s)) {
        Some((n, tail)) => (Some(n), tail),
        None => (None, s),
    }
}

/// An NVD version range (`versionStartIncluding` … `versionEndExcluding`); absent bounds are open.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionRange {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "versionStartIncluding"
    )]
    pub start_including: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "versionStartExcluding"
    )]
    pub start_excluding: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "versionEndIncluding"
    )]
    pub end_including: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "versionEndExcluding"
    )]
    pub end_excluding: Option<String>,
}

impl VersionRange {
    /// Is `v` inside the range? `Undecidable` when a bound cannot be compared honestly with `v`
    /// and the other bounds do not already exclude it. An unbounded range contains every version.
    pub fn contains(&self, eco: Ecosystem, v: &str) -> Tri {
        type Cond = fn(Ordering) -> bool;
        let bounds: [(&Option<String>, Cond); 4] = [
            (&self.start_including, |o| o != Ordering::Less),
            (&self.start_excluding, |o| o == Ordering::Greater),
            (&self.end_including, |o| o != Ordering::Greater),
            (&self.end_excluding, |o| o == Ordering::Less),
        ];
        Tri::all(
            bounds
                .into_iter()
                .filter_map(|(bound, cond)| bound.as_deref().map(|b| (b, cond)))
                .map(|(bound, cond)| possible(eco, v, bound).test(cond)),
        )
    }

    /// True when no bound is set.
    pub fn is_unbounded(&self) -> bool {
        self.start_including.is_none()
            && self.start_excluding.is_none()
            && self.end_including.is_none()
            && self.end_excluding.is_none()
    }
}
