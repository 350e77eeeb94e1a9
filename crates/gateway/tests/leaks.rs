//! `POST /keyforge/v1/leaks`, the unauthenticated leak-report endpoint: it
//! revokes only secrets that authenticate today, and a flood of reports
//! cannot flood the audit log.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

#[expect(dead_code, reason = "this test needs only part of the shared harness")]
mod common;

use std::time::Duration;

use common::Harness;
use serde_json::{Value, json};

async fn report(harness: &Harness, body: &Value) -> (u16, Value) {
    let response = harness
        .http
        .post(harness.url("/keyforge/v1/leaks"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// How `key` fares on a self-service call: 200 while it authenticates.
async fn self_status(harness: &Harness, key: &str) -> u16 {
    harness
        .http
        .get(harness.url("/keyforge/v1/keys/self"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn audit_kinds(harness: &Harness, kind: &str) -> Vec<Value> {
    harness
        .http
        .get(harness.url("/admin/v1/audit?limit=1000"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["kind"] == kind)
        .collect()
}

#[tokio::test]
async fn a_rotated_out_secret_does_not_revoke_its_live_successor() {
    let harness = Harness::start().await;
    let (id, old) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let (status, rotated) = harness
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    harness.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(self_status(&harness, &old).await, 401, "past its grace");

    let (status, answer) = report(&harness, &json!([{"token": old, "url": "https://x"}])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["outcome"], "inactive", "{answer}");
    assert_eq!(
        self_status(&harness, &new).await,
        200,
        "the live secret still works"
    );
    assert!(audit_kinds(&harness, "key.leaked").await.is_empty());
    assert!(audit_kinds(&harness, "key.revoke").await.is_empty());

    // The live secret does revoke.
    let (status, answer) = report(&harness, &json!([{"token": new}])).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer[0]["outcome"], "revoked", "{answer}");
    assert_eq!(answer[0]["label"], "true_positive", "{answer}");
    assert_eq!(self_status(&harness, &new).await, 401);
}

#[tokio::test]
async fn a_secret_in_its_grace_window_still_revokes() {
    let harness = Harness::start().await;
    let (id, old) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let (status, rotated) = harness
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    let (_, answer) = report(&harness, &json!([{"token": old}, {"token": new}])).await;
    assert_eq!(answer[0]["outcome"], "revoked", "{answer}");
    assert_eq!(
        answer[1]["outcome"], "inactive",
        "the same key, already revoked: {answer}"
    );
    assert_eq!(self_status(&harness, &new).await, 401);
    assert_eq!(audit_kinds(&harness, "key.leaked").await.len(), 1);
}

#[tokio::test]
async fn a_flood_of_duplicates_writes_one_bounded_audit_entry() {
    let harness = Harness::start().await;
    let (id, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let long_url = format!("https://github.com/acme/app/blob/{}", "é".repeat(1000));
    let entry = json!({"token": key, "url": long_url, "source": "s".repeat(200)});

    // Over the count limit: refused whole, nothing revoked.
    let small = json!({"token": key, "url": "https://x"});
    let (status, answer) = report(&harness, &Value::Array(vec![small; 1000])).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_tokens", "{answer}");
    assert_eq!(self_status(&harness, &key).await, 200);

    let (status, answer) = report(&harness, &Value::Array(vec![entry.clone(); 100])).await;
    assert_eq!(status, 200, "{answer}");
    let answer = answer.as_array().unwrap();
    assert_eq!(answer.len(), 100, "a label per entry, by position");
    assert!(
        answer.iter().all(|label| label["outcome"] == "revoked"),
        "{answer:?}"
    );
    let leaked = audit_kinds(&harness, "key.leaked").await;
    assert_eq!(leaked.len(), 1);
    assert_eq!(leaked[0]["data"]["id"], id.as_str());
    assert_eq!(
        leaked[0]["data"]["url"].as_str().unwrap().chars().count(),
        512
    );
    assert_eq!(
        leaked[0]["data"]["source"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        64
    );

    // Reported again: already revoked, not audited again.
    let (_, answer) = report(&harness, &json!([entry])).await;
    assert_eq!(answer[0]["outcome"], "inactive", "{answer}");
    assert_eq!(audit_kinds(&harness, "key.leaked").await.len(), 1);

    // A body over the size limit is refused before it is parsed.
    let huge = json!([{"token": "x", "url": "u".repeat(300 * 1024)}]);
    let (status, answer) = report(&harness, &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "report_too_large", "{answer}");
}

#[tokio::test]
async fn reports_are_rate_limited_per_client_address() {
    let harness = Harness::start().await;
    for _ in 0..30 {
        let (status, answer) = report(&harness, &json!([])).await;
        assert_eq!(status, 200, "{answer}");
    }
    let response = harness
        .http
        .post(harness.url("/keyforge/v1/leaks"))
        .json(&json!([]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    harness.clock.advance(Duration::from_secs(2));
    assert_eq!(report(&harness, &json!([])).await.0, 200);
}
