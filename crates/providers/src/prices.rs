//! Prices: a shipped, versioned table (`prices.toml`, compiled in) of dated
//! price entries, extended or overridden by the operator's entries, and a
//! fallback price for models the table does not know, so an unknown model is
//! flagged, never free.
//!
//! One entry prices one model pattern from its `since` day on, with:
//!
//! - token prices ([`TokenPrices`], pico-USD per token): uncached input,
//!   cached input, five-minute and one-hour cache writes, output;
//! - a long-context band ([`LongContext`]): the WHOLE request is billed at
//!   higher token prices when its input (uncached + cached + cache writes)
//!   is above a threshold (Gemini 2.5 Pro, Claude Sonnet 4 with 1M context);
//! - service-tier prices ([`TierPrices`]): OpenAI's `flex`, `priority` and
//!   the Batch API, as explicit token prices or a multiplier on the entry's;
//! - unit prices ([`UnitPrices`]): images by size and quality (nano-USD per
//!   image), input audio (nano-USD per minute), speech (pico-USD per
//!   character).
//!
//! [`PriceTable::price`] is the one entry point for both the reservation
//! (estimated usage) and the settlement (reported usage); it returns a
//! [`Priced`]. What it never does is price below what the provider can
//! bill: an image variant the request left open is priced at the model's
//! dearest listed variant, a `priority` request without a priority price at
//! [`PRIORITY_BOUND`] times standard (flagged `tier_bound`), and units no
//! entry prices are flagged `unpriced` for the gateway's fallback charge.
//!
//! Money is integer end to end: prices are parsed exactly from decimal
//! strings ("USD per million tokens", "USD per image", ...) and a cost is
//! rounded up to whole nano-USD. No floats.

use keyforge_types::{ModelPattern, NanoUsd};
use serde::{Deserialize, Serialize};
use time::Date;
use time::macros::format_description;

use crate::kind::Api;
use crate::usage::{ImageQuality, ImageSize, ImageVariant, ServiceTier, Usage};

const SHIPPED: &str = include_str!("../prices.toml");

/// Prices of one model in pico-USD (1e-12) per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TokenPrices {
    pub input: u64,
    pub cached_input: u64,
    /// Five-minute cache writes (Anthropic: 1.25 times `input`).
    pub cache_write: u64,
    /// One-hour cache writes (Anthropic: 2 times `input`).
    pub cache_write_1h: u64,
    pub output: u64,
}

impl TokenPrices {
    /// The cost of `usage`'s tokens at these prices, rounded up to whole
    /// nano-USD. Units (images, audio, speech) and tiers are not looked at:
    /// [`PriceTable::price`] does that.
    pub fn cost(&self, usage: &Usage) -> NanoUsd {
        nano_rounded_up(self.pico(usage))
    }

    /// Pico-USD. Each product fits a `u128`; the sum saturates, as five
    /// of them might not (prices from the configuration are not capped).
    fn pico(&self, usage: &Usage) -> u128 {
        [
            (usage.input_tokens, self.input),
            (usage.cached_input_tokens, self.cached_input),
            (usage.cache_write_tokens, self.cache_write),
            (usage.cache_write_1h_tokens, self.cache_write_1h),
            (usage.output_tokens, self.output),
        ]
        .iter()
        .fold(0_u128, |sum, (tokens, rate)| {
            sum.saturating_add(u128::from(*tokens) * u128::from(*rate))
        })
    }

    /// Every rate times `multiplier`, each rounded up to a whole pico-USD.
    fn scaled(&self, multiplier: Multiplier) -> Self {
        let scale = |rate: u64| multiplier.apply(rate);
        Self {
            input: scale(self.input),
            cached_input: scale(self.cached_input),
            cache_write: scale(self.cache_write),
            cache_write_1h: scale(self.cache_write_1h),
            output: scale(self.output),
        }
    }
}

fn nano_rounded_up(pico: u128) -> NanoUsd {
    NanoUsd(i64::try_from(pico.div_ceil(1000)).unwrap_or(i64::MAX))
}

/// A price multiplier in ten-thousandths (`"0.5"` is 5_000, `"1.75"` is
/// 17_500): exact, and fine enough for every published ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Multiplier(pub u64);

impl Multiplier {
    const ONE: u64 = 10_000;

