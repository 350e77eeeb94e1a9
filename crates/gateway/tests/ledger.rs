//! The ledger under back-pressure, end to end: a store that cannot take
//! writes (another connection holds SQLite's write lock) fills the writer's
//! queue; open keys keep being served while their records wait, keys with
//! budgets are refused with 503 `ledger_backlog` once the backlog passes
//! the queue's size, and everything is written once the store recovers.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

#[expect(dead_code, reason = "this test needs only part of the shared harness")]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use keyforge_gateway::{GatewayConfig, LedgerConfig};
use keyforge_store::SqliteStore;
use keyforge_vault::MasterKey;
use serde_json::{Value, json};

/// Every log line the gateway writes in this test binary.
#[derive(Clone, Default)]
struct Lines(
    #[expect(
        clippy::disallowed_types,
        reason = "test support: a log buffer, never on the request path"
    )]
    Arc<std::sync::Mutex<Vec<u8>>>,
);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn chat(harness: &Harness, key: &str) -> reqwest::Response {
    harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 16,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_that_cannot_keep_up_refuses_budgeted_keys_and_loses_nothing() {
    let lines = Lines::default();
    tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let store = SqliteStore::open(&path).await.unwrap();
    // A queue of four: past four records waiting for room, the backlog shows.
    let config = GatewayConfig {
        ledger: LedgerConfig {
            queue_capacity: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let harness = Harness::start_with_store(config, Arc::new(store), MasterKey::generate()).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, open) = harness
        .create_key(json!({"name": "open", "env": "dev"}))
        .await;
    let (_, budgeted) = harness
        .create_key(json!({"name": "capped", "env": "dev",
            "budgets": [{"amount": 4_000_000_000_i64, "period": "day"}]}))
        .await;
    assert_eq!(chat(&harness, &budgeted).await.status(), 200);

    // Another connection takes the write lock: the writer's batches fail
    // (busy) and are retried, holding what they took.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let lock_pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let mut lock = lock_pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // The writer holds at most one batch (what the queue held, plus one),
    // the queue four more: sixteen records leave more than four waiting.
    for _ in 0..16 {
        assert_eq!(chat(&harness, &open).await.status(), 200);
    }
    let refused = chat(&harness, &budgeted).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["x-keyforge-error"], "ledger_backlog");
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ledger is not keeping up"),
        "{body}"
    );
    // Keys without budgets are still served.
    assert_eq!(chat(&harness, &open).await.status(), 200);
    // A refusal per request, but not a log line per request.
    for _ in 0..30 {
        assert_eq!(chat(&harness, &budgeted).await.status(), 503);
    }
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let refusal_lines = logged
        .lines()
        .filter(|l| l.contains("ledger_backlog"))
        .count();
    assert!(
        (1..=3).contains(&refusal_lines),
        "{refusal_lines} lines for 31 refusals: {logged}"
    );

    // The store recovers: the backlog is written and budgeted keys are
    // served again.
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    lock_pool.close().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, report) = harness.admin(reqwest::Method::GET, "/status", None).await;
        assert_eq!(status, 200, "{report}");
        if report["ledger"]["waiting_for_room"] == 0 && report["ledger"]["queue_depth"] == 0 {
            assert_eq!(report["ledger"]["dropped_total"], 0, "{report}");
            assert!(
                report["ledger"]["refused_total"].as_u64().unwrap() >= 1,
                "{report}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{report:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(chat(&harness, &budgeted).await.status(), 200);
    // Every request of the run is in the ledger: 1 + 16 + 1 + 1.
    let (_, usage) = harness
        .admin(reqwest::Method::GET, "/usage?by=key&since=1d", None)
        .await;
    let requests: u64 = usage["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 19, "{usage:#}");
}
