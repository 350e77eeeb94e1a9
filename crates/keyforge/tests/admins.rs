//! Named admins with roles (issue #14, "People, not one token"), end to
//! end through the real binary: each role allowed and refused on
//! representative commands, the actor of every audit entry, revocation and
//! token rotation in force on the next command, the last owner protected,
//! the legacy `admin.token` adopted as the owner (on a new data directory
//! and on a data directory of schema 9), tokens never printed except when
//! they are made, and `audit verify` passing after all of it.

#![expect(
    clippy::unwrap_used,
    reason = "tests: a failed step must fail the test loudly"
)]

mod common;

use std::path::Path;
use std::process::Stdio;

use common::Server;
use serde_json::Value;

/// What the log says, once, when the legacy token becomes the owner.
const ADOPTED: &str = "is now the owner admin `owner`";

/// Everything printed by commands that are not the one showing a token,
/// to search for tokens at the end.
#[derive(Default)]
struct Transcript(String);

impl Transcript {
    /// Runs `keyforge ARGS` as the admin holding `token` (`None`: the
    /// legacy `admin.token` of the data directory). Returns (ok, stdout,
    /// stderr) and keeps both in the transcript.
    async fn run(
        &mut self,
        server: &Server,
        home: &Path,
        token: Option<&str>,
        args: &[&str],
    ) -> (bool, String, String) {
        let (ok, out, err) = run_as(server, home, token, args).await;
        self.0 += &out;
        self.0 += &err;
        (ok, out, err)
    }

    async fn ok(
        &mut self,
        server: &Server,
        home: &Path,
        token: Option<&str>,
        args: &[&str],
    ) -> String {
        let (ok, out, err) = self.run(server, home, token, args).await;
        assert!(ok, "{args:?} should succeed: {out}{err}");
        out
    }

    /// Runs a command that must fail; returns its stderr.
    async fn refused(
        &mut self,
        server: &Server,
        home: &Path,
        token: Option<&str>,
        args: &[&str],
    ) -> String {
        let (ok, out, err) = self.run(server, home, token, args).await;
        assert!(!ok, "{args:?} should be refused: {out}");
        err
    }
}

async fn run_as(
    server: &Server,
    home: &Path,
    token: Option<&str>,
    args: &[&str],
) -> (bool, String, String) {
    let mut command = common::command(home);
    command
        .args(args)
        .env("KEYFORGE_ADDR", &server.addr)
        .env("KEYFORGE_DATA_DIR", &server.data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("KEYFORGE_ADMIN_TOKEN", token);
    }
    let output = command.output().await.unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `admin add NAME --role ROLE --json` as the legacy owner; the token.
async fn add_admin(server: &Server, home: &Path, name: &str, role: &str) -> String {
    let (ok, out, err) = run_as(
        server,
        home,
        None,
        &["admin", "add", name, "--role", role, "--json"],
    )
    .await;
    assert!(ok, "admin add {name}: {out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["admin"]["role"], role);
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("kfa_"), "a kfa_ token");
    token
}

fn audit_entries(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|entry| entry.get("kind").is_some())
        .collect()
}

