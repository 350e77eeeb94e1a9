//! Budgets as operators write them (`50usd/month`, `5usd/day`, `200/total`)
//! and the calendar periods they reset on (UTC).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, Month, OffsetDateTime, Time};

use crate::{EnvName, KeyId, NanoUsd, ProjectName, parse_fixed_decimal};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error(
        "budget `{0}` is not AMOUNT/PERIOD like 50usd/month, 5usd/day or 200/total (periods: hour, day, week, month, total)"
    )]
    Malformed(String),
    #[error(
        "amount `{0}` is not a dollar amount like 50, 50usd, $50 or 12.50usd (at most 9 decimals)"
    )]
    Amount(String),
    #[error("amount `{0}` is above the largest budget, 9223372036usd")]
    TooLarge(String),
    #[error("a budget must be greater than zero")]
    Zero,
    #[error("period `{0}` is not one of hour, day, week, month, total")]
    Period(String),
}

/// The window a budget counts spend in. Calendar periods in UTC: a `day`
/// budget resets at 00:00 UTC, a `week` budget on Monday 00:00 UTC, a
/// `month` budget on the first of the month; `total` never resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hour,
    Day,
    Week,
    Month,
    Total,
}

impl Period {
    pub fn parse(text: &str) -> Result<Self, BudgetError> {
        match text {
            "hour" | "hourly" | "h" => Ok(Self::Hour),
            "day" | "daily" | "d" => Ok(Self::Day),
            "week" | "weekly" | "w" => Ok(Self::Week),
            "month" | "monthly" | "mo" => Ok(Self::Month),
            "total" | "lifetime" => Ok(Self::Total),
            other => Err(BudgetError::Period(other.chars().take(16).collect())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::Total => "total",
        }
    }

    /// The start of the period that contains `now` (the Unix epoch for
    /// `total`).
    pub fn start_of(&self, now: OffsetDateTime) -> OffsetDateTime {
        let now = now.to_offset(time::UtcOffset::UTC);
        let midnight = |date: Date| date.with_time(Time::MIDNIGHT).assume_utc();
        match self {
            Self::Hour => now
                .replace_time(Time::MIDNIGHT)
                .saturating_add(Duration::hours(i64::from(now.hour()))),
            Self::Day => midnight(now.date()),
            Self::Week => midnight(now.date()).saturating_sub(Duration::days(i64::from(
                now.weekday().number_days_from_monday(),
            ))),
            Self::Month => midnight(now.date().replace_day(1).unwrap_or(now.date())),
            Self::Total => OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// When the period starting at `start` ends (the next one begins), or
    /// `None` for `total`.
    pub fn end_of(&self, start: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Self::Hour => Some(start.saturating_add(Duration::hours(1))),
            Self::Day => Some(start.saturating_add(Duration::days(1))),
            Self::Week => Some(start.saturating_add(Duration::weeks(1))),
            Self::Month => {
                let (year, month) = match start.month() {
                    Month::December => (start.year() + 1, Month::January),
                    month => (start.year(), month.next()),
                };
                Date::from_calendar_date(year, month, 1)
                    .ok()
                    .map(|date| date.with_time(Time::MIDNIGHT).assume_utc())
            }
            Self::Total => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money per period: `50usd/month`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BudgetLimit {
    pub amount: NanoUsd,
    pub period: Period,
}

impl BudgetLimit {
    pub fn parse(text: &str) -> Result<Self, BudgetError> {
        let (amount, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| BudgetError::Malformed(text.chars().take(40).collect()))?;
        Ok(Self {
            amount: parse_usd(amount.trim())?,
            period: Period::parse(&period.trim().to_ascii_lowercase())?,
        })
    }
}

impl fmt::Display for BudgetLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.amount, self.period)
    }
}

/// What a budget applies to. A request is checked against the budgets of
/// its key, its key's project and its key's environment together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum BudgetScope {
    Key(KeyId),
    Project(ProjectName),
    Env(EnvName),
}

impl BudgetScope {
    /// `key`, `project` or `env`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Key(_) => "key",
            Self::Project(_) => "project",
            Self::Env(_) => "env",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Key(id) => id.as_str(),
            Self::Project(name) => name.as_str(),
            Self::Env(name) => name.as_str(),
        }
    }

    /// Rebuilds a scope from its stored `kind` and `name`.
    pub fn from_parts(kind: &str, name: &str) -> Option<Self> {
        match kind {
            "key" => KeyId::parse(name).ok().map(Self::Key),
            "project" => ProjectName::parse(name).ok().map(Self::Project),
            "env" => EnvName::parse(name).ok().map(Self::Env),
            _ => None,
        }
    }
}

