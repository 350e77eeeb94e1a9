//! The proxy, end to end in-process: credentials swapped, streams passed
//! through, every refusal in the client's dialect; the body reaches the
//! provider as the client wrote it, and the gateway bounds the same request
//! the provider runs (inserted usage fields edit the bytes, duplicate keys
//! are refused, compressed and multipart bodies are read for their model).

mod common;

use std::io::Write;
use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use keyforge_gateway::GatewayConfig;
use serde_json::{Value, json};

async fn setup() -> (Harness, String, String) {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("anthropic", "anthropic", "dev").await;
    harness.add_provider("gemini", "gemini", "dev").await;
    let (id, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    (harness, id, key)
}

#[tokio::test]
async fn openai_requests_reach_the_upstream_with_the_provider_key_only() {
    let (harness, _, key) = setup().await;
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .header("cookie", "session=abc")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "say hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("x-keyforge-overhead-us")
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        response
            .headers()
            .get("x-keyforge-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 2);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");

    let received = harness.upstream.requests();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {}", harness.provider_key)
    );
    assert!(request.headers.get("cookie").is_none());
    let all_headers = format!(
        "{:?}",
        request
            .headers
            .iter()
            .map(|(_, v)| v.to_str().unwrap_or(""))
            .collect::<Vec<_>>()
    );
    assert!(
        !all_headers.contains(&key),
        "the kf_ key reached the upstream"
    );
    assert!(!String::from_utf8_lossy(&request.body).contains(&key));
}

#[tokio::test]
async fn anthropic_accepts_x_api_key_and_bearer() {
    let (harness, _, key) = setup().await;
    for use_bearer in [false, true] {
        let mut request = harness
            .http
            .post(harness.url("/anthropic/v1/messages"))
            .header("anthropic-version", "2023-06-01");
        request = if use_bearer {
            request.bearer_auth(&key)
        } else {
            request.header("x-api-key", &key)
        };
        let response = request.json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["usage"],
            json!({"input_tokens": 1, "output_tokens": 3})
        );
    }
    for request in harness.upstream.requests() {
        assert_eq!(
            request.headers.get("x-api-key").unwrap().to_str().unwrap(),
            harness.provider_key
        );
        assert!(request.headers.get("authorization").is_none());
        assert_eq!(
            request.headers.get("anthropic-version").unwrap(),
            "2023-06-01"
        );
    }
}

