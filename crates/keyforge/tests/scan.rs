//! `keyforge scan` and `keyforge redact` with the real binary, on fixtures
//! whose fake keys are built at run time (never committed).

#![expect(clippy::unwrap_used, reason = "tests: a failed setup must fail loudly")]

use std::path::Path;
use std::process::{Output, Stdio};

use keyforge_types::random_base62;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_keyforge");

async fn keyforge(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    keyforge_with(dir, args, stdin, &[]).await
}

/// [`keyforge`] with environment variables set.
async fn keyforge_with(
    dir: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Output {
    let mut command = tokio::process::Command::new(BIN);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(bytes).await.unwrap();
        drop(pipe);
    }
    child.wait_with_output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fake OpenAI project key, random at run time.
fn openai_key() -> String {
    format!("sk-proj-{}T3BlbkFJ{}", random_base62(40), random_base62(40))
}

fn anthropic_key() -> String {
    format!("sk-ant-api03-{}AA", random_base62(93))
}

fn kf_key() -> String {
    use secrecy::ExposeSecret;
    let key =
        keyforge_types::VirtualKey::generate(&keyforge_types::EnvName::parse("prod").unwrap());
    #[expect(clippy::disallowed_methods, reason = "the fixture plants the key")]
    let text = key.secret().expose_secret().to_owned();
    text
}

fn write(dir: &Path, name: &str, content: &[u8]) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[tokio::test]
async fn a_tree_is_scanned_gitignore_aware_with_masked_output_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let openai = openai_key();
    let anthropic = anthropic_key();
    let kf = kf_key();
    write(
        dir.path(),
        ".env",
        format!("OPENAI_API_KEY={openai}\n").as_bytes(),
    );
    write(
        dir.path(),
        "src/app.py",
        format!("import os\n\nclient = Anthropic(api_key=\"{anthropic}\")\n").as_bytes(),
    );
    write(
        dir.path(),
        "notebook.ipynb",
        format!("{{\"cells\": [{{\"source\": [\"key = '{kf}'\\n\"]}}]}}").as_bytes(),
    );
    write(
        dir.path(),
        "docs/allowed.md",
        format!("example: {openai} <!-- keyforge:allow -->\n").as_bytes(),
    );
    // Ignored by .gitignore, and a binary file: neither is reported.
    write(dir.path(), ".gitignore", b"build/\n");
    write(
        dir.path(),
        "build/out.txt",
        format!("{openai}\n").as_bytes(),
    );
    // A real binary (mostly control bytes), not text with a stray NUL.
    let mut binary: Vec<u8> = (0..2048u32).map(|i| (i % 9) as u8).collect();
    binary.extend_from_slice(openai.as_bytes());
    write(dir.path(), "image.bin", &binary);
    write(
        dir.path(),
        "README.md",
        b"Set OPENAI_API_KEY=sk-proj-your-key-here and ANTHROPIC_API_KEY=<your key>.\n",
    );

    let output = keyforge(dir.path(), &["scan"], None).await;
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{stdout}{}",
        text(&output.stderr)
    );
    for secret in [&openai, &anthropic, &kf] {
        assert!(
            !stdout.contains(secret.as_str()),
            "a secret was printed: {stdout}"
        );
    }
    assert!(
        stdout.contains(
            ".env:1:16: openai-project-key: OpenAI project, service-account or admin key"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("    secret: sk-proj-"), "{stdout}");
    assert!(
        stdout.contains("src/app.py:3:29: anthropic-api-key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notebook.ipynb:1:32: kf-virtual-key"),
        "{stdout}"
    );
    // The binary file is not scanned, and the summary says so.
    assert!(
        stdout.contains("not scanned: image.bin (binary)")
            && stdout
                .contains("3 secrets found; 1 input not scanned (1 binary (scan with --binary))."),
        "{stdout}"
    );
    assert!(
        !stdout.contains("build/out.txt")
            && !stdout.contains("image.bin:")
            && !stdout.contains("allowed.md")
    );
    assert!(
        !stdout.contains("README.md"),
        "placeholders are not secrets: {stdout}"
    );

    // --redact shows no character of any secret.
    let output = keyforge(dir.path(), &["scan", "--redact", ".env"], None).await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("    secret: [REDACTED] ({} chars)", openai.len())),
        "{stdout}"
    );
    assert!(!stdout.contains("sk-proj-"), "{stdout}");

    // --binary reads the binary file too; --show-secrets prints secrets.
    let output = keyforge(
        dir.path(),
        &["scan", "--binary", "--show-secrets", "image.bin"],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains(&openai));

    // A clean tree exits 0; a missing path or a broken rule file exits 2.
    let clean = tempfile::tempdir().unwrap();
    write(
        clean.path(),
        "main.rs",
        b"fn main() { println!(\"hello\"); }\n",
    );
    let output = keyforge(clean.path(), &["scan"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(text(&output.stdout).contains("No secrets found."));
    let output = keyforge(clean.path(), &["scan", "nowhere"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("nowhere: no such file or directory"));
    write(
        clean.path(),
        "rules.toml",
        b"[[rule]]\nid = \"bad\"\ndescription = \"x\"\nregex = \"(\"\n",
    );
    let output = keyforge(clean.path(), &["scan", "--rules", "rules.toml"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("rule `bad`: regex does not compile"),
        "{}",
        text(&output.stderr)
    );
}

#[tokio::test]
async fn json_and_sarif_describe_each_finding() {
    let dir = tempfile::tempdir().unwrap();
    let kf = kf_key();
    write(
        dir.path(),
        "config/app.yaml",
        format!("llm:\n  key: {kf}\n").as_bytes(),
    );
    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = &report["findings"][0];
    assert_eq!(finding["path"], "config/app.yaml");
    assert_eq!(finding["line"], 2);
    assert_eq!(finding["column"], 8);
    assert_eq!(finding["end_column"], 8 + kf.len());
    assert_eq!(finding["rule"], "kf-virtual-key");
    assert_eq!(finding["keyforge_key"], true);
    assert_eq!(
        finding["preview"],
        format!("kf_prod_{}…({} chars)", &kf[8..12], kf.len())
    );
    assert_eq!(finding["fingerprint"].as_str().unwrap().len(), 32);
    assert!(!output.stdout.windows(kf.len()).any(|w| w == kf.as_bytes()));

    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    assert_eq!(output.status.code(), Some(1));
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "keyforge");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert!(rules.len() >= 25);
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "kf-virtual-key");
    let index = usize::try_from(result["ruleIndex"].as_u64().unwrap()).unwrap();
    assert_eq!(rules[index]["id"], "kf-virtual-key");
    assert_eq!(result["level"], "error");
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], "config/app.yaml");
    assert_eq!(location["region"]["startLine"], 2);
    assert_eq!(location["region"]["startColumn"], 8);
    assert_eq!(
        result["partialFingerprints"]["keyforgeSecret/v2"],
        report["findings"][0]["fingerprint"]
    );
}

