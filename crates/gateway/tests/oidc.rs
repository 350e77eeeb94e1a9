//! Workload identity end to end: a test OIDC issuer on loopback (keys made
//! at test time, discovery and JWKS served over HTTP) signs GitHub-Actions-
//! and Kubernetes-shaped tokens; the gateway exchanges good ones for
//! short-lived keys and refuses each kind of bad one with a clear error.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a malformed answer must fail the test loudly"
)]

mod common;

use std::time::Duration;

use common::Harness;
use keyforge_gateway::GatewayConfig;
use keyforge_gateway::oidc::config::RawOidc;
use keyforge_testkit::{TestIssuer, github_claims, kubernetes_claims};
use serde_json::{Value, json};

/// The harness clock's start (2026-06-01T12:00:00Z) in Unix seconds.
const NOW: i64 = 1_780_315_200;

async fn gateway(issuer: &TestIssuer, extra: &str) -> Harness {
    let text = format!(
        r#"
        [[issuer]]
        name = "github"
        preset = "github-actions"
        url = "{url}"
        audience = "keyforge"

        [[issuer]]
        name = "cluster"
        preset = "kubernetes"
        url = "{url}"
        audience = "https://keyforge.internal"
        jwks = '{jwks}'

        [[role]]
        name = "deploy"
        issuer = "github"
        env = "ci"
        bound_claims = {{ repository = "acme/app", ref = ["refs/heads/main", "refs/tags/v*"] }}
        providers = ["openai"]
        budgets = ["2usd/day"]
        rpm = 30
        ttl = "1h"
        max_ttl = "2h"

        [[role]]
        name = "batch"
        issuer = "cluster"
        env = "ci"
        bound_claims = {{ "kubernetes.io/namespace" = "jobs", "kubernetes.io/serviceaccount/name" = "summarizer" }}
        ttl = "15m"
        {extra}
        "#,
        url = issuer.url(),
        jwks = issuer.jwks(),
    );
    let raw: RawOidc = toml::from_str(&text).unwrap();
    let config = GatewayConfig {
        oidc: raw.validate(std::path::Path::new(".")).unwrap(),
        ..GatewayConfig::default()
    };
    let harness = Harness::start_with(config).await;
    harness.add_provider("openai", "openai", "ci").await;
    harness
}

async fn login(harness: &Harness, role: &str, token: &str) -> (u16, Value) {
    login_with(harness, json!({"role": role, "token": token})).await
}

