//! `keyforge scan` and `keyforge redact`: the leak tools. Exit codes for
//! `scan`: 0 nothing new found, 1 findings, 2 usage or I/O error (or, with
//! `--fail-on-skip`, anything not scanned).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use keyforge_scan::baseline::Baseline;
use keyforge_scan::walk::{WalkOptions, allowlist, scan_paths};
use keyforge_scan::{Finding, Preview, Scanner, report};
use serde::Deserialize;

use crate::cli::{BaselineCommand, RedactArgs, ScanArgs, ScanCommand, ScanFormat};

/// The repository's own scan configuration, read from the current directory
/// when present (or `--config`).
pub(crate) const CONFIG_FILE: &str = ".keyforge-scan.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanConfig {
    #[serde(default)]
    allowlist: AllowList,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowList {
    /// Globs of paths never reported (`crates/scan/rules/**`).
    #[serde(default)]
    paths: Vec<String>,
}

fn load_config(explicit: Option<&Path>) -> anyhow::Result<ScanConfig> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let default = PathBuf::from(CONFIG_FILE);
            if !default.exists() {
                return Ok(ScanConfig::default());
            }
            default
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid scan config {}", path.display()))
}

fn scanner(rules: Option<&Path>) -> anyhow::Result<Scanner> {
    let extra = rules
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        })
        .transpose()?;
    Scanner::new(extra.as_deref()).map_err(|error| anyhow::anyhow!("rules: {error}"))
}

/// Turns transparent huge pages off for this process (Linux
/// `prctl(PR_SET_THP_DISABLE)`; a no-op elsewhere or when refused).
///
/// A scan allocates and frees many short-lived buffers (file contents,
/// decoded views, regex caches) on every walker thread; where the kernel
/// backs the allocator's fresh memory with 2 MiB huge pages, each first
/// touch zeroes a whole huge page. Measured on the 365 MB bench tree
/// (`perf record`, 2026-12-02): the kernel's `clear_page_erms` took 21 %
/// of the scan's samples with huge pages and 2 % without (see
/// bench/README.md). The gateway (`serve`) keeps the system's setting.
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

/// What a scan ended with.
struct Outcome {
    /// New findings (not in the baseline).
    found: bool,
    /// Inputs not scanned.
    skipped: u64,
}

