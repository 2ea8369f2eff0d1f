//! CPE 2.3 names and the whole NVD configuration logic.
//!
//! NVD says which platforms a CVE affects as *configurations* (CVE API 2.0, field
//! `configurations`): each is a list of nodes, each node a list of `cpeMatch` criteria joined by
//! `AND` or `OR`, optionally negated, and the nodes joined by the configuration's `operator`
//! (`OR` when absent). Criteria marked `vulnerable: false` are the platform the vulnerable
//! software must be *running on or with* ("OpenSSL before 1.1.1w on a Fortinet appliance"): they
//! have to hold, but they never make the component they match vulnerable. Yocto's `cve-check`
//! flattens all this into a list of products, so an application CVE that needs Windows is
//! reported against a Linux gateway, and a comparison it cannot make counts as "patched".
//!
//! [`evaluate`] keeps the structure and uses three-valued (Kleene) logic ([`Tri`]), so that a
//! comparison that cannot be made honestly ([`crate::version`]) ends as `Undecidable` instead of
//! as a guess, and only where it can change the answer:
//!
//! | `cpeMatch` A | `cpeMatch` B | node `OR` | node `AND` | `AND`, negated |
//! | --- | --- | --- | --- | --- |
//! | Yes | No | Yes | No | Yes |
//! | Yes | Undecidable | Yes | Undecidable | Undecidable |
//! | No | Undecidable | Undecidable | No | Yes |
//! | Undecidable | Undecidable | Undecidable | Undecidable | Undecidable |
//!
//! One `cpeMatch` against the platform (the components we ship) is the OR, over the components
//! whose product it names ([`Cpe::matches_product`]), of "the component's version fits":
//!
//! - a range (`versionStartIncluding` … `versionEndExcluding`): [`VersionRange::contains`];
//! - no range and a concrete version in the criteria (`…:openssl:1.0.2k:*:…`): the same version
//!   under the component's ecosystem rules ([`version::equals`], so `1.0` = `1.0.0` for recipes);
//!   a concrete `update` (`…:linux_kernel:6.2:rc1:…`) is part of that version (`6.2-rc1`);
//! - no range and version `*` (any) or `-` (NVD's "not applicable", used for hardware and other
//!   unversioned platforms): every version;
//! - a component whose own version is `*` or `-` (we do not know what we ship) against a
//!   criteria that needs a version: `Undecidable`.
//!
//! A configuration is `Yes` only when its logic is `Yes` *and* some `vulnerable: true` criteria
//! matched a component in a node that is not negated and not `No`; those components are the
//! finding's [`Evaluation::vulnerable_components`]. So "application AND running on OS" is `No`
//! when we do not ship that OS, and a configuration made only of platform conditions never
//! makes anything vulnerable.
//!
//! # Names
//!
//! [`Cpe`] parses and prints the CPE 2.3 formatted-string binding
//! (`cpe:2.3:part:vendor:product:version:update:edition:language:sw_edition:target_sw:target_hw:other`).
//! Attribute values are kept *unescaped* (`…:foo\:bar:…` is stored as `foo:bar`), except the
//! three characters that would otherwise change meaning: `\*`, `\?` and `\\` stay escaped, so an
//! unescaped `*` or `?` is always a wildcard. A whole value `*` is ANY, `-` is NA ([`ANY`],
//! [`NA`]). Printing escapes every character but letters, digits, `_`, `.`, `-` and wildcards,
//! so a name read from NVD prints back as it was.

use std::fmt;
use std::str::FromStr;

use crate::version::{self, Ecosystem, Tri, VersionRange};

/// The logical value ANY (`*`): matches every value.
pub const ANY: &str = "*";
/// The logical value NA (`-`): the attribute does not apply.
pub const NA: &str = "-";