async fn login_with(harness: &Harness, body: Value) -> (u16, Value) {
    let response = harness
        .http
        .post(harness.url("/keyforge/v1/oidc/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn chat(harness: &Harness, key: &str) -> (u16, Value) {
    let response = harness
        .http
        .post(harness.url("/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn audit_lines(harness: &Harness) -> Vec<Value> {
    harness
        .http
        .get(harness.url("/admin/v1/audit?limit=100"))
        .bearer_auth(&harness.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn main_branch(issuer: &TestIssuer) -> Value {
    github_claims(
        &issuer.url(),
        "keyforge",
        "acme/app",
        "refs/heads/main",
        NOW,
    )
}

#[tokio::test]
async fn a_github_actions_token_becomes_a_key_that_works_then_expires() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(&issuer, "").await;
    let token = issuer.sign_rs256(&main_branch(&issuer));
    let (status, body) = login(&harness, "deploy", &token).await;
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().unwrap().to_owned();
    let id = body["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("kf_ci_"));
    assert_eq!(body["origin"], "oidc:deploy");
    assert_eq!(body["env"], "ci");
    assert_eq!(body["expires_at"], "2026-06-01T13:00:00Z");
    assert_eq!(body["scope"]["providers"], json!(["openai"]));
    assert_eq!(body["limits"]["rpm"], 30);
    assert_eq!(body["budgets"][0]["limit_usd"], "$2.000000/day");
    assert_eq!(body["name"], "deploy: repo:acme/app:ref:refs/heads/main");

    let (status, answer) = chat(&harness, &key).await;
    assert_eq!(status, 200, "{answer}");

    // The exchange is audited with the token's issuer and subject, never
    // with the token or the key.
    let lines = audit_lines(&harness).await;
    let entry = lines
        .iter()
        .find(|line| line["kind"] == "key.create" && line["data"]["id"] == id.as_str())
        .unwrap();
    assert_eq!(entry["actor"], "oidc:deploy");
    assert_eq!(entry["data"]["oidc"]["issuer"], issuer.url());
    assert_eq!(
        entry["data"]["oidc"]["subject"],
        "repo:acme/app:ref:refs/heads/main"
    );
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains(&token) && !text.contains(&key));

    // A tag matches the role's second ref pattern; a shorter lifetime may
    // be asked for, a longer one than max_ttl may not.
    let tag = github_claims(
        &issuer.url(),
        "keyforge",
        "acme/app",
        "refs/tags/v1.2.0",
        NOW,
    );
    let (status, body) = login_with(
        &harness,
        json!({"role": "deploy", "token": issuer.sign_rs256(&tag), "ttl": "10m"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], "2026-06-01T12:10:00Z");
    let (status, body) = login_with(
        &harness,
        json!({"role": "deploy", "token": issuer.sign_rs256(&tag), "ttl": "3h"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    harness.clock.advance(Duration::from_secs(3601));
    let (status, answer) = chat(&harness, &key).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{answer}"
    );

    // A month on, short-lived keys are archived: gone from listings (and
    // from memory) at the next change, still shown by id.
    harness.clock.advance(Duration::from_secs(31 * 86_400));
    let later = github_claims(
        &issuer.url(),
        "keyforge",
        "acme/app",
        "refs/heads/main",
        NOW + 3601 + 31 * 86_400,
    );
    let (status, body) = login(&harness, "deploy", &issuer.sign_rs256(&later)).await;
    assert_eq!(status, 201, "{body}");
    let (_, keys) = harness.admin(reqwest::Method::GET, "/keys", None).await;
    let listed: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [body["id"].as_str().unwrap()]);
    let (status, shown) = harness
        .admin(reqwest::Method::GET, &format!("/keys/{id}"), None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "expired");
    assert_eq!(chat(&harness, &key).await.0, 401);
}

#[tokio::test]
async fn a_kubernetes_service_account_token_becomes_a_key() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(&issuer, "").await;
    let claims = kubernetes_claims(
        &issuer.url(),
        "https://keyforge.internal",
        "jobs",
        "summarizer",
        NOW,
    );
    // ES256, a nested claim binding, `aud` as a list, and a JWKS given in
    // the configuration (nothing fetched).
    let (status, body) = login(&harness, "batch", &issuer.sign_es256(&claims)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_at"], "2026-06-01T12:15:00Z");
    let (status, answer) = chat(&harness, body["key"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(issuer.jwks_fetches(), 0);

    let other_account = kubernetes_claims(
        &issuer.url(),
        "https://keyforge.internal",
        "jobs",
        "intruder",
        NOW,
    );
    let (status, body) = login(&harness, "batch", &issuer.sign_es256(&other_account)).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`kubernetes.io/serviceaccount/name` is `intruder`"),
        "{body}"
    );
}

#[tokio::test]
async fn every_kind_of_bad_token_is_refused_with_its_reason() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(&issuer, "").await;
    let good = main_branch(&issuer);
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = good.clone();
        change(&mut claims);
        claims
    };
    let tampered = {
        let token = issuer.sign_rs256(&good);
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let other = issuer.sign_rs256(&with(&|c| c["repository"] = json!("acme/app2")));
        parts[1] = other.split('.').nth(1).unwrap().to_owned();
        parts.join(".")
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("alg none", issuer.unsigned(&good), 401, "unsigned"),
        (
            "HS256 keyed with the public key",
            issuer.hs256_with_public_key(&good),
            401,
            "shared-secret",
        ),
        (
            "signature of other claims",
            tampered,
            401,
            "signature does not verify",
        ),
        (
            "unknown kid",
            issuer.sign_with_key("nobody", "RS256", &good),
            401,
            "no signing key `nobody`",
        ),
        (
            "RS256 header on the EC key",
            issuer.sign_with_key("ec-1", "RS256", &good),
            401,
            "not a key for RS256",
        ),
        (
            "wrong audience",
            issuer.sign_rs256(&with(&|c| c["aud"] = json!("sts.amazonaws.com"))),
            401,
            "audience",
        ),
        (
            "wrong issuer",
            issuer.sign_rs256(&with(&|c| c["iss"] = json!("https://evil.example"))),
            401,
            "issued by `https://evil.example`",
        ),
        (
            "expired",
            issuer.sign_rs256(&with(&|c| c["exp"] = json!(NOW - 120))),
            401,
            "expired at",
        ),
        (
            "not yet valid",
            issuer.sign_rs256(&with(&|c| c["nbf"] = json!(NOW + 600))),
            401,
            "not valid before",
        ),
        (
            "issued in the future",
            issuer.sign_rs256(&with(&|c| c["iat"] = json!(NOW + 600))),
            401,
            "in the future",
        ),
        (
            "no expiry",
            issuer.sign_rs256(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            401,
            "no `exp`",
        ),
        (
            "another repository",
            issuer.sign_rs256(&with(&|c| c["repository"] = json!("mallory/app"))),
            403,
            "`repository` is `mallory/app`",
        ),
        (
            "a feature branch",
            issuer.sign_rs256(&with(&|c| c["ref"] = json!("refs/heads/feature"))),
            403,
            "`ref` is `refs/heads/feature`",
        ),
        ("not a JWT", "abc.def".to_owned(), 401, "not a JWT"),
    ];
    for (what, token, status, expected) in &cases {
        let (got, body) = login(&harness, "deploy", token).await;
        assert_eq!(got, *status, "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{what}: {message}");
        assert!(body.get("key").is_none(), "{what}");
    }
    // Within the leeway (30 s) a just-expired token still passes.
    let (status, body) = login(
        &harness,
        "deploy",
        &issuer.sign_rs256(&with(&|c| c["exp"] = json!(NOW - 10))),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = login(&harness, "nope", &issuer.sign_rs256(&good)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_role");

    // Valid tokens a role refuses are audited under their subject.
    let lines = audit_lines(&harness).await;
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|line| line["kind"] == "oidc.refused")
        .collect();
    assert!(
        refused.iter().any(
            |line| line["data"]["subject"] == "repo:acme/app:ref:refs/heads/main"
                && line["data"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("mallory/app")
        ),
        "{refused:?}"
    );
    // Only the one good login above minted a key.
    let (_, keys) = harness.admin(reqwest::Method::GET, "/keys", None).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");
}

#[tokio::test]
async fn a_key_rotation_at_the_issuer_is_picked_up_through_the_jwks() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(&issuer, "").await;
    let (status, body) = login(
        &harness,
        "deploy",
        &issuer.sign_rs256(&main_branch(&issuer)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(issuer.jwks_fetches(), 1);
    // Cached: a second login fetches nothing.
    let (status, _) = login(
        &harness,
        "deploy",
        &issuer.sign_rs256(&main_branch(&issuer)),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(issuer.jwks_fetches(), 1);

    // The issuer rotates its key. A token under the new `kid` makes the
    // gateway fetch the JWKS again.
    issuer.rotate("rsa-2", true).unwrap();
    harness.clock.advance(Duration::from_secs(11));
    let fresh = github_claims(
        &issuer.url(),
        "keyforge",
        "acme/app",
        "refs/heads/main",
        NOW + 11,
    );
    let (status, body) = login(&harness, "deploy", &issuer.sign_rs256(&fresh)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(issuer.jwks_fetches(), 2);
    // Made-up `kid`s do not make it hammer the issuer: one fetch per 10 s.
    for _ in 0..3 {
        let (status, body) = login(
            &harness,
            "deploy",
            &issuer.sign_with_key("made-up", "RS256", &fresh),
        )
        .await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(issuer.jwks_fetches(), 2);
}

#[tokio::test]
async fn a_gateway_without_oidc_configuration_refuses_every_login() {
    let harness = Harness::start().await;
    harness.add_provider("openai", "openai", "dev").await;
    let (_, key) = harness
        .create_key(json!({"name": "static", "env": "dev"}))
        .await;
    let (status, body) = login(&harness, "deploy", &key).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unknown_role");
    assert!(!body.to_string().contains(&key));
}

/// Anyone on GitHub can get a validly signed GitHub token for any audience:
/// refusals of such tokens are audited, but at a bounded rate, so they
/// cannot flood the audit log.
#[tokio::test]
async fn audited_refusals_are_bounded_so_strangers_cannot_flood_the_log() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(&issuer, "").await;
    let stranger = github_claims(
        &issuer.url(),
        "keyforge",
        "stranger/repo",
        "refs/heads/main",
        NOW,
    );
    let token = issuer.sign_rs256(&stranger);
    for _ in 0..80 {
        let (status, _) = login(&harness, "deploy", &token).await;
        assert_eq!(status, 403);
    }
    let count = |lines: &[Value]| {
        lines
            .iter()
            .filter(|line| line["kind"] == "oidc.refused")
            .count()
    };
    assert_eq!(count(&audit_lines(&harness).await), 60);
    harness.clock.advance(Duration::from_secs(60));
    let (status, _) = login(&harness, "deploy", &token).await;
    assert_eq!(status, 403);
    assert_eq!(count(&audit_lines(&harness).await), 61);
}

/// A role with `single_use = true` exchanges each token once: a token
/// copied from a job's log after it logged in is refused while still valid.
#[tokio::test]
async fn a_single_use_role_refuses_a_second_exchange_of_the_same_token() {
    let issuer = TestIssuer::start().await.unwrap();
    let harness = gateway(
        &issuer,
        r#"
        [[role]]
        name = "once"
        issuer = "github"
        env = "ci"
        bound_claims = { repository = "acme/app" }
        single_use = true
        "#,
    )
    .await;
    let claims = main_branch(&issuer);
    let token = issuer.sign_rs256(&claims);
    let (status, body) = login(&harness, "once", &token).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = login(&harness, "once", &token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_already_used", "{body}");
    assert!(
        audit_lines(&harness)
            .await
            .iter()
            .any(|line| line["kind"] == "oidc.refused"
                && line["data"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("already exchanged")),
        "the replay is audited"
    );

    // Another token (another jti) of the same job is fine, and a role
    // without `single_use` still takes the first token again.
    let mut fresh = claims.clone();
    fresh["jti"] = json!("another-jti");
    let (status, body) = login(&harness, "once", &issuer.sign_rs256(&fresh)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = login(&harness, "deploy", &token).await;
    assert_eq!(status, 201, "{body}");

    // A token a replay could not be told apart from is refused.
    let mut nameless = claims;
    nameless.as_object_mut().unwrap().remove("jti");
    let (status, body) = login(&harness, "once", &issuer.sign_rs256(&nameless)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("jti"),
        "{body}"
    );
}

/// `https://issuer/` and `https://issuer` name the same issuer, whichever
/// side carries the slash.
#[tokio::test]
async fn a_trailing_slash_on_the_issuer_url_does_not_matter() {
    let issuer = TestIssuer::start().await.unwrap();
    for (configured, in_token) in [
        (format!("{}/", issuer.url()), issuer.url()),
        (issuer.url(), format!("{}/", issuer.url())),
    ] {
        let text = format!(
            r#"
            [[issuer]]
            name = "cluster"
            url = "{configured}"
            audience = "keyforge"
            jwks = '{jwks}'

            [[role]]
            name = "batch"
            issuer = "cluster"
            env = "ci"
            bound_claims = {{ sub = "system:serviceaccount:jobs:summarizer" }}
            "#,
            jwks = issuer.jwks(),
        );
        let raw: RawOidc = toml::from_str(&text).unwrap();
        let harness = Harness::start_with(GatewayConfig {
            oidc: raw.validate(std::path::Path::new(".")).unwrap(),
            ..GatewayConfig::default()
        })
        .await;
        let claims = kubernetes_claims(&in_token, "keyforge", "jobs", "summarizer", NOW);
        let (status, body) = login(&harness, "batch", &issuer.sign_rs256(&claims)).await;
        assert_eq!(
            status, 201,
            "configured {configured}, token {in_token}: {body}"
        );
    }
}
