//! `keyforge run` and `keyforge login` with the real binary: a command gets
//! a short-lived key through its environment (the official openai SDK uses
//! it unchanged), signals reach it, its exit code comes back, and the key is
//! revoked when it ends. Keys come from the admin token or from an OIDC token
//! (a file, a variable, or GitHub Actions' token service, faked on loopback).

#![expect(clippy::unwrap_used, reason = "tests: a failed setup must fail loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Server, command};
use keyforge_testkit::{
    ACTIONS_REQUEST_TOKEN, FakeUpstream, TestIssuer, fake_provider_key, github_claims,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

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
        "CI=true but KEYFORGE_TEST_PYTHON is not set: the SDK tests must run in CI (see scripts/test)"
    );
    None
}

async fn server_with_openai(home: &Path, config: Option<&Path>) -> (Server, FakeUpstream) {
    let provider_key = fake_provider_key("run");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let server = match config {
        None => Server::start_in(home, &[]).await,
        Some(config) => {
            let data = home.join("data");
            let data_arg = data.to_str().unwrap().to_owned();
            let args = [
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                &data_arg,
                "--config",
                config.to_str().unwrap(),
            ];
            Server::start(home, &data, &args, &[]).await
        }
    };
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
    (server, upstream)
}

async fn key_status(server: &Server, home: &Path, id: &str) -> String {
    let (ok, out, err) = server.cli(home, &["key", "show", id, "--json"], None).await;
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    view["status"].as_str().unwrap().to_owned()
}

const SDK_SCRIPT: &str = r#"
import os, sys
import openai
key = os.environ["OPENAI_API_KEY"]
assert key.startswith("kf_dev_"), "not a KeyForge key"
assert "KEYFORGE_ADMIN_TOKEN" not in os.environ, "the admin token leaked to the child"
assert os.environ["OPENAI_BASE_URL"].endswith("/p/openai/v1"), os.environ["OPENAI_BASE_URL"]
client = openai.OpenAI()
reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
assert reply.usage.total_tokens > 0
print("key-id", os.environ["KEYFORGE_KEY_ID"])
print("answer", reply.choices[0].message.content)
sys.exit(7)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_runs_on_an_injected_key_that_is_revoked_after_exit() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python with the SDKs; run scripts/test to install them");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (server, upstream) = server_with_openai(home.path(), None).await;
    let python = python.to_str().unwrap().to_owned();
    let (ok, out, err) = server
        .cli(
            home.path(),
            &[
                "run",
                "--env",
                "dev",
                "--provider",
                "openai",
                "--key-ttl",
                "10m",
                "--",
                &python,
                "-c",
                SDK_SCRIPT,
            ],
            None,
        )
        .await;
    assert!(!ok, "the child's exit code 7 must come back");
    assert!(
        out.contains("answer Hello from the fake upstream"),
        "{out}\n{err}"
    );
    let key_id = out
        .lines()
        .find_map(|line| line.strip_prefix("key-id "))
        .unwrap()
        .trim()
        .to_owned();
    // The request reached the provider with the provider's key, never kf_.
    let received = upstream.requests();
    assert_eq!(received.len(), 1);
    assert!(!format!("{:?}", received[0].headers).contains("kf_dev_"));
    assert_eq!(key_status(&server, home.path(), &key_id).await, "revoked");

    // The exit code itself.
    let output = command(home.path())
        .args(["run", "--env", "dev", "--", "sh", "-c", "exit 7"])
        .env("KEYFORGE_ADDR", &server.addr)
        .env("KEYFORGE_DATA_DIR", &server.data_dir)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(7));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signals_reach_the_child_and_the_key_dies_with_it() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream) = server_with_openai(home.path(), None).await;
    let bystander = server
        .create_key(home.path(), &["--name", "bystander", "--env", "dev"])
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut child = command(home.path())
        .args([
            "run",
            "--env",
            "dev",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo \"id $KEYFORGE_KEY_ID\"; while true; do sleep 0.05; done",
        ])
        .env("KEYFORGE_ADDR", &server.addr)
        .env("KEYFORGE_DATA_DIR", &server.data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let key_id = first.strip_prefix("id ").unwrap().to_owned();
    assert_eq!(key_status(&server, home.path(), &key_id).await, "active");

    let pid = child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(42),
        "keyforge run returns the child's code"
    );
    let rest = lines.next_line().await.unwrap().unwrap_or_default();
    assert_eq!(rest, "got-term");
    assert_eq!(key_status(&server, home.path(), &key_id).await, "revoked");
    // Only the run's key: other keys are untouched.
    assert_eq!(key_status(&server, home.path(), &bystander).await, "active");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oidc_token_logs_in_and_runs_a_command_without_any_static_key() {
    let home = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let config = home.path().join("keyforge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[oidc.issuer]]
name = "github"
preset = "github-actions"
url = "{url}"
audience = "keyforge"

[[oidc.role]]
name = "deploy"
issuer = "github"
env = "dev"
providers = ["openai"]
bound_claims = {{ repository = "acme/app", ref = "refs/heads/main" }}
ttl = "20m"
"#,
            url = issuer.url()
        ),
    )
    .unwrap();
    let (server, _upstream) = server_with_openai(home.path(), Some(&config)).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = github_claims(
        &issuer.url(),
        "keyforge",
        "acme/app",
        "refs/heads/main",
        now,
    );
    let token_file = home.path().join("token");
    std::fs::write(&token_file, issuer.sign_rs256(&claims)).unwrap();

    // `login` prints the key alone on stdout; no admin token is involved.
    let output = command(home.path())
        .args(["login", "--role", "deploy", "--oidc-token-file"])
        .arg(&token_file)
        .env("KEYFORGE_ADDR", &server.addr)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("kf_dev_"), "{key}");
    assert!(stderr.contains("expires"), "{stderr}");
    let answer = reqwest::Client::new()
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // A token for another repository is refused, with the reason.
    let other = github_claims(
        &issuer.url(),
        "keyforge",
        "mallory/app",
        "refs/heads/main",
        now,
    );
    std::fs::write(&token_file, issuer.sign_rs256(&other)).unwrap();
    let output = command(home.path())
        .args(["login", "--role", "deploy", "--oidc-token-file"])
        .arg(&token_file)
        .env("KEYFORGE_ADDR", &server.addr)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`repository` is `mallory/app`"), "{stderr}");
    assert!(output.stdout.is_empty());

    // `run` inside a GitHub Actions job: the token comes from the job's
    // token service, the key revokes itself when the command ends.
    issuer.serve_actions_token(claims);
    let output = command(home.path())
        .args([
            "run",
            "--role",
            "deploy",
            "--github-actions",
            "--",
            "sh",
            "-c",
            "echo \"id $KEYFORGE_KEY_ID\"; case \"$OPENAI_API_KEY\" in kf_dev_*) exit 0;; *) exit 3;; esac",
        ])
        .env("KEYFORGE_ADDR", &server.addr)
        .env("ACTIONS_ID_TOKEN_REQUEST_URL", issuer.actions_url())
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", ACTIONS_REQUEST_TOKEN)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("id "))
        .unwrap()
        .to_owned();
    assert_eq!(key_status(&server, home.path(), &key_id).await, "revoked");
    let (ok, out, _) = server
        .cli(home.path(), &["key", "show", &key_id, "--json"], None)
        .await;
    assert!(ok);
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["origin"], "oidc:deploy");
    server.stop().await;
}

