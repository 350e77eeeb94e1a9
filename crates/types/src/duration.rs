//! Human durations for TTLs: `30s`, `30m`, `12h`, `90d`, `2w`.

use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error(
        "duration `{0}` is not a number followed by s, m, h, d or w (for example 30m, 12h, 90d)"
    )]
    Malformed(String),
    #[error("duration must be greater than zero")]
    Zero,
    #[error("duration is longer than 10 years")]
    TooLong,
}

/// A key lifetime.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(Duration);

impl Ttl {
    const MAX_SECONDS: u64 = 10 * 366 * 24 * 3600;

    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let malformed = || DurationError::Malformed(text.chars().take(32).collect());
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(malformed)?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| malformed())?;
        let unit_seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => return Err(malformed()),
        };
        let seconds = number
            .checked_mul(unit_seconds)
            .ok_or(DurationError::TooLong)?;
        Self::from_seconds(seconds)
    }

    pub fn from_seconds(seconds: u64) -> Result<Self, DurationError> {
        if seconds == 0 {
            return Err(DurationError::Zero);
        }
        if seconds > Self::MAX_SECONDS {
            return Err(DurationError::TooLong);
        }
        Ok(Self(Duration::from_secs(seconds)))
    }

    pub fn as_duration(&self) -> Duration {
        self.0
    }

    pub fn as_seconds(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ttl({}s)", self.0.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<u64, DurationError>)] = &[
            ("30m", Ok(1800)),
            ("12h", Ok(43_200)),
            ("90d", Ok(7_776_000)),
            ("2w", Ok(1_209_600)),
            ("45s", Ok(45)),
            ("0h", Err(DurationError::Zero)),
            ("11000d", Err(DurationError::TooLong)),
            (
                "99999999999999999999d",
                Err(DurationError::Malformed("99999999999999999999d".into())),
            ),
            ("12", Err(DurationError::Malformed("12".into()))),
            ("h", Err(DurationError::Malformed("h".into()))),
            ("1.5h", Err(DurationError::Malformed("1.5h".into()))),
            ("12 h", Err(DurationError::Malformed("12 h".into()))),
        ];
        for (input, expected) in cases {
            assert_eq!(
                Ttl::parse(input).map(|t| t.as_seconds()),
                *expected,
                "input {input}"
            );
        }
    }
}
