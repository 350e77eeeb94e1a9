//! The store is not trusted more than the disk: each edit an attacker with
//! write access to `keyforge.db` could make (a provider's base URL or
//! environment, a key's scope, the ledger's spend) is refused after a
//! restart with a clear error and an alert, while the legitimate write paths
//! keep verifying. Each test runs a gateway on a database file, edits rows
//! with SQL as an attacker would, then starts a second gateway on the same
//! file and master key.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

#[expect(
    dead_code,
    reason = "every test here starts on a file store, never the in-memory one"
)]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use keyforge_gateway::GatewayConfig;
use keyforge_store::SqliteStore;
use keyforge_testkit::FakeUpstream;
use keyforge_vault::MasterKey;
use serde_json::{Value, json};

/// A data directory: the database file and the master key, kept across
/// restarts.
struct Deployment {
    _dir: tempfile::TempDir,
    path: PathBuf,
    master_key: String,
    /// Its `admin.token`, kept across restarts like the master key.
    admin_token: String,
}

impl Deployment {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyforge.db");
        Self {
            _dir: dir,
            path,
            master_key: MasterKey::generate().to_base64().to_string(),
            admin_token: format!("kfadmin_{}", keyforge_types::random_base62(43)),
        }
    }

    /// Starts a gateway on the deployment's file (the earlier one may keep
    /// running: its fake upstream is where the providers point).
    async fn start(&self) -> Harness {
        self.start_with(GatewayConfig::default()).await.0
    }

    async fn start_with(&self, config: GatewayConfig) -> (Harness, keyforge_gateway::Gateway) {
        let store = SqliteStore::open(&self.path).await.unwrap();
        let master_key = MasterKey::from_base64(&self.master_key, "test").unwrap();
        Harness::start_serving_as(
            config,
            Arc::new(store),
            master_key,
            None,
            self.admin_token.clone(),
        )
        .await
    }

    /// Starts a second gateway on the file once the first has written its
    /// ledger and audit queue (`/usage` flushes it): both continue one
    /// audit chain, so the first must be idle before the second resumes
    /// it. The first keeps running, idle, for its fake upstream.
    async fn restart(&self, first: &Harness) -> Harness {
        let (status, body) = first
            .admin(reqwest::Method::GET, "/usage?since=1d", None)
            .await;
        assert_eq!(status, 200, "{body}");
        self.start().await
    }

    /// Runs SQL on the file as an attacker with write access would; it
    /// must change a row.
    async fn tamper(&self, sql: &str) {
        assert!(self.run(sql).await > 0, "{sql} changed nothing");
    }

    /// Runs SQL on the file; returns the number of rows it changed.
    async fn run(&self, sql: &str) -> u64 {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&self.path);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let done = sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
        done.rows_affected()
    }
}

async fn chat(harness: &Harness, key: &str, model: &str) -> (u16, Value) {
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until the alert log holds an integrity alert naming `id`.
async fn integrity_alert(harness: &Harness, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        assert_eq!(status, 200, "{log}");
        if let Some(alert) = log["alerts"].as_array().unwrap().iter().find(|alert| {
            let message = alert["message"].as_str().unwrap_or("");
            message.contains("failed its integrity check") && message.contains(id)
        }) {
            return alert.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no integrity alert for {id}: {log:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn no_integrity_alert(harness: &Harness) {
    // Alerts are recorded in the background: give them the time to show.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, log) = harness
        .admin(reqwest::Method::GET, "/alerts/log", None)
        .await;
    let alerts = log["alerts"].as_array().unwrap();
    assert!(
        alerts.iter().all(|alert| !alert["message"]
            .as_str()
            .unwrap_or("")
            .contains("integrity")),
        "{log:#}"
    );
}

async fn provider_id(harness: &Harness, name: &str) -> String {
    let (_, list) = harness
        .admin(reqwest::Method::GET, "/providers", None)
        .await;
    list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .unwrap()
}

fn assert_provider_refused(status: u16, body: &Value) {
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`openai`"), "{message}");
    assert!(message.contains("failed its integrity check"), "{message}");
}

#[tokio::test]
async fn a_provider_pointed_at_another_host_is_refused_and_its_key_never_sent() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "prod").await;
    let (_, key) = first
        .create_key(json!({"name": "app", "env": "prod"}))
        .await;
    assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);
    let id = provider_id(&first, "openai").await;

    let attacker = FakeUpstream::start("attacker").await.unwrap();
    deployment
        .tamper(&format!(
            "UPDATE providers SET base_url = '{}'",
            attacker.base_url()
        ))
        .await;
    let second = deployment.restart(&first).await;
    let (status, body) = chat(&second, &key, "gpt-4o-mini").await;
    assert_provider_refused(status, &body);
    assert!(
        attacker.requests().is_empty(),
        "the provider key went to the attacker's host"
    );
    let alert = integrity_alert(&second, &id).await;
    assert!(!alert.to_string().contains(&first.provider_key));
}

#[tokio::test]
async fn a_provider_moved_to_another_environment_is_refused() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "prod").await;
    let (_, dev_key) = first.create_key(json!({"name": "app", "env": "dev"})).await;
    assert_eq!(chat(&first, &dev_key, "gpt-4o-mini").await.0, 404);
    let id = provider_id(&first, "openai").await;

    deployment.tamper("UPDATE providers SET env = 'dev'").await;
    let second = deployment.restart(&first).await;
    let before = first.upstream.requests().len();
    let (status, body) = chat(&second, &dev_key, "gpt-4o-mini").await;
    assert_provider_refused(status, &body);
    assert_eq!(
        first.upstream.requests().len(),
        before,
        "a dev key reached the prod key"
    );
    integrity_alert(&second, &id).await;
}

