use super::*;

/// A stream as the provider sends it when usage was requested, and as the
/// client must see it when it was not.
const WITH_USAGE: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n\
data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n\
data: [DONE]\n\n";
const WITHOUT_USAGE: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";

fn strip(input: &str, split: &[usize]) -> String {
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &end in split.iter().chain(std::iter::once(&input.len())) {
        out.extend_from_slice(&stripper.feed(&input.as_bytes()[start..end]));
        start = end;
    }
    out.extend_from_slice(&stripper.finish());
    String::from_utf8(out).unwrap()
}

#[test]
fn the_client_sees_exactly_the_stream_it_asked_for_at_any_split() {
    assert_eq!(strip(WITH_USAGE, &[]), WITHOUT_USAGE);
    for at in 1..WITH_USAGE.len() {
        assert_eq!(strip(WITH_USAGE, &[at]), WITHOUT_USAGE, "split at {at}");
    }
    let every_byte: Vec<usize> = (1..WITH_USAGE.len()).collect();
    assert_eq!(strip(WITH_USAGE, &every_byte), WITHOUT_USAGE);
}

#[test]
fn complete_events_pass_on_at_once() {
    let mut stripper = UsageStripper::new();
    let first_event_end = WITH_USAGE.find("\n\n").unwrap() + 2;
    let out = stripper.feed(&WITH_USAGE.as_bytes()[..first_event_end + 5]);
    assert_eq!(
        out,
        WITHOUT_USAGE.as_bytes()[..WITHOUT_USAGE.find("\n\n").unwrap() + 2]
    );
}

#[test]
fn requests_ask_for_usage_only_when_needed() {
    let cases: &[(&str, Option<&str>)] = &[
        (
            r#"{"model":"m","stream":true}"#,
            Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        ),
        (
            r#"{"model":"m","stream":true,"stream_options":{}}"#,
            Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        ),
        (
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
            Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        ),
        (
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            None,
        ),
        (r#"{"model":"m","stream":false}"#, None),
        (r#"{"model":"m"}"#, None),
        (
            r#"{"model":"m", "stream" : true}"#,
            Some(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#),
        ),
        (r#"[1,2]"#, None),
        (r#"{"stream":true,"stream_options":5}"#, None),
    ];
    for (body, expected) in cases {
        let got = request_usage_in_stream(body.as_bytes())
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap());
        let want = expected.map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap());
        assert_eq!(got, want, "{body}");
    }
}

/// Strips `input` whole, at every split point and byte by byte, and checks
/// the client sees `expected` each time.
fn check(input: &str, expected: &str) {
    assert_eq!(strip(input, &[]), expected, "whole");
    for at in 1..input.len() {
        assert_eq!(strip(input, &[at]), expected, "split at {at}");
    }
    let every_byte: Vec<usize> = (1..input.len()).collect();
    assert_eq!(strip(input, &every_byte), expected, "byte by byte");
}

#[test]
fn python_formatted_json_is_stripped_at_any_split() {
    // `json.dumps` writes `", "` and `": "` (a Python OpenAI-compatible
    // server): measured, the client got `"usage": null` in every chunk and
    // a `choices: []` chunk that made the official SDK raise IndexError.
    let with_usage = "data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hi\"}, \"finish_reason\": null}], \"usage\": null}\n\n\
data: {\"id\": \"c\", \"choices\": [], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 1, \"total_tokens\": 4}}\n\n\
data: [DONE]\n\n";
    let without = "data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hi\"}, \"finish_reason\": null}]}\n\n\
data: [DONE]\n\n";
    check(with_usage, without);
}

#[test]
fn any_key_order_whitespace_and_framing() {
    let cases: &[(&str, &str)] = &[
        // `usage` first, then in the middle, then alone.
        (
            "data: {\"usage\": null, \"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\n",
            "data: {\"id\": \"c\", \"choices\": [{\"delta\": {}}]}\n\n",
        ),
        (
            "data: {\"id\":\"c\" , \"usage\" : null , \"choices\":[{\"delta\":{}}]}\n\n",
            "data: {\"id\":\"c\" , \"choices\":[{\"delta\":{}}]}\n\n",
        ),
        ("data: { \"usage\": null }\n\n", "data: {  }\n\n"),
        // Pretty-printed over one line with tabs, CRLF framing.
        (
            "data:{\t\"choices\":\t[{\"delta\":{\"content\":\"a\"}}],\t\"usage\":\tnull\t}\r\n\r\n",
            "data:{\t\"choices\":\t[{\"delta\":{\"content\":\"a\"}}]\t}\r\n\r\n",
        ),
        // The usage-only chunk, its keys in any order, with `event:` and
        // `id:` lines, CRLF: dropped whole.
        (
            "event: chunk\r\nid: 7\r\ndata: {\"usage\": {\"prompt_tokens\": 1}, \"choices\": [ ]}\r\n\r\ndata: [DONE]\r\n\r\n",
            "data: [DONE]\r\n\r\n",
        ),
        // No `choices` at all and a usage object: the gateway's chunk too.
        (
            "data: {\"id\":\"c\",\"usage\":{\"prompt_tokens\":1}}\n\n",
            "",
        ),
        // Comments, `event:` lines and `[DONE]` pass untouched.
        (
            ": ping\n\nevent: x\ndata: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n",
            ": ping\n\nevent: x\ndata: {\"choices\":[{\"delta\":{}}]}\n\n",
        ),
        // Strings that look like usage are text, not members.
        (
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": null, \\\"choices\\\": []\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\": null, \\\"choices\\\": []\"}}]}\n\n",
        ),
        // Escaped quotes, brackets and braces inside strings.
        (
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"}], \\\"usage\\\": null\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"\\\"}], \\\"usage\\\": null\"}}]}\n\n",
        ),
        // A nested `usage` (in a tool's arguments) is not the provider's.
        (
            "data: {\"choices\":[{\"delta\":{\"usage\":null}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"usage\":null}}]}\n\n",
        ),
        // Usage alongside real choices is kept (the client will get it as
        // sent; only the usage-only chunk is the gateway's).
        (
            "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n",
            "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n",
        ),
        // Not JSON, or cut: passed on as is.
        ("data: {\"usage\": nul\n\n", "data: {\"usage\": nul\n\n"),
        ("data: not json\n\n", "data: not json\n\n"),
    ];
    for (input, expected) in cases {
        check(input, expected);
    }
}

#[test]
fn an_event_longer_than_the_limit_passes_unchanged_with_bounded_memory() {
    let long = format!(
        "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}],\"usage\":null}}\n\ndata: {{\"choices\":[],\"usage\":null}}\n\n",
        "x".repeat(2 * MAX_EVENT)
    );
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    for piece in long.as_bytes().chunks(64 * 1024) {
        out.extend_from_slice(&stripper.feed(piece));
        assert!(stripper.pending.len() <= MAX_EVENT + 64 * 1024);
    }
    out.extend_from_slice(&stripper.finish());
    let first_end = long.find("\n\n").unwrap() + 2;
    assert_eq!(
        out.len(),
        first_end + 22,
        "the long event unchanged, the next stripped"
    );
    assert!(out[..first_end] == long.as_bytes()[..first_end]);
    assert_eq!(
        String::from_utf8_lossy(&out[first_end..]),
        "data: {\"choices\":[]}\n\n"
    );
}
