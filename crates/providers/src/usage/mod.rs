//! Usage metering: token counts and other billed units read from responses
//! as they pass through, JSON bodies, SSE streams and streamed JSON arrays
//! alike, never by buffering a whole stream.
//!
//! Providers count differently; [`Usage`] normalises them so each field is
//! priced once (sources: OpenAI API reference, chat completion, responses,
//! images and transcription objects; Anthropic Messages API reference,
//! `usage`; Gemini API reference, `UsageMetadata`; read 2025-10):
//!
//! | field | OpenAI | Anthropic | Gemini |
//! |---|---|---|---|
//! | `input_tokens` (uncached) | `prompt_tokens` / `input_tokens` - cached | `input_tokens` | `promptTokenCount` + `toolUsePromptTokenCount` - cached |
//! | `cached_input_tokens` | `*_tokens_details.cached_tokens` | `cache_read_input_tokens` | `cachedContentTokenCount` |
//! | `cache_write_tokens` (5 min) | - | `cache_creation.ephemeral_5m_input_tokens`, else `cache_creation_input_tokens` - 1 h | - |
//! | `cache_write_1h_tokens` | - | `cache_creation.ephemeral_1h_input_tokens` | - |
//! | `output_tokens` (reasoning included) | `completion_tokens` / `output_tokens` | `output_tokens` | `candidatesTokenCount` + `thoughtsTokenCount` |
//! | `reasoning_tokens` (part of output) | `*_tokens_details.reasoning_tokens` | - | `thoughtsTokenCount` |
//! | `service_tier` | `service_tier` (`flex`, `priority`; others standard) | `usage.service_tier` (`priority`, `batch`) | - |
//! | `images` | `data` items with `b64_json` or `url` | - | - |
//! | `audio_ms` | `duration` / `usage.seconds` (transcription) | - | - |
//!
//! Every count may be `null`, absent or a float on the wire (OpenAI-compatible
//! servers write all three); streams report cumulative counts, merged so a
//! later `null` never erases an earlier value. A stream is `Reported` once
//! its dialect's terminal event arrived with usage (`[DONE]`,
//! `response.completed`/`incomplete`/`failed`, `message_stop`, Gemini's
//! chunk with `finishReason` and `usageMetadata`), even if the connection is
//! then cut; otherwise it is estimated from every kind of output delivered
//! (text, tool-call arguments, reasoning, refusals, code) and the request's
//! input estimate.

mod split;
mod wire;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::split::{ArraySplitter, Element, LongEvent};
use self::wire::{Candidate, Event, EventType, FromWire, RawUsage, Tagged};
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

impl ImageSize {
    /// Reads an OpenAI `size` (`1024x1024`, `1536x1024`, `auto`, ...), as a
    /// request or a GPT Image response writes it.
    pub fn from_wire(size: &str) -> Self {
        match size {
            "256x256" => Self::S256,
            "512x512" => Self::S512,
            "1024x1024" => Self::S1024,
            "1792x1024" | "1024x1792" => Self::Wide1792,
            "1536x1024" | "1024x1536" => Self::Wide1536,
            _ => Self::Other,
        }
    }
}

impl ImageQuality {
    /// Reads an OpenAI `quality` (`standard`, `hd`, `low`, `medium`, `high`,
    /// `auto`).
    pub fn from_wire(quality: &str) -> Self {
        match quality {
            "standard" => Self::Standard,
            "hd" => Self::Hd,
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            _ => Self::Other,
        }
    }
}

/// Characters per token used to estimate output that was delivered but
/// never reported (a cut stream). Rounds up: a delivered character is
/// never free.
const CHARS_PER_TOKEN: u64 = 4;

/// Reads a usage block from a whole JSON response or one SSE event payload.
/// Returns `None` when it reports nothing (no usage, no images, no audio
/// duration).
pub fn usage_from_json(api: Api, value: &Value) -> Option<Usage> {
    let event = Event::deserialize(value).ok()?;
    let mut tally = Tally::default();
    tally.event(api, &event);
    tally.reports_anything().then(|| tally.usage(api))
}

