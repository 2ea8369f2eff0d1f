//! Tooling of the `meta-spark` Yocto layer, run from the repository root.
//!
//! - [`crates_inc`]: the `spark-crates.inc` that oe-core's `cargo` class needs (one `crate://` fetch
//!   and its SHA-256 per crates.io package of `Cargo.lock`), generated here instead of by
//!   `bitbake -c update_crates`, so it can be regenerated and checked without a Yocto build.
//! - [`check_layer`]: the layer follows the workspace: every daemon crate under `daemons/` has a
//!   recipe, a systemd unit and a D-Bus policy beside it, the unit is hardened, and the crates
//!   list is current. Data-driven from the workspace's member list, so a new daemon (e.g.
//!   `spark-webui`) fails the check until it is packaged.
//!
//! `tests/layer.rs` runs these checks and the external ones (oelint-adv, kas's schema, the boot
//! script in real U-Boot) in CI.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where the generated crates list lives, relative to the repository root.
pub const CRATES_INC: &str = "meta-spark/recipes-spark/spark-daemons/spark-crates.inc";
/// Where the daemon recipes live, relative to the repository root.
pub const RECIPES_DIR: &str = "meta-spark/recipes-spark/spark-daemons";
/// The registry source string of crates.io packages in `Cargo.lock`.
const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// Everything that can go wrong reading the workspace or the layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(
        "cannot read {path}: {source}; run spark-layer from the repository root (or pass --root)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    ParseToml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error(
        "Cargo.lock package {name} {version} comes from {source_id}: only crates.io packages can be \
         fetched by the cargo class's crate:// fetcher; vendor it into the workspace or publish it"
    )]
    UnsupportedSource {
        name: String,
        version: String,
        source_id: String,
    },
    #[error(
        "Cargo.lock package {name} {version} has no checksum: regenerate Cargo.lock with a current cargo"
    )]
    MissingChecksum { name: String, version: String },
}

/// One crates.io package of `Cargo.lock`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockedCrate {
    pub name: String,
    pub version: String,
    /// SHA-256 of the `.crate` file, hex, as crates.io publishes it.
    pub checksum: String,
}

