use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::StreamExt;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

const WORDS: [&str; 12] = [
    "Hello",
    "from",
    "the",
    "fake",
    "upstream,",
    "one",
    "word",
    "per",
    "token",
    "until",
    "it",
    "stops.",
];
const DEFAULT_MAX_TOKENS: usize = 12;

/// A provider-looking key made at run time (never committed as a literal).
pub fn fake_provider_key(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("canary-{tag}-{nanos:09}-{}", std::process::id())
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Debug)]
struct FakeState {
    /// The provider keys this fake accepts (a provider accepts several while
    /// a key is being rotated).
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    keys: std::sync::Mutex<Vec<String>>,
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    requests: std::sync::Mutex<Vec<RecordedRequest>>,
    streams_started: AtomicUsize,
    streams_cancelled: AtomicUsize,
    /// Bill the most each request allows (see [`FakeUpstream::bill_maximum`]).
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a tiny critical section that never crosses an await"
    )]
    bill_maximum: std::sync::Mutex<Option<MaxBilling>>,
    /// Hold a stream's connection open this long after its last event.
    pause_after_end_ms: std::sync::atomic::AtomicU64,
    /// Send streams as one body with a `Content-Length` (see
    /// [`FakeUpstream::frame_streams_with_length`]).
    streams_with_length: std::sync::atomic::AtomicBool,
}

/// How an upstream in "bill the maximum" mode bills: what a real provider
/// could bill for each request, at most.
#[derive(Debug, Clone, Copy)]
pub struct MaxBilling {
    /// Output tokens per copy for a request that sets no cap (the model's
    /// maximum output).
    pub uncapped_output_tokens: u64,
    /// Input tokens of state the request refers to but does not carry
    /// (`previous_response_id`, files by id).
    pub stored_input_tokens: u64,
}