    /// `rate` times the multiplier, rounded up.
    fn apply(self, rate: u64) -> u64 {
        let scaled = (u128::from(rate) * u128::from(self.0)).div_ceil(u128::from(Self::ONE));
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

/// The multiplier on standard prices for a `priority` request to a model
/// whose entry has no priority price. OpenAI publishes priority at 1.7 to
/// 2.5 times standard (gpt-4o-mini 1.67, gpt-4o 1.7, gpt-4.1 and o3 1.75,
/// gpt-5-mini 1.8, gpt-5 and gpt-4.1-nano 2.0, OpenAI pricing page,
/// "Priority" tab, 2025-10; gpt-5.5 2.5, per TokenMix quoting that page,
/// 2026-06): 2.5 is the highest ratio published, so the bound does not
/// price below what OpenAI bills. Such a price is flagged
/// [`Priced::tier_bound`].
pub const PRIORITY_BOUND: Multiplier = Multiplier(25_000);

/// Higher token prices for the whole request when its input (uncached +
/// cached + both cache writes) is above `above_input_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LongContext {
    /// Tokens; the band applies strictly above it (Google and Anthropic
    /// both bill "more than 200k" at the higher rate).
    pub above_input_tokens: u64,
    pub prices: TokenPrices,
}

/// The price of one service tier: its own token prices, or a multiplier on
/// the entry's (standard or long-context) prices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierPrice {
    Multiplier(Multiplier),
    Prices(TokenPrices),
}

/// Per-tier prices of an entry; `None` where the table has none. Tiers
/// scale token prices only: OpenAI publishes them for token-priced models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TierPrices {
    pub flex: Option<TierPrice>,
    pub priority: Option<TierPrice>,
    pub batch: Option<TierPrice>,
}

/// The price of one image variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImagePrice {
    /// Never `Unspecified` or `Other`: those are what a request may say.
    pub size: ImageSize,
    /// `None`: every quality (DALL-E 2 has none).
    pub quality: Option<ImageQuality>,
    /// Nano-USD per image.
    pub per_image: u64,
}

/// Prices of the units some endpoints bill instead of tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UnitPrices {
    pub images: Vec<ImagePrice>,
    /// Nano-USD per minute of input audio.
    pub audio_per_minute: Option<u64>,
    /// Pico-USD per character of speech.
    pub speech_per_char: Option<u64>,
}

impl UnitPrices {
    /// No unit of any kind is priced.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.audio_per_minute.is_none() && self.speech_per_char.is_none()
    }

    /// Nano-USD per image of `variant`: the listed price, or, where the
    /// request left size or quality open (`Unspecified`, `Other`) or asked
    /// for a variant the table does not list, the dearest candidate. `None`
    /// when the entry prices no image.
    fn per_image(&self, variant: ImageVariant) -> Option<u64> {
        let open_size = matches!(variant.size, ImageSize::Unspecified | ImageSize::Other);
        let open_quality = matches!(
            variant.quality,
            ImageQuality::Unspecified | ImageQuality::Other
        );
        self.images
            .iter()
            .filter(|p| open_size || p.size == variant.size)
            .filter(|p| open_quality || p.quality.is_none_or(|q| q == variant.quality))
            .map(|p| p.per_image)
            .max()
            .or_else(|| self.images.iter().map(|p| p.per_image).max())
    }
}

/// One price entry as written in TOML (`[[price]]` in `prices.toml` and in
/// the operator's configuration). Prices are decimal strings: token prices
/// in USD per million tokens, `usd` per image, `audio_per_minute` in USD
/// per minute, `speech_per_million_chars` in USD per million characters,
/// multipliers as plain decimals (`"0.5"`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub api: String,
    pub model: String,
    pub since: String,
    /// Required unless the entry prices units only.
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub cached_input: Option<String>,
    #[serde(default)]
    pub cache_write: Option<String>,
    #[serde(default)]
    pub cache_write_1h: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub long_context: Option<RawLongContext>,
    #[serde(default)]
    pub flex: Option<RawTier>,
    #[serde(default)]
    pub priority: Option<RawTier>,
    #[serde(default)]
    pub batch: Option<RawTier>,
    #[serde(default)]
    pub images: Vec<RawImagePrice>,
    #[serde(default)]
    pub audio_per_minute: Option<String>,
    #[serde(default)]
    pub speech_per_million_chars: Option<String>,
}

