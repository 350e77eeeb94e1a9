//! The real binary, end to end: first start with no configuration, the admin
//! commands, restarts, and the security requirements (no secret in logs at
//! trace level, in error bodies, in admin output after creation, or on disk;
//! core dumps off).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup must fail the test loudly"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Server, command};
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::{Value, json};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_logs_error_bodies_admin_output_or_disk() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let config = home.path().join("keyforge.toml");
    std::fs::write(&config, "[limits]\nmax_request_body_bytes = 4096\n").unwrap();
    let provider_key = fake_provider_key("provider");
    let wrong_provider_key = fake_provider_key("wrongprovider");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
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
        ],
        &[("KEYFORGE_LOG", "trace")],
    )
    .await;

    // Core dumps are off for the serving process.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().filter(|w| *w == "0").count(),
        2,
        "{core}"
    );

    let mut cli_output = String::new();
    let base_url = upstream.base_url();
    for (name, key) in [("openai", &provider_key), ("wrong", &wrong_provider_key)] {
        let (ok, out, err) = server
            .cli(
                home.path(),
                &[
                    "provider",
                    "add",
                    name,
                    "--kind",
                    "openai-compatible",
                    "--env",
                    "dev",
                    "--base-url",
                    &base_url,
                    // `wrong` holds a key the fake rejects, on purpose.
                    "--no-check",
                ],
                Some(&format!("{key}\n")),
            )
            .await;
        assert!(ok, "{out}{err}");
        cli_output += &(out + &err);
    }
    let (ok, out, err) = server
        .cli(
            home.path(),
            &[
                "provider",
                "add",
                "down",
                "--kind",
                "openai-compatible",
                "--env",
                "dev",
                "--base-url",
                "http://127.0.0.1:9",
                // Nothing listens there, on purpose.
                "--no-check",
            ],
            Some("down-provider-key-1234\n"),
        )
        .await;
    assert!(ok, "{out}{err}");
    let (ok, created, err) = server
        .cli(
            home.path(),
            &[
                "key", "create", "--name", "app", "--env", "dev", "--model", "gpt-4o*", "--model",
                "fake-*", "--json",
            ],
            None,
        )
        .await;
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&created).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    for args in [
        vec!["key", "list"],
        vec!["key", "list", "--json"],
        vec!["key", "show", &id],
        vec!["key", "show", &id, "--json"],
        vec!["provider", "list"],
        vec!["provider", "list", "--json"],
    ] {
        let (ok, out, err) = server.cli(home.path(), &args, None).await;
        assert!(ok, "{args:?}: {err}");
        cli_output += &(out + &err);
    }
    assert!(cli_output.contains(&id) && cli_output.contains("kf_dev_"));

    // Success and every error path, with canaries in flight.
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", server.addr.trim_start_matches("http://"));
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == 'A' { 'B' } else { 'A' });
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    let requests: Vec<(String, Option<String>, Value, u16)> = vec![
        (
            "/p/openai/v1/chat/completions".into(),
            Some(key.clone()),
            chat("gpt-4o-mini"),
            200,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(key.clone()),
            json!({"model": "gpt-4o-mini", "stream": true, "messages": []}),
            200,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            None,
            chat("gpt-4o-mini"),
            401,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(bad_checksum.clone()),
            chat("gpt-4o-mini"),
            401,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(provider_key.clone()),
            chat("gpt-4o-mini"),
            401,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(key.clone()),
            chat("o3"),
            403,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(key.clone()),
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(5000)}]}),
            413,
        ),
        (
            "/p/wrong/v1/chat/completions".into(),
            Some(key.clone()),
            chat("gpt-4o-mini"),
            401,
        ),
        (
            "/p/openai/v1/chat/completions".into(),
            Some(key.clone()),
            chat("fake-error-500"),
            500,
        ),
        (
            "/p/down/v1/chat/completions".into(),
            Some(key.clone()),
            chat("gpt-4o-mini"),
            502,
        ),
        (
            "/p/nope/v1/chat/completions".into(),
            Some(key.clone()),
            chat("gpt-4o-mini"),
            404,
        ),
    ];
    let mut responses = String::new();
    for (path, bearer, body, status) in &requests {
        let mut request = http.post(url(path)).json(body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), *status, "{path} {body}");
        responses += &format!("{:?}\n", response.headers());
        responses += &response.text().await.unwrap();
    }
    let malformed = http
        .post(url("/p/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    responses += &malformed.text().await.unwrap();
    let (ok, out, err) = server.cli(home.path(), &["key", "revoke", &id], None).await;
    assert!(ok && out.contains("Revoked"), "{out}{err}");
    let revoked = http
        .post(url("/p/openai/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
    responses += &revoked.text().await.unwrap();

    let admin_token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let logs = server.stop().await;
    assert!(
        logs.contains("TRACE"),
        "the test must really run at trace level"
    );
    assert!(logs.contains("request forwarded") && logs.contains("request refused"));

    let secrets = [
        ("provider key", provider_key.as_str()),
        ("wrong provider key", wrong_provider_key.as_str()),
        ("virtual key", key.as_str()),
        ("admin token", admin_token.as_str()),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(secret), "{what} in the server's logs");
        assert!(!responses.contains(secret), "{what} in a response");
        assert!(
            !cli_output.contains(secret),
            "{what} in admin output after creation"
        );
    }
    // The upstream got the real provider key, proving the canary was live.
    assert!(upstream.requests().iter().any(|r| {
        r.headers
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap().contains(&provider_key))
    }));

    // On disk: no plaintext provider key, no plaintext virtual key; the
    // secret-bearing files are private.
    for (path, bytes) in all_files(&data) {
        for (what, secret) in &secrets[..3] {
            assert!(
                !contains(&bytes, secret),
                "{what} in plaintext in {}",
                path.display()
            );
        }
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }
    assert_eq!(mode(&data), 0o700);
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_without_any_configuration_starts_an_embedded_gateway() {
    // No flags, no config file, no KEYFORGE_* variables: only HOME.
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join(".local/share/keyforge");
    let server = Server::start(home.path(), &data, &[], &[]).await;
    assert_eq!(server.addr, "http://127.0.0.1:8787");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("master.key")), 0o600);
    assert_eq!(mode(&data.join("admin.token")), 0o600);
    let (ok, out, err) = server.cli(home.path(), &["provider", "list"], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("no providers yet"), "{out}");
    let health = reqwest::get("http://127.0.0.1:8787/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    let output = server.stop().await;
    assert!(output.contains("master key: created"), "{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_and_keys_survive_a_restart_and_need_the_same_master_key() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let provider_key = fake_provider_key("restart");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let server = Server::start(home.path(), &data, &args, &[]).await;
    server
        .add_provider(
            home.path(),
            "openai",
            "openai",
            "prod",
            &upstream.base_url(),
            &provider_key,
        )
        .await;
    let key = server
        .create_key(home.path(), &["--name", "svc", "--env", "prod"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = server
        .create_key(home.path(), &["--name", "old", "--env", "prod"])
        .await;
    let (ok, _, _) = server
        .cli(
            home.path(),
            &["key", "revoke", revoked["id"].as_str().unwrap()],
            None,
        )
        .await;
    assert!(ok);
    server.stop().await;

    let server = Server::start(home.path(), &data, &args, &[]).await;
    let models = |k: String| {
        let addr = server.addr.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{addr}/openai/v1/models"))
                .bearer_auth(k)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(models(key.clone()).await, 200);
    assert_eq!(
        models(revoked["key"].as_str().unwrap().to_owned()).await,
        401
    );
    server.stop().await;

    // Another master key cannot open this data directory, and says why.
    let other = command(home.path())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ])
        .env(
            "KEYFORGE_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .output()
        .await
        .unwrap();
    assert!(!other.status.success());
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("is this the master key the data directory was created with?"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_explain_failures() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let server = Server::start_in(home.path(), &[]).await;
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (
            vec!["provider", "add", "x", "--kind", "openai", "--env", "dev"],
            Some(""),
            "the API key is empty",
        ),
        (
            vec!["provider", "add", "x", "--kind", "azure", "--env", "dev"],
            Some("k-1234567890"),
            "unknown provider kind",
        ),
        (
            vec![
                "provider",
                "add",
                "x",
                "--kind",
                "openai",
                "--env",
                "dev",
                "--from-env",
                "NOT_SET_ANYWHERE",
            ],
            None,
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            vec![
                "key", "create", "--name", "a", "--env", "dev", "--ttl", "1y",
            ],
            None,
            "not a number followed by",
        ),
        (
            vec!["key", "create", "--name", "a", "--env", "Dev"],
            None,
            "lowercase",
        ),
        (
            vec!["key", "show", "key_0000000000000000"],
            None,
            "no key with id",
        ),
        (vec!["key", "revoke", "nonsense"], None, "key ids look like"),
    ];
    for (args, stdin, needle) in cases {
        let (ok, out, err) = server.cli(home.path(), &args, stdin).await;
        assert!(!ok, "{args:?} succeeded: {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    server.stop().await;
    // With the server gone, the CLI says how to fix it.
    let (ok, _, err) = cli_at(home.path(), "127.0.0.1:9", &data, &["key", "list"]).await;
    assert!(!ok);
    assert!(err.contains("is `keyforge serve` running?"), "{err}");
}

/// Every file under `dir`, read whole.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// Runs an admin command against an address where nothing may listen.
async fn cli_at(home: &Path, addr: &str, data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let output = command(home)
        .args(args)
        .env("KEYFORGE_ADDR", addr)
        .env("KEYFORGE_DATA_DIR", data_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A gateway in `home` with an `openai` provider (environment `dev`) in
/// front of a fake upstream: (server, upstream, the provider's key).
async fn with_openai(home: &Path, tag: &str) -> (Server, FakeUpstream, String) {
    let provider_key = fake_provider_key(tag);
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let server = Server::start_in(home, &[]).await;
    server
        .add_provider(
            home,
            "openai",
            "openai",
            "dev",
            &upstream.base_url(),
            &provider_key,
        )
        .await;
    (server, upstream, provider_key)
}

/// `keyforge key create --name app --env dev ARGS...`; the key's text.
async fn app_key(server: &Server, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["--name", "app", "--env", "dev"];
    all.extend_from_slice(args);
    server.create_key(home, &all).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_and_prices_commands_report_the_ledger_across_restarts() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream, _provider_key) = with_openai(home.path(), "usage").await;
    let key = app_key(&server, home.path(), &[]).await;
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let response = http
            .post(format!("{}/openai/v1/chat/completions", server.addr))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let (ok, text, err) = server
        .cli(home.path(), &["usage", "--by", "model"], None)
        .await;
    assert!(ok, "{err}");
    assert!(
        text.contains("gpt-4o-mini") && text.contains("$0.000015"),
        "{text}"
    );
    let (ok, prices, _) = server.cli(home.path(), &["prices"], None).await;
    assert!(
        ok && prices.contains("gpt-4o-mini*") && prices.contains("fallback"),
        "{prices}"
    );
    let (ok, _, err) = server
        .cli(home.path(), &["usage", "--by", "week"], None)
        .await;
    assert!(
        !ok && err.contains("--by must be key, model, day, env or project"),
        "{err}"
    );
    server.stop().await;

    // The ledger was flushed at shutdown and is still there after a restart.
    let server = Server::start_in(home.path(), &[]).await;
    let (ok, json_text, err) = server.cli(home.path(), &["usage", "--json"], None).await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&json_text).unwrap();
    // 2 x (3 input at $0.15/M + 12 output at $0.60/M) = 15,300 nano-USD.
    assert_eq!(
        (
            report["total"]["requests"].as_u64(),
            report["total"]["cost_nano_usd"].as_i64()
        ),
        (Some(2), Some(15_300)),
        "{report}"
    );
    server.stop().await;
}

/// Budgets and rate limits are rebuilt from the store after a restart:
/// spend counts on, and a key at its per-minute limit stays there.
#[tokio::test(flavor = "multi_thread")]
async fn budgets_and_limits_survive_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream, _provider_key) = with_openai(home.path(), "limits").await;
    let created = server
        .create_key(
            home.path(),
            &[
                "--name",
                "app",
                "--env",
                "dev",
                "--project",
                "shop",
                "--rpm",
                "2",
                "--budget",
                "5usd/day",
                "--budget",
                "20usd/month",
            ],
        )
        .await;
    assert_eq!(created["project"], "shop");
    assert_eq!(created["limits"]["rpm"], 2);
    assert_eq!(created["budgets"].as_array().unwrap().len(), 2);
    let key = created["key"].as_str().unwrap().to_owned();
    let (ok, text, err) = server
        .cli(
            home.path(),
            &["budget", "set", "--project", "shop", "50usd/month"],
            None,
        )
        .await;
    assert!(
        ok && text.contains("project `shop`: $50.000000/month"),
        "{text}{err}"
    );

    let http = reqwest::Client::new();
    let ask = || {
        http.post(format!("{}/openai/v1/chat/completions", server.addr))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "one two three"}]}))
            .send()
    };
    for _ in 0..2 {
        let response = ask().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    assert_eq!(ask().await.unwrap().status(), 429);
    let (ok, before, err) = server
        .cli(home.path(), &["budget", "list", "--json"], None)
        .await;
    assert!(ok, "{err}");
    let before: Value = serde_json::from_str(&before).unwrap();
    let spent = |list: &Value| -> Vec<(String, i64)> {
        list["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["id"].as_str().unwrap().to_owned(),
                    b["spent_nano_usd"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let spent_before = spent(&before);
    assert_eq!(spent_before.len(), 3);
    assert!(spent_before.iter().all(|(_, nano)| *nano > 0), "{before}");
    server.stop().await;

    let server = Server::start_in(home.path(), &[]).await;
    let (ok, after, err) = server
        .cli(home.path(), &["budget", "list", "--json"], None)
        .await;
    assert!(ok, "{err}");
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(
        spent(&after),
        spent_before,
        "spend was rebuilt from the ledger"
    );
    let response = http
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "one"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        429,
        "the last minute's requests were replayed into the limiter"
    );
    let (ok, table, err) = server.cli(home.path(), &["budget", "list"], None).await;
    assert!(
        ok && table.contains("project `shop`") && table.contains("$5.000000/day"),
        "{table}{err}"
    );
    let (ok, text, err) = server
        .cli(
            home.path(),
            &["usage", "--project", "shop", "--by", "project"],
            None,
        )
        .await;
    assert!(ok && text.contains("shop"), "{text}{err}");
    let (ok, _, err) = server
        .cli(
            home.path(),
            &[
                "key", "create", "--name", "x", "--env", "dev", "--budget", "5eur/day",
            ],
            None,
        )
        .await;
    assert!(!ok && err.contains("not a dollar amount"), "{err}");
    server.stop().await;
}

/// `key create --parent`: a child narrows its parent, its spend counts
/// against the parent's budget and rate limit across a restart, and
/// revoking the parent revokes it.
#[tokio::test(flavor = "multi_thread")]
async fn child_keys_share_their_parents_budget_and_limits_across_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream, _provider_key) = with_openai(home.path(), "tree").await;
    let parent = server
        .create_key(
            home.path(),
            &[
                "--name",
                "team",
                "--env",
                "dev",
                "--budget",
                "5usd/day",
                "--rpm",
                "2",
                "--can-mint",
            ],
        )
        .await;
    let parent_id = parent["id"].as_str().unwrap().to_owned();
    assert_eq!(parent["can_mint"], true);
    let child = server
        .create_key(home.path(), &["--name", "agent", "--parent", &parent_id])
        .await;
    assert_eq!(child["parent"], parent_id.as_str());
    assert_eq!(child["env"], "dev");
    assert_eq!(child["limits"]["rpm"], 2);
    let child_key = child["key"].as_str().unwrap().to_owned();
    let child_id = child["id"].as_str().unwrap().to_owned();
    let sibling = server
        .create_key(home.path(), &["--name", "agent-2", "--parent", &parent_id])
        .await;
    let sibling_key = sibling["key"].as_str().unwrap().to_owned();
    let sibling_id = sibling["id"].as_str().unwrap().to_owned();
    let (ok, _, err) = server
        .cli(
            home.path(),
            &[
                "key", "create", "--name", "wide", "--parent", &parent_id, "--rpm", "3",
            ],
            None,
        )
        .await;
    assert!(
        !ok && err.contains("rpm 3 is above the parent key's 2") && err.contains("exceeds_parent"),
        "{err}"
    );

    let http = reqwest::Client::new();
    let ask = || {
        http.post(format!("{}/openai/v1/chat/completions", server.addr))
            .bearer_auth(&child_key)
            .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "one two"}]}))
            .send()
    };
    for _ in 0..2 {
        let response = ask().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap();
    }
    let parent_spend = |text: &str| -> i64 {
        let list: Value = serde_json::from_str(text).unwrap();
        list["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["scope"]["name"] == parent_id.as_str())
            .unwrap()["spent_nano_usd"]
            .as_i64()
            .unwrap()
    };
    let (ok, before, err) = server
        .cli(home.path(), &["budget", "list", "--json"], None)
        .await;
    assert!(ok, "{err}");
    let spent_before = parent_spend(&before);
    assert!(spent_before > 0, "{before}");
    server.stop().await;

    let server = Server::start_in(home.path(), &[]).await;
    let (ok, after, err) = server
        .cli(home.path(), &["budget", "list", "--json"], None)
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        parent_spend(&after),
        spent_before,
        "the parent's budget was rebuilt from its child's ledger rows"
    );
    // The parent's minute (2 requests) was spent by one child, and the
    // restart replayed it into the parent's limiter: the other child, which
    // has made no request, is refused by its parent's limit.
    let response = http
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(&sibling_key)
        .json(&json!({"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "one"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);

    let (ok, text, err) = server
        .cli(home.path(), &["key", "revoke", &parent_id], None)
        .await;
    assert!(
        ok && text.contains("Also revoked its 2 descendant key(s)")
            && text.contains(&child_id)
            && text.contains(&sibling_id),
        "{text}{err}"
    );
    let (ok, shown, _) = server
        .cli(home.path(), &["key", "show", &child_id], None)
        .await;
    assert!(
        ok && shown.contains("revoked") && shown.contains(&parent_id),
        "{shown}"
    );
    server.stop().await;
}

/// A webhook URL read from stdin is sealed at rest and shown only as its
/// scheme and host.
#[tokio::test(flavor = "multi_thread")]
async fn alert_webhooks_come_from_stdin_and_stay_sealed() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    let secret_path = format!("/services/T0/B0/{}", fake_provider_key("hook"));
    let url = format!("https://hooks.example.com{secret_path}");
    let (ok, out, err) = server
        .cli(
            home.path(),
            &["alerts", "add", "--webhook", "-", "--thresholds", "50,100"],
            Some(&url),
        )
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("https://hooks.example.com") && !out.contains(&secret_path),
        "{out}"
    );
    let (ok, list, err) = server.cli(home.path(), &["alerts", "list"], None).await;
    assert!(
        ok && list.contains("50%,100%") && !list.contains(&secret_path),
        "{list}{err}"
    );
    let (ok, log, err) = server.cli(home.path(), &["alerts", "log"], None).await;
    assert!(ok && log.contains("no alerts raised yet"), "{log}{err}");
    let (ok, _, err) = server
        .cli(
            home.path(),
            &["alerts", "add", "--webhook", "-", "--thresholds", "150"],
            Some(&url),
        )
        .await;
    assert!(
        !ok && err.contains("1 to 100") && !err.contains(&secret_path),
        "{err}"
    );
    let logs = server.stop().await;
    assert!(!logs.contains(&secret_path), "{logs}");
    for (path, bytes) in all_files(home.path()) {
        assert!(
            !contains(&bytes, &secret_path),
            "{} holds the webhook URL",
            path.display()
        );
    }
}