/// A running fake upstream. It stops when the test's runtime ends.
#[derive(Debug, Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeUpstream {
    /// Starts on 127.0.0.1 with an OS-chosen port, accepting `expected_key`
    /// (in each dialect's header); see [`Self::accept_key`] for more.
    pub async fn start(expected_key: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve_on(listener, expected_key)
    }

    pub fn serve_on(
        listener: tokio::net::TcpListener,
        expected_key: &str,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        #[expect(
            clippy::disallowed_types,
            reason = "test support: a tiny critical section that never crosses an await"
        )]
        let keys = std::sync::Mutex::new(vec![expected_key.to_owned()]);
        let state = Arc::new(FakeState {
            keys,
            requests: Default::default(),
            streams_started: AtomicUsize::new(0),
            streams_cancelled: AtomicUsize::new(0),
            bill_maximum: Default::default(),
            pause_after_end_ms: Default::default(),
            streams_with_length: Default::default(),
        });
        let app = Router::new().fallback(handle).with_state(state.clone());
        tokio::spawn(async move {
            // Like real providers' servers: no Nagle delay on small SSE writes.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state
            .requests
            .lock()
            .map(|guard| guard.clone())
            .unwrap_or_default()
    }

    /// Accepts another provider key too (a key created during a rotation).
    pub fn accept_key(&self, key: &str) {
        if let Ok(mut keys) = self.state.keys.lock() {
            keys.push(key.to_owned());
        }
    }

    /// Stops accepting a key, as a provider does once it is revoked there.
    pub fn revoke_key(&self, key: &str) {
        if let Ok(mut keys) = self.state.keys.lock() {
            keys.retain(|k| k != key);
        }
    }

    pub fn streams_started(&self) -> usize {
        self.state.streams_started.load(Ordering::SeqCst)
    }

    /// Streams whose client (the gateway) went away before the end.
    pub fn streams_cancelled(&self) -> usize {
        self.state.streams_cancelled.load(Ordering::SeqCst)
    }

    /// From now on, report usage as the most each request allows a real
    /// provider to bill: output = its cap (`max_tokens` and every other
    /// spelling, floats included; 16 on legacy completions; else
    /// `uncapped_output_tokens`) times its copies (`n`, `best_of`,
    /// `candidateCount`), input = its prompt words plus `stored_input_tokens`
    /// when it refers to stored state. `None` goes back to honest counts.
    pub fn bill_maximum(&self, billing: Option<MaxBilling>) {
        if let Ok(mut guard) = self.state.bill_maximum.lock() {
            *guard = billing;
        }
    }

    /// Keep each stream's connection open this long after its last event,
    /// as real providers sometimes do (the client closes first).
    pub fn pause_after_end(&self, pause: Duration) {
        let ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.state.pause_after_end_ms.store(ms, Ordering::SeqCst);
    }

    /// From now on (`true`), send every SSE stream the way nginx, caches
    /// and some OpenAI-compatible servers do: the whole event stream as one
    /// body framed by `Content-Length` rather than chunked.
    pub fn frame_streams_with_length(&self, on: bool) {
        self.state.streams_with_length.store(on, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
    Gemini,
}

async fn handle(State(state): State<Arc<FakeState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    if let Ok(mut requests) = state.requests.lock() {
        requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: path.clone(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }
    // `fake-wait` in the body: think for a while before answering, like a
    // provider on a long non-streamed generation (it has the request).
    if body.windows(11).any(|w| w == b"\"fake-wait\"") {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let dialect =
        if path.starts_with("/v1beta") || path.starts_with("/v1/models/") && path.contains(':') {
            Dialect::Gemini
        } else if path.ends_with("/messages") || parts.headers.contains_key("anthropic-version") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        };
    let rejection = match state.keys.lock() {
        Ok(keys) => check_key(dialect, &parts.headers, &keys),
        Err(_) => None,
    };
    if let Some(rejection) = rejection {
        return rejection;
    }
    if let Some(echo) = echo_response(dialect, &parts.headers, &body) {
        return echo;
    }
    let request: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).unwrap_or(json!({}))
    };
    let query = parts.uri.query().unwrap_or("");
    match (dialect, parts.method.as_str(), path.as_str()) {
        (Dialect::OpenAi, "GET", "/v1/models") => json_response(
            StatusCode::OK,
            json!({"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "openai"},
                {"id": "text-embedding-3-small", "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
            ]}),
        ),
        (Dialect::Anthropic, "GET", "/v1/models") => json_response(
            StatusCode::OK,
            json!({"data": [
            {"type": "model", "id": "claude-3-5-haiku-latest", "display_name": "Claude Haiku", "created_at": "2024-10-22T00:00:00Z"}
        ], "has_more": false, "first_id": "claude-3-5-haiku-latest", "last_id": "claude-3-5-haiku-latest"}),
        ),
        (Dialect::Gemini, "GET", p) if p.ends_with("/models") => json_response(
            StatusCode::OK,
            json!({"models": [
                {"name": "models/gemini-2.0-flash", "displayName": "Gemini 2.0 Flash", "supportedGenerationMethods": ["generateContent"]}
            ]}),
        ),
        // A stored response, retrieved by id: it repeats its usage.
        (Dialect::OpenAi, "GET", p) if p.starts_with("/v1/responses/") => json_response(
            StatusCode::OK,
            openai_response_object("gpt-4o-mini", &WORDS[..3], 1000, 1000),
        ),
        (Dialect::OpenAi, "GET", p) if p.starts_with("/v1/models/") => json_response(
            StatusCode::OK,
            json!({"id": p.trim_start_matches("/v1/models/"), "object": "model", "created": 1_700_000_000, "owned_by": "openai"}),
        ),
        (_, "POST", _) => generate(&state, dialect, &path, query, &request),
        _ => error_response(
            dialect,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("unknown path {path}"),
        ),
    }
}

fn check_key(dialect: Dialect, headers: &HeaderMap, accepted: &[String]) -> Option<Response> {
    let presented = match dialect {
        Dialect::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned),
        Dialect::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        Dialect::Gemini => headers
            .get("x-goog-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    match presented {
        Some(key) if accepted.contains(&key) => None,
        // Like real providers, echo what was presented: the gateway must
        // scrub it before the client sees it.
        Some(key) => Some(error_response(
            dialect,
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            &format!("Incorrect API key provided: {key}."),
        )),
        None => Some(error_response(
            dialect,
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "You didn't provide an API key.",
        )),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        "x-request-id",
        http::HeaderValue::from_static("fake-upstream-request"),
    );
    response
}

fn error_response(dialect: Dialect, status: StatusCode, code: &str, message: &str) -> Response {
    let body = match dialect {
        Dialect::OpenAi => {
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
        }
        Dialect::Anthropic => {
            let kind = match status.as_u16() {
                401 => "authentication_error",
                429 => "rate_limit_error",
                500 => "api_error",
                404 => "not_found_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Dialect::Gemini => {
            let status_text = match status.as_u16() {
                401 | 400 => "INVALID_ARGUMENT",
                429 => "RESOURCE_EXHAUSTED",
                500 => "INTERNAL",
                _ => "NOT_FOUND",
            };
            json!({"error": {"code": status.as_u16(), "message": message, "status": status_text}})
        }
    };
    json_response(status, body)
}

/// Words of all prompt text in the request, whatever the dialect.
fn count_prompt_words(value: &Value) -> usize {
    fn walk(value: &Value, key: Option<&str>, total: &mut usize) {
        match value {
            Value::String(text)
                if matches!(
                    key,
                    Some("content" | "text" | "input" | "prompt" | "system" | "instructions")
                ) =>
            {
                *total += text.split_whitespace().count();
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, key, total)),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| k.as_str() != "model")
                .for_each(|(k, v)| walk(v, Some(k), total)),
            _ => {}
        }
    }
    let mut total = 0;
    walk(value, None, &mut total);
    total
}