/// A CPE 2.3 name (a WFN read from its formatted-string binding). See the module docs for how
/// values are stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cpe {
    /// `a` (application), `o` (operating system), `h` (hardware) or `*`.
    pub part: char,
    pub vendor: String,
    pub product: String,
    pub version: String,
    pub update: String,
    pub edition: String,
    pub language: String,
    pub sw_edition: String,
    pub target_sw: String,
    pub target_hw: String,
    pub other: String,
}

/// Why a string is not a CPE 2.3 formatted string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpeError {
    #[error("'{0}' is not a CPE 2.3 formatted string: it must start with 'cpe:2.3:'")]
    Prefix(String),
    #[error("'{name}' has {found} attributes after 'cpe:2.3:', a CPE 2.3 name has 11")]
    AttributeCount { name: String, found: usize },
    #[error("'{name}': part '{part}' is none of 'a', 'o', 'h', '*'")]
    Part { name: String, part: String },
    #[error("'{name}': attribute {index} is empty (use '*' for ANY or '-' for NA)")]
    Empty { name: String, index: usize },
    #[error("'{name}': attribute {index} ends in a lone '\\'")]
    Escape { name: String, index: usize },
}

impl Cpe {
    /// A name with the given part, vendor, product and version, every other attribute ANY.
    /// Values are taken as stored values (see the module docs): plain text, `*` ANY, `-` NA.
    pub fn new(
        part: char,
        vendor: impl Into<String>,
        product: impl Into<String>,
        version: impl Into<String>,
    ) -> Cpe {
        Cpe {
            part,
            vendor: vendor.into(),
            product: product.into(),
            version: version.into(),
            update: ANY.into(),
            edition: ANY.into(),
            language: ANY.into(),
            sw_edition: ANY.into(),
            target_sw: ANY.into(),
            target_hw: ANY.into(),
            other: ANY.into(),
        }
    }

    /// Does this name (NVD criteria) name the same product as `target` (a component we ship),
    /// ignoring version and update, which [`evaluate`] checks against ranges?
    ///
    /// Per attribute, case-insensitively: criteria ANY matches anything; criteria NA matches NA;
    /// a value matches an equal value, with `*`/`?` wildcards at its ends. A target attribute
    /// that is ANY (we do not know our `target_sw`, say) matches any criteria: not knowing must
    /// not hide a CVE.
    pub fn matches_product(&self, target: &Cpe) -> bool {
        let part_ok = self.part == '*' || target.part == '*' || self.part == target.part;
        part_ok
            && [
                (&self.vendor, &target.vendor),
                (&self.product, &target.product),
                (&self.edition, &target.edition),
                (&self.language, &target.language),
                (&self.sw_edition, &target.sw_edition),
                (&self.target_sw, &target.target_sw),
                (&self.target_hw, &target.target_hw),
                (&self.other, &target.other),
            ]
            .into_iter()
            .all(|(c, t)| attribute_matches(c, t))
    }

    /// The version to compare: `version`, plus `-update` when the update is concrete
    /// (`6.2` + `rc1` = `6.2-rc1`, `8.9` + `p1` = `8.9-p1`). `None` when the version is ANY or NA.
    pub fn full_version(&self) -> Option<String> {
        if is_logical(&self.version) {
            return None;
        }
        let version = unescape_literal(&self.version);
        Some(if is_logical(&self.update) {
            version
        } else {
            format!("{version}-{}", unescape_literal(&self.update))
        })
    }

    fn attributes(&self) -> [&String; 10] {
        [
            &self.vendor,
            &self.product,
            &self.version,
            &self.update,
            &self.edition,
            &self.language,
            &self.sw_edition,
            &self.target_sw,
            &self.target_hw,
            &self.other,
        ]
    }
}

fn is_logical(v: &str) -> bool {
    v == ANY || v == NA
}

/// The text of a stored value with its remaining escapes removed (for version comparison).
fn unescape_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One character of a stored value: literal, or a wildcard.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters.
    Many,
    /// `?`: exactly one character.
    One,
}

