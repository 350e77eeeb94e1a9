//! Files and directories: walked in parallel, honouring `.gitignore`,
//! `.ignore` and `.git/info/exclude` (ripgrep's walker), skipping `.git`
//! itself. Binary files (unless asked) and files over a size limit the
//! user set are skipped, and every skip is counted and listed: nothing is
//! left out in silence. Files larger than [`crate::CHUNK_BYTES`] are
//! streamed in overlapping pieces, never cut off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::{Finding, Preview, Scanner};

#[derive(Debug, Clone)]
pub struct WalkOptions {
    /// Scan binary files too.
    pub binary: bool,
    /// Files larger than this are skipped (and counted); no limit unless
    /// the user sets one.
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
            max_file_bytes: u64::MAX,
            threads: 0,
            allow_paths: GlobSet::empty(),
            preview: Preview::Masked,
            progress: false,
        }
    }
}

/// What a scan went through, and what it did not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub bytes: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    pub unreadable: u64,
    /// Symbolic links, which the walk does not follow.
    pub skipped_links: u64,
    /// FIFOs, sockets and devices: reading one could block or never end.
    pub skipped_special: u64,
    /// The first [`MAX_LISTED_SKIPS`] inputs not scanned, by name.
    pub skipped: Vec<Skipped>,
}

/// Skipped inputs listed by name at most (all are counted).
pub const MAX_LISTED_SKIPS: usize = 1000;

/// Why an input was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipReason {
    /// Binary content (scan it with `--binary`).
    Binary,
    /// Larger than the user's `--max-file-size`.
    TooLarge,
    /// Could not be read (permissions, a broken link, an I/O error), or a
    /// directory that could not be listed.
    Unreadable,
    /// A symbolic link: not followed (its target is scanned where the walk
    /// reaches it; name it on the command line to scan it).
    Symlink,
    /// Not a regular file: a FIFO, a socket or a device.
    Special,
}

/// One input not scanned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The name, lossy when it is not UTF-8 (as [`Finding::path`]).
    pub path: String,
    /// The exact bytes of a name that is not UTF-8, base64 (as
    /// [`Finding::path_base64`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_base64: Option<String>,
    pub reason: SkipReason,
}

impl Skipped {
    /// The name's exact bytes.
    pub fn path_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        crate::path_bytes(&self.path, self.path_base64.as_deref())
    }
}

impl Stats {
    /// Counts (and lists, up to the limit) one input not scanned.
    pub fn skip(&mut self, path: String, reason: SkipReason) {
        self.skip_exact(path, None, reason);
    }

    /// [`Stats::skip`] for a name whose exact bytes are not UTF-8.
    pub fn skip_exact(&mut self, path: String, path_base64: Option<String>, reason: SkipReason) {
        match reason {
            SkipReason::Binary => self.skipped_binary += 1,
            SkipReason::TooLarge => self.skipped_large += 1,
            SkipReason::Unreadable => self.unreadable += 1,
            SkipReason::Symlink => self.skipped_links += 1,
            SkipReason::Special => self.skipped_special += 1,
        }
        if self.skipped.len() < MAX_LISTED_SKIPS {
            self.skipped.push(Skipped {
                path,
                path_base64,
                reason,
            });
        }
    }

    /// Inputs not scanned, all reasons.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_binary
            + self.skipped_large
            + self.unreadable
            + self.skipped_links
            + self.skipped_special
    }

    /// Adds another scan's counts and list to this one.
    pub fn merge(&mut self, other: Stats) {
        self.files += other.files;
        self.bytes += other.bytes;
        self.skipped_binary += other.skipped_binary;
        self.skipped_large += other.skipped_large;
        self.unreadable += other.unreadable;
        self.skipped_links += other.skipped_links;
        self.skipped_special += other.skipped_special;
        let room = MAX_LISTED_SKIPS.saturating_sub(self.skipped.len());
        self.skipped.extend(other.skipped.into_iter().take(room));
    }
}

/// Builds a path allowlist from globs (`crates/scan/rules/**`).
pub fn allowlist(globs: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|error| format!("path glob `{glob}`: {error}"))?);
    }
    builder.build().map_err(|error| error.to_string())
}

/// `./a/b` → `a/b`, for reports and allowlists (lossy when the name is
/// not UTF-8: see [`display_path_exact`]).
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    text.strip_prefix("./").unwrap_or(&text).to_owned()
}

/// [`display_path`] and, when the name is not UTF-8, its exact bytes in
/// base64 (see [`Finding::path_base64`]).
pub fn display_path_exact(path: &Path) -> (String, Option<String>) {
    let raw = path.as_os_str().as_encoded_bytes();
    crate::path_names(raw.strip_prefix(b"./").unwrap_or(raw))
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    bytes: AtomicU64,
    /// Skips are rare and recording one is a push: a lock held for that
    /// only, by the walker's threads, never on a request path.
    #[expect(
        clippy::disallowed_types,
        reason = "a tiny critical section off the request path"
    )]
    skips: std::sync::Mutex<Stats>,
}

