use super::*;

fn usage(input: u64, cached: u64, cache_write: u64, output: u64, reasoning: u64) -> Usage {
    Usage {
        input_tokens: input,
        cached_input_tokens: cached,
        cache_write_tokens: cache_write,
        output_tokens: output,
        reasoning_tokens: reasoning,
        ..Usage::default()
    }
}

/// Feeds `body` to a meter in chunks of `chunk` bytes.
fn meter(api: Api, stream: bool, body: &str, chunk: usize, complete: bool) -> (Usage, UsageSource) {
    let mut meter = Meter::new(api, stream, None);
    for piece in body.as_bytes().chunks(chunk.max(1)) {
        meter.feed(piece);
    }
    meter.finish(complete)
}

/// Checks a whole body under every split point, so carry-over between
/// chunks is exercised at each byte.
fn check(api: Api, stream: bool, body: &str, expected: (Usage, UsageSource)) {
    check_with(api, stream, 0, true, body, expected);
}

/// Like [`check`], with the request's input estimate and whether the body
/// reached its end.
fn check_with(
    api: Api,
    stream: bool,
    input_estimate: u64,
    complete: bool,
    body: &str,
    expected: (Usage, UsageSource),
) {
    let new = |hint| Meter::new(api, stream, hint).with_input_estimate(input_estimate);
    let mut whole = new(None);
    whole.feed(body.as_bytes());
    assert_eq!(whole.finish(complete), expected, "whole body");
    for split in 1..body.len() {
        let mut m = new(Some(body.len() as u64));
        m.feed(&body.as_bytes()[..split]);
        m.feed(&body.as_bytes()[split..]);
        assert_eq!(m.finish(complete), expected, "split at {split}");
    }
    let mut bytes = new(None);
    for byte in body.as_bytes().chunks(1) {
        bytes.feed(byte);
    }
    assert_eq!(bytes.finish(complete), expected, "byte by byte");
}

const OPENAI_CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":30,"total_tokens":150,"prompt_tokens_details":{"cached_tokens":100},"completion_tokens_details":{"reasoning_tokens":12}}}"#;
const OPENAI_RESPONSES: &str = r#"{"id":"resp_1","object":"response","status":"completed","output":[],"usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":5},"total_tokens":70}}"#;
const OPENAI_EMBEDDINGS: &str = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
const ANTHROPIC_MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":40,"cache_creation_input_tokens":200,"cache_read_input_tokens":1000,"output_tokens":15}}"#;
const GEMINI_RESPONSE: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":90,"cachedContentTokenCount":60,"candidatesTokenCount":25,"thoughtsTokenCount":7,"totalTokenCount":122}}"#;

#[test]
fn json_bodies() {
    check(
        Api::OpenAi,
        false,
        OPENAI_CHAT,
        (usage(20, 100, 0, 30, 12), UsageSource::Reported),
    );
    check(
        Api::OpenAi,
        false,
        OPENAI_RESPONSES,
        (usage(40, 10, 0, 20, 5), UsageSource::Reported),
    );
    check(
        Api::OpenAi,
        false,
        OPENAI_EMBEDDINGS,
        (usage(8, 0, 0, 0, 0), UsageSource::Reported),
    );
    check(
        Api::Anthropic,
        false,
        ANTHROPIC_MESSAGE,
        (usage(40, 1000, 200, 15, 0), UsageSource::Reported),
    );
    check(
        Api::Gemini,
        false,
        GEMINI_RESPONSE,
        (usage(30, 60, 0, 32, 7), UsageSource::Reported),
    );
    check(
        Api::OpenAi,
        false,
        r#"{"object":"list","data":[]}"#,
        (Usage::default(), UsageSource::None),
    );
    check(
        Api::OpenAi,
        false,
        "not json",
        (Usage::default(), UsageSource::None),
    );
}

#[test]
fn large_json_bodies_are_metered_from_their_tail() {
    let data: Vec<String> = (0..100_000)
        .map(|i| format!(r#"{{"object":"embedding","index":{i},"embedding":[0.1,0.2,0.3,0.4]}}"#))
        .collect();
    let body = format!(
        r#"{{"object":"list","data":[{}],"model":"m","usage":{{"prompt_tokens":777,"total_tokens":777}}}}"#,
        data.join(",")
    );
    assert!(body.len() > MAX_JSON_COPY);
    assert_eq!(
        meter(Api::OpenAi, false, &body, 16 * 1024, true),
        (usage(777, 0, 0, 0, 0), UsageSource::Reported)
    );
}

const OPENAI_STREAM: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" world\"}}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

const OPENAI_RESPONSES_STREAM: &str = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"status\":\"in_progress\",\"usage\":null}}\n\n\
event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"status\":\"completed\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens_details\":{\"reasoning_tokens\":0}}}}\n\n";

const ANTHROPIC_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\": \"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there, how are you\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

const GEMINI_STREAM: &str = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}]}}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":1,\"totalTokenCount\":8}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":2,\"totalTokenCount\":9}}\r\n\r\n";

