//! Table tests of request inspection: each `check_*` function is the only
//! caller of the API it tests.

use std::io::Write;

use http::Method;

use super::*;

fn facts(api: Api, path: &str, body: &str) -> RequestFacts {
    inspect(
        api,
        &Method::POST,
        path,
        Some("application/json"),
        body.as_bytes(),
    )
    .unwrap_or_else(|error| panic!("{api:?} {path} {body}: {error}"))
}

/// The output bound per copy and the copies of one request.
fn check_output(api: Api, path: &str, body: &str, expected: (OutputBound, u64)) {
    let facts = facts(api, path, body);
    assert_eq!(
        (facts.output, facts.copies),
        expected,
        "{api:?} {path} {body}"
    );
}

#[test]
fn output_caps_and_copies_in_every_dialect() {
    use OutputBound::*;
    let chat = "/v1/chat/completions";
    let cap = |tokens| Capped { tokens };
    let cases: &[(Api, &str, &str, (OutputBound, u64))] = &[
        (Api::OpenAi, chat, r#"{"max_tokens":100}"#, (cap(100), 1)),
        (
            Api::OpenAi,
            chat,
            r#"{"max_completion_tokens":50}"#,
            (cap(50), 1),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"max_output_tokens":70}"#,
            (cap(70), 1),
        ),
        // Several caps: the largest; several multipliers: the largest.
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":10,"max_completion_tokens":30,"n":2,"best_of":5}"#,
            (cap(30), 5),
        ),
        // Floats count; fractions round up; absurd values saturate.
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":16000.0,"n":8.0}"#,
            (cap(16_000), 8),
        ),
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":1.5e3,"n":2.2}"#,
            (cap(1_500), 3),
        ),
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":1e30}"#,
            (cap(u64::MAX), 1),
        ),
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":100,"n":1e300}"#,
            (cap(100), u64::MAX),
        ),
        // Negative, zero, or not a number: no usable cap.
        (Api::OpenAi, chat, r#"{"max_tokens":-1}"#, (Uncapped, 1)),
        (Api::OpenAi, chat, r#"{"max_tokens":0}"#, (Uncapped, 1)),
        (Api::OpenAi, chat, r#"{"max_tokens":true}"#, (Uncapped, 1)),
        (Api::OpenAi, chat, r#"{"max_tokens":"lots"}"#, (Uncapped, 1)),
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":100,"max_completion_tokens":-5}"#,
            (Uncapped, 1),
        ),
        // Numeric strings are read as servers that coerce them would.
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":"64","n":"2"}"#,
            (cap(64), 2),
        ),
        // `null` is "not given".
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":null,"n":null}"#,
            (Uncapped, 1),
        ),
        // A multiplier that is not a number: OpenAI's ceiling for `n`.
        (
            Api::OpenAi,
            chat,
            r#"{"max_tokens":5,"n":"many"}"#,
            (cap(5), 128),
        ),
        (Api::OpenAi, chat, r#"{"max_tokens":5,"n":0}"#, (cap(5), 1)),
        (Api::OpenAi, chat, r#"{"messages":[]}"#, (Uncapped, 1)),
        // Legacy completions: `max_tokens` defaults to 16, `best_of` bills.
        (
            Api::OpenAi,
            "/v1/completions",
            r#"{"prompt":"x","best_of":20}"#,
            (EndpointDefault { tokens: 16 }, 20),
        ),
        (
            Api::OpenAi,
            "/v1/completions",
            r#"{"prompt":"x","max_tokens":200,"best_of":20,"n":4}"#,
            (cap(200), 20),
        ),
        (
            Api::OpenAi,
            "/v1/embeddings",
            r#"{"input":"x","n":3}"#,
            (Nothing, 1),
        ),
        (
            Api::OpenAi,
            "/v1/moderations",
            r#"{"input":"x"}"#,
            (Nothing, 1),
        ),
        // Anthropic: `max_tokens` holds the thinking budget; no `n`.
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"max_tokens":1024,"n":5}"#,
            (cap(1024), 1),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1500}}"#,
            (cap(2000), 1),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"max_tokens":1000,"thinking":{"budget_tokens":4000}}"#,
            (cap(4000), 1),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"max_tokens":"x"}"#,
            (Uncapped, 1),
        ),
        (
            Api::Anthropic,
            "/v1/messages/count_tokens",
            r#"{}"#,
            (Nothing, 1),
        ),
        // Gemini, camelCase and snake_case; thinking budgets are added.
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generationConfig":{"maxOutputTokens":64,"candidateCount":2}}"#,
            (cap(64), 2),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generation_config":{"max_output_tokens":64.0,"candidate_count":3}}"#,
            (cap(64), 3),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generationConfig":{"maxOutputTokens":100,"thinkingConfig":{"thinkingBudget":500}}}"#,
            (cap(600), 1),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generation_config":{"max_output_tokens":100,"thinking_config":{"thinking_budget":-1}}}"#,
            (cap(100), 1),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generationConfig":{"maxOutputTokens":10},"generation_config":{"max_output_tokens":90,"candidate_count":4}}"#,
            (cap(90), 4),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"generationConfig":{"thinkingConfig":{"thinkingBudget":500}}}"#,
            (Uncapped, 1),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            r#"{}"#,
            (Uncapped, 1),
        ),
        (
            Api::Gemini,
            "/v1beta/models/e:embedContent",
            r#"{}"#,
            (Nothing, 1),
        ),
        (
            Api::Gemini,
            "/v1beta/models/e:countTokens",
            r#"{}"#,
            (Nothing, 1),
        ),
    ];
    for (api, path, body, expected) in cases {
        check_output(*api, path, body, *expected);
    }
}

