//! Request inspection: one parse of a request body yields everything the
//! gateway needs before forwarding it: the model, the output bound (caps and
//! copies), the size of the input, whether the input is even in the request,
//! streaming, the service tier and the units of non-token endpoints.
//!
//! The figures are upper bounds, never estimates, except where a field says
//! "estimate": a budget reservation is a promise (DESIGN.md, 2026-11-29).

mod decode;
mod include_usage;
mod input;
mod json;
mod limits;
mod multipart;
#[cfg(test)]
mod tests;

use crate::kind::Api;
use crate::model::{RequestModel, model_from_path};
use crate::usage::{ImageQuality, ImageSize, ImageVariant, ServiceTier};

pub use decode::{DecodeError, content_codings, decode_request_body};
pub use include_usage::insert_include_usage;
pub use input::InputSize;
pub use limits::{LimitEntry, LimitError, LimitSource, LimitTable, ModelLimits, RawLimit};

use json::{Node, Value};

/// Legacy `/v1/completions` defaults `max_tokens` to 16 (OpenAI API
/// reference, "Create completion", as published, 2025).
const LEGACY_COMPLETIONS_DEFAULT_MAX_TOKENS: u64 = 16;

/// `n` as OpenAI bounds it (API reference, "Create chat completion":
/// at most 128, as published, 2025): the copies assumed when a multiplier is
/// written but is not a usable number, since some OpenAI-compatible servers
/// coerce what OpenAI would refuse.
const MAX_COPIES_UNREADABLE: u64 = 128;

/// What a request can generate, per copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputBound {
    /// The endpoint generates no tokens (embeddings, token counting,
    /// moderation, listings, images and speech which are billed in units).
    Nothing,
    /// The request caps each copy at `tokens`, reasoning included.
    Capped { tokens: u64 },
    /// No cap was written, and the endpoint has a documented default.
    EndpointDefault { tokens: u64 },
    /// No usable cap: the model's own maximum applies.
    Uncapped,
}

/// What a non-token endpoint is billed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// Billed in tokens only.
    Tokens,
    /// OpenAI `/v1/images/generations|edits|variations`: `count` images of
    /// `variant` (`n`, default 1; `size` and `quality`).
    Images { count: u64, variant: ImageVariant },
    /// OpenAI `/v1/audio/speech`: the characters (Unicode scalar values) of
    /// `input`.
    SpeechCharacters(u64),
}

/// Everything the gateway needs to know about a request before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: RequestModel,
    pub output: OutputBound,
    /// Completions billed per request (`n`, `best_of`, `candidateCount`):
    /// at least 1, saturating.
    pub copies: u64,
    pub input: InputSize,
    /// Where part of the input is not in the request (stored conversations,
    /// files by id, server-side tools fetching content, ...), the field that
    /// says so.
    pub unknown_input: Option<&'static str>,
    pub stream: bool,
    /// The tier the request asks for; `None` when it names none or lets the
    /// provider choose (`auto`).
    pub service_tier: Option<ServiceTier>,
    pub units: Units,
    /// Other models the request makes the provider run, which the key's
    /// scope must allow too: a Responses tool's own `model` (the
    /// `image_generation` tool runs `gpt-image-1`), and a `models` fallback
    /// list (OpenRouter-style servers try each).
    pub other_models: Vec<String>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the `model` field must be a string")]
    ModelNotString,
    /// Providers disagree on which copy of a duplicated key wins, so the
    /// gateway cannot know which request it is bounding.
    #[error(
        "the request body names the key `{key}` twice (at {at}); send each key once, providers disagree on which copy wins"
    )]
    DuplicateKey { key: String, at: String },
}

/// Where the output bound of [`WorstCase`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFrom {
    /// The request's own cap.
    Cap,
    /// The endpoint's documented default (legacy completions).
    EndpointDefault,
    /// The model's maximum from the limits table.
    ModelLimit,
    /// The model is unknown: the fallback limits.
    Fallback,
    /// The endpoint generates no tokens.
    Nothing,
}