/// `long_context = { above_input_tokens = 200000, input = "..", output = ".." }`;
/// cached input and cache writes default as in the entry, from this input.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLongContext {
    pub above_input_tokens: u64,
    pub input: String,
    #[serde(default)]
    pub cached_input: Option<String>,
    #[serde(default)]
    pub cache_write: Option<String>,
    #[serde(default)]
    pub cache_write_1h: Option<String>,
    pub output: String,
}

/// `flex = { multiplier = "0.5" }`, or the tier's own prices
/// `priority = { input = "..", cached_input = "..", output = ".." }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    #[serde(default)]
    pub multiplier: Option<String>,
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub cached_input: Option<String>,
    #[serde(default)]
    pub cache_write: Option<String>,
    #[serde(default)]
    pub cache_write_1h: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
}

/// `{ size = "1024x1024", quality = "hd", usd = "0.080" }`; without
/// `quality`, the price holds for every quality.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImagePrice {
    pub size: String,
    #[serde(default)]
    pub quality: Option<String>,
    pub usd: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    version: String,
    price: Vec<RawPrice>,
}

/// One validated entry: `model` priced from `since` on (a `YYYY-MM-DD` UTC
/// day), all prices integers (see each field's type for its unit).
#[derive(Debug, Clone, Serialize)]
pub struct PriceEntry {
    pub api: &'static str,
    pub model: String,
    pub since: String,
    /// Standard-tier prices below the long-context threshold.
    pub prices: TokenPrices,
    pub long_context: Option<LongContext>,
    pub tiers: TierPrices,
    pub units: UnitPrices,
    /// `shipped` or `config`.
    pub origin: &'static str,
    #[serde(skip)]
    api_kind: Api,
    #[serde(skip)]
    pattern: ModelPattern,
    #[serde(skip)]
    since_date: Date,
}

impl PriceEntry {
    /// The token prices that bill `usage`: the long-context band if its
    /// input is above the threshold, then the service tier; `true` when the
    /// tier had no price and [`PRIORITY_BOUND`] stood in.
    fn token_prices(&self, usage: &Usage) -> (TokenPrices, bool) {
        let base = match self.long_context {
            Some(band) if total_input(usage) > band.above_input_tokens => band.prices,
            _ => self.prices,
        };
        tiered(base, &self.tiers, usage.service_tier)
    }
}

/// Input tokens as the long-context thresholds count them: uncached,
/// cached and written to the cache ("the 200K threshold is based solely on
/// input tokens, including cache reads and writes", Anthropic pricing page,
/// "Long context pricing", 2025-08; Gemini counts the whole prompt).
fn total_input(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.cached_input_tokens)
        .saturating_add(usage.cache_write_tokens)
        .saturating_add(usage.cache_write_1h_tokens)
}

fn tiered(base: TokenPrices, tiers: &TierPrices, tier: ServiceTier) -> (TokenPrices, bool) {
    let priced = |price: Option<TierPrice>| {
        price.map(|price| match price {
            TierPrice::Multiplier(multiplier) => base.scaled(multiplier),
            TierPrice::Prices(prices) => prices,
        })
    };
    match tier {
        ServiceTier::Standard => (base, false),
        // Flex and Batch bill less than standard: without a price of their
        // own, standard is a bound.
        ServiceTier::Flex => (priced(tiers.flex).unwrap_or(base), false),
        ServiceTier::Batch => (priced(tiers.batch).unwrap_or(base), false),
        ServiceTier::Priority => match priced(tiers.priority) {
            Some(prices) => (prices, false),
            None => (base.scaled(PRIORITY_BOUND), true),
        },
    }
}

/// Why a price table or an operator's entry was refused: `index` counts
/// entries from 1 in the file they came from.
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

/// The cost of one request's usage.
#[derive(Debug, Clone, Copy)]
pub struct Priced<'a> {
    /// Nano-USD, rounded up.
    pub cost: NanoUsd,
    pub source: PriceSource<'a>,
    /// The usage holds images, audio or speech characters that no entry
    /// prices (they count 0 in `cost`): the gateway adds its per-request
    /// fallback charge and flags the row unmetered.
    pub unpriced: bool,
    /// A `priority` request had no priority price: its tokens are priced at
    /// [`PRIORITY_BOUND`] times standard, an upper bound, not a figure.
    pub tier_bound: bool,
}

