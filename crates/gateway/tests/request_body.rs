//! The body reaches the provider as the client wrote it, and the gateway
//! bounds the same request the provider runs: inserted usage fields edit
//! the bytes, duplicate keys are refused, compressed and multipart bodies
//! are read for their model.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::io::Write;

use common::Harness;
use serde_json::{Value, json};

#[tokio::test]
async fn a_stream_is_forwarded_byte_for_byte_apart_from_the_inserted_usage_field() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "structured", "env": "dev"}))
        .await;
    // Schema properties out of alphabetical order (structured outputs keep
    // their order), a 30-digit integer, odd whitespace, a unicode escape.
    let body = "{ \"model\" :\"gpt-4o-mini\",\n\t\"stream\": true ,\"seed\": 123456789012345678901234567890,\n  \"messages\":[{\"role\":\"user\",\"content\":\"caf\\u00e9\"}],\n  \"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"x\",\"schema\":{\"type\":\"object\",\"properties\":{\"zeta\":{\"type\":\"string\"},\"alpha\":{\"type\":\"number\"}}}}}   }";
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    // The client did not ask for usage: it sees none.
    assert!(!text.contains("\"usage\""), "{text}");
    let received = harness.upstream.requests().pop().unwrap().body;
    let received = String::from_utf8(received.to_vec()).unwrap();
    let inserted = ",\"stream_options\":{\"include_usage\":true}";
    let position = received.find(inserted);
    assert!(
        position.is_some(),
        "the gateway did not ask for usage: {received}"
    );
    let position = position.unwrap();
    let mut restored = received.clone();
    restored.replace_range(position..position + inserted.len(), "");
    assert_eq!(restored, body, "only the usage field was added");
}

#[tokio::test]
async fn a_body_naming_a_key_twice_is_refused() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "dup", "env": "dev", "budgets": [{"amount": 10_000_000, "period": "day"}]}))
        .await;
    for body in [
        r#"{"model":"gpt-4o-mini","max_tokens":5,"max_tokens":100000,"messages":[]}"#,
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"a","content":"b"}]}"#,
    ] {
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "duplicate_json_key", "{error}");
    }
    assert!(harness.upstream.requests().is_empty());
}

#[tokio::test]
async fn compressed_and_multipart_bodies_are_read_for_scope_and_forwarded_as_sent() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "scoped", "env": "dev", "models": ["gpt-4o-mini", "whisper-1"]}))
        .await;
    let gzip = |json: &Value| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(json.to_string().as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let send_gzip = |body: Vec<u8>| {
        harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
    };
    let allowed =
        gzip(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}));
    let response = send_gzip(allowed.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    assert_eq!(
        harness.upstream.requests().last().unwrap().body.as_ref(),
        allowed.as_slice(),
        "forwarded as received"
    );
    // The scope check sees the model inside the compressed body.
    let response = send_gzip(gzip(&json!({"model": "gpt-4o", "messages": []})))
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A body that is not what its Content-Encoding says is refused.
    let response = send_gzip(b"not gzip at all".to_vec()).await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(
        error["error"]["code"], "invalid_content_encoding",
        "{error}"
    );

    // A transcription names its model in a form field.
    let form = |model: &str| {
        reqwest::multipart::Form::new()
            .text("model", model.to_owned())
            .part(
                "file",
                reqwest::multipart::Part::bytes(vec![0_u8; 64]).file_name("a.mp3"),
            )
    };
    let transcribe = |model: &str| {
        harness
            .http
            .post(harness.url("/openai/v1/audio/transcriptions"))
            .bearer_auth(&key)
            .multipart(form(model))
            .send()
    };
    let response = transcribe("whisper-1").await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let response = transcribe("gpt-4o-transcribe").await.unwrap();
    assert_eq!(response.status(), 403);
}