/// The most a request can be billed for, in tokens, for the gateway to price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    /// Input tokens, upper bound: the counted input, or the model's context
    /// window where the input is unknown, never more than the window.
    pub input_tokens: u64,
    /// Input tokens, a realistic estimate (about four bytes of text a
    /// token), for rate limits.
    pub input_estimate_tokens: u64,
    /// Output tokens, upper bound: every copy at its cap.
    pub output_tokens: u64,
    pub output_from: OutputFrom,
    pub unknown_input: Option<&'static str>,
    /// Whether the model's limits came from the table or the fallback.
    pub limits_from: LimitSource,
}

impl RequestFacts {
    /// The request's worst case for `model` (as the gateway resolved it)
    /// under `limits`. A cap above the model's maximum is clamped to it: the
    /// provider refuses or clamps such a request, it never bills more.
    pub fn worst_case(&self, limits: &LimitTable, api: Api, model: &str) -> WorstCase {
        let (model_limits, limits_from) = limits.lookup(api, model);
        let model_max = model_limits.max_output_tokens;
        let from_limits = match limits_from {
            LimitSource::Table => OutputFrom::ModelLimit,
            LimitSource::Fallback => OutputFrom::Fallback,
        };
        let (per_copy, output_from) = match self.output {
            OutputBound::Nothing => (0, OutputFrom::Nothing),
            OutputBound::Capped { tokens } => (tokens.min(model_max), OutputFrom::Cap),
            OutputBound::EndpointDefault { tokens } => {
                (tokens.min(model_max), OutputFrom::EndpointDefault)
            }
            OutputBound::Uncapped => (model_max, from_limits),
        };
        let window = model_limits.context_window;
        let counted = self.input.upper_bound(model_limits.image_tokens);
        let input_tokens = match (self.unknown_input, self.output) {
            (Some(_), _) => window,
            // Embeddings apply the window to each input of a batch, not to
            // the request: a batch can bill many windows (found by the
            // tightness benchmark: 64 chunks of 400 tokens under an
            // 8,192-token window).
            (None, OutputBound::Nothing) => counted,
            (None, _) => counted.min(window),
        };
        WorstCase {
            input_tokens,
            input_estimate_tokens: self
                .input
                .estimate(model_limits.image_tokens)
                .min(input_tokens),
            output_tokens: per_copy.saturating_mul(self.copies),
            output_from,
            unknown_input: self.unknown_input,
            limits_from,
        }
    }
}