/// The rotation commands, end to end through the CLI: the new key comes
/// from stdin, a name resolves to its provider, and status shows which
/// version served what.
#[tokio::test(flavor = "multi_thread")]
async fn rotate_commands_walk_a_provider_key_through_blue_green() {
    let home = tempfile::tempdir().unwrap();
    let (server, upstream, _old_key) = with_openai(home.path(), "rotate-old").await;
    let key = app_key(&server, home.path(), &[]).await;
    let http = reqwest::Client::new();
    let ask = || {
        http.post(format!("{}/openai/v1/chat/completions", server.addr))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);

    let new_key = fake_provider_key("rotate-new");
    // A key the provider rejects never becomes pending.
    let (ok, _, err) = server
        .cli(home.path(), &["rotate", "start", "openai"], Some(&new_key))
        .await;
    assert!(!ok && err.contains("rejected the new key"), "{err}");
    assert!(!err.contains(&new_key), "{err}");
    upstream.accept_key(&new_key);
    let (ok, out, err) = server
        .cli(home.path(), &["rotate", "start", "openai"], Some(&new_key))
        .await;
    assert!(ok, "{err}");
    assert!(out.contains("v2") && out.contains("pending"), "{out}");
    let (ok, out, err) = server
        .cli(
            home.path(),
            &["rotate", "promote", "openai", "--env", "dev"],
            None,
        )
        .await;
    assert!(ok && out.contains("previous"), "{out}{err}");
    assert_eq!(ask().await.unwrap().status(), 200);
    let (ok, status, err) = server
        .cli(home.path(), &["rotate", "status", "openai", "--json"], None)
        .await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&status).unwrap();
    let version = |v: u64| {
        status["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["version"] == v)
            .unwrap()
            .clone()
    };
    assert_eq!(version(2)["stage"], "current");
    assert_eq!(version(2)["requests_last_hour"], 1);
    assert_eq!(version(1)["stage"], "previous");
    assert_eq!(version(1)["requests_last_hour"], 1);
    // The old key served a request moments ago.
    let (ok, _, err) = server
        .cli(home.path(), &["rotate", "finish", "openai"], None)
        .await;
    assert!(!ok && err.contains("--force"), "{err}");
    // A longer quiet window is still not met; a too short one is refused.
    let (ok, _, err) = server
        .cli(
            home.path(),
            &["rotate", "finish", "openai", "--quiet-window", "2h"],
            None,
        )
        .await;
    assert!(!ok && err.contains("in the last 120 minutes"), "{err}");
    let (ok, _, err) = server
        .cli(
            home.path(),
            &["rotate", "finish", "openai", "--quiet-window", "30s"],
            None,
        )
        .await;
    assert!(!ok && err.contains("1m to 7d"), "{err}");
    let (ok, out, err) = server
        .cli(home.path(), &["rotate", "rollback", "openai"], None)
        .await;
    assert!(ok && out.contains("retired"), "{out}{err}");
    // It says what to do next, ready to paste.
    assert!(
        out.contains("Next:") && out.contains("`keyforge rotate start openai --env dev`"),
        "{out}"
    );
    let (ok, _, err) = server
        .cli(home.path(), &["rotate", "status", "nope"], None)
        .await;
    assert!(!ok && err.contains("no provider named `nope`"), "{err}");
    let (ok, status, err) = server.cli(home.path(), &["status"], None).await;
    assert!(
        ok && status.contains("openai") && status.contains("healthy"),
        "{status}{err}"
    );
    // The ledger writer's counters, with nothing waiting or dropped.
    assert!(
        status.contains(" 0 waiting for room,") && status.contains(" 0 dropped;"),
        "{status}"
    );
    let logs = server.stop().await;
    assert!(!logs.contains(&new_key), "{logs}");
    for (path, bytes) in all_files(home.path()) {
        assert!(
            !contains(&bytes, &new_key),
            "{} holds the new key",
            path.display()
        );
    }
}

