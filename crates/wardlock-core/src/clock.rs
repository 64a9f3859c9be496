//! The two clocks Wardlock reasons with, as plain values handed in by the caller.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A reading of a monotonic clock, as time since an arbitrary origin. Used for idle
/// timeouts, where wall-clock jumps must not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(Duration);

impl MonoTime {
    pub const fn from_duration(since_origin: Duration) -> Self {
        Self(since_origin)
    }

    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: MonoTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl std::ops::Add<Duration> for MonoTime {
    type Output = MonoTime;
    fn add(self, rhs: Duration) -> MonoTime {
        MonoTime(self.0.saturating_add(rhs))
    }
}

/// UTC wall-clock time with millisecond precision, as milliseconds since the Unix epoch.
/// Used for audit timestamps, lockouts that must survive a restart, and TOTP.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UtcMillis(i64);

impl UtcMillis {
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (0 before it), as TOTP counts time.
    pub fn unix_seconds(self) -> u64 {
        u64::try_from(self.0.div_euclid(1000)).unwrap_or(0)
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// Time from `self` until `later`, zero if `later` is not later.
    pub fn until(self, later: UtcMillis) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// RFC 3339 with milliseconds, always in UTC (`2026-11-23T00:22:01.123Z`).
    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(t) => {
                let format = time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                );
                t.format(&format).unwrap_or_else(|_| self.0.to_string())
            }
            Err(_) => self.0.to_string(),
        }
    }

    pub fn parse_rfc3339(text: &str) -> Result<Self, time::error::Parse> {
        let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)?;
        let millis = t.unix_timestamp_nanos().div_euclid(1_000_000);
        Ok(Self(i64::try_from(millis).unwrap_or(i64::MAX)))
    }
}

impl fmt::Debug for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for UtcMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for UtcMillis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for UtcMillis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UtcMillis::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for UtcMillis {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC time, RFC 3339 with milliseconds"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for UtcMillis {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let t = UtcMillis::from_unix_millis(1_795_393_321_123);
        let text = t.to_rfc3339();
        assert_eq!(text, "2026-11-23T00:22:01.123Z");
        assert_eq!(UtcMillis::parse_rfc3339(&text).unwrap(), t);
    }

    #[test]
    fn until_is_zero_for_the_past() {
        let t = UtcMillis::from_unix_millis(10_000);
        assert_eq!(t.until(UtcMillis::from_unix_millis(5_000)), Duration::ZERO);
        assert_eq!(t.until(UtcMillis::from_unix_millis(12_500)), Duration::from_millis(2_500));
    }
}