/// Meters one response body as it passes. Feed it every chunk in order,
/// then call [`Meter::finish`] (also when the stream was cut).
///
/// Bodies are told apart by their first bytes: an SSE stream (the caller
/// says so), a JSON object (a bounded copy, parsed at the end), a JSON array
/// (Gemini's `streamGenerateContent` without `?alt=sse`: metered element by
/// element like an SSE stream), or anything else (audio, files: not copied).
#[derive(Debug)]
pub struct Meter {
    api: Api,
    mode: Mode,
    tally: Tally,
    /// The gateway's estimate of the request's input tokens, used when a
    /// stream ends before the provider reported its input.
    input_estimate: u64,
}

#[derive(Debug)]
enum Mode {
    /// A body whose kind its first bytes have not told yet: `prefix` holds
    /// them from the first non-blank one (a few bytes at most, unless the
    /// first chunk was larger); `capacity` sizes the copy of a JSON object.
    Undecided { capacity: usize, prefix: Vec<u8> },
    /// A JSON object: a bounded copy is kept, parsed at the end.
    /// `image_keys` counts the images in the part of a large body dropped
    /// from the copy (the images of a big `b64_json` response precede its
    /// usage block).
    Object {
        copy: Vec<u8>,
        overflowed: bool,
        image_keys: ImageKeys,
    },
    /// A JSON array streamed element by element.
    Array(ArraySplitter),
    /// An SSE stream: complete lines are read as they arrive; `partial`
    /// holds the unfinished last line between chunks.
    /// A line longer than [`MAX_EVENT`] keeps only its ends in `long`.
    Sse {
        partial: Vec<u8>,
        long: Option<LongEvent>,
    },
    /// Not JSON (audio, an uploaded file's content): nothing is kept.
    Opaque,
}

/// What the events of one response told so far.
#[derive(Debug, Default)]
struct Tally {
    /// Every usage report, merged (counts are cumulative; nulls erase
    /// nothing).
    reported: Option<RawUsage>,
    service_tier: Option<ServiceTier>,
    images: u64,
    image_variant: ImageVariant,
    /// Milliseconds of audio from a transcription's `duration`.
    audio_ms: u64,
    /// Bytes of output delivered (text, tool-call arguments, reasoning,
    /// refusals, code), for estimating a cut stream.
    delivered: u64,
    /// The dialect's terminal event arrived: the response finished, even if
    /// the connection was closed before the gateway saw the body end.
    ended: bool,
}

impl Tally {
    fn event(&mut self, api: Api, event: &Event) {
        self.delivered += event.delivered_len(api);
        for block in event.usage_blocks(api) {
            if !block.reports_anything() {
                continue;
            }
            match &mut self.reported {
                Some(reported) => reported.merge(block),
                None => self.reported = Some(block.clone()),
            }
        }
        if let Some(tier) = event.service_tier() {
            self.service_tier = Some(tier);
        }
        if api == Api::OpenAi {
            let streamed_image = event.kind.0 == Some(EventType::ImageCompleted);
            let images = event.data.0 + u64::from(streamed_image);
            self.images += images;
            if images > 0 {
                self.image_variant = event.image_variant();
            }
            self.audio_ms = self.audio_ms.max(event.duration_ms());
        }
        if event.ends_response(api) {
            self.ended = true;
        }
    }

    fn reports_anything(&self) -> bool {
        self.reported.is_some() || self.images > 0 || self.audio_ms > 0
    }

    /// The usage as reported (zero where nothing was).
    fn usage(&self, api: Api) -> Usage {
        let mut usage = self
            .reported
            .as_ref()
            .map_or_else(Usage::default, |raw| raw.normalise(api));
        if let Some(tier) = self.service_tier {
            usage.service_tier = tier;
        }
        usage.images = self.images;
        usage.image_variant = self.image_variant;
        usage.audio_ms = usage.audio_ms.max(self.audio_ms);
        usage
    }
}

/// Largest JSON response copied for metering. Chat responses are a few KiB;
/// a larger body (a big embeddings batch) is metered from its tail, where
/// every provider puts its usage block.
const MAX_JSON_COPY: usize = 4 * 1024 * 1024;
const JSON_TAIL: usize = 64 * 1024;
/// Longest SSE line or array element kept whole while waiting for its end;
/// of a longer one only its two ends are kept.
const MAX_EVENT: usize = 4 * 1024 * 1024;