fn max_tokens(request: &Value) -> usize {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| request.get(*k).and_then(Value::as_u64))
        .or_else(|| {
            request
                .pointer("/generationConfig/maxOutputTokens")
                .and_then(Value::as_u64)
        })
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        .unwrap_or(DEFAULT_MAX_TOKENS)
        .min(WORDS.len())
}

fn generate(
    state: &Arc<FakeState>,
    dialect: Dialect,
    path: &str,
    query: &str,
    request: &Value,
) -> Response {
    let model = match dialect {
        Dialect::Gemini => path
            .rsplit('/')
            .next()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned(),
        _ => request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    };
    match model.as_str() {
        "fake-error-500" => {
            return error_response(
                dialect,
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "The server had an error while processing your request.",
            );
        }
        "fake-rate-limit" => {
            return error_response(
                dialect,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Rate limit reached for requests.",
            );
        }
        _ => {}
    }
    let mut input_tokens = count_prompt_words(request);
    let n = max_tokens(request);
    let words: Vec<&str> = WORDS[..n].to_vec();
    let mut output = words.len();
    let billing = state.bill_maximum.lock().ok().and_then(|guard| *guard);
    if let Some(billing) = billing {
        let Some((most_in, most_out)) = most_billable(dialect, path, request, billing) else {
            return error_response(
                dialect,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "max_tokens is too large for this model",
            );
        };
        input_tokens = most_in;
        output = most_out;
    }
    if let Some(response) = non_token_endpoint(path, request, &model) {
        return response;
    }
    let streaming = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || path.contains(":streamGenerateContent");
    let slow = model == "fake-slow";

    if path.ends_with("/embeddings") {
        let inputs = match request.get("input") {
            Some(Value::Array(items)) => items.len(),
            _ => 1,
        };
        let data: Vec<Value> = (0..inputs)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3]}))
            .collect();
        return json_response(
            StatusCode::OK,
            json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens}}),
        );
    }
    let events = match (dialect, streaming) {
        (Dialect::OpenAi, false) if path.ends_with("/responses") => {
            return json_response(
                StatusCode::OK,
                openai_response_object(&model, &words, input_tokens, output),
            );
        }
        (Dialect::OpenAi, false)
            if path.ends_with("/completions") && !path.ends_with("/chat/completions") =>
        {
            return json_response(
                StatusCode::OK,
                json!({
                    "id": "cmpl-fake", "object": "text_completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"text": words.join(" "), "index": 0, "logprobs": null, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": input_tokens, "completion_tokens": output, "total_tokens": input_tokens + output}
                }),
            );
        }
        (Dialect::OpenAi, false) => {
            return json_response(
                StatusCode::OK,
                json!({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": words.join(" "), "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": input_tokens, "completion_tokens": output, "total_tokens": input_tokens + output}
                }),
            );
        }
        (Dialect::Anthropic, false) => {
            return json_response(
                StatusCode::OK,
                json!({
                    "id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": words.join(" ")}],
                    "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": output}
                }),
            );
        }
        (Dialect::Gemini, false) => {
            return json_response(
                StatusCode::OK,
                json!({
                    "candidates": [{"content": {"parts": [{"text": words.join(" ")}], "role": "model"}, "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": input_tokens, "candidatesTokenCount": output, "totalTokenCount": input_tokens + output},
                    "modelVersion": model
                }),
            );
        }
        (Dialect::OpenAi, true) if path.ends_with("/responses") => {
            openai_responses_events(&model, &words, input_tokens, output)
        }
        (Dialect::OpenAi, true) => {
            let include_usage = request
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            openai_chat_events(&model, &words, input_tokens, output, include_usage)
        }
        (Dialect::Anthropic, true) => anthropic_events(&model, &words, input_tokens, output),
        (Dialect::Gemini, true) => gemini_events(&model, &words, input_tokens, output),
    };
    state.streams_started.fetch_add(1, Ordering::SeqCst);
    if dialect == Dialect::Gemini && !query.split('&').any(|pair| pair == "alt=sse") {
        return gemini_json_array_response(state.clone(), events, slow);
    }
    sse_response(state.clone(), events, slow)
}

