//! Query strings, time ranges, page sizes and cursors.
//!
//! Query strings are parsed here rather than by axum's `Query` extractor so that every mistake
//! (an unknown parameter, a repeated one, a malformed time) becomes a problem-details 400 that
//! names the parameter.
//!
//! Cursors are opaque to clients: base64url of a small JSON document naming the endpoint that
//! issued it and the key of the last row returned (keyset pagination: a page is an index range
//! scan after that key, however deep the client pages). A cursor from another endpoint, or one
//! that does not decode, is a 400. A tampered cursor can only move the start of the page; every
//! filter still comes from the query string.

use std::collections::HashMap;

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Latest time accepted: 9999-12-31T23:59:59Z (ingest stores nothing later).
pub const MAX_TS: i64 = 253_402_300_799;

/// The parameters of one request.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    /// Parses `raw`, refusing parameters not in `allowed` and parameters given twice.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if k.is_empty() && v.is_empty() {
                continue;
            }
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::InvalidQuery(if allowed.is_empty() {
                    format!("unknown query parameter {k:?}: this endpoint takes none")
                } else {
                    format!(
                        "unknown query parameter {k:?}; this endpoint takes {}",
                        allowed.join(", ")
                    )
                }));
            }
            if map.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::InvalidQuery(format!(
                    "query parameter {k:?} is given more than once"
                )));
            }
        }
        Ok(Params(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)
            .ok_or_else(|| ApiError::InvalidQuery(format!("query parameter {key:?} is required")))
    }

    /// `limit`: `default` when absent, 1..=`max` otherwise.
    pub fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::PageTooLarge {
                    got: text.chars().take(40).collect(),
                    max,
                }),
            },
        }
    }

    /// The time range `[from, to)` from `from` and `to` (both required), at most `max_secs` long.
    pub fn range(&self, max_secs: i64) -> Result<(i64, i64), ApiError> {
        let from = parse_time("from", self.required("from")?)?;
        let to = parse_time("to", self.required("to")?)?;
        if from >= to {
            return Err(ApiError::InvalidRange(format!(
                "from ({from}) must be before to ({to}); the range is [from, to)"
            )));
        }
        if to - from > max_secs {
            return Err(ApiError::InvalidRange(format!(
                "the range is {} days long; at most {} days per request",
                (to - from) / 86_400,
                max_secs / 86_400
            )));
        }
        Ok((from, to))
    }

    /// The decoded cursor, if any, issued by endpoint `kind`.
    pub fn cursor<K: DeserializeOwned>(&self, kind: &str) -> Result<Option<K>, ApiError> {
        self.get("cursor")
            .map(|c| decode_cursor(kind, c))
            .transpose()
    }
}

/// A time: RFC 3339 (`2026-11-02T00:00:00Z`) or unix seconds, between 1970 and 9999.
pub fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let secs = if let Ok(n) = text.parse::<i64>() {
        n
    } else {
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| {
                ApiError::InvalidRange(format!(
                    "{name}={:?} is not a time: use RFC 3339 (2026-11-02T00:00:00Z) or unix seconds ({e})",
                    text.chars().take(40).collect::<String>()
                ))
            })?
            .unix_timestamp()
    };
    if !(0..=MAX_TS).contains(&secs) {
        return Err(ApiError::InvalidRange(format!(
            "{name}={secs} is outside 1970-01-01 .. 9999-12-31"
        )));
    }
    Ok(secs)
}

#[derive(Serialize, Deserialize)]
struct CursorDoc<K> {
    /// The endpoint that issued it.
    e: String,
    /// The key of the last row returned.
    k: K,
}

/// An opaque cursor for `kind` after the row with key `key`.
pub fn encode_cursor<K: Serialize>(kind: &str, key: &K) -> String {
    let doc = CursorDoc {
        e: kind.to_owned(),
        k: key,
    };
    // Serializing plain tuples of strings and integers cannot fail.
    let json = serde_json::to_vec(&doc).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor<K: DeserializeOwned>(kind: &str, text: &str) -> Result<K, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| ApiError::InvalidCursor)?;
    let doc: CursorDoc<K> = serde_json::from_slice(&bytes).map_err(|_| ApiError::InvalidCursor)?;
    if doc.e != kind {
        return Err(ApiError::InvalidCursor);
    }
    Ok(doc.k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_unknown_and_repeated() {
        assert!(Params::parse(Some("limit=3"), &["limit"]).is_ok());
        assert!(matches!(
            Params::parse(Some("limt=3"), &["limit"]),
            Err(ApiError::InvalidQuery(m)) if m.contains("limt")
        ));
        assert!(Params::parse(Some("limit=3&limit=4"), &["limit"]).is_err());
    }

    #[test]
    fn limits_and_ranges() {
        let p = Params::parse(Some("limit=100001"), &["limit"]).unwrap();
        assert!(matches!(
            p.limit(10, 1000),
            Err(ApiError::PageTooLarge { max: 1000, .. })
        ));
        let p = Params::parse(Some("limit=0"), &["limit"]).unwrap();
        assert!(p.limit(10, 1000).is_err());
        let p = Params::parse(None, &["limit"]).unwrap();
        assert_eq!(p.limit(10, 1000).unwrap(), 10);
        let p = Params::parse(
            Some("from=2026-11-02T00:00:00Z&to=1793664000"),
            &["from", "to"],
        )
        .unwrap();
        assert_eq!(p.range(86_400).unwrap(), (1_793_577_600, 1_793_664_000));
        let p = Params::parse(Some("from=1793664000&to=1793577600"), &["from", "to"]).unwrap();
        assert!(matches!(p.range(86_400), Err(ApiError::InvalidRange(_))));
        let p = Params::parse(Some("from=yesterday&to=1"), &["from", "to"]).unwrap();
        assert!(
            matches!(p.range(86_400), Err(ApiError::InvalidRange(m)) if m.contains("RFC 3339"))
        );
    }

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_endpoint() {
        let c = encode_cursor("readings", &("MTR-1".to_owned(), 1_793_577_600_i64));
        let p = Params::parse(Some(&format!("cursor={c}")), &["cursor"]).unwrap();
        let k: (String, i64) = p.cursor("readings").unwrap().unwrap();
        assert_eq!(k, ("MTR-1".to_owned(), 1_793_577_600));
        assert!(matches!(
            p.cursor::<(String, i64)>("gateways"),
            Err(ApiError::InvalidCursor)
        ));
        let p = Params::parse(Some("cursor=%%%"), &["cursor"]).unwrap();
        assert!(matches!(
            p.cursor::<(String, i64)>("readings"),
            Err(ApiError::InvalidCursor)
        ));
    }
}
