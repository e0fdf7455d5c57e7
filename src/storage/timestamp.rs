//! Event timestamps: UTC instants with millisecond precision.
//!
//! Castore stamps events with `new Date().toISOString()`, i.e. `2024-05-01T12:34:56.789Z`.
//! annals keeps the same textual form at every boundary (serde, JSON export, page tokens) and
//! stores the instant as signed milliseconds since the Unix epoch, which orders correctly and
//! costs eight bytes on disk.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// A UTC instant with millisecond precision, written as ISO 8601 (`2024-05-01T12:34:56.789Z`).
///
/// ```
/// use annals::Timestamp;
/// let t: Timestamp = "2024-05-01T12:34:56.789Z".parse().unwrap();
/// assert_eq!(t.to_string(), "2024-05-01T12:34:56.789Z");
/// assert_eq!(t.unix_millis(), 1_714_566_896_789);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A timestamp string that is not ISO 8601 / RFC 3339, or is out of the supported range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid timestamp {input:?}: expected ISO 8601 such as 2024-05-01T12:34:56.789Z")]
pub struct InvalidTimestamp {
    /// The rejected input.
    pub input: String,
}

impl Timestamp {
    /// The current time, truncated to milliseconds.
    pub fn now() -> Self {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp(millis)
    }

    /// The instant `millis` milliseconds after the Unix epoch (negative: before it).
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    fn to_datetime(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        match self.to_datetime().and_then(|dt| dt.format(&format).ok()) {
            Some(s) => f.write_str(&s),
            // Outside the calendar range `time` supports: fall back to the raw number so that
            // displaying never fails.
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = InvalidTimestamp;

    /// Parses RFC 3339 (any offset, any sub-second precision); sub-millisecond digits are
    /// truncated, offsets are converted to UTC.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidTimestamp {
            input: s.to_owned(),
        };
        let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| invalid())?;
        let millis = dt.unix_timestamp_nanos().div_euclid(1_000_000);
        i64::try_from(millis).map(Timestamp).map_err(|_| invalid())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_javascript_to_iso_string() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1).to_string(),
            "1970-01-01T00:00:00.001Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn parses_offsets_and_truncates_sub_millisecond_digits() {
        let t: Timestamp = "2024-05-01T14:34:56.789999+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:34:56.789Z");
        let t: Timestamp = "2024-05-01T12:34:56Z".parse().unwrap();
        assert_eq!(t.to_string(), "2024-05-01T12:34:56.000Z");
    }

    #[test]
    fn rejects_non_iso_input() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01T00:00:00Z",
            "2024-05-01 12:00:00",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let t = Timestamp::from_unix_millis(1_714_566_896_789);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-05-01T12:34:56.789Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
