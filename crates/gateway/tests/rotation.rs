//! Blue/green rotation of a provider key under load: start (the new key is
//! checked against the provider), a gradual rollout, promote, finish once
//! the old key is quiet, the provider revoking the old key; not one request
//! fails. And rollback, cancel, and the refusals that keep it safe.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Harness;
use keyforge_testkit::fake_provider_key;
use serde_json::{Value, json};

async fn provider_id(harness: &Harness) -> String {
    let (_, list) = harness
        .admin(reqwest::Method::GET, "/providers", None)
        .await;
    list["providers"][0]["id"].as_str().unwrap().to_owned()
}

fn stage_of(status: &Value, version: u64) -> String {
    status["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .map(|v| v["stage"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Requests the fake received with this provider key.
fn served_with(harness: &Harness, key: &str) -> usize {
    let bearer = format!("Bearer {key}");
    harness
        .upstream
        .requests()
        .iter()
        .filter(|r| {
            r.headers
                .get("authorization")
                .is_some_and(|v| v.to_str().unwrap_or("") == bearer)
        })
        .count()
}

/// Eight clients calling as fast as they can (JSON and streams) until
/// stopped; returns (requests, failures).
fn load(
    harness: &Harness,
    key: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    let http = harness.http.clone();
    let url = harness.url("/openai/v1/chat/completions");
    let key = key.to_owned();
    tokio::spawn(async move {
        let done = Arc::new(AtomicUsize::new(0));
        let clients = (0..8).map(|n| {
            let (http, url, key, stop, done) = (
                http.clone(),
                url.clone(),
                key.clone(),
                stop.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let body = json!({"model": "gpt-4o-mini", "max_tokens": 3, "stream": n % 2 == 0,
                                      "messages": [{"role": "user", "content": "hi"}]});
                    let response = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = response.status();
                    let text = response.text().await.unwrap();
                    if status != 200 || (n % 2 == 0 && !text.contains("[DONE]")) {
                        failures.push(format!("{status}: {text}"));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
                failures
            })
        });
        let mut failures = Vec::new();
        for client in clients.collect::<Vec<_>>() {
            failures.extend(client.await.unwrap());
        }
        (done.load(Ordering::SeqCst), failures)
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_rotation_under_load_fails_no_request() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let id = provider_id(&harness).await;
    let (_, key) = harness
        .create_key(json!({"name": "busy", "env": "dev"}))
        .await;
    let old_key = harness.provider_key.clone();
    let new_key = fake_provider_key("rotated");
    let base = format!("/providers/{id}/rotation");

    // A key the provider does not accept is refused, with the provider's
    // reason and without echoing the key.
    let bogus = fake_provider_key("bogus");
    let (status, refused) = harness
        .admin(
            reqwest::Method::POST,
            &base,
            Some(json!({"api_key": bogus})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "key_rejected");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("rejected the new key (HTTP 401)"),
        "{message}"
    );
    assert!(!message.contains(&bogus), "{message}");
    // The key already in force is refused too (a rotation to it would
    // change nothing), without echoing it.
    let (status, same) = harness
        .admin(
            reqwest::Method::POST,
            &base,
            Some(json!({"api_key": old_key, "skip_check": true})),
        )
        .await;
    assert_eq!(status, 409, "{same}");
    assert_eq!(same["error"]["code"], "same_key", "{same}");
    let message = same["error"]["message"].as_str().unwrap();
    assert!(message.contains("version 1"), "{message}");
    assert!(!message.contains(&old_key), "{message}");

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&harness, &key, stop.clone());
    wait_until("traffic", || served_with(&harness, &old_key) > 20).await;

    harness.upstream.accept_key(&new_key);
    let (status, started) = harness
        .admin(
            reqwest::Method::POST,
            &base,
            Some(json!({"api_key": new_key})),
        )
        .await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(stage_of(&started, 2), "pending");
    assert_eq!(stage_of(&started, 1), "current");
    // Pending serves nothing until promoted.
    let before = served_with(&harness, &new_key);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served_with(&harness, &new_key), before);
    assert_eq!(before, 1, "only the start check used the new key");

    // A quarter of the traffic first.
    let (status, rollout) = harness
        .admin(
            reqwest::Method::POST,
            &format!("{base}/promote"),
            Some(json!({"percent": 25})),
        )
        .await;
    assert_eq!(status, 200, "{rollout}");
    assert_eq!(rollout["rollout_percent"], 25);
    let (old_at, new_at) = (
        served_with(&harness, &old_key),
        served_with(&harness, &new_key),
    );
    wait_until("a mixed rollout", || {
        served_with(&harness, &new_key) > new_at + 40
    })
    .await;
    let (old_d, new_d) = (
        served_with(&harness, &old_key) - old_at,
        served_with(&harness, &new_key) - new_at,
    );
    assert!(old_d > new_d, "25 % new: {new_d} new vs {old_d} old");

    let (status, promoted) = harness
        .admin(reqwest::Method::POST, &format!("{base}/promote"), None)
        .await;
    assert_eq!(status, 200, "{promoted}");
    assert_eq!(stage_of(&promoted, 2), "current");
    assert_eq!(stage_of(&promoted, 1), "previous");
    assert_eq!(promoted["rollout_percent"], 0);

    // The old key served requests minutes ago: finishing is refused.
    let (status, busy) = harness
        .admin(reqwest::Method::POST, &format!("{base}/finish"), None)
        .await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "previous_key_in_use");
    // Quarter of an hour later the old key has been quiet: the status shows
    // it, and finish goes through.
    harness.clock.advance(Duration::from_secs(16 * 60));
    let new_now = served_with(&harness, &new_key);
    wait_until("traffic at the new time", || {
        served_with(&harness, &new_key) > new_now + 20
    })
    .await;
    let (_, quiet) = harness.admin(reqwest::Method::GET, &base, None).await;
    let v1 = quiet["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 1)
        .unwrap()
        .clone();
    assert!(v1["requests_last_hour"].as_u64().unwrap() > 0, "{quiet}");
    assert!(
        v1["last_used"].as_str().unwrap() < "2026-06-01T12:01:00Z",
        "{quiet}"
    );
    // A longer quiet window asked for in the request still sees its
    // traffic; an impossible one is refused.
    let (status, longer) = harness
        .admin(
            reqwest::Method::POST,
            &format!("{base}/finish"),
            Some(json!({"quiet_minutes": 60})),
        )
        .await;
    assert_eq!(status, 409, "{longer}");
    assert!(
        longer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in the last 60 minutes"),
        "{longer}"
    );
    for minutes in [0, 7 * 24 * 60 + 1] {
        let (status, bad) = harness
            .admin(
                reqwest::Method::POST,
                &format!("{base}/finish"),
                Some(json!({"quiet_minutes": minutes})),
            )
            .await;
        assert_eq!(status, 400, "{minutes}: {bad}");
    }
    let (status, finished) = harness
        .admin(reqwest::Method::POST, &format!("{base}/finish"), None)
        .await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(stage_of(&finished, 1), "retired");

    // The operator now revokes the old key at the provider: nothing breaks.
    let old_total = served_with(&harness, &old_key);
    harness.upstream.revoke_key(&old_key);
    let new_now = served_with(&harness, &new_key);
    wait_until("more traffic", || {
        served_with(&harness, &new_key) > new_now + 40
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (requests, failures) = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(requests > 200, "{requests}");
    assert_eq!(
        served_with(&harness, &old_key),
        old_total,
        "no request used the retired key"
    );
}

#[tokio::test]
async fn rollback_cancel_and_the_refusals_that_keep_rotation_safe() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let id = provider_id(&harness).await;
    let (_, key) = harness
        .create_key(json!({"name": "app", "env": "dev"}))
        .await;
    let base = format!("/providers/{id}/rotation");
    let post = |path: &'static str, body: Option<Value>| {
        let url = format!("{base}{path}");
        let harness = &harness;
        async move { harness.admin(reqwest::Method::POST, &url, body).await }
    };
    for (path, code) in [
        ("/promote", "no_pending_key"),
        ("/finish", "no_previous_key"),
        ("/rollback", "nothing_to_roll_back"),
        ("/cancel", "no_pending_key"),
    ] {
        let (status, body) = post(path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str().unwrap()),
            (409, code),
            "{path}"
        );
    }
    let new_key = fake_provider_key("next");
    harness.upstream.accept_key(&new_key);
    let (status, _) = post("", Some(json!({"api_key": new_key}))).await;
    assert_eq!(status, 201);
    let (status, again) = post("", Some(json!({"api_key": new_key}))).await;
    assert_eq!(
        (status, again["error"]["code"].as_str().unwrap()),
        (409, "rotation_in_progress")
    );
    let (status, bad) = post("/promote", Some(json!({"percent": 0}))).await;
    assert_eq!(status, 400, "{bad}");

    let (status, cancelled) = post("/cancel", None).await;
    assert_eq!(status, 200);
    assert_eq!(stage_of(&cancelled, 2), "retired");

    // Rotate to a key, then roll back to the previous one in one call.
    let third = fake_provider_key("third");
    harness.upstream.accept_key(&third);
    let (status, _) = post("", Some(json!({"api_key": third, "skip_check": true}))).await;
    assert_eq!(status, 201);
    let (status, _) = post("/promote", None).await;
    assert_eq!(status, 200);
    let ask = || async {
        harness
            .http
            .post(harness.url("/openai/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ask().await, 200);
    assert_eq!(
        served_with(&harness, &third),
        1,
        "skip_check: no check call, only the request"
    );
    let (status, rolled) = post("/rollback", None).await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(stage_of(&rolled, 1), "current");
    assert_eq!(stage_of(&rolled, 3), "retired");
    let old = served_with(&harness, &harness.provider_key);
    assert_eq!(ask().await, 200);
    assert_eq!(served_with(&harness, &harness.provider_key), old + 1);
    // Ledger rows carry the version that served them.
    let (_, status_now) = harness.admin(reqwest::Method::GET, &base, None).await;
    let requests = |version: u64| {
        status_now["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["version"] == version)
            .unwrap()["requests_last_hour"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((requests(1), requests(3)), (1, 1), "{status_now}");
}

#[tokio::test]
async fn doctor_reports_the_rotation_policy_and_half_done_rotations() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let id = provider_id(&harness).await;
    let (key_id, _) = harness
        .create_key(json!({"name": "forever", "env": "dev"}))
        .await;
    let doctor = || async {
        let (status, report) = harness.admin(reqwest::Method::GET, "/doctor", None).await;
        assert_eq!(status, 200, "{report}");
        report
    };
    let checks = |report: &Value| -> Vec<String> {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["check"].as_str().unwrap().to_owned())
            .collect()
    };
    let fresh = doctor().await;
    assert_eq!(fresh["max_age_days"], 90);
    assert_eq!(checks(&fresh), ["provider_key_never_rotated"]);

    harness.clock.advance(Duration::from_secs(91 * 86_400));
    let overdue = doctor().await;
    assert_eq!(
        checks(&overdue),
        [
            "provider_key_overdue",
            "provider_key_never_rotated",
            "virtual_key_old",
            // The owner's token is as old as the provider key (issue #14).
            "owner_token_old"
        ],
        "{overdue}"
    );
    let owner = overdue["findings"][3]["message"].as_str().unwrap();
    assert!(
        owner.contains("never been rotated") && owner.contains("keyforge admin rotate-token owner"),
        "{owner}"
    );
    let message = overdue["findings"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("91 days old, past the 90-day rotation policy"),
        "{message}"
    );
    assert!(
        message.contains("keyforge rotate start openai --env dev"),
        "{message}"
    );
    // Overdue keys alert, once a week however often the check runs.
    doctor().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, log) = harness
            .admin(reqwest::Method::GET, "/alerts/log", None)
            .await;
        let rotation: Vec<&Value> = log["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "rotation")
            .collect();
        if !rotation.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (_, log) = harness
                .admin(reqwest::Method::GET, "/alerts/log", None)
                .await;
            let count = log["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["kind"] == "rotation")
                .count();
            assert_eq!(count, 1, "{log}");
            break;
        }
        assert!(Instant::now() < deadline, "no rotation alert: {log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A rotation started and left pending for two days is flagged.
    let new_key = fake_provider_key("policy");
    harness.upstream.accept_key(&new_key);
    let base = format!("/providers/{id}/rotation");
    let (status, _) = harness
        .admin(
            reqwest::Method::POST,
            &base,
            Some(json!({"api_key": new_key})),
        )
        .await;
    assert_eq!(status, 201);
    harness.clock.advance(Duration::from_secs(2 * 86_400));
    let pending = doctor().await;
    assert!(
        checks(&pending).contains(&"rotation_unfinished".to_owned()),
        "{pending}"
    );
    assert!(!checks(&pending).contains(&"provider_key_never_rotated".to_owned()));
    // Promoted but never finished: the old key is still valid a week later.
    let (status, _) = harness
        .admin(reqwest::Method::POST, &format!("{base}/promote"), None)
        .await;
    assert_eq!(status, 200);
    harness.clock.advance(Duration::from_secs(8 * 86_400));
    let unfinished = doctor().await;
    assert!(
        unfinished["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"]
                .as_str()
                .unwrap()
                .contains("previous key (version 1) is still valid")),
        "{unfinished}"
    );
    assert!(!checks(&unfinished).contains(&"provider_key_overdue".to_owned()));
    // Rotating the old virtual key clears its finding.
    let (status, _) = harness
        .admin(
            reqwest::Method::POST,
            &format!("/keys/{key_id}/rotate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!checks(&doctor().await).contains(&"virtual_key_old".to_owned()));
}
