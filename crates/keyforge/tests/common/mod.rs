//! Runs the real `keyforge` binary: `serve` as a child process (its output
//! captured for inspection) and the admin commands against it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support: a failed setup must fail the test loudly"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_keyforge");

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: String,
    pub(crate) data_dir: PathBuf,
    output: Arc<tokio::sync::Mutex<String>>,
}

/// The environment every child starts from: nothing inherited but PATH, so
/// the developer's own KEYFORGE_* variables cannot leak into a test.
pub(crate) fn command(home: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .kill_on_drop(true);
    command
}

impl Server {
    /// Starts `keyforge serve` with `args` and `envs`; waits until it listens.
    pub(crate) async fn start(
        home: &Path,
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Server {
        let mut command = command(home);
        command
            .arg("serve")
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        let output = Arc::new(tokio::sync::Mutex::new(String::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if let Some(addr) = line.strip_prefix("KeyForge listening on ")
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr.trim().to_owned());
                }
                let mut all = sink.lock().await;
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let sink = output.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                let mut all = sink.lock().await;
                all.push_str(&line);
                all.push('\n');
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("keyforge serve did not start: {}", output.lock().await),
        };
        Server {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            output,
        }
    }

    /// Starts `keyforge serve` on an OS-chosen port with its data in `HOME/data`.
    pub(crate) async fn start_in(home: &Path, envs: &[(&str, &str)]) -> Server {
        let data = home.join("data");
        let data_arg = data.to_str().unwrap().to_owned();
        Server::start(
            home,
            &data,
            &["--listen", "127.0.0.1:0", "--data-dir", &data_arg],
            envs,
        )
        .await
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends SIGTERM and waits for a clean exit; returns all output.
    pub(crate) async fn stop(mut self) -> String {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("serve did not stop on SIGTERM")
            .unwrap();
        assert!(exit.success(), "serve exited with {exit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.output.lock().await.clone()
    }

    /// `keyforge provider add NAME --kind KIND --env ENV --base-url URL`,
    /// the API key on stdin; asserts it succeeded.
    pub(crate) async fn add_provider(
        &self,
        home: &Path,
        name: &str,
        kind: &str,
        env: &str,
        base_url: &str,
        api_key: &str,
    ) {
        let args = [
            "provider",
            "add",
            name,
            "--kind",
            kind,
            "--env",
            env,
            "--base-url",
            base_url,
            // Tests count what reaches the fake: the key check is tested on its own.
            "--no-check",
        ];
        let (ok, out, err) = self.cli(home, &args, Some(api_key)).await;
        assert!(ok, "{args:?}: {out}{err}");
    }

    /// `keyforge key create ARGS... --json`; returns its JSON answer.
    pub(crate) async fn create_key(&self, home: &Path, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["key", "create"];
        all.extend_from_slice(args);
        all.push("--json");
        let (ok, out, err) = self.cli(home, &all, None).await;
        assert!(ok, "{all:?}: {err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Runs an admin command against this server; returns (exit ok, stdout, stderr).
    pub(crate) async fn cli(
        &self,
        home: &Path,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (bool, String, String) {
        let mut command = command(home);
        command
            .args(args)
            .env("KEYFORGE_ADDR", &self.addr)
            .env("KEYFORGE_DATA_DIR", &self.data_dir);
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
            drop(pipe);
        }
        let output = child.wait_with_output().await.unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }
}