/// Inspects a request: `path` is the part forwarded upstream (below the
/// gateway prefix, query included), `body` the decoded request body (see
/// [`decode_request_body`]). JSON bodies are parsed once, strictly
/// (RFC 8259, duplicate keys refused at any depth); `multipart/form-data`
/// bodies are read for their `model`, `n`, `size`, `quality`, `prompt` and
/// file parts.
pub fn inspect(
    api: Api,
    method: &http::Method,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<RequestFacts, RequestError> {
    let bare_path = path.split('?').next().unwrap_or(path);
    let endpoint = Endpoint::of(api, bare_path);
    let path_model = model_from_path(api, path);
    let raw_content_type = content_type.unwrap_or_default();
    let content_type = raw_content_type.trim_start().to_ascii_lowercase();
    let mut facts = RequestFacts {
        model: path_model.clone().unwrap_or(RequestModel::Unknown),
        output: if method == http::Method::POST {
            endpoint.default_output()
        } else {
            OutputBound::Nothing
        },
        copies: 1,
        input: InputSize::default(),
        unknown_input: endpoint.unknown_input(),
        stream: api == Api::Gemini && bare_path.ends_with(":streamGenerateContent"),
        service_tier: None,
        units: Units::Tokens,
        other_models: Vec::new(),
    };
    if method != http::Method::POST {
        return Ok(facts);
    }
    let is_json = content_type.starts_with("application/json");
    // curl's `-d` labels JSON as a form; a body that opens with `{` is read as
    // JSON whatever its label says, except real multipart uploads.
    let is_multipart = content_type.starts_with("multipart/");
    let looks_like_json =
        !is_multipart && body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_multipart {
        if let Some(form) = multipart::read(raw_content_type, body) {
            if let Some(name) = form.repeated_field() {
                return Err(RequestError::DuplicateKey {
                    key: name.to_owned(),
                    at: "the form".to_owned(),
                });
            }
            if path_model.is_none()
                && let Some(model) = form.text("model")
            {
                facts.model = RequestModel::Named(model.to_owned());
            }
            facts.input = form.input_size();
            facts.stream = form.text("stream") == Some("true");
            let field = |name: &str| form.text(name).map(Scalar::Text);
            apply_units(
                &mut facts,
                endpoint,
                field("n"),
                field("size"),
                field("quality"),
            );
        } else {
            facts.input = InputSize::of_bytes(body.len());
        }
        return Ok(facts);
    }
    if !(is_json || looks_like_json) {
        facts.input = InputSize::of_bytes(body.len());
        return Ok(facts);
    }
    if body.is_empty() {
        return Ok(facts);
    }
    let root = json::parse(body).map_err(|error| match error {
        json::JsonError::Malformed(what) => RequestError::MalformedJson(what),
        json::JsonError::DuplicateKey { key, at } => RequestError::DuplicateKey { key, at },
    })?;
    if path_model.is_none() {
        match root.get("model").map(|m| &m.value) {
            None => {}
            Some(Value::String(model)) => facts.model = RequestModel::Named(model.to_string()),
            Some(_) => return Err(RequestError::ModelNotString),
        }
    }
    facts.other_models = other_models(&root);
    facts.stream |= root.get("stream").and_then(Node::as_bool) == Some(true);
    facts.service_tier = root
        .get("service_tier")
        .and_then(Node::as_str)
        .and_then(service_tier_of);
    let counted = input::count(api, &root);
    facts.input = counted.size;
    facts.unknown_input = facts.unknown_input.or(counted.unknown);
    if let OutputBound::Uncapped | OutputBound::EndpointDefault { .. } = facts.output {
        let (output, copies) = output_bound(api, &root, facts.output);
        facts.output = output;
        facts.copies = copies;
    }
    let field = |name: &str| root.get(name).map(Scalar::of);
    apply_units(
        &mut facts,
        endpoint,
        field("n"),
        field("size"),
        field("quality"),
    );
    if endpoint == Endpoint::Speech {
        let characters = root
            .get("input")
            .and_then(Node::as_str)
            .map_or(0, |t| t.chars().count());
        facts.units = Units::SpeechCharacters(u64::try_from(characters).unwrap_or(u64::MAX));
    }
    Ok(facts)
}

/// The endpoint families whose bounds differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// Chat, Responses, Messages, generateContent: tokens in, tokens out.
    Generates,
    /// Legacy OpenAI `/v1/completions` (default `max_tokens` 16, `best_of`).
    Completions,
    /// Embeddings, token counting, moderation: nothing generated.
    NoOutput,
    /// OpenAI `/v1/images/*`.
    Images,
    /// OpenAI `/v1/audio/speech`.
    Speech,
    /// Assistants runs: the thread's messages are stored upstream.
    ThreadRun,
}

impl Endpoint {
    fn of(api: Api, path: &str) -> Self {
        let ends = |suffix: &str| path.ends_with(suffix);
        if ends("/embeddings")
            || ends(":embedContent")
            || ends(":batchEmbedContents")
            || ends(":countTokens")
            || ends("/count_tokens")
            || ends("/input_tokens")
            || ends("/moderations")
        {
            return Endpoint::NoOutput;
        }
        if api != Api::OpenAi {
            return Endpoint::Generates;
        }
        if ends("/images/generations") || ends("/images/edits") || ends("/images/variations") {
            Endpoint::Images
        } else if ends("/audio/speech") {
            Endpoint::Speech
        } else if ends("/completions") && !ends("/chat/completions") {
            Endpoint::Completions
        } else if path.contains("/threads") && path.contains("/runs") || ends("/threads/runs") {
            Endpoint::ThreadRun
        } else {
            Endpoint::Generates
        }
    }

