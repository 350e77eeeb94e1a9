//! Upstream health: "my key is broken" (the provider answers 401/403) told
//! apart from "the provider is having a day" (5xx, 429), per provider key
//! version, with an alert when a provider starts rejecting its key.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use serde_json::{Value, json};

async fn ask(harness: &Harness, key: &str, model: &str) -> u16 {
    harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn verdict(harness: &Harness) -> Value {
    let (status, report) = harness.admin(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{report}");
    report["providers"][0].clone()
}

#[tokio::test]
async fn status_tells_a_rejected_key_from_a_failing_provider() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    assert_eq!(verdict(&harness).await["verdict"], "idle");
    assert_eq!(ask(&harness, &key, "gpt-4o-mini").await, 200);
    let healthy = verdict(&harness).await;
    assert_eq!(healthy["verdict"], "healthy", "{healthy}");
    assert_eq!(healthy["versions"][0]["ok"], 1);

    // The provider has an outage, then rate limits: not the key's fault.
    harness.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(ask(&harness, &key, "fake-error-500").await, 500);
    assert_eq!(ask(&harness, &key, "gpt-4o-mini").await, 200);
    let failing = verdict(&harness).await;
    assert_eq!(failing["verdict"], "provider_failing", "{failing}");
    assert!(
        failing["detail"]
            .as_str()
            .unwrap()
            .contains("1 of 2 requests failed"),
        "{failing}"
    );
    harness.clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(ask(&harness, &key, "fake-rate-limit").await, 429);
    assert_eq!(verdict(&harness).await["verdict"], "provider_rate_limited");

    // Someone revokes the key at the provider: every request is rejected,
    // status says whose fault it is, and one alert is raised, not one per
    // request.
    harness.clock.advance(Duration::from_secs(16 * 60));
    harness.upstream.revoke_key(&harness.provider_key);
    for _ in 0..5 {
        assert_eq!(ask(&harness, &key, "gpt-4o-mini").await, 401);
    }
    let rejected = verdict(&harness).await;
    assert_eq!(rejected["verdict"], "key_rejected", "{rejected}");
    let detail = rejected["detail"].as_str().unwrap();
    assert!(
        detail.contains("rejected key version 1 on 5")
            && detail.contains("keyforge rotate start openai --env dev"),
        "{detail}"
    );
    assert!(!detail.contains(&harness.provider_key));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        let provider_alerts: Vec<&Value> = log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "provider")
            .collect();
        if !provider_alerts.is_empty() {
            assert_eq!(provider_alerts.len(), 1, "{log}");
            let message = provider_alerts[0]["message"].as_str().unwrap();
            assert!(
                message.contains("rejected its key version 1 with HTTP 401"),
                "{message}"
            );
            assert!(!message.contains(&harness.provider_key));
            break;
        }
        assert!(Instant::now() < deadline, "no provider alert: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
