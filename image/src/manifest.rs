//! The RAUC manifest (`manifest.raucm`): parsing, checking and writing.
//!
//! The manifest is a GLib key file. rauc 1.8 accepts exactly these groups and keys and rejects every
//! other one ("Invalid key 'x' in group '[update]'"), so we do the same: a bundle we build must be one
//! that rauc 1.8 installs, and one we verify must be one it would accept.
//!
//! ```text
//! [update]          compatible (required), version, description, build
//! [bundle]          format = plain | verity | crypt, verity-hash, verity-salt, verity-size, crypt-key
//! [hooks]           filename, hooks
//! [handler]         filename, args
//! [image.<class>]   filename (required), sha256, size, hooks, adaptive   (also [image.<class>.<variant>])
//! [meta.<label>]    any key
//! ```
//!
//! For `verity` bundles the three `verity-*` keys appear only in the copy of the manifest that the CMS
//! signature encapsulates, never in the one stored inside the squashfs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::ManifestError;

/// The payload format named in `[bundle] format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BundleFormat {
    /// Squashfs, then a detached CMS signature over it, then the signature length.
    #[default]
    Plain,
    /// Squashfs, dm-verity hash tree, then a CMS signature encapsulating the manifest.
    Verity,
    /// Encrypted verity bundle (rauc >= 1.8 can sign it; spark-image only recognises it).
    Crypt,
}

impl BundleFormat {
    /// The spelling used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Verity => "verity",
            Self::Crypt => "crypt",
        }
    }
}

impl std::str::FromStr for BundleFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "verity" => Ok(Self::Verity),
            "crypt" => Ok(Self::Crypt),
            other => Err(format!(
                "unknown bundle format '{other}': use plain or verity"
            )),
        }
    }
}

/// The dm-verity parameters a verity bundle's signed manifest carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerityParams {
    /// Root hash of the tree.
    pub hash: [u8; 32],
    /// Salt mixed into every block digest.
    pub salt: [u8; 32],
    /// Size of the hash tree in bytes (the squashfs is not counted).
    pub size: u64,
}

/// One `[image.<class>]` group.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Image {
    /// The slot class this image is for (`rootfs`).
    pub slot_class: String,
    /// Optional variant (`[image.rootfs.variant]`).
    pub variant: Option<String>,
    /// File name inside the bundle.
    pub filename: String,
    /// SHA-256 of the image file, filled in when the bundle is built.
    #[serde(serialize_with = "crate::manifest::hex_opt")]
    pub sha256: Option<[u8; 32]>,
    /// Size of the image file in bytes, filled in when the bundle is built.
    pub size: Option<u64>,
    /// Slot hooks (`pre-install`, `install`, `post-install`).
    pub hooks: Vec<String>,
    /// Adaptive update methods (`block-hash-index`).
    pub adaptive: Vec<String>,
}

/// A parsed manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `[update] compatible`: must equal the target's `system.conf` compatible.
    pub compatible: String,
    /// `[update] version`.
    pub version: Option<String>,
    /// `[update] description`.
    pub description: Option<String>,
    /// `[update] build`.
    pub build: Option<String>,
    /// `[bundle] format` (plain when absent, as in rauc).
    pub format: BundleFormat,
    /// `[bundle] verity-*`: only in the signed copy of a verity manifest.
    pub verity: Option<VerityParams>,
    /// `[bundle] crypt-key`.
    pub crypt_key: Option<String>,
    /// `[hooks]` group, kept as key/value pairs.
    pub install_hooks: BTreeMap<String, String>,
    /// `[handler]` group, kept as key/value pairs.
    pub handler: BTreeMap<String, String>,
    /// The images, in manifest order.
    pub images: Vec<Image>,
    /// `[meta.<label>]` groups.
    pub meta: BTreeMap<String, BTreeMap<String, String>>,
}

/// Serialises an optional digest as lowercase hex (for `info --json`).
pub(crate) fn hex_opt<S: serde::Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&hex::encode(d)),
        None => s.serialize_none(),
    }
}