#[test]
fn complete_streams_use_the_reported_usage() {
    check(
        Api::OpenAi,
        true,
        OPENAI_STREAM,
        (usage(9, 0, 0, 2, 0), UsageSource::Reported),
    );
    check(
        Api::OpenAi,
        true,
        OPENAI_RESPONSES_STREAM,
        (usage(4, 0, 0, 1, 0), UsageSource::Reported),
    );
    check(
        Api::Anthropic,
        true,
        ANTHROPIC_STREAM,
        (usage(25, 5, 0, 12, 0), UsageSource::Reported),
    );
    check(
        Api::Gemini,
        true,
        GEMINI_STREAM,
        (usage(7, 0, 0, 2, 0), UsageSource::Reported),
    );
}

#[test]
fn streams_without_a_usage_block_are_estimated_never_free() {
    // An OpenAI stream whose client did not ask for usage: 11 characters.
    let without_usage: String = OPENAI_STREAM
        .lines()
        .filter(|line| !line.contains("prompt_tokens"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        meter(Api::OpenAi, true, &without_usage, 7, true),
        (usage(0, 0, 0, 3, 0), UsageSource::Estimated)
    );
}

#[test]
fn cut_streams_bill_what_was_delivered() {
    // Anthropic cut after the text delta, before message_delta: input from
    // message_start, output estimated from 24 delivered characters.
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
    assert_eq!(
        meter(Api::Anthropic, true, cut, 13, false),
        (usage(25, 5, 0, 6, 0), UsageSource::Estimated)
    );
    // OpenAI cut after two deltas: no usage block yet, output estimated.
    let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("\"usage\":{").unwrap() - 30];
    assert_eq!(
        meter(Api::OpenAi, true, cut, 5, false),
        (usage(0, 0, 0, 3, 0), UsageSource::Estimated)
    );
    // Cut before anything was generated: nothing to bill.
    assert_eq!(
        meter(
            Api::OpenAi,
            true,
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
            5,
            false
        ),
        (Usage::default(), UsageSource::None)
    );
}

#[test]
fn garbage_never_panics() {
    for body in [
        "data: {\n\n",
        "data:\n",
        "\n\n\n",
        "data: [DONE]",
        "event: x\ndata: 5\n\n",
        "data: {\"usage\": 3}\n\n",
    ] {
        for api in [Api::OpenAi, Api::Anthropic, Api::Gemini] {
            let _ = meter(api, true, body, 2, true);
            let _ = meter(api, false, body, 2, true);
        }
    }
}

#[test]
fn nulls_where_lists_or_objects_belong_do_not_lose_usage() {
    // Seen from OpenAI-compatible servers and content-filter chunks.
    let stream = "data: {\"choices\":null,\"usage\":null}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":null}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
    assert_eq!(
        meter(Api::OpenAi, true, stream, 9, true),
        (usage(3, 0, 0, 2, 0), UsageSource::Reported)
    );
    let gemini = "data: {\"candidates\":[{\"content\":null}],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":1}}\r\n\r\n";
    assert_eq!(
        meter(Api::Gemini, true, gemini, 5, true),
        (usage(4, 0, 0, 1, 0), UsageSource::Reported)
    );
}

// Fault 1: every usage field may be null, absent or a float.

#[test]
fn anthropic_message_delta_with_null_input_fields_records_its_output() {
    // Measured: this `message_delta` failed to parse and 1 output token was
    // recorded instead of 21.
    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":201,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":null,\"cache_creation_input_tokens\":null,\"cache_read_input_tokens\":null,\"output_tokens\":21}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    check(
        Api::Anthropic,
        true,
        stream,
        (usage(201, 0, 0, 21, 0), UsageSource::Reported),
    );
}

