//! Changing things without starting over (issue #14), end to end through
//! the real binary in front of the fake upstream: `provider update` and
//! `provider remove`, the key check and the `/v1` base URL of `provider
//! add`, `key update` and `budget set --key`, key names as handles
//! (`name:ENV/NAME`), model patterns nobody has heard of, and one provider
//! secret in several environments. Every change is checked where a user
//! would see it: the next request, `key show`, the audit log, and a restart
//! on the same data directory (the rows' MACs still hold).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a failed step must fail the test loudly"
)]

mod common;

use std::path::Path;

use common::Server;
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::{Value, json};

/// Everything the CLI printed, to search for secrets at the end.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    /// Runs a command that must succeed; returns (stdout, stderr).
    async fn ok(&mut self, server: &Server, home: &Path, args: &[&str]) -> (String, String) {
        self.ok_with(server, home, args, None).await
    }

    async fn ok_with(
        &mut self,
        server: &Server,
        home: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (String, String) {
        let (ok, out, err) = server.cli(home, args, stdin).await;
        self.0 += &out;
        self.0 += &err;
        assert!(ok, "{args:?} failed: {out}{err}");
        (out, err)
    }

    /// Runs a command that must fail; returns its stderr.
    async fn fails(
        &mut self,
        server: &Server,
        home: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> String {
        let (ok, out, err) = server.cli(home, args, stdin).await;
        self.0 += &out;
        self.0 += &err;
        assert!(!ok, "{args:?} should have failed: {out}");
        err
    }

    async fn json(&mut self, server: &Server, home: &Path, args: &[&str]) -> Value {
        let (out, _) = self.ok(server, home, args).await;
        serde_json::from_str(&out).expect("a --json answer")
    }
}

/// A chat completion through `/p/PROVIDER` with `key`; returns the status.
async fn chat(server: &Server, provider: &str, key: &str, model: &str) -> u16 {
    reqwest::Client::new()
        .post(format!(
            "http://{}/p/{provider}/v1/chat/completions",
            server.addr.trim_start_matches("http://")
        ))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi there"}]}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn audit_kinds(transcript: &mut Transcript, server: &Server, home: &Path) -> Vec<Value> {
    let (out, _) = transcript.ok(server, home, &["audit", "tail"]).await;
    out.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_are_checked_normalised_updated_and_removed() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let provider_key = fake_provider_key("edit");
    let wrong_key = fake_provider_key("wrong");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let base = upstream.base_url();
    let server = Server::start_in(home, &[]).await;
    let mut t = Transcript::default();
    let add = |name: &'static str, env: &'static str, url: String| {
        vec![
            "provider".to_owned(),
            "add".to_owned(),
            name.to_owned(),
            "--kind".to_owned(),
            "openai".to_owned(),
            "--env".to_owned(),
            env.to_owned(),
            "--base-url".to_owned(),
            url,
        ]
    };

    // A key the provider rejects is refused, and nothing is added.
    let wrong = add("openai", "dev", base.clone());
    let err = t
        .fails(
            &server,
            home,
            &args(&wrong),
            Some(&format!("{wrong_key}\n")),
        )
        .await;
    assert!(err.contains("rejected the new key (HTTP 401)"), "{err}");
    // A base URL where nothing answers is refused too.
    let down = add("openai", "dev", "http://127.0.0.1:9".to_owned());
    let err = t
        .fails(
            &server,
            home,
            &args(&down),
            Some(&format!("{provider_key}\n")),
        )
        .await;
    assert!(err.contains("could not reach the provider"), "{err}");
    let list = t.json(&server, home, &["provider", "list", "--json"]).await;
    assert_eq!(list["providers"], json!([]), "a refused add adds nothing");
    // --no-check skips the check (the fake never sees the wrong key).
    let seen_before = upstream.requests().len();
    let mut skipped = add("unchecked", "dev", base.clone());
    skipped.push("--no-check".to_owned());
    t.ok_with(
        &server,
        home,
        &args(&skipped),
        Some(&format!("{wrong_key}\n")),
    )
    .await;
    assert_eq!(upstream.requests().len(), seen_before);

    // An OpenAI SDK-style base URL ending in /v1 is accepted and stored
    // without it, with a warning; requests reach /v1/..., not /v1/v1/....
    let v1 = add("openai", "dev", format!("{base}/v1"));
    let (_, err) = t
        .ok_with(
            &server,
            home,
            &args(&v1),
            Some(&format!("{provider_key}\n")),
        )
        .await;
    assert!(err.contains(&format!("is stored as {base}")), "{err}");
    assert!(upstream.requests().iter().any(|r| r.path == "/v1/models"));
    let list = t.json(&server, home, &["provider", "list", "--json"]).await;
    let openai = list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openai")
        .unwrap()
        .clone();
    assert_eq!(openai["base_url"], json!(base));
    let key = t
        .json(
            &server,
            home,
            &["key", "create", "--name", "app", "--env", "dev", "--json"],
        )
        .await;
    let kf = key["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    assert_eq!(
        upstream.requests().last().unwrap().path,
        "/v1/chat/completions"
    );

    // The same secret in another environment: said, by fingerprint.
    let prod = add("openai", "prod", base.clone());
    let (_, err) = t
        .ok_with(
            &server,
            home,
            &args(&prod),
            Some(&format!("{provider_key}\n")),
        )
        .await;
    assert!(
        err.contains("already the key of provider `openai` (dev)"),
        "{err}"
    );

    // provider update: a base URL the key does not work at is refused and
    // changes nothing; with --no-check it is applied at once.
    let err = t
        .fails(
            &server,
            home,
            &[
                "provider",
                "update",
                "openai",
                "--env",
                "dev",
                "--base-url",
                "http://127.0.0.1:9",
            ],
            None,
        )
        .await;
    assert!(err.contains("could not reach the provider"), "{err}");
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    t.ok(
        &server,
        home,
        &[
            "provider",
            "update",
            "openai",
            "--env",
            "dev",
            "--base-url",
            "http://127.0.0.1:9",
            "--no-check",
        ],
    )
    .await;
    assert_ne!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    // Back, in the /v1 form (normalised the same way), checked.
    let updated = t
        .json(
            &server,
            home,
            &[
                "provider",
                "update",
                "openai",
                "--env",
                "dev",
                "--base-url",
                &format!("{base}/v1"),
                "--json",
            ],
        )
        .await;
    assert_eq!(updated["base_url"], json!(base));
    assert_eq!(updated["id"], openai["id"], "same provider, same id");
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    // --kind: an openai-compatible provider becomes openai.
    let mut compat = add("compat", "stage", base.clone());
    compat[4] = "openai-compatible".to_owned();
    t.ok_with(
        &server,
        home,
        &args(&compat),
        Some(&format!("{provider_key}\n")),
    )
    .await;
    let updated = t
        .json(
            &server,
            home,
            &[
                "provider", "update", "compat", "--env", "stage", "--kind", "openai", "--json",
            ],
        )
        .await;
    assert_eq!(updated["kind"], "openai");
    let err = t
        .fails(
            &server,
            home,
            &["provider", "update", "compat", "--env", "stage"],
            None,
        )
        .await;
    assert!(err.contains("nothing to change"), "{err}");

    // provider remove: refused while a key reaches it, or while a rotation
    // is in progress; --force removes it, and its keys are refused there.
    let err = t
        .fails(
            &server,
            home,
            &["provider", "remove", "openai", "--env", "dev"],
            None,
        )
        .await;
    assert!(err.contains("keys in force can reach it"), "{err}");
    assert!(err.contains(key["id"].as_str().unwrap()), "{err}");
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    let new_key = fake_provider_key("next");
    upstream.accept_key(&new_key);
    t.ok_with(
        &server,
        home,
        &["rotate", "start", "compat", "--env", "stage"],
        Some(&format!("{new_key}\n")),
    )
    .await;
    let err = t
        .fails(
            &server,
            home,
            &["provider", "remove", "compat", "--env", "stage"],
            None,
        )
        .await;
    assert!(err.contains("rotation of its key is in progress"), "{err}");
    t.ok(
        &server,
        home,
        &["rotate", "cancel", "compat", "--env", "stage"],
    )
    .await;
    t.ok(
        &server,
        home,
        &["provider", "remove", "compat", "--env", "stage"],
    )
    .await;
    let (out, _) = t
        .ok(
            &server,
            home,
            &["provider", "remove", "openai", "--env", "dev", "--force"],
        )
        .await;
    assert!(out.contains("1 keys in force could reach it"), "{out}");
    assert_ne!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);

    // rotate finish warns when the retired secret is still current
    // elsewhere (prod and dev shared it; dev is re-added with it). The
    // re-added provider continues the removed one's key versions, so its
    // ledger rows (version 1) are not taken for the new key's traffic.
    let readded = t
        .ok_with(
            &server,
            home,
            &args(&add("openai", "dev", base.clone())),
            Some(&format!("{provider_key}\n")),
        )
        .await;
    drop(readded);
    let list = t.json(&server, home, &["provider", "list", "--json"]).await;
    let dev = list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "openai" && p["env"] == "dev")
        .unwrap()
        .clone();
    assert_eq!(dev["credential_version"], json!(2), "{dev}");
    t.ok_with(
        &server,
        home,
        &["rotate", "start", "openai", "--env", "dev"],
        Some(&format!("{new_key}\n")),
    )
    .await;
    t.ok(
        &server,
        home,
        &["rotate", "promote", "openai", "--env", "dev"],
    )
    .await;
    let (_, err) = t
        .ok(
            &server,
            home,
            &["rotate", "finish", "openai", "--env", "dev"],
        )
        .await;
    assert!(
        err.contains("is still the key of provider `openai` (prod)"),
        "{err}"
    );

    let entries = audit_kinds(&mut t, &server, home).await;
    for kind in ["admin.provider.update", "admin.provider.remove"] {
        let entry = entries.iter().find(|e| e["kind"] == kind).unwrap();
        assert_eq!(entry["actor"], "admin:owner", "{entry}");
    }

    // The edited rows still verify after a restart: prod's provider serves.
    let prod_key = server
        .create_key(home, &["--name", "app", "--env", "prod"])
        .await;
    let logs = server.stop().await;
    let server = Server::start_in(home, &[]).await;
    let prod_kf = prod_key["key"].as_str().unwrap();
    assert_eq!(chat(&server, "openai", prod_kf, "gpt-4o-mini").await, 200);
    let logs = logs + &server.stop().await;
    assert!(!logs.contains("failed its integrity check"), "{logs}");
    for secret in [&provider_key, &wrong_key, &new_key] {
        assert!(
            !t.0.contains(secret.as_str()),
            "a provider key in CLI output"
        );
        assert!(
            !logs.contains(secret.as_str()),
            "a provider key in the logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_updated_in_place_by_id_or_name() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let provider_key = fake_provider_key("keys");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let server = Server::start_in(home, &[]).await;
    for env in ["dev", "prod"] {
        server
            .add_provider(
                home,
                "openai",
                "openai",
                env,
                &upstream.base_url(),
                &provider_key,
            )
            .await;
    }
    let mut t = Transcript::default();
    let created = t
        .json(
            &server,
            home,
            &[
                "key",
                "create",
                "--name",
                "app",
                "--env",
                "dev",
                "--provider",
                "openai",
                "--model",
                "gpt-4o-mini",
                "--budget",
                "1usd/day",
                "--json",
            ],
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let kf = created["key"].as_str().unwrap().to_owned();
    // Names are handles: unique among keys in force of an environment.
    let err = t
        .fails(
            &server,
            home,
            &["key", "create", "--name", "app", "--env", "dev"],
            None,
        )
        .await;
    assert!(err.contains("is already named `app`"), "{err}");
    t.ok(
        &server,
        home,
        &["key", "create", "--name", "app", "--env", "prod"],
    )
    .await;
    assert_eq!(
        show(&mut t, &server, home, "name:dev/app").await["id"],
        json!(id)
    );

    // A model pattern that matches nothing known is warned about.
    let (_, err) = t
        .ok(
            &server,
            home,
            &[
                "key", "create", "--name", "typo", "--env", "dev", "--model", "gtp-4o*",
            ],
        )
        .await;
    assert!(
        err.contains("model pattern `gtp-4o*` matches no model"),
        "{err}"
    );

    // Budgets, limits, expiry, anomaly action, name and project.
    let updated = t
        .json(
            &server,
            home,
            &[
                "key",
                "update",
                &id,
                "--budget",
                "5usd/day",
                "--budget",
                "20usd/month",
                "--rpm",
                "1",
                "--ttl",
                "2h",
                "--on-anomaly",
                "suspend",
                "--name",
                "checkout",
                "--project",
                "shop",
                "--json",
            ],
        )
        .await;
    let limits: Vec<String> = updated["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(budget_text)
        .collect();
    assert!(
        limits.contains(&"5usd/day".to_owned()) && limits.contains(&"20usd/month".to_owned()),
        "{updated}"
    );
    assert_eq!(updated["limits"]["rpm"], json!(1));
    assert!(updated["expires_at"].is_string());
    assert_eq!(updated["on_anomaly"], "suspend");
    assert_eq!(updated["name"], "checkout");
    assert_eq!(updated["project"], "shop");
    // The new limit is in force from the next request.
    chat(&server, "openai", &kf, "gpt-4o-mini").await;
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 429);
    let updated = t
        .json(
            &server,
            home,
            &[
                "key",
                "update",
                "name:dev/checkout",
                "--rpm",
                "none",
                "--ttl",
                "never",
                "--project",
                "none",
                "--on-anomaly",
                "alert",
                "--remove-budget",
                "month",
                "--json",
            ],
        )
        .await;
    assert_eq!(updated["limits"]["rpm"], Value::Null);
    assert_eq!(updated["expires_at"], Value::Null);
    assert_eq!(updated["project"], Value::Null);
    assert_eq!(updated["on_anomaly"], "alert");
    // budget set --key, by name: replaces the key's budget of that period.
    t.ok(
        &server,
        home,
        &["budget", "set", "--key", "name:dev/checkout", "7usd/day"],
    )
    .await;
    let now = show(&mut t, &server, home, &id).await;
    let own: Vec<String> = now["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["scope"] == json!({"kind": "key", "name": id}))
        .map(budget_text)
        .collect();
    assert_eq!(own, ["7usd/day"], "{now}");

    // Widening the scope needs --allow-widen, and is audited as such.
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o").await, 403);
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", "name:dev/checkout", "--model", "gpt-4o*"],
            None,
        )
        .await;
    assert!(err.contains("--allow-widen"), "{err}");
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o").await, 403);
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &id, "--all-providers"],
            None,
        )
        .await;
    assert!(err.contains("every provider of the environment"), "{err}");
    let updated = t
        .json(
            &server,
            home,
            &[
                "key",
                "update",
                &id,
                "--model",
                "gpt-4o*",
                "--allow-widen",
                "--json",
            ],
        )
        .await;
    assert_eq!(updated["widened"], json!(true));
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o").await, 200);

    // A child is never widened beyond its parent, and a parent is not
    // narrowed below its child or moved out of its project.
    let child = t
        .json(
            &server,
            home,
            &[
                "key",
                "create",
                "--name",
                "agent",
                "--parent",
                "name:dev/checkout",
                "--json",
            ],
        )
        .await;
    let child_id = child["id"].as_str().unwrap().to_owned();
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &id, "--model", "gpt-4o-mini"],
            None,
        )
        .await;
    assert!(
        err.contains(&format!("child key {child_id} allows")),
        "{err}"
    );
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &id, "--project", "shop"],
            None,
        )
        .await;
    assert!(err.contains("revoke its children"), "{err}");
    t.ok(
        &server,
        home,
        &["key", "update", "name:dev/agent", "--model", "gpt-4o-mini"],
    )
    .await;
    // Narrowing needs nothing, and applies from the next request.
    t.ok(
        &server,
        home,
        &["key", "update", &id, "--model", "gpt-4o-mini"],
    )
    .await;
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o").await, 403);
    let err = t
        .fails(
            &server,
            home,
            &[
                "key",
                "update",
                &child_id,
                "--model",
                "gpt-4o*",
                "--allow-widen",
            ],
            None,
        )
        .await;
    assert!(err.contains("outside the parent key's"), "{err}");
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &child_id, "--budget", "8usd/day"],
            None,
        )
        .await;
    assert!(err.contains("above the parent key's"), "{err}");

    // Bad input is refused and changes nothing.
    for (args, expect) in [
        (vec![], "nothing to change"),
        (vec!["--allow-widen"], "nothing to change"),
        (vec!["--budget", "0usd/day"], "greater than zero"),
        (vec!["--rpm", "0"], "at least 1"),
        (vec!["--rpm", "many"], "whole number"),
        (vec!["--remove-budget", "week"], "no week budget"),
        (vec!["--name", "typo"], "is already named `typo`"),
        (vec!["--provider", "nope"], "no provider named `nope`"),
    ] {
        let mut all = vec!["key", "update", id.as_str()];
        all.extend(args);
        let err = t.fails(&server, home, &all, None).await;
        assert!(err.contains(expect), "{all:?}: {err}");
    }
    let after = show(&mut t, &server, home, &id).await;
    assert_eq!(after["name"], now["name"]);
    assert_eq!(
        after["budgets"].as_array().unwrap().len(),
        now["budgets"].as_array().unwrap().len()
    );
    // --allow-duplicate-name, then the handle is ambiguous and says so.
    t.ok(
        &server,
        home,
        &[
            "key",
            "update",
            &child_id,
            "--name",
            "checkout",
            "--allow-duplicate-name",
        ],
    )
    .await;
    let err = t
        .fails(&server, home, &["key", "show", "name:dev/checkout"], None)
        .await;
    assert!(err.contains("2 keys are named `checkout`"), "{err}");
    t.ok(&server, home, &["usage", "--key", "name:prod/app"])
        .await;

    let entries = audit_kinds(&mut t, &server, home).await;
    let widen = entries
        .iter()
        .find(|e| e["kind"] == "admin.key.widen")
        .expect("a widening is audited as such");
    assert_eq!(widen["actor"], "admin:owner");
    assert!(entries.iter().any(|e| e["kind"] == "admin.key.update"));

    // Revocation by name, then a restart: the edited key rows still verify.
    t.ok(&server, home, &["key", "revoke", "name:dev/typo"])
        .await;
    let logs = server.stop().await;
    let server = Server::start_in(home, &[]).await;
    assert_eq!(chat(&server, "openai", &kf, "gpt-4o-mini").await, 200);
    let (out, _) = t.ok(&server, home, &["audit", "verify"]).await;
    assert!(out.contains("intact"), "{out}");
    let logs = logs + &server.stop().await;
    assert!(!logs.contains("failed its integrity check"), "{logs}");
    assert!(!t.0.contains(&provider_key) && !logs.contains(&provider_key));
}

