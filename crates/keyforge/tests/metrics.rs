//! `keyforge serve`'s metrics end to end against the real binary: the
//! metrics token it creates (and the environment form), `--metrics-listen`
//! without a token, and `[metrics] key_labels`.
#![expect(
    clippy::unwrap_used,
    reason = "tests: a malformed answer must fail the test loudly"
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::Server;
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::json;

/// A port free a moment ago (the metrics listener's address is given up
/// front, as an operator gives it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exposes_metrics_with_its_own_token_and_on_a_metrics_listener() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("keyforge.toml");
    std::fs::write(&config, "[metrics]\nkey_labels = true\n").unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        home.path(),
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--metrics-listen",
            &metrics_addr,
        ],
        &[],
    )
    .await;
    let provider_key = fake_provider_key("metrics");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    server
        .add_provider(
            home.path(),
            "openai",
            "openai",
            "dev",
            &upstream.base_url(),
            &provider_key,
        )
        .await;
    let key = server
        .create_key(home.path(), &["--name", "app", "--env", "dev"])
        .await;
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(key["key"].as_str().unwrap())
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.bytes().await.unwrap();

    // The metrics token was created at start, 0600, and differs from the
    // admin token.
    let token_file = data.join("metrics.token");
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();
    let admin = std::fs::read_to_string(data.join("admin.token")).unwrap();
    assert_ne!(token, admin.trim());
    let main = format!("{}/metrics", server.addr);
    assert_eq!(http.get(&main).send().await.unwrap().status(), 401);
    assert_eq!(
        http.get(&main)
            .bearer_auth(admin.trim())
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let key_id = key["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let response = http.get(&main).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if text.contains("keyforge_requests_total{") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // With `key_labels = true` the key id is a label.
    assert!(
        text.lines()
            .any(|line| line.starts_with("keyforge_requests_total{")
                && line.contains(&format!("key_id=\"{key_id}\""))
                && line.ends_with(" 1")),
        "{text}"
    );

    // The metrics listener needs no token and serves the same text.
    let separate = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(separate.status(), 200);
    assert!(
        separate
            .text()
            .await
            .unwrap()
            .contains(&format!("key_id=\"{key_id}\""))
    );
    let ready = http
        .get(format!("{}/readyz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let output = server.stop().await;
    assert!(
        output.contains(&format!("metrics on http://{metrics_addr}/metrics")),
        "{output}"
    );
    assert!(output.contains("metrics token: created"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_token_can_come_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    // Built at run time: no token-shaped literal in the source.
    let token = format!("env-metrics-{}-{}", std::process::id(), "x".repeat(32));
    let token = token.as_str();
    let server = Server::start_in(home.path(), &[("KEYFORGE_METRICS_TOKEN", token)]).await;
    let http = reqwest::Client::new();
    let main = format!("{}/metrics", server.addr);
    assert_eq!(
        http.get(&main)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(&main)
            .bearer_auth("env-metrics-token-wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(!server.data_dir.join("metrics.token").exists());
    server.stop().await;
}