#[test]
fn null_absent_and_float_counts_in_every_dialect() {
    let cases: &[(Api, bool, &str, Usage)] = &[
        // vLLM: floats and null details.
        (
            Api::OpenAi,
            false,
            r#"{"choices":[],"usage":{"prompt_tokens":21.0,"completion_tokens":5.0,"total_tokens":26.0,"prompt_tokens_details":null,"completion_tokens_details":null}}"#,
            usage(21, 0, 0, 5, 0),
        ),
        // LiteLLM: null counts inside details.
        (
            Api::OpenAi,
            false,
            r#"{"usage":{"prompt_tokens":30,"completion_tokens":null,"prompt_tokens_details":{"cached_tokens":null},"completion_tokens_details":{"reasoning_tokens":null}}}"#,
            usage(30, 0, 0, 0, 0),
        ),
        // Ollama: details absent.
        (
            Api::OpenAi,
            false,
            r#"{"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
            usage(7, 0, 0, 3, 0),
        ),
        // Responses with null details.
        (
            Api::OpenAi,
            false,
            r#"{"object":"response","usage":{"input_tokens":12,"input_tokens_details":null,"output_tokens":4,"output_tokens_details":null}}"#,
            usage(12, 0, 0, 4, 0),
        ),
        (
            Api::Anthropic,
            false,
            r#"{"type":"message","usage":{"input_tokens":9,"cache_creation_input_tokens":null,"cache_read_input_tokens":null,"cache_creation":null,"output_tokens":2.0,"service_tier":null}}"#,
            usage(9, 0, 0, 2, 0),
        ),
        (
            Api::Gemini,
            false,
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":11,"cachedContentTokenCount":null,"candidatesTokenCount":3.0}}"#,
            usage(11, 0, 0, 3, 0),
        ),
        // Absurd counts saturate, never wrap.
        (
            Api::Gemini,
            false,
            r#"{"usageMetadata":{"promptTokenCount":1e30,"toolUsePromptTokenCount":5,"candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":2}}"#,
            usage(u64::MAX, 0, 0, u64::MAX, 2),
        ),
        // Streams: vLLM's last chunk, a Responses stream with null
        // details, Groq's `x_groq.usage`.
        (
            Api::OpenAi,
            true,
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5.0,\"completion_tokens\":3,\"total_tokens\":8,\"prompt_tokens_details\":null,\"completion_tokens_details\":null}}\n\n\
data: [DONE]\n\n",
            usage(5, 0, 0, 3, 0),
        ),
        (
            Api::OpenAi,
            true,
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":6,\"input_tokens_details\":null,\"output_tokens\":2,\"output_tokens_details\":{\"reasoning_tokens\":null}}}}\n\n",
            usage(6, 0, 0, 2, 0),
        ),
        (
            Api::OpenAi,
            true,
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"x_groq\":{\"id\":\"req_1\",\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":1}}}\n\n\
data: [DONE]\n\n",
            usage(11, 0, 0, 1, 0),
        ),
        // A chunk repeating the count as null never erases it.
        (
            Api::OpenAi,
            true,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":null,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            usage(5, 0, 0, 3, 0),
        ),
        (
            Api::Gemini,
            true,
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]}}],\"usageMetadata\":{\"promptTokenCount\":8,\"candidatesTokenCount\":1}}\r\n\r\n\
data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":null,\"candidatesTokenCount\":2}}\r\n\r\n",
            usage(8, 0, 0, 2, 0),
        ),
    ];
    for (api, stream, body, expected) in cases {
        check(*api, *stream, body, (*expected, UsageSource::Reported));
    }
}

// Fault 3: a stream that ended normally is Reported, whatever `complete` says.

#[test]
fn streams_that_reached_their_terminal_event_are_reported_even_if_cut_after() {
    // Measured: the Python SDK closes the connection right after `[DONE]`,
    // and 400 characters with 16 reported tokens were billed as 100.
    let text = "x".repeat(400);
    let python_sdk = format!(
        "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}],\"usage\":null}}\n\n\
data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":16}}}}\n\n\
data: [DONE]\n\n"
    );
    let cases: &[(Api, &str, Usage)] = &[
        (Api::OpenAi, &python_sdk, usage(10, 0, 0, 16, 0)),
        (Api::OpenAi, OPENAI_STREAM, usage(9, 0, 0, 2, 0)),
        (Api::OpenAi, OPENAI_RESPONSES_STREAM, usage(4, 0, 0, 1, 0)),
        (Api::Anthropic, ANTHROPIC_STREAM, usage(25, 5, 0, 12, 0)),
        (Api::Gemini, GEMINI_STREAM, usage(7, 0, 0, 2, 0)),
    ];
    for (api, body, expected) in cases {
        check_with(
            *api,
            true,
            1000,
            false,
            body,
            (*expected, UsageSource::Reported),
        );
    }
    // `response.incomplete` and `response.failed` end a Responses stream too.
    for kind in ["response.incomplete", "response.failed"] {
        let body = OPENAI_RESPONSES_STREAM.replace("response.completed", kind);
        check_with(
            Api::OpenAi,
            true,
            1000,
            false,
            &body,
            (usage(4, 0, 0, 1, 0), UsageSource::Reported),
        );
    }
}