/// Maximum manifest size we parse: a manifest is a few hundred bytes; this stops a hostile bundle
/// from making us read a huge "manifest" into memory.
pub const MAX_MANIFEST_LEN: usize = 1 << 20;

impl Manifest {
    /// Parses and checks manifest text as rauc 1.8 does.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge { len: text.len() });
        }
        let groups = parse_key_file(text)?;
        let mut m = Manifest::default();
        let mut have_update = false;
        for (group, entries) in &groups {
            let unknown = |key: &str| ManifestError::UnknownKey {
                group: group.clone(),
                key: key.to_string(),
            };
            match group.as_str() {
                "update" => {
                    have_update = true;
                    for (k, v) in entries {
                        match k.as_str() {
                            "compatible" => m.compatible = v.clone(),
                            "version" => m.version = Some(v.clone()),
                            "description" => m.description = Some(v.clone()),
                            "build" => m.build = Some(v.clone()),
                            _ => return Err(unknown(k)),
                        }
                    }
                }
                "bundle" => {
                    let mut hash = None;
                    let mut salt = None;
                    let mut size = None;
                    for (k, v) in entries {
                        match k.as_str() {
                            "format" => {
                                m.format = v.parse().map_err(|reason| ManifestError::BadValue {
                                    group: group.clone(),
                                    key: k.clone(),
                                    reason,
                                })?
                            }
                            "verity-hash" => hash = Some(parse_digest(group, k, v)?),
                            "verity-salt" => salt = Some(parse_digest(group, k, v)?),
                            "verity-size" => size = Some(parse_u64(group, k, v)?),
                            "crypt-key" => m.crypt_key = Some(v.clone()),
                            _ => return Err(unknown(k)),
                        }
                    }
                    m.verity = match (hash, salt, size) {
                        (Some(hash), Some(salt), Some(size)) => {
                            Some(VerityParams { hash, salt, size })
                        }
                        (None, None, None) => None,
                        _ => {
                            return Err(ManifestError::IncompleteVerity);
                        }
                    };
                }
                "hooks" | "handler" => {
                    let allowed: &[&str] = if group == "hooks" {
                        &["filename", "hooks"]
                    } else {
                        &["filename", "args"]
                    };
                    let target = if group == "hooks" {
                        &mut m.install_hooks
                    } else {
                        &mut m.handler
                    };
                    for (k, v) in entries {
                        if !allowed.contains(&k.as_str()) {
                            return Err(unknown(k));
                        }
                        target.insert(k.clone(), v.clone());
                    }
                }
                g if g.starts_with("image.") => {
                    let rest = &g["image.".len()..];
                    let (slot_class, variant) = match rest.split_once('.') {
                        Some((c, v)) => (c.to_string(), Some(v.to_string())),
                        None => (rest.to_string(), None),
                    };
                    if slot_class.is_empty() {
                        return Err(ManifestError::UnknownGroup(group.clone()));
                    }
                    let mut image = Image {
                        slot_class,
                        variant,
                        filename: String::new(),
                        sha256: None,
                        size: None,
                        hooks: Vec::new(),
                        adaptive: Vec::new(),
                    };
                    for (k, v) in entries {
                        match k.as_str() {
                            "filename" => image.filename = v.clone(),
                            "sha256" => image.sha256 = Some(parse_digest(group, k, v)?),
                            "size" => image.size = Some(parse_u64(group, k, v)?),
                            "hooks" => image.hooks = split_list(v),
                            "adaptive" => image.adaptive = split_list(v),
                            _ => return Err(unknown(k)),
                        }
                    }
                    if image.filename.is_empty() {
                        return Err(ManifestError::MissingKey {
                            group: group.clone(),
                            key: "filename",
                        });
                    }
                    check_plain_name(&image.filename)?;
                    m.images.push(image);
                }
                g if g.starts_with("meta.") && g.len() > "meta.".len() => {
                    m.meta.insert(
                        g["meta.".len()..].to_string(),
                        entries.iter().cloned().collect(),
                    );
                }
                _ => return Err(ManifestError::UnknownGroup(group.clone())),
            }
        }
        if !have_update || m.compatible.is_empty() {
            return Err(ManifestError::MissingKey {
                group: "update".into(),
                key: "compatible",
            });
        }
        Ok(m)
    }

    /// Writes the manifest in the key-file syntax rauc reads. `verity` keys are written only when
    /// `with_verity` is set (the signed copy of a verity manifest).
    pub fn to_text(&self, with_verity: bool) -> String {
        let mut out = String::new();
        out.push_str("[update]\n");
        kv(&mut out, "compatible", &self.compatible);
        for (k, v) in [
            ("version", &self.version),
            ("description", &self.description),
            ("build", &self.build),
        ] {
            if let Some(v) = v {
                kv(&mut out, k, v);
            }
        }
        out.push_str("\n[bundle]\n");
        kv(&mut out, "format", self.format.as_str());
        if let (true, Some(v)) = (with_verity, &self.verity) {
            kv(&mut out, "verity-hash", &hex::encode(v.hash));
            kv(&mut out, "verity-salt", &hex::encode(v.salt));
            kv(&mut out, "verity-size", &v.size.to_string());
        }
        if let Some(c) = &self.crypt_key {
            kv(&mut out, "crypt-key", c);
        }
        for (name, group) in [("hooks", &self.install_hooks), ("handler", &self.handler)] {
            if !group.is_empty() {
                let _ = write!(out, "\n[{name}]\n");
                for (k, v) in group {
                    kv(&mut out, k, v);
                }
            }
        }
        for image in &self.images {
            out.push_str("\n[image.");
            out.push_str(&image.slot_class);
            if let Some(v) = &image.variant {
                out.push('.');
                out.push_str(v);
            }
            out.push_str("]\n");
            kv(&mut out, "filename", &image.filename);
            if let Some(d) = &image.sha256 {
                kv(&mut out, "sha256", &hex::encode(d));
            }
            if let Some(s) = image.size {
                kv(&mut out, "size", &s.to_string());
            }
            if !image.hooks.is_empty() {
                kv(&mut out, "hooks", &image.hooks.join(";"));
            }
            if !image.adaptive.is_empty() {
                kv(&mut out, "adaptive", &image.adaptive.join(";"));
            }
        }
        for (label, group) in &self.meta {
            let _ = write!(out, "\n[meta.{label}]\n");
            for (k, v) in group {
                kv(&mut out, k, v);
            }
        }
        out
    }
}

