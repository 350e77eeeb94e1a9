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

/// Normalised token counts of one response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
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

fn u(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads a usage block from a whole JSON response or one SSE event payload.
/// Returns `None` when the value carries no usage.
pub fn usage_from_json(api: Api, value: &Value) -> Option<Usage> {
    match api {
        Api::OpenAi => {
            // Chat/completions/embeddings: top-level `usage`; Responses API:
            // `usage` on the response object, or inside `response` of the
            // `response.completed` event.
            let usage = value
                .get("usage")
                .filter(|u| u.is_object())
                .or_else(|| value.pointer("/response/usage").filter(|u| u.is_object()))?;
            let chat_style = usage.get("prompt_tokens").is_some();
            let (input, output, cached, reasoning) = if chat_style {
                (
                    u(usage, "/prompt_tokens"),
                    u(usage, "/completion_tokens"),
                    u(usage, "/prompt_tokens_details/cached_tokens"),
                    u(usage, "/completion_tokens_details/reasoning_tokens"),
                )
            } else {
                (
                    u(usage, "/input_tokens"),
                    u(usage, "/output_tokens"),
                    u(usage, "/input_tokens_details/cached_tokens"),
                    u(usage, "/output_tokens_details/reasoning_tokens"),
                )
            };
            Some(Usage {
                input_tokens: input.saturating_sub(cached),
                cached_input_tokens: cached,
                cache_write_tokens: 0,
                output_tokens: output,
                reasoning_tokens: reasoning,
            })
        }
        Api::Anthropic => {
            // A message (JSON), `message_start` (input, first output count)
            // or `message_delta` (cumulative output).
            let usage = value
                .get("usage")
                .or_else(|| value.pointer("/message/usage"))
                .filter(|u| u.is_object())?;
            Some(Usage {
                input_tokens: u(usage, "/input_tokens"),
                cached_input_tokens: u(usage, "/cache_read_input_tokens"),
                cache_write_tokens: u(usage, "/cache_creation_input_tokens"),
                output_tokens: u(usage, "/output_tokens"),
                reasoning_tokens: 0,
            })
        }
        Api::Gemini => {
            let usage = value.get("usageMetadata").filter(|u| u.is_object())?;
            let cached = u(usage, "/cachedContentTokenCount");
            let thoughts = u(usage, "/thoughtsTokenCount");
            Some(Usage {
                input_tokens: u(usage, "/promptTokenCount").saturating_sub(cached),
                cached_input_tokens: cached,
                cache_write_tokens: 0,
                output_tokens: u(usage, "/candidatesTokenCount") + thoughts,
                reasoning_tokens: thoughts,
            })
        }
    }
}

/// Text a streamed event delivers to the user, for estimating cut streams.
fn delivered_text_len(api: Api, event: &Value) -> usize {
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .map_or(0, str::len)
    };
    match api {
        Api::OpenAi => {
            let choices = event.get("choices").and_then(Value::as_array);
            let chat: usize = choices.map_or(0, |choices| {
                choices
                    .iter()
                    .map(|choice| {
                        let content = choice
                            .pointer("/delta/content")
                            .and_then(Value::as_str)
                            .map_or(0, str::len);
                        let reasoning = choice
                            .pointer("/delta/reasoning_content")
                            .and_then(Value::as_str)
                            .map_or(0, str::len);
                        let legacy = choice
                            .get("text")
                            .and_then(Value::as_str)
                            .map_or(0, str::len);
                        content + reasoning + legacy
                    })
                    .sum()
            });
            let responses = if event
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(".delta"))
            {
                text("/delta")
            } else {
                0
            };
            chat + responses
        }
        Api::Anthropic => {
            text("/delta/text") + text("/delta/thinking") + text("/delta/partial_json")
        }
        Api::Gemini => event
            .pointer("/candidates/0/content/parts")
            .and_then(Value::as_array)
            .map_or(0, |parts| {
                parts
                    .iter()
                    .map(|part| part.get("text").and_then(Value::as_str).map_or(0, str::len))
                    .sum()
            }),
    }
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
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        self.delivered_chars += delivered_text_len(self.api, &event) as u64;
        if let Some(usage) = usage_from_json(self.api, &event) {
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
                    reasoning_tokens: 0,
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

/// The only parts of a response body metering reads; serde skips the rest
/// without building it, so a response is never materialised as a tree.
#[derive(Deserialize)]
struct UsageFields {
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default, rename = "usageMetadata")]
    usage_metadata: Option<Value>,
}

fn usage_from_body(api: Api, body: &[u8]) -> Option<Usage> {
    let fields: UsageFields = serde_json::from_slice(body).ok()?;
    let wrapper = match (api, fields.usage, fields.usage_metadata) {
        (Api::Gemini, _, Some(metadata)) => serde_json::json!({ "usageMetadata": metadata }),
        (Api::OpenAi | Api::Anthropic, Some(usage), _) => serde_json::json!({ "usage": usage }),
        _ => return None,
    };
    usage_from_json(api, &wrapper)
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
