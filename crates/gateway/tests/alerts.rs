//! Budget alerts end to end: thresholds fire once per period, reach the
//! webhooks that asked for them (retried with backoff when a webhook fails),
//! and are recorded with how each delivery went.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use keyforge_gateway::GatewayConfig;
use keyforge_testkit::WebhookSink;
use serde_json::{Value, json};

async fn alert_log(harness: &Harness) -> Vec<Value> {
    let (status, log) = harness
        .admin(reqwest::Method::GET, "/alerts/log", None)
        .await;
    assert_eq!(status, 200, "{log}");
    log["alerts"].as_array().unwrap().clone()
}

/// Polls until `done` holds for the alert log (deliveries run in the
/// background).
async fn wait_for_log(harness: &Harness, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = alert_log(harness).await;
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "alerts never settled: {log:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn percent_of(alert: &Value) -> Option<u8> {
    let message = alert["message"].as_str().unwrap();
    if message.contains("exhausted") {
        return Some(100);
    }
    let (before, _) = message.split_once("% of its budget")?;
    before.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn budget_thresholds_fire_once_per_period_and_reach_their_webhooks() {
    let harness = Harness::start_with(GatewayConfig {
        alert_retry_base: Duration::from_millis(10),
        ..GatewayConfig::default()
    })
    .await;
    harness.add_provider("openai", "openai", "dev").await;
    // This webhook fails twice before it accepts anything.
    let sink = WebhookSink::start(2).await.unwrap();
    let secret_url = sink.url("/services/T0000/B0000/very-secret-path");
    let (status, webhook) = harness
        .admin(
            reqwest::Method::POST,
            "/alerts",
            Some(json!({"url": secret_url, "thresholds": [100, 50]})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    assert_eq!(webhook["thresholds"], json!([50, 100]));
    let (_, listed) = harness.admin(reqwest::Method::GET, "/alerts", None).await;
    assert_eq!(
        listed["webhooks"][0]["url"],
        format!("http://{}", sink.addr)
    );
    assert!(!listed.to_string().contains("very-secret-path"), "{listed}");
    // A dead webhook: its deliveries fail, and never slow a request.
    let (status, dead) = harness
        .admin(
            reqwest::Method::POST,
            "/alerts",
            Some(json!({"url": "http://127.0.0.1:1/hook"})),
        )
        .await;
    assert_eq!(status, 201, "{dead}");

    let (key_id, key) = harness
        .create_key(json!({"name": "alerted", "env": "dev", "budgets": [{"amount": 3_000_000, "period": "day"}]}))
        .await;
    let body = json!({"model": "my-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]});
    let mut refused = 0;
    for _ in 0..14 {
        let started = Instant::now();
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
        match response.status().as_u16() {
            200 => assert_eq!(refused, 0, "nothing is admitted after a refusal"),
            429 => refused += 1,
            other => panic!("{other}"),
        }
        response.bytes().await.unwrap();
    }
    assert!(refused >= 2, "the budget ran out");

    // 25 % and 50 % were crossed; the refusals raise the 100 % alert once.
    let log = wait_for_log(&harness, |log| {
        log.len() == 3
            && log.iter().all(|a| {
                a["deliveries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|d| d["status"] != "pending")
            })
    })
    .await;
    let mut percents: Vec<u8> = log.iter().filter_map(percent_of).collect();
    percents.sort_unstable();
    assert_eq!(percents, [25, 50, 100], "{log:#?}");
    for alert in &log {
        assert_eq!(alert["kind"], "budget");
        assert_eq!(alert["key_id"], key_id.as_str());
        let deliveries = alert["deliveries"].as_array().unwrap();
        let percent = percent_of(alert).unwrap();
        if percent == 25 {
            // No webhook asked for 25 %: recorded, not delivered.
            assert_eq!(
                deliveries.len(),
                1,
                "only the dead webhook (default thresholds) wants it: {alert}"
            );
        } else {
            assert_eq!(deliveries.len(), 2, "{alert}");
        }
        for delivery in deliveries {
            if delivery["webhook_id"] == dead["id"] {
                assert_eq!(delivery["status"], "failed", "{delivery}");
                assert_eq!(delivery["attempts"], 5, "{delivery}");
                assert_eq!(delivery["last_error"], "could not connect", "{delivery}");
            } else {
                assert_eq!(delivery["status"], "delivered", "{delivery}");
            }
        }
    }
    // The failing webhook got its two alerts after retries.
    let received = sink.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(sink.attempts(), 4);
    for (path, payload) in &received {
        assert_eq!(path, "/services/T0000/B0000/very-secret-path");
        let text = payload["text"].as_str().unwrap();
        // Named, not only by id (issue #14).
        assert!(
            text.contains(&format!("key `alerted` ({key_id}, env dev)")),
            "{text}"
        );
        assert_eq!(payload["key"]["name"], "alerted", "{payload}");
        assert_eq!(payload["kind"], "budget");
        assert_eq!(payload["budget"]["limit_usd"], "$0.003000/day");
        assert_eq!(payload["budget"]["resets_at"], "2026-06-02T00:00:00Z");
    }
    assert!(
        received
            .iter()
            .any(|(_, p)| p["blocked"] == true && p["percent"] == 100)
    );

    // The next day the budget starts again, and so do its alerts.
    harness.clock.advance(Duration::from_secs(86_400));
    for _ in 0..5 {
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let log = wait_for_log(&harness, |log| log.len() == 4).await;
    assert_eq!(percent_of(&log[0]), Some(25), "{log:#?}");
}

#[tokio::test]
async fn bad_webhooks_are_refused_without_echoing_the_url() {
    let harness = Harness::start().await;
    for (body, needle) in [
        (
            json!({"url": "ftp://example.com/secret-token"}),
            "http:// or https://",
        ),
        (
            json!({"url": "not a url secret-token"}),
            "http:// or https://",
        ),
        (
            json!({"url": "https://example.com/secret-token", "thresholds": [0]}),
            "1 to 100",
        ),
        (
            json!({"url": "https://example.com/secret-token", "thresholds": [101]}),
            "1 to 100",
        ),
    ] {
        let (status, answer) = harness
            .admin(reqwest::Method::POST, "/alerts", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(needle), "{answer}");
        assert!(!answer.to_string().contains("secret-token"), "{answer}");
    }
    let (status, _) = harness
        .admin(
            reqwest::Method::DELETE,
            "/alerts/alr_0000000000000000",
            None,
        )
        .await;
    assert_eq!(status, 404);
}
