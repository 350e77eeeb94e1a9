//! Usage metering: token counts read from responses as they pass through,
//! JSON bodies and SSE streams alike, never by buffering a whole stream.
//!
//! Providers count tokens differently; [`Usage`] normalises them so each
//! field is priced once:
//!
//! | field | OpenAI | Anthropic | Gemini |
//! |---|---|---|---|
//! | `input_tokens` (uncached) | `prompt_tokens` - cached | `input_tokens` | `promptTokenCount` - cached |
//! | `cached_input_tokens` | `prompt_tokens_details.cached_tokens` | `cache_read_input_tokens` | `cachedContentTokenCount` |
//! | `cache_write_tokens` | - | `cache_creation_input_tokens` | - |
//! | `output_tokens` (reasoning included) | `completion_tokens` / `output_tokens` | `output_tokens` | `candidatesTokenCount` + `thoughtsTokenCount` |
//! | `reasoning_tokens` (part of output) | `*_tokens_details.reasoning_tokens` | - | `thoughtsTokenCount` |

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kind::Api;

/// Normalised usage of one response: token counts, and the units that
/// endpoints priced by something other than tokens bill (images, audio
/// minutes, characters of speech).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Uncached input tokens, billed at the input rate.
    pub input_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Input tokens written to a five-minute prompt cache (Anthropic's
    /// `cache_creation_input_tokens`, less the one-hour part below).
    pub cache_write_tokens: u64,
    /// Input tokens written to a one-hour prompt cache (Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`), billed at twice the base
    /// input rate (Anthropic pricing page, "Prompt caching", 2025-08).
    pub cache_write_1h_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    pub reasoning_tokens: u64,
    /// The processing tier the provider says it used (OpenAI's
    /// `service_tier` in the response), which scales token prices.
    pub service_tier: ServiceTier,
    /// Images generated or edited (OpenAI `/v1/images/*`: the `data` items).
    pub images: u64,
    /// The size and quality the images were asked for, which price them.
    pub image_variant: ImageVariant,
    /// Milliseconds of input audio billed per minute (transcription and
    /// translation).
    pub audio_ms: u64,
    /// Characters of text turned into speech (`/v1/audio/speech`), billed per
    /// million characters.
    pub speech_chars: u64,
}

/// OpenAI's processing tiers (`service_tier`: `auto`/`default`, `flex`,
/// `priority`) and the Batch API, each priced differently for the same
/// model (OpenAI API pricing page, "Flex processing", "Priority
/// processing", "Batch API", 2025-10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    #[default]
    Standard,
    Flex,
    Priority,
    Batch,
}

/// What an image request asked for: the two fields OpenAI's per-image
/// prices depend on (`size`, `quality`; OpenAI API pricing page, "Image
/// generation", 2025-10). `Unspecified` where the request left it out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageVariant {
    pub size: ImageSize,
    pub quality: ImageQuality,
}

/// `size` of an OpenAI image request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageSize {
    #[default]
    Unspecified,
    /// `256x256`
    S256,
    /// `512x512`
    S512,
    /// `1024x1024`
    S1024,
    /// `1792x1024` or `1024x1792` (DALL-E 3)
    Wide1792,
    /// `1536x1024` or `1024x1536` (GPT Image)
    Wide1536,
    /// `auto`, or any size the table does not list: priced at the largest.
    Other,
}

/// `quality` of an OpenAI image request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImageQuality {
    #[default]
    Unspecified,
    Standard,
    Hd,
    Low,
    Medium,
    High,
    /// `auto`, or any quality the table does not list: priced at the highest.
    Other,
}

/// How a [`Usage`] was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider's own usage block.
    Reported,
    /// The stream was cut before the provider reported usage: output counted
    /// from the text delivered so far (about four characters a token), input
    /// from the provider's early report where it made one.
    Estimated,
    /// Nothing to meter (an error, a listing, a non-JSON body).
    None,
}

/// Characters per token used to estimate output that was delivered but
/// never reported (a cut stream). Rounds up: a delivered character is
/// never free.
const CHARS_PER_TOKEN: u64 = 4;

/// A usage block as any provider writes it: OpenAI chat (`prompt_tokens`),
/// OpenAI Responses and Anthropic (`input_tokens`), Anthropic caching, and
/// Gemini (`usageMetadata`, camelCase). Parsed straight from the bytes: no
/// JSON tree is built.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: u64,
    prompt_tokens_details: Details,
    completion_tokens_details: Details,
    input_tokens: u64,
    output_tokens: u64,
    input_tokens_details: Details,
    output_tokens_details: Details,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: u64,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: u64,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: u64,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: u64,
    reasoning_tokens: u64,
}

