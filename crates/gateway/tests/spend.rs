//! Spend control end to end: budgets that hold under concurrency, rate
//! limits with the headers SDKs read, limits on requests in flight, and
//! periods that reset on the gateway's (controllable) clock.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;
#[path = "support/reserve.rs"]
mod reserve;

use std::time::Duration;

use common::Harness;
use futures_util::StreamExt;
use serde_json::{Value, json};

fn chat(model: &str, max_tokens: u64, stream: bool) -> Value {
    json!({"model": model, "max_tokens": max_tokens, "stream": stream,
           "messages": [{"role": "user", "content": "hello there"}]})
}

async fn worst_case(harness: &Harness, body: &Value) -> i64 {
    reserve::reserved_for(harness, "/openai/v1/chat/completions", body).await
}

async fn post(harness: &Harness, key: &str, path: &str, body: &Value) -> reqwest::Response {
    harness
        .http
        .post(harness.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn budget(harness: &Harness, id: &str) -> Value {
    let (status, list) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    assert_eq!(status, 200, "{list}");
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no budget {id} in {list}"))
}

async fn key_spend(harness: &Harness, key_id: &str) -> i64 {
    let (status, report) = harness
        .admin(reqwest::Method::GET, &format!("/usage?key={key_id}"), None)
        .await;
    assert_eq!(status, 200, "{report}");
    report["total"]["cost_nano_usd"].as_i64().unwrap()
}

/// Forty streams race for a budget that fits only a few worst cases at a
/// time. Spend never passes the budget, every refusal is a clear
/// `budget_exhausted`, finished requests hold nothing, and the budget then
/// admits requests until exactly the point where a worst case no longer fits.
#[tokio::test]
async fn concurrent_requests_never_overshoot_a_budget_and_never_block_it_falsely() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "racer", "env": "dev", "budgets": [{"amount": 4_000_000, "period": "day"}]}))
        .await;
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
        .await;
    let budget_id = view["budgets"][0]["id"].as_str().unwrap().to_owned();
    let limit = 4_000_000;

    // Slow streams (100 ms an event) keep reservations in flight together.
    // Each costs about a quarter of the budget (12 output tokens), so forty
    // admitted on a check without reservations would spend ten budgets.
    let body = chat("fake-slow", 12, true);
    let fit_at_once = limit / worst_case(&harness, &body).await;
    assert!(fit_at_once >= 2);
    let responses = futures_util::future::join_all((0..40).map(|_| async {
        let response = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, text)
    }))
    .await;
    let mut admitted = 0;
    for (status, text) in &responses {
        match status {
            200 => {
                assert!(text.contains("[DONE]"), "{text}");
                admitted += 1;
            }
            429 => {
                let error: Value = serde_json::from_str(text).unwrap();
                assert_eq!(error["error"]["code"], "budget_exhausted", "{text}");
                assert_eq!(error["error"]["type"], "insufficient_quota", "{text}");
                let message = error["error"]["message"].as_str().unwrap();
                assert!(message.contains(&budget_id), "{message}");
                assert!(
                    message.contains("resets at 2026-06-02T00:00:00Z"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert!(
        admitted >= fit_at_once,
        "the budget fits {fit_at_once} worst cases at once"
    );
    assert!(admitted < 40, "the budget cannot fit forty");

    let status = budget(&harness, &budget_id).await;
    let spent = status["spent_nano_usd"].as_i64().unwrap();
    assert_eq!(
        status["reserved_nano_usd"], 0,
        "finished requests hold nothing: {status}"
    );
    assert!(spent <= limit, "{status}");
    assert_eq!(
        spent,
        key_spend(&harness, &key_id).await,
        "budget and ledger agree"
    );

    // Fill the rest one request at a time: each is admitted while its worst
    // case fits, and the first refusal comes exactly when it no longer does.
    let quick = chat("my-model", 2, false);
    let worst = worst_case(&harness, &quick).await;
    loop {
        let spent = budget(&harness, &budget_id).await["spent_nano_usd"]
            .as_i64()
            .unwrap();
        let response = post(&harness, &key, "/openai/v1/chat/completions", &quick).await;
        if spent + worst <= limit {
            assert_eq!(response.status(), 200, "{spent} + {worst} fits {limit}");
            response.bytes().await.unwrap();
        } else {
            assert_eq!(response.status(), 429, "{spent} + {worst} > {limit}");
            assert_eq!(response.headers()["x-should-retry"], "false");
            break;
        }
    }
    let spent = budget(&harness, &budget_id).await["spent_nano_usd"]
        .as_i64()
        .unwrap();
    assert!(spent <= limit);
    assert_eq!(spent, key_spend(&harness, &key_id).await);
}

#[tokio::test]
async fn project_and_environment_budgets_apply_to_their_keys_and_reset_with_their_period() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("anthropic", "anthropic", "dev").await;
    let (_, shop_key) = harness
        .create_key(json!({"name": "shop", "env": "dev", "project": "shop"}))
        .await;
    let (_, other_key) = harness
        .create_key(json!({"name": "other", "env": "dev", "project": "blog"}))
        .await;
    // A project budget too small for any request.
    let (status, project_budget) = harness
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "project", "name": "shop"}, "limit": {"amount": 1000, "period": "day"}})),
        )
        .await;
    assert_eq!(status, 201, "{project_budget}");

    let body = chat("my-model", 5, false);
    let refused = post(&harness, &shop_key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(refused.status(), 429);
    // Noon: twelve hours until the daily budget resets.
    assert_eq!(refused.headers()["retry-after"], "43200");
    let error: Value = refused.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("daily budget of project `shop`") && message.contains("$0.000001/day"),
        "{message}"
    );
    // The same refusal in Anthropic's shape for Anthropic clients.
    let anthropic = harness
        .http
        .post(harness.url("/anthropic/v1/messages"))
        .header("x-api-key", &shop_key)
        .json(&json!({"model": "my-model", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 429);
    let error: Value = anthropic.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "rate_limit_error");
    // Another project is not affected.
    let other = post(&harness, &other_key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(other.status(), 200);

    // Raising the budget takes effect at once and keeps the budget's id.
    let (status, raised) = harness
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "project", "name": "shop"}, "limit": {"amount": 1_000_000_000, "period": "day"}})),
        )
        .await;
    assert_eq!(status, 200, "{raised}");
    assert_eq!(raised["id"], project_budget["id"]);
    let allowed = post(&harness, &shop_key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(allowed.status(), 200);

    // An environment budget covers every key of the environment. This one
    // leaves room for one more request in a fresh hour, but not on top of
    // what the environment spent this hour.
    let worst = worst_case(&harness, &body).await;
    let (_, usage) = harness
        .admin(reqwest::Method::GET, "/usage?env=dev&since=1h", None)
        .await;
    let spent_this_hour = usage["total"]["cost_nano_usd"].as_i64().unwrap();
    assert!(spent_this_hour > 0, "{usage}");
    let (status, env_budget) = harness
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "env", "name": "dev"}, "limit": {"amount": spent_this_hour + worst - 1, "period": "hour"}})),
        )
        .await;
    assert_eq!(status, 201, "{env_budget}");
    assert_eq!(
        env_budget["spent_nano_usd"], spent_this_hour,
        "a new budget counts this period's ledger"
    );
    let refused = post(&harness, &other_key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(refused.status(), 429);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hourly budget of environment `dev`"),
        "{error}"
    );
    // The next hour, the hourly budget starts afresh.
    harness.clock.advance(Duration::from_secs(3600));
    let allowed = post(&harness, &other_key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(allowed.status(), 200);
    let env_now = budget(&harness, env_budget["id"].as_str().unwrap()).await;
    assert_eq!(env_now["period_start"], "2026-06-01T13:00:00Z");
    assert!(env_now["spent_nano_usd"].as_i64().unwrap() > 0);

    // Removing a budget lifts it.
    let removed = harness
        .http
        .delete(harness.url(&format!(
            "/admin/v1/budgets/{}",
            env_budget["id"].as_str().unwrap()
        )))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let (status, _) = harness
        .admin(
            reqwest::Method::DELETE,
            &format!("/budgets/{}", env_budget["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn requests_per_minute_answer_429_with_retry_after_and_ratelimit_headers() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "rpm", "env": "dev", "limits": {"rpm": 3}}))
        .await;
    let body = chat("gpt-4o-mini", 3, false);
    for remaining in ["2", "1", "0"] {
        let response = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
    }
    let refused = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(refused.status(), 429);
    let headers = refused.headers().clone();
    // Three a minute: the next one is free twenty seconds on.
    assert_eq!(headers["retry-after"], "20");
    assert_eq!(headers["retry-after-ms"], "20000");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-reset-requests"], "1m0s");
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3 requests per minute; retry in 20s"),
        "{error}"
    );
    // The refused request reached no provider.
    assert_eq!(harness.upstream.requests().len(), 3);

    harness.clock.advance(Duration::from_secs(19));
    let still = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(still.status(), 429);
    assert_eq!(still.headers()["retry-after"], "1");
    harness.clock.advance(Duration::from_secs(1));
    let allowed = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(allowed.status(), 200);
}

#[tokio::test]
async fn tokens_per_minute_count_the_estimate_then_the_actual_usage() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "tpm", "env": "dev", "limits": {"tpm": 120}}))
        .await;
    // Estimate: a quarter token per body byte plus max_tokens = about 100.
    let body = chat("gpt-4o-mini", 70, false);
    let first = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-limit-tokens"], "120");
    let first: Value = first.json().await.unwrap();
    // The fake generated only 12 tokens of the 70 allowed: the difference
    // came back, so a second request of the same size fits (14 + 100).
    assert_eq!(first["usage"]["completion_tokens"], 12);
    let second = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(second.status(), 200);
    // Two requests' actual tokens plus a third's estimate (28 + 100) no
    // longer do.
    let third = post(&harness, &key, "/openai/v1/chat/completions", &body).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("x-ratelimit-reset-tokens"));
    let error: Value = third.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 120 tokens per minute"),
        "{error}"
    );
    // A request that could never fit says so, and asks not to be retried.
    let huge = post(
        &harness,
        &key,
        "/openai/v1/chat/completions",
        &chat("gpt-4o-mini", 5000, false),
    )
    .await;
    assert_eq!(huge.status(), 429);
    assert_eq!(huge.headers()["x-should-retry"], "false");
    let error: Value = huge.json().await.unwrap();
    assert_eq!(error["error"]["code"], "request_too_large_for_limit");
}

