//! `keyforge serve --tls-cert --tls-key`, the real binary: HTTPS with the
//! test CA, a SIGHUP renewal seen by new connections while an open stream
//! goes on, a bad renewal that keeps the certificate in force, a bad file
//! refused at start without a byte of the key; and the master key from a
//! systemd credential or a file named by `KEYFORGE_MASTER_KEY_FILE`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup must fail the test loudly"
)]

#[expect(
    dead_code,
    reason = "these tests call the admin API over HTTPS themselves, not through the CLI helpers"
)]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, command};
use futures_util::StreamExt;
use keyforge_testkit::tls::{KeyKind, TestCa};
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::{Value, json};

fn client(ca: &TestCa) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .tls_info(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn served_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS response")
        .to_vec()
}

/// The venv's Python with the SDKs; under CI=true it must be there.
fn python() -> Option<std::path::PathBuf> {
    if let Some(python) = std::env::var_os("KEYFORGE_TEST_PYTHON") {
        return Some(python.into());
    }
    let venv =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but KEYFORGE_TEST_PYTHON is not set (see scripts/test)"
    );
    eprintln!("SKIPPED the SDK part: no Python with the SDKs; run scripts/test");
    None
}

fn hangup(server: &Server) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn key_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|line| !line.starts_with("-----"))
        .map(|line| line.chars().take(16).collect())
        .collect()
}