impl RawUsage {
    fn normalise(&self, api: Api) -> Usage {
        match api {
            Api::OpenAi => match self.prompt_tokens {
                // Chat completions, completions, embeddings.
                Some(prompt) => {
                    let cached = self.prompt_tokens_details.cached_tokens;
                    Usage {
                        input_tokens: prompt.saturating_sub(cached),
                        cached_input_tokens: cached,
                        output_tokens: self.completion_tokens,
                        reasoning_tokens: self.completion_tokens_details.reasoning_tokens,
                        ..Usage::default()
                    }
                }
                // The Responses API.
                None => {
                    let cached = self.input_tokens_details.cached_tokens;
                    Usage {
                        input_tokens: self.input_tokens.saturating_sub(cached),
                        cached_input_tokens: cached,
                        output_tokens: self.output_tokens,
                        reasoning_tokens: self.output_tokens_details.reasoning_tokens,
                        ..Usage::default()
                    }
                }
            },
            Api::Anthropic => Usage {
                input_tokens: self.input_tokens,
                cached_input_tokens: self.cache_read_input_tokens,
                cache_write_tokens: self.cache_creation_input_tokens,
                output_tokens: self.output_tokens,
                ..Usage::default()
            },
            Api::Gemini => {
                let cached = self.cached_content_token_count;
                Usage {
                    input_tokens: self.prompt_token_count.saturating_sub(cached),
                    cached_input_tokens: cached,
                    output_tokens: self.candidates_token_count + self.thoughts_token_count,
                    reasoning_tokens: self.thoughts_token_count,
                    ..Usage::default()
                }
            }
        }
    }
}