#[tokio::test]
async fn max_parallel_limits_requests_in_flight_and_frees_places_when_streams_end() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "one-at-a-time", "env": "dev", "limits": {"max_parallel": 1}}))
        .await;
    let stream = post(
        &harness,
        &key,
        "/openai/v1/chat/completions",
        &chat("fake-slow", 5, true),
    )
    .await;
    assert_eq!(stream.status(), 200);
    let mut chunks = stream.bytes_stream();
    chunks.next().await.unwrap().unwrap();

    let second = post(
        &harness,
        &key,
        "/openai/v1/chat/completions",
        &chat("m", 2, false),
    )
    .await;
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "1");
    let error: Value = second.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_parallel_requests");

    // The client walks away mid-stream: its place is freed.
    drop(chunks);
    let mut freed = false;
    for _ in 0..50 {
        let again = post(
            &harness,
            &key,
            "/openai/v1/chat/completions",
            &chat("m", 2, false),
        )
        .await;
        if again.status() == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the cancelled stream's place was never freed");
}

#[tokio::test]
async fn bad_limits_and_budgets_are_refused_with_clear_errors() {
    let harness = Harness::start().await;
    for (spec, needle) in [
        (
            json!({"name": "k", "env": "dev", "limits": {"rpm": 0}}),
            "at least 1",
        ),
        (
            json!({"name": "k", "env": "dev", "budgets": [{"amount": 5, "period": "day"}, {"amount": 9, "period": "day"}]}),
            "same period",
        ),
        (
            json!({"name": "k", "env": "dev", "budgets": [{"amount": 0, "period": "day"}]}),
            "greater than zero",
        ),
        (
            json!({"name": "k", "env": "dev", "project": "Not A Name"}),
            "lowercase",
        ),
    ] {
        let (status, body) = harness
            .admin(reqwest::Method::POST, "/keys", Some(spec.clone()))
            .await;
        assert_eq!(status, 400, "{spec}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{spec}: {body}"
        );
    }
    let (status, body) = harness
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "key", "name": "key_0000000000000000"}, "limit": {"amount": 5, "period": "day"}})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = harness
        .admin(reqwest::Method::DELETE, "/budgets/nope", None)
        .await;
    assert_eq!(status, 400);
}
