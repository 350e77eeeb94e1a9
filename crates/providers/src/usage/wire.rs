//! The wire shapes metering reads, deserialized straight from the bytes of
//! one JSON body or one stream event: serde skips every member not named
//! here without building it, and no JSON tree is made.
//!
//! Every number tolerates what real servers write (vLLM, Ollama, LiteLLM and
//! other OpenAI-compatible servers send `null`, leave fields out, or write
//! floats such as `21.0`): a count that is absent or `null` is `None`, never
//! zero, so a later `null` in a cumulative stream cannot erase an earlier
//! count.

use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::{ImageQuality, ImageSize, ImageVariant, ServiceTier, Usage};
use crate::kind::Api;

/// Visitor methods reading the JSON types a visitor does not care about as
/// `$default` (draining arrays and objects), so that one member of an odd
/// type never fails the whole event and loses its usage. `null` stands for
/// both `visit_unit` and `visit_none`.
macro_rules! other_types_are {
    ($de:lifetime, $value:ty, $default:expr; $($kind:ident),+ $(,)?) => {
        $(other_types_are!(@ $kind, $de, $value, $default);)+
    };
    (@ bool, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ u64, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ i64, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_i64<E>(self, _: i64) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ f64, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_f64<E>(self, _: f64) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ str, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_str<E>(self, _: &str) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ null, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_unit<E>(self) -> Result<$value, E> {
            Ok($default)
        }
        fn visit_none<E>(self) -> Result<$value, E> {
            Ok($default)
        }
    };
    (@ seq, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_seq<A: SeqAccess<$de>>(self, mut seq: A) -> Result<$value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($default)
        }
    };
    (@ map, $de:lifetime, $value:ty, $default:expr) => {
        fn visit_map<A: MapAccess<$de>>(self, mut map: A) -> Result<$value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($default)
        }
    };
}

/// A token count as any server writes it: an integer, a float (rounded up:
/// a counted token is never free), a numeric string; `None` when absent,
/// `null`, negative or of another type.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub(super) struct Count(pub(super) Option<u64>);

impl Count {
    fn get(self) -> u64 {
        self.0.unwrap_or(0)
    }

    fn is_some(self) -> bool {
        self.0.is_some()
    }

    /// The larger of two reports of a cumulative count; a missing one never
    /// wins over a present one (`None` < `Some(0)`).
    fn merge(&mut self, newer: Count) {
        *self = (*self).max(newer);
    }
}

