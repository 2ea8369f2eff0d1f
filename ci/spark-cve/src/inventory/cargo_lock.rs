//! `Cargo.lock` (versions 1 to 4): every `[[package]]` becomes a crate component.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{Component, Origin};

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: String,
    #[serde(default)]
    source: Option<String>,
}

/// Is this a crates.io source (git index or sparse index)?
fn from_crates_io(source: Option<&str>) -> bool {
    matches!(
        source,
        Some(
            "registry+https://github.com/rust-lang/crates.io-index"
                | "sparse+https://index.crates.io/"
        )
    )
}

/// Parses `Cargo.lock` text. Only crates.io packages are components: RustSec and OSV crates.io
/// advisories are about crates.io names, and cargo-audit skips path (workspace), git and other
/// registries' packages the same way (`ci/cve-vs-cargo-audit.sh` showed it: a local crate named
/// like an advisory's must not match).
pub fn read_cargo_lock(path: &Path, text: &str) -> Result<Vec<Component>> {
    let lock: Lock = toml::from_str(text).map_err(|e| Error::toml(path, text, &e))?;
    if lock.package.is_empty() {
        return Err(Error::invalid(
            path,
            "[[package]]",
            "no packages: is this a Cargo.lock?",
        ));
    }
    let mut out = Vec::with_capacity(lock.package.len());
    for (i, p) in lock.package.into_iter().enumerate() {
        if semver::Version::parse(&p.version).is_err() {
            return Err(Error::invalid(
                path,
                format!("package #{} ({})", i + 1, p.name),
                format!("version {:?} is not semver", p.version),
            ));
        }
        if !from_crates_io(p.source.as_deref()) {
            tracing::debug!(name = %p.name, source = ?p.source, "not from crates.io: not scanned");
            continue;
        }
        out.push(Component::new(
            p.name,
            Some(p.version),
            Origin::Crate,
            path.display().to_string(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_lockfile() {
        let text = r#"
version = 4

[[package]]
name = "smallvec"
version = "1.6.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "00"

[[package]]
name = "spark-cve"
version = "0.1.0"
dependencies = ["smallvec"]
"#;
        let c = read_cargo_lock(Path::new("Cargo.lock"), text).unwrap();
        // spark-cve is a path (workspace) package: not a crates.io crate.
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].label(), "smallvec@1.6.0");
        assert_eq!(c[0].origin, Origin::Crate);
    }

    #[test]
    fn bad_toml_names_line() {
        let err = read_cargo_lock(
            Path::new("x/Cargo.lock"),
            "[[package]]\nname = \"a\"\nversion = \n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("x/Cargo.lock: not valid TOML at line 3"),
            "{err}"
        );
    }
}