#[test]
fn streams_cut_before_their_terminal_event_are_estimated() {
    // The usage arrived but not `[DONE]` / `message_stop` / `finishReason`.
    let openai = &OPENAI_STREAM[..OPENAI_STREAM.find("data: [DONE]").unwrap()];
    let anthropic = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_stop").unwrap()];
    let gemini = &GEMINI_STREAM[..GEMINI_STREAM.find("\r\n\r\n").unwrap() + 4];
    let cases: &[(Api, &str, Usage)] = &[
        (Api::OpenAi, openai, usage(9, 0, 0, 3, 0)),
        (Api::Anthropic, anthropic, usage(25, 5, 0, 12, 0)),
        (Api::Gemini, gemini, usage(7, 0, 0, 1, 0)),
    ];
    for (api, body, expected) in cases {
        check_with(
            *api,
            true,
            1000,
            false,
            body,
            (*expected, UsageSource::Estimated),
        );
    }
}

// Faults 5 and 6: every kind of delivered output, and the input estimate.

#[test]
fn cut_streams_count_every_kind_of_delivered_output() {
    // Each stream delivers 40 bytes of output (10 tokens) and is cut before
    // any usage; the input is the request's estimate of 300 tokens.
    let forty = "0123456789012345678901234567890123456789";
    let twenty = &forty[..20];
    let openai: Vec<String> = vec![
        // Tool-call arguments (and no text at all): measured as `none`, $0.
        format!(
            "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"\",\"arguments\":\"{twenty}\"}}}}]}}}}]}}\n\n\
data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{twenty}\"}}}}]}}}}]}}\n\n"
        ),
        format!(
            "data: {{\"choices\":[{{\"delta\":{{\"function_call\":{{\"arguments\":\"{forty}\"}}}}}}]}}\n\n"
        ),
        format!(
            "data: {{\"choices\":[{{\"delta\":{{\"reasoning_content\":\"{twenty}\",\"content\":null}}}}]}}\n\ndata: {{\"choices\":[{{\"delta\":{{\"reasoning\":\"{twenty}\"}}}}]}}\n\n"
        ),
        format!("data: {{\"choices\":[{{\"delta\":{{\"refusal\":\"{forty}\"}}}}]}}\n\n"),
        format!("data: {{\"choices\":[{{\"text\":\"{forty}\",\"index\":0}}]}}\n\n"),
        format!(
            "event: response.function_call_arguments.delta\ndata: {{\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{twenty}\"}}\n\n\
event: response.reasoning_summary_text.delta\ndata: {{\"type\":\"response.reasoning_summary_text.delta\",\"delta\":\"{twenty}\"}}\n\n"
        ),
        format!(
            "event: response.refusal.delta\ndata: {{\"type\":\"response.refusal.delta\",\"delta\":\"{forty}\"}}\n\n"
        ),
    ];
    let anthropic = [
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"{forty}\"}}}}\n\n"
        ),
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\"{forty}\"}}}}\n\n"
        ),
    ];
    let gemini = [
        // `args` serialized is `{"q":"..."}`: 2 braces + 1 + 33 + 4 = 40.
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"functionCall\":{{\"name\":\"\",\"args\":{{\"q\":\"{}\"}}}}}}]}}}}]}}\r\n\r\n",
            &forty[..33]
        ),
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{twenty}\",\"thought\":true}},{{\"text\":\"{twenty}\"}}]}}}}]}}\r\n\r\n"
        ),
        format!(
            "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"executableCode\":{{\"language\":\"PYTHON\",\"code\":\"{twenty}\"}}}},{{\"codeExecutionResult\":{{\"outcome\":\"OUTCOME_OK\",\"output\":\"{twenty}\"}}}}]}}}}]}}\r\n\r\n"
        ),
    ];
    let expected = (usage(300, 0, 0, 10, 0), UsageSource::Estimated);
    for body in &openai {
        check_with(Api::OpenAi, true, 300, false, body, expected);
    }
    for body in &anthropic {
        check_with(Api::Anthropic, true, 300, false, body, expected);
    }
    for body in &gemini {
        check_with(Api::Gemini, true, 300, false, body, expected);
    }
}