/// A kf_ key found by `keyforge scan --revoke` is revoked at the gateway
/// that issued it and recorded in its audit log with where it was found; the
/// leak endpoint takes GitHub's secret-scanning report shape.
#[tokio::test(flavor = "multi_thread")]
async fn leaked_keys_found_by_scan_are_revoked_and_audited() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream) = server_with_openai(home.path(), None).await;
    let leaked = server
        .create_key(home.path(), &["--name", "leaky", "--env", "dev"])
        .await;
    let leaked_key = leaked["key"].as_str().unwrap().to_owned();
    let leaked_id = leaked["id"].as_str().unwrap().to_owned();
    let repo = home.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("notes.txt"), format!("\nkey: {leaked_key}\n")).unwrap();

    let output = command(home.path())
        .args(["scan", "--revoke"])
        .arg(&repo)
        .env("KEYFORGE_ADDR", &server.addr)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("kf-virtual-key"), "{stdout}");
    assert!(stdout.contains("    revoked: yes"), "{stdout}");
    assert!(!stdout.contains(&leaked_key), "{stdout}");
    assert_eq!(
        key_status(&server, home.path(), &leaked_id).await,
        "revoked"
    );
    let (ok, audit, _) = server.cli(home.path(), &["audit", "tail"], None).await;
    assert!(ok);
    let entry = audit
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["kind"] == "key.leaked")
        .unwrap();
    assert_eq!(entry["data"]["id"], leaked_id.as_str());
    assert!(
        entry["data"]["url"]
            .as_str()
            .unwrap()
            .ends_with("notes.txt:2"),
        "{entry}"
    );
    assert!(!audit.contains(&leaked_key));

    // Found again, 101 times (more than one report holds), the dead key is
    // said to be dead, not revoked a second time.
    std::fs::write(
        repo.join("notes.txt"),
        format!("\nkey: {leaked_key}\n").repeat(101),
    )
    .unwrap();
    let output = command(home.path())
        .args(["scan", "--revoke"])
        .arg(&repo)
        .env("KEYFORGE_ADDR", &server.addr)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout.matches("revoked: already dead").count(),
        101,
        "{stdout}{stderr}"
    );

    // GitHub's partner-program shape: labels per token, by SHA-256.
    let other = server
        .create_key(home.path(), &["--name", "other", "--env", "dev"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let answer: Vec<Value> = reqwest::Client::new()
        .post(format!("{}/keyforge/v1/leaks", server.addr))
        .json(&serde_json::json!([
            {"token": other, "type": "keyforge_virtual_key", "url": "https://github.com/acme/app/blob/abc/config.py", "source": "content"},
            {"token": "kf_dev_notarealkeynotarealkeynotarea", "type": "keyforge_virtual_key", "url": "https://gist.github.com/x", "source": "gist"},
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.len(), 2);
    assert_eq!(answer[0]["label"], "true_positive");
    assert_eq!(answer[1]["label"], "false_positive");
    assert_eq!(answer[0]["token_hash"].as_str().unwrap().len(), 64);
    let refused = reqwest::Client::new()
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(&other)
        .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    server.stop().await;
}