#[derive(Deserialize)]
struct LockFile {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

/// The crates.io packages of a `Cargo.lock` text, sorted by name and version. Workspace members
/// (no `source`) are skipped; any other source (git, another registry) is an error, because the
/// Yocto build could not fetch it.
pub fn locked_crates(lock_path: &Path, text: &str) -> Result<Vec<LockedCrate>, LayerError> {
    let lock: LockFile = toml::from_str(text).map_err(|source| LayerError::ParseToml {
        path: lock_path.to_owned(),
        source,
    })?;
    let mut crates = Vec::new();
    for package in lock.package {
        let Some(source_id) = package.source else {
            continue;
        };
        if source_id != CRATES_IO {
            return Err(LayerError::UnsupportedSource {
                name: package.name,
                version: package.version,
                source_id,
            });
        }
        let checksum = package
            .checksum
            .ok_or_else(|| LayerError::MissingChecksum {
                name: package.name.clone(),
                version: package.version.clone(),
            })?;
        crates.push(LockedCrate {
            name: package.name,
            version: package.version,
            checksum,
        });
    }
    crates.sort();
    Ok(crates)
}

/// The text of `spark-crates.inc` for `crates`, in the form oe-core's cargo class reads
/// (`crate://crates.io/NAME/VERSION` in `SRC_URI`, `SRC_URI[NAME-VERSION.sha256sum]`).
pub fn crates_inc(crates: &[LockedCrate]) -> String {
    let mut out = String::from(
        "# Generated from Cargo.lock by `cargo run -p spark-layer -- crates --write`: do not edit.\n\
         # CI (meta-spark/tools/tests/layer.rs) fails when this file no longer matches Cargo.lock.\n\
         # Every crates.io package of the workspace's Cargo.lock: cargo builds with --frozen from\n\
         # the crates bitbake fetched, and resolving the workspace needs all of them.\n\n\
         SRC_URI += \"",
    );
    // oelint's layout: the first entry right after the quote, the others under it.
    const INDENT: &str = "            ";
    for (i, c) in crates.iter().enumerate() {
        let indent = if i == 0 { "" } else { INDENT };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{indent}crate://crates.io/{}/{} \\", c.name, c.version);
    }
    if crates.is_empty() {
        out.push_str("\"\n\n");
    } else {
        let _ = writeln!(out, "{INDENT}\"\n");
    }
    for c in crates {
        let _ = writeln!(
            out,
            "SRC_URI[{}-{}.sha256sum] = \"{}\"",
            c.name, c.version, c.checksum
        );
    }
    out
}

/// The crates list that `root/Cargo.lock` calls for.
pub fn expected_crates_inc(root: &Path) -> Result<String, LayerError> {
    let lock_path = root.join("Cargo.lock");
    let text = read(&lock_path)?;
    Ok(crates_inc(&locked_crates(&lock_path, &text)?))
}

/// Writes `spark-crates.inc` from `root/Cargo.lock`; returns whether the file changed.
pub fn write_crates_inc(root: &Path) -> Result<bool, LayerError> {
    let expected = expected_crates_inc(root)?;
    let path = root.join(CRATES_INC);
    if fs::read_to_string(&path).ok().as_deref() == Some(expected.as_str()) {
        return Ok(false);
    }
    fs::write(&path, expected).map_err(|source| LayerError::Write { path, source })?;
    Ok(true)
}

/// A gateway daemon of the workspace: a member under `daemons/` that builds a binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Package (and binary, and recipe, and unit) name.
    pub name: String,
    /// Member folder relative to the root, e.g. `daemons/spark-meterd`.
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct RootManifest {
    workspace: WorkspaceTable,
}

#[derive(Deserialize)]
struct WorkspaceTable {
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
struct MemberManifest {
    package: PackageTable,
    #[serde(default)]
    bin: Vec<toml::Value>,
}

#[derive(Deserialize)]
struct PackageTable {
    name: String,
}

/// The daemons of the workspace at `root`, in member order. Libraries under `daemons/` (such as
/// `rauc-client`) are not daemons.
pub fn workspace_daemons(root: &Path) -> Result<Vec<Daemon>, LayerError> {
    let manifest_path = root.join("Cargo.toml");
    let manifest: RootManifest = parse_toml(&manifest_path)?;
    let mut daemons = Vec::new();
    for member in manifest.workspace.members {
        let dir = PathBuf::from(&member);
        if !dir.starts_with("daemons") {
            continue;
        }
        let member_manifest: MemberManifest = parse_toml(&root.join(&dir).join("Cargo.toml"))?;
        let has_binary =
            !member_manifest.bin.is_empty() || root.join(&dir).join("src/main.rs").is_file();
        if has_binary {
            daemons.push(Daemon {
                name: member_manifest.package.name,
                dir,
            });
        }
    }
    Ok(daemons)
}

/// Settings every daemon unit must have (key, required value or `None` for "present").
const UNIT_HARDENING: &[(&str, Option<&str>)] = &[
    ("Type", Some("notify")),
    ("Restart", Some("on-failure")),
    ("WatchdogSec", None),
    ("User", None),
    ("NoNewPrivileges", Some("yes")),
    ("ProtectSystem", Some("strict")),
    ("ProtectHome", Some("yes")),
    ("PrivateTmp", Some("yes")),
    ("CapabilityBoundingSet", None),
    ("ReadWritePaths", None),
];

/// Checks the layer against the workspace at `root`; returns one line per problem (empty: fine).
pub fn check_layer(root: &Path) -> Result<Vec<String>, LayerError> {
    let mut problems = Vec::new();
    let expected = expected_crates_inc(root)?;
    if fs::read_to_string(root.join(CRATES_INC)).ok().as_deref() != Some(expected.as_str()) {
        problems.push(format!(
            "{CRATES_INC} does not match Cargo.lock: run `cargo run -p spark-layer -- crates --write` and commit it"
        ));
    }
    let daemons = workspace_daemons(root)?;
    if daemons.is_empty() {
        problems.push("no daemon found under daemons/ in the workspace members".to_owned());
    }
    for daemon in &daemons {
        check_daemon(root, daemon, &mut problems)?;
    }
    Ok(problems)
}

fn check_daemon(
    root: &Path,
    daemon: &Daemon,
    problems: &mut Vec<String>,
) -> Result<(), LayerError> {
    let name = &daemon.name;
    let recipe_path = root.join(RECIPES_DIR).join(format!("{name}.bb"));
    let unit_rel = daemon.dir.join(format!("{name}.service"));
    let unit_path = root.join(&unit_rel);
    if !recipe_path.is_file() {
        problems.push(format!(
            "daemon {name} ({}) has no recipe {}: add one that requires spark-daemon.inc",
            daemon.dir.display(),
            recipe_path
                .strip_prefix(root)
                .unwrap_or(&recipe_path)
                .display()
        ));
    } else {
        let recipe = read(&recipe_path)?;
        if !recipe.contains("require spark-daemon.inc") {
            problems.push(format!(
                "recipe of {name} does not require spark-daemon.inc"
            ));
        }
        match assignment(&recipe, "SPARK_DBUS_NAME") {
            // A daemon that owns no name and only reads (spark-webui): its policy is named
            // after it and may grant it calls, but must not let it own anything.
            None => match assignment(&recipe, "SPARK_DBUS_POLICY") {
                Some(policy_name) if policy_name == *name => {
                    let policy = daemon.dir.join(format!("{name}.conf"));
                    match fs::read_to_string(root.join(&policy)) {
                        Err(_) => problems.push(format!(
                            "daemon {name} has no D-Bus policy {}",
                            policy.display()
                        )),
                        Ok(text) if text.contains("<allow own") => problems.push(format!(
                            "{}: a daemon without SPARK_DBUS_NAME may not own a name",
                            policy.display()
                        )),
                        Ok(_) => {}
                    }
                }
                _ => problems.push(format!(
                    "recipe of {name} sets neither SPARK_DBUS_NAME (the name it owns) nor \
                     SPARK_DBUS_POLICY = \"{name}\" (owns none)"
                )),
            },
            Some(bus_name) => {
                let policy = daemon.dir.join(format!("{bus_name}.conf"));
                if !root.join(&policy).is_file() {
                    problems.push(format!(
                        "daemon {name} has no D-Bus policy {} for {bus_name}",
                        policy.display()
                    ));
                } else {
                    let text = read(&root.join(&policy))?;
                    let own = format!("<policy user=\"{name}\">\n    <allow own=\"{bus_name}\"/>");
                    if !text.contains(&own) {
                        problems.push(format!(
                            "{}: only user {name} may own {bus_name} (a <policy user=\"{name}\"> with <allow own=\"{bus_name}\"/>)",
                            policy.display()
                        ));
                    }
                    if text.contains("<allow own=") && text.matches("<allow own=").count() > 1 {
                        problems.push(format!("{}: owns more than one name", policy.display()));
                    }
                }
            }
        }
    }
    if !unit_path.is_file() {
        problems.push(format!(
            "daemon {name} has no systemd unit {}",
            unit_rel.display()
        ));
        return Ok(());
    }
    let unit = read(&unit_path)?;
    for (key, want) in UNIT_HARDENING {
        match (unit_value(&unit, key), want) {
            (None, _) => problems.push(format!("{}: {key}= missing", unit_rel.display())),
            (Some(got), Some(want)) if got != *want => problems.push(format!(
                "{}: {key}={got}, want {key}={want}",
                unit_rel.display()
            )),
            _ => {}
        }
    }
    // No capabilities, except binding a port below 1024 (the web UI's 443), which is what
    // systemd recommends over running a listener as root.
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        if let Some(caps) = unit_value(&unit, key)
            && !matches!(caps.as_str(), "" | "CAP_NET_BIND_SERVICE")
        {
            problems.push(format!(
                "{}: {key}={caps}, want none (or only CAP_NET_BIND_SERVICE)",
                unit_rel.display()
            ));
        }
    }
    if unit_value(&unit, "User")
        .as_deref()
        .is_some_and(|u| u != name)
    {
        problems.push(format!(
            "{}: User= must be the daemon's own user {name}",
            unit_rel.display()
        ));
    }
    if let Some(paths) = unit_value(&unit, "ReadWritePaths") {
        for path in paths.split_whitespace() {
            if path != "/data" && !path.starts_with("/data/") {
                problems.push(format!(
                    "{}: ReadWritePaths={path} is outside /data",
                    unit_rel.display()
                ));
            }
        }
    }
    Ok(())
}

/// The value of the last `KEY=value` line of a unit file (comments skipped).
pub fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// The value of a simple `VAR = "value"` line of a recipe.
fn assignment(recipe: &str, var: &str) -> Option<String> {
    recipe.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == var).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn read(path: &Path) -> Result<String, LayerError> {
    fs::read_to_string(path).map_err(|source| LayerError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LayerError> {
    toml::from_str(&read(path)?).map_err(|source| LayerError::ParseToml {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "zeta"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "bb"

[[package]]
name = "alpha"
version = "0.2.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aa"

[[package]]
name = "spark-meterd"
version = "0.1.0"
"#;

    #[test]
    fn crates_inc_lists_registry_packages_sorted() {
        let crates = locked_crates(Path::new("Cargo.lock"), LOCK).unwrap();
        let inc = crates_inc(&crates);
        let alpha = inc
            .find("SRC_URI += \"crate://crates.io/alpha/0.2.1 \\\n")
            .unwrap();
        let zeta = inc
            .find("\n            crate://crates.io/zeta/1.0.0 \\\n")
            .unwrap();
        assert!(alpha < zeta);
        assert!(inc.contains("SRC_URI[alpha-0.2.1.sha256sum] = \"aa\"\n"));
        assert!(inc.contains("SRC_URI[zeta-1.0.0.sha256sum] = \"bb\"\n"));
        assert!(!inc.contains("spark-meterd"));
    }

    #[test]
    fn git_dependencies_are_refused() {
        let lock = format!(
            "{LOCK}\n[[package]]\nname = \"forked\"\nversion = \"0.1.0\"\nsource = \"git+https://example.invalid/forked#abc\"\n"
        );
        let err = locked_crates(Path::new("Cargo.lock"), &lock).unwrap_err();
        assert!(matches!(err, LayerError::UnsupportedSource { ref name, .. } if name == "forked"));
        assert!(err.to_string().contains("vendor it"));
    }

    #[test]
    fn unit_values_skip_comments_and_take_the_last() {
        let unit = "# User=nobody\n[Service]\nUser=a\nUser=b\nCapabilityBoundingSet=\n";
        assert_eq!(unit_value(unit, "User").as_deref(), Some("b"));
        assert_eq!(
            unit_value(unit, "CapabilityBoundingSet").as_deref(),
            Some("")
        );
        assert_eq!(unit_value(unit, "Restart"), None);
    }
}
