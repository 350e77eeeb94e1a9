//! The admin API: authenticated, never shows a secret after creation, and
//! refuses bad input with a clear message.

mod common;

use common::Harness;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_api_requires_the_admin_token() {
    let harness = Harness::start().await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "missing_admin_token"),
        (
            Some("Bearer wrong-token-of-some-length-0123456789".into()),
            401,
            "invalid_admin_token",
        ),
        (Some(format!("Bearer {key}")), 403, "proxy_key_not_allowed"),
    ];
    for (auth, status, code) in cases {
        let mut request = harness.http.get(harness.url("/admin/v1/keys"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"]["code"],
            code
        );
    }
    // The health check is the one open route.
    assert_eq!(
        harness
            .http
            .get(harness.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn secrets_are_shown_once_and_never_again() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (id, key) = harness
        .create_key(json!({"name": "app", "env": "dev", "models": ["gpt-4o*"], "ttl": "12h"}))
        .await;
    let (_, list) = harness.admin(reqwest::Method::GET, "/keys", None).await;
    let (_, show) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{id}"), None)
        .await;
    let (_, providers) = harness
        .admin(reqwest::Method::GET, "/providers", None)
        .await;
    for body in [&list, &show, &providers] {
        let text = body.to_string();
        assert!(!text.contains(&key), "{text}");
        assert!(!text.contains(&harness.provider_key), "{text}");
    }
    assert_eq!(show["prefix"].as_str().unwrap(), format!("{}…", &key[..11]));
    assert_eq!(show["expires_at"], "2026-06-02T00:00:00Z");
    assert_eq!(show["scope"]["models"], json!(["gpt-4o*"]));
    assert_eq!(providers["providers"][0]["credential_version"], 1);
    harness
        .clock
        .advance(std::time::Duration::from_secs(13 * 3600));
    let (_, show) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{id}"), None)
        .await;
    assert_eq!(show["status"], "expired");
}

#[tokio::test]
async fn bad_admin_input_is_refused_clearly() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let cases = vec![
        (
            "/providers",
            json!({"name": "openai", "kind": "openai", "env": "dev", "api_key": "another-key-value"}),
            409,
            "already exists",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "azure", "env": "dev", "api_key": "k-123456789"}),
            400,
            "unknown provider kind",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "openai-compatible", "env": "dev", "api_key": "k-123456789"}),
            400,
            "needs a base URL",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "openai", "env": "dev", "base_url": "ftp://host", "api_key": "k-123456789"}),
            400,
            "http://",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "openai", "env": "dev", "base_url": "https://user:pw@host", "api_key": "k-123456789"}),
            400,
            "credentials",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "openai", "env": "Dev", "api_key": "k-123456789"}),
            400,
            "lowercase",
        ),
        (
            "/providers",
            json!({"name": "x", "kind": "openai", "env": "dev", "api_key": "has space"}),
            400,
            "whitespace",
        ),
        (
            "/keys",
            json!({"name": "app", "env": "dev", "ttl": "forever"}),
            400,
            "not a number followed by",
        ),
        (
            "/keys",
            json!({"name": "app", "env": "dev", "providers": ["anthropic"]}),
            400,
            "no provider named `anthropic`",
        ),
        ("/keys", json!({"name": "", "env": "dev"}), 400, "key name"),
        (
            "/keys",
            json!({"name": "app", "env": "dev", "models": ["gpt 4"]}),
            400,
            "whitespace",
        ),
    ];
    for (path, body, status, needle) in cases {
        let (got, answer) = harness
            .admin(reqwest::Method::POST, path, Some(body.clone()))
            .await;
        assert_eq!(got, status, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
        assert!(
            !message.contains("k-123456789") && !message.contains("has space"),
            "{message}"
        );
    }
    let (status, _) = harness
        .admin(reqwest::Method::GET, "/keys/key_0000000000000000", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = harness
        .admin(reqwest::Method::POST, "/keys/nonsense/revoke", None)
        .await;
    assert_eq!(status, 400);
}
