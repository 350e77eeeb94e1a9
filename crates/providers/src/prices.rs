//! Prices: a shipped, versioned table (`prices.toml`, compiled in) of dated
//! per-token prices, extended or overridden by the operator's entries, and a
//! fallback price for models the table does not know, so an unknown model is
//! flagged, never free.
//!
//! Money is integer end to end: prices are parsed exactly from decimal "USD
//! per million tokens" into pico-USD per token, and a cost is rounded up to
//! whole nano-USD.

use keyforge_types::{ModelPattern, NanoUsd};
use serde::{Deserialize, Serialize};
use time::Date;
use time::macros::format_description;

use crate::kind::Api;
use crate::usage::Usage;

const SHIPPED: &str = include_str!("../prices.toml");

/// Prices of one model in pico-USD (1e-12) per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenPrices {
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl TokenPrices {
    pub fn cost(&self, usage: &Usage) -> NanoUsd {
        let pico = u128::from(usage.input_tokens) * u128::from(self.input)
            + u128::from(usage.cached_input_tokens) * u128::from(self.cached_input)
            + u128::from(usage.cache_write_tokens) * u128::from(self.cache_write)
            + u128::from(usage.output_tokens) * u128::from(self.output);
        NanoUsd(i64::try_from(pico.div_ceil(1000)).unwrap_or(i64::MAX))
    }
}