#[test]
fn non_posts_generate_nothing() {
    let facts = inspect(Api::OpenAi, &Method::GET, "/v1/models", None, b"").unwrap();
    assert_eq!(
        (facts.model, facts.output),
        (RequestModel::Listing, OutputBound::Nothing)
    );
}

fn check_error(body: &str, expected: RequestError) {
    let got = inspect(
        Api::OpenAi,
        &Method::POST,
        "/v1/chat/completions",
        Some("application/json"),
        body.as_bytes(),
    );
    assert_eq!(got, Err(expected), "{body}");
}

#[test]
fn duplicate_keys_and_bad_bodies_are_refused() {
    let duplicate = |key: &str, at: &str| RequestError::DuplicateKey {
        key: key.into(),
        at: at.into(),
    };
    check_error(r#"{"model":"a","model":"b"}"#, duplicate("model", "/model"));
    check_error(
        r#"{"max_tokens":10,"messages":[],"max_tokens":100000}"#,
        duplicate("max_tokens", "/max_tokens"),
    );
    check_error(
        r#"{"messages":[{"role":"user","content":"x","role":"system"}]}"#,
        duplicate("role", "/messages/0/role"),
    );
    check_error(r#"{"model":4}"#, RequestError::ModelNotString);
    check_error(
        r#"{"model":"#,
        RequestError::MalformedJson("unexpected end of the body at byte 9".into()),
    );
    // The message a client reads names the key and where it is.
    let text = duplicate("n", "/n").to_string();
    assert!(text.contains("`n` twice (at /n)"), "{text}");
}

#[test]
fn a_duplicate_key_is_malformed_for_request_model() {
    let got = crate::request_model(
        Api::OpenAi,
        &Method::POST,
        "/v1/chat/completions",
        Some("application/json"),
        br#"{"model":"cheap","model":"expensive"}"#,
    );
    assert!(
        matches!(&got, Err(crate::ModelError::MalformedJson(m)) if m.contains("`model` twice")),
        "{got:?}"
    );
}

fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(filename) = filename {
            write!(
                body,
                "; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
            )
            .unwrap();
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    body
}

#[test]
fn multipart_requests_name_their_model_in_a_form_field() {
    let boundary = "----FormBoundaryAbC123";
    let content_type = format!("multipart/form-data; boundary={boundary}");
    let audio = vec![7u8; 3000];
    let body = multipart(
        boundary,
        &[
            ("file", Some("a.mp3"), &audio),
            ("model", None, b"gpt-4o-transcribe"),
            ("stream", None, b"true"),
        ],
    );
    let facts = inspect(
        Api::OpenAi,
        &Method::POST,
        "/v1/audio/transcriptions",
        Some(&content_type),
        &body,
    )
    .unwrap();
    assert_eq!(facts.model, RequestModel::Named("gpt-4o-transcribe".into()));
    assert!(facts.stream);
    // The audio's bytes and the field values bound the input.
    assert_eq!(facts.input.text_bytes, 3000 + 17 + 4);

    let body = multipart(
        boundary,
        &[
            ("image[]", Some("a.png"), b"\x89PNG"),
            ("image[]", Some("b.png"), b"\x89PNG"),
            ("mask", Some("m.png"), b"\x89PNG"),
            ("prompt", None, b"a cat"),
            ("model", None, b"gpt-image-1"),
            ("n", None, b"3"),
            ("size", None, b"1024x1536"),
            ("quality", None, b"high"),
        ],
    );
    // The boundary is case-sensitive: a quoted one, as sent.
    let quoted = format!("multipart/form-data; boundary=\"{boundary}\"");
    let facts = inspect(
        Api::OpenAi,
        &Method::POST,
        "/v1/images/edits",
        Some(&quoted),
        &body,
    )
    .unwrap();
    assert_eq!(facts.model, RequestModel::Named("gpt-image-1".into()));
    assert_eq!(facts.input.images, 3);
    assert_eq!(
        facts.units,
        Units::Images {
            count: 3,
            variant: ImageVariant {
                size: ImageSize::Wide1536,
                quality: ImageQuality::High,
            },
        }
    );
    // Not multipart after all: no model, as before.
    let facts = inspect(
        Api::OpenAi,
        &Method::POST,
        "/v1/audio/transcriptions",
        Some("multipart/form-data; boundary=x"),
        br#"{"model":"o3"}"#,
    )
    .unwrap();
    assert_eq!(facts.model, RequestModel::Unknown);
}

#[test]
fn units_of_image_and_speech_endpoints() {
    let cases: &[(&str, &str, Units)] = &[
        (
            "/v1/images/generations",
            r#"{"model":"dall-e-3","prompt":"x"}"#,
            Units::Images {
                count: 1,
                variant: ImageVariant::default(),
            },
        ),
        (
            "/v1/images/generations",
            r#"{"prompt":"x","n":4.0,"size":"1792x1024","quality":"hd"}"#,
            Units::Images {
                count: 4,
                variant: ImageVariant {
                    size: ImageSize::Wide1792,
                    quality: ImageQuality::Hd,
                },
            },
        ),
        (
            "/v1/images/variations",
            r#"{"size":"auto","quality":"auto"}"#,
            Units::Images {
                count: 1,
                variant: ImageVariant {
                    size: ImageSize::Other,
                    quality: ImageQuality::Other,
                },
            },
        ),
        (
            "/v1/audio/speech",
            r#"{"model":"tts-1","input":"héllo \u00e9","voice":"alloy"}"#,
            Units::SpeechCharacters(7),
        ),
        ("/v1/chat/completions", r#"{"n":3}"#, Units::Tokens),
    ];
    for (path, body, expected) in cases {
        assert_eq!(
            facts(Api::OpenAi, path, body).units,
            *expected,
            "{path} {body}"
        );
    }
}

#[test]
fn stream_and_service_tier() {
    let cases: &[(Api, &str, &str, bool, Option<ServiceTier>)] = &[
        (
            Api::OpenAi,
            "/v1/chat/completions",
            r#"{"stream":true,"service_tier":"flex"}"#,
            true,
            Some(ServiceTier::Flex),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"service_tier":"priority"}"#,
            false,
            Some(ServiceTier::Priority),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"service_tier":"default"}"#,
            false,
            Some(ServiceTier::Standard),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"service_tier":"auto","stream":false}"#,
            false,
            None,
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"stream":true,"service_tier":"standard_only"}"#,
            true,
            Some(ServiceTier::Standard),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            r#"{}"#,
            true,
            None,
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{}"#,
            false,
            None,
        ),
    ];
    for (api, path, body, stream, tier) in cases {
        let facts = facts(*api, path, body);
        assert_eq!(
            (facts.stream, facts.service_tier),
            (*stream, *tier),
            "{path} {body}"
        );
    }
}

