//! Humans log in to the admin API with OIDC (issue #14, "Humans may log
//! in with OIDC"), end to end through the real binary against the test
//! issuer: the device flow (RFC 8628) with its pending, slow_down, denied
//! and expired paths; roles from claim bindings (a `platform` user is an
//! operator: may create a key, may not add a provider); no binding, a
//! wrong audience, an expired token and another issuer refused, audited,
//! and never echoing the token; sessions listed, revoked, expired; and the
//! audit log naming `oidc:<email>`.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step must fail the test loudly"
)]

#[expect(dead_code, reason = "not every test file uses every helper")]
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::Server;
use keyforge_testkit::TestIssuer;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const CLIENT_ID: &str = "keyforge-cli";

/// Starts a gateway whose `[admin.oidc]` trusts `issuer`: `platform`
/// members are operators, `@example.com` addresses viewers.
async fn gateway(home: &Path, issuer: &TestIssuer, session_ttl: &str) -> Server {
    let data = home.join("data");
    let config = home.join("keyforge.toml");
    std::fs::write(
        &config,
        format!(
            "[admin.oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nsession_ttl = \"{session_ttl}\"\n\
             [[admin.oidc.binding]]\nrole = \"viewer\"\nemail_suffix = \"@example.com\"\n\
             [[admin.oidc.binding]]\nrole = \"operator\"\ngroup = \"platform\"\n",
            issuer.url()
        ),
    )
    .unwrap();
    Server::start(
        home,
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    )
    .await
}

/// Runs `keyforge ARGS` as the human whose HOME is `user_home` (no admin
/// token, no data directory: only a stored session can authenticate).
async fn as_user(server: &Server, user_home: &Path, args: &[&str]) -> (bool, String, String) {
    let output = common::command(user_home)
        .args(args)
        .env("KEYFORGE_ADDR", &server.addr)
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

/// Runs `keyforge ARGS --data-dir DATA` as the owner (the data
/// directory's admin token wins over any stored session).
async fn as_owner(server: &Server, home: &Path, args: &[&str]) -> String {
    let data = server.data_dir.to_str().unwrap().to_owned();
    let mut all = args.to_vec();
    all.extend(["--data-dir", &data]);
    let (ok, out, err) = as_user(server, home, &all).await;
    assert!(ok, "{all:?}: {out}{err}");
    out
}

/// Audit entries whose actor is `actor`, as the owner reads them.
async fn audited_by(server: &Server, home: &Path, actor: &str) -> Vec<Value> {
    let out = as_owner(
        server,
        home,
        &["audit", "tail", "-n", "1000", "--format", "json"],
    )
    .await;
    out.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["actor"] == actor)
        .collect()
}

fn claims(issuer: &TestIssuer, email: &str, groups: &[&str]) -> Value {
    json!({"iss": issuer.url(), "sub": format!("user-{email}"), "email": email, "groups": groups})
}

/// An ID token for the gateway, valid now, with `extra` claims on top.
fn id_token(issuer: &TestIssuer, email: &str, groups: &[&str], extra: &Value) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut claims = claims(issuer, email, groups);
    let object = claims.as_object_mut().unwrap();
    object.insert("aud".into(), json!(CLIENT_ID));
    object.insert("iat".into(), json!(now));
    object.insert("nbf".into(), json!(now));
    object.insert("exp".into(), json!(now + 600));
    for (name, value) in extra.as_object().unwrap() {
        object.insert(name.clone(), value.clone());
    }
    issuer.sign_rs256(&claims)
}

/// `keyforge admin login --oidc` as a child: returns the child and the
/// user code it printed.
async fn start_device_login(
    server: &Server,
    user_home: &Path,
) -> (
    tokio::process::Child,
    String,
    tokio::task::JoinHandle<String>,
) {
    let mut child = common::command(user_home)
        .args(["admin", "login", "--oidc"])
        .env("KEYFORGE_ADDR", &server.addr)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let code = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the login printed no code")
            .unwrap()
            .unwrap_or_else(|| panic!("the login ended early: {seen}"));
        seen += &line;
        seen.push('\n');
        if let Some((_, code)) = line.split_once("enter the code ") {
            assert!(line.contains("/device"), "the verification URI: {line}");
            break code.trim().to_owned();
        }
    };
    let rest = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            seen += &line;
            seen.push('\n');
        }
        seen
    });
    (child, code, rest)
}