#[tokio::test]
async fn gemini_accepts_header_and_query_keys_and_strips_them() {
    let (harness, _, key) = setup().await;
    let body = json!({"contents": [{"parts": [{"text": "hello there gemini"}]}]});
    let by_header = harness
        .http
        .post(harness.url("/gemini/v1beta/models/gemini-2.0-flash:generateContent"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let by_query = harness
        .http
        .post(harness.url(&format!(
            "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={key}"
        )))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let text = by_query.text().await.unwrap();
    assert!(text.contains("\"promptTokenCount\":3"), "{text}");
    let received = harness.upstream.requests();
    assert_eq!(received[1].query.as_deref(), Some("alt=sse"));
    for request in received {
        assert_eq!(
            request
                .headers
                .get("x-goog-api-key")
                .unwrap()
                .to_str()
                .unwrap(),
            harness.provider_key
        );
    }
}

#[tokio::test]
async fn named_routes_and_passthrough_paths_work() {
    let (harness, _, key) = setup().await;
    let models = harness
        .http
        .get(harness.url("/p/openai/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let embeddings = harness
        .http
        .post(harness.url("/openai/v1/embeddings"))
        .bearer_auth(&key)
        .json(&json!({"model": "text-embedding-3-small", "input": ["a b", "c"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(embeddings.status(), 200);
    assert_eq!(
        embeddings.json::<Value>().await.unwrap()["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let responses = harness
        .http
        .post(harness.url("/openai/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "input": "one two"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        responses.json::<Value>().await.unwrap()["usage"]["input_tokens"],
        2
    );
}

#[tokio::test]
async fn streams_pass_through_as_they_arrive_and_client_disconnects_cancel_upstream() {
    let (harness, _, key) = setup().await;
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "fake-slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {"), "{first:?}");
    // The fake is still producing (one event per 100 ms): a gateway that
    // buffered the stream would not have delivered anything yet.
    assert_eq!(harness.upstream.streams_cancelled(), 0);
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while harness.upstream.streams_cancelled() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upstream stream was not cancelled after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn full_streams_arrive_intact() {
    let (harness, _, key) = setup().await;
    let text = harness
        .http
        .post(harness.url("/anthropic/v1/messages"))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 4, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    assert_eq!(text.matches("content_block_delta").count(), 8);
}

/// One refusal: what is sent, and what the client must see.
struct Refusal {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Value,
    status: u16,
    code: &'static str,
}

fn check_shape(path: &str, body: &Value, code: &str) -> String {
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    if path.starts_with("/anthropic") {
        assert_eq!(body["type"], "error", "{body}");
    } else if path.starts_with("/gemini") {
        assert!(body["error"]["status"].is_string(), "{body}");
    } else {
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    message
}

#[tokio::test]
async fn refusals_are_clear_and_in_the_clients_dialect() {
    let config = GatewayConfig {
        max_request_body_bytes: 4096,
        ..GatewayConfig::default()
    };
    let harness = Harness::start_with(config).await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("anthropic", "anthropic", "dev").await;
    harness.add_provider("gemini", "gemini", "dev").await;
    harness.add_provider("openai", "openai", "prod").await;
    harness
        .add_provider_with(
            "down",
            "openai-compatible",
            "dev",
            "http://127.0.0.1:9",
            "another-provider-key",
        )
        .await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let (_, scoped) = harness
        .create_key(
            json!({"name": "scoped", "env": "dev", "providers": ["openai"], "models": ["gpt-4o*"]}),
        )
        .await;
    let (_, staging) = harness
        .create_key(json!({"name": "staging", "env": "staging"}))
        .await;
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let never_issued =
        keyforge_types::VirtualKey::generate(&keyforge_types::EnvName::parse("dev").unwrap());
    #[expect(
        clippy::disallowed_methods,
        reason = "the test sends a well-formed key this gateway never issued"
    )]
    let never_issued = secrecy::ExposeSecret::expose_secret(never_issued.secret()).to_owned();
    let fake_openai_key = format!("sk-proj-{}", "x1Y2".repeat(8));
    let bearer = |k: &str| vec![("authorization", format!("Bearer {k}"))];
    let chat = json!({"model": "gpt-4o-mini", "messages": []});
    let anthropic = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": []});

    let cases = vec![
        Refusal {
            name: "missing key",
            path: "/openai/v1/chat/completions",
            headers: vec![],
            body: chat.clone(),
            status: 401,
            code: "missing_api_key",
        },
        Refusal {
            name: "bad checksum",
            path: "/openai/v1/chat/completions",
            headers: bearer(&bad_checksum),
            body: chat.clone(),
            status: 401,
            code: "invalid_api_key",
        },
        Refusal {
            name: "provider key",
            path: "/openai/v1/chat/completions",
            headers: bearer(&fake_openai_key),
            body: chat.clone(),
            status: 401,
            code: "provider_key_not_allowed",
        },
        Refusal {
            name: "never issued",
            path: "/openai/v1/chat/completions",
            headers: bearer(&never_issued),
            body: chat.clone(),
            status: 401,
            code: "invalid_api_key",
        },
        Refusal {
            name: "model not allowed",
            path: "/openai/v1/chat/completions",
            headers: bearer(&scoped),
            body: json!({"model": "o3", "messages": []}),
            status: 403,
            code: "model_not_allowed",
        },
        Refusal {
            name: "no model named",
            path: "/openai/v1/files",
            headers: bearer(&scoped),
            body: json!({}),
            status: 403,
            code: "model_not_allowed",
        },
        Refusal {
            name: "provider not allowed",
            path: "/anthropic/v1/messages",
            headers: vec![("x-api-key", scoped.clone())],
            body: anthropic.clone(),
            status: 403,
            code: "provider_not_allowed",
        },
        Refusal {
            name: "other environment",
            path: "/openai/v1/chat/completions",
            headers: bearer(&staging),
            body: chat.clone(),
            status: 404,
            code: "provider_not_found",
        },
        Refusal {
            name: "unknown named provider",
            path: "/p/nope/v1/chat/completions",
            headers: bearer(&key),
            body: chat.clone(),
            status: 404,
            code: "provider_not_found",
        },
        Refusal {
            name: "unknown route",
            path: "/v1/chat/completions",
            headers: bearer(&key),
            body: chat.clone(),
            status: 404,
            code: "unknown_route",
        },
        Refusal {
            name: "malformed json",
            path: "/openai/v1/chat/completions",
            headers: vec![
                ("authorization", format!("Bearer {key}")),
                ("content-type", "application/json".into()),
            ],
            body: json!("{\"model\": "),
            status: 400,
            code: "invalid_json",
        },
        Refusal {
            name: "body too large",
            path: "/openai/v1/chat/completions",
            headers: bearer(&key),
            body: json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(5000)}]}),
            status: 413,
            code: "body_too_large",
        },
        Refusal {
            name: "upstream unreachable",
            path: "/p/down/v1/chat/completions",
            headers: bearer(&key),
            body: chat.clone(),
            status: 502,
            code: "upstream_unreachable",
        },
        Refusal {
            name: "anthropic shape",
            path: "/anthropic/v1/messages",
            headers: vec![("anthropic-version", "2023-06-01".into())],
            body: anthropic.clone(),
            status: 401,
            code: "missing_api_key",
        },
        Refusal {
            name: "gemini shape",
            path: "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
            headers: vec![("x-goog-api-key", bad_checksum.clone())],
            body: json!({}),
            status: 401,
            code: "invalid_api_key",
        },
    ];
    for case in cases {
        let mut request = harness.http.post(harness.url(case.path));
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        request = match &case.body {
            Value::String(raw) => request.body(raw.clone()),
            body => request.json(body),
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), case.status, "{}", case.name);
        assert_eq!(
            response.headers().get("x-keyforge-error").unwrap(),
            case.code,
            "{}",
            case.name
        );
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let message = check_shape(case.path, &body, case.code);
        assert!(
            message.len() > 20,
            "{}: message too terse: {message}",
            case.name
        );
        for secret in [
            &key,
            &scoped,
            &bad_checksum,
            &never_issued,
            &fake_openai_key,
            &harness.provider_key,
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{}: a secret was echoed: {text}",
                case.name
            );
        }
    }
    assert!(
        harness.upstream.requests().is_empty(),
        "a refused request reached the upstream"
    );
}

#[tokio::test]
async fn revocation_applies_to_the_very_next_request() {
    let (harness, id, key) = setup().await;
    let send = || {
        harness
            .http
            .get(harness.url("/openai/v1/models"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let (status, body) = harness
        .admin(reqwest::Method::POST, &format!("/keys/{id}/revoke"), None)
        .await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("revoked")));
    let response = send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers().get("x-keyforge-error").unwrap(),
        "key_revoked"
    );
    let (_, again) = harness
        .admin(reqwest::Method::POST, &format!("/keys/{id}/revoke"), None)
        .await;
    assert_eq!(again["outcome"], "already_revoked");
}

#[tokio::test]
async fn keys_expire_at_their_ttl() {
    let (harness, id, _) = setup().await;
    let (_, key) = harness
        .create_key(json!({"name": "short", "env": "dev", "ttl": "30m"}))
        .await;
    let send = || {
        harness
            .http
            .get(harness.url("/openai/v1/models"))
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    harness.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(send().await.unwrap().status(), 200);
    harness.clock.advance(Duration::from_secs(60));
    let response = send().await.unwrap();
    assert_eq!(
        response.headers().get("x-keyforge-error").unwrap(),
        "key_expired"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired at 2026-06-01T12:30:00Z"),
        "{body}"
    );
    // The long-lived key is untouched.
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{id}"), None)
        .await;
    assert_eq!(view["status"], "active");
}

/// The Anthropic dialect of `upstream_key_rejected`: the provider's 401
/// to KeyForge's key carries the header, the body keeps Anthropic's error
/// shape with the key scrubbed, and the client's own bad `kf_` key gets a
/// different code.
#[tokio::test]
async fn anthropic_upstream_key_rejections_are_told_apart_from_bad_kf_keys() {
    let harness = Harness::start().await;
    let wrong_key = keyforge_testkit::fake_provider_key("wrong-anthropic");
    harness
        .add_provider_with(
            "anthropic",
            "anthropic",
            "dev",
            &harness.upstream.base_url(),
            &wrong_key,
        )
        .await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let ask = |key: String| {
        harness
            .http
            .post(harness.url("/anthropic/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-3-5-haiku-latest", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let response = ask(key.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["x-keyforge-error"],
        "upstream_key_rejected"
    );
    let text = response.text().await.unwrap();
    assert!(!text.contains(&wrong_key) && !text.contains(&key), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let own = ask(format!("{key}x")).await.unwrap();
    assert_eq!(own.status(), 401);
    assert_ne!(own.headers()["x-keyforge-error"], "upstream_key_rejected");
}

#[tokio::test]
async fn upstream_errors_pass_through_with_secrets_scrubbed() {
    let harness = Harness::start().await;
    let wrong_key = keyforge_testkit::fake_provider_key("wrong");
    harness
        .add_provider_with(
            "openai",
            "openai",
            "dev",
            &harness.upstream.base_url(),
            &wrong_key,
        )
        .await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // The app can tell "KeyForge's provider key is bad" from "my kf_ key
    // is bad".
    assert_eq!(
        response.headers()["x-keyforge-error"],
        "upstream_key_rejected"
    );
    let text = response.text().await.unwrap();
    assert!(!text.contains(&wrong_key), "{text}");
    let own = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(format!("{key}x"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 401);
    assert_ne!(own.headers()["x-keyforge-error"], "upstream_key_rejected");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["error"]["message"],
        "Incorrect API key provided: [REDACTED]."
    );
    assert_eq!(body["error"]["code"], "invalid_api_key");

    harness.add_provider("good", "openai", "dev").await;
    let response = harness
        .http
        .post(harness.url("/p/good/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "fake-error-500", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert!(response.headers().get("x-keyforge-error").is_none());
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "server_error"
    );
}

#[tokio::test]
async fn several_providers_of_a_kind_need_a_name() {
    let harness = Harness::start().await;
    harness.add_provider("openai-a", "openai", "dev").await;
    harness.add_provider("openai-b", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let response = harness
        .http
        .get(harness.url("/openai/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("openai-a, openai-b"),
        "{body}"
    );
    let (_, narrowed) = harness
        .create_key(json!({"name": "b-only", "env": "dev", "providers": ["openai-b"]}))
        .await;
    assert_eq!(
        harness
            .http
            .get(harness.url("/openai/v1/models"))
            .bearer_auth(&narrowed)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn slow_clients_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = GatewayConfig {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        ..GatewayConfig::default()
    };
    let harness = Harness::start_with(config).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let addr = harness.base.trim_start_matches("http://").to_owned();

    // Headers that never finish: the connection is closed.
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stalled
        .write_all(b"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(15), stalled.read_to_end(&mut buffer)).await;
    assert!(
        read.is_ok(),
        "a client stalling in its headers was not cut off"
    );

    // A body that never finishes: 408 in the client's dialect.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /openai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), slow.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(harness.upstream.requests().is_empty());
}

#[tokio::test]
async fn oversized_request_headers_are_refused() {
    let (harness, _, key) = setup().await;
    let response = harness
        .http
        .get(harness.url("/openai/v1/models"))
        .bearer_auth(&key)
        .header("x-padding", "p".repeat(100 * 1024))
        .send()
        .await;
    // hyper answers 431 and closes; a client may also see the reset first.
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        Err(error) => assert!(
            error.is_request() || error.is_connect() || error.to_string().contains("connection"),
            "{error}"
        ),
    }
    assert!(harness.upstream.requests().is_empty());
    assert_eq!(
        harness
            .http
            .get(harness.url("/openai/v1/models"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

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

/// nginx, caches and some OpenAI-compatible servers send SSE with a
/// `Content-Length`. A body the gateway changes (the usage event it asked
/// for is removed, a provider key is replaced) must be re-framed: the
/// client reads the whole stream, never a length that no longer fits.
#[tokio::test]
async fn a_changed_stream_sent_with_a_content_length_is_reframed() {
    let (harness, _, key) = setup().await;
    harness.upstream.frame_streams_with_length(true);
    for (path, body, ends) in [
        (
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "say hello"}]}),
            "data: [DONE]\n\n",
        ),
        (
            "/openai/v1/responses",
            json!({"model": "gpt-4o-mini", "stream": true, "input": "say hello"}),
            "}\n\n",
        ),
    ] {
        let response = harness
            .http
            .post(harness.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let length = response
            .headers()
            .get("content-length")
            .map(|value| value.to_str().unwrap().parse::<usize>().unwrap());
        let text = response.text().await.expect("the whole body arrives");
        assert!(text.ends_with(ends), "{path}: {text}");
        if let Some(length) = length {
            assert_eq!(length, text.len(), "{path}: a stated length fits the body");
        }
        // The chat stream lost the usage event the client never asked for.
        if path.ends_with("chat/completions") {
            assert!(!text.contains("\"usage\""), "{text}");
        }
    }
    let sent = harness.upstream.requests();
    assert!(
        String::from_utf8_lossy(&sent[0].body).contains("include_usage"),
        "the gateway asked for usage, so it changed the body"
    );
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

/// Every encoding an echo of `key` takes: raw, percent-encoded (both
/// cases), JSON `\u` escapes and base64 of text holding it.
fn encodings_of(key: &str) -> Vec<String> {
    use base64::Engine;
    let upper: String = key.bytes().map(|b| format!("%{b:02X}")).collect();
    let lower: String = key.bytes().map(|b| format!("%{b:02x}")).collect();
    let escaped: String = key.bytes().map(|b| format!("\\u{b:04x}")).collect();
    let engine = base64::engine::general_purpose::STANDARD;
    // The key's core in base64 at each of the three alignments.
    let based: Vec<String> = ["", "a", "ab"]
        .iter()
        .map(|prefix| {
            let encoded = engine.encode(format!("{prefix}{key}"));
            let skip = prefix.len() * 4 / 3 + 2;
            encoded[skip..encoded.len().saturating_sub(4)].to_owned()
        })
        .collect();
    let mut all = vec![key.to_owned(), upper, lower, escaped];
    all.extend(based);
    all
}

/// The canary for every output channel of a response: an upstream that
/// echoes the injected provider key in headers, in a gzip-compressed error
/// body, in a redirect's body, and in a stream split across chunks in
/// every encoding. The client never sees the key in any of its forms.
#[tokio::test]
async fn no_echo_of_the_provider_key_reaches_the_client() {
    let (harness, _, key) = setup().await;
    let needles = encodings_of(&harness.provider_key);
    // A client that shows redirects instead of following them, and does
    // not decompress: it sees exactly what the gateway sends.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for kind in ["header", "gzip", "gzip-ok", "redirect", "stream"] {
        for (path, extra) in [
            ("/openai/v1/chat/completions", None),
            (
                "/anthropic/v1/messages",
                Some(("anthropic-version", "2023-06-01")),
            ),
        ] {
            let mut request = http.post(harness.url(path)).bearer_auth(&key).json(
                &json!({"model": format!("fake-echo-{kind}"), "max_tokens": 5, "messages": []}),
            );
            if let Some((name, value)) = extra {
                request = request.header(name, value);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let headers = format!("{:?}", response.headers());
            assert!(
                response.headers().get("content-encoding").is_none(),
                "{kind}: the body reaches the client decoded"
            );
            let body = String::from_utf8_lossy(&response.bytes().await.unwrap()).into_owned();
            for needle in &needles {
                assert!(
                    !headers.contains(needle.as_str()),
                    "{kind} {path} ({status}): headers {headers}"
                );
                assert!(
                    !body.contains(needle.as_str()),
                    "{kind} {path} ({status}): body {body}"
                );
            }
            assert!(
                !headers.contains(&key) && !body.contains(&key),
                "{kind}: the kf_ key echoed"
            );
            match kind {
                "header" | "gzip" => assert_eq!(status, 401, "{kind}"),
                "gzip-ok" => {
                    assert_eq!(status, 200);
                    assert!(body.contains("[REDACTED]"), "decoded and scrubbed: {body}");
                }
                "redirect" => assert_eq!(status, 302),
                _ => {
                    assert_eq!(status, 200);
                    assert!(body.contains("[REDACTED]"), "{body}");
                }
            }
        }
    }
}

/// Found by a tester: a model named for a tool (the Responses API's
/// `image_generation` tool runs its own `model`) or in a `models` fallback
/// list is run by the provider too, so the key's scope must allow it.
#[tokio::test]
async fn models_named_for_tools_or_fallbacks_are_in_scope_too() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "mini", "env": "dev", "models": ["gpt-4o-mini"]}))
        .await;
    let send = |path: &'static str, body: Value| {
        harness
            .http
            .post(harness.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    for (path, body) in [
        (
            "/openai/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "draw", "tools": [{"type": "image_generation", "model": "gpt-image-1"}]}),
        ),
        (
            "/openai/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "models": ["gpt-4o"], "messages": []}),
        ),
    ] {
        let response = send(path, body).await.unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "model_not_allowed", "{error}");
    }
    let allowed = send(
        "/openai/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "models": ["gpt-4o-mini"], "messages": []}),
    )
    .await
    .unwrap();
    assert_eq!(allowed.status(), 200);
    assert!(harness.upstream.requests().len() == 1);
}
