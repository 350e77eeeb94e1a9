//! Scope checks see what the provider sees: paths that could reach another
//! model once an upstream normalises them are refused before anything is
//! forwarded, and the canonical path is the one forwarded.
//!
//! Requests go over a raw TCP socket: HTTP clients (reqwest's URL parser
//! among them) normalise `%2e%2e` themselves, which would hide the attack.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed request must fail the test loudly"
)]
#![expect(
    dead_code,
    reason = "the shared harness has a clock this test does not move"
)]

mod common;

use common::Harness;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method path` with `headers` and a JSON `body` exactly as written;
/// returns the status code and the whole response text.
async fn raw_request(
    harness: &Harness,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let base = harness.url("");
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// A path, the credential headers and the body to send with it.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn encoded_dot_segments_and_separators_are_refused_before_forwarding() {
    let harness = Harness::start().await;
    harness.add_provider("gemini", "gemini", "dev").await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, gemini_key) = harness
        .create_key(json!({"name": "flash-only", "env": "dev", "models": ["gemini-2.0-flash"]}))
        .await;
    let (_, openai_key) = harness
        .create_key(json!({"name": "mini-only", "env": "dev", "models": ["gpt-4o-mini"]}))
        .await;
    let gemini_body = r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#;
    let openai_body = r#"{"messages":[{"role":"user","content":"hi"}]}"#;
    let gemini = [("x-goog-api-key", gemini_key.as_str())];
    let bearer = format!("Bearer {openai_key}");
    let openai = [("authorization", bearer.as_str())];

    let cases: &[Case<'_>] = &[
        (
            "/gemini/v1beta/models/gemini-2.0-flash/%2e%2e/gemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash/%2E%2e/gemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash/%252e%252e/gemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash/..;x/gemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash%2f..%2fgemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash%5c..%5cgemini-2.5-pro:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/gemini/v1beta/models/gemini-2.0-flash%00/x:generateContent",
            &gemini,
            gemini_body,
        ),
        (
            "/openai/openai/deployments/gpt-4o-mini/%2e%2e/gpt-4o/chat/completions",
            &openai,
            openai_body,
        ),
        (
            "/openai/openai/deployments/gpt-4o-mini/.%2E/gpt-4o/chat/completions",
            &openai,
            openai_body,
        ),
    ];
    for (path, headers, body) in cases {
        let (status, response) = raw_request(&harness, "POST", path, headers, body).await;
        assert_eq!(status, 400, "{path}: {response}");
        assert!(
            response.contains("x-keyforge-error: invalid_path"),
            "{path}: {response}"
        );
        assert!(!response.contains(&harness.provider_key), "{path}");
    }
    assert!(
        harness.upstream.requests().is_empty(),
        "the upstream received {:?}",
        harness
            .upstream
            .requests()
            .iter()
            .map(|request| request.path.clone())
            .collect::<Vec<_>>()
    );

    // The canonical path is what the scope check read and what is forwarded.
    let (status, response) = raw_request(
        &harness,
        "POST",
        "/gemini/v1beta/models/gemini%2D2.0-flash:generateContent",
        &gemini,
        gemini_body,
    )
    .await;
    assert_eq!(status, 200, "{response}");
    let paths: Vec<String> = harness
        .upstream
        .requests()
        .iter()
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(paths, ["/v1beta/models/gemini-2.0-flash:generateContent"]);

    // And a decoded name outside the scope is refused by the scope check.
    let (status, response) = raw_request(
        &harness,
        "POST",
        "/gemini/v1beta/models/gemini%2D2.5-pro:generateContent",
        &gemini,
        gemini_body,
    )
    .await;
    assert_eq!(status, 403, "{response}");
    assert_eq!(harness.upstream.requests().len(), 1);
}

/// Regression: a path of 199 ASCII bytes and a two-byte character panicked
/// in `route::loggable_path` when debug logging was on (the span is built
/// outside the pipeline's `catch_unwind`), and the client got no answer.
#[tokio::test]
async fn a_long_path_cut_inside_a_character_is_answered_at_debug_level() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
    let harness = Harness::start().await;
    let path = format!("/openai/{}é", "a".repeat(199 - "/openai/".len()));
    assert_eq!(path.len(), 201);
    let (status, response) = raw_request(&harness, "GET", &path, &[], "").await;
    assert_eq!(status, 401, "{response}");
}