#[tokio::test]
async fn each_role_reaches_what_it_may_and_every_audit_entry_names_its_admin() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    let mut transcript = Transcript::default();
    let legacy = std::fs::read_to_string(server.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();

    // The legacy token is the owner admin `owner`.
    let me = transcript
        .ok(&server, home.path(), None, &["admin", "whoami"])
        .await;
    assert_eq!(me.trim(), "owner (owner)");

    // Providers are the owner's: the legacy owner adds one.
    let provider_key = keyforge_testkit::fake_provider_key("admins");
    server
        .add_provider(
            home.path(),
            "openai",
            "openai",
            "dev",
            "http://127.0.0.1:9",
            &provider_key,
        )
        .await;

    let viewer = add_admin(&server, home.path(), "fin", "viewer").await;
    let auditor = add_admin(&server, home.path(), "sec", "auditor").await;
    let operator = add_admin(&server, home.path(), "ops", "operator").await;
    let owner2 = add_admin(&server, home.path(), "boss", "owner").await;
    let tokens = [&viewer, &auditor, &operator, &owner2];
    let never_written = home.path().join("never-written.db");
    let never_written_arg = never_written.to_str().unwrap();

    // (token, command, the role it needs or None when allowed)
    let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
        (&viewer, vec!["usage"], None),
        (&viewer, vec!["key", "list"], None),
        (&viewer, vec!["budget", "list"], None),
        (&viewer, vec!["status"], None),
        (&viewer, vec!["audit", "tail"], Some("auditor")),
        (
            &viewer,
            vec!["key", "create", "--name", "v", "--env", "dev"],
            Some("operator"),
        ),
        (&viewer, vec!["admin", "list"], Some("owner")),
        (&auditor, vec!["audit", "verify"], None),
        (&auditor, vec!["audit", "tail"], None),
        (
            &auditor,
            vec!["budget", "set", "--project", "shop", "5usd/month"],
            Some("operator"),
        ),
        (
            &operator,
            vec!["key", "create", "--name", "app", "--env", "dev"],
            None,
        ),
        (
            &operator,
            vec!["budget", "set", "--project", "shop", "5usd/month"],
            None,
        ),
        (&operator, vec!["audit", "tail"], None),
        (
            &operator,
            vec!["backup", "--to", never_written_arg],
            Some("owner"),
        ),
        (
            &operator,
            vec!["admin", "add", "eve", "--role", "viewer"],
            Some("owner"),
        ),
        (
            &operator,
            vec!["provider", "remove", "openai", "--env", "dev"],
            Some("owner"),
        ),
        (&viewer, vec!["provider", "list"], None),
        (&owner2, vec!["admin", "list"], None),
    ];
    for (token, args, needed) in &cases {
        match needed {
            None => {
                transcript.ok(&server, home.path(), Some(token), args).await;
            }
            Some(role) => {
                let err = transcript
                    .refused(&server, home.path(), Some(token), args)
                    .await;
                assert!(err.contains("(insufficient_role)"), "{args:?}: {err}");
                assert!(
                    err.contains(&format!("needs the {role} role")),
                    "{args:?}: {err}"
                );
            }
        }
    }
    assert!(!never_written.exists());

    // Who am I, as each of them.
    let me = transcript
        .ok(&server, home.path(), Some(&operator), &["admin", "whoami"])
        .await;
    assert_eq!(me.trim(), "ops (operator)");

    // The list shows roles, never a token or a hash.
    let list: Value = serde_json::from_str(
        &transcript
            .ok(&server, home.path(), None, &["admin", "list", "--json"])
            .await,
    )
    .unwrap();
    let names: Vec<(&str, &str)> = list["admins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("boss", "owner"),
            ("fin", "viewer"),
            ("ops", "operator"),
            ("owner", "owner"),
            ("sec", "auditor")
        ]
    );
    for admin in list["admins"].as_array().unwrap() {
        assert!(admin.get("token").is_none() && admin.get("token_hash").is_none());
    }

    // Revocation is in force on the next command.
    transcript
        .ok(&server, home.path(), None, &["admin", "revoke", "fin"])
        .await;
    let err = transcript
        .refused(&server, home.path(), Some(&viewer), &["usage"])
        .await;
    assert!(err.contains("(invalid_admin_token)"), "{err}");

    // A new token replaces the old one at once.
    let rotated: Value = serde_json::from_str(
        &run_as(
            &server,
            home.path(),
            None,
            &["admin", "rotate-token", "ops", "--json"],
        )
        .await
        .1,
    )
    .unwrap();
    let operator2 = rotated["token"].as_str().unwrap().to_owned();
    let err = transcript
        .refused(&server, home.path(), Some(&operator), &["key", "list"])
        .await;
    assert!(err.contains("(invalid_admin_token)"), "{err}");
    transcript
        .ok(&server, home.path(), Some(&operator2), &["key", "list"])
        .await;

    // The last owner stays: with `boss` revoked, `owner` cannot go.
    transcript
        .ok(
            &server,
            home.path(),
            Some(&owner2),
            &["admin", "revoke", "boss"],
        )
        .await;
    let err = transcript
        .refused(&server, home.path(), None, &["admin", "revoke", "owner"])
        .await;
    assert!(err.contains("(last_owner)"), "{err}");
    transcript
        .ok(&server, home.path(), None, &["admin", "whoami"])
        .await;

    // Every admin-API entry names its admin; refusals are audited.
    let tail = transcript
        .ok(&server, home.path(), Some(&auditor), &["audit", "tail"])
        .await;
    let entries = audit_entries(&tail);
    let actor_of = |kind: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| e["actor"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(actor_of("admin.key.create"), ["admin:ops"]);
    assert_eq!(actor_of("admin.budget.set"), ["admin:ops"]);
    assert_eq!(
        actor_of("admin.admin.add"),
        ["admin:owner", "admin:owner", "admin:owner", "admin:owner"]
    );
    assert_eq!(actor_of("admin.admin.rotate_token"), ["admin:owner"]);
    assert_eq!(
        actor_of("admin.admin.revoke"),
        ["admin:owner", "admin:boss"]
    );
    let refused: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e["kind"] == "admin.access.refused")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["data"]["role_needed"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("admin:fin".to_owned(), "auditor".to_owned()),
            ("admin:fin".to_owned(), "operator".to_owned()),
            ("admin:fin".to_owned(), "owner".to_owned()),
            ("admin:sec".to_owned(), "operator".to_owned()),
            ("admin:ops".to_owned(), "owner".to_owned()),
            ("admin:ops".to_owned(), "owner".to_owned()),
            ("admin:ops".to_owned(), "owner".to_owned()),
        ]
    );
    for entry in &entries {
        assert_ne!(entry["actor"], "admin", "an anonymous admin entry: {entry}");
    }

    // After a restart the admins, their MACs and the legacy owner hold.
    let output = server.stop().await;
    assert_eq!(output.matches(ADOPTED).count(), 1, "{output}");
    let data_arg = home.path().join("data");
    let server = Server::start(
        home.path(),
        &data_arg,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let me = transcript
        .ok(&server, home.path(), Some(&operator2), &["admin", "whoami"])
        .await;
    assert_eq!(me.trim(), "ops (operator)");
    let err = transcript
        .refused(&server, home.path(), Some(&viewer), &["usage"])
        .await;
    assert!(err.contains("(invalid_admin_token)"), "{err}");
    // `audit verify` exits non-zero when the chain does not hold.
    transcript
        .ok(&server, home.path(), Some(&auditor), &["audit", "verify"])
        .await;
    let output = server.stop().await;
    assert!(!output.contains(ADOPTED), "adopted twice: {output}");
    assert!(!output.contains("failed its integrity check"), "{output}");

    // No token was printed but by the command that made it, nor logged.
    assert!(!transcript.0.contains(&provider_key));
    for token in tokens.iter().copied().chain([&operator2, &legacy]) {
        assert!(
            !transcript.0.contains(token.as_str()),
            "a token was printed"
        );
        assert!(!output.contains(token.as_str()), "a token was logged");
    }
}