fn kv(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push('=');
    escape_value(out, value);
    out.push('\n');
}

/// GKeyFile escapes: leading space as `\s`, and `\n \t \r \\` anywhere.
fn escape_value(out: &mut String, value: &str) {
    for (i, c) in value.chars().enumerate() {
        match c {
            ' ' if i == 0 => out.push_str("\\s"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
}

fn unescape_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

type Groups = Vec<(String, Vec<(String, String)>)>;

/// Parses the key-file syntax into groups in file order. A group named twice is merged (GLib does
/// the same); a key set twice keeps its last value.
fn parse_key_file(text: &str) -> Result<Groups, ManifestError> {
    let mut groups: Groups = Vec::new();
    let mut current: Option<usize> = None;
    for (lineno, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .trim_end()
                .strip_suffix(']')
                .ok_or(ManifestError::Syntax {
                    line: lineno + 1,
                    reason: "group header without closing ']'",
                })?;
            current = Some(match groups.iter().position(|(g, _)| g == name) {
                Some(i) => i,
                None => {
                    groups.push((name.to_string(), Vec::new()));
                    groups.len() - 1
                }
            });
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(ManifestError::Syntax {
            line: lineno + 1,
            reason: "expected 'key=value'",
        })?;
        let key = key.trim_end();
        if key.is_empty() {
            return Err(ManifestError::Syntax {
                line: lineno + 1,
                reason: "empty key",
            });
        }
        let Some(g) = current else {
            return Err(ManifestError::Syntax {
                line: lineno + 1,
                reason: "key before the first [group]",
            });
        };
        let value = unescape_value(value.trim_start());
        let entries = &mut groups[g].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => entries.push((key.to_string(), value)),
        }
    }
    Ok(groups)
}

fn split_list(v: &str) -> Vec<String> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn parse_digest(group: &str, key: &str, v: &str) -> Result<[u8; 32], ManifestError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.trim(), &mut out).map_err(|_| ManifestError::BadValue {
        group: group.to_string(),
        key: key.to_string(),
        reason: format!("'{v}' is not 64 hex digits"),
    })?;
    Ok(out)
}

