//! `keyforge backup`, `backup verify` and `restore`, end to end through the
//! real binary: a backup taken while a gateway serves traffic restores into
//! a new data directory that serves the same keys and providers; a tampered
//! backup is refused; a restore is refused while a server runs; a backup
//! never replaces a file unasked and is private.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup must fail the test loudly"
)]

mod common;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{Server, command};
use keyforge_testkit::{FakeUpstream, fake_provider_key};
use serde_json::json;

/// Runs `keyforge ARGS` with `data_dir` and `addr`; (exit ok, stdout, stderr).
async fn cli(home: &Path, data_dir: &Path, addr: &str, args: &[&str]) -> (bool, String, String) {
    let output = command(home)
        .args(args)
        .env("KEYFORGE_ADDR", addr)
        .env("KEYFORGE_DATA_DIR", data_dir)
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

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A new 0700 data directory holding a copy of `from`'s master key: what an
/// operator restoring on a new machine has (the key is backed up apart).
fn new_data_dir(home: &Path, name: &str, from: &Path) -> PathBuf {
    let dir = home.join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    std::fs::copy(from.join("master.key"), dir.join("master.key")).unwrap();
    std::fs::set_permissions(dir.join("master.key"), PermissionsExt::from_mode(0o600)).unwrap();
    dir
}

async fn chat(http: &reqwest::Client, addr: &str, key: &str) -> reqwest::StatusCode {
    let response = http
        .post(format!("{addr}/openai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    response.bytes().await.unwrap();
    status
}

/// A gateway with an `openai` provider in `dev` and one app key: (server,
/// upstream, the app key).
async fn serving(home: &Path, tag: &str) -> (Server, FakeUpstream, String) {
    let provider_key = fake_provider_key(tag);
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
    let created = server
        .create_key(home, &["--name", "app", "--env", "dev"])
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    (server, upstream, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_serving_restores_into_a_new_data_dir_that_serves_the_same_keys() {
    let home = tempfile::tempdir().unwrap();
    let (server, upstream, key) = serving(home.path(), "backup").await;
    let data = server.data_dir.clone();
    let http = reqwest::Client::new();
    assert_eq!(chat(&http, &server.addr, &key).await, 200);

    // Traffic keeps flowing while the backup is taken.
    let traffic = {
        let (http, addr, key) = (http.clone(), server.addr.clone(), key.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(chat(&http, &addr, &key).await);
            }
            statuses
        })
    };
    let backup = home.path().join("backups").join("keyforge.backup");
    std::fs::create_dir(home.path().join("backups")).unwrap();
    let backup_arg = backup.to_str().unwrap();
    let (ok, out, err) = cli(
        home.path(),
        &data,
        &server.addr,
        &["backup", "--to", backup_arg],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("running gateway"), "{out}");
    assert!(traffic.await.unwrap().iter().all(|status| *status == 200));
    assert_eq!(mode(&backup), 0o600);
    // Nothing but the backup in its directory (no scratch file left).
    let names: Vec<_> = std::fs::read_dir(home.path().join("backups"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keyforge.backup"]);

    // An existing file is replaced only with --force.
    let before = std::fs::read(&backup).unwrap();
    let (ok, _, err) = cli(
        home.path(),
        &data,
        &server.addr,
        &["backup", "--to", backup_arg],
    )
    .await;
    assert!(!ok && err.contains("exists; give --force"), "{err}");
    assert_eq!(std::fs::read(&backup).unwrap(), before);
    let (ok, _, err) = cli(
        home.path(),
        &data,
        &server.addr,
        &["backup", "--to", backup_arg, "--force"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(mode(&backup), 0o600);

    // The backups are audited, by the admin who asked.
    let (ok, tail, err) = cli(home.path(), &data, &server.addr, &["audit", "tail"]).await;
    assert!(ok, "{err}");
    let backups: Vec<serde_json::Value> = tail
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["kind"] == "store.backup")
        .collect();
    assert_eq!(backups.len(), 2, "{tail}");
    // (the legacy admin.token is the owner admin `owner`)
    assert!(
        backups.iter().all(|entry| entry["actor"] == "admin:owner"),
        "{tail}"
    );

    // No restore while the server holds the data directory.
    let (ok, _, err) = cli(
        home.path(),
        &data,
        &server.addr,
        &["restore", "--from", backup_arg],
    )
    .await;
    assert!(!ok && err.contains("holds the data directory"), "{err}");
    // Nor a second server: the lock restore looks for is the server's.
    let output = command(home.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("holds the data directory"),
        "{err}"
    );

    // `backup verify` says what it checked.
    let (ok, out, err) = cli(
        home.path(),
        &data,
        &server.addr,
        &["backup", "verify", backup_arg],
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("integrity check ok")
            && out.contains("audit chain intact")
            && out.contains("last sequence")
            && out.contains("newest entry 20")
            && out.contains("rows match the audit log"),
        "{out}"
    );

    // Restored into a new data directory (with the master key copied
    // apart), a server there serves the same key and provider.
    let restored = new_data_dir(home.path(), "restored", &data);
    let (ok, out, err) = cli(
        home.path(),
        &restored,
        &server.addr,
        &[
            "restore",
            "--from",
            backup_arg,
            "--data-dir",
            restored.to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("restored into"), "{out}");
    assert_eq!(mode(&restored.join("keyforge.db")), 0o600);
    server.stop().await;

    let second = Server::start(
        home.path(),
        &restored,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            restored.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let served_before = upstream.requests().len();
    assert_eq!(chat(&http, &second.addr, &key).await, 200);
    assert_eq!(upstream.requests().len(), served_before + 1);
    let (ok, providers, err) = second
        .cli(home.path(), &["provider", "list", "--json"], None)
        .await;
    assert!(ok && providers.contains("\"openai\""), "{providers}{err}");
    // The restored directory got a new admin.token: the backup's admins
    // keep theirs, and the new one is a new owner, not a lock-out.
    let (ok, me, err) = second.cli(home.path(), &["admin", "whoami"], None).await;
    assert!(
        ok && me.starts_with("owner-") && me.trim_end().ends_with("(owner)"),
        "{me}{err}"
    );
    let (ok, out, err) = second.cli(home.path(), &["audit", "verify"], None).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_backup_is_refused_by_restore_and_backup_verify() {
    let home = tempfile::tempdir().unwrap();
    let (server, _upstream, key) = serving(home.path(), "tamper").await;
    let data = server.data_dir.clone();
    let addr = server.addr.clone();
    assert_eq!(chat(&reqwest::Client::new(), &addr, &key).await, 200);
    server.stop().await;

    // With no server running, the backup is taken and audited offline.
    let backup = home.path().join("offline.backup");
    let backup_arg = backup.to_str().unwrap();
    let (ok, out, err) = cli(home.path(), &data, &addr, &["backup", "--to", backup_arg]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("no server running"), "{out}");
    assert_eq!(mode(&backup), 0o600);
    let (ok, out, err) = cli(home.path(), &data, &addr, &["backup", "verify", backup_arg]).await;
    assert!(ok && out.contains("audit chain intact"), "{out}{err}");

    // One audited word changed in place: SQLite's own check passes, the
    // chain does not.
    let mut bytes = std::fs::read(&backup).unwrap();
    let needle = b"\"online\":false";
    let at = bytes
        .windows(needle.len())
        .position(|window| window == needle)
        .unwrap();
    bytes[at..at + needle.len()].copy_from_slice(b"\"online\":fa1se");
    let tampered = home.path().join("tampered.backup");
    std::fs::write(&tampered, &bytes).unwrap();
    let tampered_arg = tampered.to_str().unwrap();
    let (ok, out, err) = cli(
        home.path(),
        &data,
        &addr,
        &["backup", "verify", tampered_arg],
    )
    .await;
    assert!(!ok && err.contains("does not verify"), "{out}{err}");
    let fresh = new_data_dir(home.path(), "fresh", &data);
    let fresh_arg = fresh.to_str().unwrap();
    let (ok, _, err) = cli(
        home.path(),
        &fresh,
        &addr,
        &["restore", "--from", tampered_arg, "--data-dir", fresh_arg],
    )
    .await;
    assert!(
        !ok && err.contains("does not verify") && err.contains("nothing restored"),
        "{err}"
    );
    assert!(!fresh.join("keyforge.db").exists());

    // A provider pointed elsewhere in the file: the audit log still
    // verifies, the provider row's MAC does not.
    let edited = home.path().join("edited.backup");
    std::fs::copy(&backup, &edited).unwrap();
    let status = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE providers SET base_url = 'http://attacker.invalid'\"); c.commit()",
            edited.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let (ok, out, err) = cli(
        home.path(),
        &data,
        &addr,
        &["backup", "verify", edited.to_str().unwrap()],
    )
    .await;
    assert!(!ok && err.contains("fail their MAC"), "{out}{err}");
    let (ok, _, err) = cli(
        home.path(),
        &fresh,
        &addr,
        &[
            "restore",
            "--from",
            edited.to_str().unwrap(),
            "--data-dir",
            fresh_arg,
        ],
    )
    .await;
    assert!(!ok && err.contains("fail their MAC"), "{err}");
    assert!(!fresh.join("keyforge.db").exists());

    // Not a database at all, and the right backup under another master key.
    let junk = home.path().join("junk.backup");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let (ok, _, err) = cli(
        home.path(),
        &fresh,
        &addr,
        &[
            "restore",
            "--from",
            junk.to_str().unwrap(),
            "--data-dir",
            fresh_arg,
        ],
    )
    .await;
    assert!(!ok && err.contains("nothing restored"), "{err}");
    let other = home.path().join("other");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&other)
        .unwrap();
    let other_key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    };
    let output = command(home.path())
        .args(["restore", "--from", backup_arg, "--data-dir"])
        .arg(&other)
        .env("KEYFORGE_MASTER_KEY", &other_key)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && err.contains("does not verify"),
        "{err}"
    );
    assert!(!other.join("keyforge.db").exists());

    // The good backup restores over the old database, which is kept.
    let (ok, out, err) = cli(
        home.path(),
        &data,
        &addr,
        &["restore", "--from", backup_arg],
    )
    .await;
    assert!(
        ok && out.contains("previous database kept as"),
        "{out}{err}"
    );
    let kept: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("keyforge.db.before-restore-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let server = Server::start_in(home.path(), &[]).await;
    assert_eq!(chat(&reqwest::Client::new(), &server.addr, &key).await, 200);
    let (ok, out, err) = server.cli(home.path(), &["audit", "verify"], None).await;
    assert!(ok && out.contains("intact"), "{out}{err}");
    let (ok, tail, _) = server.cli(home.path(), &["audit", "tail"], None).await;
    assert!(
        ok && tail
            .lines()
            .any(|line| line.contains("\"kind\":\"store.backup\"")
                && line.contains("\"actor\":\"local:")),
        "{tail}"
    );
    server.stop().await;
}

/// `backup` and `restore` copy the embedded SQLite store only: a cluster
/// configured through `KEYFORGE_CONFIG`'s `[store] database` (as systemd
/// units and Kubernetes manifests do) is refused just as
/// `KEYFORGE_DATABASE_URL` is, naming the setting and never the URL.
#[tokio::test]
async fn backup_and_restore_refuse_a_postgresql_store_named_in_the_config_file() {
    let home = tempfile::tempdir().unwrap();
    let data_dir = home.path().join("data");
    let config = home.path().join("keyforge.toml");
    let password = format!("pw{}", keyforge_types::random_base62(12));
    let url = format!("postgres://kf:{password}@127.0.0.1:1/keyforge");
    std::fs::write(&config, format!("[store]\ndatabase = \"{url}\"\n")).unwrap();
    let backup = home.path().join("backup.db");
    std::fs::write(home.path().join("some.db"), b"not a backup").unwrap();
    let from = home.path().join("some.db");
    for (args, setting) in [
        (vec!["backup", "--to", backup.to_str().unwrap()], "file"),
        (vec!["restore", "--from", from.to_str().unwrap()], "file"),
        (vec!["backup", "--to", backup.to_str().unwrap()], "env"),
        (vec!["restore", "--from", from.to_str().unwrap()], "env"),
    ] {
        let mut command = command(home.path());
        command
            .args(&args)
            .env("KEYFORGE_DATA_DIR", &data_dir)
            .stdin(Stdio::null());
        if setting == "file" {
            command.env("KEYFORGE_CONFIG", &config);
        } else {
            command.env("KEYFORGE_DATABASE_URL", &url);
        }
        let output = command.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} {setting}");
        assert!(stderr.contains("pg_dump"), "{args:?} {setting}: {stderr}");
        let named = if setting == "file" {
            "[store] database"
        } else {
            "KEYFORGE_DATABASE_URL"
        };
        assert!(stderr.contains(named), "{args:?} {setting}: {stderr}");
        assert!(!stderr.contains(&password), "{stderr}");
    }
    assert!(!backup.exists());
    assert!(!data_dir.exists(), "restore prepared a data directory");
}