/// A hostile or buggy upstream that echoes the key it was sent, asked for
/// by the model name `fake-echo-KIND`: in response headers of a 401
/// (`header`), in a gzip-compressed 401 or 200 body (`gzip`, `gzip-ok`),
/// in a 302's body
/// (`redirect`), or in a 200 stream, split across chunks and encoded
/// (`stream`: raw, percent-encoded, JSON-escaped and base64).
fn echo_response(dialect: Dialect, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
    let text = std::str::from_utf8(body).ok()?;
    let kind = text.split("\"fake-echo-").nth(1)?.split('"').next()?;
    let key = match dialect {
        Dialect::OpenAi => headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .to_owned(),
        Dialect::Anthropic => headers.get("x-api-key")?.to_str().ok()?.to_owned(),
        Dialect::Gemini => headers.get("x-goog-api-key")?.to_str().ok()?.to_owned(),
    };
    let mut response = match kind {
        "header" => {
            let mut response = error_response(
                dialect,
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "bad key",
            );
            let value = http::HeaderValue::from_str(&format!(
                "Bearer realm=\"api\", error=\"invalid_token\", key=\"{key}\""
            ))
            .ok()?;
            response.headers_mut().insert("www-authenticate", value);
            response
                .headers_mut()
                .insert("x-debug-key", http::HeaderValue::from_str(&key).ok()?);
            response
        }
        "gzip" | "gzip-ok" => {
            use std::io::Write;
            let message = json!({"error": {"message": format!("Incorrect API key provided: {key}"), "type": "invalid_request_error"}});
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(message.to_string().as_bytes()).ok()?;
            let mut response = Response::new(Body::from(encoder.finish().ok()?));
            // `gzip-ok`: a success, compressed although the gateway asked
            // for `identity`.
            *response.status_mut() = if kind == "gzip" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::OK
            };
            let headers = response.headers_mut();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert("content-encoding", http::HeaderValue::from_static("gzip"));
            response
        }
        "redirect" => {
            let mut response = Response::new(Body::from(format!(
                "<a href=\"/moved?key={key}\">moved, key {key}</a>"
            )));
            *response.status_mut() = StatusCode::FOUND;
            response
                .headers_mut()
                .insert("location", http::HeaderValue::from_static("/moved"));
            response
        }
        "stream" => {
            use base64::Engine;
            let percent: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
            let escaped: String = key.bytes().map(|b| format!("\\u{:04x}", b)).collect();
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("user:{key}"));
            let whole = format!(
                "data: {{\"echo\":\"{key}\"}}\n\ndata: {{\"pct\":\"{percent}\"}}\n\ndata: {{\"esc\":\"{escaped}\"}}\n\ndata: {{\"b64\":\"{encoded}\"}}\n\ndata: [DONE]\n\n"
            );
            // Cut into small chunks, so the key is split between them.
            let chunks: Vec<Result<Bytes, std::convert::Infallible>> = whole
                .as_bytes()
                .chunks(7)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
        _ => return None,
    };
    response.headers_mut().insert(
        "x-request-id",
        http::HeaderValue::from_static("fake-upstream-echo"),
    );
    Some(response)
}