/// The audit log records admin actions and every key use, survives a
/// kill -9 under load with its chain intact, and catches each kind of
/// tampering, in the database and in an export.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_is_tamper_evident_and_survives_kill_9() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream, provider_key) = with_openai(home.path(), "audit").await;
    let key = app_key(&server, home.path(), &[]).await;
    // Load from eight clients, then kill -9 in the middle of it.
    let addr = server.addr.clone();
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (addr, key) = (addr.clone(), key.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for _ in 0..1000 {
                    let sent = http
                        .post(format!("{addr}/openai/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    if sent.is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // SIGKILL: no shutdown, no flush.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(server);
    for client in load {
        client.await.unwrap();
    }

    let server = Server::start_in(home.path(), &[]).await;
    let (ok, out, err) = server.cli(home.path(), &["audit", "verify"], None).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    let (ok, tail, err) = server.cli(home.path(), &["audit", "tail"], None).await;
    assert!(ok, "{err}");
    for kind in [
        "gateway.start",
        "admin.provider.add",
        "admin.key.create",
        "key.use",
    ] {
        assert!(
            tail.contains(&format!("\"kind\":\"{kind}\"")),
            "no {kind} entry"
        );
    }
    assert!(
        !tail.contains(&provider_key) && !tail.contains(&key),
        "a secret in the audit log"
    );
    let uses = tail.matches("\"request_id\"").count();
    assert!(uses > 10, "{uses} key uses recorded before the kill");

    // An export verifies offline with the master key...
    let (ok, export, err) = server.cli(home.path(), &["audit", "export"], None).await;
    assert!(ok, "{err}");
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap();
    let verify_file = |lines: Vec<&str>| {
        let path = home.path().join("export.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let server = &server;
        let home = home.path();
        let path = path.to_str().unwrap().to_owned();
        async move {
            server
                .cli(
                    home,
                    &["audit", "verify", "--file", &path, "--data-dir", data_arg],
                    None,
                )
                .await
        }
    };
    let lines: Vec<&str> = export.lines().collect();
    let (ok, out, err) = verify_file(lines.clone()).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    // ...and every kind of tampering is caught, and located.
    let created = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"admin.key.create\""))
        .unwrap();
    let edited = lines[created].replace("admin.key.create", "admin.nothing");
    let mut with_edit = lines.clone();
    with_edit[created] = &edited;
    // Entry lines (not checkpoints) in the middle of the log.
    let entries: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("{\"seq\""))
        .collect();
    assert!(entries.len() > 5, "{export}");
    let (e, f) = (entries[3], entries[4]);
    // An entry removed with the checkpoint after it.
    let mut removed = lines.clone();
    removed.drain(e..=e + 1);
    let mut reordered = lines.clone();
    reordered.swap(e, f);
    let truncated = lines[..lines.len() - 3].to_vec();
    for (what, tampered, needle) in [
        ("edited", with_edit, "was edited"),
        ("removed", removed, "were removed or reordered"),
        ("reordered", reordered, "were removed or reordered"),
        ("truncated", truncated, "truncated"),
    ] {
        let (ok, _, err) = verify_file(tampered).await;
        assert!(
            !ok && err.contains("tampered with") && err.contains(needle),
            "{what}: {err}"
        );
    }

    // Editing the stored log is caught too.
    let python = std::env::var("KEYFORGE_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let db = data.join("keyforge.db");
    let edited = std::process::Command::new(python)
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_log SET line = replace(line, 'admin.key.create', 'admin.nothing') WHERE kind = 'admin.key.create'\"); c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(edited.success());
    let (ok, _, err) = server.cli(home.path(), &["audit", "verify"], None).await;
    assert!(!ok && err.contains("tampered with"), "{err}");
    server.stop().await;
}

/// `keyforge serve` is not dumpable: Linux then hands its `/proc/<pid>`
/// files (`environ`, `mem`, …) to root, so another process of the same
/// user can neither read its environment (`KEYFORGE_MASTER_KEY`) nor
/// `ptrace` it. Root can always read them, so when the test runs as root it
/// serves as `nobody` and checks that the files belong to root, not to the
/// serving user.
#[tokio::test(flavor = "multi_thread")]
async fn the_serving_process_cannot_be_inspected_by_its_own_user() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;

    const NOBODY: u32 = 65_534;
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = home.path().join("data");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .unwrap();
    let as_root = rustix::process::getuid().is_root();
    let user = if as_root {
        std::os::unix::fs::chown(&data, Some(NOBODY), Some(NOBODY)).unwrap();
        NOBODY
    } else {
        rustix::process::getuid().as_raw()
    };
    let mut command = std::process::Command::new(common::BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if as_root {
        command.uid(NOBODY).gid(NOBODY);
    }
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let started = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.starts_with("KeyForge listening on ") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(started, Ok(true), "keyforge serve did not start");
    let pid = child.id().unwrap();

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let real_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .unwrap();
    assert_eq!(real_uid, user.to_string(), "{status}");
    assert_ne!(user, 0);
    let environ = std::fs::metadata(format!("/proc/{pid}/environ")).unwrap();
    assert_eq!(
        environ.uid(),
        0,
        "a dumpable process's /proc files belong to its own user"
    );
    if !as_root {
        let read = std::fs::read(format!("/proc/{pid}/environ"));
        assert!(read.is_err(), "the same user read the environment");
    }
    child.kill().await.unwrap();
}
