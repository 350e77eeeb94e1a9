//! Metering end to end: the ledger's tokens and cost for each dialect, JSON
//! and streamed, checked against the fake upstream's known token counts
//! (input = prompt words, output = min(max tokens, 12) words).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a malformed report must fail the test loudly"
)]

mod common;

use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn usage(harness: &Harness, by: &str) -> Value {
    let (status, body) = harness
        .admin(
            reqwest::Method::GET,
            &format!("/usage?by={by}&since=1d"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn row<'a>(report: &'a Value, group: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == group)
        .unwrap_or_else(|| panic!("no row {group} in {report}"))
}

fn tokens(row: &Value) -> (u64, u64, u64) {
    (
        row["requests"].as_u64().unwrap(),
        row["input_tokens"].as_u64().unwrap(),
        row["output_tokens"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn the_ledger_matches_the_upstreams_token_counts() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("anthropic", "anthropic", "dev").await;
    harness.add_provider("gemini", "gemini", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let http = &harness.http;
    let post = |path: &str, body: Value| {
        let request = http.post(harness.url(path)).bearer_auth(&key).json(&body);
        // Only the Anthropic SDK sends this header.
        if path.starts_with("/anthropic") {
            request.header("anthropic-version", "2023-06-01")
        } else {
            request
        }
        .send()
    };
    let say = json!([{"role": "user", "content": "say hello please"}]);

    // OpenAI: JSON (3 in, 12 out) and a stream with usage (3 in, 4 out).
    assert_eq!(
        post(
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": say})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let stream = post("/openai/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": say, "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}})).await.unwrap();
    stream.text().await.unwrap();
    // Anthropic: JSON (2 in, 5 out) and a stream (2 in, 3 out), whose
    // closing `message_delta` reports nulls beside its output count.
    post("/anthropic/v1/messages", json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": [{"role": "user", "content": "hi there"}]})).await.unwrap().text().await.unwrap();
    post("/anthropic/v1/messages", json!({"model": "claude-3-5-haiku-latest", "max_tokens": 3, "stream": true, "messages": [{"role": "user", "content": "hi there"}]})).await.unwrap().text().await.unwrap();
    // Gemini: JSON (3 in, 12 out) and a stream (3 in, 3 out).
    let contents = json!({"contents": [{"parts": [{"text": "hello there gemini"}]}], "generationConfig": {"maxOutputTokens": 3}});
    post(
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        json!({"contents": [{"parts": [{"text": "hello there gemini"}]}]}),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    post(
        "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
        contents.clone(),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    // Without `alt=sse`, Gemini streams one JSON array (3 in, 3 out).
    let array = post(
        "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent",
        contents,
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert!(array.starts_with('[') && array.ends_with(']'), "{array}");
    // A provider error is recorded and costs nothing.
    assert_eq!(
        post(
            "/openai/v1/chat/completions",
            json!({"model": "fake-error-500", "messages": say})
        )
        .await
        .unwrap()
        .status(),
        500
    );

    let by_model = usage(&harness, "model").await;
    assert_eq!(tokens(row(&by_model, "gpt-4o-mini")), (2, 6, 16));
    // 6 input tokens at $0.15/M and 16 output at $0.60/M = 10,500 nano-USD.
    assert_eq!(row(&by_model, "gpt-4o-mini")["cost_nano_usd"], 10_500);
    assert_eq!(tokens(row(&by_model, "claude-3-5-haiku-latest")), (2, 4, 8));
    // 4 at $0.80/M + 8 at $4/M = 35,200 nano-USD.
    assert_eq!(
        row(&by_model, "claude-3-5-haiku-latest")["cost_nano_usd"],
        35_200
    );
    assert_eq!(tokens(row(&by_model, "gemini-2.0-flash")), (3, 9, 18));
    let failed = row(&by_model, "fake-error-500");
    assert_eq!(
        (failed["errors"].as_u64(), failed["cost_nano_usd"].as_i64()),
        (Some(1), Some(0))
    );
    for model in ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"] {
        let r = row(&by_model, model);
        assert_eq!(
            (r["estimated"].as_u64(), r["fallback_priced"].as_u64()),
            (Some(0), Some(0)),
            "{model}"
        );
    }

    let by_key = usage(&harness, "key").await;
    assert_eq!(row(&by_key, &key_id)["requests"], 8);
    assert_eq!(
        by_key["total"]["cost_nano_usd"],
        by_model["total"]["cost_nano_usd"]
    );

    // Two days later, `since=1d` no longer sees these requests.
    harness.clock.advance(Duration::from_secs(2 * 86_400));
    let later = usage(&harness, "key").await;
    assert!(later["rows"].as_array().unwrap().is_empty(), "{later}");
    assert_eq!(later["total"]["requests"], 0);
}

#[tokio::test]
async fn a_stream_cut_by_the_client_is_billed_for_what_was_delivered() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "fake-slow", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("Hello") {
        received.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let cut = loop {
        let report = usage(&harness, "model").await;
        if let Some(cut) = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["group"] == "fake-slow")
        {
            break cut.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cut stream never reached the ledger"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Never zero: at least the delivered "Hello" (5 characters, 2 tokens).
    assert!(cut["output_tokens"].as_u64().unwrap() >= 2, "{cut}");
    assert_eq!(cut["estimated"], 1, "{cut}");
    // fake-slow is in no price table: priced at the fallback and flagged.
    assert_eq!(cut["fallback_priced"], 1, "{cut}");
    assert!(cut["cost_nano_usd"].as_i64().unwrap() > 0, "{cut}");
}

#[tokio::test]
async fn usage_queries_are_validated() {
    let harness = Harness::start().await;
    for (query, needle) in [
        ("by=week", "expected key, model, day, env or project"),
        ("project=Shop", "lowercase"),
        ("since=soon", "since"),
        ("key=nope", "key ids look like"),
        ("env=Dev", "lowercase"),
        ("bogus=1", "invalid query"),
    ] {
        let (status, body) = harness
            .admin(reqwest::Method::GET, &format!("/usage?{query}"), None)
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{query}: {body}"
        );
    }
    let (status, prices) = harness.admin(reqwest::Method::GET, "/prices", None).await;
    assert_eq!(status, 200);
    let mini = prices["prices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == "gpt-4o-mini*")
        .unwrap();
    assert_eq!(
        (mini["input"].as_str(), mini["output"].as_str()),
        (Some("0.15"), Some("0.60"))
    );
    assert_eq!(prices["fallback"]["output"], "30.00");
}

#[tokio::test]
async fn openai_streams_are_metered_exactly_without_changing_what_the_client_sees() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "one two three four"}]});

    // What the provider sends a client that did not ask for usage...
    let direct = harness
        .http
        .post(format!(
            "{}/v1/chat/completions",
            harness.upstream.base_url()
        ))
        .bearer_auth(&harness.provider_key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!direct.contains("usage"), "{direct}");
    // ...is exactly what that client gets through KeyForge.
    let through = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(through, direct);

    // KeyForge asked the provider for usage on the client's behalf...
    let sent = harness.upstream.requests().pop().unwrap();
    let sent: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // ...and billed from the provider's own count, not an estimate.
    let report = usage(&harness, "model").await;
    let r = row(&report, "gpt-4o-mini");
    assert_eq!(
        (tokens(r), r["estimated"].as_u64()),
        ((1, 4, 5), Some(0)),
        "{r}"
    );

    // A client that asks for usage still gets it.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let with_usage = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&asked)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        with_usage.contains("\"usage\":{\"completion_tokens\":5"),
        "{with_usage}"
    );
}