fn tokens(v: &str) -> Vec<Tok> {
    let mut out = Vec::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' => match chars.next() {
                Some(next) => Tok::Lit(next.to_ascii_lowercase()),
                None => Tok::Lit('\\'),
            },
            '*' => Tok::Many,
            '?' => Tok::One,
            c => Tok::Lit(c.to_ascii_lowercase()),
        });
    }
    out
}

fn glob(pattern: &[Tok], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((Tok::Many, rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((Tok::One, rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((Tok::Lit(c), rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

fn attribute_matches(criteria: &str, target: &str) -> bool {
    if criteria == ANY || target == ANY {
        return true;
    }
    if criteria == NA || target == NA {
        return criteria == target;
    }
    // The target is a name we ship: its wildcards, if any, are taken literally.
    let text: Vec<char> = unescape_literal(target)
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    glob(&tokens(criteria), &text)
}

impl FromStr for Cpe {
    type Err = CpeError;

    fn from_str(s: &str) -> Result<Cpe, CpeError> {
        let name = || s.to_owned();
        let body = s
            .strip_prefix("cpe:2.3:")
            .ok_or_else(|| CpeError::Prefix(name()))?;

        // Split on unescaped ':' and unescape each value as it goes.
        let mut values: Vec<String> = Vec::with_capacity(11);
        let mut current = String::new();
        let mut raw_current = String::new();
        let mut chars = body.chars();
        let finish = |current: &mut String, raw: &mut String, values: &mut Vec<String>| {
            let value = if raw == "\\-" {
                // A literal hyphen as the whole value, not NA.
                "\\-".to_owned()
            } else {
                std::mem::take(current)
            };
            current.clear();
            raw.clear();
            values.push(value);
        };
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    let Some(next) = chars.next() else {
                        return Err(CpeError::Escape {
                            name: name(),
                            index: values.len() + 1,
                        });
                    };
                    raw_current.push(c);
                    raw_current.push(next);
                    if matches!(next, '\\' | '*' | '?') {
                        current.push('\\');
                    }
                    current.push(next);
                }
                ':' => finish(&mut current, &mut raw_current, &mut values),
                c => {
                    raw_current.push(c);
                    current.push(c);
                }
            }
        }
        finish(&mut current, &mut raw_current, &mut values);

        if values.len() != 11 {
            return Err(CpeError::AttributeCount {
                name: name(),
                found: values.len(),
            });
        }
        if let Some(index) = values.iter().position(String::is_empty) {
            return Err(CpeError::Empty {
                name: name(),
                index: index + 1,
            });
        }
        let part = match values[0].as_str() {
            "a" | "A" => 'a',
            "o" | "O" => 'o',
            "h" | "H" => 'h',
            "*" => '*',
            other => {
                return Err(CpeError::Part {
                    name: name(),
                    part: other.to_owned(),
                });
            }
        };
        let mut it = values.into_iter().skip(1);
        let mut next = || it.next().unwrap_or_default();
        Ok(Cpe {
            part,
            vendor: next(),
            product: next(),
            version: next(),
            update: next(),
            edition: next(),
            language: next(),
            sw_edition: next(),
            target_sw: next(),
            target_hw: next(),
            other: next(),
        })
    }
}

/// Writes a stored value in the formatted-string binding.
fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if v == "\\-" {
        return f.write_str(v);
    }
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                // Stored escapes (`\*`, `\?`, `\\`) are already in bound form.
                f.write_str("\\")?;
                if let Some(next) = chars.next() {
                    fmt::Write::write_char(f, next)?;
                }
            }
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?') => {
                fmt::Write::write_char(f, c)?;
            }
            c if !c.is_ascii() => fmt::Write::write_char(f, c)?,
            c => {
                f.write_str("\\")?;
                fmt::Write::write_char(f, c)?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Cpe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpe:2.3:{}", self.part)?;
        for v in self.attributes() {
            f.write_str(":")?;
            write_value(f, v)?;
        }
        Ok(())
    }
}

impl serde::Serialize for Cpe {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cpe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cpe, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How a node joins its criteria, or a configuration its nodes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operator {
    And,
    #[default]
    Or,
}

/// One element of a CVE's `configurations` (NVD CVE API 2.0).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    /// How the nodes are joined; NVD omits it for a single node (then `OR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<Operator>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
    pub nodes: Vec<Node>,
}

/// A node: criteria joined by `operator`, the result flipped when `negate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(default)]
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negate: bool,
    #[serde(default)]
    pub cpe_match: Vec<CpeMatch>,
}