/// Endpoints billed by something other than tokens, answered as OpenAI
/// does: images (`data` items, no usage, as DALL-E answers), speech (audio
/// bytes), transcriptions (`{"text"}`), moderations (no usage).
fn non_token_endpoint(path: &str, request: &Value, model: &str) -> Option<Response> {
    if path.ends_with("/images/generations")
        || path.ends_with("/images/edits")
        || path.ends_with("/images/variations")
    {
        let n = request
            .get("n")
            .and_then(Value::as_f64)
            .unwrap_or(1.0)
            .max(1.0) as usize;
        let data: Vec<Value> = (0..n.min(10))
            .map(|i| json!({"url": format!("http://images.invalid/{i}.png"), "revised_prompt": "a picture"}))
            .collect();
        return Some(json_response(
            StatusCode::OK,
            json!({"created": 1_700_000_000, "data": data}),
        ));
    }
    if path.ends_with("/audio/speech") {
        let mut response = Response::new(Body::from(vec![0xff_u8, 0xf3, 0x44, 0xc4, 0, 0, 0, 0]));
        response
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static("audio/mpeg"));
        return Some(response);
    }
    if path.ends_with("/audio/transcriptions") || path.ends_with("/audio/translations") {
        return Some(json_response(
            StatusCode::OK,
            json!({"text": "Hello from the fake upstream."}),
        ));
    }
    if path.ends_with("/moderations") {
        return Some(json_response(
            StatusCode::OK,
            json!({"id": "modr-fake", "model": model, "results": [{"flagged": false, "categories": {}, "category_scores": {}}]}),
        ));
    }
    None
}

/// A number as providers accept it: an integer or a float (`8.0`),
/// rounded up.
fn number(value: Option<&Value>) -> Option<u64> {
    let value = value?.as_f64()?;
    (value >= 0.0).then(|| value.ceil().min(1e15) as u64)
}

/// The most a provider could bill for `request`: the oracle of the
/// "bill the maximum" mode, written independently of the gateway's code.
fn most_billable(
    dialect: Dialect,
    path: &str,
    request: &Value,
    billing: MaxBilling,
) -> Option<(usize, usize)> {
    let config = request
        .get("generationConfig")
        .or_else(|| request.get("generation_config"));
    let get = |key: &str| number(request.get(key));
    let gemini = |camel: &str, snake: &str| {
        config.and_then(|c| number(c.get(camel)).or_else(|| number(c.get(snake))))
    };
    let legacy_completions = path.ends_with("/completions") && !path.ends_with("/chat/completions");
    let (cap, copies) = match dialect {
        Dialect::OpenAi => {
            let cap = get("max_completion_tokens")
                .or_else(|| get("max_output_tokens"))
                .or_else(|| get("max_tokens"))
                .or(legacy_completions.then_some(16));
            let n = get("n").unwrap_or(1).max(1);
            let best_of = if legacy_completions {
                get("best_of").unwrap_or(1).max(n)
            } else {
                n
            };
            // Each prompt of a list gets its completions.
            let prompts = match request.get("prompt") {
                Some(Value::Array(items))
                    if legacy_completions && !items.iter().all(Value::is_number) =>
                {
                    items.len().max(1) as u64
                }
                _ => 1,
            };
            (cap, best_of.saturating_mul(prompts))
        }
        Dialect::Anthropic => (get("max_tokens"), 1),
        Dialect::Gemini => {
            let thinking = config
                .and_then(|c| c.get("thinkingConfig").or_else(|| c.get("thinking_config")))
                .and_then(|t| {
                    number(t.get("thinkingBudget")).or_else(|| number(t.get("thinking_budget")))
                })
                .unwrap_or(0);
            (
                gemini("maxOutputTokens", "max_output_tokens").map(|cap| cap + thinking),
                gemini("candidateCount", "candidate_count")
                    .unwrap_or(1)
                    .max(1),
            )
        }
    };
    if cap.is_some_and(|cap| cap > billing.uncapped_output_tokens) {
        // As providers do: a cap above the model's maximum is refused.
        return None;
    }
    let output = cap
        .unwrap_or(billing.uncapped_output_tokens)
        .saturating_mul(copies);
    let refers_to_stored = ["previous_response_id", "conversation", "prompt"]
        .iter()
        .any(|key| {
            request
                .get(*key)
                .is_some_and(|v| !v.is_string() || *key != "prompt")
        })
        || request.to_string().contains("\"file_id\"");
    let input = count_prompt_words(request) as u64
        + if refers_to_stored {
            billing.stored_input_tokens
        } else {
            0
        };
    Some((
        usize::try_from(input).unwrap_or(usize::MAX),
        usize::try_from(output).unwrap_or(usize::MAX),
    ))
}