fn count_from_f64(value: f64) -> Option<u64> {
    // `as` saturates at u64::MAX, and the guard keeps NaN and negatives out.
    (value.is_finite() && value >= 0.0).then(|| value.ceil() as u64)
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            other_types_are!('de, Count, Count(None); bool, null, seq, map);
            fn visit_u64<E>(self, value: u64) -> Result<Count, E> {
                Ok(Count(Some(value)))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(value).ok()))
            }
            fn visit_f64<E>(self, value: f64) -> Result<Count, E> {
                Ok(Count(count_from_f64(value)))
            }
            fn visit_str<E>(self, value: &str) -> Result<Count, E> {
                let value = value.trim();
                Ok(Count(value.parse::<u64>().ok().or_else(|| {
                    value.parse::<f64>().ok().and_then(count_from_f64)
                })))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Count, D::Error> {
                Count::deserialize(inner)
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

/// A duration in seconds (OpenAI transcription: `duration`, `usage.seconds`)
/// read as whole milliseconds, rounded up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SecondsAsMs(Count);

impl<'de> Deserialize<'de> for SecondsAsMs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as a float-tolerant count of milliseconds: parse the seconds
        // exactly as a count would, but scaled first.
        struct MsVisitor;
        impl<'de> Visitor<'de> for MsVisitor {
            type Value = SecondsAsMs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration in seconds")
            }
            other_types_are!('de, SecondsAsMs, SecondsAsMs::default(); bool, null, seq, map);
            fn visit_u64<E>(self, value: u64) -> Result<SecondsAsMs, E> {
                Ok(SecondsAsMs(Count(Some(value.saturating_mul(1000)))))
            }
            fn visit_i64<E>(self, value: i64) -> Result<SecondsAsMs, E> {
                Ok(SecondsAsMs(Count(
                    u64::try_from(value).ok().map(|s| s.saturating_mul(1000)),
                )))
            }
            fn visit_f64<E>(self, value: f64) -> Result<SecondsAsMs, E> {
                Ok(SecondsAsMs(Count(count_from_f64(value * 1000.0))))
            }
            fn visit_str<E>(self, value: &str) -> Result<SecondsAsMs, E> {
                match value.trim().parse::<f64>() {
                    Ok(seconds) => Ok(SecondsAsMs(Count(count_from_f64(seconds * 1000.0)))),
                    Err(_) => Ok(SecondsAsMs::default()),
                }
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<SecondsAsMs, D::Error> {
                SecondsAsMs::deserialize(inner)
            }
        }
        deserializer.deserialize_any(MsVisitor)
    }
}

/// The length in bytes of text a model generated, whatever its JSON type:
/// a string counts its bytes; an object or array (Gemini's `functionCall.args`)
/// counts about its serialized length, keys included, without building it.
/// `null` and absent count 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct TextLen(pub(super) u64);

fn digits(value: u64) -> u64 {
    u64::from(value.checked_ilog10().unwrap_or(0)) + 1
}

impl<'de> Deserialize<'de> for TextLen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenVisitor;
        impl<'de> Visitor<'de> for LenVisitor {
            type Value = TextLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("generated text")
            }
            fn visit_f64<E>(self, _: f64) -> Result<TextLen, E> {
                // About the length of a float as a model writes one.
                Ok(TextLen(4))
            }
            other_types_are!('de, TextLen, TextLen(0); null);
            fn visit_str<E>(self, value: &str) -> Result<TextLen, E> {
                Ok(TextLen(value.len() as u64))
            }
            fn visit_u64<E>(self, value: u64) -> Result<TextLen, E> {
                Ok(TextLen(digits(value)))
            }
            fn visit_i64<E>(self, value: i64) -> Result<TextLen, E> {
                Ok(TextLen(digits(value.unsigned_abs()) + 1))
            }
            fn visit_bool<E>(self, value: bool) -> Result<TextLen, E> {
                Ok(TextLen(if value { 4 } else { 5 }))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<TextLen, D::Error> {
                TextLen::deserialize(inner)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextLen, A::Error> {
                // Brackets, and a comma per element.
                let mut total = 2;
                while let Some(TextLen(element)) = seq.next_element()? {
                    total += element + 1;
                }
                Ok(TextLen(total))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextLen, A::Error> {
                // Braces, and per member two quotes, a colon and a comma.
                let mut total = 2;
                while let Some((TextLen(key), TextLen(value))) = map.next_entry()? {
                    total += key + value + 4;
                }
                Ok(TextLen(total))
            }
        }
        deserializer.deserialize_any(LenVisitor)
    }
}

/// `null` read as the type's default, for nested objects.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A usage block as any provider writes it: OpenAI chat (`prompt_tokens`),
/// OpenAI Responses, images and transcription (`input_tokens`), Anthropic
/// (`input_tokens` and caching), and Gemini (`usageMetadata`, camelCase).
///
/// Sources: OpenAI API reference (chat completions object, responses object,
/// images object, transcription object), Anthropic Messages API reference
/// ("usage", "cache_creation"), Gemini API reference (`UsageMetadata`), all
/// read 2025-10.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub(super) struct RawUsage {
    prompt_tokens: Count,
    completion_tokens: Count,
    #[serde(deserialize_with = "nullable")]
    prompt_tokens_details: Details,
    #[serde(deserialize_with = "nullable")]
    completion_tokens_details: Details,
    input_tokens: Count,
    output_tokens: Count,
    #[serde(deserialize_with = "nullable")]
    input_tokens_details: Details,
    #[serde(deserialize_with = "nullable")]
    output_tokens_details: Details,
    cache_read_input_tokens: Count,
    cache_creation_input_tokens: Count,
    #[serde(deserialize_with = "nullable")]
    cache_creation: CacheCreation,
    /// Anthropic's `usage.service_tier` (`standard`, `priority`, `batch`).
    service_tier: Tagged<ServiceTier>,
    /// Transcription billed by duration: `{"type":"duration","seconds":..}`.
    seconds: SecondsAsMs,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Count,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: Count,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Count,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Count,
    /// Tokens of tool results fed back to the model: billed as input.
    #[serde(rename = "toolUsePromptTokenCount")]
    tool_use_prompt_token_count: Count,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Count,
    reasoning_tokens: Count,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Count,
    ephemeral_1h_input_tokens: Count,
}

/// A value named by a string on the wire; any other string, or any other
/// JSON type, is `None` rather than an error, so one odd member never fails
/// the whole event and loses its usage.
pub(super) trait FromWire: Sized {
    fn from_wire(text: &str) -> Option<Self>;
}

/// A [`FromWire`] value, `None` when absent, `null`, unknown or not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tagged<T>(pub(super) Option<T>);

impl<T> Default for Tagged<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: FromWire> Deserialize<'de> for Tagged<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TagVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: FromWire> Visitor<'de> for TagVisitor<T> {
            type Value = Tagged<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name")
            }
            other_types_are!('de, Tagged<T>, Tagged(None); bool, u64, i64, f64, null, seq, map);
            fn visit_str<E>(self, value: &str) -> Result<Tagged<T>, E> {
                Ok(Tagged(T::from_wire(value)))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<Tagged<T>, D::Error> {
                Tagged::deserialize(inner)
            }
        }
        deserializer.deserialize_any(TagVisitor(std::marker::PhantomData))
    }
}