#[test]
fn the_input_estimate_fills_only_input_the_provider_did_not_report() {
    // Anthropic reported its input in `message_start`: the estimate is not
    // used even though the stream was cut.
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
    check_with(
        Api::Anthropic,
        true,
        999,
        false,
        cut,
        (usage(25, 5, 0, 6, 0), UsageSource::Estimated),
    );
    // Cut before anything was generated: the prompt was still processed.
    check_with(
        Api::OpenAi,
        true,
        40,
        false,
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        (usage(40, 0, 0, 0, 0), UsageSource::Estimated),
    );
    // A reported stream ignores it.
    check_with(
        Api::OpenAi,
        true,
        999,
        true,
        OPENAI_STREAM,
        (usage(9, 0, 0, 2, 0), UsageSource::Reported),
    );
}

// Fault 2: one-hour cache writes and the service tier.

#[test]
fn cache_lifetimes_and_service_tiers() {
    let tiered = |tier, u: Usage| Usage {
        service_tier: tier,
        ..u
    };
    let one_hour = |u: Usage, tokens| Usage {
        cache_write_1h_tokens: tokens,
        ..u
    };
    let cases: &[(Api, bool, &str, Usage)] = &[
        (
            Api::Anthropic,
            false,
            r#"{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":300,"cache_creation":{"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200},"cache_read_input_tokens":0,"output_tokens":5}}"#,
            one_hour(usage(10, 0, 100, 5, 0), 200),
        ),
        // Only the total: all five-minute writes.
        (
            Api::Anthropic,
            false,
            r#"{"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":300,"output_tokens":5}}"#,
            usage(10, 0, 300, 5, 0),
        ),
        // The split without the five-minute part: the rest of the total.
        (
            Api::Anthropic,
            false,
            r#"{"usage":{"input_tokens":10,"cache_creation_input_tokens":300,"cache_creation":{"ephemeral_1h_input_tokens":200},"output_tokens":5}}"#,
            one_hour(usage(10, 0, 100, 5, 0), 200),
        ),
        (
            Api::Anthropic,
            true,
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":50,\"cache_creation\":{\"ephemeral_5m_input_tokens\":0,\"ephemeral_1h_input_tokens\":50},\"output_tokens\":1,\"service_tier\":\"priority\"}}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
            tiered(ServiceTier::Priority, one_hour(usage(3, 0, 0, 4, 0), 50)),
        ),
        (
            Api::Anthropic,
            false,
            r#"{"usage":{"input_tokens":1,"output_tokens":1,"service_tier":"batch"}}"#,
            tiered(ServiceTier::Batch, usage(1, 0, 0, 1, 0)),
        ),
        (
            Api::OpenAi,
            false,
            r#"{"object":"chat.completion","service_tier":"flex","usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            tiered(ServiceTier::Flex, usage(4, 0, 0, 1, 0)),
        ),
        (
            Api::OpenAi,
            false,
            r#"{"object":"chat.completion","service_tier":"default","usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            usage(4, 0, 0, 1, 0),
        ),
        (
            Api::OpenAi,
            false,
            r#"{"object":"chat.completion","service_tier":"scale","usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            usage(4, 0, 0, 1, 0),
        ),
        (
            Api::OpenAi,
            true,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"service_tier\":\"priority\",\"usage\":null}\n\n\
data: {\"choices\":[],\"service_tier\":\"priority\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n",
            tiered(ServiceTier::Priority, usage(4, 0, 0, 1, 0)),
        ),
        // Responses: `response.created` echoes the requested `auto`, the
        // last event says which tier served it.
        (
            Api::OpenAi,
            true,
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"service_tier\":\"auto\",\"usage\":null}}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"service_tier\":\"flex\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1}}}\n\n",
            tiered(ServiceTier::Flex, usage(4, 0, 0, 1, 0)),
        ),
    ];
    for (api, stream, body, expected) in cases {
        check(*api, *stream, body, (*expected, UsageSource::Reported));
    }
}

// Fault 4: Gemini's `streamGenerateContent` without `?alt=sse`, one JSON
// array streamed over time (measured: 0 tokens).