/// The input side of one request: (text bytes, images, unknown input).
type InputExpected = (u64, u64, Option<&'static str>);

fn check_input(api: Api, path: &str, body: &str, expected: (u64, u64, Option<&str>)) {
    let facts = facts(api, path, body);
    assert_eq!(
        (
            facts.input.text_bytes,
            facts.input.images,
            facts.unknown_input
        ),
        expected,
        "{api:?} {path} {body}"
    );
}

#[test]
fn input_counts_text_never_punctuation_and_images_by_count() {
    let chat = "/v1/chat/completions";
    let cases: &[(Api, &str, &str, InputExpected)] = &[
        // "messages" 8 + "role" 4 + "user" 4 + "content" 7 + "hi" 2.
        (
            Api::OpenAi,
            chat,
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            (25, 0, None),
        ),
        // Whitespace and escapes: the decoded text counts, é is 2 bytes.
        (
            Api::OpenAi,
            chat,
            "{ \"a\" :\n \"\\u00e9\\n\" }",
            (1 + 3, 0, None),
        ),
        // Scalars count as written.
        (
            Api::OpenAi,
            chat,
            r#"{"t":0.25,"s":true,"x":null}"#,
            (1 + 4 + 1 + 4 + 1 + 4, 0, None),
        ),
        (
            Api::OpenAi,
            chat,
            r#"{"m":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAAAAAAAAAAAAAA"}}]}"#,
            (1, 1, None),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"i":[{"type":"input_image","image_url":"https://x/y.png"}]}"#,
            (1, 1, None),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"i":[{"type":"input_image","file_id":"file-1"}]}"#,
            (1, 0, Some("file_id")),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"previous_response_id":"resp_1","input":"x"}"#,
            (20 + 6 + 5 + 1, 0, Some("previous_response_id")),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"previous_response_id":null}"#,
            (20 + 4, 0, None),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"conversation":"conv_1"}"#,
            (12 + 6, 0, Some("conversation")),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"prompt":{"id":"pmpt_1"}}"#,
            (6 + 2 + 6, 0, Some("prompt")),
        ),
        (
            Api::OpenAi,
            "/v1/completions",
            r#"{"prompt":"abc"}"#,
            (6 + 3, 0, None),
        ),
        (
            Api::OpenAi,
            chat,
            r#"{"c":[{"type":"file","file":{"file_id":"f"}}]}"#,
            (1, 0, Some("file")),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"tools":[{"type":"web_search"}]}"#,
            (5 + 4 + 10, 0, Some("tools")),
        ),
        (
            Api::OpenAi,
            "/v1/responses",
            r#"{"tools":[{"type":"function","name":"f"}]}"#,
            (5 + 4 + 8 + 4 + 1, 0, None),
        ),
        (
            Api::OpenAi,
            "/v1/threads/thread_1/runs",
            r#"{"assistant_id":"a"}"#,
            (12 + 1, 0, Some("thread_id")),
        ),
        // Anthropic images by base64, URL or file; documents.
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"c":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"image","source":{"type":"url","url":"https://x"}}]}"#,
            (1, 2, None),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"c":[{"type":"image","source":{"type":"file","file_id":"f"}}]}"#,
            (1, 0, Some("source.type")),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"c":[{"type":"document","source":{"type":"base64","data":"JVBERi0="}}]}"#,
            (1, 0, Some("document")),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"c":[{"type":"document","source":{"type":"text","data":"hello"}}]}"#,
            (1 + 4 + 8 + 6 + 4 + 4 + 4 + 5, 0, None),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"tools":[{"type":"web_search_20250305","name":"w"}]}"#,
            (5 + 4 + 19 + 4 + 1, 0, Some("tools")),
        ),
        (
            Api::Anthropic,
            "/v1/messages",
            r#"{"mcp_servers":[{"url":"https://m"}]}"#,
            (11 + 3 + 9, 0, Some("mcp_servers")),
        ),
        // Gemini inline data: images by count, PDFs unknown, audio by bytes.
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"p":[{"inline_data":{"mime_type":"image/jpeg","data":"AAAA"}},{"inlineData":{"mimeType":"audio/ogg","data":"BBBB"}}]}"#,
            (1 + 11 + 10 + 8 + 9 + 4 + 4, 1, None),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"p":[{"inlineData":{"mimeType":"application/pdf","data":"JVBE"}}]}"#,
            (1 + 10, 0, Some("inlineData")),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"p":[{"fileData":{"mimeType":"video/mp4","fileUri":"gs://v"}}]}"#,
            (1 + 8, 0, Some("fileData")),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"cachedContent":"cachedContents/1"}"#,
            (13 + 16, 0, Some("cachedContent")),
        ),
        (
            Api::Gemini,
            "/v1beta/models/g:generateContent",
            r#"{"tools":[{"googleSearch":{}}]}"#,
            (5 + 12, 0, Some("tools")),
        ),
    ];
    for (api, path, body, expected) in cases {
        check_input(*api, path, body, *expected);
    }
}

