//! Rogue-client detection with a simulated runaway client on a controllable
//! clock: a spike against the key's own baseline suspends a key created with
//! `on_anomaly: suspend`, a new client address and a burst of refused
//! requests raise alerts.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use keyforge_control::AnomalyConfig;
use keyforge_gateway::GatewayConfig;
use keyforge_testkit::WebhookSink;
use serde_json::{Value, json};

async fn harness() -> Harness {
    Harness::start_with(GatewayConfig {
        alert_retry_base: Duration::from_millis(10),
        anomaly: AnomalyConfig {
            spike_min_requests: 20,
            learning_minutes: 3,
            ..AnomalyConfig::default()
        },
        ..GatewayConfig::default()
    })
    .await
}

async fn ask(harness: &Harness, http: &reqwest::Client, key: &str) -> u16 {
    let response = http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

async fn wait_for_anomaly(harness: &Harness, needle: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        if let Some(alert) = log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "anomaly" && a["message"].as_str().unwrap().contains(needle))
        {
            return alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no anomaly alert with `{needle}`: {log:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_runaway_client_is_detected_and_its_key_suspended_until_resumed() {
    let harness = harness().await;
    harness.add_provider("openai", "openai", "dev").await;
    let sink = WebhookSink::start(0).await.unwrap();
    let (status, _) = harness
        .admin(
            reqwest::Method::POST,
            "/alerts",
            Some(json!({"url": sink.url("/hook")})),
        )
        .await;
    assert_eq!(status, 201);
    let (key_id, key) = harness
        .create_key(json!({"name": "agent", "env": "dev", "on_anomaly": "suspend"}))
        .await;
    let (_, bystander) = harness
        .create_key(json!({"name": "bystander", "env": "dev", "on_anomaly": "suspend"}))
        .await;

    // Three quiet minutes: two requests a minute.
    for _ in 0..3 {
        for _ in 0..2 {
            assert_eq!(ask(&harness, &harness.http, &key).await, 200);
        }
        harness.clock.advance(Duration::from_secs(60));
    }
    // Then the agent loops: the twentieth request this minute is the spike,
    // and the key is refused from the next one on.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(ask(&harness, &harness.http, &key).await);
    }
    let admitted = statuses.iter().take_while(|s| **s == 200).count();
    assert_eq!(admitted, 20, "{statuses:?}");
    assert!(
        statuses[admitted..].iter().all(|s| *s == 403),
        "{statuses:?}"
    );
    assert_eq!(harness.upstream.requests().len(), 6 + 20);
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "key_suspended");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("keyforge key resume {key_id}")),
        "{error}"
    );
    // Other keys are untouched.
    assert_eq!(ask(&harness, &harness.http, &bystander).await, 200);

    let alert = wait_for_anomaly(&harness, "request spike").await;
    assert_eq!(alert["key_id"], key_id.as_str());
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("20 requests this minute"),
        "{alert}"
    );
    // The suspension is recorded: the key shows it, and it holds in the store.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = harness
            .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
            .await;
        if view["status"] == "suspended" {
            assert!(
                view["suspended_reason"]
                    .as_str()
                    .unwrap()
                    .contains("request spike"),
                "{view}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The webhook heard about it, with the way out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sink.received().iter().any(|(_, p)| p["kind"] == "anomaly") {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, payload) = sink
        .received()
        .into_iter()
        .find(|(_, p)| p["kind"] == "anomaly")
        .unwrap();
    assert_eq!(payload["rule"], "spike");
    assert_eq!(payload["suspended"], true);
    assert!(
        payload["text"].as_str().unwrap().contains("suspended"),
        "{payload}"
    );

    // An operator resumes the key.
    let (status, view) = harness
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{key_id}/resume"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "active");
    harness.clock.advance(Duration::from_secs(60));
    assert_eq!(ask(&harness, &harness.http, &key).await, 200);
}

#[tokio::test]
async fn a_new_client_address_raises_an_alert_without_suspending() {
    let harness = harness().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "svc", "env": "dev"}))
        .await;
    assert_eq!(ask(&harness, &harness.http, &key).await, 200);
    // Past the learning hour, the key shows up from another machine.
    harness.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(ask(&harness, &harness.http, &key).await, 200);
    let elsewhere = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    assert_eq!(
        ask(&harness, &elsewhere, &key).await,
        200,
        "alert only: still served"
    );
    let alert = wait_for_anomaly(&harness, "new client address, 127.0.0.2").await;
    assert_eq!(alert["key_id"], key_id.as_str());
    // Once per address.
    assert_eq!(ask(&harness, &elsewhere, &key).await, 200);
    let (_, log) = harness
        .admin(reqwest::Method::GET, "/alerts/log", None)
        .await;
    assert_eq!(log["alerts"].as_array().unwrap().len(), 1, "{log}");
}

#[tokio::test]
async fn a_burst_of_refused_requests_against_one_key_raises_an_alert() {
    // The default rule: twenty refusals within a minute.
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "leaked", "env": "dev", "models": ["gpt-4o-mini"]}))
        .await;
    let (status, _) = harness
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{key_id}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    for _ in 0..25 {
        assert_eq!(ask(&harness, &harness.http, &key).await, 401);
    }
    let alert = wait_for_anomaly(&harness, "20 refused requests").await;
    assert_eq!(alert["key_id"], key_id.as_str());
}