const GEMINI_ARRAY: &str = "[{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"He said \\\"}]\\\" and\"}],\"role\": \"model\"}}],\"usageMetadata\": {\"promptTokenCount\": 12,\"totalTokenCount\": 12}}\r\n,{\"candidates\": [{\"content\": {\"parts\": [{\"text\": \" {left}\"}],\"role\": \"model\"},\"finishReason\": \"STOP\"}],\"usageMetadata\": {\"promptTokenCount\": 12,\"candidatesTokenCount\": 9,\"thoughtsTokenCount\": 3,\"totalTokenCount\": 24}}\r\n]";

#[test]
fn gemini_json_arrays_are_metered_element_by_element() {
    let expected = (usage(12, 0, 0, 12, 3), UsageSource::Reported);
    check(Api::Gemini, false, GEMINI_ARRAY, expected);
    // The last element arrived: reported even if the connection was then
    // cut.
    check_with(Api::Gemini, false, 500, false, GEMINI_ARRAY, expected);
    // Cut inside the second element: input from the first, output from the
    // 16 delivered characters (`He said "}]" and`).
    let cut = &GEMINI_ARRAY[..GEMINI_ARRAY.find("{left}").unwrap()];
    check_with(
        Api::Gemini,
        false,
        500,
        false,
        cut,
        (usage(12, 0, 0, 4, 0), UsageSource::Estimated),
    );
    // Leading blanks, an empty array.
    check(
        Api::Gemini,
        false,
        "\n [\r\n]",
        (Usage::default(), UsageSource::None),
    );
}

#[test]
fn an_oversized_array_element_is_skipped_and_the_next_metered() {
    let big = format!(
        "[{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}}}}]}},{{\"candidates\":[{{\"finishReason\":\"STOP\"}}],\"usageMetadata\":{{\"promptTokenCount\":2,\"candidatesTokenCount\":1}}}}]",
        "x".repeat(2 * MAX_EVENT)
    );
    let mut meter = Meter::new(Api::Gemini, false, None);
    for piece in big.as_bytes().chunks(64 * 1024) {
        meter.feed(piece);
        let Mode::Array(splitter) = &meter.mode else {
            panic!("a JSON array is split");
        };
        assert!(splitter.element.len() <= MAX_EVENT, "memory is bounded");
    }
    assert_eq!(
        meter.finish(false),
        (usage(2, 0, 0, 1, 0), UsageSource::Reported)
    );
}

// Fault 7: usage in other shapes, and bodies with no usage at all.

#[test]
fn images_transcriptions_and_bodies_without_usage() {
    let images = |n, size, quality, u: Usage| Usage {
        images: n,
        image_variant: ImageVariant { size, quality },
        ..u
    };
    let audio = |ms, u: Usage| Usage { audio_ms: ms, ..u };
    let cases: &[(&str, (Usage, UsageSource))] = &[
        // DALL-E: the images, no tokens.
        (
            r#"{"created":1,"data":[{"url":"https://example.com/a.png","revised_prompt":"a"},{"url":"https://example.com/b.png"}]}"#,
            (
                images(
                    2,
                    ImageSize::Unspecified,
                    ImageQuality::Unspecified,
                    Usage::default(),
                ),
                UsageSource::Reported,
            ),
        ),
        // GPT Image: images, what they were, and tokens.
        (
            r#"{"created":1,"background":"opaque","data":[{"b64_json":"iVBORw0KGgo="}],"output_format":"png","quality":"high","size":"1536x1024","usage":{"input_tokens":50,"input_tokens_details":{"image_tokens":40,"text_tokens":10},"output_tokens":6208,"total_tokens":6258}}"#,
            (
                images(
                    1,
                    ImageSize::Wide1536,
                    ImageQuality::High,
                    usage(50, 0, 0, 6208, 0),
                ),
                UsageSource::Reported,
            ),
        ),
        // Whisper `verbose_json`: seconds of audio, rounded up to the ms.
        (
            r#"{"task":"transcribe","language":"english","duration":8.4701,"text":"Hi","segments":[]}"#,
            (audio(8471, Usage::default()), UsageSource::Reported),
        ),
        // `json` with duration usage.
        (
            r#"{"text":"Hi","usage":{"type":"duration","seconds":9}}"#,
            (audio(9000, Usage::default()), UsageSource::Reported),
        ),
        // gpt-4o-transcribe: tokens.
        (
            r#"{"text":"Hi","usage":{"type":"tokens","input_tokens":14,"input_token_details":{"text_tokens":0,"audio_tokens":14},"output_tokens":45,"total_tokens":59}}"#,
            (usage(14, 0, 0, 45, 0), UsageSource::Reported),
        ),
        // Embeddings data items are not images.
        (
            OPENAI_EMBEDDINGS,
            (usage(8, 0, 0, 0, 0), UsageSource::Reported),
        ),
        // Moderation and files report nothing.
        (
            r#"{"id":"modr-1","model":"omni-moderation-latest","results":[{"flagged":false,"categories":{},"category_scores":{}}]}"#,
            (Usage::default(), UsageSource::None),
        ),
        (
            r#"{"object":"list","data":[{"id":"file-1","object":"file","bytes":120,"filename":"a.jsonl","purpose":"batch"}]}"#,
            (Usage::default(), UsageSource::None),
        ),
        // A transcription as plain text.
        ("Hello there.\n", (Usage::default(), UsageSource::None)),
    ];
    for (body, expected) in cases {
        check(Api::OpenAi, false, body, *expected);
    }
}