#[tokio::test]
async fn a_baseline_keeps_known_findings_from_blocking_new_commits() {
    let dir = tempfile::tempdir().unwrap();
    let old = openai_key();
    write(
        dir.path(),
        "legacy.py",
        format!("KEY = \"{old}\"\n").as_bytes(),
    );
    let output = keyforge(dir.path(), &["scan", "baseline", "create"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let baseline = text(&output.stdout);
    assert!(!baseline.contains(&old), "the baseline holds no secret");
    write(dir.path(), ".keyforge-baseline.json", baseline.as_bytes());

    let output = keyforge(
        dir.path(),
        &["scan", "--baseline", ".keyforge-baseline.json"],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));

    // The known secret moved: still known. A new one: reported.
    let new = anthropic_key();
    write(
        dir.path(),
        "legacy.py",
        format!("\n\nKEY = \"{old}\"\nOTHER = \"{new}\"\n").as_bytes(),
    );
    let output = keyforge(
        dir.path(),
        &["scan", "--baseline", ".keyforge-baseline.json"],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("legacy.py:4:") && stdout.contains("anthropic-api-key"),
        "{stdout}"
    );
    assert!(stdout.contains("1 secret found."), "{stdout}");
}

#[tokio::test]
async fn stdin_is_scanned_and_user_rules_add_to_the_built_in_ones() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("acme_{}", random_base62(32));
    let log = format!("2026-11-23 INFO calling acme with {token}\n");
    let output = keyforge(dir.path(), &["scan", "-"], Some(log.as_bytes())).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "no built-in rule knows acme_"
    );
    write(
        dir.path(),
        "acme.toml",
        b"[[rule]]\nid = 'acme-token'\ndescription = 'ACME token'\nkeywords = ['acme_']\nregex = '''\\b(acme_[A-Za-z0-9]{32})\\b'''\nentropy = 3.0\nfix = 'Rotate it in the ACME console.'\n",
    );
    let output = keyforge(
        dir.path(),
        &["scan", "--rules", "acme.toml", "-"],
        Some(log.as_bytes()),
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("-:1:35: acme-token: ACME token"),
        "{stdout}"
    );
    assert!(
        stdout.contains("fix: Rotate it in the ACME console."),
        "{stdout}"
    );
}

#[tokio::test]
async fn redact_scrubs_a_log_stream_and_keeps_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let kf = kf_key();
    let openai = openai_key();
    let mut log =
        format!("req 1 key={kf} status=200\nupstream said: invalid key {openai}\n").into_bytes();
    log.extend_from_slice(&[0xff, 0xfe, b' ', b'o', b'k', b'\n']);
    let output = keyforge(dir.path(), &["redact"], Some(&log)).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut expected = b"req 1 key=[REDACTED:kf-virtual-key] status=200\nupstream said: invalid key [REDACTED:openai-project-key]\n".to_vec();
    expected.extend_from_slice(&[0xff, 0xfe, b' ', b'o', b'k', b'\n']);
    assert_eq!(output.stdout, expected);
}

/// The project's own sources hold no secret: a corpus of ordinary code
/// (Rust, Python, TOML, Markdown, shell, YAML) yields zero findings, in the
/// tree and in every commit of its history. The built-in rules' examples
/// are the one allowlisted file.
#[tokio::test]
async fn the_projects_own_tree_and_history_are_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if root.join(".git").exists() {
        let output = keyforge(&root, &["scan", "--git"], None).await;
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    }
    let output = keyforge(&root, &["scan", "--stats"], None).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let stderr = text(&output.stderr);
    let files: u64 = stderr
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(files > 100, "{stderr}");
}

/// `git` in `dir` as a fixed author, ignoring the user's configuration.
fn git_command(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dev One")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev One")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    command
}

fn git(dir: &Path, args: &[&str]) {
    let status = git_command(dir, args).status().unwrap();
    assert!(status.success(), "git {args:?}");
}

fn head(dir: &Path) -> String {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    text(&output.stdout).trim().to_owned()
}

/// A key committed and then deleted is gone from the tree but not from
/// history: `--git` finds it, with the commit that introduced it.
#[tokio::test]
async fn git_history_finds_keys_deleted_long_ago_each_blob_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let key = openai_key();
    write(
        repo,
        "app/.env",
        format!("OPENAI_API_KEY={key}\n").as_bytes(),
    );
    write(
        repo,
        "copy/.env",
        format!("OPENAI_API_KEY={key}\n").as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "add config"]);
    let introduced = head(repo);
    git(repo, &["rm", "-q", "-r", "app", "copy"]);
    git(repo, &["commit", "-q", "-m", "remove config"]);
    write(repo, "README.md", b"nothing to see\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "docs"]);
    let docs = head(repo);

    let output = keyforge(repo, &["scan"], None).await;
    assert_eq!(output.status.code(), Some(0), "the tree is clean now");

    let output = keyforge(repo, &["scan", "--git", "--format", "json"], None).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    // Two paths, one blob: reported once, where it first appeared.
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["rule"], "openai-project-key");
    assert_eq!(findings[0]["path"], "app/.env");
    assert_eq!(findings[0]["commit"], introduced.as_str());
    assert_eq!(findings[0]["author"], "Dev One <dev@example.com>");

    let output = keyforge(repo, &["scan", "--git"], None).await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "    commit: {introduced} (Dev One <dev@example.com>, "
        )),
        "{stdout}"
    );

    // Only what came after the docs commit: nothing.
    let output = keyforge(repo, &["scan", "--git", ".", "--since", &docs], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    // Not a repository: exit 2.
    let plain = tempfile::tempdir().unwrap();
    let output = keyforge(plain.path(), &["scan", "--git"], None).await;
    assert_eq!(output.status.code(), Some(2));
}

/// The pre-commit hook: `keyforge hook install`, then a commit that adds a
/// key is refused (only what is staged counts), and a clean one passes.
#[tokio::test]
async fn the_pre_commit_hook_refuses_commits_that_add_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    write(repo, "main.py", b"print('hello')\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "start"]);

    let output = keyforge(repo, &["hook", "install"], None).await;
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(repo.join(".git/hooks/pre-commit").exists());
    // Installing again is fine (it is ours); someone else's hook is kept.
    let output = keyforge(repo, &["hook", "install"], None).await;
    assert!(output.status.success());

    let key = anthropic_key();
    write(repo, "config.py", format!("KEY = \"{key}\"\n").as_bytes());
    // Unstaged: not part of the commit, not reported.
    let output = keyforge(repo, &["scan", "--staged"], None).await;
    assert_eq!(output.status.code(), Some(0));
    git(repo, &["add", "config.py"]);
    let output = keyforge(repo, &["scan", "--staged"], None).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("config.py:1:8: anthropic-api-key"));

    let commit = git_command(repo, &["commit", "-q", "-m", "oops"])
        .output()
        .unwrap();
    assert!(!commit.status.success(), "the hook must refuse the commit");
    // Git passes a hook's output on to its own stderr.
    let said = format!("{}{}", text(&commit.stdout), text(&commit.stderr));
    assert!(said.contains("anthropic-api-key"), "{said}");
    assert!(!said.contains(&key), "{said}");

    write(
        repo,
        "config.py",
        b"import os\nKEY = os.environ[\"ANTHROPIC_API_KEY\"]\n",
    );
    git(repo, &["add", "config.py"]);
    git(
        repo,
        &["commit", "-q", "-m", "read the key from the environment"],
    );
}