    fn default_output(self) -> OutputBound {
        match self {
            Endpoint::Generates | Endpoint::ThreadRun => OutputBound::Uncapped,
            Endpoint::Completions => OutputBound::EndpointDefault {
                tokens: LEGACY_COMPLETIONS_DEFAULT_MAX_TOKENS,
            },
            Endpoint::NoOutput | Endpoint::Images | Endpoint::Speech => OutputBound::Nothing,
        }
    }

    fn unknown_input(self) -> Option<&'static str> {
        (self == Endpoint::ThreadRun).then_some("thread_id")
    }
}

/// A number as a request writes it: JSON numbers, and numeric strings
/// (multipart fields; servers that coerce them).
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Number(&'a str),
    Text(&'a str),
    Null,
    Other,
}

impl<'a> Scalar<'a> {
    fn of(node: &'a Node<'_>) -> Self {
        match &node.value {
            Value::Number(text) => Scalar::Number(text),
            Value::String(text) => Scalar::Text(text),
            Value::Null => Scalar::Null,
            _ => Scalar::Other,
        }
    }

    /// The value rounded up and saturated; `None` for a negative or
    /// non-number value. `8.0` is 8, `2.5` is 3, `1e30` is `u64::MAX`.
    fn count(self) -> Option<u64> {
        let text = match self {
            Scalar::Number(text) | Scalar::Text(text) => text.trim(),
            Scalar::Null | Scalar::Other => return None,
        };
        let value: f64 = text.parse().ok()?;
        // `as` saturates (and NaN is excluded above by the comparison).
        (value >= 0.0).then(|| value.ceil() as u64)
    }
}

/// Models named outside the top-level `model` that the provider may run.
fn other_models(root: &Node<'_>) -> Vec<String> {
    let tools = root
        .get("tools")
        .map(Node::as_array)
        .unwrap_or_default()
        .iter()
        .filter_map(|tool| tool.get("model"));
    let fallbacks = root
        .get("models")
        .map(Node::as_array)
        .unwrap_or_default()
        .iter();
    tools
        .chain(fallbacks)
        // A model that is not a string cannot be checked: it is named as
        // written, so the scope check refuses it.
        .map(|model| match model.as_str() {
            Some(name) => name.to_owned(),
            None => "(not a string)".to_owned(),
        })
        .collect()
}

/// The output cap per copy and the copies, from every field each dialect
/// uses; several caps give the largest, several multipliers the largest.
fn output_bound(api: Api, root: &Node<'_>, default: OutputBound) -> (OutputBound, u64) {
    let (caps, extra, copies) = match api {
        Api::OpenAi => (
            field(
                root,
                &["max_tokens", "max_completion_tokens", "max_output_tokens"],
            ),
            Vec::new(),
            field(root, &["n", "best_of"]),
        ),
        // `max_tokens` includes `thinking.budget_tokens` (Anthropic
        // "Extended thinking", as published, 2025), which must be below it;
        // the budget still counts as a cap in case a server lets it exceed.
        Api::Anthropic => {
            let mut caps = field(root, &["max_tokens"]);
            if let Some(thinking) = root.get("thinking") {
                caps.extend(field(thinking, &["budget_tokens"]));
            }
            (caps, Vec::new(), Vec::new())
        }
        Api::Gemini => {
            let mut caps = Vec::new();
            let mut thinking = Vec::new();
            let mut copies = Vec::new();
            for config in ["generationConfig", "generation_config"]
                .iter()
                .filter_map(|name| root.get(name))
            {
                caps.extend(field(config, &["maxOutputTokens", "max_output_tokens"]));
                copies.extend(field(config, &["candidateCount", "candidate_count"]));
                for budget in ["thinkingConfig", "thinking_config"]
                    .iter()
                    .filter_map(|name| config.get(name))
                {
                    thinking.extend(field(budget, &["thinkingBudget", "thinking_budget"]));
                }
            }
            (caps, thinking, copies)
        }
    };
    let mut copies = copies_of(&copies);
    // Legacy completions generate `best_of` completions for *each* prompt
    // of an array (OpenAI API reference, "Create completion": `prompt` may
    // be a list of strings or of token lists): the copies multiply.
    if api == Api::OpenAi
        && let Some(prompt) = root.get("prompt")
    {
        let items = prompt.as_array();
        // One list of token ids is one prompt; a list of strings or of
        // token lists is many.
        let one_token_list = items
            .iter()
            .all(|item| matches!(item.value, json::Value::Number(_)));
        if items.len() > 1 && !one_token_list {
            copies = copies.saturating_mul(u64::try_from(items.len()).unwrap_or(u64::MAX));
        }
    }
    if caps.is_empty() {
        return (default, copies);
    }
    // A cap of zero is no cap: Gemini reads a zero `maxOutputTokens` as
    // unset (proto3 defaults), and elsewhere it is refused anyway.
    let Some(cap) = caps
        .iter()
        .map(|c| c.count().filter(|t| *t > 0))
        .collect::<Option<Vec<u64>>>()
        .and_then(|all| all.into_iter().max())
    else {
        return (OutputBound::Uncapped, copies);
    };
    // Reports disagree on whether Gemini's thinking counts inside
    // `maxOutputTokens` (the API reference is silent; users see it does):
    // an explicit budget is added, so the bound holds either way. A dynamic
    // budget (-1) adds nothing: the cap is the ceiling then.
    let thinking = extra.iter().filter_map(|b| b.count()).max().unwrap_or(0);
    (
        OutputBound::Capped {
            tokens: cap.saturating_add(thinking),
        },
        copies,
    )
}

/// The fields called `names` in `node`, leaving out nulls (SDKs write
/// `null` for "not given").
fn field<'n>(node: &'n Node<'_>, names: &[&str]) -> Vec<Scalar<'n>> {
    names
        .iter()
        .filter_map(|name| node.get(name))
        .map(Scalar::of)
        .filter(|s| !matches!(s, Scalar::Null))
        .collect()
}

fn copies_of(multipliers: &[Scalar<'_>]) -> u64 {
    multipliers
        .iter()
        .filter(|s| !matches!(s, Scalar::Null))
        .map(|s| s.count().unwrap_or(MAX_COPIES_UNREADABLE).max(1))
        .max()
        .unwrap_or(1)
}

fn apply_units(
    facts: &mut RequestFacts,
    endpoint: Endpoint,
    n: Option<Scalar<'_>>,
    size: Option<Scalar<'_>>,
    quality: Option<Scalar<'_>>,
) {
    if endpoint != Endpoint::Images {
        return;
    }
    let text = |s: Option<Scalar<'_>>| match s {
        Some(Scalar::Text(text)) => Some(text.to_owned()),
        _ => None,
    };
    let count = n.map_or(1, |n| copies_of(&[n]));
    facts.units = Units::Images {
        count,
        variant: ImageVariant {
            size: text(size)
                .as_deref()
                .map_or(ImageSize::Unspecified, image_size_of),
            quality: text(quality)
                .as_deref()
                .map_or(ImageQuality::Unspecified, image_quality_of),
        },
    };
}

/// OpenAI `size` values (API reference, "Create image", as published, 2025).
fn image_size_of(text: &str) -> ImageSize {
    match text {
        "256x256" => ImageSize::S256,
        "512x512" => ImageSize::S512,
        "1024x1024" => ImageSize::S1024,
        "1792x1024" | "1024x1792" => ImageSize::Wide1792,
        "1536x1024" | "1024x1536" => ImageSize::Wide1536,
        _ => ImageSize::Other,
    }
}

fn image_quality_of(text: &str) -> ImageQuality {
    match text {
        "standard" => ImageQuality::Standard,
        "hd" => ImageQuality::Hd,
        "low" => ImageQuality::Low,
        "medium" => ImageQuality::Medium,
        "high" => ImageQuality::High,
        _ => ImageQuality::Other,
    }
}

/// OpenAI `service_tier` (`auto`, `default`, `flex`, `priority`; API
/// reference, as published, 2025) and Anthropic's (`auto`,
/// `standard_only`). `auto` lets the provider choose: `None`.
fn service_tier_of(text: &str) -> Option<ServiceTier> {
    match text {
        "default" | "standard_only" => Some(ServiceTier::Standard),
        "flex" => Some(ServiceTier::Flex),
        "priority" => Some(ServiceTier::Priority),
        _ => None,
    }
}