fn openai_response_object(
    model: &str,
    words: &[&str],
    input_tokens: usize,
    output: usize,
) -> Value {
    json!({
        "id": "resp_fake", "object": "response", "created_at": 1_700_000_000, "status": "completed", "model": model,
        "output": [{"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": words.join(" "), "annotations": []}]}],
        "usage": {"input_tokens": input_tokens, "output_tokens": output, "total_tokens": input_tokens + output,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    })
}

fn sse(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(name) => Bytes::from(format!("event: {name}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn openai_chat_events(
    model: &str,
    words: &[&str],
    input_tokens: usize,
    output: usize,
    include_usage: bool,
) -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        let mut value = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            value["usage"] = Value::Null;
        }
        sse(None, &value)
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        events.push(chunk(json!({"content": text}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        events.push(sse(None, &json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output, "total_tokens": input_tokens + output}})));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

fn openai_responses_events(
    model: &str,
    words: &[&str],
    input_tokens: usize,
    output: usize,
) -> Vec<Bytes> {
    // The event sequence of the real Responses API: the item and its content
    // part are announced before any text delta.
    let text = words.join(" ");
    let in_progress = json!({"id": "resp_fake", "object": "response", "created_at": 1_700_000_000, "status": "in_progress", "model": model, "output": []});
    let item = |status: &str, content: Value| json!({"type": "message", "id": "msg_fake", "status": status, "role": "assistant", "content": content});
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
    let mut seq = 0usize;
    let mut next = || {
        seq += 1;
        seq - 1
    };
    let mut events = vec![
        sse(
            Some("response.created"),
            &json!({"type": "response.created", "sequence_number": next(), "response": in_progress}),
        ),
        sse(
            Some("response.in_progress"),
            &json!({"type": "response.in_progress", "sequence_number": next(), "response": in_progress}),
        ),
        sse(
            Some("response.output_item.added"),
            &json!({"type": "response.output_item.added", "sequence_number": next(), "output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        sse(
            Some("response.content_part.added"),
            &json!({"type": "response.content_part.added", "sequence_number": next(), "item_id": "msg_fake", "output_index": 0, "content_index": 0, "part": part("")}),
        ),
    ];
    for (i, word) in words.iter().enumerate() {
        let delta = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        events.push(sse(Some("response.output_text.delta"), &json!({"type": "response.output_text.delta", "sequence_number": next(),
            "item_id": "msg_fake", "output_index": 0, "content_index": 0, "delta": delta, "logprobs": []})));
    }
    events.push(sse(Some("response.output_text.done"), &json!({"type": "response.output_text.done", "sequence_number": next(), "item_id": "msg_fake", "output_index": 0, "content_index": 0, "text": text, "logprobs": []})));
    events.push(sse(Some("response.content_part.done"), &json!({"type": "response.content_part.done", "sequence_number": next(), "item_id": "msg_fake", "output_index": 0, "content_index": 0, "part": part(&text)})));
    events.push(sse(Some("response.output_item.done"), &json!({"type": "response.output_item.done", "sequence_number": next(), "output_index": 0, "item": item("completed", json!([part(&text)]))})));
    events.push(sse(Some("response.completed"), &json!({"type": "response.completed", "sequence_number": next(), "response": openai_response_object(model, words, input_tokens, output)})));
    events
}

fn anthropic_events(model: &str, words: &[&str], input_tokens: usize, output: usize) -> Vec<Bytes> {
    let mut events = vec![
        sse(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        ),
        sse(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse(Some("ping"), &json!({"type": "ping"})),
    ];
    for (i, word) in words.iter().enumerate() {
        let text = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        events.push(sse(Some("content_block_delta"), &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})));
    }
    events.push(sse(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(sse(Some("message_delta"), &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"input_tokens": null, "cache_creation_input_tokens": null, "cache_read_input_tokens": null, "output_tokens": output}})));
    events.push(sse(Some("message_stop"), &json!({"type": "message_stop"})));
    events
}

fn gemini_events(model: &str, words: &[&str], input_tokens: usize, output: usize) -> Vec<Bytes> {
    let mut events = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let text = if i == 0 {
            (*word).to_owned()
        } else {
            format!(" {word}")
        };
        let mut candidate =
            json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
        if last {
            candidate["finishReason"] = json!("STOP");
        }
        events.push(Bytes::from(format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [candidate], "usageMetadata": {"promptTokenCount": input_tokens, "candidatesTokenCount": if last { output } else { i + 1 }, "totalTokenCount": input_tokens + if last { output } else { i + 1 }}, "modelVersion": model})
        )));
    }
    events
}