/// A `service_tier` as written by OpenAI (`auto`, `default`, `flex`,
/// `priority`, `scale`) or Anthropic (`standard`, `priority`, `batch`):
/// every tier not priced apart is the standard one.
impl FromWire for ServiceTier {
    fn from_wire(text: &str) -> Option<Self> {
        Some(match text {
            "flex" => ServiceTier::Flex,
            "priority" => ServiceTier::Priority,
            "batch" => ServiceTier::Batch,
            _ => ServiceTier::Standard,
        })
    }
}

impl FromWire for ImageSize {
    fn from_wire(text: &str) -> Option<Self> {
        Some(ImageSize::from_wire(text))
    }
}

impl FromWire for ImageQuality {
    fn from_wire(text: &str) -> Option<Self> {
        Some(ImageQuality::from_wire(text))
    }
}

impl Details {
    fn merge(&mut self, newer: &Details) {
        self.cached_tokens.merge(newer.cached_tokens);
        self.reasoning_tokens.merge(newer.reasoning_tokens);
    }
}

impl RawUsage {
    /// Whether this block reports anything at all (a block of nulls does
    /// not).
    pub(super) fn reports_anything(&self) -> bool {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.input_tokens,
            self.output_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.cache_creation.ephemeral_5m_input_tokens,
            self.cache_creation.ephemeral_1h_input_tokens,
            self.seconds.0,
            self.prompt_token_count,
            self.candidates_token_count,
            self.thoughts_token_count,
        ]
        .iter()
        .any(|count| count.is_some())
    }

    /// Whether the provider told the input side (so an estimate of it is
    /// not needed).
    pub(super) fn reports_input(&self, api: Api) -> bool {
        match api {
            Api::OpenAi => {
                self.prompt_tokens.is_some()
                    || self.input_tokens.is_some()
                    || self.seconds.0.is_some()
            }
            Api::Anthropic => self.input_tokens.is_some(),
            Api::Gemini => self.prompt_token_count.is_some(),
        }
    }

    /// Folds a later report of the same response into this one. Streams
    /// report cumulative counts (Anthropic's `message_delta`, Gemini's every
    /// chunk, vLLM's continuous usage), so the larger count wins and a
    /// `null` never erases an earlier value.
    pub(super) fn merge(&mut self, newer: &RawUsage) {
        self.prompt_tokens.merge(newer.prompt_tokens);
        self.completion_tokens.merge(newer.completion_tokens);
        self.prompt_tokens_details
            .merge(&newer.prompt_tokens_details);
        self.completion_tokens_details
            .merge(&newer.completion_tokens_details);
        self.input_tokens.merge(newer.input_tokens);
        self.output_tokens.merge(newer.output_tokens);
        self.input_tokens_details.merge(&newer.input_tokens_details);
        self.output_tokens_details
            .merge(&newer.output_tokens_details);
        self.cache_read_input_tokens
            .merge(newer.cache_read_input_tokens);
        self.cache_creation_input_tokens
            .merge(newer.cache_creation_input_tokens);
        self.cache_creation
            .ephemeral_5m_input_tokens
            .merge(newer.cache_creation.ephemeral_5m_input_tokens);
        self.cache_creation
            .ephemeral_1h_input_tokens
            .merge(newer.cache_creation.ephemeral_1h_input_tokens);
        if newer.service_tier.0.is_some() {
            self.service_tier = newer.service_tier;
        }
        self.seconds = self.seconds.max(newer.seconds);
        self.prompt_token_count.merge(newer.prompt_token_count);
        self.cached_content_token_count
            .merge(newer.cached_content_token_count);
        self.candidates_token_count
            .merge(newer.candidates_token_count);
        self.thoughts_token_count.merge(newer.thoughts_token_count);
        self.tool_use_prompt_token_count
            .merge(newer.tool_use_prompt_token_count);
    }

    /// The normalised counts (see the table in the module's documentation).
    pub(super) fn normalise(&self, api: Api) -> Usage {
        match api {
            Api::OpenAi => {
                let audio_ms = self.seconds.0.get();
                if self.prompt_tokens.is_some() {
                    // Chat completions, completions, embeddings.
                    let cached = self.prompt_tokens_details.cached_tokens.get();
                    Usage {
                        input_tokens: self.prompt_tokens.get().saturating_sub(cached),
                        cached_input_tokens: cached,
                        output_tokens: self.completion_tokens.get(),
                        reasoning_tokens: self.completion_tokens_details.reasoning_tokens.get(),
                        audio_ms,
                        ..Usage::default()
                    }
                } else {
                    // Responses, images, transcription.
                    let cached = self.input_tokens_details.cached_tokens.get();
                    Usage {
                        input_tokens: self.input_tokens.get().saturating_sub(cached),
                        cached_input_tokens: cached,
                        output_tokens: self.output_tokens.get(),
                        reasoning_tokens: self.output_tokens_details.reasoning_tokens.get(),
                        audio_ms,
                        ..Usage::default()
                    }
                }
            }
            Api::Anthropic => {
                // `cache_creation_input_tokens` is the sum of both
                // lifetimes; where the split is not given, it is all
                // five-minute writes (Anthropic's default TTL).
                let one_hour = self.cache_creation.ephemeral_1h_input_tokens.get();
                let five_minutes = match self.cache_creation.ephemeral_5m_input_tokens.0 {
                    Some(five) => five,
                    None => self
                        .cache_creation_input_tokens
                        .get()
                        .saturating_sub(one_hour),
                };
                Usage {
                    input_tokens: self.input_tokens.get(),
                    cached_input_tokens: self.cache_read_input_tokens.get(),
                    cache_write_tokens: five_minutes,
                    cache_write_1h_tokens: one_hour,
                    output_tokens: self.output_tokens.get(),
                    service_tier: self.service_tier.0.unwrap_or_default(),
                    ..Usage::default()
                }
            }
            Api::Gemini => {
                let cached = self.cached_content_token_count.get();
                // Counts come from the wire: a huge one saturates, never wraps.
                let prompt = self
                    .prompt_token_count
                    .get()
                    .saturating_add(self.tool_use_prompt_token_count.get());
                let thoughts = self.thoughts_token_count.get();
                Usage {
                    input_tokens: prompt.saturating_sub(cached),
                    cached_input_tokens: cached,
                    output_tokens: self.candidates_token_count.get().saturating_add(thoughts),
                    reasoning_tokens: thoughts,
                    ..Usage::default()
                }
            }
        }
    }
}