/// The shipped entries, the operator's on top, and the fallback token
/// prices for models neither knows. Built once at start, then read-only.
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

/// Parses a price in USD per unit (`"0.040"` per image, `"0.006"` per
/// minute) into nano-USD, exactly: up to nine decimals, at most $1000.
fn parse_usd_per_unit(text: &str, unit: &str) -> Result<u64, String> {
    keyforge_types::parse_fixed_decimal(text, 9)
        .filter(|n| *n <= 1_000 * 1_000_000_000)
        .ok_or_else(|| {
            format!("`{text}` is not a price in USD per {unit} like \"0.040\" (at most 9 decimals)")
        })
}

/// Parses a multiplier (`"0.5"`, `"1.75"`): above 0, at most 100, at most
/// four decimals.
fn parse_multiplier(text: &str) -> Result<Multiplier, String> {
    keyforge_types::parse_fixed_decimal(text, 4)
        .filter(|m| (1..=100 * Multiplier::ONE).contains(m))
        .map(Multiplier)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a multiplier like \"0.5\" (above 0, at most 100, at most 4 decimals)"
            )
        })
}

fn parse_image_size(text: &str) -> Result<ImageSize, String> {
    match text {
        "256x256" => Ok(ImageSize::S256),
        "512x512" => Ok(ImageSize::S512),
        "1024x1024" => Ok(ImageSize::S1024),
        "1792x1024" | "1024x1792" => Ok(ImageSize::Wide1792),
        "1536x1024" | "1024x1536" => Ok(ImageSize::Wide1536),
        _ => Err(format!(
            "image size `{text}` is not 256x256, 512x512, 1024x1024, 1792x1024, 1024x1792, 1536x1024 or 1024x1536"
        )),
    }
}

fn parse_image_quality(text: &str) -> Result<ImageQuality, String> {
    match text {
        "standard" => Ok(ImageQuality::Standard),
        "hd" => Ok(ImageQuality::Hd),
        "low" => Ok(ImageQuality::Low),
        "medium" => Ok(ImageQuality::Medium),
        "high" => Ok(ImageQuality::High),
        _ => Err(format!(
            "image quality `{text}` is not standard, hd, low, medium or high"
        )),
    }
}

fn api_of(text: &str) -> Option<(Api, &'static str)> {
    match text {
        "openai" => Some((Api::OpenAi, "openai")),
        "anthropic" => Some((Api::Anthropic, "anthropic")),
        "gemini" => Some((Api::Gemini, "gemini")),
        _ => None,
    }
}

/// The token-price fields every shape (entry, long-context band, tier)
/// shares, before defaults.
struct RawTokens<'a> {
    input: u64,
    cached_input: Option<&'a str>,
    cache_write: Option<&'a str>,
    cache_write_1h: Option<&'a str>,
    output: Option<&'a str>,
}

/// Token prices with their defaults, all bounds: cached input at the input
/// price; five-minute writes at the input price, or 1.25 times it for
/// Anthropic; one-hour writes at 2 times the input price (Anthropic
/// pricing page, "Prompt caching": "5-minute cache writes are 1.25 times
/// the base input tokens price; 1-hour cache writes are 2 times", 2025-08;
/// no other provider reports cache writes); output at `default_output`.
fn token_prices(api: Api, raw: &RawTokens<'_>, default_output: u64) -> Result<TokenPrices, String> {
    let input = raw.input;
    let optional = |value: Option<&str>, default: u64| {
        value
            .map(parse_usd_per_million)
            .transpose()
            .map(|v| v.unwrap_or(default))
    };
    let five_minute_write = match api {
        Api::Anthropic => Multiplier(12_500).apply(input),
        Api::OpenAi | Api::Gemini => input,
    };
    Ok(TokenPrices {
        input,
        cached_input: optional(raw.cached_input, input)?,
        cache_write: optional(raw.cache_write, five_minute_write)?,
        cache_write_1h: optional(raw.cache_write_1h, input.saturating_mul(2))?,
        output: optional(raw.output, default_output)?,
    })
}