fn tar_bytes(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A `docker save`-style archive: a key added by the first layer and
/// deleted by the second is still found (in the first), as are keys in a
/// gzip-compressed OCI layer and in the image config's `Env`.
#[tokio::test]
async fn image_archives_are_scanned_layer_by_layer() {
    let dir = tempfile::tempdir().unwrap();
    let deleted = openai_key();
    let in_gzip_layer = anthropic_key();
    let in_env = kf_key();
    let first = tar_bytes(&[
        ("app/main.py", b"print('hi')\n".as_slice()),
        ("app/.env", format!("OPENAI_API_KEY={deleted}\n").as_bytes()),
    ]);
    let second = tar_bytes(&[("app/.wh..env", b"".as_slice())]);
    let third = gzip(&tar_bytes(&[(
        "etc/llm.yaml",
        format!("anthropic:\n  key: {in_gzip_layer}\n").as_bytes(),
    )]));
    let config = format!(
        "{{\"config\":{{\"Env\":[\"PATH=/usr/bin\",\"KEYFORGE_KEY={in_env}\"]}},\"history\":[]}}"
    );
    let image = tar_bytes(&[
        ("manifest.json", b"[{\"Config\":\"config.json\",\"Layers\":[\"l1/layer.tar\",\"l2/layer.tar\",\"blobs/sha256/l3\"]}]".as_slice()),
        ("config.json", config.as_bytes()),
        ("l1/layer.tar", &first),
        ("l2/layer.tar", &second),
        ("blobs/sha256/l3", &third),
    ]);
    std::fs::write(dir.path().join("image.tar"), &image).unwrap();

    let output = keyforge(
        dir.path(),
        &["scan", "--image", "image.tar", "--format", "json"],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        found.contains(&(
            "image.tar:l1/layer.tar:/app/.env".into(),
            "openai-project-key".into()
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&(
            "image.tar:blobs/sha256/l3:/etc/llm.yaml".into(),
            "anthropic-api-key".into()
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&("image.tar:config.json".into(), "kf-virtual-key".into())),
        "{found:?}"
    );
    assert_eq!(found.len(), 3, "{found:?}");

    std::fs::write(dir.path().join("not.tar"), b"hello").unwrap();
    let output = keyforge(dir.path(), &["scan", "--image", "not.tar"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("is not a tar archive"));
}

/// `--format sarif` validates against the SARIF 2.1.0 JSON schema (the
/// test command installs jsonschema and the schema; under CI=true this test
/// never skips).
#[tokio::test]
async fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let (Some(python), Some(schema)) = (
        std::env::var_os("KEYFORGE_TEST_PYTHON"),
        std::env::var_os("KEYFORGE_TEST_SARIF_SCHEMA"),
    ) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but KEYFORGE_TEST_PYTHON or KEYFORGE_TEST_SARIF_SCHEMA is not set (see scripts/test)"
        );
        eprintln!("SKIPPED: run scripts/test to install jsonschema and the SARIF schema");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "src/a b.py",
        format!("KEY = \"{}\"\n", anthropic_key()).as_bytes(),
    );
    write(
        dir.path(),
        "config.yaml",
        format!("token: {}\n", kf_key()).as_bytes(),
    );
    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    assert_eq!(output.status.code(), Some(1));
    std::fs::write(dir.path().join("out.sarif"), &output.stdout).unwrap();
    let check = std::process::Command::new(python)
        .arg("-c")
        .arg(
            "import json, sys, jsonschema\n\
             schema = json.load(open(sys.argv[1]))\n\
             log = json.load(open(sys.argv[2]))\n\
             jsonschema.Draft202012Validator(schema).validate(log)\n\
             print('valid', len(log['runs'][0]['results']))",
        )
        .arg(schema)
        .arg(dir.path().join("out.sarif"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        text(&check.stdout),
        text(&check.stderr)
    );
    assert_eq!(text(&check.stdout).trim(), "valid 2");
}

/// Fixed fake keys, assembled at run time from pieces (the source never
/// holds one whole), so the output is the same every run.
fn fixed_fixture(dir: &Path) {
    let openai = format!(
        "sk-{}{}{}",
        "Q7wE9rT2yU4iO6pA8sD1", "T3BlbkFJ", "fG3hJ5kL7zX9cV2bN4mQ"
    );
    let stripe = ["sk", "live", "Zq81mK0pLr7TbW3xQ2vN9cYh"].join("_");
    write(
        dir,
        "app/settings.py",
        format!("DEBUG = False\nOPENAI_API_KEY = \"{openai}\"\n").as_bytes(),
    );
    write(
        dir,
        "deploy/billing.env",
        format!("STRIPE_KEY={stripe}\n").as_bytes(),
    );
}

/// Compares `actual` with the snapshot file `name` (rewritten instead when
/// KEYFORGE_UPDATE_SNAPSHOTS=1).
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("KEYFORGE_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual, expected,
        "{name} changed; if intended, rerun with KEYFORGE_UPDATE_SNAPSHOTS=1"
    );
}

#[tokio::test]
async fn text_json_and_sarif_output_match_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    fixed_fixture(dir.path());
    for (format, name) in [
        ("text", "scan.txt"),
        ("json", "scan.json"),
        ("sarif", "scan.sarif"),
    ] {
        // Fingerprints are keyed by the repository's salt: a fixed one.
        let output = keyforge_with(
            dir.path(),
            &["scan", "--format", format],
            None,
            &[("KEYFORGE_SCAN_SALT", "snapshot-salt")],
        )
        .await;
        assert_eq!(output.status.code(), Some(1), "{format}");
        let mut stdout = text(&output.stdout);
        assert!(
            !stdout.contains("Q7wE9rT2yU4iO6pA8sD1T3BlbkFJ"),
            "{format} showed a secret"
        );
        // The temporary directory's name changes every run.
        let root = format!("file://{}/", dir.path().canonicalize().unwrap().display());
        stdout = stdout.replace(&root, "file:///SRCROOT/");
        snapshot(name, &stdout);
    }
}

/// A fake private key block (PKCS#8 markers, random base64 body), built
/// at run time.
fn private_key_block() -> String {
    let kind = ["PRIVATE", "KEY"].join(" ");
    let body: Vec<String> = (0..13).map(|_| random_base62(64)).collect();
    format!(
        "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
        body.join("\n")
    )
}

/// Nothing is skipped in silence: a key at the end of a file larger than
/// one scanning piece is found at its line, a stray NUL does not make a
/// file binary, UTF-16 text is read, and what is not scanned is counted in
/// every format (and fails the scan under --fail-on-skip).
#[tokio::test]
async fn large_files_stray_nuls_and_utf16_are_scanned_and_skips_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (late, nul, wide) = (openai_key(), anthropic_key(), kf_key());
    // 40 MiB of log lines (more than one 32 MiB piece), the key last.
    let line = "2026-11-23T10:15:02Z INFO GET /v1/models 200 12ms\n";
    let lines = 40 * 1024 * 1024 / line.len();
    let mut log = line.repeat(lines);
    log.push_str(&format!("2026-11-23T10:15:03Z WARN rejected {late}\n"));
    write(dir.path(), "big.log", log.as_bytes());
    let mut env = b"AWS_REGION=eu-west-1\n\0\n".to_vec();
    env.extend_from_slice(format!("ANTHROPIC_API_KEY={nul}\n").as_bytes());
    write(dir.path(), "stray-nul.env", &env);
    let mut utf16 = vec![0xff, 0xfe];
    for unit in format!("KEYFORGE_KEY={wide}\r\n").encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    write(dir.path(), "wide.env", &utf16);
    let binary: Vec<u8> = (0..4096u32).map(|i| (i % 5) as u8).collect();
    write(dir.path(), "blob.bin", &binary);

    let output = keyforge(dir.path(), &["scan"], None).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("big.log:{}:", lines + 1)),
        "{stdout}"
    );
    assert!(stdout.contains("stray-nul.env:3:"), "{stdout}");
    assert!(
        stdout.contains("wide.env:1:") && stdout.contains("kf-virtual-key"),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 secrets found; 1 input not scanned (1 binary (scan with --binary))."),
        "{stdout}"
    );

    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["skipped"]["total"], 1, "{report}");
    assert_eq!(report["skipped"]["inputs"][0]["path"], "blob.bin");
    assert_eq!(report["skipped"]["inputs"][0]["reason"], "binary");

    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    assert!(
        notes
            .iter()
            .any(|note| note["message"]["text"] == "not scanned: blob.bin (binary)"),
        "{sarif}"
    );

    // --fail-on-skip: exit 2 even when nothing is found.
    std::fs::remove_file(dir.path().join("big.log")).unwrap();
    std::fs::remove_file(dir.path().join("stray-nul.env")).unwrap();
    std::fs::remove_file(dir.path().join("wide.env")).unwrap();
    let output = keyforge(dir.path(), &["scan"], None).await;
    assert_eq!(output.status.code(), Some(0));
    assert!(
        text(&output.stdout).contains("No secrets found in what was scanned; 1 input not scanned"),
        "{}",
        text(&output.stdout)
    );
    let output = keyforge(dir.path(), &["scan", "--fail-on-skip"], None).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("1 input(s) not scanned (--fail-on-skip)"));

    // A size cap the user sets is a counted skip too.
    write(dir.path(), "big.log", log.as_bytes());
    let output = keyforge(dir.path(), &["scan", "--max-file-size", "1000000"], None).await;
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("not scanned: big.log (over --max-file-size)"),
        "{stdout}"
    );

    // Stdin has no size limit either: 40 MiB, the key last.
    let output = keyforge(dir.path(), &["scan", "-"], Some(log.as_bytes())).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("-:{}:", lines + 1)), "{stdout}");
}

