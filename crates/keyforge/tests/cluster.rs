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

    // A key minted through A while B runs: B loads keys at start and after
    // each change made through B itself (there is no cross-instance change
    // notification yet), so B serves it after its next reload.
    let second = a
        .create_key(home.path(), &["--name", "second", "--env", "prod"])
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(chat(&http, &a, &second).await, 200);
    assert_eq!(
        chat(&http, &b, &second).await,
        401,
        "B has not reloaded yet"
    );
    b.create_key(home.path(), &["--name", "through-b", "--env", "prod"])
        .await;
    assert_eq!(chat(&http, &b, &second).await, 200);

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