fn long_context(api: Api, raw: &RawLongContext) -> Result<LongContext, String> {
    let fail = |reason: String| format!("long_context: {reason}");
    let tokens = RawTokens {
        input: parse_usd_per_million(&raw.input).map_err(fail)?,
        cached_input: raw.cached_input.as_deref(),
        cache_write: raw.cache_write.as_deref(),
        cache_write_1h: raw.cache_write_1h.as_deref(),
        output: Some(&raw.output),
    };
    Ok(LongContext {
        above_input_tokens: raw.above_input_tokens,
        prices: token_prices(api, &tokens, 0).map_err(fail)?,
    })
}

fn tier(api: Api, name: &str, raw: &RawTier, has_long_context: bool) -> Result<TierPrice, String> {
    let fail = |reason: String| format!("{name}: {reason}");
    let explicit = raw.input.is_some()
        || raw.cached_input.is_some()
        || raw.cache_write.is_some()
        || raw.cache_write_1h.is_some()
        || raw.output.is_some();
    match (&raw.multiplier, explicit) {
        (Some(multiplier), false) => parse_multiplier(multiplier)
            .map(TierPrice::Multiplier)
            .map_err(fail),
        (Some(_), true) => Err(fail(
            "give either `multiplier` or token prices, not both".into(),
        )),
        (None, false) => Err(fail(
            "give `multiplier` or token prices (`input` and `output`)".into(),
        )),
        // Explicit tier prices do not say what the tier costs above the
        // long-context threshold, which a multiplier does.
        (None, true) if has_long_context => Err(fail(
            "an entry with `long_context` gives its tiers as a `multiplier`".into(),
        )),
        (None, true) => {
            let (Some(input), Some(output)) = (&raw.input, &raw.output) else {
                return Err(fail("tier prices need both `input` and `output`".into()));
            };
            let tokens = RawTokens {
                input: parse_usd_per_million(input).map_err(fail)?,
                cached_input: raw.cached_input.as_deref(),
                cache_write: raw.cache_write.as_deref(),
                cache_write_1h: raw.cache_write_1h.as_deref(),
                output: Some(output),
            };
            token_prices(api, &tokens, 0)
                .map(TierPrice::Prices)
                .map_err(fail)
        }
    }
}

