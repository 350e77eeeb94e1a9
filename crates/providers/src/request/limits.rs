//! Per-model limits: a shipped table (`limits.toml`, compiled in) of each
//! model's output and context limits and the most one image can bill,
//! extended or overridden by the operator, with a flagged fallback for
//! models it does not know. It bounds requests that set no cap of their own.

use keyforge_types::ModelPattern;
use serde::{Deserialize, Serialize};

use crate::kind::Api;

const SHIPPED: &str = include_str!("../../limits.toml");

/// What bounds one model, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelLimits {
    /// The most tokens one completion can bill, reasoning included.
    pub max_output_tokens: u64,
    /// The most input tokens one request can bill.
    pub context_window: u64,
    /// The most input tokens one image can bill.
    pub image_tokens: u64,
}

impl ModelLimits {
    /// The default fallback for unknown models: the largest figures of any
    /// shipped family (Claude 3.7's 128,000 output, a 2,097,152-token
    /// context as Gemini 1.5 Pro published, gpt-4o-mini's 48,500 per image),
    /// so an unknown model is reserved for generously, never for free.
    pub const FALLBACK: ModelLimits = ModelLimits {
        max_output_tokens: 128_000,
        context_window: 2_097_152,
        image_tokens: 48_500,
    };
}

/// One limits entry as written in TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub api: String,
    pub model: String,
    pub max_output_tokens: u64,
    pub context_window: u64,
    pub image_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimitTable {
    version: String,
    limit: Vec<RawLimit>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LimitEntry {
    pub api: &'static str,
    pub model: String,
    pub limits: ModelLimits,
    /// `shipped` or `config`.
    pub origin: &'static str,
    #[serde(skip)]
    api_kind: Api,
    #[serde(skip)]
    pattern: ModelPattern,
}

/// Where a model's limits came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitSource {
    Table,
    /// The model is not in the table: the fallback limits applied.
    Fallback,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("limit entry {index} ({model}): {reason}")]
    Entry {
        index: usize,
        model: String,
        reason: String,
    },
    #[error("limit table: {0}")]
    Table(String),
}

#[derive(Debug, Clone)]
pub struct LimitTable {
    pub version: String,
    entries: Vec<LimitEntry>,
    pub fallback: ModelLimits,
}

fn entry(index: usize, raw: &RawLimit, origin: &'static str) -> Result<LimitEntry, LimitError> {
    let fail = |reason: String| LimitError::Entry {
        index,
        model: raw.model.clone(),
        reason,
    };
    let (api_kind, api) = match raw.api.as_str() {
        "openai" => (Api::OpenAi, "openai"),
        "anthropic" => (Api::Anthropic, "anthropic"),
        "gemini" => (Api::Gemini, "gemini"),
        other => {
            return Err(fail(format!(
                "api `{other}` is not openai, anthropic or gemini"
            )));
        }
    };
    let pattern = ModelPattern::parse(&raw.model).map_err(|error| fail(error.to_string()))?;
    Ok(LimitEntry {
        api,
        model: raw.model.clone(),
        limits: ModelLimits {
            max_output_tokens: raw.max_output_tokens,
            context_window: raw.context_window,
            image_tokens: raw.image_tokens,
        },
        origin,
        api_kind,
        pattern,
    })
}

impl LimitTable {
    /// The shipped table with [`ModelLimits::FALLBACK`].
    pub fn shipped() -> Result<Self, LimitError> {
        let raw: RawLimitTable =
            toml::from_str(SHIPPED).map_err(|error| LimitError::Table(error.to_string()))?;
        let entries = raw
            .limit
            .iter()
            .enumerate()
            .map(|(i, l)| entry(i + 1, l, "shipped"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            version: raw.version,
            entries,
            fallback: ModelLimits::FALLBACK,
        })
    }

    /// Adds the operator's entries; for the same api and model pattern they
    /// replace the shipped one.
    pub fn with_overrides(mut self, overrides: &[RawLimit]) -> Result<Self, LimitError> {
        for (index, raw) in overrides.iter().enumerate() {
            let new = entry(index + 1, raw, "config")?;
            self.entries
                .retain(|old| !(old.api_kind == new.api_kind && old.model == new.model));
            self.entries.push(new);
        }
        Ok(self)
    }