#[test]
fn overhead_is_counted_per_object_and_tool_set() {
    let plain = facts(Api::OpenAi, "/v1/chat/completions", r#"{"a":"b"}"#);
    // One object of one member.
    assert_eq!(plain.input.overhead_tokens, 4 + 1);
    assert_eq!(plain.input.upper_bound(0), 2 + 5 + 64);
    let tools = facts(
        Api::Anthropic,
        "/v1/messages",
        r#"{"tools":[{"type":"bash_20250124","name":"bash"}]}"#,
    );
    // Root (4+1), array (4), tool object (4+2), the tool set, a built-in tool.
    assert_eq!(tools.input.overhead_tokens, 5 + 4 + 6 + 1024 + 1024);
}

#[test]
fn the_bound_is_far_below_one_token_per_body_byte_for_images() {
    // A 100 kB base64 image in a chat request (the old bound: every byte).
    let image = "A".repeat(100_000);
    let body = format!(
        r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":[{{"type":"text","text":"describe"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{image}"}}}}]}}]}}"#
    );
    let facts = facts(Api::OpenAi, "/v1/chat/completions", &body);
    let limits = LimitTable::shipped().unwrap();
    let worst = facts.worst_case(&limits, Api::OpenAi, "gpt-4o");
    assert!(worst.input_tokens < 2_000, "{worst:?}");
    assert!(
        worst.input_estimate_tokens <= worst.input_tokens,
        "{worst:?}"
    );
}