impl Meter {
    /// `event_stream` is true when the response is `text/event-stream`.
    /// `length_hint` (the body's content length, when known) sizes the copy
    /// of a JSON body.
    pub fn new(api: Api, event_stream: bool, length_hint: Option<u64>) -> Self {
        let capacity = length_hint.map_or(0, |length| {
            usize::try_from(length).unwrap_or(0).min(MAX_JSON_COPY)
        });
        let mode = if event_stream {
            BodyKind::EventStream.mode(0)
        } else {
            Mode::Undecided {
                capacity,
                prefix: Vec::new(),
            }
        };
        Self {
            api,
            mode,
            tally: Tally::default(),
            input_estimate: 0,
        }
    }

    /// The gateway's estimate of the request's input, in tokens: billed
    /// (as uncached input, source `Estimated`) when a stream ends before
    /// the provider reported its input.
    pub fn with_input_estimate(self, tokens: u64) -> Self {
        Self {
            input_estimate: tokens,
            ..self
        }
    }

    /// Reads the next chunk of the body, as it passes to the client. Work
    /// is bounded per byte, and memory to a few MiB whatever the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let Mode::Undecided { capacity, prefix } = &mut self.mode else {
            return self.feed_decided(chunk);
        };
        let capacity = *capacity;
        if prefix.is_empty() {
            // The usual case: the first chunk tells, and nothing is copied
            // (an audio body is never held).
            let chunk = chunk.trim_ascii_start();
            let Some(kind) = BodyKind::sniff(chunk) else {
                prefix.extend_from_slice(chunk);
                return;
            };
            self.mode = kind.mode(capacity);
            return self.feed_decided(chunk);
        }
        // The first chunks were too short to tell (`da`): decide with this one.
        prefix.extend_from_slice(chunk);
        let Some(kind) = BodyKind::sniff(prefix) else {
            return;
        };
        let held = std::mem::take(prefix);
        self.mode = kind.mode(capacity);
        self.feed_decided(&held);
    }

    fn feed_decided(&mut self, chunk: &[u8]) {
        let api = self.api;
        let tally = &mut self.tally;
        match &mut self.mode {
            Mode::Undecided { .. } | Mode::Opaque => {}
            Mode::Object {
                copy,
                overflowed,
                image_keys,
            } => {
                copy.extend_from_slice(chunk);
                if copy.len() > MAX_JSON_COPY {
                    let cut = copy.len() - JSON_TAIL;
                    if api == Api::OpenAi {
                        image_keys.count(copy, cut);
                    }
                    copy.drain(..cut);
                    *overflowed = true;
                }
            }
            Mode::Array(splitter) => splitter.feed(chunk, MAX_EVENT, |element| match element {
                Element::Whole(bytes) => {
                    if let Ok(event) = serde_json::from_slice::<Event>(bytes) {
                        tally.event(api, &event);
                    }
                }
                Element::Long(long) => long_event(api, tally, &long.head, &long.tail),
            }),
            Mode::Sse { partial, long } => {
                let mut rest = chunk;
                loop {
                    let newline = rest.iter().position(|&b| b == b'\n');
                    let piece = &rest[..newline.unwrap_or(rest.len())];
                    if let Some(long) = long {
                        long.push(piece);
                    } else if partial.is_empty() && newline.is_some() {
                        // A whole line in this chunk: read in place.
                        sse_line(api, tally, piece);
                    } else if partial.len() + piece.len() > MAX_EVENT {
                        let mut ends = LongEvent::default();
                        ends.push(partial);
                        ends.push(piece);
                        *long = Some(ends);
                        partial.clear();
                    } else {
                        partial.extend_from_slice(piece);
                    }
                    let Some(end) = newline else {
                        break;
                    };
                    if let Some(ends) = long.take() {
                        long_sse_line(api, tally, &ends);
                    } else if !partial.is_empty() {
                        sse_line(api, tally, partial);
                        partial.clear();
                    }
                    rest = &rest[end + 1..];
                }
            }
        }
    }

    /// The usage of the response. `complete` says whether the body reached
    /// its end (false for a body cut by the client or the upstream).
    ///
    /// A stream is `Reported` when the provider reported usage and either
    /// the body ended or the dialect's terminal event arrived (the official
    /// Python SDK closes the connection right after `data: [DONE]`, which
    /// the gateway sees as a cut). Otherwise it is `Estimated`: the reported
    /// counts, output at least what was delivered (four characters a
    /// token), input from the request's estimate where the provider had not
    /// told it; `None` when there is nothing at all to bill.
    pub fn finish(mut self, complete: bool) -> (Usage, UsageSource) {
        let api = self.api;
        let mode = std::mem::replace(&mut self.mode, Mode::Opaque);
        match mode {
            Mode::Undecided { .. } | Mode::Opaque => self.unreported(complete),
            Mode::Object {
                copy,
                overflowed,
                mut image_keys,
            } => {
                let event = if overflowed {
                    if api == Api::OpenAi {
                        image_keys.count(&copy, copy.len());
                        self.tally.images += image_keys.images();
                        // GPT Image writes `quality` and `size` after `data`.
                        self.tally.image_variant = ImageVariant {
                            size: string_member(&copy, b"\"size\"")
                                .map_or(ImageSize::Unspecified, ImageSize::from_wire),
                            quality: string_member(&copy, b"\"quality\"")
                                .map_or(ImageQuality::Unspecified, ImageQuality::from_wire),
                        };
                    }
                    event_from_tail(api, &copy)
                } else {
                    serde_json::from_slice::<Event>(&copy).ok()
                };
                if let Some(event) = event {
                    self.tally.event(api, &event);
                }
                if self.tally.reports_anything() {
                    (self.tally.usage(api), UsageSource::Reported)
                } else {
                    self.unreported(complete)
                }
            }
            Mode::Sse { partial, long } => {
                if let Some(ends) = long {
                    long_sse_line(api, &mut self.tally, &ends);
                } else if !partial.is_empty() {
                    sse_line(api, &mut self.tally, &partial);
                }
                self.stream_usage(complete)
            }
            Mode::Array(_) => self.stream_usage(complete),
        }
    }

    fn stream_usage(self, complete: bool) -> (Usage, UsageSource) {
        let api = self.api;
        let tally = &self.tally;
        if tally.reported.is_some() && (tally.ended || complete) {
            return (tally.usage(api), UsageSource::Reported);
        }
        let mut usage = tally.usage(api);
        usage.output_tokens = usage
            .output_tokens
            .max(tally.delivered.div_ceil(CHARS_PER_TOKEN));
        let input_reported = tally
            .reported
            .as_ref()
            .is_some_and(|raw| raw.reports_input(api));
        if !input_reported {
            usage.input_tokens = usage.input_tokens.max(self.input_estimate);
        }
        if usage == Usage::default() {
            (usage, UsageSource::None)
        } else {
            (usage, UsageSource::Estimated)
        }
    }

    /// A body that reported nothing: a cut one still cost its input.
    fn unreported(&self, complete: bool) -> (Usage, UsageSource) {
        if complete || self.input_estimate == 0 {
            (Usage::default(), UsageSource::None)
        } else {
            (
                Usage {
                    input_tokens: self.input_estimate,
                    ..Usage::default()
                },
                UsageSource::Estimated,
            )
        }
    }
}