    pub fn with_fallback(mut self, fallback: ModelLimits) -> Self {
        self.fallback = fallback;
        self
    }

    pub fn entries(&self) -> &[LimitEntry] {
        &self.entries
    }

    /// The limits of `model`: the most specific (longest) matching pattern,
    /// else the fallback, flagged.
    pub fn lookup(&self, api: Api, model: &str) -> (ModelLimits, LimitSource) {
        let best = self
            .entries
            .iter()
            .filter(|e| e.api_kind == api && e.pattern.matches(model))
            .max_by_key(|e| e.model.len());
        match best {
            Some(entry) => (entry.limits, LimitSource::Table),
            None => (self.fallback, LimitSource::Fallback),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::PriceTable;

    #[test]
    fn every_priced_model_has_limits() {
        let limits = LimitTable::shipped().unwrap();
        let prices = PriceTable::shipped().unwrap();
        for price in prices.entries() {
            let api = match price.api {
                "openai" => Api::OpenAi,
                "anthropic" => Api::Anthropic,
                _ => Api::Gemini,
            };
            // The pattern itself, with `*` read as nothing, is a model name
            // it matches.
            let model = price.model.replace('*', "");
            assert!(
                limits
                    .entries()
                    .iter()
                    .any(|l| l.api == price.api && l.model == price.model),
                "no limits entry for {} {}",
                price.api,
                price.model
            );
            assert_eq!(limits.lookup(api, &model).1, LimitSource::Table, "{model}");
        }
    }

    fn check(table: &LimitTable, api: Api, model: &str, expected: (u64, u64, u64, LimitSource)) {
        let (limits, source) = table.lookup(api, model);
        assert_eq!(
            (
                limits.max_output_tokens,
                limits.context_window,
                limits.image_tokens,
                source
            ),
            expected,
            "{api:?} {model}"
        );
    }

    #[test]
    fn lookup_takes_the_most_specific_pattern() {
        use LimitSource::*;
        let table = LimitTable::shipped().unwrap();
        check(
            &table,
            Api::OpenAi,
            "gpt-4o-2024-08-06",
            (16_384, 128_000, 1_536, Table),
        );
        check(
            &table,
            Api::OpenAi,
            "gpt-4o-mini",
            (16_384, 128_000, 48_500, Table),
        );
        check(
            &table,
            Api::Anthropic,
            "claude-opus-4-5-20251101",
            (64_000, 200_000, 2_000, Table),
        );
        check(
            &table,
            Api::Anthropic,
            "claude-opus-4-1",
            (32_000, 200_000, 2_000, Table),
        );
        check(
            &table,
            Api::Gemini,
            "gpt-4o",
            (128_000, 2_097_152, 48_500, Fallback),
        );
    }

    #[test]
    fn overrides_replace_and_extend_and_the_fallback_is_configurable() {
        let raw = |model: &str, output: u64| RawLimit {
            api: "openai".into(),
            model: model.into(),
            max_output_tokens: output,
            context_window: 1_000,
            image_tokens: 10,
        };
        let table = LimitTable::shipped()
            .unwrap()
            .with_overrides(&[raw("gpt-4o*", 5), raw("my-finetune", 7)])
            .unwrap()
            .with_fallback(ModelLimits {
                max_output_tokens: 1,
                context_window: 2,
                image_tokens: 3,
            });
        check(
            &table,
            Api::OpenAi,
            "gpt-4o",
            (5, 1_000, 10, LimitSource::Table),
        );
        check(
            &table,
            Api::OpenAi,
            "my-finetune",
            (7, 1_000, 10, LimitSource::Table),
        );
        check(
            &table,
            Api::OpenAi,
            "unknown",
            (1, 2, 3, LimitSource::Fallback),
        );
        let error = LimitTable::shipped()
            .unwrap()
            .with_overrides(&[RawLimit {
                api: "azure".into(),
                ..raw("x", 1)
            }])
            .unwrap_err();
        assert!(error.to_string().contains("api `azure`"), "{error}");
    }
}