#[tokio::test]
async fn a_widened_key_scope_is_refused() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (id, key) = first
        .create_key(json!({"name": "narrow", "env": "dev", "models": ["gpt-4o-mini"]}))
        .await;
    let (_, other) = first
        .create_key(json!({"name": "other", "env": "dev"}))
        .await;
    assert_eq!(chat(&first, &key, "gpt-4o").await.0, 403);

    deployment
        .tamper(&format!(
            "UPDATE virtual_keys SET scope = '{{\"providers\":[],\"models\":[]}}' WHERE id = '{id}'"
        ))
        .await;
    let second = deployment.restart(&first).await;
    let (status, body) = chat(&second, &key, "gpt-4o").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "key_integrity_failed", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&id) && message.contains("failed its integrity check"),
        "{message}"
    );
    integrity_alert(&second, &id).await;
    // Everything else keeps serving.
    assert_eq!(chat(&second, &other, "gpt-4o").await.0, 200);
    // The tampered key can still be revoked (revoked is the safe direction).
    let (status, body) = second
        .admin(reqwest::Method::POST, &format!("/keys/{id}/revoke"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "revoked", "{body}");
    assert_eq!(chat(&second, &key, "gpt-4o").await.0, 401);
}

/// Waits until `/usage` lists `requests` ledger rows (the writer batches).
async fn wait_for_requests(harness: &Harness, requests: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, report) = harness
            .admin(reqwest::Method::GET, "/usage?by=key&since=1d", None)
            .await;
        let total: u64 = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["requests"].as_u64().unwrap())
            .sum();
        if total == requests {
            return;
        }
        assert!(Instant::now() < deadline, "{report:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn audit_problem(harness: &Harness) -> Option<String> {
    let (status, verification) = harness
        .admin(reqwest::Method::GET, "/audit/verify", None)
        .await;
    assert_eq!(status, 200, "{verification}");
    verification["problem"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn deleted_or_edited_spend_fails_audit_verify_naming_the_rows() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (_, key) = first.create_key(json!({"name": "app", "env": "dev"})).await;
    for _ in 0..3 {
        assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);
    }
    wait_for_requests(&first, 3).await;
    assert_eq!(audit_problem(&first).await, None);

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&deployment.path);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, request_id FROM ledger ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (deleted, edited) = (&rows[0], &rows[1]);
    deployment
        .tamper(&format!("DELETE FROM ledger WHERE id = {}", deleted.0))
        .await;
    deployment
        .tamper(&format!(
            "UPDATE ledger SET cost_nano_usd = 0, output_tokens = 0 WHERE id = {}",
            edited.0
        ))
        .await;
    let second = deployment.restart(&first).await;
    let problem = audit_problem(&second).await.expect("verify must fail");
    assert!(
        problem.contains(&format!("request {} (cost_nano_usd", deleted.1))
            && problem.contains("was deleted"),
        "{problem}"
    );
    assert!(
        problem.contains(&format!(
            "ledger row {} (request {}) has cost_nano_usd 0",
            edited.0, edited.1
        )),
        "{problem}"
    );
    assert!(problem.contains("output_tokens 0"), "{problem}");
}

/// Budgets are rebuilt from the usage rollups at start: zeroing, deleting
/// or moving a key's rollups while the gateway is stopped would hand it its
/// spend back. `audit verify` checks the rollups against the sealed uses.
#[tokio::test]
async fn edited_usage_rollups_fail_audit_verify() {
    for sql in [
        "UPDATE ledger_rollup SET cost_nano_usd = 0, requests = 0",
        "DELETE FROM ledger_rollup",
        "UPDATE ledger_rollup SET key_id = 'key_00000000000000000000'",
    ] {
        let deployment = Deployment::new();
        let first = deployment.start().await;
        first.add_provider("openai", "openai", "dev").await;
        let (id, key) = first.create_key(json!({"name": "app", "env": "dev"})).await;
        for _ in 0..3 {
            assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);
        }
        wait_for_requests(&first, 3).await;
        assert_eq!(audit_problem(&first).await, None);
        deployment.tamper(sql).await;
        let second = deployment.restart(&first).await;
        let problem = audit_problem(&second).await.expect("verify must fail");
        assert!(
            problem.contains(&format!("usage rollup of key {id} (dev/openai v1)"))
                && problem.contains("the audit log says 3 requests"),
            "{sql}: {problem}"
        );
    }
}

