//! Team-operations commands (issue #14, "Reports people can use"), end to
//! end through the real binary: `keyforge alerts test` against local
//! webhook receivers, and quiet exits when a pipe's reader goes away.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed step must fail the test loudly"
)]

#[expect(dead_code, reason = "not every test file uses every helper")]
mod common;

use common::Server;
use keyforge_testkit::{WebhookSink, fake_provider_key};
use serde_json::Value;

/// Adds a webhook through the CLI (the URL on stdin); returns its id.
async fn add_webhook(server: &Server, home: &std::path::Path, url: &str) -> String {
    let (ok, out, err) = server
        .cli(
            home,
            &["alerts", "add", "--webhook", "-", "--json"],
            Some(url),
        )
        .await;
    assert!(ok, "{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    view["id"].as_str().unwrap().to_owned()
}

/// The row of `alerts test`'s table for one webhook id.
fn row_of<'a>(table: &'a str, id: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
}

/// `keyforge alerts test` sends a sample alert marked as a test and naming
/// the admin to every webhook (or one), through the real delivery code,
/// and reports each as delivered or failed with its HTTP status, without
/// the secret part of any URL; it is audited and stays out of the alert
/// log.
#[tokio::test(flavor = "multi_thread")]
async fn alerts_test_reports_each_webhook_with_its_status_and_is_audited() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    let good = WebhookSink::start(0).await.unwrap();
    // This one answers 500 to everything.
    let bad = WebhookSink::start(usize::MAX).await.unwrap();
    let secret_path = format!("/services/T0/B0/{}", fake_provider_key("hook"));
    let good_id = add_webhook(&server, home.path(), &good.url(&secret_path)).await;
    let bad_id = add_webhook(&server, home.path(), &bad.url(&secret_path)).await;

    // Every webhook: one failed, so the command fails, after the report.
    let (ok, out, err) = server.cli(home.path(), &["alerts", "test"], None).await;
    assert!(!ok, "a failed webhook fails the command: {out}{err}");
    assert!(err.contains("1 of 2 webhooks"), "{err}");
    let good_row = row_of(&out, &good_id);
    assert!(
        good_row.contains("delivered") && good_row.contains("200"),
        "{out}"
    );
    let bad_row = row_of(&out, &bad_id);
    assert!(
        bad_row.contains("failed") && bad_row.contains("500"),
        "{out}"
    );
    assert!(out.contains(&format!("http://{}", good.addr)), "{out}");
    assert!(
        !out.contains(&secret_path) && !err.contains(&secret_path),
        "{out}{err}"
    );
    // What the receiver got: a test, naming who sent it, with the path it
    // was configured with.
    let received = good.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let (path, body) = &received[0];
    assert_eq!(path, &secret_path);
    assert_eq!(body["test"], true, "{body}");
    assert_eq!(body["kind"], "test", "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("TEST") && text.contains("admin:owner"),
        "{text}"
    );
    assert_eq!(bad.attempts(), 1, "a test is sent once, not retried");

    // One webhook by id: only it hears, and all went well.
    let (ok, out, err) = server
        .cli(home.path(), &["alerts", "test", &good_id, "--json"], None)
        .await;
    assert!(ok, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["outcomes"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["outcomes"][0]["status"], 200, "{report}");
    assert_eq!(good.received().len(), 2);
    assert_eq!(bad.attempts(), 1);

    // An id that is no webhook is a clear error.
    let (ok, _, err) = server
        .cli(
            home.path(),
            &["alerts", "test", "alr_0000000000000000"],
            None,
        )
        .await;
    assert!(!ok && err.contains("no alert webhook"), "{err}");

    // Not an alert: the log stays empty. But audited, twice, by name.
    let (ok, log, err) = server.cli(home.path(), &["alerts", "log"], None).await;
    assert!(ok && log.contains("no alerts raised yet"), "{log}{err}");
    let (ok, tail, err) = server.cli(home.path(), &["audit", "tail"], None).await;
    assert!(ok, "{err}");
    let tests: Vec<Value> = tail
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["kind"] == "admin.alert_webhook.test")
        .collect();
    assert_eq!(tests.len(), 2, "{tail}");
    assert!(tests.iter().all(|e| e["actor"] == "admin:owner"), "{tail}");
    let logs = server.stop().await;
    assert!(!logs.contains(&secret_path), "{logs}");
}

/// Output into a pipe whose reader is already gone (`... | head` after
/// `head` exited) ends quietly with status 0, for tables, JSON and
/// streamed lines alike. The pipe is closed before the command starts,
/// so its first write fails every time.
#[tokio::test(flavor = "multi_thread")]
async fn writing_to_a_closed_pipe_exits_quietly() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::start_in(home.path(), &[]).await;
    server
        .create_key(home.path(), &["--name", "app", "--env", "dev"])
        .await;
    for args in [
        &["alerts", "log"][..],
        &["audit", "tail"],
        &["key", "list"],
        &["key", "list", "--json"],
        &["alerts", "list", "--json"],
        &["status"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = common::command(home.path())
            .args(args)
            .env("KEYFORGE_ADDR", &server.addr)
            .env("KEYFORGE_DATA_DIR", &server.data_dir)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            // Not `output()`: tokio's pipes stdout itself there.
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{args:?}: {:?} {stderr}",
            output.status
        );
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
    server.stop().await;
    // `scan` keeps its own code: findings were being reported (1), and
    // nothing about the pipe, in every format.
    let file = home.path().join("leak.env");
    std::fs::write(
        &file,
        format!("AWS_KEY={}\n", ["AKIA", "IOSFODNN7EXAMPLQ"].concat()),
    )
    .unwrap();
    for format in ["text", "json", "sarif"] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = common::command(home.path())
            .arg("scan")
            .arg(&file)
            .args(["--format", format])
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{format}: {stderr}");
        assert!(stderr.trim().is_empty(), "{format}: {stderr}");
    }
}
