//! Calendar times as reports take them (`audit tail --since`, `usage
//! --until`, `usage --month`): parsed once, here, by the server and by the
//! CLI alike, so both accept and refuse the same text with the same words.
//!
//! Every time is UTC. A range is half open: `since` is included, `until`
//! is not, so `--since 2026-11-01 --until 2026-12-01` is November exactly.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime, Time};

/// What the error of a bad time names: the forms accepted.
pub const ACCEPTED_TIMES: &str =
    "an RFC 3339 time (2026-11-01T09:30:00Z) or a UTC date (2026-11-01)";

/// An instant from an RFC 3339 time (`2026-11-01T09:30:00Z`, any offset)
/// or a date (`2026-11-01`: its midnight, UTC). The error names the forms
/// accepted.
pub fn parse_instant(text: &str) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at.to_offset(time::UtcOffset::UTC));
    }
    parse_date(text)
        .map(|date| date.with_time(Time::MIDNIGHT).assume_utc())
        .ok_or_else(|| format!("`{text}` is not a time: give {ACCEPTED_TIMES}"))
}

/// `YYYY-MM-DD`, strictly (two-digit month and day).
fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()
}

/// A calendar month `YYYY-MM` as the half-open range `[first day, first
/// day of the next month)`, UTC.
pub fn parse_month(text: &str) -> Result<(OffsetDateTime, OffsetDateTime), String> {
    let text = text.trim();
    let refuse = || format!("`{text}` is not a month: give YYYY-MM (2026-11)");
    let (year, month) = text.split_once('-').ok_or_else(refuse)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(refuse());
    }
    let year: i32 = year.parse().map_err(|_| refuse())?;
    let month = month
        .parse::<u8>()
        .ok()
        .and_then(|month| Month::try_from(month).ok())
        .ok_or_else(refuse)?;
    let first = Date::from_calendar_date(year, month, 1).map_err(|_| refuse())?;
    let (next_year, next_month) = if month == Month::December {
        (year + 1, Month::January)
    } else {
        (year, month.next())
    };
    let next = Date::from_calendar_date(next_year, next_month, 1).map_err(|_| refuse())?;
    Ok((
        first.with_time(Time::MIDNIGHT).assume_utc(),
        next.with_time(Time::MIDNIGHT).assume_utc(),
    ))
}

/// Unix milliseconds of an instant.
pub fn unix_ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_instant(text: &str, expect: Option<&str>) {
        let got = parse_instant(text).map(|at| at.format(&Rfc3339).unwrap_or_default());
        match expect {
            Some(expect) => assert_eq!(got.as_deref(), Ok(expect), "{text}"),
            None => {
                let error = got.expect_err(text);
                assert!(
                    error.contains("RFC 3339") && error.contains("UTC date"),
                    "{error}"
                );
            }
        }
    }

    #[test]
    fn instants_are_rfc3339_or_utc_dates() {
        check_instant("2026-11-01", Some("2026-11-01T00:00:00Z"));
        check_instant("2026-11-01T09:30:00Z", Some("2026-11-01T09:30:00Z"));
        check_instant("2026-11-01T10:30:00+01:00", Some("2026-11-01T09:30:00Z"));
        check_instant("2026-02-29", None);
        check_instant("2026-11-1", None);
        check_instant("01/11/2026", None);
        check_instant("7d", None);
        check_instant("", None);
    }

    #[test]
    fn months_are_half_open_ranges() {
        let check = |text: &str, expect: Option<(&str, &str)>| {
            let got = parse_month(text).map(|(a, b)| {
                (
                    a.format(&Rfc3339).unwrap_or_default(),
                    b.format(&Rfc3339).unwrap_or_default(),
                )
            });
            match expect {
                Some((a, b)) => assert_eq!(got, Ok((a.to_owned(), b.to_owned())), "{text}"),
                None => assert!(got.is_err_and(|e| e.contains("YYYY-MM")), "{text}"),
            }
        };
        check(
            "2026-11",
            Some(("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")),
        );
        check(
            "2026-12",
            Some(("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z")),
        );
        check("2026-13", None);
        check("2026-1", None);
        check("2026-11-01", None);
    }
}