/// A key committed on a branch that was then deleted lives on in the
/// reflog; a commit no ref or reflog reaches, and a blob staged and then
/// unstaged, are found with --all-objects.
#[tokio::test]
async fn git_history_includes_the_reflog_and_with_all_objects_dangling_objects() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    write(repo, "README.md", b"hello\n");
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "start"]);
    let branch_key = openai_key();
    git(repo, &["checkout", "-q", "-b", "feature"]);
    write(
        repo,
        "feature.env",
        format!("OPENAI_API_KEY={branch_key}\n").as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "wip"]);
    git(repo, &["checkout", "-q", "main"]);
    git(repo, &["branch", "-q", "-D", "feature"]);

    // A dangling commit: made with commit-tree, never on a ref or a reflog.
    let dangling_key = anthropic_key();
    write(
        repo,
        "dangling.env",
        format!("ANTHROPIC_API_KEY={dangling_key}\n").as_bytes(),
    );
    git(repo, &["add", "dangling.env"]);
    let tree = git_command(repo, &["write-tree"]).output().unwrap();
    let tree = text(&tree.stdout).trim().to_owned();
    let commit = git_command(repo, &["commit-tree", &tree, "-m", "lost"])
        .output()
        .unwrap();
    assert!(commit.status.success());
    git(repo, &["reset", "-q"]);
    std::fs::remove_file(repo.join("dangling.env")).unwrap();
    // A blob staged, then unstaged: in no commit at all.
    let staged_key = kf_key();
    write(repo, "staged.env", format!("KF={staged_key}\n").as_bytes());
    git(repo, &["add", "staged.env"]);
    git(repo, &["reset", "-q"]);
    std::fs::remove_file(repo.join("staged.env")).unwrap();

    let output = keyforge(repo, &["scan", "--git", "--format", "json"], None).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let paths: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["feature.env"],
        "the reflog is scanned by default: {report}"
    );

    let output = keyforge(
        repo,
        &["scan", "--git", "--all-objects", "--format", "json"],
        None,
    )
    .await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut paths: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["(unreachable blob)", "dangling.env", "feature.env"],
        "{report}"
    );
}

/// `scan baseline create --git` records history, and `scan --git
/// --baseline` accepts it; a scan report given as a baseline is refused as
/// exactly that.
/// Issue #16, path-agnostic baselines: a baselined secret copied into a
/// new file is reported there (the original stays known, from any
/// directory of the repository); `--git` records the path and commit where
/// each secret was first seen; an old (version 2) baseline still matches
/// anywhere, and the scan says so once and how to recreate it.
#[tokio::test]
async fn a_baselined_secret_copied_into_a_new_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let key = openai_key();
    write(
        repo,
        "app/old.env",
        format!("OPENAI_API_KEY={key}\n").as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "old"]);
    let first_commit = head(repo);
    let output = keyforge(repo, &["scan", "baseline", "create"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let baseline: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(baseline["version"], 3, "{baseline}");
    assert_eq!(baseline["findings"][0]["path"], "app/old.env", "{baseline}");
    write(repo, "../baseline.json", &output.stdout);
    let baseline_path = repo.join("../baseline.json");
    let baseline_path = baseline_path.to_str().unwrap();

    write(
        repo,
        "app/copy.env",
        format!("\nOPENAI_API_KEY={key}\n").as_bytes(),
    );
    for from in [repo.to_path_buf(), repo.join("app")] {
        let output = keyforge(&from, &["scan", "--baseline", baseline_path], None).await;
        assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
        let stdout = text(&output.stdout);
        assert!(stdout.contains("copy.env:2:"), "{stdout}");
        assert!(!stdout.contains("old.env"), "{stdout}");
        assert!(stdout.contains("1 secret found."), "{stdout}");
        assert!(text(&output.stderr).is_empty(), "{}", text(&output.stderr));
    }

    // History: each secret at the path and commit where it was first seen.
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "copy"]);
    let output = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    let history: Value = serde_json::from_slice(&output.stdout).unwrap();
    let entries = history["findings"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{history}");
    assert_eq!(entries[1]["path"], "app/old.env");
    assert_eq!(entries[1]["commit"], first_commit.as_str());
    assert_eq!(entries[0]["path"], "app/copy.env");

    // A version 2 baseline accepts the copy, as it did, and says why once.
    let mut old = baseline.clone();
    old["version"] = 2.into();
    write(repo, "../v2.json", old.to_string().as_bytes());
    let v2_path = repo.join("../v2.json");
    let output = keyforge(
        repo,
        &["scan", "--baseline", v2_path.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr.matches("matches a known secret at any path").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("keyforge scan baseline create"), "{stderr}");
}

/// Issue #16, forged text output: file names holding a newline, a carriage
/// return, ESC, bidi overrides or bytes that are not UTF-8 print as one
/// escaped line each in text; JSON keeps their exact bytes; SARIF URIs are
/// percent-encoded.
#[tokio::test]
async fn file_names_cannot_forge_findings_and_are_reported_exactly() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let names: [&[u8]; 3] = [
        b"a.env\nfake.env:1:1: openai-api-key: OpenAI API key\r\x1b[31m",
        "b \u{202e}vne.txt#?%".as_bytes(),
        b"c\xff\xfe.env",
    ];
    for name in names {
        let path = dir.path().join(std::ffi::OsStr::from_bytes(name));
        std::fs::write(path, format!("OPENAI_API_KEY={}\n", openai_key())).unwrap();
    }
    let output = keyforge(dir.path(), &["scan"], None).await;
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    let headers: Vec<&str> = stdout
        .lines()
        .filter(|line| !line.starts_with("    "))
        .collect();
    assert_eq!(headers.len(), 4, "{stdout}");
    for (header, name) in headers.iter().zip([
        "a.env\\nfake.env:1:1: openai-api-key: OpenAI API key\\r\\x1b[31m",
        "b \\u{202e}vne.txt#?%",
        "c\\xff\\xfe.env",
    ]) {
        assert!(
            header.starts_with(&format!("{name}:1:16: openai-")),
            "{stdout}"
        );
    }
    assert_eq!(headers[3], "3 secrets found.");
    for bad in ['\r', '\x1b', '\u{202e}', '\u{fffd}'] {
        assert!(!stdout.contains(bad), "{bad:?} in {stdout}");
    }
    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let exact: Vec<Option<&str>> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["path_base64"].as_str())
        .collect();
    assert_eq!(exact, [None, None, Some("Y//+LmVudg==")], "{report}");
    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let uris: Vec<&str> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| {
            result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(
        uris,
        [
            "a.env%0Afake.env%3A1%3A1%3A%20openai-api-key%3A%20OpenAI%20API%20key%0D%1B%5B31m",
            "b%20%E2%80%AEvne.txt%23%3F%25",
            "c%FF%FE.env",
        ]
    );
}