#[test]
fn binary_bodies_are_not_copied() {
    // An MP3 frame header, then audio: the first byte says it is not JSON.
    let mut meter = Meter::new(Api::OpenAi, false, Some(10 * 1024 * 1024));
    meter.feed(&[0xff, 0xfb, 0x90, 0x64]);
    meter.feed(&vec![0x55; 1024 * 1024]);
    assert!(matches!(meter.mode, Mode::Opaque));
    assert_eq!(meter.finish(true), (Usage::default(), UsageSource::None));
    // A cut one still bills the request's input estimate.
    let mut meter = Meter::new(Api::OpenAi, false, None).with_input_estimate(30);
    meter.feed(b"ID3\x04");
    assert_eq!(
        meter.finish(false),
        (usage(30, 0, 0, 0, 0), UsageSource::Estimated)
    );
}

#[test]
fn members_of_an_unexpected_type_never_lose_the_usage() {
    let cases: &[(Api, &str, Usage)] = &[
        (
            Api::OpenAi,
            r#"{"type":3,"service_tier":{"name":"flex"},"data":"x","size":1024,"quality":null,"duration":"n/a","usage":{"prompt_tokens":"6","completion_tokens":true}}"#,
            usage(6, 0, 0, 0, 0),
        ),
        (
            Api::OpenAi,
            r#"{"data":[[0.1,0.2],"s",null,{"url":null}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#,
            usage(2, 0, 0, 1, 0),
        ),
        (
            Api::Anthropic,
            r#"{"type":["message"],"usage":{"input_tokens":4,"output_tokens":-1,"service_tier":7}}"#,
            usage(4, 0, 0, 0, 0),
        ),
    ];
    for (api, body, expected) in cases {
        check(*api, false, body, (*expected, UsageSource::Reported));
    }
}

