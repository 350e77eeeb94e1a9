//! The input side of a request: the bytes of text the model reads, the
//! images attached, and the template overhead around them.
//!
//! A token is never shorter than one byte of text (every tokenizer the
//! providers use is byte-level BPE or falls back to bytes), so bytes of text
//! bound tokens. What is counted: decoded string values, object keys and
//! scalars as written, everywhere in the body (so also fields the model
//! never reads, which only loosens the bound); never JSON punctuation,
//! which the providers do not render. Images count a per-image bound from
//! the limits table instead of their base64 bytes.

use super::json::{Node, Value};
use crate::kind::Api;

/// Tokens per JSON object or array: chat templates frame each message in a
/// few tokens (OpenAI cookbook "How to count tokens": 3 per message plus 1
/// per name, as published, 2025), rendered schemas a few per object.
const CONTAINER_TOKENS: u64 = 4;
/// Tokens per object member: separators a rendered schema puts around each
/// property (`?: `, `,` and a newline).
const MEMBER_TOKENS: u64 = 1;
/// Tokens added once per request: reply priming and system wrappers.
const REQUEST_TOKENS: u64 = 64;
/// Tokens added once when a request defines tools: Anthropic's tool-use
/// system prompt is 346 tokens (tool-use pricing, as published, 2025).
const TOOLS_TOKENS: u64 = 1_024;
/// Tokens added per Anthropic client tool of a built-in type (`bash_*`,
/// `text_editor_*`, `computer_*`): up to 735 tokens of definition each
/// (tool-use pricing, as published, 2025).
const BUILT_IN_TOOL_TOKENS: u64 = 1_024;
/// Bytes of text per token for the realistic estimate (OpenAI's rule of
/// thumb for English, "What are tokens", as published, 2025).
const BYTES_PER_TOKEN: u64 = 4;

/// How big a request's input is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InputSize {
    /// Bytes of text the model can read (see the module paragraph).
    pub text_bytes: u64,
    /// Images attached, each billed up to the model's `image_tokens`.
    pub images: u64,
    /// Template tokens around the text: per object, member, tool set.
    pub overhead_tokens: u64,
}

impl InputSize {
    /// A body that is not JSON: every byte may be text.
    pub(crate) fn of_bytes(bytes: usize) -> Self {
        InputSize {
            text_bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
            ..InputSize::default()
        }
    }

    /// Input tokens, upper bound, given the most tokens one image bills.
    pub fn upper_bound(&self, image_tokens: u64) -> u64 {
        self.text_bytes
            .saturating_add(self.images.saturating_mul(image_tokens))
            .saturating_add(self.overhead_tokens)
            .saturating_add(REQUEST_TOKENS)
    }

    /// Input tokens, a realistic estimate: about four bytes of text a token,
    /// images as in the bound, and the template overhead at a quarter of
    /// its bound (the bound's per-object allowance is generous: OpenAI
    /// frames a message in about 4 tokens, not 4 per nested object).
    pub fn estimate(&self, image_tokens: u64) -> u64 {
        self.text_bytes
            .div_ceil(BYTES_PER_TOKEN)
            .saturating_add(self.images.saturating_mul(image_tokens))
            .saturating_add(self.overhead_tokens.div_ceil(4))
    }
}

/// What counting a JSON body found.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    pub(crate) size: InputSize,
    pub(crate) unknown: Option<&'static str>,
}

pub(crate) fn count(api: Api, root: &Node<'_>) -> Counted {
    let mut counted = Counted::default();
    let present = |name: &str| root.get(name).is_some_and(|v| v.value != Value::Null);
    // Input stored upstream, referred to by id.
    let stored: &[&'static str] = match api {
        Api::OpenAi => &["previous_response_id", "conversation", "thread_id"],
        Api::Anthropic => &["mcp_servers"],
        Api::Gemini => &["cachedContent", "cached_content"],
    };
    counted.unknown = stored.iter().copied().find(|name| present(name));
    // The Responses API's stored prompt template: `prompt: {id, ...}`
    // (legacy completions write `prompt` as text).
    if api == Api::OpenAi && root.get("prompt").and_then(|p| p.get("id")).is_some() {
        counted.unknown.get_or_insert("prompt");
    }
    counted.walk(api, root);
    counted
}

fn add(total: &mut u64, bytes: usize) {
    *total = total.saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
}

impl Counted {
    fn unknown(&mut self, field: &'static str) {
        self.unknown.get_or_insert(field);
    }

