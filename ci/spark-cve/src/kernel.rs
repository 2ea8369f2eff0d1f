//! Kernel configuration: is the code a kernel CVE is about even built into our kernel?
//!
//! The kernel CNA's CVE 5 records name the source files a fix touches (`programFiles`, e.g.
//! `drivers/net/usb/foo.c`). With the kernel's `.config` and its source tree, a file is built
//! only when every `CONFIG_` symbol on its way is set (`y` or `m`): the one in its directory's
//! `Makefile`/`Kbuild` (`obj-$(CONFIG_FOO) += foo.o`, through composite objects `foo-y += bar.o`),
//! and the ones that let the build descend into each parent directory (`obj-$(CONFIG_NET) += net/`).
//! A CVE whose files are all provably not built is "not affected" with the symbol as reason; a
//! file whose gating cannot be read (a header, a Makefile we do not understand) decides nothing.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The set symbols of a kernel `.config`.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    set: HashSet<String>,
}

impl KernelConfig {
    /// Reads `CONFIG_X=y|m|"…"|n` lines; `# CONFIG_X is not set` and `=n` are unset.
    pub fn read(path: &Path) -> Result<KernelConfig> {
        let text = crate::error::read_to_string(path)?;
        let mut set = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(Error::invalid(
                    path,
                    format!("line {}", i + 1),
                    "expected CONFIG_X=value",
                ));
            };
            if !k.starts_with("CONFIG_") {
                return Err(Error::invalid(
                    path,
                    format!("line {}", i + 1),
                    format!("{k:?} is not a CONFIG_ symbol"),
                ));
            }
            if v != "n" {
                set.insert(k.to_string());
            }
        }
        Ok(KernelConfig { set })
    }

    pub fn is_set(&self, symbol: &str) -> bool {
        self.set.contains(symbol)
    }
}

/// One Makefile assignment: `target-cond += objects` with `cond` a symbol, `y` or `objs`.
struct Assign {
    target: String,
    cond: Option<String>,
    objects: Vec<String>,
}

/// A kernel source tree, read lazily per directory.
pub struct KernelTree {
    root: PathBuf,
    makefiles: HashMap<PathBuf, Vec<Assign>>,
}

impl KernelTree {
    pub fn new(root: &Path) -> KernelTree {
        KernelTree {
            root: root.to_path_buf(),
            makefiles: HashMap::new(),
        }
    }

    fn assigns(&mut self, dir: &Path) -> &[Assign] {
        let root = &self.root;
        self.makefiles.entry(dir.to_path_buf()).or_insert_with(|| {
            let text = ["Kbuild", "Makefile"]
                .iter()
                .filter_map(|n| std::fs::read_to_string(root.join(dir).join(n)).ok())
                .collect::<Vec<_>>()
                .join("\n")
                .replace("\\\n", " ");
            text.lines().filter_map(parse_assign).collect()
        })
    }

    /// The symbols that must be set for `obj` (`foo.o` or `sub/`) in `dir` to be built, or `None`
    /// when the Makefile does not say.
    fn object_gates(&mut self, dir: &Path, obj: &str, depth: usize) -> Option<Vec<String>> {
        if depth > 4 {
            return None;
        }
        let hits: Vec<(String, Option<String>)> = self
            .assigns(dir)
            .iter()
            .filter(|a| a.objects.iter().any(|o| o == obj))
            .map(|a| (a.target.clone(), a.cond.clone()))
            .collect();
        // Several rules may list the object; it is built when any of them is on. Keep it
        // simple and honest: decide only when exactly one rule lists it.
        let [(target, cond)] = hits.as_slice() else {
            return None;
        };
        let mut gates: Vec<String> = cond.iter().cloned().collect();
        if target != "obj" {
            // A part of the composite object `target.o`.
            gates.extend(self.object_gates(dir, &format!("{target}.o"), depth + 1)?);
        }
        Some(gates)
    }

    /// The symbols that must be set for the source `file` (relative to the tree) to be built.
    pub fn gates(&mut self, file: &str) -> Option<Vec<String>> {
        let path = Path::new(file);
        let stem = path.file_stem()?.to_str()?;
        if path.extension()?.to_str()? != "c" {
            return None;
        }
        let dir = path.parent()?.to_path_buf();
        let mut gates = self.object_gates(&dir, &format!("{stem}.o"), 0)?;
        // Walk up: each directory must be descended into from its parent. Top-level
        // directories (drivers/, net/, fs/ …) are always entered.
        let mut d = dir;
        while let Some(parent) = d.parent().map(Path::to_path_buf) {
            if parent.as_os_str().is_empty() {
                break;
            }
            let name = format!("{}/", d.file_name()?.to_str()?);
            gates.extend(self.object_gates(&parent, &name, 0)?);
            d = parent;
        }
        Some(gates)
    }
}

/// `obj-$(CONFIG_FOO) += a.o b/`, `foo-y := a.o`, `foo-objs += a.o`, `foo-$(CONFIG_BAR) += a.o`.
fn parse_assign(line: &str) -> Option<Assign> {
    let line = line.split('#').next()?.trim();
    let (lhs, rhs) = line.split_once("+=").or_else(|| line.split_once(":="))?;
    let lhs = lhs.trim();
    let (target, cond) = if let Some(rest) = lhs.strip_suffix(')') {
        let (t, sym) = rest.split_once("-$(")?;
        (t, Some(sym.to_string()))
    } else if let Some(t) = lhs.strip_suffix("-y").or_else(|| lhs.strip_suffix("-objs")) {
        (t, None)
    } else {
        return None;
    };
    if target.is_empty()
        || !target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return None;
    }
    if cond.as_deref().is_some_and(|c| !c.starts_with("CONFIG_")) {
        return None;
    }
    Some(Assign {
        target: target.to_string(),
        cond,
        objects: rhs.split_whitespace().map(str::to_string).collect(),
    })
}

/// Why none of `files` is built under `config`, or `None` when that cannot be shown.
pub fn not_built(tree: &mut KernelTree, config: &KernelConfig, files: &[String]) -> Option<String> {
    if files.is_empty() {
        return None;
    }
    let mut reasons = Vec::new();
    for f in files {
        let gates = tree.gates(f)?;
        let off = gates.iter().find(|g| !config.is_set(g))?;
        reasons.push(format!("{f} needs {off}"));
    }
    Some(format!("kernel config: not built ({})", reasons.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makefile_lines() {
        let a = parse_assign("obj-$(CONFIG_USB_NET_FOO) += foo.o bar/").unwrap();
        assert_eq!(
            (a.target.as_str(), a.cond.as_deref()),
            ("obj", Some("CONFIG_USB_NET_FOO"))
        );
        assert_eq!(a.objects, ["foo.o", "bar/"]);
        let b = parse_assign("foo-y := core.o # comment").unwrap();
        assert_eq!((b.target.as_str(), b.cond), ("foo", None));
        assert!(parse_assign("ccflags-y += -DDEBUG").is_some_and(|a| a.target == "ccflags"));
        assert!(parse_assign("ifeq ($(CONFIG_X),y)").is_none());
    }
}