/// A fresh server with provider `openai` in `dev`, for the tests below.
async fn one_provider(home: &Path, label: &str) -> (Server, FakeUpstream) {
    let provider_key = fake_provider_key(label);
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
    (server, upstream)
}

async fn create(t: &mut Transcript, server: &Server, home: &Path, args: &[&str]) -> String {
    let mut all = vec!["key", "create", "--env", "dev", "--json"];
    all.extend(args);
    t.json(server, home, &all).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Regression (issue #14, tester's findings 1 and 2): `budget set --key`
/// skipped the parent check and worked on revoked keys, and a parent could
/// be narrowed below its children in limits, expiry and budgets.
#[tokio::test(flavor = "multi_thread")]
async fn every_key_change_goes_through_the_family_check() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "family").await;
    let mut t = Transcript::default();
    let parent = create(
        &mut t,
        &server,
        home,
        &["--name", "parent", "--budget", "10usd/day"],
    )
    .await;
    let child = create(
        &mut t,
        &server,
        home,
        &[
            "--name", "child", "--parent", &parent, "--rpm", "50", "--ttl", "30d", "--budget",
            "5usd/day",
        ],
    )
    .await;
    let other = create(
        &mut t,
        &server,
        home,
        &[
            "--name", "other", "--parent", &parent, "--budget", "6usd/day",
        ],
    )
    .await;

    // budget set --key is checked like key update --budget.
    let err = t
        .fails(
            &server,
            home,
            &["budget", "set", "--key", "name:dev/child", "100usd/day"],
            None,
        )
        .await;
    assert!(
        err.contains("above the parent key's") && err.contains("exceeds_parent"),
        "{err}"
    );
    let revoked = create(&mut t, &server, home, &["--name", "gone"]).await;
    t.ok(&server, home, &["key", "revoke", &revoked]).await;
    let err = t
        .fails(
            &server,
            home,
            &["budget", "set", "--key", &revoked, "1usd/day"],
            None,
        )
        .await;
    assert!(err.contains("is revoked"), "{err}");

    // A parent is not narrowed below its children: every child and every
    // field is named at once.
    let err = t
        .fails(
            &server,
            home,
            &[
                "key", "update", &parent, "--rpm", "10", "--tpm", "100", "--ttl", "1d", "--budget",
                "1usd/day",
            ],
            None,
        )
        .await;
    for expect in [
        format!("child key {child} allows"),
        format!("child key {other} allows"),
        "rpm 50 (above 10)".to_owned(),
        "no tpm limit (above 100)".to_owned(),
        "no max-parallel".to_owned(),
        "expiry ".to_owned(),
        "no expiry".to_owned(),
        "budget $5.000000/day (above $1.000000/day)".to_owned(),
        "budget $6.000000/day".to_owned(),
        "child_exceeds".to_owned(),
    ] {
        if expect == "no max-parallel" {
            assert!(!err.contains(&expect), "only changed fields: {err}");
        } else {
            assert!(err.contains(&expect), "{expect}: {err}");
        }
    }
    // Same through budget set --key on the parent.
    let err = t
        .fails(
            &server,
            home,
            &["budget", "set", "--key", &parent, "2usd/day"],
            None,
        )
        .await;
    assert!(
        err.contains(&format!("child key {child} allows budget $5.000000/day")),
        "{err}"
    );
    let after = show(&mut t, &server, home, &parent).await;
    assert_eq!(after["limits"]["rpm"], Value::Null, "nothing changed");
    // A child's edit reports all its problems at once, and an unrelated
    // edit (a rename) is not checked against the parent.
    let err = t
        .fails(
            &server,
            home,
            &[
                "key",
                "update",
                &child,
                "--budget",
                "50usd/day",
                "--ttl",
                "never",
                "--project",
                "x",
            ],
            None,
        )
        .await;
    assert!(
        err.contains("budget $50.000000/day is above") && err.contains("its parent's project"),
        "{err}"
    );
    t.ok(
        &server,
        home,
        &["key", "update", &child, "--name", "renamed"],
    )
    .await;
    // Narrowing the children first, then the parent, works.
    t.ok(
        &server,
        home,
        &[
            "key", "update", &other, "--budget", "1usd/day", "--rpm", "5",
        ],
    )
    .await;
    t.ok(
        &server,
        home,
        &[
            "key", "update", &child, "--budget", "1usd/day", "--rpm", "5",
        ],
    )
    .await;
    t.ok(
        &server,
        home,
        &[
            "key", "update", &parent, "--rpm", "10", "--budget", "1usd/day",
        ],
    )
    .await;
}

