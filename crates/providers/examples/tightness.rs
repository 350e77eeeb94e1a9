//! Reservation tightness: how much more a budget reservation holds than the
//! request is then billed, on a seeded, realistic mix of requests.
//!
//! For each generated request: `reserved` is the gateway's reservation,
//! computed exactly as `crates/gateway/src/proxy/admit.rs` does
//! (`Estimate::of` and `Estimate::worst_cost`: `inspect`, then
//! `RequestFacts::worst_case` under the shipped limits, priced with
//! `PriceTable::price`, Anthropic input at the dearer of input and one-hour
//! cache write); `billed` is what a provider would bill for it: input
//! tokens estimated as the prompt's characters / 4 (English text) plus
//! published template overheads, output tokens drawn from a realistic
//! distribution capped by the request's own cap. The old rule (one input
//! token per body byte, output at the cap or 4,096 when uncapped, standard
//! prices) is printed for comparison.
//!
//! `cargo run -p keyforge-providers --example tightness --release`
//! (`SEED`, `REQUESTS` in the environment; defaults 1 and 3,000).

#![expect(clippy::print_stdout, reason = "a benchmark prints its tables")]

use std::collections::BTreeMap;
use std::error::Error;

use http::Method;
use keyforge_providers::{
    Api, LimitTable, OutputBound, PriceTable, RequestFacts, RequestModel, Units, Usage, inspect,
};
use keyforge_types::NanoUsd;
use serde_json::{Value, json};
use time::Date;
use time::macros::date;

/// The day requests are priced on (every shipped entry used is in force).
const DAY: Date = date!(2026 - 12 - 01);
/// The old rule's output reservation for a request without a cap
/// (`reserve_output_tokens`' default before request inspection).
const OLD_UNCAPPED_OUTPUT: u64 = 4_096;
/// Characters of English text per token (OpenAI's rule of thumb).
const CHARS_PER_TOKEN: u64 = 4;
/// Billed template tokens per message (OpenAI cookbook "How to count
/// tokens": 3 per message, rounded up), and once per request (priming).
const BILLED_PER_MESSAGE: u64 = 4;
const BILLED_PER_REQUEST: u64 = 3;
/// Anthropic's tool-use system prompt (tool-use pricing, `auto`).
const ANTHROPIC_TOOL_PROMPT: u64 = 346;

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1_u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Log-uniform in `[lo, hi]`: most values small, a long tail.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> u64 {
        (lo * (hi / lo).powf(self.unit())).round() as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "the",
    "budget",
    "request",
    "model",
    "customer",
    "report",
    "quarter",
    "revenue",
    "summary",
    "please",
    "explain",
    "why",
    "this",
    "function",
    "returns",
    "an",
    "error",
    "when",
    "input",
    "is",
    "empty",
    "and",
    "how",
    "to",
    "fix",
    "it",
    "in",
    "our",
    "service",
    "we",
    "need",
    "a",
    "short",
    "answer",
    "for",
    "team",
    "meeting",
    "tomorrow",
    "with",
    "three",
    "points",
    "about",
    "latency",
    "costs",
    "database",
    "migration",
    "of",
    "user",
    "accounts",
    "from",
    "old",
    "system",
    "new",
    "one",
    "without",
    "downtime",
    "consider",
    "edge",
    "cases",
    "such",
    "as",
    "retries",
    "timeouts",
    "partial",
    "failures",
    "that",
    "may",
    "happen",
    "during",
    "deploy",
    "write",
    "tests",
    "document",
    "behaviour",
    "translate",
    "following",
    "paragraph",
    "into",
    "french",
    "keep",
    "tone",
    "friendly",
    "professional",
    "list",
    "risks",
    "next",
    "steps",
];

