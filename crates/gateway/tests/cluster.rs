//! Cluster mode end to end: one gateway whose admission counters live in
//! a real Redis (127.0.0.1:6379, or `KEYFORGE_TEST_REDIS_URL`), each test
//! under a key prefix of its own; and a gateway whose Redis is down (a
//! closed port), in both `[redis] on_unavailable` modes.
//!
//! Without a reachable Redis the tests that need one say so and pass,
//! except under `CI=true`, where that is a failure (scripts/test starts
//! one).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a malformed answer or a failed setup must fail the test loudly"
)]

mod common;
#[path = "support/reserve.rs"]
mod reserve;

use std::time::Duration;

use common::Harness;
use keyforge_gateway::{GatewayConfig, OnUnavailable, RedisConfig};
use secrecy::SecretString;
use serde_json::{Value, json};
use time::macros::datetime;

fn redis_url() -> String {
    std::env::var("KEYFORGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn redis() -> Option<redis::aio::MultiplexedConnection> {
    let connection = match redis::Client::open(redis_url()) {
        Ok(client) => client.get_multiplexed_async_connection().await.ok(),
        Err(_) => None,
    };
    if connection.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Redis is not reachable at {} and CI=true: scripts/test must start it",
            redis_url()
        );
        eprintln!("skipped: no Redis at {}", redis_url());
    }
    connection
}

fn config(
    url: String,
    prefix: &str,
    on_unavailable: Option<OnUnavailable>,
    instances: u32,
) -> GatewayConfig {
    GatewayConfig {
        redis: Some(RedisConfig {
            url: SecretString::from(url),
            on_unavailable,
            instances,
            lease: Duration::from_secs(300),
            prefix: prefix.to_owned(),
        }),
        ..GatewayConfig::default()
    }
}

fn chat() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]})
}

async fn post(harness: &Harness, key: &str) -> reqwest::Response {
    harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat())
        .send()
        .await
        .unwrap()
}