/// Regression (issue #14, tester's finding 3): `key update --ttl` revived an
/// expired key, beside a newer key holding its name; a child of an expired
/// parent showed as `active`.
#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_stays_expired() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "expired").await;
    let mut t = Transcript::default();
    let old = create(&mut t, &server, home, &["--name", "reuse", "--ttl", "2s"]).await;
    let child = create(&mut t, &server, home, &["--name", "kid", "--parent", &old]).await;
    // Real time: the binary runs on the wall clock.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    create(&mut t, &server, home, &["--name", "reuse"]).await;
    for args in [
        vec!["key", "update", old.as_str(), "--ttl", "30d"],
        vec!["key", "update", old.as_str(), "--name", "other"],
        vec!["budget", "set", "--key", old.as_str(), "1usd/day"],
    ] {
        let err = t.fails(&server, home, &args, None).await;
        assert!(
            err.contains("expired at") && err.contains("create a new key instead"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(show(&mut t, &server, home, &old).await["status"], "expired");
    // A child expires with its parent (minting gives it the parent's
    // expiry, and revoking a parent revokes its tree).
    assert_eq!(
        show(&mut t, &server, home, &child).await["status"],
        "expired"
    );
}

/// Regression (issue #14, tester's finding 4): a secret pasted into an
/// ordinary field was stored and kept in the audit log forever.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_refused_in_ordinary_fields() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let provider_key = fake_provider_key("pasted");
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
    let mut t = Transcript::default();
    let created = t
        .json(
            &server,
            home,
            &["key", "create", "--name", "app", "--env", "dev", "--json"],
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let kf = created["key"].as_str().unwrap().to_owned();
    // Shapes the scanner knows, built at run time.
    let openai = format!("sk-proj-{}", "Zq7x".repeat(12));
    let anthropic = format!("sk-ant-api03-{}", "Qw3r".repeat(20));
    for (value, field) in [
        (kf.as_str(), "key name"),
        (openai.as_str(), "key name"),
        (provider_key.as_str(), "key name"),
        (anthropic.as_str(), "key name"),
    ] {
        for args in [
            vec!["key", "create", "--env", "dev", "--name", value],
            vec!["key", "update", id.as_str(), "--name", value],
        ] {
            let err = t.fails(&server, home, &args, None).await;
            assert!(
                err.contains(&format!("the {field} looks like a secret")) && !err.contains(value),
                "{args:?}: {err}"
            );
        }
    }
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &id, "--project", &provider_key],
            None,
        )
        .await;
    assert!(
        err.contains("the project looks like a secret (the key of a provider)"),
        "{err}"
    );
    let err = t
        .fails(
            &server,
            home,
            &["budget", "set", "--project", &provider_key, "1usd/day"],
            None,
        )
        .await;
    assert!(err.contains("the project looks like a secret"), "{err}");
    let err = t
        .fails(
            &server,
            home,
            &["key", "update", &id, "--model", &format!("{openai}*")],
            None,
        )
        .await;
    assert!(
        err.contains("the model pattern looks like a secret"),
        "{err}"
    );
    let err = t
        .fails(
            &server,
            home,
            &[
                "provider",
                "update",
                "openai",
                "--env",
                "dev",
                "--base-url",
                &format!("https://example.com/{openai}"),
                "--no-check",
            ],
            None,
        )
        .await;
    assert!(err.contains("the base URL looks like a secret"), "{err}");
    let (log, _) = t.ok(&server, home, &["audit", "tail"]).await;
    for secret in [&kf, &openai, &anthropic, &provider_key] {
        assert!(
            !log.contains(secret.as_str()),
            "the audit log holds a secret"
        );
    }
}

