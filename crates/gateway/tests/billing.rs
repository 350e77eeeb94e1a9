//! Nothing sent to a provider goes unbilled or unaudited: clients that
//! leave before the answer, responses without usage, endpoints billed by
//! something other than tokens. Each case checks what an operator would:
//! the ledger (`/usage`), the budget, and the audit log's `key.use` entries.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use serde_json::{Value, json};

async fn usage_row(harness: &Harness, key_id: &str) -> Option<Value> {
    let (status, report) = harness
        .admin(reqwest::Method::GET, "/usage?by=key&since=1d", None)
        .await;
    assert_eq!(status, 200, "{report}");
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == key_id)
        .cloned()
}

/// Polls the ledger until the key has `requests` rows (a drained request
/// is settled in the background).
async fn wait_for_rows(harness: &Harness, key_id: &str, requests: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(row) = usage_row(harness, key_id).await
            && row["requests"].as_u64() == Some(requests)
        {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "the ledger never reached {requests} rows for {key_id}: {:?}",
            usage_row(harness, key_id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn key_uses(harness: &Harness) -> Vec<Value> {
    let text = harness
        .http
        .get(harness.url("/admin/v1/audit?limit=200"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry["kind"] == "key.use")
        .flat_map(|entry| {
            entry["data"]["uses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

async fn budget_of(harness: &Harness, key_id: &str) -> Value {
    let (status, key) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
        .await;
    assert_eq!(status, 200, "{key}");
    let budget_id = key["budgets"][0]["id"].as_str().unwrap().to_owned();
    let (_, list) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == budget_id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no budget {budget_id} in {list}"))
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_is_billed_and_audited() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "impatient", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    // The upstream thinks for 400 ms; the client gives up after 100 ms,
    // once with a plain request and once with a stream.
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o-mini", "user": "fake-wait", "stream": stream, "max_tokens": 5,
                          "messages": [{"role": "user", "content": "one two three four"}]});
        let error = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .timeout(Duration::from_millis(100))
            .json(&body)
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error}");
    }
    let row = wait_for_rows(&harness, &key_id, 2).await;
    // The gateway kept reading the provider's answers to their end: the
    // provider's own counts (4 prompt words + the role, 5 words out), not
    // estimates.
    assert_eq!(row["client_cancelled"], 2, "{row}");
    assert_eq!(row["estimated"], 0, "{row}");
    assert_eq!(row["output_tokens"], 10, "{row}");
    assert!(row["input_tokens"].as_u64().unwrap() >= 8, "{row}");
    assert!(row["cost_nano_usd"].as_i64().unwrap() > 0, "{row}");
    // Both are in the audit log, with their outcome.
    let uses = key_uses(&harness).await;
    let cancelled: Vec<&Value> = uses
        .iter()
        .filter(|u| u["key_id"] == key_id.as_str() && u["outcome"] == "client_cancelled")
        .collect();
    assert_eq!(cancelled.len(), 2, "{uses:#?}");
    // The budget holds the spend and nothing stays reserved.
    let budget = budget_of(&harness, &key_id).await;
    assert_eq!(budget["reserved_nano_usd"], 0, "{budget}");
    assert_eq!(budget["spent_nano_usd"], row["cost_nano_usd"], "{budget}");
}

#[tokio::test]
async fn responses_without_anything_priceable_are_charged_the_fallback_and_flagged() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "painter", "env": "dev", "budgets": [{"amount": 120_000_000, "period": "day"}]}))
        .await;
    // An image model the price table does not know: its response (like
    // DALL-E's) carries no usage at all.
    let generate = || {
        harness
            .http
            .post(harness.url("/openai/v1/images/generations"))
            .bearer_auth(&key)
            .json(&json!({"model": "fake-image-model", "prompt": "a lighthouse", "n": 1}))
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = generate().await.unwrap();
        statuses.push(response.status().as_u16());
        response.bytes().await.unwrap();
    }
    // $0.05 a request against $0.12: two fit, the third is refused up front.
    assert_eq!(statuses, [200, 200, 429]);
    // An operator hears of it: one `unmetered` alert (deduplicated hourly).
    let deadline = Instant::now() + Duration::from_secs(10);
    let unmetered = loop {
        let (_, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        let found: Vec<Value> = log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|alert| {
                alert["message"]
                    .as_str()
                    .unwrap()
                    .contains("unmetered fallback")
            })
            .cloned()
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(unmetered.len(), 1, "{unmetered:?}");
    assert!(
        unmetered[0]["message"]
            .as_str()
            .unwrap()
            .contains("fake-image-model"),
        "{unmetered:?}"
    );
    let row = wait_for_rows(&harness, &key_id, 2).await;
    assert_eq!(row["unmetered"], 2, "{row}");
    assert_eq!(row["cost_nano_usd"], 100_000_000, "{row}");
    let budget = budget_of(&harness, &key_id).await;
    assert_eq!(budget["spent_nano_usd"], 100_000_000, "{budget}");
    assert_eq!(budget["reserved_nano_usd"], 0, "{budget}");
    // Reading models costs nothing and is never flagged.
    let response = harness
        .http
        .get(harness.url("/openai/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let row = wait_for_rows(&harness, &key_id, 3).await;
    assert_eq!(row["unmetered"], 2, "{row}");
    assert_eq!(row["cost_nano_usd"], 100_000_000, "{row}");
    // The next day, the daily budget admits a generation again.
    harness.clock.advance(Duration::from_secs(86_400));
    let response = generate().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
}

/// Revoking a key (or its parent) ends its open streams within a second,
/// not at the end of the stream, and bills what was delivered.
#[tokio::test]
async fn revocation_ends_open_streams_at_once() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (parent_id, _) = harness
        .create_key(json!({"name": "orchestrator", "env": "dev", "can_mint": true}))
        .await;
    let (child_id, child_key) = harness
        .create_key(json!({"name": "agent", "env": "dev", "parent": parent_id}))
        .await;
    let (own_id, own_key) = harness
        .create_key(json!({"name": "streamer", "env": "dev"}))
        .await;
    // A slow stream: twelve events 100 ms apart.
    let body = json!({"model": "fake-slow", "max_tokens": 12, "stream": true,
                      "messages": [{"role": "user", "content": "tell me a story"}]});
    for (key_id, key, revoked) in [
        (&own_id, &own_key, &own_id),
        (&child_id, &child_key, &parent_id),
    ] {
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        // The first event arrives; then the key (or its parent) is revoked.
        let first = futures_util::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        assert!(!first.is_empty());
        let (status, _) = harness
            .admin(
                reqwest::Method::POST,
                &format!("/keys/{revoked}/revoke"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let revoked_at = Instant::now();
        let mut rest = Vec::new();
        let mut cut = false;
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            match chunk {
                Ok(bytes) => rest.extend_from_slice(&bytes),
                Err(_) => {
                    cut = true;
                    break;
                }
            }
        }
        assert!(
            cut,
            "the stream was ended as an error, not as a whole response"
        );
        assert!(
            revoked_at.elapsed() < Duration::from_millis(900),
            "the stream went on for {:?} after the revocation",
            revoked_at.elapsed()
        );
        let rest = String::from_utf8_lossy(&rest);
        assert!(!rest.contains("[DONE]"), "{rest}");
        let row = wait_for_rows(&harness, key_id, 1).await;
        assert_eq!(row["estimated"], 1, "{row}");
        assert!(row["output_tokens"].as_u64().unwrap() >= 1, "{row}");
    }
    let outcomes: Vec<Value> = key_uses(&harness)
        .await
        .into_iter()
        .map(|used| used["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("key_revoked"), json!("key_revoked")]);
}

/// Found by a tester: work whose cost a request cannot bound is refused to
/// budgeted keys, a transcription without usage is never free, and
/// reading a stored response does not bill it again.
#[tokio::test]
async fn unbounded_work_unpriced_audio_and_retrievals() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "careful", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    for (path, body) in [
        (
            "/openai/v1/batches",
            json!({"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"}),
        ),
        ("/openai/v1/threads/runs", json!({"assistant_id": "asst_1"})),
        (
            "/openai/v1/threads/thread_1/runs",
            json!({"assistant_id": "asst_1"}),
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
        assert_eq!(response.status(), 403, "{path}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unbounded_cost", "{error}");
    }
    // whisper-1 answering plain `{"text"}`: no duration, so the flagged
    // fallback, not $0.
    let form = reqwest::multipart::Form::new()
        .text("model", "whisper-1")
        .part(
            "file",
            reqwest::multipart::Part::bytes(vec![0_u8; 64]).file_name("a.mp3"),
        );
    let response = harness
        .http
        .post(harness.url("/openai/v1/audio/transcriptions"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let row = wait_for_rows(&harness, &key_id, 1).await;
    assert_eq!(row["unmetered"], 1, "{row}");
    assert_eq!(row["cost_nano_usd"], 50_000_000, "{row}");
    // A stored response read back repeats its usage: not billed again.
    let response = harness
        .http
        .get(harness.url("/openai/v1/responses/resp_earlier"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    let row = wait_for_rows(&harness, &key_id, 2).await;
    assert_eq!(row["cost_nano_usd"], 50_000_000, "{row}");
    assert_eq!(row["input_tokens"], 0, "{row}");
}
