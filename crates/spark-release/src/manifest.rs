//! The release manifest and its canonical byte form (layout in the crate docs).

use semver::Version;

use crate::error::{DecodeError, InvalidManifest};
use crate::timestamp::Timestamp;

/// The format byte of the canonical form this crate writes and reads.
pub const FORMAT_V1: u8 = 0x01;
/// Longest `compatible` string, in bytes.
pub const MAX_COMPATIBLE_LEN: usize = 255;
/// Longest version text (`version`, `min_version`), in bytes.
pub const MAX_VERSION_LEN: usize = 255;
/// Longest rollout id, in bytes.
pub const MAX_ROLLOUT_LEN: usize = 255;
/// Longest download location, in bytes.
pub const MAX_LOCATION_LEN: usize = 2048;
/// Most download locations in one manifest.
pub const MAX_LOCATIONS: usize = 8;

const FLAG_ALLOW_DOWNGRADE: u8 = 0x01;
/// Bytes before the first string: format, flags, two timestamps, size, digest.
const FIXED_LEN: usize = 1 + 1 + 8 + 8 + 8 + 32;
/// Longest canonical manifest: the fixed part, four u8-prefixed strings, the location count and
/// the longest locations. Decoders reject anything longer before parsing.
pub const MAX_MANIFEST_LEN: usize = FIXED_LEN
    + (1 + MAX_COMPATIBLE_LEN)
    + 2 * (1 + MAX_VERSION_LEN)
    + (1 + MAX_ROLLOUT_LEN)
    + 1
    + MAX_LOCATIONS * (2 + MAX_LOCATION_LEN);

/// What a release is and to whom and when it may be offered. See the crate docs for how it is
/// encoded and checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseManifest {
    /// RAUC `compatible` of the devices this release is for (e.g. `spark-bbb`).
    pub compatible: String,
    /// The release's version; must be newer than the installed one (see `allow_downgrade`).
    pub version: Version,
    /// SHA-256 of the whole bundle file.
    #[serde(with = "hex_digest")]
    pub bundle_sha256: [u8; 32],
    /// Size of the bundle file in bytes.
    pub bundle_size: u64,
    /// Where to download the bundle, tried in order. Empty means the agent fetches it by its
    /// SHA-256 from the OTA server that offered the release (bundles are content-addressed).
    #[serde(default)]
    pub locations: Vec<String>,
    /// The lowest installed version this release may be installed over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<Version>,
    /// When it was signed; not valid before (minus the clock-skew tolerance).
    pub issued_at: Timestamp,
    /// Not valid at or after this time.
    pub expires_at: Timestamp,
    /// Signed permission to install over a newer or equal version (a deliberate rollback).
    #[serde(default)]
    pub allow_downgrade: bool,
    /// The rollout this release belongs to, for the OTA server's and agent's reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
}

impl ReleaseManifest {
    /// Checks every rule of the canonical form that the types do not already enforce.
    pub fn validate(&self) -> Result<(), InvalidManifest> {
        check_text("compatible", &self.compatible, MAX_COMPATIBLE_LEN, false)?;
        check_len("version", self.version.to_string().len(), MAX_VERSION_LEN)?;
        if let Some(min) = &self.min_version {
            check_len("min_version", min.to_string().len(), MAX_VERSION_LEN)?;
            // A downgrade release may legitimately name a minimum above itself ("only roll
            // back devices that reached 2.0"); otherwise nobody could ever install it.
            if !self.allow_downgrade && min.cmp_precedence(&self.version).is_gt() {
                return Err(InvalidManifest::MinimumAboveVersion {
                    version: self.version.clone(),
                    min_version: min.clone(),
                });
            }
        }
        if let Some(rollout) = &self.rollout {
            check_text("rollout", rollout, MAX_ROLLOUT_LEN, false)?;
        }
        if self.locations.len() > MAX_LOCATIONS {
            return Err(InvalidManifest::TooManyLocations {
                count: self.locations.len(),
                max: MAX_LOCATIONS,
            });
        }
        for location in &self.locations {
            check_text("location", location, MAX_LOCATION_LEN, true)?;
        }
        if self.expires_at <= self.issued_at {
            return Err(InvalidManifest::ExpiresNotAfterIssued {
                issued_at: self.issued_at,
                expires_at: self.expires_at,
            });
        }
        Ok(())
    }