/// The `type` of an event, where it says the response is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    /// OpenAI Responses: the last event of a stream, whatever its outcome
    /// (`response.completed`, `response.incomplete`, `response.failed`;
    /// OpenAI API reference, "Streaming events", 2025-10).
    ResponseEnded,
    /// OpenAI streaming transcription's last event, `transcript.text.done`.
    TranscriptDone,
    /// Anthropic's last event, `message_stop` (Messages API reference,
    /// "Streaming messages", 2025-10).
    MessageStop,
    /// A streamed GPT Image's final event, `image_generation.completed` or
    /// `image_edit.completed`: one image, its `usage` (OpenAI API reference,
    /// "Image streaming events", 2025-10).
    ImageCompleted,
}

impl FromWire for EventType {
    fn from_wire(text: &str) -> Option<Self> {
        match text {
            "response.completed" | "response.incomplete" | "response.failed" => {
                Some(Self::ResponseEnded)
            }
            "transcript.text.done" => Some(Self::TranscriptDone),
            "message_stop" => Some(Self::MessageStop),
            "image_generation.completed" | "image_edit.completed" => Some(Self::ImageCompleted),
            _ => None,
        }
    }
}

/// The parts of a response body or stream event that metering reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Event {
    #[serde(rename = "type")]
    pub(super) kind: Tagged<EventType>,
    pub(super) usage: Option<RawUsage>,
    #[serde(rename = "usageMetadata")]
    pub(super) usage_metadata: Option<RawUsage>,
    /// Anthropic `message_start` and the OpenAI Responses events carry
    /// their usage one level down.
    pub(super) message: Option<Nested>,
    pub(super) response: Option<Nested>,
    /// Groq's streams report usage in `x_groq.usage` (Groq API reference,
    /// "Chat completions", streaming, 2025-10).
    pub(super) x_groq: Option<Nested>,
    /// OpenAI chat: the tier that served the request (in every chunk).
    pub(super) service_tier: Tagged<ServiceTier>,
    pub(super) choices: Option<Vec<Choice>>,
    /// Anthropic deltas are objects; OpenAI Responses deltas are strings.
    pub(super) delta: DeltaLen,
    pub(super) candidates: Option<Vec<Candidate>>,
    /// OpenAI images: one item per image generated.
    pub(super) data: ImageCount,
    /// GPT Image responses say the size and quality they produced.
    pub(super) size: Tagged<ImageSize>,
    pub(super) quality: Tagged<ImageQuality>,
    /// OpenAI transcription, `verbose_json`: seconds of audio.
    pub(super) duration: SecondsAsMs,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Nested {
    pub(super) usage: Option<RawUsage>,
    pub(super) service_tier: Tagged<ServiceTier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Choice {
    delta: Option<ChoiceDelta>,
    /// Legacy completions.
    text: TextLen,
}

/// What an OpenAI chat chunk delivers (OpenAI API reference, "The chat
/// completion chunk object", 2025-10; `reasoning_content` from DeepSeek and
/// vLLM, `reasoning` from OpenRouter and Ollama).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChoiceDelta {
    content: TextLen,
    reasoning_content: TextLen,
    reasoning: TextLen,
    refusal: TextLen,
    tool_calls: Option<Vec<ToolCallDelta>>,
    /// The legacy `function_call`.
    function_call: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ToolCallDelta {
    function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FunctionDelta {
    name: TextLen,
    arguments: TextLen,
}

impl FunctionDelta {
    fn len(&self) -> u64 {
        self.name.0 + self.arguments.0
    }
}

/// The generated text of a `delta` member: an OpenAI Responses delta is a
/// string (output text, function-call arguments, reasoning, refusal, code);
/// an Anthropic delta is an object whose `text`, `thinking` or
/// `partial_json` is generated (its `type` and `stop_reason` are not).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct DeltaLen(pub(super) u64);

impl<'de> Deserialize<'de> for DeltaLen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeltaVisitor;
        impl<'de> Visitor<'de> for DeltaVisitor {
            type Value = DeltaLen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a delta")
            }
            other_types_are!('de, DeltaLen, DeltaLen(0); bool, u64, i64, f64, null, seq);
            fn visit_str<E>(self, value: &str) -> Result<DeltaLen, E> {
                Ok(DeltaLen(value.len() as u64))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DeltaLen, A::Error> {
                let mut total = 0;
                while let Some(key) = map.next_key::<DeltaKey>()? {
                    match key {
                        DeltaKey::Generated => total += map.next_value::<TextLen>()?.0,
                        DeltaKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(DeltaLen(total))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<DeltaLen, D::Error> {
                DeltaLen::deserialize(inner)
            }
        }
        deserializer.deserialize_any(DeltaVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum DeltaKey {
    #[serde(rename = "text", alias = "thinking", alias = "partial_json")]
    Generated,
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Candidate {
    #[serde(deserialize_with = "nullable")]
    content: CandidateContent,
    #[serde(rename = "finishReason")]
    pub(super) finish_reason: Option<IgnoredAny>,
}

impl Candidate {
    /// A candidate that finished, as a long event's tail says.
    pub(super) fn finished() -> Self {
        Self {
            finish_reason: Some(IgnoredAny),
            ..Self::default()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CandidateContent {
    parts: Option<Vec<Part>>,
}

/// A Gemini part (Gemini API reference, `Part`, 2025-10): text (thought
/// summaries too, flagged `thought`), a function call, generated code and
/// its result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Part {
    text: TextLen,
    #[serde(rename = "functionCall")]
    function_call: Option<GeminiFunctionCall>,
    #[serde(rename = "executableCode")]
    executable_code: Option<GeminiCode>,
    #[serde(rename = "codeExecutionResult")]
    code_execution_result: Option<GeminiCode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GeminiFunctionCall {
    name: TextLen,
    args: TextLen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GeminiCode {
    code: TextLen,
    output: TextLen,
}

/// The images in an OpenAI images response's `data`: the items carrying a
/// `b64_json` or `url` (OpenAI API reference, "The image generation
/// response", 2025-10). Embeddings, files and model listings also have a
/// `data` list, whose items carry neither; any other shape counts 0.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ImageCount(pub(super) u64);

impl<'de> Deserialize<'de> for ImageCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ImageCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data list")
            }
            other_types_are!('de, ImageCount, ImageCount(0); str, bool, u64, i64, f64, null, map);
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ImageCount, A::Error> {
                let mut images = 0;
                while let Some(IsImage(is_image)) = seq.next_element()? {
                    images += u64::from(is_image);
                }
                Ok(ImageCount(images))
            }
            fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<ImageCount, D::Error> {
                ImageCount::deserialize(inner)
            }
        }
        deserializer.deserialize_any(ListVisitor)
    }
}

/// Whether one `data` item is an image: an object with a non-null
/// `b64_json` or `url`.
struct IsImage(bool);

impl<'de> Deserialize<'de> for IsImage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor;
        impl<'de> Visitor<'de> for ItemVisitor {
            type Value = IsImage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a data item")
            }
            other_types_are!('de, IsImage, IsImage(false); str, bool, u64, i64, f64, null, seq);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsImage, A::Error> {
                let mut is_image = false;
                while let Some(key) = map.next_key::<ImageKey>()? {
                    match key {
                        ImageKey::Image => {
                            is_image |= map.next_value::<Option<IgnoredAny>>()?.is_some();
                        }
                        ImageKey::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(IsImage(is_image))
            }
        }
        deserializer.deserialize_any(ItemVisitor)
    }
}

#[derive(Deserialize)]
#[serde(field_identifier)]
enum ImageKey {
    #[serde(rename = "b64_json", alias = "url")]
    Image,
    #[serde(other)]
    Other,
}

impl Event {
    /// Every usage block this event carries, where its dialect puts them.
    pub(super) fn usage_blocks(&self, api: Api) -> impl Iterator<Item = &RawUsage> {
        let (first, nested) = match api {
            Api::Gemini => (self.usage_metadata.as_ref(), None),
            Api::OpenAi => (
                self.usage.as_ref(),
                self.response
                    .as_ref()
                    .or(self.x_groq.as_ref())
                    .and_then(|nested| nested.usage.as_ref()),
            ),
            Api::Anthropic => (
                self.usage.as_ref(),
                self.message.as_ref().and_then(|m| m.usage.as_ref()),
            ),
        };
        first.into_iter().chain(nested)
    }

    /// The tier the response says served it (OpenAI chat at the top,
    /// Responses inside `response`).
    pub(super) fn service_tier(&self) -> Option<ServiceTier> {
        self.service_tier
            .0
            .or_else(|| self.response.as_ref().and_then(|r| r.service_tier.0))
    }

    /// Bytes of output this event delivers, for estimating cut streams.
    pub(super) fn delivered_len(&self, api: Api) -> u64 {
        match api {
            Api::OpenAi => {
                let chat: u64 = self
                    .choices
                    .iter()
                    .flatten()
                    .map(|choice| {
                        choice.text.0
                            + choice.delta.as_ref().map_or(0, |delta| {
                                delta.content.0
                                    + delta.reasoning_content.0
                                    + delta.reasoning.0
                                    + delta.refusal.0
                                    + delta.function_call.as_ref().map_or(0, FunctionDelta::len)
                                    + delta
                                        .tool_calls
                                        .iter()
                                        .flatten()
                                        .filter_map(|call| call.function.as_ref())
                                        .map(FunctionDelta::len)
                                        .sum::<u64>()
                            })
                    })
                    .sum();
                chat + self.delta.0
            }
            Api::Anthropic => self.delta.0,
            Api::Gemini => self
                .candidates
                .iter()
                .flatten()
                .flat_map(|candidate| candidate.content.parts.iter().flatten())
                .map(|part| {
                    part.text.0
                        + part
                            .function_call
                            .as_ref()
                            .map_or(0, |call| call.name.0 + call.args.0)
                        + part.executable_code.as_ref().map_or(0, |code| code.code.0)
                        + part
                            .code_execution_result
                            .as_ref()
                            .map_or(0, |result| result.output.0)
                })
                .sum(),
        }
    }

    /// Whether this event is the dialect's last one of a finished response.
    /// OpenAI chat's `[DONE]` is not JSON and is seen by the SSE reader.
    pub(super) fn ends_response(&self, api: Api) -> bool {
        match api {
            Api::OpenAi => matches!(
                self.kind.0,
                Some(
                    EventType::ResponseEnded
                        | EventType::TranscriptDone
                        | EventType::ImageCompleted
                )
            ),
            Api::Anthropic => self.kind.0 == Some(EventType::MessageStop),
            // The chunk that says why generation stopped and carries the
            // final counts.
            Api::Gemini => {
                self.usage_metadata.is_some()
                    && self
                        .candidates
                        .iter()
                        .flatten()
                        .any(|candidate| candidate.finish_reason.is_some())
            }
        }
    }

    /// Milliseconds of audio a `verbose_json` transcription reports.
    pub(super) fn duration_ms(&self) -> u64 {
        self.duration.0.get()
    }

    /// The image variant a GPT Image response reports.
    pub(super) fn image_variant(&self) -> ImageVariant {
        ImageVariant {
            size: self.size.0.unwrap_or_default(),
            quality: self.quality.0.unwrap_or_default(),
        }
    }
}