fn check_worst(api: Api, path: &str, body: &str, model: &str, expected: (u64, u64, OutputFrom)) {
    let limits = LimitTable::shipped().unwrap().with_fallback(ModelLimits {
        max_output_tokens: 1_000,
        context_window: 50_000,
        image_tokens: 7,
    });
    let worst = facts(api, path, body).worst_case(&limits, api, model);
    assert_eq!(
        (worst.input_tokens, worst.output_tokens, worst.output_from),
        expected,
        "{model} {body}"
    );
}

#[test]
fn worst_case_output_is_every_copy_at_its_cap() {
    use OutputFrom::*;
    let chat = "/v1/chat/completions";
    // `{"a":"b"}` and similar: text + 5 overhead + 64 per request.
    check_worst(
        Api::OpenAi,
        chat,
        r#"{"max_tokens":100,"n":3}"#,
        "gpt-4o",
        (10 + 1 + 3 + 1 + 4 + 2 + 64, 300, Cap),
    );
    check_worst(
        Api::OpenAi,
        chat,
        r#"{"n":2}"#,
        "gpt-4o",
        (1 + 1 + 5 + 64, 2 * 16_384, ModelLimit),
    );
    // A cap above the model's maximum is clamped to it.
    check_worst(
        Api::OpenAi,
        chat,
        r#"{"max_tokens":1e9}"#,
        "gpt-4o",
        (10 + 3 + 5 + 64, 16_384, Cap),
    );
    check_worst(
        Api::OpenAi,
        chat,
        r#"{"n":2}"#,
        "my-model",
        (1 + 1 + 5 + 64, 2_000, Fallback),
    );
    check_worst(
        Api::OpenAi,
        "/v1/completions",
        r#"{"best_of":20}"#,
        "gpt-4o",
        (7 + 2 + 5 + 64, 320, EndpointDefault),
    );
    check_worst(
        Api::OpenAi,
        "/v1/embeddings",
        r#"{"input":"abcd"}"#,
        "text-embedding-3-small",
        (5 + 4 + 5 + 64, 0, Nothing),
    );
    // A batch of embeddings inputs is not bounded by the model's window,
    // which applies to each input: 64 inputs of 200 bytes bill more than
    // the 8,192-token window of text-embedding-3-small.
    let batch = format!(
        r#"{{"input":[{}]}}"#,
        vec![format!("\"{}\"", "x".repeat(200)); 64].join(",")
    );
    let worst = facts(Api::OpenAi, "/v1/embeddings", &batch).worst_case(
        &LimitTable::shipped().unwrap(),
        Api::OpenAi,
        "text-embedding-3-small",
    );
    assert!(worst.input_tokens >= 64 * 200, "{worst:?}");
    // Unknown input: the context window, flagged.
    check_worst(
        Api::OpenAi,
        "/v1/responses",
        r#"{"previous_response_id":"r","max_output_tokens":9}"#,
        "gpt-5",
        (400_000, 9, Cap),
    );
    check_worst(
        Api::OpenAi,
        "/v1/responses",
        r#"{"previous_response_id":"r"}"#,
        "unknown",
        (50_000, 1_000, Fallback),
    );
    // Images bill the model's per-image bound.
    check_worst(
        Api::Anthropic,
        "/v1/messages",
        r#"{"c":[{"type":"image","source":{"type":"url","url":"u"}}],"max_tokens":5}"#,
        "claude-sonnet-4-5",
        (1 + 10 + 1 + 2_000 + 6 + 4 + 6 + 64, 5, Cap),
    );
    // Gemini: the thinking budget is added to the cap, candidates multiply.
    check_worst(
        Api::Gemini,
        "/v1beta/models/gemini-2.5-pro:generateContent",
        r#"{"generationConfig":{"maxOutputTokens":1000,"candidateCount":2,"thinkingConfig":{"thinkingBudget":500}}}"#,
        "gemini-2.5-pro",
        (
            16 + 15 + 4 + 14 + 1 + 14 + 14 + 3 + 5 + 7 + 5 + 64,
            3_000,
            Cap,
        ),
    );
}