/// One `cpeMatch` criteria: a CPE name, optionally a version range.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpeMatch {
    /// `false`: a platform the vulnerable software runs on or with; never itself vulnerable.
    pub vulnerable: bool,
    /// A CPE 2.3 formatted string; parsed by [`evaluate`] (an unreadable one is `Undecidable`).
    pub criteria: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_start_including: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_start_excluding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_end_including: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_end_excluding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_criteria_id: Option<String>,
}

impl CpeMatch {
    /// The version bounds of this criteria.
    pub fn range(&self) -> VersionRange {
        VersionRange {
            start_including: self.version_start_including.clone(),
            start_excluding: self.version_start_excluding.clone(),
            end_including: self.version_end_including.clone(),
            end_excluding: self.version_end_excluding.clone(),
        }
    }

    /// Does this criteria match `component`, product and version? (`vulnerable` plays no part.)
    /// `Err` when the criteria is not a CPE 2.3 name.
    pub fn matches(&self, component: &Component) -> Result<Tri, CpeError> {
        let criteria: Cpe = self.criteria.parse()?;
        Ok(match_parsed(&criteria, &self.range(), component))
    }
}

fn match_parsed(criteria: &Cpe, range: &VersionRange, component: &Component) -> Tri {
    if !criteria.matches_product(&component.cpe) {
        return Tri::No;
    }
    let exact = criteria.full_version();
    if exact.is_none() && range.is_unbounded() {
        // Criteria version ANY or NA without bounds: every version of the product.
        return Tri::Yes;
    }
    let Some(ours) = component.cpe.full_version() else {
        // We ship the product but do not know which version.
        return Tri::Undecidable;
    };
    let eco = component.ecosystem;
    let exact_ok = match &exact {
        Some(exact) => version::equals(eco, &ours, exact),
        None => Tri::Yes,
    };
    exact_ok.and(range.contains(eco, &ours))
}

/// Something we ship: its CPE with a concrete version, and how to compare that version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Component {
    pub cpe: Cpe,
    pub ecosystem: Ecosystem,
}

/// The answer of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Evaluation {
    /// Yes: vulnerable; No: not affected; Undecidable: a comparison that could change the
    /// answer could not be made honestly.
    pub result: Tri,
    /// Indices into the platform of the components that `vulnerable: true` criteria matched
    /// (`Yes`) where they count. Filled when `result` is `Yes` or `Undecidable` (then: the
    /// components that would be vulnerable), empty when `No`. Sorted, without duplicates.
    pub vulnerable_components: Vec<usize>,
    /// Indices of the components whose comparison was `Undecidable` anywhere in the
    /// configuration; empty when `result` is `No`. Sorted, without duplicates.
    pub undecidable_components: Vec<usize>,
}

impl Evaluation {
    fn no() -> Evaluation {
        Evaluation {
            result: Tri::No,
            vulnerable_components: Vec::new(),
            undecidable_components: Vec::new(),
        }
    }
}

/// What one node found.
struct NodeResult {
    result: Tri,
    /// Kleene OR of its `vulnerable: true` criteria (an unreadable one is `Undecidable`).
    vulnerable: Tri,
    /// `(component, Yes | Undecidable)` of its `vulnerable: true` criteria.
    vulnerable_hits: Vec<(usize, Tri)>,
    undecidable: Vec<usize>,
}

