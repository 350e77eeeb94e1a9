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

#[tokio::test]
async fn keys_are_revoked_by_project_and_environment_in_one_call() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("openai", "openai", "prod").await;
    let (dev_a, dev_a_key) = harness
        .create_key(json!({"name": "a", "env": "dev", "project": "shop"}))
        .await;
    let (dev_b, dev_b_key) = harness
        .create_key(json!({"name": "b", "env": "dev", "project": "blog"}))
        .await;
    let (prod_a, prod_a_key) = harness
        .create_key(json!({"name": "c", "env": "prod", "project": "shop"}))
        .await;
    let status_of = |key: String| {
        let harness = &harness;
        async move {
            harness
                .http
                .post(harness.url("/openai/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt-4o-mini", "messages": []}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let (status, body) = harness
        .admin(reqwest::Method::POST, "/keys/revoke", Some(json!({})))
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = harness
        .admin(
            reqwest::Method::POST,
            "/keys/revoke",
            Some(json!({"env": "dev", "project": "shop"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revoked"], json!([dev_a]));
    assert_eq!(status_of(dev_a_key.clone()).await, 401);
    assert_eq!(status_of(dev_b_key.clone()).await, 200);
    assert_eq!(status_of(prod_a_key.clone()).await, 200);

    let (status, body) = harness
        .admin(
            reqwest::Method::POST,
            "/keys/revoke",
            Some(json!({"env": "dev"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["revoked"],
        json!([dev_b]),
        "already revoked keys are not listed"
    );
    assert_eq!(status_of(dev_b_key).await, 401);
    assert_eq!(status_of(prod_a_key).await, 200);
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{prod_a}"), None)
        .await;
    assert_eq!(view["status"], "active");
}

#[tokio::test]
async fn a_rotated_key_works_beside_its_successor_for_the_grace_period() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (id, old) = harness
        .create_key(json!({"name": "app", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    let ask = |key: String| {
        let harness = &harness;
        async move {
            let response = harness
                .http
                .post(harness.url("/openai/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    assert_eq!(ask(old.clone()).await.0, 200);
    let rotate = |body: Value| {
        let harness = &harness;
        let url = format!("/keys/{id}/rotate");
        async move { harness.admin(reqwest::Method::POST, &url, Some(body)).await }
    };
    let (status, rotated) = rotate(json!({"grace": "1h", "idempotency_key": "deploy-42"})).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with("kf_dev_"));
    assert_eq!(rotated["id"], id.as_str(), "the key id is stable");
    assert_eq!(rotated["grace_until"], "2026-06-01T13:00:00Z");
    assert_eq!(rotated["budgets"].as_array().unwrap().len(), 1);

    // A retried call does not create a second successor.
    let (status, again) = rotate(json!({"grace": "1h", "idempotency_key": "deploy-42"})).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["key"], new.as_str());
    let (status, refused) = rotate(json!({"grace": "1h"})).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "rotation_in_grace");

    // Both secrets work during the grace period, as one key.
    assert_eq!(ask(old.clone()).await.0, 200);
    assert_eq!(ask(new.clone()).await.0, 200);
    let (_, usage) = harness
        .admin(reqwest::Method::GET, &format!("/usage?key={id}"), None)
        .await;
    assert_eq!(usage["total"]["requests"], 3, "{usage}");

    // After it, the old secret is refused with the reason.
    harness.clock.advance(std::time::Duration::from_secs(3601));
    let (status, error) = ask(old.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["code"], "key_rotated");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grace period ended at 2026-06-01T13:00:00Z"),
        "{error}"
    );
    assert_eq!(ask(new.clone()).await.0, 200);
    // Revoking the key revokes every secret it has.
    let (status, _) = rotate(json!({"grace": "1h"})).await;
    assert_eq!(status, 200);
    let (status, _) = harness
        .admin(reqwest::Method::POST, &format!("/keys/{id}/revoke"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ask(new).await.0, 401);
    let (status, refused) = rotate(json!({})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str().unwrap()),
        (409, "key_revoked")
    );
}