fn check_insert(body: &str, expected: Option<&str>) {
    let got = insert_include_usage(body.as_bytes()).map(|b| String::from_utf8(b).unwrap());
    assert_eq!(got.as_deref(), expected, "{body}");
}

#[test]
fn include_usage_is_inserted_by_editing_bytes() {
    check_insert(
        r#"{"model":"m","stream":true}"#,
        Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
    );
    check_insert(
        r#"{"stream":true,"stream_options":{ }}"#,
        Some(r#"{"stream":true,"stream_options":{"include_usage":true }}"#),
    );
    check_insert(
        r#"{"stream":true,"stream_options":{"x":1}}"#,
        Some(r#"{"stream":true,"stream_options":{"x":1,"include_usage":true}}"#),
    );
    check_insert(
        r#"{"stream":true,"stream_options":{"include_usage" : false }}"#,
        Some(r#"{"stream":true,"stream_options":{"include_usage" : true }}"#),
    );
    check_insert(
        r#"{"stream":true,"stream_options":null}"#,
        Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
    );
    check_insert(
        r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        None,
    );
    check_insert(r#"{"stream":false}"#, None);
    check_insert(r#"{"stream":true,"stream_options":5}"#, None);
    check_insert(r#"{"stream":true,"stream":true}"#, None);
    check_insert(r#"["stream"]"#, None);
}

#[test]
fn include_usage_keeps_every_other_byte() {
    // Unsorted schema properties, a 30-digit integer, odd whitespace,
    // unicode escapes: all must survive untouched.
    let body = "{ \"model\" : \"gpt-4o\",\n\t\"stream\":true ,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"schema\":{\"type\":\"object\",\"properties\":{\"zeta\":{\"type\":\"string\"},\"alpha\":{\"type\":\"integer\"},\"mid\":{\"type\":\"number\"}}}}},\n  \"seed\": 123456789012345678901234567890, \"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\"\"}]   \n}  ";
    let out = insert_include_usage(body.as_bytes()).unwrap();
    let inserted = br#","stream_options":{"include_usage":true}"#;
    let at = out
        .windows(inserted.len())
        .position(|w| w == inserted)
        .unwrap();
    let mut without = out[..at].to_vec();
    without.extend_from_slice(&out[at + inserted.len()..]);
    assert_eq!(without, body.as_bytes());
    let mut want: serde_json::Value = serde_json::from_str(body).unwrap();
    want["stream_options"] = serde_json::json!({"include_usage": true});
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
        want
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A brotli stream of one uncompressed meta-block (RFC 7932 §9.2): there
/// is no pure-Rust brotli encoder among the dependencies.
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    // WBITS=16 (one 0 bit), ISLAST=0, MNIBBLES=4 (00), MLEN-1 in 16 bits,
    // ISUNCOMPRESSED=1, then padding to the byte.
    let header: u32 = (u32::try_from(data.len() - 1).unwrap() << 4) | (1 << 20);
    let mut out = header.to_le_bytes()[..3].to_vec();
    out.extend_from_slice(data);
    // ISLAST=1, ISLASTEMPTY=1.
    out.push(0b11);
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn check_decode(
    encoding: Option<&str>,
    body: &[u8],
    limit: usize,
    expected: Result<&[u8], DecodeError>,
) {
    let got = decode_request_body(encoding, body, limit);
    assert_eq!(
        got.as_deref().map_err(Clone::clone),
        expected,
        "{encoding:?}"
    );
}

#[test]
fn request_bodies_decode_from_every_coding() {
    let json: &[u8] = br#"{"model":"gpt-4o","messages":[]}"#;
    let ok = |b| Ok(b);
    check_decode(None, json, 100, ok(json));
    check_decode(Some("identity"), json, 100, ok(json));
    check_decode(Some("gzip"), &gzip(json), 100, ok(json));
    check_decode(Some("X-GZIP"), &gzip(json), 100, ok(json));
    check_decode(Some("deflate"), &zlib(json), 100, ok(json));
    check_decode(Some("deflate"), &raw_deflate(json), 100, ok(json));
    check_decode(Some("br"), &brotli_stored(json), 100, ok(json));
    check_decode(Some("zstd"), &zstd(json), 100, ok(json));
    // Applied left to right, undone right to left.
    check_decode(Some("gzip, br"), &brotli_stored(&gzip(json)), 100, ok(json));
    check_decode(
        Some("zstd,identity, deflate"),
        &zlib(&zstd(json)),
        100,
        ok(json),
    );
    check_decode(
        Some("compress"),
        json,
        100,
        Err(DecodeError::UnknownEncoding("compress".into())),
    );
    check_decode(
        Some("gzip, bogus"),
        json,
        100,
        Err(DecodeError::UnknownEncoding("bogus".into())),
    );
    assert!(matches!(
        decode_request_body(Some("gzip"), json, 100),
        Err(DecodeError::Corrupt {
            encoding: "gzip",
            ..
        })
    ));
    assert!(matches!(
        decode_request_body(Some("zstd"), json, 100),
        Err(DecodeError::Corrupt {
            encoding: "zstd",
            ..
        })
    ));
    // The limit holds exactly, at every stage of a stack.
    check_decode(Some("gzip"), &gzip(json), json.len(), ok(json));
    check_decode(
        Some("gzip"),
        &gzip(json),
        json.len() - 1,
        Err(DecodeError::TooLarge {
            limit: json.len() - 1,
        }),
    );
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    // 64 MiB of zeros is about 64 kB of gzip, and far less once more.
    let zeros = vec![0u8; 64 << 20];
    let bomb = gzip(&gzip(&zeros));
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    let limit = 1 << 20;
    check_decode(
        Some("gzip, gzip"),
        &bomb,
        limit,
        Err(DecodeError::TooLarge { limit }),
    );
    check_decode(
        Some("zstd"),
        &zstd(&zeros[..4 << 20]),
        limit,
        Err(DecodeError::TooLarge { limit }),
    );
    let message = DecodeError::TooLarge { limit }.to_string();
    assert!(message.contains("more than 1048576 bytes"), "{message}");
}

/// Found by a tester: three ways a request bounded one request while the
/// provider ran another or more.
#[test]
fn prompt_lists_item_references_and_repeated_form_fields() {
    // Legacy completions generate for each prompt of a list.
    let one = facts(
        Api::OpenAi,
        "/v1/completions",
        r#"{"model":"m","prompt":"a","max_tokens":10}"#,
    );
    let many = facts(
        Api::OpenAi,
        "/v1/completions",
        r#"{"model":"m","prompt":["a","b","c"],"max_tokens":10,"n":2}"#,
    );
    let token_list = facts(
        Api::OpenAi,
        "/v1/completions",
        r#"{"model":"m","prompt":[1,2,3],"max_tokens":10}"#,
    );
    assert_eq!((one.copies, many.copies, token_list.copies), (1, 6, 1));
    // A Responses input item by reference is input the request lacks.
    let referenced = facts(
        Api::OpenAi,
        "/v1/responses",
        r#"{"model":"m","input":[{"type":"item_reference","id":"msg_1"}]}"#,
    );
    assert_eq!(referenced.unknown_input, Some("item_reference"));
    // A form naming its model twice is refused, like a JSON body.
    let boundary = "----FormBoundaryTwice";
    let body = multipart(
        boundary,
        &[
            ("model", None, b"whisper-1"),
            ("model", None, b"gpt-4o-transcribe"),
            ("file", Some("a.mp3"), b"ID3"),
        ],
    );
    let refused = inspect(
        Api::OpenAi,
        &Method::POST,
        "/v1/audio/transcriptions",
        Some(&format!("multipart/form-data; boundary={boundary}")),
        &body,
    );
    assert!(
        matches!(refused, Err(RequestError::DuplicateKey { ref key, .. }) if key == "model"),
        "{refused:?}"
    );
}

/// Several `Content-Encoding` lines are one list; a value that is not text
/// is a coding nobody knows, so the body is refused rather than passed on
/// undecoded.
#[test]
fn content_codings_read_every_line() {
    let mut headers = http::HeaderMap::new();
    assert_eq!(content_codings(&headers), None);
    headers.append(
        "content-encoding",
        http::HeaderValue::from_static("identity"),
    );
    assert_eq!(content_codings(&headers), None);
    headers.append("content-encoding", http::HeaderValue::from_static("gzip"));
    headers.append(
        "content-encoding",
        http::HeaderValue::from_static(" br , zstd"),
    );
    assert_eq!(content_codings(&headers).as_deref(), Some("gzip, br, zstd"));
    headers.append(
        "content-encoding",
        http::HeaderValue::from_bytes(b"gz\xffip").unwrap(),
    );
    let codings = content_codings(&headers).unwrap();
    assert!(matches!(
        decode_request_body(Some(&codings), b"x", 100),
        Err(DecodeError::UnknownEncoding(_))
    ));
}