fn parse_u64(group: &str, key: &str, v: &str) -> Result<u64, ManifestError> {
    v.trim().parse().map_err(|_| ManifestError::BadValue {
        group: group.to_string(),
        key: key.to_string(),
        reason: format!("'{v}' is not a byte count"),
    })
}

/// Image file names are plain names in the bundle's root: no path separators, no `..`. This keeps
/// `extract` from ever writing outside its target directory.
fn check_plain_name(name: &str) -> Result<(), ManifestError> {
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(ManifestError::BadFilename(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "[update]\ncompatible=spark-bbb\nversion=1.2.3\n\n[bundle]\nformat=verity\n\
        verity-hash=17db93806cab73a4595cbe207891050bd8489a8b7feb5f3a5c542ab7aba01f72\n\
        verity-salt=591b9097479aacd051095ab68f5efa0cf33e26a3739467941c36516e56e4eb1d\nverity-size=4096\n\n\
        [image.rootfs]\nsha256=e6c1692c694270257ec83fafa7ecfc1647c08e690334b5bfe66178b4207f365a\n\
        size=300000\nfilename=rootfs.img\n\n[meta.spark]\nrollout=week-48\n";

    #[test]
    fn parses_rauc_written_manifest_and_round_trips() {
        let m = Manifest::parse(SAMPLE).unwrap();
        assert_eq!(m.compatible, "spark-bbb");
        assert_eq!(m.version.as_deref(), Some("1.2.3"));
        assert_eq!(m.format, BundleFormat::Verity);
        assert_eq!(m.verity.unwrap().size, 4096);
        assert_eq!(m.images.len(), 1);
        assert_eq!(m.images[0].size, Some(300000));
        assert_eq!(m.meta["spark"]["rollout"], "week-48");
        let again = Manifest::parse(&m.to_text(true)).unwrap();
        assert_eq!(again, m);
        let inner = Manifest::parse(&m.to_text(false)).unwrap();
        assert_eq!(inner.verity, None);
    }

    #[test]
    fn rejects_what_rauc_1_8_rejects() {
        let cases = [
            (
                "[update]\ncompatible=x\nmin-rauc-version=1.9\n",
                "min-rauc-version",
            ),
            ("[update]\ncompatible=x\n[bogus]\na=b\n", "bogus"),
            ("[update]\nversion=1\n", "compatible"),
            (
                "[update]\ncompatible=x\n[image.rootfs]\nsize=1\n",
                "filename",
            ),
            (
                "[update]\ncompatible=x\n[image.rootfs]\nfilename=../etc/passwd\n",
                "passwd",
            ),
            ("[update]\ncompatible=x\n[bundle]\nformat=zip\n", "zip"),
            (
                "[update]\ncompatible=x\n[bundle]\nverity-size=1\n",
                "verity",
            ),
            ("compatible=x\n", "before the first"),
        ];
        for (text, needle) in cases {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
        }
    }

    #[test]
    fn escapes_round_trip() {
        let mut m = Manifest::parse("[update]\ncompatible=x\n").unwrap();
        m.description = Some(" two\nlines\\ and\ttabs".into());
        let back = Manifest::parse(&m.to_text(false)).unwrap();
        assert_eq!(back.description, m.description);
    }
}
