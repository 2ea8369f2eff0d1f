//! RustSec advisory database files (`crates/<name>/RUSTSEC-YYYY-NNNN.md`): a TOML front matter in
//! a ```` ```toml ```` fence, then the Markdown title and description.
//!
//! ```text
//! [advisory]            id, package, date, aliases, cvss, informational, withdrawn
//! [versions]            patched = [">= 1.2.3"], unaffected = ["< 1.0.0"]
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Advisory, Affected, Cvss};

#[derive(Deserialize)]
struct Front {
    advisory: Meta,
    #[serde(default)]
    versions: Versions,
}

#[derive(Deserialize)]
struct Meta {
    id: String,
    package: String,
    date: String,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    cvss: Option<String>,
    #[serde(default)]
    informational: Option<String>,
    #[serde(default)]
    withdrawn: Option<String>,
}

#[derive(Deserialize, Default)]
struct Versions {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

pub fn parse(path: &Path, text: &str) -> Result<Option<Advisory>> {
    let Some(rest) = text.trim_start().strip_prefix("```toml") else {
        return Err(Error::invalid(
            path,
            "line 1",
            "expected a ```toml front matter fence",
        ));
    };
    let Some(end) = rest.find("\n```") else {
        return Err(Error::invalid(
            path,
            "front matter",
            "unterminated ```toml fence",
        ));
    };
    let toml_text = &rest[..end];
    let body = &rest[end + 4..];
    let front: Front = toml::from_str(toml_text).map_err(|e| Error::toml(path, toml_text, &e))?;
    for req in front
        .versions
        .patched
        .iter()
        .chain(&front.versions.unaffected)
    {
        if semver::VersionReq::parse(req).is_err() {
            return Err(Error::invalid(
                path,
                "[versions]",
                format!("{req:?} is not a semver requirement"),
            ));
        }
    }
    if front.advisory.withdrawn.is_some() {
        return Ok(None);
    }
    let m = front.advisory;
    let title = body
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or("")
        .trim()
        .to_string();
    let cvss = m.cvss.map(|vector| Cvss {
        version: vector
            .strip_prefix("CVSS:")
            .and_then(|r| r.split('/').next())
            .unwrap_or("")
            .to_string(),
        score: super::cvss::v3_base_score(&vector).unwrap_or(f64::NAN),
        vector,
    });
    let cvss = cvss.filter(|c| !c.score.is_nan());
    Ok(Some(Advisory {
        id: m.id,
        aliases: m.aliases,
        summary: title,
        published: Some(m.date.clone()),
        modified: Some(m.date),
        cvss,
        informational: m.informational,
        affected: vec![Affected::Rustsec {
            package: m.package,
            patched: front.versions.patched,
            unaffected: front.versions.unaffected,
        }],
        sources: vec!["rustsec".into()],
    }))
}