async fn get(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> Option<i64> {
    redis::cmd("GET")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

/// A closed port on this machine.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

/// Spend settles into Redis, and a budget another instance spent (written
/// straight into Redis here) refuses this instance's next request, though
/// this instance spent almost nothing of it itself.
#[tokio::test]
async fn a_budget_spent_elsewhere_in_the_cluster_is_refused_here() {
    let Some(mut connection) = redis().await else {
        return;
    };
    let prefix = format!("kftest:{}:", keyforge_types::random_base62(12));
    let harness = Harness::start_with(config(redis_url(), &prefix, None, 1)).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "shared", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
        .await;
    let budget_id = view["budgets"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(post(&harness, &key).await.status(), 200);
    // The harness clock stands at 2026-06-01 12:00 UTC: today's period.
    let day_ms = datetime!(2026-06-01 00:00 UTC).unix_timestamp() * 1000;
    let spent_key = format!("{prefix}spent:{budget_id}:{day_ms}");
    // Settlement runs in a task of its own after the response.
    let mut spent = None;
    for _ in 0..200 {
        spent = get(&mut connection, &spent_key)
            .await
            .filter(|spent| *spent > 0);
        if spent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let spent = spent.expect("the request's cost was settled into Redis");
    assert_eq!(
        get(&mut connection, &format!("{prefix}reserved:{budget_id}")).await,
        Some(0)
    );
    // Another instance spends the rest.
    let _: () = redis::cmd("SET")
        .arg(&spent_key)
        .arg(1_000_000_000_i64)
        .query_async(&mut connection)
        .await
        .unwrap();
    // `GET /budgets` (`keyforge budget list`) shows the cluster's spend.
    let (_, list) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    let listed = list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|budget| budget["id"] == budget_id.as_str())
        .unwrap();
    assert_eq!(listed["spent_nano_usd"], 1_000_000_000_i64, "{listed}");
    let refused = post(&harness, &key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-keyforge-error"], "budget_exhausted");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("$1"),
        "{body}"
    );
    assert!(spent < 1_000_000_000);
    let (_, status) = harness.admin(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status["redis"], "reachable", "{status}");
}

async fn listed_budget(harness: &Harness, id: &str) -> Value {
    let (_, list) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    list["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|budget| budget["id"] == id)
        .cloned()
        .unwrap()
}

/// Forty slow streams race for a budget held in Redis that fits only a few
/// worst cases at once: spend never passes the budget, every refusal is
/// `budget_exhausted`, and once every stream has ended nothing stays
/// reserved and Redis's spend is the ledger's.
#[tokio::test]
async fn concurrent_streams_never_overshoot_a_budget_held_in_redis() {
    if redis().await.is_none() {
        return;
    }
    let prefix = format!("kftest:{}:", keyforge_types::random_base62(12));
    let harness = Harness::start_with(config(redis_url(), &prefix, None, 1)).await;
    harness.add_provider("openai", "openai", "dev").await;
    let limit = 4_000_000_i64;
    let (key_id, key) = harness
        .create_key(
            json!({"name": "racer", "env": "dev", "budgets": [{"amount": limit, "period": "day"}]}),
        )
        .await;
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
        .await;
    let budget_id = view["budgets"][0]["id"].as_str().unwrap().to_owned();
    let body = json!({"model": "fake-slow", "max_tokens": 12, "stream": true,
                      "messages": [{"role": "user", "content": "hello there"}]});
    let fit_at_once =
        limit / reserve::reserved_for(&harness, "/openai/v1/chat/completions", &body).await;
    assert!(fit_at_once >= 2);
    let responses = futures_util::future::join_all((0..40).map(|_| async {
        let response = harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }))
    .await;
    let mut admitted = 0;
    for (status, text) in &responses {
        match status {
            200 => {
                assert!(text.contains("[DONE]"), "{text}");
                admitted += 1;
            }
            429 => assert!(text.contains("budget_exhausted"), "{text}"),
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert!(
        admitted >= fit_at_once,
        "the budget fits {fit_at_once} worst cases at once"
    );
    assert!(admitted < 40, "the budget cannot fit forty");
    // Settlements run in tasks of their own after each stream ends.
    let mut status = listed_budget(&harness, &budget_id).await;
    for _ in 0..300 {
        if status["reserved_nano_usd"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        status = listed_budget(&harness, &budget_id).await;
    }
    assert_eq!(
        status["reserved_nano_usd"], 0,
        "finished requests hold nothing: {status}"
    );
    let spent = status["spent_nano_usd"].as_i64().unwrap();
    assert!(spent > 0 && spent <= limit, "{status}");
    let (_, usage) = harness
        .admin(reqwest::Method::GET, &format!("/usage?key={key_id}"), None)
        .await;
    assert_eq!(
        usage["total"]["cost_nano_usd"].as_i64().unwrap(),
        spent,
        "Redis and the ledger agree"
    );
}

/// RPM is counted in Redis: the third request of an RPM-2 key is refused,
/// and once the shared counter is gone (as if the minute had passed for
/// the whole cluster) it is admitted again.
#[tokio::test]
async fn requests_per_minute_are_counted_in_redis() {
    let Some(mut connection) = redis().await else {
        return;
    };
    let prefix = format!("kftest:{}:", keyforge_types::random_base62(12));
    let harness = Harness::start_with(config(redis_url(), &prefix, None, 1)).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "rpm", "env": "dev", "limits": {"rpm": 2}}))
        .await;
    for remaining in ["1", "0"] {
        let response = post(&harness, &key).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["x-ratelimit-remaining-requests"],
            remaining
        );
    }
    let refused = post(&harness, &key).await;
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["x-keyforge-error"], "rate_limit_exceeded");
    assert_eq!(refused.headers()["retry-after"], "30");
    // Thirty seconds on (the gateway's clock), one request's worth is back.
    harness.clock.advance(Duration::from_secs(30));
    assert_eq!(post(&harness, &key).await.status(), 200);
    assert_eq!(post(&harness, &key).await.status(), 429);
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}rate:{key_id}:rpm"))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(post(&harness, &key).await.status(), 200);
}

/// Redis unreachable, default mode: a key with a budget gets a 503 in the
/// dialect's shape and is never forwarded; a key without one is served,
/// counted locally. With `fail_closed` for every key, that one is refused
/// too.
#[tokio::test]
async fn redis_down_fails_closed_for_budgets() {
    let harness = Harness::start_with(config(closed_port_url(), "kf:", None, 1)).await;
    harness.add_provider("openai", "openai", "dev").await;
    harness.add_provider("anthropic", "anthropic", "dev").await;
    let (_, budgeted) = harness
        .create_key(json!({"name": "b", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    let (_, limited) = harness
        .create_key(json!({"name": "l", "env": "dev", "limits": {"rpm": 100}}))
        .await;
    let refused = post(&harness, &budgeted).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused.headers()["x-keyforge-error"],
        "admission_unavailable"
    );
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admission counters"),
        "{body}"
    );
    // Anthropic clients get Anthropic's shape.
    let anthropic = harness
        .http
        .post(harness.url("/anthropic/v1/messages"))
        .header("x-api-key", &budgeted)
        .json(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 503);
    let body: Value = anthropic.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert!(
        harness.upstream.requests().is_empty(),
        "nothing was forwarded unmetered"
    );
    assert_eq!(post(&harness, &limited).await.status(), 200);

    let strict = Harness::start_with(config(
        closed_port_url(),
        "kf:",
        Some(OnUnavailable::FailClosed),
        1,
    ))
    .await;
    strict.add_provider("openai", "openai", "dev").await;
    let (_, limited) = strict
        .create_key(json!({"name": "l", "env": "dev", "limits": {"rpm": 100}}))
        .await;
    assert_eq!(post(&strict, &limited).await.status(), 503);
}

/// Redis unreachable, `local` with 2 instances: each enforces half of each
/// limit, budgets included, and serves.
#[tokio::test]
async fn redis_down_in_local_mode_enforces_this_instances_share() {
    let harness = Harness::start_with(config(
        closed_port_url(),
        "kf:",
        Some(OnUnavailable::Local),
        2,
    ))
    .await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "rpm", "env": "dev", "limits": {"rpm": 4}}))
        .await;
    assert_eq!(post(&harness, &key).await.status(), 200);
    assert_eq!(post(&harness, &key).await.status(), 200);
    let refused = post(&harness, &key).await;
    assert_eq!(refused.status(), 429, "half of 4 a minute");
    let (_, budgeted) = harness
        .create_key(json!({"name": "b", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    assert_eq!(post(&harness, &budgeted).await.status(), 200);

    // The embedded default (no Redis) enforces the whole limit.
    let embedded = Harness::start().await;
    embedded.add_provider("openai", "openai", "dev").await;
    let (_, key) = embedded
        .create_key(json!({"name": "rpm", "env": "dev", "limits": {"rpm": 4}}))
        .await;
    for _ in 0..4 {
        assert_eq!(post(&embedded, &key).await.status(), 200);
    }
    assert_eq!(post(&embedded, &key).await.status(), 429);
}

/// Kills the private redis-server this test started when the test ends.
struct ChildRedis(std::process::Child);

impl Drop for ChildRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis is down when the gateway starts, then comes up (empty) on its
/// port: the gateway reconnects by itself, rebuilds spend from the store
/// at the first reservation, and serves the budgeted key again.
#[tokio::test]
async fn the_gateway_reconnects_when_redis_comes_back_empty() {
    if redis().await.is_none() {
        return;
    }
    let url = closed_port_url();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let harness = Harness::start_with(config(url.clone(), "kf:", None, 1)).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "b", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    assert_eq!(post(&harness, &key).await.status(), 503);
    let _server = ChildRedis(
        std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)"),
    );
    let client = redis::Client::open(url).unwrap();
    let mut connection = None;
    for _ in 0..100 {
        if let Ok(ready) = client.get_multiplexed_async_connection().await {
            connection = Some(ready);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = connection.expect("the private redis-server started");
    let mut status = 0;
    for _ in 0..100 {
        status = post(&harness, &key).await.status().as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "served again once Redis answers");
    let marker: Option<i64> = redis::cmd("GET")
        .arg("kf:marker")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(marker.is_some(), "spend was rebuilt into the empty Redis");
    let (_, report) = harness.admin(reqwest::Method::GET, "/status", None).await;
    assert_eq!(report["redis"], "reachable", "{report}");
}

/// Starts a private redis-server on a free port and waits for it.
async fn private_redis() -> (ChildRedis, String, redis::aio::MultiplexedConnection) {
    let url = closed_port_url();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let server = ChildRedis(
        std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)"),
    );
    let client = redis::Client::open(url.clone()).unwrap();
    for _ in 0..100 {
        if let Ok(connection) = client.get_multiplexed_async_connection().await {
            return (server, url, connection);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the private redis-server did not start");
}

/// Redis goes away mid-day with `local` over 2 instances: this instance
/// then counts the budget at half its limit on top of the cluster's spend
/// as it last saw it in Redis (90 %), not its own (almost nothing), so it
/// refuses rather than let the cluster pass the budget.
#[tokio::test]
async fn local_fallback_starts_from_the_clusters_spend() {
    if redis().await.is_none() {
        return;
    }
    let (server, url, mut connection) = private_redis().await;
    let harness = Harness::start_with(config(url, "kf:", Some(OnUnavailable::Local), 2)).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "b", "env": "dev", "budgets": [{"amount": 1_000_000_000, "period": "day"}]}))
        .await;
    let (_, view) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{key_id}"), None)
        .await;
    let budget_id = view["budgets"][0]["id"].as_str().unwrap().to_owned();
    // The other instance has spent 90 cents.
    let day_ms = datetime!(2026-06-01 00:00 UTC).unix_timestamp() * 1000;
    let _: () = redis::cmd("SET")
        .arg(format!("kf:spent:{budget_id}:{day_ms}"))
        .arg(900_000_000_i64)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(post(&harness, &key).await.status(), 200);
    // Wait for the settlement to come back from Redis.
    for _ in 0..200 {
        let reserved: Option<i64> = redis::cmd("GET")
            .arg(format!("kf:reserved:{budget_id}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        if reserved == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(connection);
    drop(server);
    let refused = post(&harness, &key).await;
    assert_eq!(
        refused.status(),
        429,
        "counted alone from the cluster's 90 %"
    );
    assert_eq!(refused.headers()["x-keyforge-error"], "budget_exhausted");
}