/// One price entry as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub api: String,
    pub model: String,
    pub since: String,
    pub input: String,
    #[serde(default)]
    pub cached_input: Option<String>,
    #[serde(default)]
    pub cache_write: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: String,
    price: Vec<RawPrice>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PriceEntry {
    pub api: &'static str,
    pub model: String,
    pub since: String,
    pub prices: TokenPrices,
    /// `shipped` or `config`.
    pub origin: &'static str,
    #[serde(skip)]
    api_kind: Api,
    #[serde(skip)]
    pattern: ModelPattern,
    #[serde(skip)]
    since_date: Date,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PriceError {
    #[error("price entry {index} ({model}): {reason}")]
    Entry {
        index: usize,
        model: String,
        reason: String,
    },
    #[error("price table: {0}")]
    Table(String),
}

/// What priced a request.
#[derive(Debug, Clone, Copy)]
pub enum PriceSource<'a> {
    Table(&'a PriceEntry),
    /// The model is not in the table: the fallback price applied.
    Fallback,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    pub version: String,
    entries: Vec<PriceEntry>,
    pub fallback: TokenPrices,
}

/// Parses "USD per million tokens" (`"2.50"`, `"0.075"`) into pico-USD per
/// token, exactly: up to six decimal places.
pub fn parse_usd_per_million(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{text}` is not a price in USD per million tokens like \"2.50\" (at most 6 decimals)"
        )
    };
    keyforge_types::parse_fixed_decimal(text, 6)
        .filter(|p| *p <= 1_000_000_000_000)
        .ok_or_else(bad)
}

fn api_of(text: &str) -> Option<(Api, &'static str)> {
    match text {
        "openai" => Some((Api::OpenAi, "openai")),
        "anthropic" => Some((Api::Anthropic, "anthropic")),
        "gemini" => Some((Api::Gemini, "gemini")),
        _ => None,
    }
}

fn entry(index: usize, raw: &RawPrice, origin: &'static str) -> Result<PriceEntry, PriceError> {
    let fail = |reason: String| PriceError::Entry {
        index,
        model: raw.model.clone(),
        reason,
    };
    let (api_kind, api) = api_of(&raw.api).ok_or_else(|| {
        fail(format!(
            "api `{}` is not openai, anthropic or gemini",
            raw.api
        ))
    })?;
    let pattern = ModelPattern::parse(&raw.model).map_err(|error| fail(error.to_string()))?;
    let since_date =
        Date::parse(&raw.since, format_description!("[year]-[month]-[day]")).map_err(|_| {
            fail(format!(
                "since `{}` is not a date like 2025-01-31",
                raw.since
            ))
        })?;
    let input = parse_usd_per_million(&raw.input).map_err(&fail)?;
    let optional = |value: &Option<String>, default: u64| {
        value
            .as_deref()
            .map(parse_usd_per_million)
            .transpose()
            .map(|v| v.unwrap_or(default))
            .map_err(&fail)
    };
    let prices = TokenPrices {
        input,
        cached_input: optional(&raw.cached_input, input)?,
        cache_write: optional(&raw.cache_write, input)?,
        output: optional(&raw.output, 0)?,
    };
    Ok(PriceEntry {
        api,
        model: raw.model.clone(),
        since: raw.since.clone(),
        prices,
        origin,
        api_kind,
        pattern,
        since_date,
    })
}

impl PriceTable {
    /// The shipped table with the default fallback ($10 in, $30 out per
    /// million tokens: deliberately high, so unknown models stand out).
    pub fn shipped() -> Result<Self, PriceError> {
        let raw: RawTable =
            toml::from_str(SHIPPED).map_err(|error| PriceError::Table(error.to_string()))?;
        let entries = raw
            .price
            .iter()
            .enumerate()
            .map(|(i, p)| entry(i + 1, p, "shipped"))
            .collect::<Result<Vec<_>, _>>()?;
        let fallback = TokenPrices {
            input: 10_000_000,
            cached_input: 10_000_000,
            cache_write: 10_000_000,
            output: 30_000_000,
        };
        Ok(Self {
            version: raw.version,
            entries,
            fallback,
        })
    }

    /// Adds the operator's entries; for the same api, model pattern and
    /// date they replace the shipped one.
    pub fn with_overrides(mut self, overrides: &[RawPrice]) -> Result<Self, PriceError> {
        for (index, raw) in overrides.iter().enumerate() {
            let new = entry(index + 1, raw, "config")?;
            self.entries.retain(|old| {
                !(old.api_kind == new.api_kind
                    && old.model == new.model
                    && old.since_date == new.since_date)
            });
            self.entries.push(new);
        }
        Ok(self)
    }

    pub fn with_fallback(mut self, fallback: TokenPrices) -> Self {
        self.fallback = fallback;
        self
    }

    pub fn entries(&self) -> &[PriceEntry] {
        &self.entries
    }

    /// The price in force for `model` on `date`: among entries whose pattern
    /// matches and whose `since` is on or before `date`, the most specific
    /// pattern (longest), then the latest `since`.
    pub fn lookup(&self, api: Api, model: &str, date: Date) -> (TokenPrices, PriceSource<'_>) {
        let best = self
            .entries
            .iter()
            .filter(|e| e.api_kind == api && e.since_date <= date && e.pattern.matches(model))
            .max_by_key(|e| (e.model.len(), e.since_date));
        match best {
            Some(entry) => (entry.prices, PriceSource::Table(entry)),
            None => (self.fallback, PriceSource::Fallback),
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn decimal_prices_parse_exactly() {
        let cases: &[(&str, Result<u64, ()>)] = &[
            ("2.50", Ok(2_500_000)),
            ("0.075", Ok(75_000)),
            ("0.000001", Ok(1)),
            ("15", Ok(15_000_000)),
            ("0.0000001", Err(())),
            ("-1", Err(())),
            ("1e3", Err(())),
            (".5", Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_usd_per_million(text).map_err(|_| ()),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn the_shipped_table_loads_and_prices_known_models() {
        let table = PriceTable::shipped().unwrap();
        let day = date!(2026 - 11 - 01);
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        let cases = [
            (Api::OpenAi, "gpt-4o-mini", 150_000_000 + 600_000_000),
            (
                Api::OpenAi,
                "gpt-4o-mini-2024-07-18",
                150_000_000 + 600_000_000,
            ),
            (Api::OpenAi, "gpt-4o", 2_500_000_000 + 10_000_000_000),
            (Api::OpenAi, "o3", 2_000_000_000 + 8_000_000_000),
            (
                Api::Anthropic,
                "claude-sonnet-4-5-20250929",
                3_000_000_000 + 15_000_000_000,
            ),
            (
                Api::Gemini,
                "gemini-2.5-flash-lite",
                100_000_000 + 400_000_000,
            ),
        ];
        for (api, model, nano) in cases {
            let (prices, source) = table.lookup(api, model, day);
            assert!(matches!(source, PriceSource::Table(_)), "{model}");
            assert_eq!(prices.cost(&usage), NanoUsd(nano), "{model}");
        }
    }

    #[test]
    fn dated_entries_apply_from_their_day() {
        let table = PriceTable::shipped().unwrap();
        let usage = Usage {
            output_tokens: 1_000_000,
            ..Usage::default()
        };
        assert_eq!(
            table
                .lookup(Api::OpenAi, "o3", date!(2025 - 05 - 01))
                .0
                .cost(&usage),
            NanoUsd(40_000_000_000)
        );
        assert_eq!(
            table
                .lookup(Api::OpenAi, "o3", date!(2025 - 06 - 10))
                .0
                .cost(&usage),
            NanoUsd(8_000_000_000)
        );
    }

    #[test]
    fn every_token_kind_is_priced_and_rounded_up() {
        let prices = TokenPrices {
            input: 2_500_000,
            cached_input: 1_250_000,
            cache_write: 3_000_000,
            output: 10_000_000,
        };
        let usage = Usage {
            input_tokens: 3,
            cached_input_tokens: 5,
            cache_write_tokens: 7,
            output_tokens: 11,
            reasoning_tokens: 4,
            ..Usage::default()
        };
        // 7.5e6 + 6.25e6 + 21e6 + 110e6 pico = 144_750 nano exactly.
        assert_eq!(prices.cost(&usage), NanoUsd(144_750));
        let one = TokenPrices {
            input: 1,
            cached_input: 1,
            cache_write: 1,
            output: 1,
        };
        assert_eq!(
            one.cost(&Usage {
                input_tokens: 1,
                ..Usage::default()
            }),
            NanoUsd(1)
        );
    }

    #[test]
    fn unknown_models_use_the_fallback_and_say_so() {
        let table = PriceTable::shipped().unwrap();
        let (prices, source) = table.lookup(Api::OpenAi, "my-finetune", date!(2026 - 01 - 01));
        assert!(matches!(source, PriceSource::Fallback));
        assert_eq!(prices.output, 30_000_000);
    }

    #[test]
    fn overrides_replace_and_extend() {
        let raw = |model: &str, since: &str, input: &str| RawPrice {
            api: "openai".into(),
            model: model.into(),
            since: since.into(),
            input: input.into(),
            cached_input: None,
            cache_write: None,
            output: Some("1".into()),
        };
        let table = PriceTable::shipped()
            .unwrap()
            .with_overrides(&[
                raw("gpt-4o-mini*", "2024-07-18", "0.10"),
                raw("my-finetune", "2026-01-01", "3"),
            ])
            .unwrap();
        let day = date!(2026 - 06 - 01);
        assert_eq!(
            table.lookup(Api::OpenAi, "gpt-4o-mini", day).0.input,
            100_000
        );
        let (prices, source) = table.lookup(Api::OpenAi, "my-finetune", day);
        assert_eq!(prices.input, 3_000_000);
        assert!(matches!(source, PriceSource::Table(e) if e.origin == "config"));
        let error = PriceTable::shipped()
            .unwrap()
            .with_overrides(&[raw("x", "yesterday", "1")])
            .unwrap_err();
        assert!(error.to_string().contains("not a date"), "{error}");
    }
}