#[tokio::test]
async fn a_baseline_of_history_is_created_with_git_and_a_report_is_not_a_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    write(
        repo,
        "old.env",
        format!("OPENAI_API_KEY={}\n", openai_key()).as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "old"]);
    git(repo, &["rm", "-q", "old.env"]);
    git(repo, &["commit", "-q", "-m", "gone"]);

    let output = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let baseline: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        baseline["findings"].as_array().unwrap().len(),
        1,
        "{baseline}"
    );
    write(repo, "../history-baseline.json", &output.stdout);
    let baseline_path = repo.join("../history-baseline.json");
    let baseline_path = baseline_path.to_str().unwrap();
    let output = keyforge(repo, &["scan", "--git", "--baseline", baseline_path], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));

    // A new key in history is still reported.
    write(
        repo,
        "new.env",
        format!("ANTHROPIC_API_KEY={}\n", anthropic_key()).as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "new"]);
    let output = keyforge(repo, &["scan", "--git", "--baseline", baseline_path], None).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stdout).contains("new.env:1:"));

    // Reports are not baselines.
    for format in ["json", "sarif"] {
        let report = keyforge(repo, &["scan", "--git", "--format", format], None).await;
        write(repo, "../report.json", &report.stdout);
        let report_path = repo.join("../report.json");
        let output = keyforge(
            repo,
            &["scan", "--baseline", report_path.to_str().unwrap()],
            None,
        )
        .await;
        assert_eq!(output.status.code(), Some(2), "{format}");
        assert!(
            text(&output.stderr).contains("scan report")
                && text(&output.stderr).contains("not a baseline"),
            "{format}: {}",
            text(&output.stderr)
        );
    }
}

/// SARIF as GitHub's upload takes it: URIs relative to %SRCROOT% (given in
/// originalUriBaseIds), a multi-line secret's region ending on its last
/// line, stdin named as such, columns from 1.
#[tokio::test]
async fn sarif_locations_are_relative_to_srcroot_and_span_lines() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_key_block();
    write(dir.path(), "deploy/id.pem", format!("\n{key}").as_bytes());
    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let run = &sarif["runs"][0];
    let location = &run["results"][0]["locations"][0]["physicalLocation"];
    assert_eq!(
        location["artifactLocation"]["uri"], "deploy/id.pem",
        "{sarif}"
    );
    assert_eq!(location["artifactLocation"]["uriBaseId"], "%SRCROOT%");
    let root = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
        .as_str()
        .unwrap();
    assert!(
        root.starts_with("file:///") && root.ends_with('/'),
        "{root}"
    );
    let region = &location["region"];
    assert_eq!(region["startLine"], 2);
    assert_eq!(region["startColumn"], 1);
    assert_eq!(region["endLine"], 16, "{region}");
    assert_eq!(region["endColumn"], 26, "{region}");
    assert!(
        !text(&output.stdout).contains(&key[40..80]),
        "no body line in the log"
    );

    let output = keyforge(
        dir.path(),
        &["scan", "--format", "sarif", "-"],
        Some(key.as_bytes()),
    )
    .await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let artifact =
        &sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
    assert_eq!(artifact["uri"], "stdin", "{sarif}");
}

/// What `scan -` finds on a stream is gone from `redact`'s output, a
/// private key's body lines and a base64-encoded key included.
#[tokio::test]
async fn redact_removes_everything_scan_finds_multi_line_and_encoded_too() {
    let dir = tempfile::tempdir().unwrap();
    let pem = private_key_block();
    let openai = openai_key();
    // Standard base64 of the key, as Kubernetes stores Secret.data.
    let encoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(openai.as_bytes())
    };
    let log = format!(
        "boot\nloaded key:\n{pem}kind: Secret\ndata:\n  OPENAI: {encoded}\nurl=postgres://app:{}@db:5432/app\ndone\n",
        random_base62(16)
    );
    let scanned = keyforge(
        dir.path(),
        &["scan", "-", "--format", "json"],
        Some(log.as_bytes()),
    )
    .await;
    let report: Value = serde_json::from_slice(&scanned.stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 3, "{report}");
    let output = keyforge(dir.path(), &["redact"], Some(log.as_bytes())).await;
    let redacted = text(&output.stdout);
    for body_line in pem.lines().skip(1).take(13) {
        assert!(!redacted.contains(body_line), "{redacted}");
    }
    assert!(
        !redacted.contains(&encoded) && !redacted.contains(&openai),
        "{redacted}"
    );
    assert!(
        redacted.starts_with("boot\nloaded key:\n[REDACTED:private-key]\n"),
        "{redacted}"
    );
    assert!(redacted.ends_with("done\n"));
    let rescanned = keyforge(dir.path(), &["scan", "-"], Some(redacted.as_bytes())).await;
    assert_eq!(
        rescanned.status.code(),
        Some(0),
        "{}",
        text(&rescanned.stdout)
    );
}

/// The findings of a JSON report as (path, rule) pairs, sorted.
fn found_in(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Issue #16, gaps 1-5 and 10, as a user meets them: .netrc entries in any
/// file, Python bytes literals, fish and csh variables, base64 of base64
/// and URL-safe base64 in a Secret, and a random token that merely holds a
/// placeholder word are found; lookup-key names with ordinary values and
/// documented examples are not.
#[tokio::test]
async fn issue_16_kinds_are_found_and_their_decoys_are_not() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let dir = tempfile::tempdir().unwrap();
    let letters: String = random_base62(80)
        .chars()
        .filter(char::is_ascii_lowercase)
        .take(12)
        .collect();
    write(
        dir.path(),
        "ci/netrc.txt",
        format!("machine git.example.org\n  login ci\n  password {letters}\n").as_bytes(),
    );
    write(
        dir.path(),
        "Dockerfile",
        format!(
            "RUN echo \"machine h.example.org login u password {}\" > ~/.netrc\n",
            random_base62(14)
        )
        .as_bytes(),
    );
    write(
        dir.path(),
        "app/settings.py",
        format!("SECRET_KEY = b'{}'\n", random_base62(40)).as_bytes(),
    );
    let aws = format!("{}/+", random_base62(38));
    write(
        dir.path(),
        "config.fish",
        format!(
            "set -gx SERVICE_API_TOKEN {}\nset -Ux AWS_SECRET_ACCESS_KEY {aws}\n",
            random_base62(40)
        )
        .as_bytes(),
    );
    write(
        dir.path(),
        "home/.cshrc",
        format!("setenv API_KEY {}\n", random_base62(40)).as_bytes(),
    );
    // A short placeholder word inside a random key is chance: the key is
    // reported (a long one written in one case, `EXAMPLE`, marks a stand-in).
    let planted = format!("{}{}{}", random_base62(18), "yOUr", random_base62(22));
    write(
        dir.path(),
        "app/tokens.env",
        format!("API_TOKEN={planted}\n").as_bytes(),
    );
    let key = openai_key();
    let twice = STANDARD.encode(STANDARD.encode(key.as_bytes()));
    let url_safe = URL_SAFE_NO_PAD.encode(format!("{key}?>").as_bytes());
    write(
        dir.path(),
        "k8s/secret.yaml",
        format!("kind: Secret\ndata:\n  A: {twice}\n  B: {url_safe}\n").as_bytes(),
    );
    // Decoys.
    let uuid = "7f9c2ba4-e88f-41ea-adc1-0242ac120002";
    write(
        dir.path(),
        "app/models.py",
        format!(
            "idempotency_key = \"{uuid}\"\nkey_name = \"prod-deploy-keypair-2024-eu\"\nkeyboard: us-intl-with-dead-keys-v2\ncache_key = \"{}\"\nsort_key = \"created_at_desc_2024\"\n",
            "a3f5c9e1d2b4f6a8c0e2d4f6a8b0c2e4d6f8a0b2"
        )
        .as_bytes(),
    );
    write(
        dir.path(),
        "docs/aws.md",
        format!(
            "aws_access_key_id = {}\nAPI_KEY=sk-example-key\nTOKEN=your-example-token\nPASSWORD=changeme\n",
            ["AKIA", "IOSFODNN7", "EXAMPLE"].concat()
        )
        .as_bytes(),
    );

    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let pair = |path: &str, rule: &str| (path.to_owned(), rule.to_owned());
    assert_eq!(
        found_in(&report),
        [
            pair("Dockerfile", "netrc-password"),
            pair("app/settings.py", "generic-api-key"),
            pair("app/tokens.env", "generic-api-key"),
            pair("ci/netrc.txt", "netrc-password"),
            pair("config.fish", "aws-secret-access-key"),
            pair("config.fish", "shell-variable-secret"),
            pair("home/.cshrc", "shell-variable-secret"),
            pair("k8s/secret.yaml", "openai-project-key"),
            pair("k8s/secret.yaml", "openai-project-key"),
        ],
        "{report}"
    );
    // Encoded secrets are reported at their encoded span.
    let stdout = text(&output.stdout);
    assert!(
        !stdout.contains(&key) && !stdout.contains(&letters),
        "{stdout}"
    );
}

