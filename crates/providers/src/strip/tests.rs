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