#[tokio::test]
async fn the_admin_token_of_a_schema_9_data_dir_becomes_its_owner() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    let key = server
        .create_key(home.path(), &["--name", "app", "--env", "dev"])
        .await;
    server.stop().await;
    // Back to schema 9: version 10 only added the `admins` table.
    let db = home.path().join("data/keyforge.db");
    let downgrade = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DROP TABLE admins; PRAGMA user_version = 9;")
        .status()
        .expect("sqlite3 (the SQLite shell) builds the schema 9 data directory");
    assert!(downgrade.success());

    let data = home.path().join("data");
    let server = Server::start(
        home.path(),
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let mut transcript = Transcript::default();
    let me = transcript
        .ok(&server, home.path(), None, &["admin", "whoami"])
        .await;
    assert_eq!(me.trim(), "owner (owner)");
    let list: Value = serde_json::from_str(
        &transcript
            .ok(&server, home.path(), None, &["admin", "list", "--json"])
            .await,
    )
    .unwrap();
    assert_eq!(list["admins"][0]["name"], "owner");
    assert_eq!(list["admins"][0]["created_by"], "gateway");
    let keys = transcript
        .ok(&server, home.path(), None, &["key", "list", "--json"])
        .await;
    assert!(keys.contains(key["id"].as_str().unwrap()), "{keys}");
    transcript
        .ok(&server, home.path(), None, &["audit", "verify"])
        .await;
    let tail = transcript
        .ok(&server, home.path(), None, &["audit", "tail"])
        .await;
    let starts: Vec<Value> = audit_entries(&tail)
        .into_iter()
        .filter(|e| e["kind"] == "gateway.start")
        .map(|e| e["data"]["legacy_owner_created"].clone())
        .collect();
    assert_eq!(starts, [Value::Bool(true), Value::Bool(true)]);
    let output = server.stop().await;
    assert_eq!(output.matches(ADOPTED).count(), 1, "{output}");
    let version = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA user_version;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "10");
}