/// What a body's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Object,
    Array,
    /// SSE, even when labelled otherwise (some OpenAI-compatible servers
    /// and proxies send their streams as `application/json` or
    /// `text/plain`).
    EventStream,
    Opaque,
}

impl BodyKind {
    /// `start` begins at the body's first non-blank byte; `None` while too
    /// few bytes arrived to tell.
    fn sniff(start: &[u8]) -> Option<BodyKind> {
        match start.first()? {
            b'{' => Some(BodyKind::Object),
            b'[' => Some(BodyKind::Array),
            b':' => Some(BodyKind::EventStream),
            _ => {
                for field in [&b"data:"[..], b"event:"] {
                    if start.starts_with(field) {
                        return Some(BodyKind::EventStream);
                    }
                    if field.starts_with(start) {
                        return None;
                    }
                }
                Some(BodyKind::Opaque)
            }
        }
    }

    fn mode(self, capacity: usize) -> Mode {
        match self {
            BodyKind::Object => Mode::Object {
                copy: Vec::with_capacity(capacity),
                overflowed: false,
                image_keys: ImageKeys::default(),
            },
            BodyKind::Array => Mode::Array(ArraySplitter::default()),
            BodyKind::EventStream => Mode::Sse {
                partial: Vec::new(),
                long: None,
            },
            BodyKind::Opaque => Mode::Opaque,
        }
    }
}