    fn walk(&mut self, api: Api, node: &Node<'_>) {
        match &node.value {
            Value::String(text) => add(&mut self.size.text_bytes, text.len()),
            Value::Null | Value::Bool(_) | Value::Number(_) => {
                add(&mut self.size.text_bytes, node.span.len());
            }
            Value::Array(items) => {
                self.size.overhead_tokens += CONTAINER_TOKENS;
                for item in items {
                    self.walk(api, item);
                }
            }
            Value::Object(members) => {
                let members_len = u64::try_from(members.len()).unwrap_or(u64::MAX);
                self.size.overhead_tokens = self
                    .size
                    .overhead_tokens
                    .saturating_add(CONTAINER_TOKENS + MEMBER_TOKENS.saturating_mul(members_len));
                if self.attachment(node) {
                    return;
                }
                for (key, value) in members {
                    add(&mut self.size.text_bytes, key.len());
                    match key.as_ref() {
                        "file_id" if value.value != Value::Null => self.unknown("file_id"),
                        "tools" | "functions" => self.tools(api, value),
                        "inline_data" | "inlineData" => {
                            match mime(value) {
                                m if m.starts_with("image/") => self.size.images += 1,
                                // A PDF page bills as an image (258 tokens on
                                // Gemini) whatever its bytes: a small file
                                // can hold many pages.
                                "application/pdf" => self.unknown("inlineData"),
                                // Audio and video bill per second, far fewer
                                // tokens than their bytes.
                                _ => self.walk(api, value),
                            }
                            continue;
                        }
                        "file_data" | "fileData" => {
                            if mime(value).starts_with("image/") {
                                self.size.images += 1;
                            } else {
                                self.unknown("fileData");
                            }
                            continue;
                        }
                        _ => {}
                    }
                    self.walk(api, value);
                }
            }
        }
    }

    /// Content parts that are images or files; true when the part was
    /// accounted for and its members must not be counted as text.
    fn attachment(&mut self, node: &Node<'_>) -> bool {
        let source_type = || {
            node.get("source")
                .and_then(|s| s.get("type"))
                .and_then(Node::as_str)
        };
        match node.get("type").and_then(Node::as_str) {
            // OpenAI chat `image_url`, Responses `input_image`, Anthropic
            // `image` (by base64, URL or file id).
            Some("image_url") => self.size.images += 1,
            Some("input_image") => {
                if node.get("file_id").is_some() {
                    self.unknown("file_id");
                } else {
                    self.size.images += 1;
                }
            }
            Some("image") if node.get("source").is_some() => match source_type() {
                Some("file") => self.unknown("source.type"),
                _ => self.size.images += 1,
            },
            // Anthropic documents: plain text is read as text; PDFs bill
            // per page, as text plus an image, whatever their bytes.
            Some("document") if node.get("source").is_some() => match source_type() {
                Some("text" | "content") => return false,
                Some("file") => self.unknown("source.type"),
                _ => self.unknown("document"),
            },
            // OpenAI files in chat (`file`) and Responses (`input_file`).
            Some("file" | "input_file") => self.unknown("file"),
            // Responses API items referred to by id: stored conversation
            // state the request does not carry.
            Some("item_reference") => self.unknown("item_reference"),
            _ => return false,
        }
        true
    }

    /// Tool definitions: their schemas are text the model reads (counted by
    /// the walk); server-side tools add input the request does not hold.
    fn tools(&mut self, api: Api, tools: &Node<'_>) {
        let items = tools.as_array();
        if items.is_empty() {
            return;
        }
        self.size.overhead_tokens = self.size.overhead_tokens.saturating_add(TOOLS_TOKENS);
        for tool in items {
            let kind = tool.get("type").and_then(Node::as_str);
            match api {
                Api::OpenAi => {
                    // Everything but functions runs on OpenAI's side
                    // (web and file search, MCP, code interpreter, ...) and
                    // feeds its results back as input.
                    if !matches!(kind, None | Some("function" | "custom")) {
                        self.unknown("tools");
                    }
                }
                Api::Anthropic => match kind {
                    None | Some("custom") => {}
                    Some(k)
                        if k.starts_with("web_")
                            || k.starts_with("code_execution")
                            || k.starts_with("tool_search")
                            || k.starts_with("mcp") =>
                    {
                        self.unknown("tools");
                    }
                    Some(_) => {
                        self.size.overhead_tokens = self
                            .size
                            .overhead_tokens
                            .saturating_add(BUILT_IN_TOOL_TOKENS);
                    }
                },
                // Google Search, URL context, code execution, file search.
                Api::Gemini => {
                    if tool.members().iter().any(|(key, _)| {
                        !matches!(
                            key.as_ref(),
                            "functionDeclarations" | "function_declarations"
                        )
                    }) {
                        self.unknown("tools");
                    }
                }
            }
        }
    }
}

fn mime<'a>(data: &'a Node<'_>) -> &'a str {
    data.get("mime_type")
        .or_else(|| data.get("mimeType"))
        .and_then(Node::as_str)
        .unwrap_or("")
}