#[tokio::test]
async fn https_with_a_sighup_renewal_that_leaves_open_streams_alone() {
    let home = tempfile::tempdir().unwrap();
    let tls_dir = home.path().join("tls");
    std::fs::create_dir(&tls_dir).unwrap();
    let ca = TestCa::new("KeyForge test CA").unwrap();
    let first = ca.server_cert(KeyKind::EcdsaP256).unwrap();
    let (cert, key) = first.write(&tls_dir).unwrap();
    let data = home.path().join("data");
    let server = Server::start(
        home.path(),
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let base = server.addr.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let provider_key = fake_provider_key("tls");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let admin_token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let http = client(&ca);
    let admin = |path: &str, body: Value| {
        http.post(format!("{base}/admin/v1{path}"))
            .bearer_auth(admin_token.trim())
            .json(&body)
            .send()
    };
    let response = admin(
        "/providers",
        json!({"name": "openai", "kind": "openai", "env": "dev", "base_url": upstream.base_url(), "api_key": provider_key, "skip_check": true}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let created: Value = admin("/keys", json!({"name": "app", "env": "dev"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let virtual_key = created["key"].as_str().unwrap().to_owned();

    let response = http
        .post(format!("{base}/openai/v1/chat/completions"))
        .bearer_auth(&virtual_key)
        .json(&json!({"model": "fake-slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(served_cert(&response), first.cert_der);
    let mut stream = response.bytes_stream();
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();

    // Renewal: new files, then SIGHUP.
    let second = ca.server_cert(KeyKind::Rsa2048).unwrap();
    second.write(&tls_dir).unwrap();
    hangup(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = client(&ca)
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        if served_cert(&response) == second.cert_der {
            break;
        }
        assert!(Instant::now() < deadline, "the renewal was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "the open stream ended whole: {text}"
    );

    // A bad renewal (a key that is not the certificate's) keeps the
    // certificate in force, and the server serving.
    let third = ca.server_cert(KeyKind::EcdsaP256).unwrap();
    std::fs::write(&cert, &third.cert_pem).unwrap();
    hangup(&server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client(&ca)
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(served_cert(&response), second.cert_der);

    // The CLI reaches it too, trusting the CA given by KEYFORGE_CA_CERT.
    let ca_file = home.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let listed = command(home.path())
        .args(["key", "list", "--json"])
        .env("KEYFORGE_ADDR", &base)
        .env("KEYFORGE_DATA_DIR", &data)
        .env("KEYFORGE_CA_CERT", &ca_file)
        .output()
        .await
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"app\""));
    // The official openai SDK through TLS (the venv scripts/test makes).
    if let Some(python) = python() {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/sdk/openai_tls.py");
        let output = tokio::process::Command::new(&python)
            .arg(script)
            .env("KF_BASE", &base)
            .env("KF_KEY", &virtual_key)
            .env("KF_CA_CERT", &ca_file)
            .env_remove("OPENAI_API_KEY")
            .env_remove("SSL_CERT_FILE")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("all checks passed"),
            "openai_tls.py: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let untrusted = command(home.path())
        .args(["key", "list", "--json"])
        .env("KEYFORGE_ADDR", &base)
        .env("KEYFORGE_DATA_DIR", &data)
        .output()
        .await
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "a private CA is not trusted without KEYFORGE_CA_CERT"
    );

    let output = server.stop().await;
    assert!(output.contains("TLS certificate reloaded"), "{output}");
    assert!(output.contains("TLS reload failed"), "{output}");
    assert!(
        output.contains("does not belong to the first certificate"),
        "{output}"
    );
    assert!(!output.contains("plain HTTP"), "{output}");
    for line in key_lines(&first.key_pem)
        .iter()
        .chain(&key_lines(&second.key_pem))
    {
        assert!(!output.contains(line.as_str()), "key bytes in the log");
    }
}

async fn serve_fails(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let output = command(home)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "serve started with {args:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn serve_refuses_bad_tls_files_at_start_without_showing_the_key() {
    let home = tempfile::tempdir().unwrap();
    let ca = TestCa::new("KeyForge test CA").unwrap();
    let one = ca.server_cert(KeyKind::EcdsaP256).unwrap();
    let other = ca.server_cert(KeyKind::EcdsaP256).unwrap();
    let cert = home.path().join("cert.pem");
    let key = home.path().join("key.pem");
    std::fs::write(&cert, &one.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let data = home.path().join("data");
    let data = data.to_str().unwrap();
    let stderr = serve_fails(
        home.path(),
        &[
            "--data-dir",
            data,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(stderr.contains("cannot serve TLS"), "{stderr}");
    assert!(
        stderr.contains("does not belong to the first certificate"),
        "{stderr}"
    );
    for line in key_lines(&other.key_pem) {
        assert!(!stderr.contains(line.as_str()), "key bytes in {stderr}");
    }
    let stderr = serve_fails(
        home.path(),
        &["--data-dir", data, "--tls-cert", cert.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

#[tokio::test]
async fn the_master_key_comes_from_a_systemd_credential_or_a_named_file() {
    let home = tempfile::tempdir().unwrap();
    let credentials = home.path().join("credentials");
    std::fs::create_dir(&credentials).unwrap();
    let master = keyforge_vault::MasterKey::generate();
    let credential = credentials.join("master.key");
    std::fs::write(&credential, format!("{}\n", &*master.to_base64())).unwrap();
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o400)).unwrap();
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap();
    let server = Server::start(
        home.path(),
        &data,
        &["--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    )
    .await;
    let output = server.stop().await;
    assert!(
        output.contains(&format!("master key: {}", credential.display())),
        "{output}"
    );
    assert!(
        !data.join("master.key").exists(),
        "no key made in the data directory"
    );
    // The same data directory opens with the same key from a named file,
    // and not with another (the store's sealed rows say which).
    let named = home.path().join("secret-master-key");
    std::fs::copy(&credential, &named).unwrap();
    let server = Server::start(
        home.path(),
        &data,
        &["--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[("KEYFORGE_MASTER_KEY_FILE", named.to_str().unwrap())],
    )
    .await;
    server.stop().await;
    let wrong = home.path().join("wrong-master-key");
    let other = keyforge_vault::MasterKey::generate();
    std::fs::write(&wrong, &*other.to_base64()).unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = serve_fails(
        home.path(),
        &["--data-dir", data_arg],
        &[("KEYFORGE_MASTER_KEY_FILE", wrong.to_str().unwrap())],
    )
    .await;
    assert!(stderr.contains("master key"), "{stderr}");
    // A credential others can read is refused, not used.
    std::fs::set_permissions(&credential, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = serve_fails(
        home.path(),
        &["--data-dir", data_arg],
        &[("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap())],
    )
    .await;
    assert!(stderr.contains("can be read by other users"), "{stderr}");
    // A named file that is not there is an error, not a fresh key.
    let stderr = serve_fails(
        home.path(),
        &["--data-dir", data_arg],
        &[("KEYFORGE_MASTER_KEY_FILE", "/nonexistent/master.key")],
    )
    .await;
    assert!(stderr.contains("KEYFORGE_MASTER_KEY_FILE"), "{stderr}");
}

#[tokio::test]
async fn plain_http_beyond_loopback_warns_and_points_at_tls() {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    // Bound on every interface, but nothing connects to it.
    let server = Server::start(
        home.path(),
        &data,
        &[
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let output = server.stop().await;
    assert!(
        output.contains("listening beyond loopback over plain HTTP")
            && output.contains("--tls-cert FILE --tls-key FILE")
            && output.contains("trusted_proxies"),
        "{output}"
    );
}