/// Gap 6: symbolic links (not followed), FIFOs and the like are counted
/// as not scanned, with their reason, in every format.
#[cfg(unix)]
#[tokio::test]
async fn links_and_special_files_are_counted_as_skips_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "real.txt", b"hello\n");
    std::os::unix::fs::symlink("real.txt", dir.path().join("link.txt")).unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe"))
        .status()
        .unwrap();
    assert!(fifo.success());

    let output = keyforge(dir.path(), &["scan"], None).await;
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("not scanned: link.txt (symbolic link, not followed)")
            && stdout.contains("not scanned: pipe (not a regular file: FIFO, socket or device)")
            && stdout.contains("No secrets found in what was scanned; 2 inputs not scanned (1 symbolic link (not followed), 1 not a regular file)."),
        "{stdout}"
    );
    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["skipped"]["total"], 2, "{report}");
    assert_eq!(report["skipped"]["symlink"], 1);
    assert_eq!(report["skipped"]["special"], 1);
    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let notes = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"]
        .as_array()
        .unwrap();
    for expected in [
        "not scanned: link.txt (symbolic link, not followed)",
        "not scanned: pipe (not a regular file: FIFO, socket or device)",
    ] {
        assert!(
            notes.iter().any(|note| note["message"]["text"] == expected),
            "{sarif}"
        );
    }
    let output = keyforge(dir.path(), &["scan", "--fail-on-skip"], None).await;
    assert_eq!(output.status.code(), Some(2));
}

/// Gap 7: a UTF-16 file's finding is located in characters (text, JSON)
/// and in code points in SARIF, as its `columnKind` says.
#[tokio::test]
async fn utf16_columns_count_characters() {
    let dir = tempfile::tempdir().unwrap();
    let key = kf_key();
    let mut wide = vec![0xff, 0xfe];
    for unit in format!("# é\r\n  KEYFORGE_KEY={key}\r\n").encode_utf16() {
        wide.extend_from_slice(&unit.to_le_bytes());
    }
    write(dir.path(), "wide.env", &wide);
    let output = keyforge(dir.path(), &["scan"], None).await;
    assert!(
        text(&output.stdout).contains("wide.env:2:16: kf-virtual-key"),
        "{}",
        text(&output.stdout)
    );
    let output = keyforge(dir.path(), &["scan", "--format", "json"], None).await;
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = &report["findings"][0];
    assert_eq!(
        (&finding["column"], &finding["end_column"]),
        (&Value::from(16), &Value::from(16 + key.len())),
        "{report}"
    );
    let output = keyforge(dir.path(), &["scan", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let run = &sarif["runs"][0];
    assert_eq!(run["columnKind"], "unicodeCodePoints");
    let region = &run["results"][0]["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startColumn"], 16, "{region}");
    assert_eq!(region["endColumn"], 16 + key.len(), "{region}");
}

/// Gap 8: files outside the working directory (`scan ../other`, an
/// absolute path elsewhere) get absolute `file://` URIs, never `..`.
#[tokio::test]
async fn sarif_uris_outside_the_root_are_absolute_file_uris() {
    let dir = tempfile::tempdir().unwrap();
    let (work, other) = (dir.path().join("work"), dir.path().join("other"));
    write(&work, "in.env", format!("KF={}\n", kf_key()).as_bytes());
    write(&other, "out.env", format!("KF={}\n", kf_key()).as_bytes());
    let absolute = other.join("out.env").canonicalize().unwrap();
    for target in ["../other", absolute.to_str().unwrap()] {
        let output = keyforge(&work, &["scan", "--format", "sarif", ".", target], None).await;
        let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut uris: Vec<String> = sarif["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| {
                result["locations"][0]["physicalLocation"]["artifactLocation"].to_string()
            })
            .collect();
        uris.sort();
        assert_eq!(
            uris,
            [
                format!("{{\"uri\":\"file://{}\"}}", absolute.display()),
                "{\"uri\":\"in.env\",\"uriBaseId\":\"%SRCROOT%\"}".to_owned(),
            ],
            "{target}"
        );
    }
}

