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

// ---------------------------------------------------------------------
// Issue #13, "three gateways on one PostgreSQL and one Redis": what an
// operator sees when the load is high, an instance dies, Redis restarts
// or PostgreSQL restarts.
// ---------------------------------------------------------------------

/// The model the failure tests call: priced by their own `[[price]]`
/// entry at $1 per million tokens in and out (1,000 nano-USD a token), so
/// a request of one word in and `max_tokens` 5 out costs 6,000 nano-USD.
const PRICED_MODEL: &str = "kf-cluster-test";
const COST_PER_REQUEST: i64 = 6_000;

/// A Redis key prefix of this test's own, so tests sharing one Redis
/// never see each other's counters or spend marker.
fn test_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kf_test_{tag}_{}_{nanos}:", std::process::id())
}

/// Three gateways on one PostgreSQL database and one Redis, with the same
/// master key and admin token, a provider `openai` in front of `upstream`
/// and the configuration `extra` added to the failure tests' own.
struct Trio {
    home: tempfile::TempDir,
    config: std::path::PathBuf,
    database_url: String,
    redis_url: String,
    upstream: FakeUpstream,
    servers: Vec<Server>,
}

impl Trio {
    async fn start(database_url: &str, redis_url: &str, tag: &str, extra: &str) -> Trio {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("keyforge.toml");
        std::fs::write(
            &config,
            format!(
                "[limits]\nmax_connections_per_client = 768\n\n\
                 [redis]\nprefix = \"{prefix}\"\n{extra}\n\n\
                 [[price]]\napi = \"openai\"\nmodel = \"kf-cluster-*\"\nsince = \"2026-01-01\"\n\
                 input = \"1.00\"\noutput = \"1.00\"\n",
                prefix = test_prefix(tag),
            ),
        )
        .unwrap();
        let provider_key = fake_provider_key(tag);
        let upstream = FakeUpstream::start(&provider_key).await.unwrap();
        let mut trio = Trio {
            home,
            config,
            database_url: database_url.to_owned(),
            redis_url: redis_url.to_owned(),
            upstream,
            servers: Vec::new(),
        };
        let a = trio.serve("a").await;
        a.add_provider(
            trio.home.path(),
            "openai",
            "openai",
            "prod",
            &trio.upstream.base_url(),
            &provider_key,
        )
        .await;
        trio.servers.push(a);
        for name in ["b", "c"] {
            join_cluster(&trio.home.path().join("a"), &trio.home.path().join(name));
            let server = trio.serve(name).await;
            trio.servers.push(server);
        }
        trio
    }