fn evaluate_node(node: &Node, platform: &[Component]) -> NodeResult {
    let mut results = Vec::with_capacity(node.cpe_match.len());
    let mut vulnerable = Tri::No;
    let mut vulnerable_hits = Vec::new();
    let mut undecidable = Vec::new();
    for m in &node.cpe_match {
        let criteria: Cpe = match m.criteria.parse() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(criteria = %m.criteria, error = %e, "unreadable NVD criteria: undecidable");
                results.push(Tri::Undecidable);
                if m.vulnerable {
                    vulnerable = Tri::Undecidable.or(vulnerable);
                }
                continue;
            }
        };
        let range = m.range();
        let mut any = Tri::No;
        for (i, component) in platform.iter().enumerate() {
            let t = match_parsed(&criteria, &range, component);
            if t == Tri::Undecidable {
                undecidable.push(i);
            }
            if m.vulnerable && t != Tri::No {
                vulnerable_hits.push((i, t));
            }
            any = any.or(t);
        }
        if m.vulnerable {
            vulnerable = vulnerable.or(any);
        }
        results.push(any);
    }
    let mut result = match node.operator {
        Operator::Or => Tri::any(results),
        Operator::And => Tri::all(results),
    };
    if node.negate {
        result = !result;
        // A negated node states what must be absent: nothing in it is vulnerable.
        vulnerable = Tri::No;
        vulnerable_hits.clear();
    }
    NodeResult {
        result,
        vulnerable,
        vulnerable_hits,
        undecidable,
    }
}

/// Evaluates one configuration against what we ship (see the module docs).
pub fn evaluate(cfg: &Configuration, platform: &[Component]) -> Evaluation {
    let nodes: Vec<NodeResult> = cfg
        .nodes
        .iter()
        .map(|n| evaluate_node(n, platform))
        .collect();
    let mut logic = match cfg.operator.unwrap_or_default() {
        Operator::Or => Tri::any(nodes.iter().map(|n| n.result)),
        Operator::And => Tri::all(nodes.iter().map(|n| n.result)),
    };
    // Nodes that count: a node that is `No` did not make the configuration true.
    let counting = || nodes.iter().filter(|n| !cfg.negate && n.result != Tri::No);
    if cfg.negate {
        logic = !logic;
    }
    let hit = Tri::any(counting().map(|n| n.vulnerable));
    let result = logic.and(hit);
    if result == Tri::No {
        return Evaluation::no();
    }
    let mut vulnerable_components: Vec<usize> = counting()
        .flat_map(|n| n.vulnerable_hits.iter())
        .filter(|&&(_, t)| t == Tri::Yes)
        .map(|&(i, _)| i)
        .collect();
    vulnerable_components.sort_unstable();
    vulnerable_components.dedup();
    let mut undecidable_components: Vec<usize> = nodes
        .iter()
        .flat_map(|n| n.undecidable.iter().copied())
        .collect();
    undecidable_components.sort_unstable();
    undecidable_components.dedup();
    Evaluation {
        result,
        vulnerable_components,
        undecidable_components,
    }
}

/// Evaluates all configurations of one CVE: the CVE applies when any configuration does
/// (Kleene OR); the component lists are the union over the configurations that are not `No`.
pub fn evaluate_any(cfgs: &[Configuration], platform: &[Component]) -> Evaluation {
    let mut out = Evaluation::no();
    for cfg in cfgs {
        let e = evaluate(cfg, platform);
        out.result = out.result.or(e.result);
        out.vulnerable_components.extend(e.vulnerable_components);
        out.undecidable_components.extend(e.undecidable_components);
    }
    if out.result == Tri::No {
        return Evaluation::no();
    }
    out.vulnerable_components.sort_unstable();
    out.vulnerable_components.dedup();
    out.undecidable_components.sort_unstable();
    out.undecidable_components.dedup();
    out
}
