//! The official Python SDKs (`openai`, `anthropic`, `google-genai`, pinned in
//! tests/sdk/requirements.txt) against the real `keyforge serve`: success and
//! error paths, streaming and not. The test command installs them into a
//! venv and sets KEYFORGE_TEST_PYTHON; under CI=true this test never skips.

mod common;

use std::path::PathBuf;

use common::Server;
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::Value;

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

#[tokio::test(flavor = "multi_thread")]
async fn official_sdks_work_through_keyforge() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python with the SDKs; run scripts/test to install them");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let provider_key = fake_provider_key("sdk");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    for name in ["openai", "anthropic", "gemini"] {
        server
            .add_provider(
                home.path(),
                name,
                name,
                "dev",
                &upstream.base_url(),
                &provider_key,
            )
            .await;
    }
    let key_of = |answer: Value| answer["key"].as_str().unwrap().to_owned();
    let key = key_of(
        server
            .create_key(home.path(), &["--name", "sdk", "--env", "dev"])
            .await,
    );
    let scoped = key_of(
        server
            .create_key(
                home.path(),
                &["--name", "scoped", "--env", "dev", "--model", "gpt-4o*"],
            )
            .await,
    );
    let limited = key_of(
        server
            .create_key(
                home.path(),
                &["--name", "limited", "--env", "dev", "--rpm", "1"],
            )
            .await,
    );
    let broke = key_of(
        server
            .create_key(
                home.path(),
                &[
                    "--name",
                    "broke",
                    "--env",
                    "dev",
                    "--budget",
                    "0.000001usd/day",
                ],
            )
            .await,
    );
    let mut bad = key.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let provider_like = format!("sk-proj-{}", "q7R8".repeat(10));

    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk");
    for script in ["openai_sdk.py", "anthropic_sdk.py", "gemini_sdk.py"] {
        let output = tokio::process::Command::new(&python)
            .arg(scripts.join(script))
            .env("KF_BASE", &server.addr)
            .env("KF_KEY", &key)
            .env("KF_SCOPED_KEY", &scoped)
            .env("KF_BAD_KEY", &bad)
            .env("KF_PROVIDER_LIKE_KEY", &provider_like)
            .env("KF_LIMITED_KEY", &limited)
            .env("KF_BROKE_KEY", &broke)
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("GOOGLE_API_KEY")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{script} failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("all checks passed"), "{script}: {stdout}");
    }
    // Exactly the allowed calls reached the fake (openai 10 + 1 within its
    // rate limit, anthropic 2 x 3 + 1, gemini 2; the refused ones never left
    // the gateway), each with the provider key and never with a kf_ key.
    let received = upstream.requests();
    assert_eq!(
        received.len(),
        20,
        "{:?}",
        received.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    for request in received {
        let headers = format!("{:?}", request.headers);
        assert!(
            !headers.contains("kf_dev_"),
            "{} carried a virtual key: {headers}",
            request.path
        );
    }
    server.stop().await;
}

/// The official `openai` SDK closes the connection right after `[DONE]`;
/// an upstream that keeps it open a while longer must not turn a finished
/// stream into a cut one. The ledger says `reported`, with the provider's
/// own counts, and the SDK's loop (which indexes `choices[0]` on every
/// chunk) never sees the usage the gateway asked for on its behalf.
#[tokio::test(flavor = "multi_thread")]
async fn an_sdk_stream_that_ends_before_the_connection_is_reported() {
    let Some(python) = python() else {
        eprintln!("SKIPPED: no Python with the SDKs; run scripts/test to install them");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let provider_key = fake_provider_key("sdk-done");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    upstream.pause_after_end(std::time::Duration::from_secs(5));
    let server = Server::start_in(home.path(), &[]).await;
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
    let answer = server
        .create_key(home.path(), &["--name", "streamer", "--env", "dev"])
        .await;
    let key = answer["key"].as_str().unwrap().to_owned();
    let key_id = answer["id"].as_str().unwrap().to_owned();
    let script = r#"
import os, time, openai
client = openai.OpenAI(base_url=os.environ["KF_BASE"] + "/openai/v1", api_key=os.environ["KF_KEY"])
started = time.monotonic()
text = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "say hello"}], max_tokens=6, stream=True))
assert text == "Hello from the fake upstream, one", text
assert time.monotonic() - started < 4, "the SDK waited for the upstream to close"
print("stream done")
"#;
    let output = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .env("KF_BASE", &server.addr)
        .env("KF_KEY", &key)
        .env_remove("OPENAI_API_KEY")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let (ok, out, err) = server
        .cli(
            home.path(),
            &["usage", "--by", "key", "--since", "1d", "--json"],
            None,
        )
        .await;
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["group"] == key_id.as_str())
        .unwrap_or_else(|| panic!("no row for {key_id}: {report}"))
        .clone();
    // The provider's own count (6 words), not an estimate from characters.
    assert_eq!(row["output_tokens"], 6, "{row}");
    assert_eq!(row["estimated"], 0, "{row}");
    assert_eq!(row["client_cancelled"], 0, "{row}");
    server.stop().await;
}