impl fmt::Display for BudgetScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(id) => write!(f, "key {id}"),
            Self::Project(name) => write!(f, "project `{name}`"),
            Self::Env(name) => write!(f, "environment `{name}`"),
        }
    }
}

/// Per-key rate limits. `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (input + output) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
}

impl KeyLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.max_parallel.is_none()
    }

    /// A child key's limits under these (its parent's): each requested
    /// limit must be at most the parent's, and a limit left out is the
    /// parent's.
    pub fn narrow(&self, requested: KeyLimits) -> Result<KeyLimits, NarrowError> {
        fn one<T: Copy + Ord + fmt::Display>(
            name: &'static str,
            parent: Option<T>,
            child: Option<T>,
        ) -> Result<Option<T>, NarrowError> {
            match (parent, child) {
                (Some(parent), Some(child)) if child > parent => Err(NarrowError(format!(
                    "{name} {child} is above the parent key's {parent}"
                ))),
                (parent, None) => Ok(parent),
                (_, child) => Ok(child),
            }
        }
        Ok(KeyLimits {
            rpm: one("rpm", self.rpm, requested.rpm)?,
            tpm: one("tpm", self.tpm, requested.tpm)?,
            max_parallel: one("max-parallel", self.max_parallel, requested.max_parallel)?,
        })
    }
}

/// Why a child key cannot have what it asked for: it would widen its parent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("a child key can only narrow its parent: {0}")]
pub struct NarrowError(pub String);

/// What the gateway does when it sees a key behave unlike itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyAction {
    /// Raise an alert only.
    #[default]
    Alert,
    /// Raise an alert and suspend the key until an operator resumes it.
    Suspend,
}

impl AnomalyAction {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "alert" => Some(Self::Alert),
            "suspend" => Some(Self::Suspend),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Suspend => "suspend",
        }
    }
}

/// Parses `50`, `50usd`, `$50`, `12.5 USD` into nano-USD, exactly.
fn parse_usd(text: &str) -> Result<NanoUsd, BudgetError> {
    let bad = || BudgetError::Amount(text.chars().take(32).collect());
    let lower = text.to_ascii_lowercase();
    let number = lower.strip_prefix('$').unwrap_or(&lower);
    let number = number.strip_suffix("usd").unwrap_or(number).trim();
    let nano = match parse_fixed_decimal(number, 9).map(i64::try_from) {
        Some(Ok(nano)) => nano,
        // Well formed but too large (nano-dollars are an i64): say so,
        // rather than that it is not an amount.
        Some(Err(_)) => return Err(BudgetError::TooLarge(text.chars().take(32).collect())),
        None if is_decimal(number) => {
            return Err(BudgetError::TooLarge(text.chars().take(32).collect()));
        }
        None => return Err(bad()),
    };
    if nano == 0 {
        return Err(BudgetError::Zero);
    }
    Ok(NanoUsd(nano))
}

