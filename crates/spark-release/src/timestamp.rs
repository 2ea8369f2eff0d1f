//! Whole-second UTC timestamps, as the canonical form stores them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time in whole seconds since the Unix epoch (UTC), from 1970-01-01T00:00:00Z to
/// 9999-12-31T23:59:59Z, the range RFC 3339 can write.
///
/// Whole seconds because that is what is signed: a sub-second part would either be lost in the
/// canonical form or make two manifests that print the same differ in their bytes. Text form is
/// RFC 3339 in UTC (`2026-11-26T00:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The largest timestamp: 9999-12-31T23:59:59Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799);

    /// The timestamp `secs` seconds after the epoch, or `None` past [`Timestamp::MAX`].
    pub fn from_unix(secs: u64) -> Option<Timestamp> {
        (secs <= Self::MAX.0).then_some(Timestamp(secs))
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> u64 {
        self.0
    }

    /// The system clock, truncated to whole seconds (clamped to the representable range).
    pub fn now() -> Timestamp {
        Self::from_system_time(SystemTime::now())
    }

    /// A system time truncated to whole seconds; times before the epoch become the epoch and
    /// times after [`Timestamp::MAX`] become `MAX`.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Timestamp(secs.min(Self::MAX.0))
    }

    /// `self + d` (whole seconds of `d`), or `None` past [`Timestamp::MAX`].
    pub fn checked_add(self, d: Duration) -> Option<Timestamp> {
        self.0.checked_add(d.as_secs()).and_then(Self::from_unix)
    }

    /// `self - d` (whole seconds of `d`), saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.as_secs()))
    }

    fn to_datetime(self) -> OffsetDateTime {
        // The range check in every constructor keeps us within what `time` represents.
        OffsetDateTime::from_unix_timestamp(self.0 as i64)
            .expect("Timestamp is within 0..=9999-12-31T23:59:59Z")
    }
}

impl TryFrom<OffsetDateTime> for Timestamp {
    type Error = TimestampParseError;

    /// Converts an exact whole-second time; refuses fractions and times outside the range.
    fn try_from(t: OffsetDateTime) -> Result<Self, Self::Error> {
        if t.nanosecond() != 0 {
            return Err(TimestampParseError::Fraction);
        }
        u64::try_from(t.unix_timestamp())
            .ok()
            .and_then(Timestamp::from_unix)
            .ok_or(TimestampParseError::OutOfRange)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .to_datetime()
            .format(&Rfc3339)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

/// Why a text is not a [`Timestamp`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampParseError {
    /// Not RFC 3339.
    #[error("not an RFC 3339 time: write it like 2026-11-26T00:00:00Z")]
    Syntax,
    /// Has a fractional second.
    #[error("has a fractional second: release times are whole seconds")]
    Fraction,
    /// Before 1970 or after 9999.
    #[error("out of range: use a time between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z")]
    OutOfRange,
}

impl FromStr for Timestamp {
    type Err = TimestampParseError;

    /// Parses RFC 3339 with any offset (it is converted to UTC).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimestampParseError::Syntax)?;
        Timestamp::try_from(t)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("time {text:?} {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_in_utc() {
        let t: Timestamp = "2026-11-26T01:30:00+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-26T00:30:00Z");
        assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(
            Timestamp::from_unix(0).unwrap().to_string(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn rejects_fractions_and_out_of_range() {
        assert_eq!(
            "2026-11-26T00:00:00.5Z".parse::<Timestamp>(),
            Err(TimestampParseError::Fraction)
        );
        assert_eq!(
            "1969-12-31T23:59:59Z".parse::<Timestamp>(),
            Err(TimestampParseError::OutOfRange)
        );
        assert_eq!(
            "yesterday".parse::<Timestamp>(),
            Err(TimestampParseError::Syntax)
        );
        assert!(Timestamp::from_unix(Timestamp::MAX.unix() + 1).is_none());
        assert!(Timestamp::MAX.checked_add(Duration::from_secs(1)).is_none());
    }
}