/// The parts of a response body or stream event that metering reads; serde
/// skips everything else without building it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    usage: Option<RawUsage>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<RawUsage>,
    /// Anthropic `message_start` and the OpenAI Responses events carry
    /// their usage one level down.
    message: Option<Nested>,
    response: Option<Nested>,
    choices: Option<Vec<Choice>>,
    /// Anthropic deltas are objects; OpenAI Responses deltas are strings.
    delta: Option<Delta>,
    candidates: Option<Vec<Candidate>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Nested {
    usage: Option<RawUsage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Choice {
    delta: Option<ChoiceDelta>,
    text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChoiceDelta {
    content: Option<String>,
    reasoning_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Delta {
    Text(String),
    Block(BlockDelta),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BlockDelta {
    text: Option<String>,
    thinking: Option<String>,
    partial_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Candidate {
    content: Option<CandidateContent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CandidateContent {
    parts: Option<Vec<Part>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Part {
    text: Option<String>,
}

fn len(text: &Option<String>) -> usize {
    text.as_ref().map_or(0, String::len)
}

impl Event {
    fn usage(&self, api: Api) -> Option<Usage> {
        let raw = match api {
            Api::Gemini => self.usage_metadata.as_ref(),
            Api::OpenAi => self
                .usage
                .as_ref()
                .or_else(|| self.response.as_ref().and_then(|r| r.usage.as_ref())),
            Api::Anthropic => self
                .usage
                .as_ref()
                .or_else(|| self.message.as_ref().and_then(|m| m.usage.as_ref())),
        }?;
        Some(raw.normalise(api))
    }

    /// Text this event delivers to the user, for estimating cut streams.
    fn delivered_text_len(&self, api: Api) -> usize {
        match api {
            Api::OpenAi => {
                let chat: usize = self
                    .choices
                    .iter()
                    .flatten()
                    .map(|c| {
                        c.delta
                            .as_ref()
                            .map_or(0, |d| len(&d.content) + len(&d.reasoning_content))
                            + len(&c.text)
                    })
                    .sum();
                let responses = match &self.delta {
                    Some(Delta::Text(text)) => text.len(),
                    _ => 0,
                };
                chat + responses
            }
            Api::Anthropic => match &self.delta {
                Some(Delta::Block(block)) => {
                    len(&block.text) + len(&block.thinking) + len(&block.partial_json)
                }
                _ => 0,
            },
            Api::Gemini => self
                .candidates
                .iter()
                .flatten()
                .filter_map(|c| c.content.as_ref())
                .flat_map(|content| content.parts.iter().flatten())
                .map(|p| len(&p.text))
                .sum(),
        }
    }
}

/// Reads a usage block from a whole JSON response or one SSE event payload.
/// Returns `None` when it carries no usage.
pub fn usage_from_json(api: Api, value: &Value) -> Option<Usage> {
    Event::deserialize(value).ok()?.usage(api)
}

/// Meters one response body as it streams past. Feed it every chunk in
/// order, then call [`Meter::finish`] (also when the stream was cut).
#[derive(Debug)]
pub struct Meter {
    api: Api,
    mode: Mode,
    reported: Option<Usage>,
    delivered_chars: u64,
}

#[derive(Debug)]
enum Mode {
    /// A JSON body: a bounded copy is kept, parsed at the end.
    Json { copy: Vec<u8>, overflowed: bool },
    /// An SSE stream: complete lines are parsed as they arrive; `partial`
    /// holds the unfinished last line between chunks.
    Sse { partial: Vec<u8> },
}

/// Largest JSON response copied for metering. Chat responses are a few KiB;
/// a larger body (a big embeddings batch) is metered from its tail, where
/// every provider puts its usage block.
const MAX_JSON_COPY: usize = 4 * 1024 * 1024;
const JSON_TAIL: usize = 64 * 1024;
/// Longest SSE line kept while waiting for its end; a longer one is skipped.
const MAX_SSE_LINE: usize = 4 * 1024 * 1024;

impl Meter {
    /// `event_stream` is true when the response is `text/event-stream`.
    /// `length_hint` (the body's content length, when known) sizes the copy
    /// of a JSON body up front.
    pub fn new(api: Api, event_stream: bool, length_hint: Option<u64>) -> Self {
        let capacity = length_hint.map_or(0, |length| {
            usize::try_from(length).unwrap_or(0).min(MAX_JSON_COPY)
        });
        let mode = if event_stream {
            Mode::Sse {
                partial: Vec::new(),
            }
        } else {
            Mode::Json {
                copy: Vec::with_capacity(capacity),
                overflowed: false,
            }
        };
        Self {
            api,
            mode,
            reported: None,
            delivered_chars: 0,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Json { copy, overflowed } => {
                copy.extend_from_slice(chunk);
                if copy.len() > MAX_JSON_COPY {
                    let cut = copy.len() - JSON_TAIL;
                    copy.drain(..cut);
                    *overflowed = true;
                }
            }
            Mode::Sse { partial } => {
                let mut rest = chunk;
                let mut lines: Vec<Vec<u8>> = Vec::new();
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    let (line, after) = rest.split_at(end);
                    if partial.is_empty() {
                        lines.push(line.to_vec());
                    } else {
                        partial.extend_from_slice(line);
                        lines.push(std::mem::take(partial));
                    }
                    rest = &after[1..];
                }
                if partial.len() + rest.len() <= MAX_SSE_LINE {
                    partial.extend_from_slice(rest);
                } else {
                    partial.clear();
                }
                for line in lines {
                    self.sse_line(&line);
                }
            }
        }
    }

    fn sse_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data.is_empty() || data == b"[DONE]" {
            return;
        }
        let Ok(event) = serde_json::from_slice::<Event>(data) else {
            return;
        };
        self.delivered_chars += event.delivered_text_len(self.api) as u64;
        if let Some(usage) = event.usage(self.api) {
            self.reported = Some(match (self.api, self.reported) {
                // Anthropic reports input in `message_start` and cumulative
                // output in `message_delta` (whose input fields may be absent).
                (Api::Anthropic, Some(previous)) => Usage {
                    input_tokens: usage.input_tokens.max(previous.input_tokens),
                    cached_input_tokens: usage
                        .cached_input_tokens
                        .max(previous.cached_input_tokens),
                    cache_write_tokens: usage.cache_write_tokens.max(previous.cache_write_tokens),
                    output_tokens: usage.output_tokens.max(previous.output_tokens),
                    ..Usage::default()
                },
                // OpenAI reports once at the end; Gemini's counts are cumulative.
                _ => usage,
            });
        }
    }

    /// The usage of the response. `complete` says whether the body reached
    /// its end (false for a stream cut by the client or the upstream).
    pub fn finish(mut self, complete: bool) -> (Usage, UsageSource) {
        if let Mode::Sse { partial } = &mut self.mode {
            let last = std::mem::take(partial);
            if !last.is_empty() {
                self.sse_line(&last);
            }
        }
        let estimated_output = self.delivered_chars.div_ceil(CHARS_PER_TOKEN);
        match self.mode {
            Mode::Json { copy, overflowed } => {
                let parsed = if overflowed {
                    usage_from_tail(self.api, &copy)
                } else {
                    usage_from_body(self.api, &copy)
                };
                match parsed {
                    Some(usage) => (usage, UsageSource::Reported),
                    None => (Usage::default(), UsageSource::None),
                }
            }
            Mode::Sse { .. } => match (self.reported, complete) {
                (Some(usage), true) => (usage, UsageSource::Reported),
                // Cut short: whatever was reported (Anthropic reports input
                // at the start), and at least the output that was delivered.
                (Some(usage), false) => (
                    Usage {
                        output_tokens: usage.output_tokens.max(estimated_output),
                        ..usage
                    },
                    UsageSource::Estimated,
                ),
                (None, _) if self.delivered_chars > 0 => (
                    Usage {
                        output_tokens: estimated_output,
                        ..Usage::default()
                    },
                    UsageSource::Estimated,
                ),
                (None, _) => (Usage::default(), UsageSource::None),
            },
        }
    }
}

fn usage_from_body(api: Api, body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<Event>(body).ok()?.usage(api)
}

/// Finds the usage object in the tail of a large JSON body.
fn usage_from_tail(api: Api, tail: &[u8]) -> Option<Usage> {
    let key: &[u8] = if api == Api::Gemini {
        b"\"usageMetadata\""
    } else {
        b"\"usage\""
    };
    let start = tail.windows(key.len()).rposition(|window| window == key)?;
    let after_key = &tail[start + key.len()..];
    let open = after_key.iter().position(|&b| b == b'{')?;
    let mut stream = serde_json::Deserializer::from_slice(&after_key[open..]).into_iter::<Value>();
    let object = stream.next()?.ok()?;
    let wrapper = if api == Api::Gemini {
        serde_json::json!({ "usageMetadata": object })
    } else {
        serde_json::json!({ "usage": object })
    };
    usage_from_json(api, &wrapper)
}

#[cfg(test)]
mod tests;
