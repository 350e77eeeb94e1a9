//! What the binary writes where operators and pipes read it: log lines in
//! the chosen format, never ANSI escape codes in a file, and a quiet exit
//! when the reader of its output goes away.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed setup must fail the test loudly"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn keyforge(home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyforge"));
    command
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// Starts `serve` on a free port with `envs`, waits for its start notes,
/// stops it with SIGTERM and returns everything it wrote to stderr.
fn serve_output(envs: &[(&str, &str)]) -> String {
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let mut child = keyforge(home.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut all = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "serve exited: {all}"
        );
        all.push_str(&line);
        if line.contains("gateway started") {
            break;
        }
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    stderr.read_to_string(&mut all).unwrap();
    assert!(child.wait().unwrap().success(), "{all}");
    all
}

#[test]
fn log_files_hold_no_escape_codes() {
    // stderr is a pipe here, as with a log file or journald.
    let output = serve_output(&[]);
    assert!(
        output.contains("KeyForge listening on http://127.0.0.1:"),
        "{output}"
    );
    assert!(
        !output.contains('\u{1b}'),
        "ANSI escape codes in a log: {output:?}"
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let output = serve_output(&[("KEYFORGE_LOG_FORMAT", "json")]);
    let mut messages = Vec::new();
    for line in output.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("KeyForge listening on http://127.0.0.1:")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "gateway stopped"),
        "{messages:?}"
    );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    let home = tempfile::tempdir().unwrap();
    let mut child = keyforge(home.path())
        .arg("redact")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Read a little, then go away like `head` does.
    let writer = std::thread::spawn(move || {
        let line = "an ordinary log line with nothing secret in it\n".repeat(1000);
        for _ in 0..200 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    writer.join().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}

#[test]
fn a_scan_piped_into_head_reports_findings_quietly() {
    let home = tempfile::tempdir().unwrap();
    // Many findings, so the report outgrows what the reader takes.
    let mut text = String::new();
    for i in 0..3000u32 {
        let value: String = format!(
            "{:08x}{:08x}",
            i.wrapping_mul(2_654_435_761),
            i ^ 0x5bd1_e995
        )
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                c
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
        text.push_str(&format!("DB_PASSWORD=Qz{value}x{i}\n"));
    }
    let file = home.path().join("many.env");
    std::fs::write(&file, text).unwrap();
    let mut child = keyforge(home.path())
        .arg("scan")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Findings were being reported: exit 1, and no error about the pipe.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
}