/// Runs `keyforge scan`; usage and I/O errors exit 2, and so does anything
/// left unscanned under `--fail-on-skip`.
pub(crate) fn scan(args: ScanArgs) -> ExitCode {
    without_huge_pages();
    let fail_on_skip = args.fail_on_skip;
    match scan_inner(args) {
        Ok(outcome) if fail_on_skip && outcome.skipped > 0 => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: {} input(s) not scanned (--fail-on-skip)",
                outcome.skipped
            );
            ExitCode::from(2)
        }
        Ok(outcome) if outcome.found => ExitCode::from(1),
        Ok(_) => ExitCode::SUCCESS,
        // The reader went away (`keyforge scan | head`): output was being
        // written, which a clean scan's one summary line does not fill, so
        // report findings (1), quietly.
        Err(error) if crate::is_broken_pipe(&error) => ExitCode::from(1),
        Err(error) => {
            let _ = writeln!(std::io::stderr().lock(), "error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The environment variable that sets the fingerprint salt (a CI secret).
const SALT_ENV: &str = "KEYFORGE_SCAN_SALT";
/// The file, at the scanned root, that holds the fingerprint salt.
pub(crate) const SALT_FILE: &str = ".keyforge-scan-salt";

/// The salts findings' fingerprints may be keyed with, for the repository
/// or directory at `root`, the one to use first: `KEYFORGE_SCAN_SALT`,
/// else `.keyforge-scan-salt` at the repository's top directory or at the
/// root (either alone), else the one
/// derived from the repository's root commit ids (the same for every clone
/// and run, and not in any report) and then the one derived from the
/// root's absolute path (the only one before a repository's first
/// commit). A baseline made before the first commit is keyed with the
/// second: [`salt_for_baseline`] picks the one it was made with, so the
/// first commit does not make it stop matching. Derived salts are known to
/// whoever can read the repository, who can read its secrets anyway; set
/// one of the first two, kept out of the repository, for more.
fn fingerprint_salts(root: &Path) -> Vec<Vec<u8>> {
    if let Some(salt) = std::env::var_os(SALT_ENV).filter(|salt| !salt.is_empty()) {
        return vec![salt.as_encoded_bytes().to_vec()];
    }
    // The salt file sits at the repository's top directory, whichever of
    // its subdirectories the scan runs from (or at the scanned root).
    let top = repository_root(root);
    for directory in [top.as_path(), root] {
        if let Ok(salt) = std::fs::read(directory.join(SALT_FILE)) {
            let salt = salt.trim_ascii();
            if !salt.is_empty() {
                return vec![salt.to_vec()];
            }
        }
    }
    let derived = |identity: &[u8]| {
        let mut salt = b"keyforge-scan-salt\0".to_vec();
        salt.extend_from_slice(identity);
        salt
    };
    let mut salts = Vec::new();
    let roots = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["rev-list", "--max-parents=0", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success() && !output.stdout.is_empty());
    if let Some(output) = roots {
        let mut ids: Vec<&[u8]> = output.stdout.split(|b| *b == b'\n').collect();
        ids.sort_unstable();
        salts.push(derived(&ids.join(&b","[..])));
    }
    // The path is the repository's top directory (the same from any of
    // its subdirectories), or the directory itself outside git.
    salts.push(derived(top.as_os_str().as_encoded_bytes()));
    salts
}

/// Of `salts`, the one the baseline at `path` was made with (by its
/// `salt_check`), or the first when none is (or there is no readable
/// baseline: reading it reports the error later).
fn salt_for_baseline(mut salts: Vec<Vec<u8>>, path: Option<&Path>) -> Vec<u8> {
    let check = path
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| Baseline::parse(&text).ok())
        .and_then(|baseline| baseline.salt_check);
    let chosen = check
        .and_then(|check| {
            salts
                .iter()
                .position(|salt| keyforge_scan::salt_check(salt) == check)
        })
        .unwrap_or(0);
    salts.swap_remove(chosen)
}

fn scan_inner(args: ScanArgs) -> anyhow::Result<Outcome> {
    let config = load_config(args.config.as_deref())?;
    let mut scanner = scanner(args.rules.as_deref())?;
    // `--revoke` needs the kf_ keys themselves; everything is masked again
    // before it is shown (unless --show-secrets).
    let preview = if args.show_secrets || args.revoke {
        Preview::Full
    } else if args.redact {
        Preview::Redacted
    } else {
        Preview::Masked
    };
    let options = WalkOptions {
        binary: args.binary,
        allow_paths: allowlist(&config.allowlist.paths).map_err(anyhow::Error::msg)?,
        preview,
        progress: std::io::stderr().is_terminal(),
        max_file_bytes: args.max_file_size.unwrap_or(u64::MAX),
        ..WalkOptions::default()
    };
    let baseline_git = match &args.command {
        Some(ScanCommand::Baseline(BaselineCommand::Create { git, .. })) => git.clone(),
        None => None,
    };
    let started = std::time::Instant::now();
    let salt_root = args
        .git
        .clone()
        .or_else(|| baseline_git.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    scanner.set_fingerprint_salt(salt_for_baseline(
        fingerprint_salts(&salt_root),
        args.baseline.as_deref(),
    ));
    if let Some(image) = &args.image {
        let (findings, stats) = keyforge_scan::image::scan_image(&scanner, image, &options)?;
        let root = std::env::current_dir().unwrap_or_default();
        let from = root.clone();
        return finish(&args, &scanner, findings, stats, started, false, root, from);
    }
    if args.git.is_some() || args.staged || baseline_git.is_some() {
        let repo = args
            .git
            .clone()
            .or_else(|| baseline_git.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        let blobs = if args.staged {
            keyforge_scan::git::staged(&repo)
        } else {
            keyforge_scan::git::history(&repo, args.since.as_deref(), args.all_objects)
        }
        .map_err(anyhow::Error::from)?;
        let (mut findings, stats) = scanner.git_findings(&repo, &blobs, &options)?;
        if !args.staged {
            // Commit and tag messages are history too.
            let messages =
                keyforge_scan::git::messages(&repo, args.since.as_deref(), args.all_objects)
                    .map_err(anyhow::Error::from)?;
            findings.extend(scanner.message_findings(&messages, options.preview));
        }
        // Blob paths are relative to the repository's top directory.
        let from = repository_root(&repo);
        let root = std::fs::canonicalize(&repo).unwrap_or(repo);
        return finish(
            &args,
            &scanner,
            findings,
            stats,
            started,
            baseline_git.is_some(),
            root,
            from,
        );
    }
    let (paths, creating_baseline) = match &args.command {
        Some(ScanCommand::Baseline(BaselineCommand::Create { paths, .. })) => (paths.clone(), true),
        None => (args.paths.clone(), false),
    };
    let paths = if paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        paths
    };
    let mut findings: Vec<Finding> = Vec::new();
    let mut scanned_paths: Vec<PathBuf> = Vec::new();
    let mut stats = keyforge_scan::walk::Stats::default();
    for path in paths {
        if path.as_os_str() == "-" {
            // Streamed in overlapping pieces: no size limit, nothing cut.
            let mut stdin = std::io::stdin().lock();
            let (found, bytes) = scanner
                .findings_streamed("-", &mut stdin, preview)
                .context("cannot read stdin")?;
            findings.extend(found);
            stats.files += 1;
            stats.bytes += bytes;
        } else {
            if !path.exists() {
                anyhow::bail!("{}: no such file or directory", path.display());
            }
            scanned_paths.push(path);
        }
    }
    if !scanned_paths.is_empty() {
        let (found, walked) = scan_paths(&scanner, &scanned_paths, &options);
        findings.extend(found);
        stats.merge(walked);
    }
    let root = std::env::current_dir().unwrap_or_default();
    let from = root.clone();
    finish(
        &args,
        &scanner,
        findings,
        stats,
        started,
        creating_baseline,
        root,
        from,
    )
}

/// The top directory of the git repository holding `directory`, or
/// `directory` itself outside one; absolute. Baselines name files
/// relative to it.
fn repository_root(directory: &Path) -> PathBuf {
    let top = std::process::Command::new("git")
        .arg("-C")
        .arg(directory)
        .args(["rev-parse", "--show-toplevel"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| {
            let text = output.stdout.trim_ascii_end().to_vec();
            PathBuf::from(String::from_utf8_lossy(&text).into_owned())
        })
        .filter(|top| !top.as_os_str().is_empty());
    let directory = top.unwrap_or_else(|| directory.to_path_buf());
    std::fs::canonicalize(&directory).unwrap_or(directory)
}

/// Reports (or records as a baseline) what was found; true if anything new
/// was. Findings' relative paths start from `from`; SARIF's from `root`.
#[expect(clippy::too_many_arguments, reason = "three private call sites")]
fn finish(
    args: &ScanArgs,
    scanner: &Scanner,
    mut findings: Vec<Finding>,
    stats: keyforge_scan::walk::Stats,
    started: std::time::Instant,
    creating_baseline: bool,
    root: PathBuf,
    from: PathBuf,
) -> anyhow::Result<Outcome> {
    let skipped = stats.skipped_total();
    let baseline_paths = || keyforge_scan::baseline::PathBase {
        root: repository_root(&from),
        from: std::fs::canonicalize(&from).unwrap_or_else(|_| from.clone()),
    };
    if creating_baseline {
        let baseline = Baseline::of(&findings, scanner.fingerprint_salt(), &baseline_paths());
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, &baseline)?;
        writeln!(out)?;
        let _ = writeln!(
            std::io::stderr().lock(),
            "baseline: {} finding(s) recorded by fingerprint and path (no secrets in the file){}",
            baseline.findings.len(),
            report::skipped_clause(&stats)
        );
        return Ok(Outcome {
            found: false,
            skipped,
        });
    }
    if args.revoke {
        revoke_found(args.addr.as_deref(), &mut findings)?;
    }
    if args.revoke && !args.show_secrets {
        for finding in &mut findings {
            finding.preview = if args.redact {
                keyforge_scan::redacted(finding.preview.as_bytes())
            } else {
                keyforge_scan::mask(finding.preview.as_bytes())
            };
        }
    }
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read baseline {}", path.display()))?;
        let baseline = Baseline::parse(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| path.display().to_string())?;
        if baseline.is_path_agnostic() {
            let weakness = if baseline.is_legacy() {
                " (unsalted fingerprints, which let a reader test guesses of short secrets)"
            } else {
                ""
            };
            let _ = writeln!(
                std::io::stderr().lock(),
                "warning: {} is a version {} baseline{weakness}: it matches a known secret at any path, so a copy of one in another file is not reported; recreate it with `keyforge scan baseline create > {}` (`keyforge scan baseline create --git` for history)",
                path.display(),
                baseline.version,
                path.display()
            );
        }
        findings = baseline
            .filter(findings, scanner.fingerprint_salt(), &baseline_paths())
            .map_err(anyhow::Error::msg)
            .with_context(|| path.display().to_string())?;
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        ScanFormat::Text => report::text(&mut out, &findings, &stats)?,
        ScanFormat::Json => report::json(&mut out, &findings, &stats)?,
        ScanFormat::Sarif => report::sarif(
            &mut out,
            &findings,
            scanner.rules(),
            env!("CARGO_PKG_VERSION"),
            &stats,
            &report::SarifRoot { directory: root },
        )?,
    }
    out.flush()?;
    if std::io::stderr().is_terminal() || args.stats {
        let seconds = started.elapsed().as_secs_f64();
        let _ = writeln!(
            std::io::stderr().lock(),
            "scanned {} files, {:.1} MB in {:.2}s ({:.0} MB/s); skipped {} binary, {} too large, {} unreadable, {} symbolic links, {} not regular files",
            stats.files,
            stats.bytes as f64 / 1e6,
            seconds,
            stats.bytes as f64 / 1e6 / seconds.max(1e-9),
            stats.skipped_binary,
            stats.skipped_large,
            stats.unreadable,
            stats.skipped_links,
            stats.skipped_special
        );
    }
    Ok(Outcome {
        found: !findings.is_empty(),
        skipped,
    })
}

/// Runs `keyforge redact`: stdin to stdout, secrets replaced.
pub(crate) fn redact(args: RedactArgs) -> anyhow::Result<()> {
    without_huge_pages();
    let scanner = scanner(args.rules.as_deref())?;
    let stdin = std::io::stdin();
    let mut input = std::io::BufReader::with_capacity(64 * 1024, stdin.lock());
    let stdout = std::io::stdout();
    let mut output = stdout.lock();
    keyforge_scan::redact::redact_stream_named(
        &scanner,
        args.path.as_deref(),
        &mut input,
        &mut output,
    )
    .context("redacting stdin")?;
    Ok(())
}

/// Marks a hook file as ours, so `install` can tell it from someone else's.
const HOOK_MARKER: &str = "# Installed by `keyforge hook install`";

/// `keyforge hook install`: writes the repository's pre-commit hook.
pub(crate) fn hook(command: crate::cli::HookCommand) -> anyhow::Result<()> {
    let crate::cli::HookCommand::Install { force } = command;
    let output = std::process::Command::new("git")
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .context("cannot run git (is it installed?)")?;
    if !output.status.success() {
        anyhow::bail!(
            "not in a git repository: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let hooks = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    std::fs::create_dir_all(&hooks)
        .with_context(|| format!("cannot create {}", hooks.display()))?;
    let path = hooks.join("pre-commit");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.contains(HOOK_MARKER)
        && !force
    {
        anyhow::bail!(
            "{} already exists and is not KeyForge's; add `keyforge scan --staged` to it, or replace it with --force",
            path.display()
        );
    }
    let exe = std::env::current_exe().context("cannot find the keyforge binary")?;
    let script = format!(
        "#!/bin/sh\n{HOOK_MARKER}: refuses commits that add secrets.\n# Skip once with `git commit --no-verify`; silence a line with `keyforge:allow`.\nif command -v keyforge >/dev/null 2>&1; then exec keyforge scan --staged; fi\nexec '{}' scan --staged\n",
        exe.display().to_string().replace('\'', "'\\''")
    );
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let _ = writeln!(
        std::io::stdout().lock(),
        "Installed {}: `git commit` now runs `keyforge scan --staged`.",
        path.display()
    );
    Ok(())
}

/// Entries per leak report, the gateway's limit (`POST /keyforge/v1/leaks`).
const LEAK_REPORT_BATCH: usize = 100;

/// Reports the kf_ keys among `findings` to the gateway's leak endpoint,
/// which revokes those it issued, and notes the outcome on each finding.
fn revoke_found(addr: Option<&str>, findings: &mut [Finding]) -> anyhow::Result<()> {
    let indexes: Vec<usize> = findings
        .iter()
        .enumerate()
        .filter(|(_, finding)| finding.keyforge_key)
        .map(|(index, _)| index)
        .collect();
    if indexes.is_empty() {
        return Ok(());
    }
    let base = crate::client::gateway_base(addr);
    let reports: Vec<serde_json::Value> = indexes
        .iter()
        .map(|&index| {
            let finding = &findings[index];
            let location = match &finding.commit {
                Some(commit) => format!("{}:{} at commit {commit}", finding.path, finding.line),
                None => format!("{}:{}", finding.path, finding.line),
            };
            serde_json::json!({
                "token": finding.preview,
                "type": "keyforge_virtual_key",
                "url": location,
                "source": "keyforge-scan",
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let labels: Vec<serde_json::Value> = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut labels = Vec::with_capacity(reports.len());
        // The gateway takes at most this many entries per report.
        for batch in reports.chunks(LEAK_REPORT_BATCH) {
            let response = client
                .post(format!("{base}/keyforge/v1/leaks"))
                .json(batch)
                .send()
                .await
                .map_err(|error| {
                    anyhow::anyhow!(
                        "cannot reach KeyForge at {base} to revoke: {} (set KEYFORGE_ADDR or --addr)",
                        error.without_url()
                    )
                })?;
            let status = response.status();
            if !status.is_success() {
                anyhow::bail!("the gateway refused the leak report: HTTP {status}");
            }
            let answered: Vec<serde_json::Value> = response.json().await?;
            labels.extend(answered);
        }
        Ok::<_, anyhow::Error>(labels)
    })?;
    for (&index, label) in indexes.iter().zip(labels) {
        let outcome = label.get("outcome").and_then(|o| o.as_str());
        findings[index].revocation = Some(match outcome {
            Some("revoked") => format!("yes, by {base} (recorded in its audit log)"),
            Some("inactive") => {
                format!("already dead: {base} had revoked it, it expired, or it was rotated out")
            }
            _ => format!("no: {base} did not issue this key"),
        });
    }
    Ok(())
}