/// Counts a stream as cancelled when it is dropped before its last event.
struct CancelGuard {
    state: Arc<FakeState>,
    finished: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.state.streams_cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Gemini's `streamGenerateContent` without `alt=sse`: one JSON array,
/// written element by element as generation goes (`[{…}\r\n,{…}\r\n]`).
fn gemini_json_array_response(state: Arc<FakeState>, events: Vec<Bytes>, slow: bool) -> Response {
    let total = events.len();
    let framed: Vec<Bytes> = events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let json = event
                .strip_prefix(b"data: ")
                .unwrap_or(event)
                .strip_suffix(b"\r\n\r\n")
                .unwrap_or(event);
            let mut out = Vec::with_capacity(json.len() + 4);
            out.extend_from_slice(if i == 0 { b"[" } else { b"," });
            out.extend_from_slice(json);
            out.extend_from_slice(b"\r\n");
            if i + 1 == total {
                out.push(b']');
            }
            Bytes::from(out)
        })
        .collect();
    let mut response = sse_response(state, framed, slow);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

fn sse_response(state: Arc<FakeState>, events: Vec<Bytes>, slow: bool) -> Response {
    if state.streams_with_length.load(Ordering::SeqCst) {
        let whole: Vec<u8> = events.concat();
        let length = whole.len();
        let mut response = Response::new(Body::from(whole));
        let headers = response.headers_mut();
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert("content-length", http::HeaderValue::from(length));
        return response;
    }
    let total = events.len();
    let pause_after_end = Duration::from_millis(state.pause_after_end_ms.load(Ordering::SeqCst));
    let guard = CancelGuard {
        state,
        finished: false,
    };
    let stream = futures_util::stream::unfold(
        (events.into_iter(), guard, 0usize),
        move |(mut events, mut guard, sent)| async move {
            let Some(event) = events.next() else {
                // Some servers keep the connection open a while after the
                // last event; the client is expected to close first.
                if !pause_after_end.is_zero() && sent == total {
                    tokio::time::sleep(pause_after_end).await;
                }
                return None;
            };
            // Paced like a model generating: each event waits, except the
            // usage and end markers, which a provider sends right after the
            // last token.
            let is_trailer = event.windows(12).any(|w| w == b"\"choices\":[]")
                || event.starts_with(b"data: [DONE]");
            if slow && !is_trailer {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if sent + 1 == total {
                guard.finished = true;
            }
            Some((
                Ok::<Bytes, std::convert::Infallible>(event),
                (events, guard, sent + 1),
            ))
        },
    )
    .boxed();
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert("cache-control", http::HeaderValue::from_static("no-cache"));
    response
}
