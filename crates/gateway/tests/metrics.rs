//! `/metrics` and `/readyz` end to end: traffic through the fake provider,
//! then a scrape read by real Prometheus parsers (the Python
//! `prometheus_client` OpenMetrics and text parsers in the test venv; under CI=true these tests
//! never skip), checked for what an operator would read off a dashboard.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

#[expect(dead_code, reason = "this test needs only part of the shared harness")]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, METRICS_TOKEN};
use keyforge_gateway::{GatewayConfig, LedgerConfig};
use keyforge_store::SqliteStore;
use keyforge_vault::MasterKey;
use serde_json::{Value, json};

/// The venv's Python (see scripts/test), or `None` outside CI.
fn python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("KEYFORGE_TEST_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but KEYFORGE_TEST_PYTHON is not set: the metrics tests must run in CI (see scripts/test)"
    );
    None
}

/// Parses exposition text with `prometheus_client`'s OpenMetrics parser
/// (the format `/metrics` serves) and its classic text parser, and returns
/// every sample as `{"family", "type", "name", "labels", "value"}`. A
/// parse error fails the test.
fn parse(python: &PathBuf, text: &str) -> Vec<Value> {
    use std::io::Write;
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client import parser as classic
text = sys.stdin.read()
# The classic text-format parser must read it too (it is what older
# scrapers speak); the OpenMetrics parser, the format served, is strict
# about types, names and the closing # EOF.
list(classic.text_string_to_metric_families(text))
out = []
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        out.append({"family": family.name, "type": family.type, "name": sample.name,
                    "labels": sample.labels, "value": sample.value})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn sum(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

async fn scrape(harness: &Harness) -> String {
    let response = harness
        .http
        .get(harness.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

async fn chat(harness: &Harness, key: &str, model: &str) -> reqwest::Response {
    harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "max_tokens": 8,
            "messages": [{"role": "user", "content": "hello there"}]}))
        .send()
        .await
        .unwrap()
}

/// Scrapes until `ready` holds of the parsed samples (requests are counted
/// when their response body ends, a moment after the client read it).
async fn scrape_until(
    harness: &Harness,
    python: &PathBuf,
    ready: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = parse(python, &scrape(harness).await);
        if ready(&samples) || Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scrape_counts_requests_tokens_cost_refusals_and_budget_use() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python with prometheus_client; run scripts/test to install it");
        return;
    };
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (key_id, key) = harness
        .create_key(json!({"name": "shop-app", "env": "dev", "project": "shop",
            "budgets": [{"amount": 1_000_000_000_i64, "period": "day"}]}))
        .await;
    let (mut input, mut output) = (0.0, 0.0);
    for _ in 0..3 {
        let response = chat(&harness, &key, "gpt-4o-mini").await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        input += body["usage"]["prompt_tokens"].as_f64().unwrap();
        output += body["usage"]["completion_tokens"].as_f64().unwrap();
    }
    // Two refusals a client can cause: a key that does not exist, and no
    // key at all.
    let forged = format!("kf_dev_{}", "A".repeat(34));
    assert_eq!(chat(&harness, &forged, "gpt-4o-mini").await.status(), 401);
    let no_key = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401);
    let no_key_code = no_key.headers()["x-keyforge-error"]
        .to_str()
        .unwrap()
        .to_owned();

    let samples = scrape_until(&harness, &python, |s| {
        sum(s, "keyforge_requests_total", &[]) >= 3.0
    })
    .await;
    let dev_shop = [
        ("env", "dev"),
        ("project", "shop"),
        ("provider", "openai"),
        ("model", "gpt-4o-mini"),
    ];
    let requests = [&dev_shop[..], &[("status", "2xx")]].concat();
    assert_eq!(sum(&samples, "keyforge_requests_total", &requests), 3.0);
    let tokens_in = [&dev_shop[..], &[("direction", "input")]].concat();
    let tokens_out = [&dev_shop[..], &[("direction", "output")]].concat();
    assert!(input > 0.0 && output > 0.0);
    assert_eq!(sum(&samples, "keyforge_tokens_total", &tokens_in), input);
    assert_eq!(sum(&samples, "keyforge_tokens_total", &tokens_out), output);
    // Key ids are labels only with `[metrics] key_labels = true`.
    assert!(
        samples.iter().all(|s| s["labels"].get("key_id").is_none()),
        "key ids without the opt-in"
    );
    let cost = sum(&samples, "keyforge_cost_nano_usd_total", &dev_shop);
    assert!(cost > 0.0, "cost {cost}");

    // The budget's utilisation is what it spent over its limit, which the
    // admin API reports too.
    let (status, budgets) = harness.admin(reqwest::Method::GET, "/budgets", None).await;
    assert_eq!(status, 200, "{budgets}");
    let budget = budgets
        .as_array()
        .or_else(|| budgets["budgets"].as_array())
        .unwrap()
        .iter()
        .find(|b| b.to_string().contains(&key_id))
        .unwrap()
        .clone();
    let budget_id = budget["id"].as_str().unwrap();
    let utilisation = sum(
        &samples,
        "keyforge_budget_utilisation_ratio",
        &[
            ("budget", budget_id),
            ("scope", "key"),
            ("scope_name", &key_id),
        ],
    );
    assert!(
        (utilisation - cost / 1e9).abs() < 1e-9,
        "utilisation {utilisation}, cost {cost}: {budget}"
    );

    // Refusals by their x-keyforge-error code.
    assert_eq!(
        sum(
            &samples,
            "keyforge_refusals_total",
            &[("reason", "invalid_api_key")]
        ),
        1.0,
        "{samples:?}"
    );
    assert_eq!(
        sum(
            &samples,
            "keyforge_refusals_total",
            &[("reason", &no_key_code)]
        ),
        1.0
    );
    // Upstream health of the provider's key version, latency and overhead.
    assert_eq!(
        sum(
            &samples,
            "keyforge_upstream_responses_total",
            &[
                ("provider", "openai"),
                ("key_version", "1"),
                ("outcome", "ok")
            ]
        ),
        3.0
    );
    assert_eq!(
        sum(
            &samples,
            "keyforge_upstream_latency_seconds_count",
            &[("provider", "openai")]
        ),
        3.0
    );
    assert_eq!(
        sum(&samples, "keyforge_gateway_overhead_seconds_count", &[]),
        3.0
    );
    assert!(sum(&samples, "keyforge_open_connections", &[]) >= 1.0);
    assert!(sum(&samples, "keyforge_ledger_queue_capacity", &[]) > 0.0);
    let types: std::collections::HashMap<&str, &str> = samples
        .iter()
        .map(|s| (s["family"].as_str().unwrap(), s["type"].as_str().unwrap()))
        .collect();
    let type_of = |family: &str| {
        *types
            .get(family)
            .unwrap_or_else(|| panic!("no {family}: {types:?}"))
    };
    assert_eq!(type_of("keyforge_requests"), "counter");
    assert_eq!(type_of("keyforge_upstream_latency_seconds"), "histogram");
    assert_eq!(type_of("keyforge_budget_utilisation_ratio"), "gauge");
    assert_eq!(type_of("keyforge_audit_write_lag_seconds"), "gauge");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_the_main_listener_need_the_metrics_token() {
    let harness = Harness::start().await;
    let get = |token: Option<&str>| {
        let mut request = harness.http.get(harness.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(
        get(Some("not-the-metrics-token")).await.unwrap().status(),
        401
    );
    // The admin token is not the metrics token.
    assert_eq!(get(Some(&harness.admin_token)).await.unwrap().status(), 401);
    let ok = get(Some(METRICS_TOKEN)).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
    );
    assert!(ok.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_separate_metrics_listener_needs_no_token() {
    let store = SqliteStore::open_in_memory().await.unwrap();
    let (harness, gateway) = Harness::start_serving(
        GatewayConfig::default(),
        Arc::new(store),
        MasterKey::generate(),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keyforge_gateway::serve_metrics(
        listener,
        gateway,
        None,
        std::future::pending(),
    ));
    let response = harness
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("# TYPE keyforge_open_connections gauge")
    );
    let ready = harness
        .http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // The metrics listener serves nothing else: no proxy, no admin API.
    let admin = harness
        .http
        .get(format!("{base}/admin/v1/keys"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_model_names_do_not_add_series() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python with prometheus_client; run scripts/test to install it");
        return;
    };
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "noisy", "env": "dev"}))
        .await;
    let key = Arc::new(key);
    let harness = Arc::new(harness);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (harness, key) = (harness.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..125 {
                let model = format!("made-up-model-{worker}-{i}");
                assert_eq!(chat(&harness, &key, &model).await.status(), 200);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let samples = scrape_until(&harness, &python, |s| {
        sum(s, "keyforge_requests_total", &[]) >= 1000.0
    })
    .await;
    assert_eq!(sum(&samples, "keyforge_requests_total", &[]), 1000.0);
    let models: std::collections::BTreeSet<&str> = samples
        .iter()
        .filter_map(|s| s["labels"]["model"].as_str())
        .collect();
    assert_eq!(
        models.into_iter().collect::<Vec<_>>(),
        ["other"],
        "made-up names became labels"
    );
    assert!(
        samples.len() < 200,
        "{} samples after 1,000 made-up models",
        samples.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_when_the_store_is_locked_and_the_ledger_queue_full() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyforge.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let config = GatewayConfig {
        ledger: LedgerConfig {
            queue_capacity: 4,
            ..Default::default()
        },
        ..Default::default()
    };
    let harness = Harness::start_with_store(config, Arc::new(store), MasterKey::generate()).await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "open", "env": "dev"}))
        .await;
    let readyz = || async {
        let response = harness
            .http
            .get(harness.url("/readyz"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");

    // Another connection takes SQLite's write lock: the store cannot take
    // a write, and the ledger writer's queue fills behind it.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let lock_pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let mut lock = lock_pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    let failed = |body: &Value| -> Vec<String> {
        body["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(failed(&body), ["store"], "{body}");
    for _ in 0..16 {
        assert_eq!(chat(&harness, &key, "gpt-4o-mini").await.status(), 200);
    }
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(failed(&body), ["store", "ledger_queue"], "{body}");
    assert!(
        body["failed"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("ledger queue is full"),
        "{body}"
    );

    // The store recovers: ready again once the backlog is written.
    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    lock_pool.close().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz().await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