/// Gap 9: fingerprints are keyed by the repository's salt: stable across
/// runs, not the unsalted hash of the secret, changed by
/// KEYFORGE_SCAN_SALT; a baseline holds only a check of its salt, one made
/// with another salt is refused, and a version 1 baseline still works
/// with a warning.
#[tokio::test]
async fn fingerprints_are_keyed_and_old_baselines_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let password = random_base62(10);
    write(
        repo,
        "db.env",
        format!("DB_PASSWORD={password}\n").as_bytes(),
    );
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", "start"]);
    let fingerprint = |output: &Output| {
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        report["findings"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = keyforge(repo, &["scan", "--format", "json"], None).await;
    let second = keyforge(repo, &["scan", "--format", "json"], None).await;
    assert_eq!(fingerprint(&first), fingerprint(&second));
    let unsalted = keyforge_scan::legacy_fingerprint("password-assignment", password.as_bytes());
    assert_ne!(fingerprint(&first), unsalted);
    let salted = keyforge_with(
        repo,
        &["scan", "--format", "json"],
        None,
        &[("KEYFORGE_SCAN_SALT", "ci-secret-salt")],
    )
    .await;
    assert_ne!(fingerprint(&first), fingerprint(&salted));

    let created = keyforge(repo, &["scan", "baseline", "create"], None).await;
    let baseline: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(baseline["version"], 3, "{baseline}");
    assert!(baseline["salt_check"].is_string(), "{baseline}");
    write(repo, "../baseline.json", &created.stdout);
    let baseline_path = repo.join("../baseline.json");
    let baseline_path = baseline_path.to_str().unwrap();
    let output = keyforge(repo, &["scan", "--baseline", baseline_path], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    let output = keyforge_with(
        repo,
        &["scan", "--baseline", baseline_path],
        None,
        &[("KEYFORGE_SCAN_SALT", "ci-secret-salt")],
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("made with another salt"),
        "{}",
        text(&output.stderr)
    );

    let v1 = format!(
        "{{\"version\": 1, \"findings\": [{{\"fingerprint\": \"{unsalted}\", \"rule\": \"password-assignment\", \"path\": \"db.env\", \"line\": 1}}]}}"
    );
    write(repo, "../v1.json", v1.as_bytes());
    let v1_path = repo.join("../v1.json");
    let output = keyforge(
        repo,
        &["scan", "--baseline", v1_path.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("version 1 baseline"),
        "{}",
        text(&output.stderr)
    );
}

/// Issue #16: keys in commit messages and annotated tag messages were not
/// read by `scan --git`. They are reported at `(commit message)` and
/// `(tag message: NAME)`, with the commit's (or the tag object's) id,
/// author and date; a lightweight tag adds nothing (its commit's message
/// is read once).
#[tokio::test]
async fn git_scans_commit_and_tag_messages() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    write(repo, "README.md", b"hello\n");
    git(repo, &["add", "."]);
    let (in_commit, in_tag) = (openai_key(), anthropic_key());
    git(
        repo,
        &[
            "commit",
            "-q",
            "-m",
            &format!("rotate\n\nold key: {in_commit}\n"),
        ],
    );
    let commit = head(repo);
    git(
        repo,
        &[
            "tag",
            "-a",
            "v1.0",
            "-m",
            &format!("release\nANTHROPIC_API_KEY={in_tag}"),
        ],
    );
    git(repo, &["tag", "light"]);
    let tag_object = {
        let output = git_command(repo, &["rev-parse", "v1.0"]).output().unwrap();
        text(&output.stdout).trim().to_owned()
    };
    assert_ne!(tag_object, commit);

    let output = keyforge(repo, &["scan", "--git", "--format", "json"], None).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let found: Vec<(String, String, String, u64)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            (
                finding["path"].as_str().unwrap().to_owned(),
                finding["rule"].as_str().unwrap().to_owned(),
                finding["commit"].as_str().unwrap().to_owned(),
                finding["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "(commit message)".to_owned(),
                "openai-project-key".to_owned(),
                commit.clone(),
                3
            ),
            (
                "(tag message: v1.0)".to_owned(),
                "anthropic-api-key".to_owned(),
                tag_object.clone(),
                2
            ),
        ],
        "{report}"
    );
    // SARIF: a message is no file, but GitHub's upload refuses a result
    // without an artifact location, so it keeps a placeholder artifact
    // under `%SRCROOT%` and gains a logical location naming the commit (or
    // tag object), its line in the location's message.
    let output = keyforge(repo, &["scan", "--git", "--format", "sarif"], None).await;
    let sarif: Value = serde_json::from_slice(&output.stdout).unwrap();
    let locations: Vec<&Value> = sarif["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| &result["locations"][0])
        .collect();
    assert_eq!(locations.len(), 2, "{sarif}");
    for (location, (object, what, line)) in locations.iter().zip([
        (&commit, format!("message of commit {commit}"), 3),
        (
            &tag_object,
            format!("message of tag v1.0 (object {tag_object})"),
            2,
        ),
    ]) {
        let artifact = &location["physicalLocation"]["artifactLocation"];
        assert_eq!(artifact["uriBaseId"], "%SRCROOT%", "{location}");
        assert!(
            artifact["uri"]
                .as_str()
                .is_some_and(|uri| uri.starts_with("%28")
                    && uri.ends_with("%29")
                    && !uri.contains('/')),
            "{location}"
        );
        let logical = &location["logicalLocations"][0];
        assert_eq!(logical["name"], object.as_str(), "{location}");
        assert_eq!(logical["fullyQualifiedName"], what.as_str(), "{location}");
        let message = location["message"]["text"].as_str().unwrap();
        assert!(message.starts_with(&format!("line {line}, ")), "{message}");
    }
    let output = keyforge(repo, &["scan", "--git"], None).await;
    let stdout = text(&output.stdout);
    assert!(stdout.contains("(commit message):3:"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "    commit: {commit} (Dev One <dev@example.com>, "
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(&in_commit) && !stdout.contains(&in_tag));
    // A history baseline takes messages in too.
    let outside = tempfile::tempdir().unwrap();
    let created = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    let baseline_path = outside.path().join("baseline.json");
    std::fs::write(&baseline_path, &created.stdout).unwrap();
    let output = keyforge(
        repo,
        &[
            "scan",
            "--git",
            "--baseline",
            baseline_path.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    // --staged reads no message.
    let output = keyforge(repo, &["scan", "--staged"], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
}

/// Issue #16 output faults: `--stats` with `--fail-on-skip` ends its line;
/// a baseline outside the repository works for `scan --git` run from a
/// subdirectory; a baseline made before a repository's first commit still
/// matches after it (the salt does not change under it); and a file name
/// that is not UTF-8 round-trips through a baseline of history exactly
/// (two names lossy as one stay two).
#[tokio::test]
async fn stats_lines_baselines_from_subdirectories_first_commits_and_byte_names() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let outside = tempfile::tempdir().unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    let key = openai_key();
    write(
        repo,
        "app/sub/.env",
        format!("OPENAI_API_KEY={key}\n").as_bytes(),
    );
    std::fs::write(repo.join("app/blob.bin"), [0u8; 64].repeat(64)).unwrap();

    // Before the first commit: a baseline of the tree.
    let created = keyforge(repo, &["scan", "baseline", "create"], None).await;
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let before = outside.path().join("before.json");
    std::fs::write(&before, &created.stdout).unwrap();
    let before = before.to_str().unwrap();
    let output = keyforge(repo, &["scan", "--baseline", before], None).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    git(repo, &["add", "app/sub/.env"]);
    git(repo, &["commit", "-q", "-m", "first"]);
    for from in [repo.to_path_buf(), repo.join("app/sub")] {
        let output = keyforge(&from, &["scan", "--baseline", before], None).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }

    // --stats --fail-on-skip: the stats line, like every line, ends.
    let output = keyforge(
        repo,
        &["scan", "--stats", "--fail-on-skip", "--baseline", before],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("scanned "), "{stderr}");
    for line in stderr.split_inclusive('\n') {
        assert!(line.ends_with('\n'), "{stderr:?}");
    }

    // History, a baseline outside the repository, from a subdirectory.
    let created = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    let history = outside.path().join("history.json");
    std::fs::write(&history, &created.stdout).unwrap();
    for from in [repo.to_path_buf(), repo.join("app"), repo.join("app/sub")] {
        let output = keyforge(
            &from,
            &["scan", "--git", "--baseline", history.to_str().unwrap()],
            None,
        )
        .await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "from {}: {}{}",
            from.display(),
            text(&output.stdout),
            text(&output.stderr)
        );
    }

    // With a salt file at the top, from a subdirectory too (the file was
    // looked for in the directory the scan ran from).
    std::fs::write(repo.join(".keyforge-scan-salt"), random_base62(24)).unwrap();
    let created = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    let salted = outside.path().join("salted.json");
    std::fs::write(&salted, &created.stdout).unwrap();
    for from in [repo.to_path_buf(), repo.join("app/sub")] {
        for scan in [&["scan", "--git"][..], &["scan"]] {
            let mut args = scan.to_vec();
            args.extend(["--baseline", salted.to_str().unwrap()]);
            let output = keyforge(&from, &args, None).await;
            assert_eq!(
                output.status.code(),
                Some(0),
                "{args:?} from {}: {}{}",
                from.display(),
                text(&output.stdout),
                text(&output.stderr)
            );
        }
    }
    std::fs::remove_file(repo.join(".keyforge-scan-salt")).unwrap();

    // Two names that are not UTF-8 and read the same lossily: a baseline
    // of one does not hide the other.
    let names: [&[u8]; 2] = [b"app/k\xff.env", b"app/k\xfe.env"];
    std::fs::write(
        repo.join(std::ffi::OsStr::from_bytes(names[0])),
        format!("# a file of its own\nOPENAI_API_KEY={key}\n"),
    )
    .unwrap();
    git(repo, &["add", "app"]);
    git(repo, &["commit", "-q", "-m", "byte name"]);
    let created = keyforge(repo, &["scan", "baseline", "create", "--git"], None).await;
    let baseline: Value = serde_json::from_slice(&created.stdout).unwrap();
    let exact = baseline["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|entry| entry["path_base64"].as_str())
        .unwrap_or_else(|| panic!("no exact name: {baseline}"))
        .to_owned();
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&exact)
            .unwrap(),
        names[0]
    );
    std::fs::write(&history, &created.stdout).unwrap();
    let output = keyforge(
        repo,
        &["scan", "--git", "--baseline", history.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    std::fs::write(
        repo.join(std::ffi::OsStr::from_bytes(names[1])),
        format!("\nOPENAI_API_KEY={key}\n"),
    )
    .unwrap();
    git(repo, &["add", "app"]);
    git(repo, &["commit", "-q", "-m", "another byte name"]);
    let output = keyforge(
        repo,
        &[
            "scan",
            "--git",
            "--baseline",
            history.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    )
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stdout));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(
        findings[0]["path_base64"].as_str().unwrap(),
        base64::engine::general_purpose::STANDARD.encode(names[1])
    );
}

/// Issue #16, S1 and S2 through the binary: a PEM key in a YAML block
/// scalar (`tls.key: |`) lost only its BEGIN line to `redact`, and a
/// PuTTY key whose header did not start its line (`key: PuTTY-User-…`,
/// behind a log prefix) kept every line but its first. `scan -` finds
/// each whole; `redact` leaves none of their body lines.
#[tokio::test]
async fn redact_removes_key_bodies_in_yaml_block_scalars_and_behind_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let pem = private_key_block();
    let yaml: String = pem.lines().map(|line| format!("    {line}\n")).collect();
    let putty_header = ["PuTTY", "User", "Key", "File", "3: ssh-ed25519"].join("-");
    let (public, private) = (random_base62(64), random_base62(64));
    let putty = format!(
        "key: {putty_header}\nEncryption: none\nComment: test\nPublic-Lines: 1\n{public}\nPrivate-Lines: 1\n{private}\nPrivate-MAC: {}\n",
        "0123456789abcdef".repeat(4)
    );
    let logged: String = putty
        .lines()
        .enumerate()
        .map(|(i, line)| format!("2026-12-01T10:00:{i:02}Z app[1]: {line}\n"))
        .collect();
    for input in [
        format!("apiVersion: v1\ndata:\n  tls.key: |\n{yaml}  other: 1\n"),
        format!("before\n{putty}after\n"),
        format!("before\n{logged}after\n"),
    ] {
        let scanned = keyforge(
            dir.path(),
            &["scan", "-", "--format", "json"],
            Some(input.as_bytes()),
        )
        .await;
        let report: Value = serde_json::from_slice(&scanned.stdout).unwrap();
        assert_eq!(report["findings"].as_array().unwrap().len(), 1, "{report}");
        let output = keyforge(dir.path(), &["redact"], Some(input.as_bytes())).await;
        let redacted = text(&output.stdout);
        let bodies: Vec<&str> = pem.lines().skip(1).take(13).collect();
        for body in bodies
            .iter()
            .copied()
            .chain([public.as_str(), private.as_str()])
        {
            assert!(!redacted.contains(body), "{redacted}");
        }
        assert!(redacted.contains("[REDACTED:private-key]"), "{redacted}");
        assert!(
            redacted.ends_with("other: 1\n") || redacted.ends_with("after\n"),
            "{redacted}"
        );
    }
}

/// `scan -` of `input` as JSON: each finding's rule, first and last line.
async fn findings_with_lines(dir: &Path, input: &str) -> Vec<(String, u64, u64)> {
    let scanned = keyforge(
        dir,
        &["scan", "-", "--format", "json"],
        Some(input.as_bytes()),
    )
    .await;
    let report: Value = serde_json::from_slice(&scanned.stdout).unwrap();
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| {
            (
                finding["rule"].as_str().unwrap().to_owned(),
                finding["line"].as_u64().unwrap(),
                finding["end_line"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Issue #16 (G1): a key behind a log prefix whose width changes from
/// line to line (`grep -n`'s `9:` then `10:`; `kubectl logs --timestamps`
/// dropping a timestamp's trailing zeros, a level that changes, a growing
/// process id) lost its header alone to `redact` and `scan` reported the
/// header line only. Now the block is reported over all its lines and
/// `redact` leaves none of its body.
#[tokio::test]
async fn a_key_behind_a_prefix_of_changing_width_is_found_and_redacted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let pem = private_key_block();
    let numbered: String = pem
        .lines()
        .enumerate()
        .map(|(i, line)| format!("{}:{line}\n", 8 + i))
        .collect();
    let logged: String = pem
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let fraction = &"123456789"[..1 + (i * 4) % 9];
            let level = if i % 3 == 0 { "INFO  " } else { "WARN " };
            format!(
                "2026-12-03T07:00:00.{fraction}Z {level}app[{}]: {line}\n",
                8 + i * 5
            )
        })
        .collect();
    for block in [numbered, logged] {
        let input = format!("boot\n{block}done\n");
        let found = findings_with_lines(dir.path(), &input).await;
        assert_eq!(found, [("private-key".to_owned(), 2, 16)], "{input}");
        let output = keyforge(dir.path(), &["redact"], Some(input.as_bytes())).await;
        let redacted = text(&output.stdout);
        for body in pem.lines().skip(1).take(13) {
            assert!(!redacted.contains(body), "{redacted}");
        }
        assert_eq!(redacted.lines().count(), 3, "{redacted}");
        assert!(
            redacted.ends_with("[REDACTED:private-key]\ndone\n"),
            "{redacted}"
        );
    }
}

/// Issue #16 (G2): base64 wrapped at a fixed width (the `base64` tool's
/// 76 columns, PEM's 64 behind a YAML block scalar's indentation) was
/// decoded a line at a time: `scan` reported the first line of an encoded
/// key and `redact` left the lines after it, which decode to the key.
/// Now the run is decoded whole, reported over all its lines and
/// redacted whole.
#[tokio::test]
async fn base64_wrapped_at_a_fixed_width_is_decoded_reported_and_redacted_whole() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let wrap = |bytes: &[u8], width: usize, indent: &str| -> String {
        base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .as_bytes()
            .chunks(width)
            .map(|line| format!("{indent}{}\n", text(line)))
            .collect()
    };
    let pem = private_key_block();
    let key_line = format!("key: sk-proj-{}\n", random_base62(156));
    let cases = [
        (wrap(pem.as_bytes(), 76, ""), "private-key"),
        (wrap(pem.as_bytes(), 64, "    "), "private-key"),
        (wrap(key_line.as_bytes(), 76, ""), "openai-project-key"),
        (wrap(key_line.as_bytes(), 64, "    "), "openai-project-key"),
    ];
    for (encoded, rule) in cases {
        let lines = encoded.lines().count() as u64;
        assert!(lines >= 3, "{encoded}");
        let input = format!("data:\n  tls.key: |\n{encoded}done\n");
        let found = findings_with_lines(dir.path(), &input).await;
        assert_eq!(found, [(rule.to_owned(), 3, 2 + lines)], "{input}");
        let output = keyforge(dir.path(), &["redact"], Some(input.as_bytes())).await;
        let redacted = text(&output.stdout);
        for line in encoded.lines() {
            assert!(!redacted.contains(line.trim()), "{redacted}");
        }
        assert!(redacted.ends_with("]\ndone\n"), "{redacted}");
    }
}

/// Issue #16 (G3): a PEM key joined onto one line (`echo $KEY` unquoted:
/// header, body lines and END line separated by blanks) was no finding.
#[tokio::test]
async fn a_pem_key_joined_onto_one_line_is_found_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let pem = private_key_block();
    let joined = pem.lines().collect::<Vec<_>>().join(" ");
    let input = format!("TLS_KEY={joined} \nnext=1\n");
    let found = findings_with_lines(dir.path(), &input).await;
    assert_eq!(found, [("private-key".to_owned(), 1, 1)], "{input}");
    let output = keyforge(dir.path(), &["redact"], Some(input.as_bytes())).await;
    let redacted = text(&output.stdout);
    assert_eq!(redacted, "TLS_KEY=[REDACTED:private-key] \nnext=1\n");
}