/// Digits with at most one point and at most 9 decimals (the shape
/// `parse_fixed_decimal` accepts, whatever the size).
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue #14, tester's finding 11): a well-formed amount
    /// too large for nano-dollars was "not a dollar amount".
    #[test]
    fn too_large_amounts_state_the_maximum() {
        for (text, expect) in [
            (
                "18446744073usd/day",
                "above the largest budget, 9223372036usd",
            ),
            ("9223372037usd/day", "above the largest budget"),
            ("99999999999999999999999/day", "above the largest budget"),
            ("50 dollars/day", "is not a dollar amount"),
            ("1.0000000001usd/day", "is not a dollar amount"),
        ] {
            let error = BudgetLimit::parse(text).unwrap_err().to_string();
            assert!(error.contains(expect), "{text}: {error}");
        }
        assert!(BudgetLimit::parse("9223372036usd/day").is_ok());
    }

    #[test]
    fn child_limits_narrow_or_inherit() {
        let parent = KeyLimits {
            rpm: Some(60),
            tpm: None,
            max_parallel: Some(4),
        };
        let child = parent
            .narrow(KeyLimits {
                rpm: Some(10),
                tpm: Some(1_000),
                max_parallel: None,
            })
            .unwrap();
        assert_eq!(
            child,
            KeyLimits {
                rpm: Some(10),
                tpm: Some(1_000),
                max_parallel: Some(4)
            }
        );
        let error = parent
            .narrow(KeyLimits {
                rpm: Some(61),
                ..KeyLimits::default()
            })
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "a child key can only narrow its parent: rpm 61 is above the parent key's 60"
        );
    }
    use time::macros::datetime;

    #[test]
    fn parses_budgets() {
        let ok = |text: &str, nano: i64, period: Period| {
            assert_eq!(
                BudgetLimit::parse(text),
                Ok(BudgetLimit {
                    amount: NanoUsd(nano),
                    period
                }),
                "{text}"
            );
        };
        ok("50usd/month", 50_000_000_000, Period::Month);
        ok("5usd/day", 5_000_000_000, Period::Day);
        ok("$0.25/hour", 250_000_000, Period::Hour);
        ok("12.5 USD / week", 12_500_000_000, Period::Week);
        ok("200/total", 200_000_000_000, Period::Total);
        ok("0.000000001usd/day", 1, Period::Day);

        let err = |text: &str| BudgetLimit::parse(text).unwrap_err();
        assert!(matches!(err("50usd"), BudgetError::Malformed(_)));
        assert!(matches!(err("50eur/month"), BudgetError::Amount(_)));
        assert!(matches!(err("-5/day"), BudgetError::Amount(_)));
        assert!(matches!(err("1.0000000001/day"), BudgetError::Amount(_)));
        assert!(matches!(
            err("99999999999999/day"),
            BudgetError::TooLarge(_)
        ));
        assert_eq!(err("0usd/day"), BudgetError::Zero);
        assert!(matches!(err("5/fortnight"), BudgetError::Period(_)));
    }

    #[test]
    fn displays_budgets() {
        let limit = BudgetLimit::parse("12.5usd/week").unwrap();
        assert_eq!(limit.to_string(), "$12.500000/week");
    }

    #[test]
    fn calendar_periods_in_utc() {
        // A Wednesday.
        let now = datetime!(2026-12-31 17:45:12.5 UTC);
        let cases = [
            (
                Period::Hour,
                datetime!(2026-12-31 17:00 UTC),
                Some(datetime!(2026-12-31 18:00 UTC)),
            ),
            (
                Period::Day,
                datetime!(2026-12-31 00:00 UTC),
                Some(datetime!(2027-01-01 00:00 UTC)),
            ),
            (
                Period::Week,
                datetime!(2026-12-28 00:00 UTC),
                Some(datetime!(2027-01-04 00:00 UTC)),
            ),
            (
                Period::Month,
                datetime!(2026-12-01 00:00 UTC),
                Some(datetime!(2027-01-01 00:00 UTC)),
            ),
            (Period::Total, OffsetDateTime::UNIX_EPOCH, None),
        ];
        for (period, start, end) in cases {
            assert_eq!(period.start_of(now), start, "{period}");
            assert_eq!(period.end_of(start), end, "{period}");
        }
        // Local offsets are converted to UTC first.
        assert_eq!(
            Period::Day.start_of(datetime!(2026-03-01 01:00 +02:00)),
            datetime!(2026-02-28 00:00 UTC)
        );
        assert_eq!(
            Period::Month.end_of(datetime!(2028-02-01 00:00 UTC)),
            Some(datetime!(2028-03-01 00:00 UTC))
        );
    }
}
