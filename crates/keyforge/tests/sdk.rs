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