    async fn serve(&self, name: &str) -> Server {
        let data = self.home.path().join(name);
        let data_arg = data.to_str().unwrap().to_owned();
        let config_arg = self.config.to_str().unwrap().to_owned();
        Server::start(
            self.home.path(),
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
                ("KEYFORGE_DATABASE_URL", self.database_url.as_str()),
                ("KEYFORGE_REDIS_URL", self.redis_url.as_str()),
            ],
        )
        .await
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// A key minted through A (with `extra` arguments): (id, secret).
    async fn key(&self, name: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["--name", name, "--env", "prod"];
        args.extend_from_slice(extra);
        let created = self.servers[0].create_key(self.home(), &args).await;
        self.in_step().await;
        (
            created["id"].as_str().unwrap().to_owned(),
            created["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Waits until every running instance's snapshot holds A's change
    /// number (what `status` shows), so a key minted through A is known
    /// everywhere before the load starts.
    async fn in_step(&self) {
        let wanted = change_status(self.home(), &self.servers[0]).await["seq"]
            .as_i64()
            .unwrap();
        for server in &self.servers[1..] {
            let caught_up = within(CHANGE_DEADLINE, async || {
                change_status(self.home(), server).await["seq"].as_i64() >= Some(wanted)
            })
            .await;
            assert!(
                caught_up.is_some(),
                "an instance never applied change {wanted}"
            );
        }
    }

    /// `keyforge budget list --json` through `server`: the budget of key
    /// `key_id`.
    async fn budget_of(&self, server: &Server, key_id: &str) -> serde_json::Value {
        let (ok, out, err) = server
            .cli(self.home(), &["budget", "list", "--json"], None)
            .await;
        assert!(ok, "{err}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|budget| budget["scope"].to_string().contains(key_id))
            .unwrap_or_else(|| panic!("no budget of {key_id} in {list}"))
            .clone()
    }

    /// `keyforge usage --json` through `server`: (requests, cost in nano-USD).
    async fn usage(&self, server: &Server) -> (u64, i64) {
        let (ok, out, err) = server.cli(self.home(), &["usage", "--json"], None).await;
        assert!(ok, "{err}");
        let usage: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            usage["total"]["requests"].as_u64().unwrap(),
            usage["total"]["cost_nano_usd"].as_i64().unwrap(),
        )
    }

    /// Waits (up to `deadline`) until the shared ledger holds `requests`
    /// requests (the instances' writers flush within moments, or retry
    /// until their store is back); returns what it last read.
    async fn ledger_reaches(&self, requests: u64, deadline: std::time::Duration) -> (u64, i64) {
        let started = std::time::Instant::now();
        loop {
            let usage = self.usage(&self.servers[1]).await;
            if usage.0 >= requests || started.elapsed() > deadline {
                return usage;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn audit_verifies(&self, server: &Server) {
        let (ok, out, err) = server.cli(self.home(), &["audit", "verify"], None).await;
        assert!(ok && out.contains("intact"), "audit verify: {out}{err}");
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// What one request through the gateway came back with.
#[derive(Debug, Clone)]
struct Outcome {
    status: u16,
    /// `x-keyforge-error`, when the gateway refused.
    error: Option<String>,
    body: String,
}

impl Outcome {
    fn served(&self) -> bool {
        self.status == 200 && self.body.contains("data: [DONE]")
    }

    /// The OpenAI error object's `code`, if the body is one.
    fn openai_code(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        Some(body["error"]["code"].as_str()?.to_owned())
    }
}

/// One streamed chat completion of `PRICED_MODEL` (one word in, five out)
/// through `addr`, read to its end. A connection that fails is status 0.
async fn stream_chat(http: &reqwest::Client, addr: &str, key: &str) -> Outcome {
    let sent = http
        .post(format!("{addr}/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(
            &json!({"model": PRICED_MODEL, "stream": true, "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Outcome {
                status: 0,
                error: None,
                body: error.to_string(),
            };
        }
    };
    let status = response.status().as_u16();
    let error = response
        .headers()
        .get("x-keyforge-error")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = match response.text().await {
        Ok(body) => body,
        Err(error) => format!("body cut: {error}"),
    };
    Outcome {
        status,
        error,
        body,
    }
}

/// `redis-cli -u URL ARGS...`, its answer trimmed.
fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", url])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "redis-cli {args:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The Redis prefix the trio's configuration names.
fn prefix_of(trio: &Trio) -> String {
    let config = std::fs::read_to_string(&trio.config).unwrap();
    let line = config
        .lines()
        .find(|line| line.starts_with("prefix = "))
        .unwrap();
    line.trim_start_matches("prefix = ")
        .trim_matches('"')
        .to_owned()
}

/// What Redis holds for budget `id` in flight: (`reserved:ID`, the number
/// of reservations in `held:ID`, of leases in `leases:ID`).
fn redis_reservations(trio: &Trio, id: &str) -> (i64, i64, i64) {
    let prefix = prefix_of(trio);
    let number = |text: String| text.parse::<i64>().unwrap_or(0);
    (
        number(redis_cli(
            &trio.redis_url,
            &["GET", &format!("{prefix}reserved:{id}")],
        )),
        number(redis_cli(
            &trio.redis_url,
            &["HLEN", &format!("{prefix}held:{id}")],
        )),
        number(redis_cli(
            &trio.redis_url,
            &["ZCARD", &format!("{prefix}leases:{id}")],
        )),
    )
}

/// Issue #13: 1,000 concurrent streaming requests spread over three
/// gateways against one small budget (room for 300 at their actual cost). Spend
/// never passes the budget, in Redis or in the ledger; every refusal is a
/// budget refusal in the OpenAI error shape; every request the provider
/// saw is in the ledger; and once the load is over nothing stays
/// reserved, as `budget list` on every instance and Redis itself say.
#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_streams_over_three_gateways_never_pass_one_small_budget() {
    let Some(database) = database().await else {
        return;
    };
    let trio = Trio::start(&database.url, &redis_url(), "load", "").await;
    // Room for 300 requests at their actual cost (each reserves about
    // sixteen times that while in flight: its input bound and cap).
    let limit = 300 * COST_PER_REQUEST;
    let budget = format!("0.{limit:09}usd/day");
    let (id, key) = trio.key("small", &["--budget", &budget]).await;
    let budget_id = trio.budget_of(&trio.servers[0], &id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let mut load = Vec::new();
    for n in 0..1000 {
        let (http, addr, key) = (http.clone(), trio.servers[n % 3].addr.clone(), key.clone());
        load.push(tokio::spawn(async move {
            stream_chat(&http, &addr, &key).await
        }));
    }
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.push(task.await.unwrap());
    }
    let served = outcomes.iter().filter(|outcome| outcome.served()).count();
    let refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|outcome| !outcome.served())
        .collect();
    eprintln!(
        "1,000 streams over three gateways in {:?}: {served} served, {} refused",
        started.elapsed(),
        refused.len()
    );
    for outcome in &refused {
        assert_eq!(outcome.status, 429, "{outcome:?}");
        assert!(
            outcome.body.contains("budget"),
            "names the budget: {outcome:?}"
        );
        assert_eq!(
            outcome.error.as_deref(),
            Some("budget_exhausted"),
            "{outcome:?}"
        );
        assert_eq!(
            outcome.openai_code().as_deref(),
            Some("budget_exhausted"),
            "{outcome:?}"
        );
        let body: serde_json::Value = serde_json::from_str(&outcome.body).unwrap();
        assert_eq!(body["error"]["type"], "insufficient_quota", "{outcome:?}");
    }
    assert!(served > 0, "nothing was served");
    assert!(!refused.is_empty(), "the budget refused nothing");
    assert_eq!(
        trio.upstream.requests().len(),
        served,
        "the provider saw exactly the requests served"
    );

    // Settlements run just after each response: once they are done,
    // nothing is held, on any instance or in Redis.
    let settled = within(std::time::Duration::from_secs(10), async || {
        redis_reservations(&trio, &budget_id) == (0, 0, 0)
    })
    .await;
    assert!(
        settled.is_some(),
        "reservations left after the load: {:?}",
        redis_reservations(&trio, &budget_id)
    );
    let mut spent = Vec::new();
    for server in &trio.servers {
        let view = trio.budget_of(server, &id).await;
        assert_eq!(view["reserved_nano_usd"], 0, "{view}");
        spent.push(view["spent_nano_usd"].as_i64().unwrap());
    }
    let (requests, cost) = trio
        .ledger_reaches(served as u64, std::time::Duration::from_secs(10))
        .await;
    eprintln!("spend: {spent:?} in Redis, {cost} in the ledger, limit {limit}");
    assert_eq!(
        requests, served as u64,
        "the ledger has every served request"
    );
    assert_eq!(
        cost,
        served as i64 * COST_PER_REQUEST,
        "each served request cost its price"
    );
    assert!(
        cost <= limit,
        "the ledger's spend {cost} passed the budget {limit}"
    );
    for spent in spent {
        assert_eq!(spent, cost, "Redis's spend is the ledger's");
    }
    trio.audit_verifies(&trio.servers[2]).await;
    trio.stop().await;
}

/// Requests looping through `addr` until `stop` is set: every outcome,
/// with when it came back.
fn keep_calling(
    http: &reqwest::Client,
    addr: &str,
    key: &str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(std::time::Instant, Outcome)>> {
    let (http, addr, key, stop) = (http.clone(), addr.to_owned(), key.to_owned(), stop.clone());
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let outcome = stream_chat(&http, &addr, &key).await;
            outcomes.push((std::time::Instant::now(), outcome));
            // A refusal comes back at once: pace the loop so a refused
            // phase does not flood the logs.
            if outcomes
                .last()
                .is_some_and(|(_, outcome)| !outcome.served())
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
        outcomes
    })
}

/// Issue #13: kill -9 of one instance under load. The other two serve
/// every request they get meanwhile; the reservations the dead instance
/// held (ten open streams) are gone from `budget list` once the lease
/// (`[redis] lease = "3s"` here) is over, with no request needed to purge
/// them; and the audit log the three shared still verifies.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_killed_under_load_leaves_the_others_serving_and_its_reservations_expire() {
    let Some(database) = database().await else {
        return;
    };
    let mut trio = Trio::start(&database.url, &redis_url(), "kill", "lease = \"3s\"").await;
    let (id, key) = trio.key("busy", &["--budget", "1usd/day"]).await;
    let budget_id = trio.budget_of(&trio.servers[0], &id).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut on_a = Vec::new();
    let mut on_others = Vec::new();
    for _ in 0..4 {
        on_a.push(keep_calling(&http, &trio.servers[0].addr, &key, &stop));
        on_others.push(keep_calling(&http, &trio.servers[1].addr, &key, &stop));
        on_others.push(keep_calling(&http, &trio.servers[2].addr, &key, &stop));
    }
    // Ten streams open on A, one word every 100 ms for 30 s: their
    // reservations are in Redis when A dies.
    let mut open = Vec::new();
    for _ in 0..10 {
        let response = http
            .post(format!(
                "{}/openai/v1/chat/completions",
                trio.servers[0].addr
            ))
            .bearer_auth(&key)
            .json(
                &json!({"model": "fake-slow", "stream": true, "max_tokens": 300,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        open.push(response);
    }
    let (_, held, _) = redis_reservations(&trio, &budget_id);
    assert!(held >= 10, "A's open streams hold reservations: {held}");

    let a = trio.servers.remove(0);
    let status = std::process::Command::new("kill")
        .args(["-KILL", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let killed_at = std::time::Instant::now();
    drop(open);
    // The load goes on for a second, then stops: A's leases, 3 s long,
    // are not yet over, so no reservation made after them purges them.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut others = Vec::new();
    for task in on_others {
        others.extend(task.await.unwrap().into_iter().map(|(_, outcome)| outcome));
    }
    for task in on_a {
        task.await.unwrap();
    }
    let failed: Vec<&Outcome> = others.iter().filter(|outcome| !outcome.served()).collect();
    eprintln!(
        "B and C under load while A was killed: {} served, {} failed",
        others.len() - failed.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "B or C failed {} requests, the first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(!others.is_empty());
    let held = trio.budget_of(&trio.servers[0], &id).await["reserved_nano_usd"]
        .as_i64()
        .unwrap();
    assert!(held > 0, "A's reservations are still held within the lease");

    // Within the lease (plus a margin for a loaded machine), `budget
    // list` on B and C shows nothing held, and Redis holds nothing.
    let freed = within(std::time::Duration::from_secs(15), async || {
        trio.budget_of(&trio.servers[0], &id).await["reserved_nano_usd"] == 0
    })
    .await;
    eprintln!(
        "A's reservations freed {:?} after the kill (lease 3 s)",
        freed.map(|_| killed_at.elapsed())
    );
    assert!(freed.is_some(), "A's reservations outlived their lease");
    assert_eq!(
        trio.budget_of(&trio.servers[1], &id).await["reserved_nano_usd"],
        0
    );
    assert_eq!(redis_reservations(&trio, &budget_id), (0, 0, 0));
    // After A's lease, the budget serves as before.
    assert!(
        stream_chat(&http, &trio.servers[1].addr, &key)
            .await
            .served()
    );
    trio.audit_verifies(&trio.servers[0]).await;
    trio.audit_verifies(&trio.servers[1]).await;
    drop(a);
    trio.stop().await;
}
/// A free TCP port on loopback (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of the test's own on a free port, without persistence
/// (a restart comes back empty), killed when dropped; `None` (and why)
/// when there is no redis-server outside CI.
struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
        };
        if let Err(error) = redis.up() {
            if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                panic!("CI=true and no redis-server can be started: {error}");
            }
            eprintln!("skipped: cannot start redis-server ({error})");
            return None;
        }
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port) and waits for its PONG.
    fn up(&mut self) -> Result<(), String> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|error| error.to_string())?;
        self.child = Some(child);
        for _ in 0..200 {
            let ping = std::process::Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .map_err(|error| error.to_string())?;
            if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Err("redis-server did not answer PING".into())
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.down();
    }
}

/// Issue #13: Redis restarted under load, keys failing closed. While it
/// is down every instance answers 503 `admission_unavailable` in the
/// OpenAI error shape and forwards nothing; once it is back (empty) the
/// instances serve again by themselves, the spend is rebuilt from the
/// ledger, and nothing is counted twice: Redis's spend equals the
/// ledger's, which equals what was served.
#[tokio::test(flavor = "multi_thread")]
async fn redis_restarted_under_load_fails_closed_then_recovers_without_double_counting() {
    let Some(database) = database().await else {
        return;
    };
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let trio = Trio::start(
        &database.url,
        &redis.url(),
        "redis-restart",
        "on_unavailable = \"fail_closed\"",
    )
    .await;
    let (id, key) = trio.key("metered", &["--budget", "1usd/day"]).await;
    let http = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for server in &trio.servers {
        for _ in 0..2 {
            load.push(keep_calling(&http, &server.addr, &key, &stop));
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    redis.down();
    let down_at = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    redis.up().unwrap();
    let up_at = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut per_server = Vec::new();
    for chunk in load.chunks_mut(2) {
        let mut outcomes = Vec::new();
        for task in chunk {
            outcomes.extend(task.await.unwrap());
        }
        per_server.push(outcomes);
    }

    let mut served = 0;
    for (name, outcomes) in ["A", "B", "C"].iter().zip(&per_server) {
        let mut refused_while_down = 0;
        for (_, outcome) in outcomes.iter().filter(|(_, outcome)| !outcome.served()) {
            assert_eq!(outcome.status, 503, "{name}: {outcome:?}");
            assert_eq!(
                outcome.error.as_deref(),
                Some("admission_unavailable"),
                "{name}: {outcome:?}"
            );
            assert_eq!(
                outcome.openai_code().as_deref(),
                Some("admission_unavailable"),
                "{name}: {outcome:?}"
            );
            refused_while_down += 1;
        }
        let first_after = outcomes
            .iter()
            .find(|(at, outcome)| *at > up_at && outcome.served())
            .map(|(at, _)| at.duration_since(up_at));
        let n_served = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.served())
            .count();
        eprintln!(
            "{name}: {n_served} served, {refused_while_down} refused with 503; serving again {first_after:?} after Redis came back"
        );
        assert!(
            refused_while_down > 0,
            "{name} never failed closed while Redis was down"
        );
        assert!(first_after.is_some(), "{name} did not recover by itself");
        // Nothing served unmetered while Redis was down: every success
        // came back before the stop or after the start (a stream admitted
        // just before the stop may end a moment after it).
        let served_while_down = outcomes
            .iter()
            .filter(|(at, outcome)| {
                outcome.served()
                    && *at > down_at + std::time::Duration::from_millis(500)
                    && *at < up_at
            })
            .count();
        assert_eq!(served_while_down, 0, "{name} served while Redis was down");
        served += n_served;
    }

    let (requests, cost) = trio
        .ledger_reaches(served as u64, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(
        trio.upstream.requests().len(),
        served,
        "the provider saw only what was served"
    );
    assert_eq!(
        requests, served as u64,
        "the ledger has every served request"
    );
    assert_eq!(cost, served as i64 * COST_PER_REQUEST);
    let rebuilt = within(std::time::Duration::from_secs(10), async || {
        trio.budget_of(&trio.servers[0], &id).await["reserved_nano_usd"] == 0
    })
    .await;
    assert!(rebuilt.is_some(), "reservations left after the load");
    for server in &trio.servers {
        let view = trio.budget_of(server, &id).await;
        eprintln!(
            "spend in Redis {} vs {cost} in the ledger",
            view["spent_nano_usd"]
        );
        assert_eq!(
            view["spent_nano_usd"], cost,
            "Redis's spend after the restart: {view}"
        );
    }
    trio.audit_verifies(&trio.servers[1]).await;
    trio.stop().await;
}

/// A PostgreSQL cluster of the test's own (initdb into a temporary
/// directory, trust authentication, on a free port), stopped when
/// dropped; run as `postgres` when the test runs as root (PostgreSQL
/// refuses root). `None` (and why) when it cannot be made outside CI.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> Option<PrivatePostgres> {
        match Self::make() {
            Ok(postgres) => Some(postgres),
            Err(error) => {
                if std::env::var("CI").is_ok_and(|ci| ci == "true") {
                    panic!("CI=true and no private PostgreSQL can be started: {error}");
                }
                eprintln!("skipped: cannot start a private PostgreSQL ({error})");
                None
            }
        }
    }

    fn make() -> Result<PrivatePostgres, String> {
        let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|error| format!("/usr/lib/postgresql: {error}"))?
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .collect();
        versions.sort();
        let bin = versions
            .pop()
            .ok_or("no initdb under /usr/lib/postgresql")?;
        let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
        let as_postgres = std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
        if as_postgres {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .map_err(|error| error.to_string())?;
            if !status.success() {
                return Err("cannot give the data directory to the postgres user".into());
            }
        }
        let postgres = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = postgres.data();
        postgres.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        )?;
        postgres.up()?;
        Ok(postgres)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_str().unwrap().to_owned()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            std::process::Command::new(&program)
        };
        let output = command
            .args(args)
            .output()
            .map_err(|error| format!("{}: {error}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {args:?}: {}{}",
                program.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// Starts the server (again, on the same port) and waits until it
    /// accepts connections.
    fn up(&self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        )
    }

    /// Stops the server (fast: open connections are cut, as a restart
    /// cuts them) and waits until it is gone.
    fn down(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// Issue #13: PostgreSQL restarted under load. While it is down the
/// three instances serve every request from memory, keep their ledger
/// batches queued, and refuse admin changes with an error that says the
/// store is unreachable; once it is back the ledger holds every request
/// served, admin changes work again and the audit log verifies.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted_under_load_keeps_serving_and_loses_no_ledger_row() {
    let Some(postgres) = PrivatePostgres::start() else {
        return;
    };
    let trio = Trio::start(&postgres.url(), &redis_url(), "pg-restart", "").await;
    let (_, key) = trio.key("steady", &["--budget", "1usd/day"]).await;
    let http = reqwest::Client::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for server in &trio.servers {
        for _ in 0..2 {
            load.push(keep_calling(&http, &server.addr, &key, &stop));
        }
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    postgres.down().unwrap();
    let down_at = std::time::Instant::now();

    // An admin change while the store is down is refused, and says why.
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        trio.servers[1].cli(
            trio.home(),
            &["key", "create", "--name", "late", "--env", "prod"],
            None,
        ),
    )
    .await
    .expect("an admin change hung while the store was down");
    eprintln!(
        "key create while PostgreSQL was down ({:?}): {}",
        down_at.elapsed(),
        refused.2.trim()
    );
    assert!(
        !refused.0,
        "an admin change succeeded without its store: {}",
        refused.1
    );
    tokio::time::sleep(std::time::Duration::from_secs(3).saturating_sub(down_at.elapsed())).await;
    postgres.up().unwrap();
    let up_at = std::time::Instant::now();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for (n, task) in load.into_iter().enumerate() {
        let outcomes = task.await.unwrap();
        let failed: Vec<&Outcome> = outcomes
            .iter()
            .map(|(_, outcome)| outcome)
            .filter(|outcome| !outcome.served())
            .collect();
        assert!(
            failed.is_empty(),
            "instance {} failed {} requests, the first: {:?}",
            n / 2,
            failed.len(),
            failed.first()
        );
        let while_down = outcomes
            .iter()
            .filter(|(at, _)| *at > down_at && *at < up_at)
            .count();
        assert!(
            while_down > 0,
            "instance {} served nothing while PostgreSQL was down",
            n / 2
        );
        served += outcomes.len();
    }
    eprintln!(
        "{served} requests served, none failed, across a {:?} outage",
        up_at - down_at
    );

    let (requests, _) = trio
        .ledger_reaches(served as u64, std::time::Duration::from_secs(30))
        .await;
    eprintln!(
        "the ledger held every served request {:?} after PostgreSQL came back",
        up_at.elapsed()
    );
    assert_eq!(
        requests, served as u64,
        "the ledger lost requests served while PostgreSQL was down"
    );
    assert_eq!(trio.upstream.requests().len(), served);
    // The refused change is not in the audit log: what it records was
    // done.
    let (ok, tail, err) = trio.servers[1]
        .cli(
            trio.home(),
            &[
                "audit",
                "tail",
                "--kind",
                "admin.key.create",
                "--format",
                "json",
            ],
            None,
        )
        .await;
    assert!(ok, "{err}");
    assert!(tail.contains(r#""name":"steady""#), "{tail}");
    let refused_entry: Vec<&str> = tail
        .lines()
        .filter(|line| line.contains(r#""name":"late""#))
        .collect();
    assert!(
        refused_entry.is_empty(),
        "the audit log records a key create that was refused: {refused_entry:?}"
    );
    // Admin changes work again, through the instance that was refused.
    trio.servers[1]
        .create_key(trio.home(), &["--name", "after", "--env", "prod"])
        .await;
    for server in &trio.servers {
        trio.audit_verifies(server).await;
    }
    trio.stop().await;
}