/// Regression (issue #14, tester's findings 5 and 6): keys scoped to a
/// provider removed with --force silently regained access when a provider
/// of that name was added again, and the new one restarted at key version
/// v1 after the removed one had reached v2 by a rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_re_added_provider_neither_surprises_scoped_keys_nor_reuses_versions() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let provider_key = fake_provider_key("readd");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let server = Server::start_in(home, &[]).await;
    let base = upstream.base_url();
    let add = [
        "provider",
        "add",
        "openai",
        "--kind",
        "openai",
        "--env",
        "dev",
        "--base-url",
        base.as_str(),
    ];
    let mut t = Transcript::default();
    t.ok_with(&server, home, &add, Some(&format!("{provider_key}\n")))
        .await;
    let scoped = create(
        &mut t,
        &server,
        home,
        &["--name", "app", "--provider", "openai"],
    )
    .await;
    let new_key = fake_provider_key("second");
    upstream.accept_key(&new_key);
    t.ok_with(
        &server,
        home,
        &["rotate", "start", "openai", "--env", "dev"],
        Some(&format!("{new_key}\n")),
    )
    .await;
    for step in ["promote", "finish"] {
        t.ok(&server, home, &["rotate", step, "openai", "--env", "dev"])
            .await;
    }
    t.ok(
        &server,
        home,
        &["provider", "remove", "openai", "--env", "dev", "--force"],
    )
    .await;

    let err = t
        .fails(&server, home, &add, Some(&format!("{new_key}\n")))
        .await;
    assert!(
        err.contains("scoped to a removed provider named `openai`")
            && err.contains(&scoped)
            && err.contains("--force"),
        "{err}"
    );
    let mut forced = add.to_vec();
    forced.push("--force");
    t.ok_with(&server, home, &forced, Some(&format!("{new_key}\n")))
        .await;
    let list = t.json(&server, home, &["provider", "list", "--json"]).await;
    assert_eq!(
        list["providers"][0]["credential_version"],
        json!(3),
        "{list}"
    );
}