    /// The canonical byte form (what is signed). Fails if [`validate`](Self::validate) does.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, InvalidManifest> {
        self.validate()?;
        let mut out = Vec::with_capacity(FIXED_LEN + 64);
        out.push(FORMAT_V1);
        out.push(if self.allow_downgrade {
            FLAG_ALLOW_DOWNGRADE
        } else {
            0
        });
        out.extend_from_slice(&self.issued_at.unix().to_be_bytes());
        out.extend_from_slice(&self.expires_at.unix().to_be_bytes());
        out.extend_from_slice(&self.bundle_size.to_be_bytes());
        out.extend_from_slice(&self.bundle_sha256);
        // Lengths below fit their prefixes: validate() bounded each of them.
        put_str8(&mut out, &self.compatible);
        put_str8(&mut out, &self.version.to_string());
        put_str8(
            &mut out,
            &self
                .min_version
                .as_ref()
                .map(Version::to_string)
                .unwrap_or_default(),
        );
        put_str8(&mut out, self.rollout.as_deref().unwrap_or_default());
        out.push(self.locations.len() as u8);
        for location in &self.locations {
            out.extend_from_slice(&(location.len() as u16).to_be_bytes());
            out.extend_from_slice(location.as_bytes());
        }
        Ok(out)
    }

    /// Decodes exactly one canonical manifest; bytes after it are an error.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<ReleaseManifest, DecodeError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(DecodeError::TooLong {
                len: bytes.len(),
                max: MAX_MANIFEST_LEN,
            });
        }
        let mut reader = Reader { bytes, pos: 0 };
        let manifest = Self::decode(&mut reader)?;
        let rest = bytes.len() - reader.pos;
        if rest != 0 {
            return Err(DecodeError::TrailingBytes { count: rest });
        }
        Ok(manifest)
    }

    /// Decodes a manifest from the front of the reader, leaving the reader after it.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<ReleaseManifest, DecodeError> {
        let format = r.u8("format")?;
        if format != FORMAT_V1 {
            return Err(DecodeError::UnsupportedFormat { found: format });
        }
        let flags = r.u8("flags")?;
        if flags & !FLAG_ALLOW_DOWNGRADE != 0 {
            return Err(DecodeError::ReservedFlags { flags });
        }
        let issued_at = r.timestamp("issued_at")?;
        let expires_at = r.timestamp("expires_at")?;
        let bundle_size = u64::from_be_bytes(r.array("bundle_size")?);
        let bundle_sha256 = r.array("bundle_sha256")?;
        let compatible = r.str8("compatible")?.to_owned();
        let version = parse_version("version", r.str8("version")?)?;
        let min_version = match r.str8("min_version")? {
            "" => None,
            text => Some(parse_version("min_version", text)?),
        };
        let rollout = match r.str8("rollout")? {
            "" => None,
            text => Some(text.to_owned()),
        };
        let count = usize::from(r.u8("location count")?);
        if count > MAX_LOCATIONS {
            return Err(InvalidManifest::TooManyLocations {
                count,
                max: MAX_LOCATIONS,
            }
            .into());
        }
        let mut locations = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes(r.array("location length")?));
            locations.push(r.str_of_len("location", len)?.to_owned());
        }
        let manifest = ReleaseManifest {
            compatible,
            version,
            bundle_sha256,
            bundle_size,
            locations,
            min_version,
            issued_at,
            expires_at,
            allow_downgrade: flags & FLAG_ALLOW_DOWNGRADE != 0,
            rollout,
        };
        // Rules the byte layout alone does not enforce (empty compatible, control characters,
        // expiry after issue, ...): the same checks as at signing time.
        manifest.validate()?;
        Ok(manifest)
    }
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), InvalidManifest> {
    if len > max {
        return Err(InvalidManifest::FieldTooLong { field, len, max });
    }
    Ok(())
}

/// Non-empty, at most `max` bytes, no control characters; `no_space` also refuses whitespace
/// (a URL with a space in it is a copy-paste accident, not a location).
fn check_text(
    field: &'static str,
    text: &str,
    max: usize,
    no_space: bool,
) -> Result<(), InvalidManifest> {
    if text.is_empty() {
        return Err(InvalidManifest::EmptyField { field });
    }
    check_len(field, text.len(), max)?;
    if text
        .chars()
        .any(|c| c.is_control() || (no_space && c.is_whitespace()))
    {
        return Err(InvalidManifest::BadCharacter { field });
    }
    Ok(())
}

fn put_str8(out: &mut Vec<u8>, text: &str) {
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
}

/// Parses a version and insists it is written the way `Version`'s `Display` writes it, so the
/// decoded manifest re-encodes to the same bytes.
fn parse_version(field: &'static str, text: &str) -> Result<Version, DecodeError> {
    let version = Version::parse(text).map_err(|source| DecodeError::Version {
        field,
        value: text.to_owned(),
        source,
    })?;
    let canonical = version.to_string();
    if canonical != text {
        return Err(DecodeError::NonCanonicalVersion {
            field,
            value: text.to_owned(),
            canonical,
        });
    }
    Ok(version)
}

/// A bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(
        &mut self,
        field: &'static str,
        len: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.pos;
        if available < len {
            return Err(DecodeError::Truncated {
                field,
                offset: self.pos,
                needed: len - available,
            });
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let slice = self.take(field, N)?;
        // `take` returned exactly N bytes.
        Ok(slice.try_into().expect("take returns the requested length"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    fn timestamp(&mut self, field: &'static str) -> Result<Timestamp, DecodeError> {
        let value = u64::from_be_bytes(self.array(field)?);
        Timestamp::from_unix(value).ok_or(DecodeError::TimestampOutOfRange { field, value })
    }

    fn str8(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u8(field)?);
        self.str_of_len(field, len)
    }

    fn str_of_len(&mut self, field: &'static str, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(field, len)?).map_err(|_| DecodeError::Utf8 { field })
    }
}

/// Serde helper: a SHA-256 digest as 64 lowercase hex digits.
pub(crate) mod hex_digest {
    pub fn serialize<S: serde::Serializer>(digest: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(digest))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        crate::signed::hex_array(d)
    }
}