#[tokio::test]
async fn legitimate_changes_still_verify_after_a_restart() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (id, key) = first
        .create_key(json!({"name": "app", "env": "dev", "can_mint": true,
            "budgets": [{"amount": 4_000_000_000_i64, "period": "day"}]}))
        .await;
    let (revoked, _) = first
        .create_key(json!({"name": "gone", "env": "dev"}))
        .await;
    let (status, body) = first
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "key", "name": id}, "limit": {"amount": 9_000_000_000_i64, "period": "month"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = first
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rotated = body["key"].as_str().unwrap().to_owned();
    let (status, body) = first
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{revoked}/revoke"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = first
        .admin(reqwest::Method::POST, &format!("/keys/{id}/resume"), None)
        .await;
    assert!(status < 500, "{status} {body}");
    assert_eq!(chat(&first, &rotated, "gpt-4o-mini").await.0, 200);
    wait_for_requests(&first, 1).await;

    let second = deployment.restart(&first).await;
    assert_eq!(chat(&second, &rotated, "gpt-4o-mini").await.0, 200);
    assert_eq!(
        chat(&second, &key, "gpt-4o-mini").await.0,
        200,
        "still in grace"
    );
    no_integrity_alert(&second).await;
    wait_for_requests(&second, 3).await;
    // The rotated-out secret's grace ends as it did before the restart.
    second.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(chat(&second, &key, "gpt-4o-mini").await.0, 401);
    assert_eq!(audit_problem(&second).await, None);
}

