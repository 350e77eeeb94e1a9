//! A real `moto_server` (PyPI `moto[server]`, pinned in
//! tests/sdk/requirements.txt and installed by scripts/test into
//! `.venv-test`) on a free loopback port, and boto3 (moto's own
//! dependency) to seed it independently of the client under test.

#![expect(
    clippy::unwrap_used,
    reason = "test support: a failed setup must fail the test loudly"
)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyforge_aws::{AwsClient, AwsSettings, Environment};
use serde_json::Value;

/// The venv's python (KEYFORGE_TEST_PYTHON, else `.venv-test`). Under
/// CI=true a missing venv is a failure, never a skip.
pub(crate) fn python() -> Option<PathBuf> {
    let python = std::env::var_os("KEYFORGE_TEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv-test/bin/python");
            venv.exists().then_some(venv)
        });
    let found = python.filter(|python| python.with_file_name("moto_server").exists());
    assert!(
        found.is_some() || std::env::var("CI").is_err(),
        "CI=true but no moto_server beside KEYFORGE_TEST_PYTHON or in .venv-test: \
         the AWS tests must run in CI (see scripts/test)"
    );
    found
}

/// Skips the test (outside CI only) when moto is not installed.
#[macro_export]
macro_rules! require_moto {
    () => {
        match common::python() {
            Some(python) => python,
            None => {
                eprintln!("SKIPPED: no moto_server; run scripts/test to install it");
                return;
            }
        }
    };
}

pub(crate) struct Moto {
    child: Option<Child>,
    python: PathBuf,
    pub(crate) port: u16,
    auth_actions: Option<u32>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

impl Moto {
    /// moto without authentication: any signed request is accepted.
    pub(crate) fn start(python: &std::path::Path) -> Self {
        Self::start_on(python, free_port(), None)
    }

    /// moto checking SigV4 signatures and IAM policies after the first
    /// `setup_actions` requests (moto's INITIAL_NO_AUTH_ACTION_COUNT).
    pub(crate) fn start_with_auth(python: &std::path::Path, setup_actions: u32) -> Self {
        Self::start_on(python, free_port(), Some(setup_actions))
    }

    fn start_on(python: &std::path::Path, port: u16, auth_actions: Option<u32>) -> Self {
        let mut command = Command::new(python.with_file_name("moto_server"));
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(count) = auth_actions {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", count.to_string());
        }
        let child = command.spawn().unwrap();
        let moto = Self {
            child: Some(child),
            python: python.to_owned(),
            port,
            auth_actions,
        };
        moto.wait_ready();
        moto
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the backend goes away).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh server on the same port (moto keeps no state).
    pub(crate) fn restart(&mut self) {
        self.stop();
        let fresh = Self::start_on(&self.python, self.port, self.auth_actions);
        self.child = fresh.into_child();
    }

    fn into_child(mut self) -> Option<Child> {
        self.child.take()
    }

    /// Calls `service`'s `method` (boto3 snake_case) with `args` through
    /// boto3 with `key`/`secret`; returns the response as JSON.
    pub(crate) fn boto3(
        &self,
        service: &str,
        method: &str,
        args: Value,
        key: &str,
        secret: &str,
    ) -> Value {
        let script = r#"
import json, sys, boto3
service, method, endpoint, key, secret = sys.argv[1:6]
args = json.loads(sys.stdin.read())
client = boto3.client(service, endpoint_url=endpoint, region_name="eu-west-1",
    aws_access_key_id=key, aws_secret_access_key=secret)
print(json.dumps(getattr(client, method)(**args), default=str))
"#;
        let mut child = Command::new(&self.python)
            .args(["-c", script, service, method, &self.endpoint(), key, secret])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(args.to_string().as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "boto3 {service}.{method}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// boto3 with moto's default (unchecked) test credentials.
    pub(crate) fn seed(&self, service: &str, method: &str, args: Value) -> Value {
        self.boto3(service, method, args, "testing", "testing")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Static credentials built at run time (never a literal that looks live).
pub(crate) fn static_env(key: &str, secret: &str) -> Environment {
    Environment::from_pairs(
        [
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        None,
    )
}

pub(crate) fn settings(moto: &Moto) -> AwsSettings {
    AwsSettings {
        region: Some("eu-west-1".to_owned()),
        endpoint: Some(moto.endpoint()),
        profile: None,
        max_attempts: Some(2),
    }
}

/// A client on `moto` with moto's unchecked default credentials.
pub(crate) fn client(moto: &Moto) -> AwsClient {
    AwsClient::new(&settings(moto), static_env("testing", "testing")).unwrap()
}

/// A random alphanumeric string of `n` characters.
pub(crate) fn random(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