fn units(raw: &RawPrice) -> Result<UnitPrices, String> {
    let images = raw
        .images
        .iter()
        .map(|image| {
            Ok(ImagePrice {
                size: parse_image_size(&image.size)?,
                quality: image
                    .quality
                    .as_deref()
                    .map(parse_image_quality)
                    .transpose()?,
                per_image: parse_usd_per_unit(&image.usd, "image")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (i, a) in images.iter().enumerate() {
        if images[..i]
            .iter()
            .any(|b| a.size == b.size && a.quality == b.quality)
        {
            return Err(format!(
                "images: {:?} {:?} is listed twice",
                a.size, a.quality
            ));
        }
    }
    Ok(UnitPrices {
        images,
        audio_per_minute: raw
            .audio_per_minute
            .as_deref()
            .map(|text| parse_usd_per_unit(text, "minute"))
            .transpose()?,
        speech_per_char: raw
            .speech_per_million_chars
            .as_deref()
            .map(|text| {
                parse_usd_per_million(text).map_err(|_| {
                    format!(
                        "`{text}` is not a price in USD per million characters like \"15.00\" (at most 6 decimals)"
                    )
                })
            })
            .transpose()?,
    })
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
    let units = units(raw).map_err(&fail)?;
    // A model billed only by units (DALL-E, Whisper, TTS) may leave its
    // token prices out; any other entry must say what a token costs, even
    // if it is "0" (a free model is priced, not unknown).
    let input = match (&raw.input, units.is_empty()) {
        (Some(text), _) => parse_usd_per_million(text).map_err(&fail)?,
        (None, false) => 0,
        (None, true) => {
            return Err(fail(
                "`input` is missing: give token prices (`input = \"0\"` for a free model) or unit prices".into(),
            ));
        }
    };
    let tokens = RawTokens {
        input,
        cached_input: raw.cached_input.as_deref(),
        cache_write: raw.cache_write.as_deref(),
        cache_write_1h: raw.cache_write_1h.as_deref(),
        output: raw.output.as_deref(),
    };
    let prices = token_prices(api_kind, &tokens, 0).map_err(&fail)?;
    let long_context = raw
        .long_context
        .as_ref()
        .map(|band| long_context(api_kind, band))
        .transpose()
        .map_err(&fail)?;
    let has_long_context = long_context.is_some();
    let tier_of = |name: &str, raw: &Option<RawTier>| {
        raw.as_ref()
            .map(|t| tier(api_kind, name, t, has_long_context))
            .transpose()
            .map_err(&fail)
    };
    let tiers = TierPrices {
        flex: tier_of("flex", &raw.flex)?,
        priority: tier_of("priority", &raw.priority)?,
        batch: tier_of("batch", &raw.batch)?,
    };
    Ok(PriceEntry {
        api,
        model: raw.model.clone(),
        since: raw.since.clone(),
        prices,
        long_context,
        tiers,
        units,
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
        Self::from_toml(SHIPPED)
    }

    fn from_toml(text: &str) -> Result<Self, PriceError> {
        let raw: RawTable =
            toml::from_str(text).map_err(|error| PriceError::Table(error.to_string()))?;
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
            cache_write_1h: 20_000_000,
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

    /// The entry in force for `model` on `date`: among entries whose pattern
    /// matches and whose `since` is on or before `date`, the most specific
    /// pattern (longest), then the latest `since`.
    fn find(&self, api: Api, model: &str, date: Date) -> Option<&PriceEntry> {
        self.entries
            .iter()
            .filter(|e| e.api_kind == api && e.since_date <= date && e.pattern.matches(model))
            .max_by_key(|e| (e.model.len(), e.since_date))
    }

    /// The standard-tier token prices in force for `model` on `date` (see
    /// [`PriceTable::find`]), below any long-context threshold. To price a
    /// request, use [`PriceTable::price`], which also applies long context,
    /// service tiers and units.
    pub fn lookup(&self, api: Api, model: &str, date: Date) -> (TokenPrices, PriceSource<'_>) {
        match self.find(api, model, date) {
            Some(entry) => (entry.prices, PriceSource::Table(entry)),
            None => (self.fallback, PriceSource::Fallback),
        }
    }

    /// The cost of `usage` for `model` on `date`, for the reservation
    /// (estimated usage) and the settlement (reported usage) alike: token
    /// prices after the long-context band and the service tier, plus
    /// images (or the output tokens, whichever costs more: GPT Image bills
    /// images as output tokens), audio (whole seconds, rounded up: OpenAI
    /// bills audio "rounded to the nearest second") and speech characters,
    /// rounded up once to whole nano-USD.
    pub fn price(&self, api: Api, model: &str, date: Date, usage: &Usage) -> Priced<'_> {
        let entry = self.find(api, model, date);
        let (tokens, tier_bound) = match entry {
            Some(entry) => entry.token_prices(usage),
            None => tiered(self.fallback, &TierPrices::default(), usage.service_tier),
        };
        let no_units = UnitPrices::default();
        let units = entry.map_or(&no_units, |e| &e.units);
        let mut pico = tokens.pico(usage);
        let mut unpriced = false;
        // GPT Image bills an image as output tokens; its per-image price is
        // the published cost of those tokens. Counting both would bill an
        // image twice, so the larger of the two counts: the tokens when
        // the response reports them (exact), the images when only they are
        // known (a reservation, a bound). Models without an output price
        // (DALL-E) are simply priced per image.
        match units.per_image(usage.image_variant) {
            _ if usage.images == 0 => {}
            Some(nano_each) => {
                let images = u128::from(usage.images) * u128::from(nano_each) * 1000;
                let output = u128::from(usage.output_tokens) * u128::from(tokens.output);
                let larger = images.max(output);
                pico = pico.saturating_sub(output).saturating_add(larger);
            }
            None => unpriced = true,
        }
        let mut add = |count: u64, price: Option<u128>| match price {
            _ if count == 0 => {}
            Some(pico_each) => pico = pico.saturating_add(u128::from(count) * pico_each),
            None => unpriced = true,
        };
        // Audio as whole seconds at the per-minute price: pico-USD per
        // second, rounded up, so the sum stays an integer bound.
        add(
            usage.audio_ms.div_ceil(1000),
            units
                .audio_per_minute
                .map(|nano| (u128::from(nano) * 1000).div_ceil(60)),
        );
        add(usage.speech_chars, units.speech_per_char.map(u128::from));
        Priced {
            cost: nano_rounded_up(pico),
            source: entry.map_or(PriceSource::Fallback, PriceSource::Table),
            unpriced,
            tier_bound,
        }
    }
}

#[cfg(test)]
mod tests;