#[tokio::test]
async fn a_raised_budget_is_held_at_zero() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (_, key) = first
        .create_key(json!({"name": "shop", "env": "dev", "project": "shop"}))
        .await;
    let (status, body) = first
        .admin(
            reqwest::Method::POST,
            "/budgets",
            Some(json!({"scope": {"kind": "project", "name": "shop"}, "limit": {"amount": 1_000_000_000, "period": "day"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let budget = body["id"].as_str().unwrap().to_owned();
    assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);

    deployment
        .tamper("UPDATE budgets SET limit_nano_usd = 1000000000000000")
        .await;
    let second = deployment.restart(&first).await;
    let (status, body) = chat(&second, &key, "gpt-4o-mini").await;
    assert_eq!(status, 429, "{body}");
    integrity_alert(&second, &budget).await;
}

#[tokio::test]
async fn a_version_7_store_is_sealed_at_its_first_start_and_verifies() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (_, key) = first
        .create_key(json!({"name": "old", "env": "dev", "budgets": [{"amount": 4_000_000_000_i64, "period": "day"}]}))
        .await;
    // The first gateway's queue written out before its tables change
    // under it (it stays idle from here on).
    let (status, body) = first
        .admin(reqwest::Method::GET, "/usage?since=1d", None)
        .await;
    assert_eq!(status, 200, "{body}");
    // What version 7 held: the same rows, no MAC columns.
    for table in [
        "providers",
        "provider_credentials",
        "virtual_keys",
        "budgets",
        "alert_webhooks",
        "key_grace",
    ] {
        deployment
            .run(&format!("ALTER TABLE {table} DROP COLUMN mac"))
            .await;
    }
    // Version 9's rollups are rebuilt from the raw rows by its migration.
    deployment.run("DROP TABLE ledger_rollup").await;
    // And version 10's admins are made again from the admin token.
    deployment.run("DROP TABLE admins").await;
    deployment.run("PRAGMA user_version = 7").await;
    let second = deployment.start().await;
    assert_eq!(chat(&second, &key, "gpt-4o-mini").await.0, 200);
    no_integrity_alert(&second).await;
    // The start that sealed the rows says so in the audit log.
    let log = second
        .http
        .get(second.url("/admin/v1/audit?after=0"))
        .bearer_auth(&second.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = log
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|entry| entry["kind"] == "gateway.start")
        .unwrap();
    // A provider, its key version, the key and its budget.
    assert_eq!(start["data"]["rows_sealed_at_upgrade"], 4, "{start}");
    assert_eq!(start["data"]["rows_failing_integrity"], 0, "{start}");
}

/// Found by a tester: the grace row of a rotated-out secret pointed at an
/// unscoped key (or kept alive for ever) made the old secret an unscoped,
/// unexpiring key. The row is sealed: an edited one is refused.
#[tokio::test]
async fn an_earlier_secret_moved_to_another_key_is_refused() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    first.add_provider("openai", "openai", "dev").await;
    let (id, old) = first
        .create_key(json!({"name": "narrow", "env": "dev", "models": ["gpt-4o-mini"]}))
        .await;
    let (wide, _) = first
        .create_key(json!({"name": "wide", "env": "dev"}))
        .await;
    let (status, body) = first
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // During its grace window the old secret works, within its own scope.
    assert_eq!(chat(&first, &old, "gpt-4o-mini").await.0, 200);
    assert_eq!(chat(&first, &old, "gpt-4o").await.0, 403);
    deployment
        .tamper(&format!(
            "UPDATE key_grace SET key_id = '{wide}', valid_until = 4102444800 WHERE key_id = '{id}'"
        ))
        .await;
    let second = deployment.restart(&first).await;
    let (status, body) = chat(&second, &old, "gpt-4o").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(chat(&second, &old, "gpt-4o-mini").await.0, 401);
}

/// The requests and spend `/usage` reports over the last 30 days.
async fn usage_totals(harness: &Harness) -> (u64, i64) {
    let (status, report) = harness
        .admin(reqwest::Method::GET, "/usage?by=key&since=30d", None)
        .await;
    assert_eq!(status, 200, "{report}");
    let rows = report["rows"].as_array().unwrap();
    (
        rows.iter()
            .map(|row| row["requests"].as_u64().unwrap())
            .sum(),
        rows.iter()
            .map(|row| row["cost_nano_usd"].as_i64().unwrap())
            .sum(),
    )
}

#[tokio::test]
async fn pruning_past_retention_keeps_usage_and_audit_verify_checks_the_rows_kept() {
    let deployment = Deployment::new();
    let config = GatewayConfig {
        ledger: keyforge_gateway::LedgerConfig {
            retention: Duration::from_secs(86_400),
            ..Default::default()
        },
        ..Default::default()
    };
    let (first, gateway) = deployment.start_with(config).await;
    first.add_provider("openai", "openai", "dev").await;
    let (_, key) = first.create_key(json!({"name": "app", "env": "dev"})).await;
    for _ in 0..3 {
        assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);
    }
    // Two days later: the first three are past the one-day retention.
    first.clock.advance(Duration::from_secs(2 * 86_400));
    for _ in 0..2 {
        assert_eq!(chat(&first, &key, "gpt-4o-mini").await.0, 200);
    }
    let before = usage_totals(&first).await;
    assert_eq!(before.0, 5);
    assert!(before.1 > 0);
    assert_eq!(gateway.prune_ledger().await.unwrap(), 3);
    assert_eq!(gateway.ledger_stats().pruned_total, 3);
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&deployment.path);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let kept: Vec<(i64, String)> = sqlx::query_as("SELECT id, request_id FROM ledger ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert_eq!(kept.len(), 2);
    // Usage reads the rollups: the same figures with the raw rows gone.
    assert_eq!(usage_totals(&first).await, before);
    // The key.use entries still name all five; the prune entry says which
    // three may be gone.
    assert_eq!(audit_problem(&first).await, None);
    let second = deployment.restart(&first).await;
    assert_eq!(usage_totals(&second).await, before);
    assert_eq!(audit_problem(&second).await, None);
    // A retained row deleted is still found out.
    deployment
        .tamper(&format!("DELETE FROM ledger WHERE id = {}", kept[1].0))
        .await;
    let problem = audit_problem(&second).await.expect("verify must fail");
    assert!(
        problem.contains(&format!("request {} (cost_nano_usd", kept[1].1))
            && problem.contains("was deleted"),
        "{problem}"
    );
}

/// `GET /admin/v1/whoami` with `token`: (status, body).
async fn whoami(harness: &Harness, token: &str) -> (u16, Value) {
    let response = harness
        .http
        .get(harness.url("/admin/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_admin_whose_role_was_raised_in_the_file_is_refused() {
    let deployment = Deployment::new();
    let first = deployment.start().await;
    let (status, added) = first
        .admin(
            reqwest::Method::POST,
            "/admins",
            Some(json!({"name": "fin", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 201, "{added}");
    let token = added["token"].as_str().unwrap().to_owned();
    assert_eq!(whoami(&first, &token).await.1["role"], "viewer");

    deployment
        .tamper("UPDATE admins SET role = 'owner' WHERE name = 'fin'")
        .await;
    let second = deployment.restart(&first).await;
    let (status, body) = whoami(&second, &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_admin_token");
    // The other admins are untouched, and the edit is alerted.
    assert_eq!(whoami(&second, &second.admin_token).await.0, 200);
    integrity_alert(&second, "fin").await;
}