/// English-like text of about `chars` characters.
fn text(rng: &mut Rng, chars: u64) -> String {
    let target = usize::try_from(chars).unwrap_or(usize::MAX);
    let mut out = String::with_capacity(target + 16);
    let mut in_sentence = 0;
    let mut sentence_len = rng.range(8, 20);
    while out.len() < target {
        let word = rng.pick(WORDS);
        if in_sentence == 0 {
            let mut letters = word.chars();
            if let Some(first) = letters.next() {
                out.extend(first.to_uppercase());
                out.push_str(letters.as_str());
            }
        } else {
            out.push_str(word);
        }
        in_sentence += 1;
        if in_sentence >= sentence_len {
            out.push_str(". ");
            in_sentence = 0;
            sentence_len = rng.range(8, 20);
        } else {
            out.push(' ');
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// What a provider bills for a request's input, accumulated as the request
/// is built: characters of text, messages, tool definitions, images.
#[derive(Default)]
struct Prompt {
    chars: u64,
    messages: u64,
    tool_tokens: u64,
    image_tokens: u64,
}

impl Prompt {
    fn text(&mut self, rng: &mut Rng, chars: u64) -> String {
        let text = text(rng, chars);
        self.chars += text.len() as u64;
        text
    }

    fn billed_tokens(&self, chat: bool) -> u64 {
        let template = if chat {
            BILLED_PER_REQUEST + BILLED_PER_MESSAGE * self.messages
        } else {
            0
        };
        self.chars.div_ceil(CHARS_PER_TOKEN) + template + self.tool_tokens + self.image_tokens
    }
}

/// One generated request and what it is billed.
struct Sample {
    api: Api,
    path: String,
    model: &'static str,
    body: Vec<u8>,
    tags: Vec<&'static str>,
    billed: Usage,
    /// The same request, its capped output drawn as if uncapped (a few
    /// hundred tokens, at most the cap): clients that set a generous cap.
    billed_small_output: Usage,
    /// The cap as written (for the old rule), and the copies.
    written_cap: Option<u64>,
    copies: u64,
}

/// The tokens one 1024x1024 image bills (vision pages, as published, 2025):
/// OpenAI tiles 85 + 4 x 170 (gpt-4o-mini: 2,833 + 4 x 5,667), patch models
/// 1,024 patches times their multiplier; Anthropic width x height / 750;
/// Gemini four 768x768 tiles of 258.
fn image_tokens(model: &str) -> u64 {
    match model {
        "gpt-4o-mini" => 25_501,
        "gpt-4.1-mini" | "gpt-5-mini" => 1_659,
        "o4-mini" => 1_762,
        m if m.starts_with("claude") => 1_398,
        m if m.starts_with("gemini") => 1_032,
        _ => 765,
    }
}

/// Prompt sizes, in characters: most short, a tail of documents.
fn prompt_chars(rng: &mut Rng, big_context: bool, tags: &mut Vec<&'static str>) -> u64 {
    let r = rng.unit();
    if big_context && r < 0.03 {
        tags.push("prompt: very long (200k-500k chars)");
        rng.range(200_000, 500_000)
    } else if r < 0.15 {
        tags.push("prompt: long (6k-120k chars)");
        rng.range(6_000, 120_000)
    } else if r < 0.40 {
        tags.push("prompt: medium (600-6k chars)");
        rng.range(600, 6_000)
    } else {
        tags.push("prompt: short (< 600 chars)");
        rng.range(30, 600)
    }
}

/// Output tokens of one copy: 30-100 % of the cap (at most the model's
/// maximum) when capped; otherwise a few hundred, plus reasoning for
/// reasoning models.
fn draw_output(rng: &mut Rng, cap: Option<u64>, model_max: u64, reasoning: bool) -> u64 {
    match cap {
        Some(cap) => {
            let cap = cap.min(model_max) as f64;
            ((cap * (0.3 + 0.7 * rng.unit())).round() as u64).max(1)
        }
        None => uncapped_output(rng, reasoning).min(model_max),
    }
}

fn uncapped_output(rng: &mut Rng, reasoning: bool) -> u64 {
    let visible = rng.log_uniform(60.0, 1_500.0);
    let thinking = if reasoning {
        rng.log_uniform(200.0, 6_000.0)
    } else {
        0
    };
    visible + thinking
}

/// A JSON-schema function: name, description, 2-8 typed properties.
fn tool_schema(rng: &mut Rng, prompt: &mut Prompt) -> (String, String, Value) {
    let name = format!("{}_{}", rng.pick(WORDS), rng.pick(WORDS));
    let chars = rng.range(40, 300);
    let description = text(rng, chars);
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for i in 0..rng.range(2, 8) {
        let key = format!("{}_{i}", rng.pick(WORDS));
        let chars = rng.range(20, 120);
        let mut property = json!({"type": rng.pick(&["string", "integer", "boolean", "number"]), "description": text(rng, chars)});
        if rng.chance(0.2) {
            property = json!({"type": "string", "enum": [rng.pick(WORDS), rng.pick(WORDS), rng.pick(WORDS)]});
        }
        if rng.chance(0.6) {
            required.push(Value::String(key.clone()));
        }
        properties.insert(key, property);
    }
    let parameters = json!({"type": "object", "properties": properties, "required": required});
    // Billed: the definition as the model reads it, about its JSON text.
    let rendered = name.len() + description.len() + parameters.to_string().len();
    prompt.tool_tokens += (rendered as u64).div_ceil(CHARS_PER_TOKEN);
    (name, description, parameters)
}

fn limits_max(limits: &LimitTable, api: Api, model: &str) -> u64 {
    limits.lookup(api, model).0.max_output_tokens
}

/// Output of every copy, and the same with the "generous cap" draw.
fn outputs(
    rng: &mut Rng,
    cap: Option<u64>,
    copies: u64,
    model_max: u64,
    reasoning: bool,
) -> (u64, u64) {
    let mut billed = 0;
    let mut small = 0;
    for _ in 0..copies {
        billed += draw_output(rng, cap, model_max, reasoning);
        let few = uncapped_output(rng, reasoning);
        small += few.min(cap.unwrap_or(u64::MAX)).min(model_max);
    }
    (billed, small)
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

fn cap_tags(cap: Option<u64>, tags: &mut Vec<&'static str>) {
    tags.push(if cap.is_some() {
        "output: capped"
    } else {
        "output: uncapped"
    });
}

fn openai_chat(rng: &mut Rng, limits: &LimitTable) -> Sample {
    let model = rng.pick(&[
        "gpt-4o-mini",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.1-mini",
        "o3",
        "o4-mini",
        "gpt-5-mini",
    ]);
    let reasoning = model.starts_with('o') || model.starts_with("gpt-5");
    let mut tags = vec!["dialect: openai", "endpoint: chat/completions"];
    let mut prompt = Prompt::default();
    let mut messages = Vec::new();
    if rng.chance(0.7) {
        let chars = rng.range(80, 2_000);
        let role = if reasoning { "developer" } else { "system" };
        messages.push(json!({"role": role, "content": prompt.text(rng, chars)}));
        prompt.messages += 1;
    }
    if rng.chance(0.45) {
        tags.push("multi-turn");
        for _ in 0..rng.range(1, 6) {
            let (user, assistant) = (rng.range(30, 800), rng.range(100, 2_500));
            messages.push(json!({"role": "user", "content": prompt.text(rng, user)}));
            messages.push(json!({"role": "assistant", "content": prompt.text(rng, assistant)}));
            prompt.messages += 2;
        }
    }
    let chars = prompt_chars(rng, model.starts_with("gpt-4.1"), &mut tags);
    let question = prompt.text(rng, chars);
    prompt.messages += 1;
    if rng.chance(0.06) {
        tags.push("images");
        prompt.image_tokens += image_tokens(model);
        messages.push(json!({"role": "user", "content": [
            {"type": "text", "text": question},
            {"type": "image_url", "image_url": {"url": "https://example.com/photo.png", "detail": "high"}},
        ]}));
    } else {
        messages.push(json!({"role": "user", "content": question}));
    }
    let mut body = json!({"model": model, "messages": messages});
    if rng.chance(0.25) {
        tags.push("tools");
        let tools: Vec<Value> = (0..rng.range(1, 6))
            .map(|_| {
                let (name, description, parameters) = tool_schema(rng, &mut prompt);
                json!({"type": "function", "function": {"name": name, "description": description, "parameters": parameters}})
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    let cap = rng
        .chance(0.55)
        .then(|| rng.pick(&[256, 512, 1_000, 1_024, 2_048, 4_096, 8_192]));
    if let Some(cap) = cap {
        let field = if reasoning || rng.chance(0.5) {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        body[field] = json!(cap);
    }
    cap_tags(cap, &mut tags);
    let copies = if rng.chance(0.12) {
        tags.push("n > 1");
        rng.range(2, 3)
    } else {
        1
    };
    if copies > 1 || rng.chance(0.1) {
        body["n"] = json!(copies);
    }
    if rng.chance(0.4) {
        tags.push("stream");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    if rng.chance(0.5) && !reasoning {
        body["temperature"] = json!(0.2);
    }
    let max = limits_max(limits, Api::OpenAi, model);
    let (out, small) = outputs(rng, cap, copies, max, reasoning);
    let input = prompt.billed_tokens(true);
    Sample {
        api: Api::OpenAi,
        path: "/v1/chat/completions".to_owned(),
        model,
        body: body.to_string().into_bytes(),
        tags,
        billed: usage(input, out),
        billed_small_output: usage(input, small),
        written_cap: cap,
        copies,
    }
}

fn openai_responses(rng: &mut Rng, limits: &LimitTable) -> Sample {
    let model = rng.pick(&[
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4o-mini",
        "gpt-5",
        "gpt-5-mini",
        "o3",
        "o4-mini",
    ]);
    let reasoning = model.starts_with('o') || model.starts_with("gpt-5");
    let mut tags = vec!["dialect: openai", "endpoint: responses"];
    let mut prompt = Prompt::default();
    let mut body = json!({"model": model});
    if rng.chance(0.6) {
        let chars = rng.range(80, 2_000);
        body["instructions"] = json!(prompt.text(rng, chars));
        prompt.messages += 1;
    }
    let chars = prompt_chars(rng, model.starts_with("gpt-4.1"), &mut tags);
    if rng.chance(0.5) {
        body["input"] = json!(prompt.text(rng, chars));
        prompt.messages += 1;
    } else {
        tags.push("multi-turn");
        let mut items = Vec::new();
        for _ in 0..rng.range(1, 4) {
            let (user, assistant) = (rng.range(30, 800), rng.range(100, 2_500));
            items.push(json!({"role": "user", "content": prompt.text(rng, user)}));
            items.push(json!({"role": "assistant", "content": prompt.text(rng, assistant)}));
            prompt.messages += 2;
        }
        items.push(json!({"role": "user", "content": prompt.text(rng, chars)}));
        prompt.messages += 1;
        body["input"] = Value::Array(items);
    }
    if rng.chance(0.2) {
        tags.push("tools");
        let tools: Vec<Value> = (0..rng.range(1, 6))
            .map(|_| {
                let (name, description, parameters) = tool_schema(rng, &mut prompt);
                json!({"type": "function", "name": name, "description": description, "parameters": parameters})
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    let cap = rng
        .chance(0.45)
        .then(|| rng.pick(&[512, 1_024, 2_048, 4_096, 8_192, 16_384]));
    if let Some(cap) = cap {
        body["max_output_tokens"] = json!(cap);
    }
    cap_tags(cap, &mut tags);
    if rng.chance(0.3) {
        tags.push("stream");
        body["stream"] = json!(true);
    }
    let max = limits_max(limits, Api::OpenAi, model);
    let (out, small) = outputs(rng, cap, 1, max, reasoning);
    let input = prompt.billed_tokens(true);
    Sample {
        api: Api::OpenAi,
        path: "/v1/responses".to_owned(),
        model,
        body: body.to_string().into_bytes(),
        tags,
        billed: usage(input, out),
        billed_small_output: usage(input, small),
        written_cap: cap,
        copies: 1,
    }
}

fn anthropic_messages(rng: &mut Rng, limits: &LimitTable) -> Sample {
    let model = rng.pick(&[
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-5",
        "claude-3-5-haiku-20241022",
    ]);
    let mut tags = vec!["dialect: anthropic", "endpoint: messages", "output: capped"];
    let mut prompt = Prompt::default();
    let mut messages = Vec::new();
    let mut body = json!({"model": model});
    if rng.chance(0.7) {
        let chars = rng.range(80, 3_000);
        body["system"] = json!(prompt.text(rng, chars));
    }
    if rng.chance(0.45) {
        tags.push("multi-turn");
        for _ in 0..rng.range(1, 6) {
            let (user, assistant) = (rng.range(30, 800), rng.range(100, 2_500));
            messages.push(json!({"role": "user", "content": prompt.text(rng, user)}));
            messages.push(json!({"role": "assistant", "content": prompt.text(rng, assistant)}));
            prompt.messages += 2;
        }
    }
    let chars = prompt_chars(rng, model.starts_with("claude-sonnet"), &mut tags);
    let question = prompt.text(rng, chars);
    prompt.messages += 1;
    if rng.chance(0.06) {
        tags.push("images");
        prompt.image_tokens += image_tokens(model);
        messages.push(json!({"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/photo.png"}},
            {"type": "text", "text": question},
        ]}));
    } else {
        messages.push(json!({"role": "user", "content": question}));
    }
    body["messages"] = Value::Array(messages);
    if rng.chance(0.25) {
        tags.push("tools");
        prompt.tool_tokens += ANTHROPIC_TOOL_PROMPT;
        let tools: Vec<Value> = (0..rng.range(1, 6))
            .map(|_| {
                let (name, description, parameters) = tool_schema(rng, &mut prompt);
                json!({"name": name, "description": description, "input_schema": parameters})
            })
            .collect();
        body["tools"] = Value::Array(tools);
    }
    // `max_tokens` is required; extended thinking's budget sits inside it.
    let thinking = (!model.contains("haiku") && rng.chance(0.12))
        .then(|| rng.pick(&[1_024, 2_048, 4_096, 8_000]));
    let cap = match thinking {
        Some(budget) => {
            tags.push("thinking budget");
            body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
            budget + rng.pick(&[2_048, 4_096, 8_192])
        }
        None => rng.pick(&[1_024, 2_048, 4_096, 4_096, 8_192, 16_000, 32_000]),
    };
    body["max_tokens"] = json!(cap);
    if rng.chance(0.4) {
        tags.push("stream");
        body["stream"] = json!(true);
    }
    let max = limits_max(limits, Api::Anthropic, model);
    let (out, small) = outputs(rng, Some(cap), 1, max, thinking.is_some());
    let input = prompt.billed_tokens(true);
    Sample {
        api: Api::Anthropic,
        path: "/v1/messages".to_owned(),
        model,
        body: body.to_string().into_bytes(),
        tags,
        billed: usage(input, out),
        billed_small_output: usage(input, small),
        written_cap: Some(cap),
        copies: 1,
    }
}

fn gemini_generate(rng: &mut Rng, limits: &LimitTable) -> Sample {
    let model = rng.pick(&[
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-2.0-flash",
    ]);
    // 2.5 Flash and Pro think by default (dynamic budget); Flash-Lite and
    // 2.0 do not.
    let thinks = model == "gemini-2.5-flash" || model == "gemini-2.5-pro";
    let stream = rng.chance(0.3);
    let mut tags = vec![
        "dialect: gemini",
        if stream {
            "endpoint: streamGenerateContent"
        } else {
            "endpoint: generateContent"
        },
    ];
    if stream {
        tags.push("stream");
    }
    let mut prompt = Prompt::default();
    let mut body = json!({});
    if rng.chance(0.5) {
        let chars = rng.range(80, 2_000);
        body["systemInstruction"] = json!({"parts": [{"text": prompt.text(rng, chars)}]});
    }
    let mut contents = Vec::new();
    if rng.chance(0.4) {
        tags.push("multi-turn");
        for _ in 0..rng.range(1, 5) {
            let (user, reply) = (rng.range(30, 800), rng.range(100, 2_500));
            contents.push(json!({"role": "user", "parts": [{"text": prompt.text(rng, user)}]}));
            contents.push(json!({"role": "model", "parts": [{"text": prompt.text(rng, reply)}]}));
            prompt.messages += 2;
        }
    }
    let chars = prompt_chars(rng, true, &mut tags);
    let mut parts = vec![json!({"text": prompt.text(rng, chars)})];
    prompt.messages += 1;
    if rng.chance(0.06) {
        tags.push("images");
        prompt.image_tokens += image_tokens(model);
        parts.push(json!({"fileData": {"mimeType": "image/png", "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/photo"}}));
    }
    contents.push(json!({"role": "user", "parts": parts}));
    body["contents"] = Value::Array(contents);
    if rng.chance(0.2) {
        tags.push("tools");
        let declarations: Vec<Value> = (0..rng.range(1, 6))
            .map(|_| {
                let (name, description, parameters) = tool_schema(rng, &mut prompt);
                json!({"name": name, "description": description, "parameters": parameters})
            })
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    let mut config = serde_json::Map::new();
    let cap = rng
        .chance(0.5)
        .then(|| rng.pick(&[256, 512, 1_024, 2_048, 4_096, 8_192]));
    if let Some(cap) = cap {
        config.insert("maxOutputTokens".to_owned(), json!(cap));
    }
    if rng.chance(0.5) {
        config.insert("temperature".to_owned(), json!(0.7));
    }
    let budget =
        (model.starts_with("gemini-2.5") && rng.chance(0.12)).then(|| rng.pick(&[0, 1_024, 4_096]));
    if let Some(budget) = budget {
        tags.push("thinking budget");
        config.insert(
            "thinkingConfig".to_owned(),
            json!({"thinkingBudget": budget}),
        );
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }
    cap_tags(cap, &mut tags);
    let reasoning = match budget {
        Some(budget) => budget > 0,
        None => thinks,
    };
    let max = limits_max(limits, Api::Gemini, model);
    // Thinking is billed inside `maxOutputTokens` (what users observe).
    let (out, small) = outputs(rng, cap, 1, max, reasoning);
    let method = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    let input = prompt.billed_tokens(true);
    Sample {
        api: Api::Gemini,
        path: format!("/v1beta/models/{model}:{method}"),
        model,
        body: body.to_string().into_bytes(),
        tags,
        billed: usage(input, out),
        billed_small_output: usage(input, small),
        written_cap: cap,
        copies: 1,
    }
}

fn openai_embeddings(rng: &mut Rng) -> Sample {
    let model = rng.pick(&[
        "text-embedding-3-small",
        "text-embedding-3-small",
        "text-embedding-3-small",
        "text-embedding-3-large",
    ]);
    let mut tags = vec!["dialect: openai", "endpoint: embeddings", "output: none"];
    let mut prompt = Prompt::default();
    let input = if rng.chance(0.5) {
        tags.push("embeddings: one query");
        let chars = rng.range(20, 600);
        json!(prompt.text(rng, chars))
    } else {
        // Document ingestion: a batch of chunks of 100-500 tokens.
        tags.push("embeddings: batch of 4-64 chunks");
        let chunks: Vec<Value> = (0..rng.range(4, 64))
            .map(|_| {
                let chars = rng.range(400, 2_000);
                json!(prompt.text(rng, chars))
            })
            .collect();
        Value::Array(chunks)
    };
    let body = json!({"model": model, "input": input});
    let input = prompt.billed_tokens(false);
    Sample {
        api: Api::OpenAi,
        path: "/v1/embeddings".to_owned(),
        model,
        body: body.to_string().into_bytes(),
        tags,
        billed: usage(input, 0),
        billed_small_output: usage(input, 0),
        written_cap: None,
        copies: 1,
    }
}

/// The reservation, as `admit.rs` computes it (`Estimate::of`,
/// `Estimate::worst_cost`), and the worst case's tokens.
struct Reserved {
    cost: NanoUsd,
    input_tokens: u64,
    output_tokens: u64,
    unpriced: bool,
    unknown_input: bool,
}

fn reserve(
    prices: &PriceTable,
    limits: &LimitTable,
    api: Api,
    model: &str,
    facts: &RequestFacts,
) -> Reserved {
    let worst = facts.worst_case(limits, api, model);
    let mut usage = Usage {
        input_tokens: worst.input_tokens,
        output_tokens: worst.output_tokens,
        service_tier: facts.service_tier.unwrap_or_default(),
        ..Usage::default()
    };
    match facts.units {
        Units::Images { count, variant } => {
            usage.images = count;
            usage.image_variant = variant;
        }
        Units::SpeechCharacters(chars) => usage.speech_chars = chars,
        Units::Tokens => {}
    }
    let priced = prices.price(api, model, DAY, &usage);
    let mut cost = priced.cost;
    if api == Api::Anthropic {
        let cached = Usage {
            input_tokens: 0,
            cache_write_1h_tokens: worst.input_tokens,
            ..usage
        };
        cost = NanoUsd(cost.0.max(prices.price(api, model, DAY, &cached).cost.0));
    }
    Reserved {
        cost,
        input_tokens: worst.input_tokens,
        output_tokens: worst.output_tokens,
        unpriced: priced.unpriced,
        unknown_input: worst.unknown_input.is_some(),
    }
}

/// The rule before request inspection: a token per body byte, output at the
/// cap times the copies or 4,096, standard token prices (`lookup`).
fn reserve_old(prices: &PriceTable, sample: &Sample, facts: &RequestFacts) -> NanoUsd {
    let output = match facts.output {
        OutputBound::Nothing => 0,
        _ => sample
            .written_cap
            .map_or(OLD_UNCAPPED_OUTPUT, |cap| cap * sample.copies),
    };
    let usage = usage(sample.body.len() as u64, output);
    prices.lookup(sample.api, sample.model, DAY).0.cost(&usage)
}

/// Ratios of one group of requests.
#[derive(Default)]
struct Group {
    current: Vec<f64>,
    old: Vec<f64>,
    small_output: Vec<f64>,
    input: Vec<f64>,
    output: Vec<f64>,
    reserved: f64,
    billed: f64,
    old_reserved: f64,
    reserved_output_share: Vec<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values
}

fn ratio(x: f64) -> String {
    if x.is_nan() {
        "-".to_owned()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `| min | p10 | p50 | p90 | p99 | max |` of `values`.
fn distribution(values: &[f64]) -> String {
    let s = sorted(values);
    [0.0, 10.0, 50.0, 90.0, 99.0, 100.0]
        .iter()
        .map(|p| {
            if *p == 0.0 {
                ratio(s.first().copied().unwrap_or(f64::NAN))
            } else {
                ratio(percentile(&s, *p))
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn under(values: &[f64]) -> usize {
    values.iter().filter(|r| **r < 1.0).count()
}

fn main() -> Result<(), Box<dyn Error>> {
    let seed: u64 = std::env::var("SEED")
        .unwrap_or_else(|_| "1".into())
        .parse()?;
    let requests: usize = std::env::var("REQUESTS")
        .unwrap_or_else(|_| "3000".into())
        .parse()?;
    let prices = PriceTable::shipped()?;
    let limits = LimitTable::shipped()?;
    let mut rng = Rng(seed);
    let mut groups: BTreeMap<&'static str, Group> = BTreeMap::new();
    let mut models: BTreeMap<&'static str, Group> = BTreeMap::new();
    let (mut unpriced, mut unknown) = (0, 0);
    for _ in 0..requests {
        let r = rng.unit();
        let sample = if r < 0.33 {
            openai_chat(&mut rng, &limits)
        } else if r < 0.45 {
            openai_responses(&mut rng, &limits)
        } else if r < 0.72 {
            anthropic_messages(&mut rng, &limits)
        } else if r < 0.90 {
            gemini_generate(&mut rng, &limits)
        } else {
            openai_embeddings(&mut rng)
        };
        let facts = inspect(
            sample.api,
            &Method::POST,
            &sample.path,
            Some("application/json"),
            &sample.body,
        )?;
        // The gateway prices the model the request names (`ctx.model`).
        let model = match &facts.model {
            RequestModel::Named(name) => name.clone(),
            _ => String::new(),
        };
        if model != sample.model {
            return Err(format!("{}: inspect read model {model:?}", sample.path).into());
        }
        let reserved = reserve(&prices, &limits, sample.api, &model, &facts);
        unpriced += usize::from(reserved.unpriced);
        unknown += usize::from(reserved.unknown_input);
        let billed = prices.price(sample.api, &model, DAY, &sample.billed).cost;
        let billed_small = prices
            .price(sample.api, &model, DAY, &sample.billed_small_output)
            .cost;
        let old = reserve_old(&prices, &sample, &facts);
        let output_only = prices
            .price(sample.api, &model, DAY, &usage(0, reserved.output_tokens))
            .cost;
        let record = |group: &mut Group| {
            group.current.push(reserved.cost.0 as f64 / billed.0 as f64);
            group.old.push(old.0 as f64 / billed.0 as f64);
            group
                .small_output
                .push(reserved.cost.0 as f64 / billed_small.0 as f64);
            group
                .input
                .push(reserved.input_tokens as f64 / sample.billed.input_tokens as f64);
            if sample.billed.output_tokens > 0 {
                group
                    .output
                    .push(reserved.output_tokens as f64 / sample.billed.output_tokens as f64);
            }
            group.reserved += reserved.cost.0 as f64;
            group.old_reserved += old.0 as f64;
            group.billed += billed.0 as f64;
            group
                .reserved_output_share
                .push(output_only.0 as f64 / reserved.cost.0 as f64);
        };
        record(groups.entry("all").or_default());
        for tag in &sample.tags {
            record(groups.entry(tag).or_default());
        }
        record(models.entry(sample.model).or_default());
    }

    let order = |name: &str| {
        let prefixes = [
            "all",
            "dialect",
            "endpoint",
            "output",
            "prompt",
            "multi-turn",
            "tools",
            "images",
            "n > 1",
            "thinking",
            "stream",
            "embeddings",
        ];
        prefixes
            .iter()
            .position(|p| name.starts_with(p))
            .unwrap_or(prefixes.len())
    };
    let mut names: Vec<&&str> = groups.keys().collect();
    names.sort_by_key(|name| (order(name), **name));

    println!(
        "Reservation tightness: {requests} requests, seed {seed}, priced on {DAY}; \
         billed input = prompt characters / 4 + template tokens; \
         {unpriced} unpriced, {unknown} with unknown input."
    );
    println!();
    println!("### Reserved ÷ billed, current rule (admit.rs)");
    println!();
    println!(
        "| group | requests | min | p10 | p50 | p90 | p99 | max | Σ reserved ÷ Σ billed | under 1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &names {
        let g = &groups[**name];
        println!(
            "| {name} | {} | {} | {} | {} |",
            g.current.len(),
            distribution(&g.current),
            ratio(g.reserved / g.billed),
            under(&g.current)
        );
    }
    if let Some(all) = groups.get("all") {
        println!(
            "| all, capped output a few hundred tokens (not 30-100 % of the cap) | {} | {} | | {} |",
            all.small_output.len(),
            distribution(&all.small_output),
            under(&all.small_output)
        );
    }
    println!();
    println!("### Reserved ÷ billed, old rule (a token per body byte; cap or 4,096 out)");
    println!();
    println!(
        "| group | requests | min | p10 | p50 | p90 | p99 | max | Σ reserved ÷ Σ billed | under 1 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for name in &names {
        let g = &groups[**name];
        println!(
            "| {name} | {} | {} | {} | {} |",
            g.old.len(),
            distribution(&g.old),
            ratio(g.old_reserved / g.billed),
            under(&g.old)
        );
    }
    println!();
    println!("### What drives it (current rule): token bounds ÷ billed tokens, p50 (p90)");
    println!();
    println!(
        "| group | input bound ÷ billed input | output bound ÷ billed output | output's share of the reservation |"
    );
    println!("|---|---:|---:|---:|");
    for name in &names {
        let g = &groups[**name];
        let (input, output, share) = (
            sorted(&g.input),
            sorted(&g.output),
            sorted(&g.reserved_output_share),
        );
        println!(
            "| {name} | {} ({}) | {} ({}) | {:.0} % |",
            ratio(percentile(&input, 50.0)),
            ratio(percentile(&input, 90.0)),
            ratio(percentile(&output, 50.0)),
            ratio(percentile(&output, 90.0)),
            100.0 * percentile(&share, 50.0),
        );
    }
    println!();
    println!("### Per model (current rule)");
    println!();
    println!("| model | requests | min | p10 | p50 | p90 | p99 | max | Σ reserved ÷ Σ billed |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, g) in &models {
        println!(
            "| {name} | {} | {} | {} |",
            g.current.len(),
            distribution(&g.current),
            ratio(g.reserved / g.billed),
        );
    }
    Ok(())
}
