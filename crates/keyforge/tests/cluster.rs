//! Two `keyforge serve` processes on one PostgreSQL database and the same
//! master key (each with a data directory of its own): what one instance
//! writes the other serves, and the audit log both append to stays one
//! chain that verifies.
//!
//! The server is `KEYFORGE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each run creates a database
//! of its own and drops it. Without a server the test is skipped with a
//! printed reason, except under `CI=true`, where that fails it.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test loudly"
)]

#[expect(
    dead_code,
    reason = "each instance gets its own data directory here, not HOME/data"
)]
mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use common::Server;
use futures_util::StreamExt as _;
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::json;

fn admin_url() -> String {
    std::env::var("KEYFORGE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// `url` naming `database` instead of its own.
fn with_database(url: &str, database: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |at| at + 3);
    let host_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |at| scheme_end + at);
    format!("{}/{database}", &url[..host_end])
}

/// A fresh database on the test server, dropped with the guard; `None`
/// (and why) when no server answers outside CI.
async fn database() -> Option<Database> {
    let admin = admin_url();
    let pool = match sqlx::PgPool::connect(&admin).await {
        Ok(pool) => pool,
        Err(error) => {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("CI=true and no PostgreSQL server answers at {admin}: {error}");
            }
            eprintln!(
                "skipped: no PostgreSQL server at {admin} ({error}); set KEYFORGE_TEST_PG_URL"
            );
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("kf_test_{}_{nanos}", std::process::id());
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    Some(Database {
        url: with_database(&admin, &name),
        admin,
        name,
    })
}

struct Database {
    url: String,
    admin: String,
    name: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

async fn serve(home: &Path, data: &Path, url: &str) -> Server {
    let data_arg = data.to_str().unwrap();
    Server::start(
        home,
        data,
        &["--listen", "127.0.0.1:0", "--data-dir", data_arg],
        &[("KEYFORGE_DATABASE_URL", url)],
    )
    .await
}

async fn chat(http: &reqwest::Client, server: &Server, key: &str) -> u16 {
    let response = http
        .post(format!("{}/openai/v1/chat/completions", server.addr))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_keys_and_one_audit_chain() {
    let Some(database) = database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (home.path().join("a"), home.path().join("b"));
    let provider_key = fake_provider_key("cluster");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();

    let a = serve(home.path(), &data_a, &database.url).await;
    a.add_provider(
        home.path(),
        "openai",
        "openai",
        "prod",
        &upstream.base_url(),
        &provider_key,
    )
    .await;
    let first = a
        .create_key(home.path(), &["--name", "first", "--env", "prod"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();

    // B: the same master key (copied, as an operator would), its own data
    // directory, the same database.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data_b)
        .unwrap();
    std::fs::copy(data_a.join("master.key"), data_b.join("master.key")).unwrap();
    std::fs::set_permissions(data_b.join("master.key"), PermissionsExt::from_mode(0o600)).unwrap();
    let b = serve(home.path(), &data_b, &database.url).await;

    // An instance with another master key (a fresh data directory makes
    // one) cannot open the shared database, and says why.
    let stranger = home.path().join("stranger");
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        common::command(home.path())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&stranger)
            .env("KEYFORGE_DATABASE_URL", &database.url)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("master key"), "{stderr}");

    let http = reqwest::Client::new();
    // A key minted through A before B started is served by B.
    assert_eq!(chat(&http, &b, &first).await, 200);
    assert_eq!(chat(&http, &a, &first).await, 200);

    // A key minted through A while B runs: B hears of it (the change
    // notice) and serves it moments later, with no change made through B.
    let second = a
        .create_key(home.path(), &["--name", "second", "--env", "prod"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chat(&http, &a, &second).await, 200);
    let took = within(CHANGE_DEADLINE, async || {
        chat(&http, &b, &second).await == 200
    })
    .await;
    assert!(took.is_some(), "B never served the key minted through A");

    // Both serve traffic at once; both append to the one audit log.
    let mut load = Vec::new();
    for (server, key) in [(&a, &first), (&b, &first), (&a, &second), (&b, &second)] {
        let (http, addr, key) = (http.clone(), server.addr.clone(), key.clone());
        load.push(tokio::spawn(async move {
            for _ in 0..50 {
                let response = http
                    .post(format!("{addr}/openai/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status().as_u16(), 200);
                response.bytes().await.unwrap();
            }
        }));
    }
    for task in load {
        task.await.unwrap();
    }
    // Admin entries through both, interleaved with the uses.
    for (n, server) in [&a, &b, &a].into_iter().enumerate() {
        let name = format!("more-{n}");
        server
            .create_key(home.path(), &["--name", &name, "--env", "prod"])
            .await;
    }
    for server in [&a, &b] {
        let (ok, out, err) = server.cli(home.path(), &["audit", "verify"], None).await;
        assert!(ok && out.contains("intact"), "{out}{err}");
    }
    // The SQLite backup commands refuse a PostgreSQL store and say what to
    // use instead.
    let backup = home.path().join("backup.db");
    let backup_arg = backup.to_str().unwrap();
    for args in [
        vec!["backup", "--to", backup_arg],
        vec!["restore", "--from", backup_arg],
    ] {
        let output = common::command(home.path())
            .args(&args)
            .env("KEYFORGE_DATABASE_URL", &database.url)
            .env("KEYFORGE_DATA_DIR", &data_a)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains("pg_dump"), "{args:?}: {stderr}");
    }
    assert!(!backup.exists());

    let output_a = a.stop().await;
    let output_b = b.stop().await;
    assert!(output_a.contains("store: PostgreSQL"), "{output_a}");
    assert!(output_b.contains("store: PostgreSQL"), "{output_b}");

    // Stopped, both flushed their queues: every request that reached the
    // provider is in the shared ledger, and the chain still verifies.
    let a = serve(home.path(), &data_a, &database.url).await;
    let (ok, usage, err) = a.cli(home.path(), &["usage", "--json"], None).await;
    assert!(ok, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&usage).unwrap();
    // 2 + 2 single requests and 4 x 50 under load (the refused one never
    // reached the provider).
    assert_eq!(usage["total"]["requests"], 204, "{usage}");
    assert_eq!(sum_of("requests", &usage["rows"]), 204, "{usage}");
    let (ok, out, err) = a.cli(home.path(), &["audit", "verify"], None).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    a.stop().await;
}

/// The sum of every number named `field` anywhere in `value`.
fn sum_of(field: &str, value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(name, inner)| {
                if name == field {
                    inner.as_u64().unwrap_or(0)
                } else {
                    sum_of(field, inner)
                }
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(|item| sum_of(field, item)).sum(),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_embedded_install_migrates_to_postgres_with_its_keys_spend_and_audit() {
    let Some(database) = database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let provider_key = fake_provider_key("migrate");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let sqlite_args = ["--listen", "127.0.0.1:0", "--data-dir", data_arg.as_str()];
    let embedded = Server::start(home.path(), &data, &sqlite_args, &[]).await;
    embedded
        .add_provider(
            home.path(),
            "openai",
            "openai",
            "prod",
            &upstream.base_url(),
            &provider_key,
        )
        .await;
    let key = embedded
        .create_key(home.path(), &["--name", "svc", "--env", "prod"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    for _ in 0..3 {
        assert_eq!(chat(&http, &embedded, &key).await, 200);
    }
    let migrate = |extra: &'static [&'static str]| {
        let (home, data, url) = (home.path().to_owned(), data.clone(), database.url.clone());
        async move {
            let db = data.join("keyforge.db");
            let from = format!("sqlite://{}", db.display());
            common::command(&home)
                .args(["migrate", "--from", &from])
                .args(extra)
                .env("KEYFORGE_DATABASE_URL", &url)
                .env("KEYFORGE_DATA_DIR", &data)
                .output()
                .await
                .unwrap()
        }
    };
    // Refused while the embedded server holds its data directory.
    let refused = migrate(&[]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("stop it before migrating"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    embedded.stop().await;

    let done = migrate(&[]).await;
    let (out, err) = (
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr),
    );
    assert!(done.status.success(), "{out}{err}");
    assert!(
        out.contains("verified on the target: audit chain intact"),
        "{out}"
    );
    // A second run finds the target filled and copies nothing.
    let again = migrate(&[]).await;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The same data directory (its master key) now on PostgreSQL: the key
    // works with the same secret, its spend and the audit log carried over.
    let clustered = serve(home.path(), &data, &database.url).await;
    assert_eq!(chat(&http, &clustered, &key).await, 200);
    let (ok, usage, err) = clustered.cli(home.path(), &["usage", "--json"], None).await;
    assert!(ok, "{err}");
    let usage: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(usage["total"]["requests"], 4, "{usage}");
    let (ok, out, err) = clustered.cli(home.path(), &["audit", "verify"], None).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    let output = clustered.stop().await;
    assert!(output.contains("store: PostgreSQL"), "{output}");
}

/// The Redis the cluster-admission test shares (`KEYFORGE_TEST_REDIS_URL`,
/// default 127.0.0.1:6379; `scripts/test` starts one).
fn redis_url() -> String {
    std::env::var("KEYFORGE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two instances on one PostgreSQL database and one Redis: a key's
/// requests per minute are one limit across both, not one per instance.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_share_a_keys_rate_limit() {
    let Some(database) = database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let (data_a, data_b) = (home.path().join("a"), home.path().join("b"));
    let provider_key = fake_provider_key("cluster-redis");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let redis = redis_url();
    let start = |data: &Path| {
        let data_arg = data.to_str().unwrap().to_owned();
        let (home, data, url, redis) = (
            home.path().to_owned(),
            data.to_owned(),
            database.url.clone(),
            redis.clone(),
        );
        async move {
            Server::start(
                &home,
                &data,
                &["--listen", "127.0.0.1:0", "--data-dir", &data_arg],
                &[
                    ("KEYFORGE_DATABASE_URL", url.as_str()),
                    ("KEYFORGE_REDIS_URL", redis.as_str()),
                ],
            )
            .await
        }
    };
    let a = start(&data_a).await;
    a.add_provider(
        home.path(),
        "openai",
        "openai",
        "prod",
        &upstream.base_url(),
        &provider_key,
    )
    .await;
    let key = a
        .create_key(
            home.path(),
            &["--name", "shared", "--env", "prod", "--rpm", "4"],
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data_b)
        .unwrap();
    std::fs::copy(data_a.join("master.key"), data_b.join("master.key")).unwrap();
    std::fs::set_permissions(data_b.join("master.key"), PermissionsExt::from_mode(0o600)).unwrap();
    let b = start(&data_b).await;

    let http = reqwest::Client::new();
    // Four requests in the minute, two through each instance: all served.
    for server in [&a, &b, &a, &b] {
        assert_eq!(chat(&http, server, &key).await, 200);
    }
    // The fifth is refused by whichever instance it reaches: each alone
    // has seen only two.
    assert_eq!(chat(&http, &b, &key).await, 429, "B counted alone");
    assert_eq!(chat(&http, &a, &key).await, 429, "A counted alone");
    a.stop().await;
    b.stop().await;
}

/// How long a change made through one instance may take to show on the
/// others in these tests. The target is 100 ms; the tests print what they
/// measure and fail only past this, so a loaded machine does not make
/// them flaky.
const CHANGE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `check` back to back until it holds; how long that took, or
/// `None` if it still did not hold after `deadline`.
async fn within(
    deadline: std::time::Duration,
    mut check: impl AsyncFnMut() -> bool,
) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < deadline {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    None
}

/// A data directory for another instance of the cluster: the same master
/// key and admin token as `from`'s (copied, 0600, as an operator would).
fn join_cluster(from: &Path, to: &Path) {
    std::fs::DirBuilder::new().mode(0o700).create(to).unwrap();
    for file in ["master.key", "admin.token"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
        std::fs::set_permissions(to.join(file), PermissionsExt::from_mode(0o600)).unwrap();
    }
}

/// `keyforge status --json` of `server`: its `changes` object.
async fn change_status(home: &Path, server: &Server) -> serde_json::Value {
    let (ok, out, err) = server.cli(home, &["status", "--json"], None).await;
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    status["changes"].clone()
}

/// Issue #13, "changes reach every instance at once": three instances on
/// one PostgreSQL database and one Redis. Each change is made through A
/// and must hold on B and C without anything done through them: a
/// revocation (open streams cut too), a budget raised, and a revocation
/// whose notice B missed because its listening connection was killed.
/// The periodic check is set to an hour, so only the notices (and the
/// reload after a reconnect) can pass this test.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_apply_changes_made_through_any_of_them() {
    let Some(database) = database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("keyforge.toml");
    std::fs::write(&config, "[store]\nchange_check_interval = \"1h\"\n").unwrap();
    let provider_key = fake_provider_key("cluster-changes");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let redis = redis_url();
    let start = |name: &str| {
        let data = home.path().join(name);
        let (home, url, redis, config) = (
            home.path().to_owned(),
            database.url.clone(),
            redis.clone(),
            config.clone(),
        );
        async move {
            let data_arg = data.to_str().unwrap().to_owned();
            let config_arg = config.to_str().unwrap().to_owned();
            Server::start(
                &home,
                &data,
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--data-dir",
                    &data_arg,
                    "--config",
                    &config_arg,
                ],
                &[
                    ("KEYFORGE_DATABASE_URL", url.as_str()),
                    ("KEYFORGE_REDIS_URL", redis.as_str()),
                ],
            )
            .await
        }
    };
    let a = start("a").await;
    a.add_provider(
        home.path(),
        "openai",
        "openai",
        "prod",
        &upstream.base_url(),
        &provider_key,
    )
    .await;
    let create = async |name: &str| {
        let created = a
            .create_key(home.path(), &["--name", name, "--env", "prod"])
            .await;
        (
            created["id"].as_str().unwrap().to_owned(),
            created["key"].as_str().unwrap().to_owned(),
        )
    };
    let (revoked_id, revoked) = create("revoked").await;
    let (budgeted_id, budgeted) = create("budgeted").await;
    for name in ["b", "c"] {
        join_cluster(&home.path().join("a"), &home.path().join(name));
    }
    let b = start("b").await;
    let c = start("c").await;
    let http = reqwest::Client::new();
    for server in [&a, &b, &c] {
        assert_eq!(chat(&http, server, &revoked).await, 200);
    }

    // A stream open on C with the key about to be revoked: one word every
    // 100 ms, 300 of them (30 s) unless cut.
    let stream = http
        .post(format!("{}/openai/v1/chat/completions", c.addr))
        .bearer_auth(&revoked)
        .json(
            &json!({"model": "fake-slow", "stream": true, "max_tokens": 300,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let mut stream = stream.bytes_stream();
    assert!(stream.next().await.is_some(), "the stream started");

    // Revoked through A: refused by B and C within moments.
    let (ok, _, err) = a
        .cli(home.path(), &["key", "revoke", &revoked_id], None)
        .await;
    assert!(ok, "{err}");
    let revoked_at = std::time::Instant::now();
    let (on_b, on_c) = tokio::join!(
        within(CHANGE_DEADLINE, async || chat(&http, &b, &revoked).await
            == 401),
        within(CHANGE_DEADLINE, async || chat(&http, &c, &revoked).await
            == 401),
    );
    eprintln!("revocation through A refused by B after {on_b:?}, by C after {on_c:?}");
    assert!(on_b.is_some(), "B still serves a key revoked through A");
    assert!(on_c.is_some(), "C still serves a key revoked through A");
    // C's open stream of that key ends too, long before its 30 s.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
    eprintln!(
        "C's open stream ended {:?} after the revocation",
        revoked_at.elapsed()
    );
    assert!(
        ended.is_ok(),
        "C kept streaming for a key revoked through A"
    );

    // A budget set, then raised, through A: B refuses, then admits.
    for (limit, expect) in [("0.0001usd/day", false), ("100usd/day", true)] {
        let (ok, _, err) = a
            .cli(
                home.path(),
                &["budget", "set", "--key", &budgeted_id, limit],
                None,
            )
            .await;
        assert!(ok, "{err}");
        let took = within(CHANGE_DEADLINE, async || {
            (chat(&http, &b, &budgeted).await == 200) == expect
        })
        .await;
        eprintln!("budget {limit} set through A in force on B after {took:?}");
        assert!(
            took.is_some(),
            "B does not apply the budget {limit} set through A"
        );
    }

    // A missed notice: B is frozen, its listening connection killed from
    // PostgreSQL's side and gone, and the key revoked through A while B
    // cannot hear it. B, woken, finds its connection lost, listens again
    // and reloads: the key is refused there although no notice reached B.
    let admin = sqlx::PgPool::connect(&database.admin).await.unwrap();
    let listener_of = |pid: u32| {
        let (admin, name) = (admin.clone(), database.name.clone());
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
            )
            .bind(name)
            .bind(format!("keyforge-changes-{pid}"))
            .fetch_all(&admin)
            .await
            .unwrap()
        }
    };
    let backends = listener_of(b.pid()).await;
    assert_eq!(backends.len(), 1, "B listens on one connection");
    let signal = |name: &str, pid: u32| {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let before = change_status(home.path(), &b).await;
    assert_eq!(before["listener"], "listening", "{before}");
    signal("-STOP", b.pid());
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(backends[0])
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(killed);
    let gone = within(std::time::Duration::from_secs(10), async || {
        listener_of(b.pid()).await.is_empty()
    })
    .await;
    assert!(gone.is_some(), "the listening backend did not exit");
    let (ok, _, err) = a
        .cli(home.path(), &["key", "revoke", &budgeted_id], None)
        .await;
    assert!(ok, "{err}");
    let on_c = within(CHANGE_DEADLINE, async || {
        chat(&http, &c, &budgeted).await == 401
    })
    .await;
    assert!(on_c.is_some(), "C heard the revocation");
    signal("-CONT", b.pid());
    let took = within(CHANGE_DEADLINE, async || {
        chat(&http, &b, &budgeted).await == 401
    })
    .await;
    eprintln!("B, its notice missed, refused the key revoked through A {took:?} after waking");
    assert!(
        took.is_some(),
        "B serves stale state after missing a notice"
    );
    let after = change_status(home.path(), &b).await;
    assert_eq!(after["listener"], "listening", "{after}");
    assert_eq!(after["reconnects"], 1, "{after}");
    assert_eq!(listener_of(b.pid()).await.len(), 1, "B listens again");
    let (ok, out, err) = b.cli(home.path(), &["status"], None).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("Cluster changes: listening") && out.contains("1 reconnects of the listener"),
        "{out}"
    );
    // Listening again, B hears the next change as before.
    let (_, fresh) = create("fresh").await;
    let took = within(CHANGE_DEADLINE, async || {
        chat(&http, &b, &fresh).await == 200
    })
    .await;
    assert!(took.is_some(), "B does not hear changes after reconnecting");

    // A burst of 100 notices costs B a bounded number of reloads.
    let before = change_status(home.path(), &b).await;
    sqlx::query(
        "SELECT pg_notify('keyforge_changes', (1000000000 + n)::text) FROM generate_series(1, 100) n",
    )
    .execute(&sqlx::PgPool::connect(&database.url).await.unwrap())
    .await
    .unwrap();
    // Then one real change: once B serves it, B has worked through the
    // burst (notices arrive in order on its one connection).
    let (_, after_burst) = create("after-burst").await;
    let took = within(CHANGE_DEADLINE, async || {
        chat(&http, &b, &after_burst).await == 200
    })
    .await;
    assert!(took.is_some(), "B does not hear changes after a burst");
    let after = change_status(home.path(), &b).await;
    assert!(
        after["notices"].as_u64().unwrap() >= before["notices"].as_u64().unwrap() + 101,
        "B received the burst: {after}"
    );
    let reloads = after["reloads"].as_u64().unwrap() - before["reloads"].as_u64().unwrap();
    eprintln!("100 notices at once, then one change: {reloads} reloads on B");
    assert!(
        (1..=10).contains(&reloads),
        "{reloads} reloads for one burst"
    );
    admin.close().await;

    a.stop().await;
    c.stop().await;
    let log_b = b.stop().await;
    assert_eq!(
        log_b.matches("change listener reconnected").count(),
        1,
        "one log line per reconnect: {log_b}"
    );
}

/// The backstop: a change whose notice never came (here: a key revoked
/// in SQL with the trigger's notice held back and only the change number
/// bumped, as a notice lost on a connection that died without a word
/// would leave it). The instance, listening all along, finds it at its
/// next periodic check (every second here) and refuses the key.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_whose_notice_was_lost_is_found_by_the_periodic_check() {
    let Some(database) = database().await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("keyforge.toml");
    std::fs::write(&config, "[store]\nchange_check_interval = \"1s\"\n").unwrap();
    let provider_key = fake_provider_key("cluster-check");
    let upstream = FakeUpstream::start(&provider_key).await.unwrap();
    let data = home.path().join("data");
    let (data_arg, config_arg) = (data.to_str().unwrap(), config.to_str().unwrap());
    let server = Server::start(
        home.path(),
        &data,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
            "--config",
            config_arg,
        ],
        &[("KEYFORGE_DATABASE_URL", database.url.as_str())],
    )
    .await;
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
    let created = server
        .create_key(home.path(), &["--name", "quiet", "--env", "prod"])
        .await;
    let (id, key) = (
        created["id"].as_str().unwrap(),
        created["key"].as_str().unwrap(),
    );
    let http = reqwest::Client::new();
    assert_eq!(chat(&http, &server, key).await, 200);
    let before = change_status(home.path(), &server).await;
    assert_eq!(before["listener"], "listening", "{before}");

    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    // The trigger sees its once-per-transaction mark already set: no
    // notice, no number; the number is bumped by hand.
    sqlx::query("SELECT set_config('keyforge.change_noted', 'on', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE virtual_keys SET revoked_at = 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE keyforge_changes SET seq = seq + 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;

    let took = within(std::time::Duration::from_secs(10), async || {
        chat(&http, &server, key).await == 401
    })
    .await;
    eprintln!("a change without its notice refused after {took:?} (checks every 1 s)");
    assert!(took.is_some(), "the periodic check never found the change");
    let after = change_status(home.path(), &server).await;
    assert_eq!(after["found_by_check"], 1, "{after}");
    assert_eq!(
        after["notices"], before["notices"],
        "no notice came: {after}"
    );
    let log = server.stop().await;
    assert!(
        log.contains("periodic change check found changes no notice announced"),
        "{log}"
    );
}