/// Reads one SSE line: a `data:` line holding a JSON event, or OpenAI's
/// `data: [DONE]`, which ends a chat or completions stream.
fn sse_line(api: Api, tally: &mut Tally, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    let data = data.trim_ascii();
    if data == b"[DONE]" {
        tally.ended = true;
        return;
    }
    if let Ok(event) = serde_json::from_slice::<Event>(data) {
        tally.event(api, &event);
    }
}

/// Image keys (`"b64_json":`, `"url":`) seen in a large JSON body, each
/// counted once by where it starts. A key cannot hide inside a string: there
/// its quotes would be escaped.
#[derive(Debug, Default, Clone, Copy)]
struct ImageKeys {
    b64_json: u64,
    url: u64,
}

impl ImageKeys {
    /// Counts the keys starting in `buffer[..end]`; bytes after `end` are
    /// only looked at to see the colon.
    fn count(&mut self, buffer: &[u8], end: usize) {
        self.b64_json += count_keys(buffer, end, b"\"b64_json\"");
        self.url += count_keys(buffer, end, b"\"url\"");
    }

    /// An image carries one of the two, as `response_format` asked.
    fn images(&self) -> u64 {
        self.b64_json.max(self.url)
    }
}

fn count_keys(buffer: &[u8], end: usize, key: &[u8]) -> u64 {
    let mut count = 0;
    let mut at = 0;
    while let Some(offset) = buffer[at..].windows(key.len()).position(|w| w == key) {
        let start = at + offset;
        if start >= end {
            break;
        }
        let after = &buffer[start + key.len()..];
        if after.trim_ascii_start().first() == Some(&b':') {
            count += 1;
        }
        at = start + 1;
    }
    count
}

/// Reads an SSE line too long to keep whole from its two ends.
fn long_sse_line(api: Api, tally: &mut Tally, long: &LongEvent) {
    let Some(head) = long.head.strip_prefix(b"data:") else {
        return;
    };
    long_event(api, tally, head, &long.tail);
}

/// Reads an event too long to keep whole from its two ends: the usage block
/// from its tail (where providers put it), and whether it ends the response
/// from its `type` (at its head) or, for Gemini, a `finishReason` in its
/// tail. Its output is not estimated: what makes an event this long is an
/// image or audio, whose tokens text length does not tell.
fn long_event(api: Api, tally: &mut Tally, head: &[u8], tail: &[u8]) {
    let Some(mut event) = event_from_tail(api, tail) else {
        return;
    };
    event.kind = Tagged(string_member(head, b"\"type\"").and_then(EventType::from_wire));
    if api == Api::OpenAi {
        // A streamed GPT Image's final event says what it made after the
        // image itself.
        event.size = Tagged(string_member(tail, b"\"size\"").map(ImageSize::from_wire));
        event.quality = Tagged(string_member(tail, b"\"quality\"").map(ImageQuality::from_wire));
    }
    if api == Api::Gemini && string_member(tail, b"\"finishReason\"").is_some() {
        event.candidates = Some(vec![Candidate::finished()]);
    }
    tally.event(api, &event);
}

/// The string value of the first member named `key` (quotes included) in
/// `text`, read without parsing the rest.
fn string_member<'a>(text: &'a [u8], key: &[u8]) -> Option<&'a str> {
    let start = text.windows(key.len()).position(|window| window == key)?;
    let after = text[start + key.len()..].trim_ascii_start();
    let after = after.strip_prefix(b":")?.trim_ascii_start();
    let value = after.strip_prefix(b"\"")?;
    let end = value.iter().position(|&b| b == b'"' || b == b'\\')?;
    std::str::from_utf8(&value[..end]).ok()
}

/// Finds the usage object in the tail of a large JSON body or event.
fn event_from_tail(api: Api, tail: &[u8]) -> Option<Event> {
    let key: &[u8] = if api == Api::Gemini {
        b"\"usageMetadata\""
    } else {
        b"\"usage\""
    };
    let start = tail.windows(key.len()).rposition(|window| window == key)?;
    let after_key = tail[start + key.len()..].trim_ascii_start();
    let object = after_key.strip_prefix(b":")?.trim_ascii_start();
    if !object.starts_with(b"{") {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_slice(object).into_iter::<RawUsage>();
    let usage = stream.next()?.ok()?;
    Some(if api == Api::Gemini {
        Event {
            usage_metadata: Some(usage),
            ..Event::default()
        }
    } else {
        Event {
            usage: Some(usage),
            ..Event::default()
        }
    })
}

#[cfg(test)]
mod tests;