/// Regression (issue #14, tester's finding 7): names that read the same
/// but differ by an invisible character were two different handles.
#[tokio::test(flavor = "multi_thread")]
async fn key_names_refuse_invisible_characters() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "names").await;
    let mut t = Transcript::default();
    let id = create(&mut t, &server, home, &["--name", "app"]).await;
    for (invisible, code) in [
        ('\u{200B}', "U+200B"),
        ('\u{200D}', "U+200D"),
        ('\u{202E}', "U+202E"),
        ('\u{2066}', "U+2066"),
        ('\u{FEFF}', "U+FEFF"),
        ('\u{00AD}', "U+00AD"),
        ('\u{E0041}', "U+E0041"),
    ] {
        let name = format!("ap{invisible}p");
        for args in [
            vec!["key", "create", "--env", "dev", "--name", name.as_str()],
            vec!["key", "update", id.as_str(), "--name", name.as_str()],
        ] {
            let err = t.fails(&server, home, &args, None).await;
            assert!(
                err.contains(&format!("invisible character {code}")),
                "{err}"
            );
        }
    }
    // Visible non-ASCII letters are names like any other.
    create(&mut t, &server, home, &["--name", "caf\u{e9}"]).await;
}

/// Regression (issue #14, tester's finding 8): `gpt-4oxyz*` passed as a
/// known model (the table's `gpt-4o*` matched its text), and a provider
/// given twice was stored twice.
#[tokio::test(flavor = "multi_thread")]
async fn model_typos_are_warned_and_lists_deduplicated() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "typos").await;
    let mut t = Transcript::default();
    let id = create(&mut t, &server, home, &["--name", "app"]).await;
    for (pattern, warned) in [
        ("gpt-4oxyz*", true),
        ("gpt-4o-mini", false),
        ("gpt-4o-2024-08-06", false),
        ("gpt-4o*", false),
    ] {
        for args in [
            vec![
                "key",
                "update",
                id.as_str(),
                "--model",
                pattern,
                "--allow-widen",
            ],
            vec![
                "key",
                "create",
                "--env",
                "dev",
                "--model",
                pattern,
                "--name",
                "n",
                "--allow-duplicate-name",
            ],
        ] {
            let (_, err) = t.ok(&server, home, &args).await;
            assert_eq!(
                err.contains(&format!("model pattern `{pattern}` matches no model")),
                warned,
                "{args:?}: {err}"
            );
        }
    }
    let updated = t
        .json(
            &server,
            home,
            &[
                "key",
                "update",
                &id,
                "--provider",
                "openai",
                "--provider",
                "openai",
                "--model",
                "gpt-4o",
                "--model",
                "gpt-4o",
                "--json",
            ],
        )
        .await;
    assert_eq!(
        updated["scope"]["providers"],
        json!(["openai"]),
        "{updated}"
    );
    assert_eq!(updated["scope"]["models"], json!(["gpt-4o"]), "{updated}");
    let created = t
        .json(
            &server,
            home,
            &[
                "key",
                "create",
                "--env",
                "dev",
                "--name",
                "twice",
                "--provider",
                "openai",
                "--provider",
                "openai",
                "--json",
            ],
        )
        .await;
    assert_eq!(
        created["scope"]["providers"],
        json!(["openai"]),
        "{created}"
    );
}

