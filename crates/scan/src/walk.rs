//! Files and directories: walked in parallel, honouring `.gitignore`,
//! `.ignore` and `.git/info/exclude` (ripgrep's walker), skipping `.git`
//! itself, binary files (unless asked) and files over a size limit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{Finding, Preview, Scanner};

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Scan binary files too.
    pub binary: bool,
    /// Files larger than this are skipped (and counted).
    pub max_file_bytes: u64,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Paths never reported.
    pub allow_paths: GlobSet,
    pub preview: Preview,
    /// Show progress on stderr (for a terminal).
    pub progress: bool,
}

impl Default for WalkOptions {
    fn default() -> Self {
        Self {
            binary: false,
            max_file_bytes: 100 * 1024 * 1024,
            threads: 0,
            allow_paths: GlobSet::empty(),
            preview: Preview::Masked,
            progress: false,
        }
    }
}

/// What a scan went through.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    pub unreadable: u64,
}

/// Builds a path allowlist from globs (`crates/scan/rules/**`).
pub fn allowlist(globs: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|error| format!("path glob `{glob}`: {error}"))?);
    }
    builder.build().map_err(|error| error.to_string())
}

/// `./a/b` → `a/b`, for reports and allowlists.
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    text.strip_prefix("./").unwrap_or(&text).to_owned()
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes: AtomicU64,
    skipped_binary: AtomicU64,
    skipped_large: AtomicU64,
    unreadable: AtomicU64,
}

/// Scans every file under `roots` (a root may be a single file).
pub fn scan_paths(
    scanner: &Scanner,
    roots: &[PathBuf],
    options: &WalkOptions,
) -> (Vec<Finding>, Stats) {
    let Some((first, rest)) = roots.split_first() else {
        return (Vec::new(), Stats::default());
    };
    let mut builder = ignore::WalkBuilder::new(first);
    for root in rest {
        builder.add(root);
    }
    builder
        .hidden(false)
        .git_global(false)
        .require_git(false)
        .threads(options.threads)
        .filter_entry(|entry| entry.file_name() != ".git");
    let counters = Counters::default();
    let (sender, receiver) = std::sync::mpsc::channel::<Vec<Finding>>();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        if options.progress {
            let (counters, done) = (&counters, &done);
            scope.spawn(move || progress(counters, done));
        }
        builder.build_parallel().run(|| {
            let sender = sender.clone();
            let counters = &counters;
            Box::new(move |entry| {
                let Ok(entry) = entry else {
                    counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    return ignore::WalkState::Continue;
                };
                if !entry.file_type().is_some_and(|kind| kind.is_file()) {
                    return ignore::WalkState::Continue;
                }
                let path = display_path(entry.path());
                if options.allow_paths.is_match(&path) {
                    return ignore::WalkState::Continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if size > options.max_file_bytes {
                    counters.skipped_large.fetch_add(1, Ordering::Relaxed);
                    return ignore::WalkState::Continue;
                }
                let Ok(data) = std::fs::read(entry.path()) else {
                    counters.unreadable.fetch_add(1, Ordering::Relaxed);
                    return ignore::WalkState::Continue;
                };
                if !options.binary && Scanner::is_binary(&data) {
                    counters.skipped_binary.fetch_add(1, Ordering::Relaxed);
                    return ignore::WalkState::Continue;
                }
                counters.files.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                let findings = scanner.findings(&path, &data, options.preview);
                if !findings.is_empty() && sender.send(findings).is_err() {
                    return ignore::WalkState::Quit;
                }
                ignore::WalkState::Continue
            })
        });
        done.store(true, Ordering::Relaxed);
    });
    drop(sender);
    let mut findings: Vec<Finding> = receiver.into_iter().flatten().collect();
    findings.sort_by(|a, b| (&a.path, a.line, a.column).cmp(&(&b.path, b.line, b.column)));
    let stats = Stats {
        files: counters.files.into_inner(),
        bytes: counters.bytes.into_inner(),
        skipped_binary: counters.skipped_binary.into_inner(),
        skipped_large: counters.skipped_large.into_inner(),
        unreadable: counters.unreadable.into_inner(),
    };
    (findings, stats)
}

/// A one-line progress report on stderr, redrawn every 200 ms, erased at
/// the end.
fn progress(counters: &Counters, done: &std::sync::atomic::AtomicBool) {
    use std::io::Write;
    let started = std::time::Instant::now();
    let mut shown = false;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if started.elapsed() < std::time::Duration::from_millis(500) {
            continue;
        }
        let bytes = counters.bytes.load(Ordering::Relaxed) as f64;
        let _ = write!(
            std::io::stderr().lock(),
            "\r\x1b[2Kscanning: {} files, {:.0} MB ({:.0} MB/s)",
            counters.files.load(Ordering::Relaxed),
            bytes / 1e6,
            bytes / 1e6 / started.elapsed().as_secs_f64()
        );
        shown = true;
    }
    if shown {
        let _ = write!(std::io::stderr().lock(), "\r\x1b[2K");
    }
}