/// Waits until the issuer has answered these polls, in order.
async fn wait_for_polls(issuer: &TestIssuer, expected: &[&str]) {
    for _ in 0..600 {
        if issuer.device_log().answers == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "polls: {:?}, expected {expected:?}",
        issuer.device_log().answers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_user_logs_in_with_the_device_flow_and_acts_as_an_operator() {
    let home = tempfile::tempdir().unwrap();
    let alice_home = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let server = gateway(home.path(), &issuer, "1h").await;

    // The issuer asks for a back-off once while the user is still away.
    issuer.force_slow_downs(1);
    let (child, code, stderr) = start_device_login(&server, alice_home.path()).await;
    assert_eq!(issuer.pending_user_codes(), vec![code.clone()]);
    wait_for_polls(&issuer, &["slow_down", "authorization_pending"]).await;
    assert!(issuer.approve_device(
        &code,
        claims(&issuer, "alice@example.com", &["dev", "platform"])
    ));
    let output = child.wait_with_output().await.unwrap();
    let stderr = stderr.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{stderr}");
    let log = issuer.device_log();
    assert_eq!(
        log.answers,
        ["slow_down", "authorization_pending", "tokens"],
        "{log:?}"
    );
    assert_eq!(
        log.too_early, 0,
        "the client kept the interval, +5 s after slow_down"
    );
    assert_eq!(log.scopes, ["openid email groups"]);
    assert!(
        stderr.contains("alice@example.com") && stderr.contains("operator"),
        "{stderr}"
    );
    // The session token is stored, 0600, and printed nowhere.
    let file = alice_home
        .path()
        .join(".config/keyforge/admin-session.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = stored["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kfa_"), "{stored}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!stdout.contains(&token) && !stderr.contains(&token));

    // Operator rights through the stored session: a key yes, a provider no.
    let provider_key_file = alice_home.path().join("provider-key");
    std::fs::write(
        &provider_key_file,
        keyforge_testkit::fake_provider_key("oidc"),
    )
    .unwrap();
    let (ok, out, err) = as_user(
        &server,
        alice_home.path(),
        &["key", "create", "--name", "app", "--env", "dev", "--json"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let key: Value = serde_json::from_str(&out).unwrap();
    let (ok, _, err) = as_user(
        &server,
        alice_home.path(),
        &[
            "provider",
            "add",
            "openai",
            "--kind",
            "openai",
            "--env",
            "dev",
            "--no-check",
            "--from-file",
            provider_key_file.to_str().unwrap(),
        ],
    )
    .await;
    assert!(!ok && err.contains("insufficient_role"), "{err}");
    let (ok, out, err) = as_user(&server, alice_home.path(), &["admin", "whoami"]).await;
    assert!(ok && out.contains("operator"), "{out}{err}");

    // The audit log names the human, for the login, the key and the refusal.
    let entries = audited_by(&server, home.path(), "oidc:alice@example.com").await;
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in [
        "admin.oidc.login",
        "admin.key.create",
        "admin.access.refused",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let created = entries
        .iter()
        .find(|e| e["kind"] == "admin.key.create")
        .unwrap();
    assert!(
        created.to_string().contains(key["id"].as_str().unwrap()),
        "{created}"
    );

    // `admin list` shows the session; `admin revoke` ends it at once.
    let list: Value =
        serde_json::from_str(&as_owner(&server, home.path(), &["admin", "list", "--json"]).await)
            .unwrap();
    let session = &list["sessions"][0];
    assert_eq!(session["identity"], "oidc:alice@example.com", "{list}");
    assert_eq!(session["role"], "operator");
    assert_eq!(session["status"], "active");
    assert!(!list.to_string().contains(&token));
    let handle = session["name"].as_str().unwrap().to_owned();
    as_owner(&server, home.path(), &["admin", "revoke", &handle]).await;
    let (ok, _, err) = as_user(&server, alice_home.path(), &["key", "list"]).await;
    assert!(
        !ok && err.contains("session_ended") && err.contains(&handle),
        "{err}"
    );

    // Logging out deletes the file.
    let (ok, out, err) = as_user(&server, alice_home.path(), &["admin", "logout"]).await;
    assert!(ok, "{out}{err}");
    assert!(!file.exists());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_say_why_are_audited_and_never_echo_the_token() {
    let home = tempfile::tempdir().unwrap();
    let user_home = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let other_issuer = TestIssuer::start().await.unwrap();
    let server = gateway(home.path(), &issuer, "1h").await;
    let token_file = user_home.path().join("id-token");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no binding",
            id_token(&issuer, "mallory@elsewhere.org", &["dev"], &json!({})),
            "no_role_binding",
        ),
        (
            "wrong audience",
            id_token(
                &issuer,
                "alice@example.com",
                &["platform"],
                &json!({"aud": "some-other-app"}),
            ),
            "does not include",
        ),
        (
            "expired",
            id_token(
                &issuer,
                "alice@example.com",
                &["platform"],
                &json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}),
            ),
            "the token expired",
        ),
        (
            "not yet valid",
            id_token(
                &issuer,
                "alice@example.com",
                &["platform"],
                &json!({"nbf": now + 3600}),
            ),
            "not valid before",
        ),
        (
            "unknown issuer",
            other_issuer.sign_rs256(&json!({
                "iss": other_issuer.url(), "sub": "x", "email": "alice@example.com",
                "groups": ["platform"], "aud": CLIENT_ID, "iat": now, "exp": now + 600,
            })),
            "unknown issuer",
        ),
    ];
    for (what, token, expected) in &cases {
        std::fs::write(&token_file, token).unwrap();
        let (ok, out, err) = as_user(
            &server,
            user_home.path(),
            &[
                "admin",
                "login",
                "--id-token-file",
                token_file.to_str().unwrap(),
            ],
        )
        .await;
        assert!(!ok, "{what}: {out}");
        assert!(err.contains(expected), "{what}: {err}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !err.contains(signature) && !out.contains(signature),
            "{what}: echoed"
        );
    }
    assert!(
        !user_home
            .path()
            .join(".config/keyforge/admin-session.json")
            .exists()
    );
    let mut refused = audited_by(&server, home.path(), "oidc:mallory@elsewhere.org").await;
    refused.extend(audited_by(&server, home.path(), "oidc:alice@example.com").await);
    refused.extend(audited_by(&server, home.path(), "oidc:unverified").await);
    let codes: Vec<String> = refused
        .iter()
        .filter(|e| e["kind"] == "admin.oidc.refused")
        .map(|e| e["data"]["code"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(codes.len(), cases.len(), "{refused:?}");
    assert!(codes.contains(&"no_role_binding".to_owned()), "{codes:?}");

    // The device flow: the user denies.
    let (child, code, stderr) = start_device_login(&server, user_home.path()).await;
    wait_for_polls(&issuer, &["authorization_pending"]).await;
    assert!(issuer.deny_device(&code));
    let output = child.wait_with_output().await.unwrap();
    let stderr = stderr.await.unwrap();
    assert!(!output.status.success());
    assert!(stderr.contains("denied"), "{stderr}");
    assert_eq!(
        issuer.device_log().answers,
        ["authorization_pending", "access_denied"]
    );

    // The device flow: the issuer expires the code while the user is away.
    let (child, code, stderr) = start_device_login(&server, user_home.path()).await;
    let before = issuer.device_log().answers.len();
    for _ in 0..600 {
        if issuer.device_log().answers.len() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(issuer.expire_device(&code));
    let output = child.wait_with_output().await.unwrap();
    let stderr = stderr.await.unwrap();
    assert!(!output.status.success());
    assert!(
        stderr.contains("expired before it was approved"),
        "{stderr}"
    );
    assert_eq!(
        issuer.device_log().answers[before..],
        ["authorization_pending", "expired_token"]
    );

    // The device flow: nobody approves before `expires_in` (the CLI stops
    // polling on its own).
    issuer.set_device_timing(1, 3);
    let (child, _code, stderr) = start_device_login(&server, user_home.path()).await;
    let output = child.wait_with_output().await.unwrap();
    let stderr = stderr.await.unwrap();
    assert!(!output.status.success());
    assert!(
        stderr.contains("expired before it was approved"),
        "{stderr}"
    );
    assert_eq!(issuer.device_log().too_early, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let user_home = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let server = gateway(home.path(), &issuer, "2s").await;
    let token_file = user_home.path().join("id-token");
    std::fs::write(
        &token_file,
        id_token(&issuer, "bob@example.com", &[], &json!({})),
    )
    .unwrap();
    let (ok, out, err) = as_user(
        &server,
        user_home.path(),
        &[
            "admin",
            "login",
            "--id-token-file",
            token_file.to_str().unwrap(),
            "--print",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("kfa_"), "--print shows the token: {out}");
    let (ok, out, err) = as_user(&server, user_home.path(), &["key", "list"]).await;
    assert!(ok, "a viewer lists keys: {out}{err}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Past its expiry the session is refused by the gateway (the token is
    // sent directly: the CLI would no longer pick the stored session).
    let answer = reqwest::Client::new()
        .get(format!(
            "http://{}/admin/v1/keys",
            server.addr.trim_start_matches("http://")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "session_ended", "{body}");
    let (ok, _, err) = as_user(&server, user_home.path(), &["key", "list"]).await;
    assert!(!ok, "no admin token any more: {err}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_admin_oidc_block_stops_the_start_naming_the_setting() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("keyforge.toml");
    let cases = [
        (
            "[admin.oidc]\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\n",
            "has no [[admin.oidc.binding]]",
        ),
        (
            "[admin.oidc]\nissuer = \"https://id.example.com\"\nclient_id = \"c\"\nsession_ttl = \"24h\"\n[[admin.oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\n",
            "at most 12h",
        ),
        (
            "[admin.oidc]\nissuer = \"http://id.example.com\"\nclient_id = \"c\"\n[[admin.oidc.binding]]\nrole = \"viewer\"\ngroup = \"g\"\n",
            "must use https://",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&config, text).unwrap();
        let data = home.path().join("data");
        let mut command = common::command(home.path());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null());
        // A start that is not refused serves until killed (on drop).
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("{text}: the server started"))
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!output.status.success(), "{text}: started");
        assert!(
            all.contains("[admin.oidc]") && all.contains(expected),
            "{text}: {all}"
        );
    }
}

/// The test issuer's token endpoint speaks RFC 8628 section 3.5's wire
/// format to any client, not just ours.
#[tokio::test]
async fn the_test_issuer_answers_device_polls_as_rfc_8628_says() {
    let issuer = TestIssuer::start().await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str, body: String| {
        http.post(format!("{}{path}", issuer.url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let discovery: Value = http
        .get(format!("{}/.well-known/openid-configuration", issuer.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["device_authorization_endpoint"],
        format!("{}/device/code", issuer.url())
    );
    let device: Value = post("/device/code", "client_id=cli&scope=openid+email".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "device_code",
        "user_code",
        "verification_uri",
        "expires_in",
        "interval",
    ] {
        assert!(!device[field].is_null(), "{field}: {device}");
    }
    assert_eq!(issuer.device_log().scopes, ["openid email"]);
    let code = device["device_code"].as_str().unwrap();
    let poll = |grant: &str, code: &str, client: &str| {
        format!("grant_type={grant}&device_code={code}&client_id={client}")
    };
    let grant = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code";
    let error = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["cache-control"], "no-store");
        response.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        error(post("/token", poll("password", code, "cli")).await.unwrap()).await,
        "unsupported_grant_type"
    );
    assert_eq!(
        error(post("/token", poll(grant, "nope", "cli")).await.unwrap()).await,
        "invalid_grant"
    );
    assert_eq!(
        error(post("/token", poll(grant, code, "cli")).await.unwrap()).await,
        "authorization_pending"
    );
    // At once again: sooner than `interval`.
    assert_eq!(
        error(post("/token", poll(grant, code, "cli")).await.unwrap()).await,
        "slow_down"
    );
    assert_eq!(issuer.device_log().too_early, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_at_the_gateway() {
    let home = tempfile::tempdir().unwrap();
    let user_home = tempfile::tempdir().unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let server = gateway(home.path(), &issuer, "1h").await;
    let token_file = user_home.path().join("id-token");
    std::fs::write(
        &token_file,
        id_token(&issuer, "bob@example.com", &[], &json!({})),
    )
    .unwrap();
    let (ok, out, err) = as_user(
        &server,
        user_home.path(),
        &[
            "admin",
            "login",
            "--id-token-file",
            token_file.to_str().unwrap(),
            "--print",
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    let token = out.trim().to_owned();
    let (ok, out, err) = as_user(&server, user_home.path(), &["admin", "logout"]).await;
    assert!(ok && err.contains("Ended session"), "{out}{err}");
    // A copy of the token kept elsewhere is worth nothing now.
    let answer = reqwest::Client::new()
        .get(format!(
            "http://{}/admin/v1/keys",
            server.addr.trim_start_matches("http://")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let list: Value =
        serde_json::from_str(&as_owner(&server, home.path(), &["admin", "list", "--json"]).await)
            .unwrap();
    assert_eq!(list["sessions"][0]["status"], "revoked", "{list}");
    let entries = audited_by(&server, home.path(), "oidc:bob@example.com").await;
    assert!(
        entries.iter().any(|e| e["kind"] == "admin.session.revoke"),
        "{entries:?}"
    );
    server.stop().await;
}
