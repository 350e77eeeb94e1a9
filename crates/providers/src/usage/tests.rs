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
    assert_eq!(
        meter(api, stream, body, body.len(), true),
        expected,
        "whole body"
    );
    for split in 1..body.len() {
        let mut m = Meter::new(api, stream, Some(body.len() as u64));
        m.feed(&body.as_bytes()[..split]);
        m.feed(&body.as_bytes()[split..]);
        assert_eq!(m.finish(true), expected, "split at {split}");
    }
    assert_eq!(meter(api, stream, body, 1, true), expected, "byte by byte");
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