/// Regression (issue #14, tester's finding 9): `key resume` of a revoked
/// key succeeded ("is revoked again") and wrote an audit entry.
#[tokio::test(flavor = "multi_thread")]
async fn resuming_a_revoked_key_is_an_error() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "resume").await;
    let mut t = Transcript::default();
    let id = create(&mut t, &server, home, &["--name", "gone"]).await;
    t.ok(&server, home, &["key", "revoke", &id]).await;
    let before = audit_kinds(&mut t, &server, home).await.len();
    let err = t.fails(&server, home, &["key", "resume", &id], None).await;
    assert!(
        err.contains("is revoked, which resuming does not undo") && err.contains("key_revoked"),
        "{err}"
    );
    assert_eq!(
        audit_kinds(&mut t, &server, home).await.len(),
        before,
        "a refused resume is not audited"
    );
}

/// Regression (issue #14, tester's findings 10 and 11): a port above 65535
/// and `/v1/v1` were accepted; numbers too large for a field were called
/// "not a number"; `name:dev/` was looked up.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_input_says_what_is_allowed() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let (server, _upstream) = one_provider(home, "ranges").await;
    let mut t = Transcript::default();
    let id = create(&mut t, &server, home, &["--name", "app"]).await;
    for (url, expect) in [
        ("http://127.0.0.1:99999", "invalid port"),
        ("https://api.openai.com/v1/v1", "API version twice"),
    ] {
        let err = t
            .fails(
                &server,
                home,
                &[
                    "provider",
                    "update",
                    "openai",
                    "--env",
                    "dev",
                    "--base-url",
                    url,
                    "--no-check",
                ],
                None,
            )
            .await;
        assert!(err.contains(expect), "{url}: {err}");
    }
    for (args, expect) in [
        (vec!["--rpm", "4294967296"], "--rpm is at most 4294967295"),
        (
            vec!["--max-parallel", "4294967296"],
            "--max-parallel is at most 4294967295",
        ),
        (
            vec!["--tpm", "18446744073709551616"],
            "--tpm is at most 18446744073709551615",
        ),
        (vec!["--rpm", "many"], "takes a whole number"),
        (
            vec!["--budget", "18446744073usd/day"],
            "above the largest budget, 9223372036usd",
        ),
    ] {
        let mut all = vec!["key", "update", id.as_str()];
        all.extend(args);
        let err = t.fails(&server, home, &all, None).await;
        assert!(err.contains(expect), "{all:?}: {err}");
    }
    for handle in ["name:dev/", "name:dev/ ", "name:dev"] {
        let err = t.fails(&server, home, &["key", "show", handle], None).await;
        assert!(err.contains("is written name:ENV/NAME"), "{handle}: {err}");
    }
}

/// A budget of a view as it was written: `5usd/day`.
fn budget_text(budget: &Value) -> String {
    let nanos = budget["limit"]["amount"].as_i64().unwrap();
    format!(
        "{}usd/{}",
        nanos / 1_000_000_000,
        budget["limit"]["period"].as_str().unwrap()
    )
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `key show WHO --json`.
async fn show(t: &mut Transcript, server: &Server, home: &Path, who: &str) -> Value {
    t.json(server, home, &["key", "show", who, "--json"]).await
}