#[test]
fn large_image_bodies_count_every_image() {
    // Four images of about 1.5 MB of base64 each: the body outgrows the
    // copy, and its head, where the images are, is dropped.
    let image = "A".repeat(1_500_000);
    let mut items: Vec<String> = (0..4)
        .map(|_| format!(r#"{{"b64_json": "{image}", "revised_prompt": "a \"url\": x"}}"#))
        .collect();
    // And a small one near the end, in the part that is kept.
    items.push(r#"{"b64_json": "AAAA"}"#.to_owned());
    let body = format!(
        r#"{{"created":1,"data":[{}],"quality": "medium","size":"1024x1024","usage":{{"input_tokens":5,"output_tokens":7}}}}"#,
        items.join(",")
    );
    assert!(body.len() > MAX_JSON_COPY);
    let expected = Usage {
        images: 5,
        image_variant: ImageVariant {
            size: ImageSize::S1024,
            quality: ImageQuality::Medium,
        },
        ..usage(5, 0, 0, 7, 0)
    };
    for chunk in [16 * 1024, 1_000_003] {
        assert_eq!(
            meter(Api::OpenAi, false, &body, chunk, true),
            (expected, UsageSource::Reported),
            "chunks of {chunk}"
        );
    }
}

#[test]
fn image_keys_are_counted_once_by_where_they_start() {
    let body =
        br#"[{"b64_json": "QQ"}, {"b64_json" : "QQ"}, {"url":"u", "x": "\"url\": 1", "y": "url"}]"#;
    let second = body
        .windows(10)
        .rposition(|w| w == b"\"b64_json\"")
        .unwrap();
    // The first call counts keys before `second`; the second the rest.
    let mut keys = ImageKeys::default();
    keys.count(body, second);
    assert_eq!((keys.b64_json, keys.url), (1, 0));
    keys.count(&body[second..], body.len() - second);
    assert_eq!((keys.b64_json, keys.url), (2, 1));
    assert_eq!(keys.images(), 2);
}

#[test]
fn events_too_long_to_keep_are_read_from_their_ends() {
    // An image generated through the Responses API arrives inline in
    // `response.completed`, and Gemini's inline images in its chunks: events
    // longer than the meter keeps. Their usage comes last.
    let image = "A".repeat(3 * MAX_EVENT);
    let responses = format!(
        "event: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}}\n\n\
event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"output\":[{{\"type\":\"image_generation_call\",\"result\":\"{image}\"}}],\"usage\":{{\"input_tokens\":30,\"output_tokens\":1500}}}}}}\n\n"
    );
    let gemini_chunk = format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"inlineData\":{{\"mimeType\":\"image/png\",\"data\":\"{image}\"}}}}]}},\"finishReason\":\"STOP\"}}],\"usageMetadata\":{{\"promptTokenCount\":8,\"candidatesTokenCount\":1290}}}}"
    );
    let gemini_sse = format!("data: {gemini_chunk}\r\n\r\n");
    let gemini_array = format!("[{gemini_chunk}]");
    let streamed_image = format!(
        "event: image_generation.partial_image\ndata: {{\"type\":\"image_generation.partial_image\",\"b64_json\":\"QUFB\",\"partial_image_index\":0}}\n\n\
event: image_generation.completed\ndata: {{\"type\":\"image_generation.completed\",\"b64_json\":\"{image}\",\"quality\":\"high\",\"size\":\"1024x1024\",\"usage\":{{\"input_tokens\":20,\"input_tokens_details\":{{\"text_tokens\":20,\"image_tokens\":0}},\"output_tokens\":4160}}}}\n\n"
    );
    let one_image = Usage {
        images: 1,
        image_variant: ImageVariant {
            size: ImageSize::S1024,
            quality: ImageQuality::High,
        },
        ..usage(20, 0, 0, 4160, 0)
    };
    let cases: &[(Api, bool, &str, Usage)] = &[
        (Api::OpenAi, true, &responses, usage(30, 0, 0, 1500, 0)),
        (Api::OpenAi, true, &streamed_image, one_image),
        (Api::Gemini, true, &gemini_sse, usage(8, 0, 0, 1290, 0)),
        (Api::Gemini, false, &gemini_array, usage(8, 0, 0, 1290, 0)),
    ];
    for (api, stream, body, expected) in cases {
        for chunk in [64 * 1024, 1_000_003] {
            let mut meter = Meter::new(*api, *stream, None);
            for piece in body.as_bytes().chunks(chunk) {
                meter.feed(piece);
                let (held, long) = match &meter.mode {
                    Mode::Sse { partial, long } => (partial.len(), long.as_ref()),
                    Mode::Array(splitter) => (splitter.element.len(), splitter.long.as_ref()),
                    _ => (0, None),
                };
                assert!(held <= MAX_EVENT + chunk, "memory is bounded");
                if let Some(long) = long {
                    assert!(long.tail.len() <= 2 * split::TAIL, "memory is bounded");
                }
            }
            // Cut right after the last event: its terminal type or
            // `finishReason` was read from its ends.
            assert_eq!(
                meter.finish(false),
                (*expected, UsageSource::Reported),
                "{api:?} {stream} chunks of {chunk}"
            );
        }
    }
}

#[test]
fn bodies_are_told_apart_by_their_first_bytes() {
    // An SSE stream labelled `application/json` is still read as one.
    check(
        Api::OpenAi,
        false,
        OPENAI_STREAM,
        (usage(9, 0, 0, 2, 0), UsageSource::Reported),
    );
    check(
        Api::Anthropic,
        false,
        &format!(": ping\n\n{ANTHROPIC_STREAM}"),
        (usage(25, 5, 0, 12, 0), UsageSource::Reported),
    );
    // Blank lines before a JSON body.
    check(
        Api::OpenAi,
        false,
        &format!("\r\n \n{OPENAI_CHAT}"),
        (usage(20, 100, 0, 30, 12), UsageSource::Reported),
    );
    // Text that starts like a field name is not a stream.
    check(
        Api::OpenAi,
        false,
        "dat a: {\"usage\":{\"prompt_tokens\":1}}\n\n",
        (Usage::default(), UsageSource::None),
    );
}
