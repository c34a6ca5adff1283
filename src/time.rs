//! Time as the agent reads and prints it, said once: one grammar for spans
//! that people type (flags, chat commands), one type for the `*_secs` keys
//! of the config, and one way each to print an instant and a span.
//!
//! Spans use humantime's grammar (`90s`, `30m`, `1h30m`, `2h 15m`, `1d`,
//! `1w`), read case-insensitively so `2H` is two hours (never two months).

use std::fmt;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The examples every span error shows.
const SPAN_EXAMPLES: &str = "e.g. 90s, 30m, 2h, 1d";

/// Parses a span typed by a person. Zero is not a span.
fn parse_span(s: &str) -> Result<Duration, String> {
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() {
        return Err(format!("missing duration ({SPAN_EXAMPLES})"));
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "'{t}' needs a unit: s, m, h, d or w ({SPAN_EXAMPLES})"
        ));
    }
    let d = humantime::parse_duration(&t).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => format!("'{t}' is too long"),
        _ => format!("'{t}' is not a duration ({SPAN_EXAMPLES})"),
    })?;
    if d.is_zero() {
        return Err(format!("'{t}' is zero"));
    }
    Ok(d)
}

/// [`parse_span`] in milliseconds, for the epoch-ms arithmetic of state.
pub(crate) fn parse_span_ms(s: &str) -> Result<i64, String> {
    let d = parse_span(s)?;
    i64::try_from(d.as_millis()).map_err(|_| format!("'{}' is too long", s.trim()))
}

/// `3d 4h`, `2h 5m`, `45s`: a span as people read it (coarse on purpose).
pub(crate) fn human_ms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// An instant (epoch ms) as RFC 3339 UTC to the second.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Milliseconds since `since`, for stage and probe timings.
pub(crate) fn elapsed_ms(since: std::time::Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// A `*_secs` config value: whole or fractional seconds (`5`, `0.25`), so
/// a test can time out in a quarter second. Bounded at both ends, so a
/// typo can make neither a timeout that never fires (`1e300`) nor one
/// that fires before anything can happen (`1e-300`).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Secs(Duration);

impl Secs {
    /// The longest value any `*_secs` key accepts: a week.
    const MAX: f64 = 7.0 * 86_400.0;
    /// The shortest non-zero value: a microsecond.
    const MIN_NONZERO: f64 = 1e-6;

    /// Whole seconds.
    pub const fn new(secs: u64) -> Secs {
        Secs(Duration::from_secs(secs))
    }

    /// Checks and converts a number of seconds.
    fn from_f64(secs: f64) -> Result<Secs, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{secs} is not a number of seconds"));
        }
        if secs > Self::MAX {
            return Err(format!(
                "{secs} seconds is more than a week ({} s)",
                Self::MAX
            ));
        }
        if secs > 0.0 && secs < Self::MIN_NONZERO {
            return Err(format!("{secs} seconds is below a microsecond"));
        }
        Ok(Secs(Duration::from_secs_f64(secs)))
    }

    /// The value as a duration.
    pub(crate) fn get(self) -> Duration {
        self.0
    }

    /// The value in (possibly fractional) seconds.
    pub(crate) fn as_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    /// The value in milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }

    /// Whether the value is zero.
    pub(crate) fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

/// The number as the config would write it (`5`, `0.25`), so messages read
/// "no answer within 5s" whatever the key's precision.
impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}", self.0.as_secs())
        } else {
            write!(f, "{}", self.0.as_secs_f64())
        }
    }
}

impl fmt::Debug for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}s")
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a number of seconds (like 5 or 0.5) from 0 to {}",
                    Secs::MAX
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                if v as f64 > Secs::MAX {
                    return Err(E::invalid_value(de::Unexpected::Unsigned(v), &self));
                }
                Ok(Secs::new(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                Secs::from_f64(v).map_err(|_| E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_table() {
        let ok = [
            ("90s", 90_000),
            ("30m", 1_800_000),
            ("2h", 7_200_000),
            ("1d", 86_400_000),
            ("1w", 7 * 86_400_000),
            ("1h30m", 5_400_000),
            ("1.5h", 5_400_000),
            ("2h 15m", 8_100_000),
            (" 2H ", 7_200_000),
        ];
        for (s, want) in ok {
            assert_eq!(parse_span_ms(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "30",
            "m",
            "2x",
            "-5m",
            "0m",
            "1.5",
            "99999999999999999d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert!(parse_span("30").unwrap_err().contains("needs a unit"));
    }

    #[test]
    fn human_spans() {
        assert_eq!(human_ms(5_400_000), "1h 30m");
        assert_eq!(human_ms(90_000), "1m");
        assert_eq!(human_ms(3 * 86_400_000 + 3_600_000), "3d 1h");
        assert_eq!(human_ms(-5), "0s");
    }

    #[test]
    fn instants_print_as_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
    }

    #[derive(Debug, Deserialize, Serialize)]
    struct T {
        t: Secs,
    }

    #[test]
    fn secs_read_whole_and_fractional_and_refuse_absurd_values() {
        let t: T = toml::from_str("t = 5").unwrap();
        assert_eq!(t.t.get(), Duration::from_secs(5));
        let t: T = toml::from_str("t = 0.25").unwrap();
        assert_eq!(t.t.get(), Duration::from_millis(250));
        assert_eq!(t.t.to_string(), "0.25");
        for bad in [
            "t = -1",
            "t = 1e300",
            "t = 1e-300",
            "t = nan",
            "t = inf",
            "t = 18446744073709551615",
            "t = \"5\"",
        ] {
            let e = toml::from_str::<T>(bad).unwrap_err().to_string();
            assert!(e.contains("a number of seconds"), "{bad}: {e}");
        }
        let back = toml::to_string(&T { t: Secs::new(30) }).unwrap();
        assert_eq!(back.trim(), "t = 30");
        let back = toml::to_string(&T {
            t: Secs::from_f64(0.5).unwrap(),
        })
        .unwrap();
        assert_eq!(back.trim(), "t = 0.5");
    }
}