impl Counters {
    fn skip(&self, path: &Path, reason: SkipReason) {
        let (text, exact) = display_path_exact(path);
        self.skip_text(text, exact, reason);
    }

    fn skip_text(&self, path: String, exact: Option<String>, reason: SkipReason) {
        if let Ok(mut stats) = self.skips.lock() {
            stats.skip_exact(path, exact, reason);
        }
    }
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
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(error) => {
                        let (path, exact) = error_path(&error);
                        counters.skip_text(path, exact, SkipReason::Unreadable);
                        return ignore::WalkState::Continue;
                    }
                };
                // Directories are walked; anything else that is not a
                // regular file is counted, never passed over in silence.
                match entry.file_type() {
                    Some(kind) if kind.is_file() => {}
                    Some(kind) if kind.is_dir() => return ignore::WalkState::Continue,
                    Some(kind) if kind.is_symlink() => {
                        counters.skip(entry.path(), SkipReason::Symlink);
                        return ignore::WalkState::Continue;
                    }
                    _ => {
                        counters.skip(entry.path(), SkipReason::Special);
                        return ignore::WalkState::Continue;
                    }
                }
                let (path, exact) = display_path_exact(entry.path());
                if options.allow_paths.is_match(&path) {
                    return ignore::WalkState::Continue;
                }
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                if size > options.max_file_bytes {
                    counters.skip_text(path, exact, SkipReason::TooLarge);
                    return ignore::WalkState::Continue;
                }
                let findings = match scan_file(scanner, entry.path(), &path, size, options) {
                    Ok(Some((mut findings, bytes))) => {
                        counters.files.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                        for finding in &mut findings {
                            finding.path_base64.clone_from(&exact);
                        }
                        findings
                    }
                    Ok(None) => {
                        counters.skip_text(path, exact, SkipReason::Binary);
                        return ignore::WalkState::Continue;
                    }
                    Err(_) => {
                        counters.skip_text(path, exact, SkipReason::Unreadable);
                        return ignore::WalkState::Continue;
                    }
                };
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
    let mut stats = counters.skips.into_inner().unwrap_or_default();
    stats.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    stats.files = counters.files.into_inner();
    stats.bytes = counters.bytes.into_inner();
    (findings, stats)
}

/// The path an error of the walk is about (a directory that could not be
/// listed, a file that could not be opened), however the walker wrapped
/// it; the error itself when it names none.
fn error_path(error: &ignore::Error) -> (String, Option<String>) {
    match error {
        ignore::Error::WithPath { path, .. } => display_path_exact(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => display_path_exact(child),
        ignore::Error::Partial(errors) if errors.len() == 1 => error_path(&errors[0]),
        other => (other.to_string(), None),
    }
}

/// Scans one file: read whole when small, streamed in overlapping pieces
/// when large. `None` when it is binary (and binary files are not wanted).
fn scan_file(
    scanner: &Scanner,
    file: &Path,
    path: &str,
    size: u64,
    options: &WalkOptions,
) -> std::io::Result<Option<(Vec<Finding>, u64)>> {
    if size <= crate::CHUNK_BYTES as u64 {
        thread_local! {
            /// Each walker thread reads every file into one buffer: a
            /// fresh one per file costs the kernel zeroing new pages for
            /// each (a fifth of a tree scan's time when measured).
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        return BUFFER.with_borrow_mut(|data| {
            data.clear();
            std::io::Read::read_to_end(&mut std::fs::File::open(file)?, data)?;
            if !options.binary && Scanner::is_binary(data) {
                return Ok(None);
            }
            let bytes = data.len() as u64;
            Ok(Some((scanner.findings(path, data, options.preview), bytes)))
        });
    }
    let mut reader = std::io::BufReader::with_capacity(1024 * 1024, std::fs::File::open(file)?);
    let head = std::io::BufRead::fill_buf(&mut reader)?;
    if !options.binary && Scanner::is_binary(head) {
        return Ok(None);
    }
    scanner
        .findings_streamed(path, &mut reader, options.preview)
        .map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that cannot be listed is counted under its own path,
    /// however deep the walker reports it.
    #[test]
    fn an_unlistable_directory_is_named_by_its_path() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let error = ignore::Error::WithDepth {
            depth: 2,
            err: Box::new(ignore::Error::WithPath {
                path: PathBuf::from("./secrets/locked"),
                err: Box::new(ignore::Error::Io(io)),
            }),
        };
        assert_eq!(error_path(&error), ("secrets/locked".to_owned(), None));
    }
}
