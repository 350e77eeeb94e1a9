//! Git sources, through the `git` command: every blob of a repository's
//! history, each read once (with the commit, author and path where it first
//! appeared), and what `git commit` is about to record (the index).
//!
//! Blob ids and paths come from `git log --raw` (every commit of every ref,
//! merges against each parent, oldest first) or `git diff --cached --raw`;
//! contents from one `git cat-file --batch` process. Commit and annotated
//! tag messages are read too ([`messages`]), with `git log` and `git
//! for-each-ref`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Where a blob first appeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobOrigin {
    pub blob: String,
    /// The path in the tree, lossy (U+FFFD) when it is not UTF-8.
    pub path: String,
    /// The path's exact bytes in standard base64 when it is not UTF-8 (see
    /// [`crate::Finding::path_base64`]).
    pub path_base64: Option<String>,
    /// Empty for staged blobs.
    pub commit: String,
    pub author: String,
    pub date: String,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0} (is git installed?)")]
    Spawn(std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("reading git's output: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected output from git: {0}")]
    Parse(String),
}

const NULL_BLOB: &str = "0000000000000000000000000000000000000000";

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        // Never page, never prompt, paths as they are.
        .env("GIT_PAGER", "cat")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args(["-c", "core.quotePath=false"]);
    command
}

fn output(repo: &Path, args: &[&str]) -> Result<Vec<u8>, GitError> {
    let output = git(repo)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(GitError::Spawn)?;
    if !output.status.success() {
        return Err(GitError::Failed {
            command: args.first().copied().unwrap_or_default().to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// Parses `:old_mode new_mode old_blob new_blob status` and returns the new
/// blob if it is file content (not a deletion, not a submodule).
fn raw_new_blob(line: &str) -> Option<String> {
    let mut fields = line
        .trim_start_matches('\n')
        .trim_start_matches(':')
        .split(' ');
    let _old_mode = fields.next()?;
    let new_mode = fields.next()?;
    let _old_blob = fields.next()?;
    let new_blob = fields.next()?;
    if new_blob == NULL_BLOB || new_mode == "160000" || new_mode == "000000" {
        return None;
    }
    Some(new_blob.to_owned())
}

/// Every blob in history, each once, with where it first appeared: the
/// commits of every ref and of the reflog (a deleted branch's commits stay
/// there until it expires), or only those not reachable from `since`. With
/// `all_objects`, also what `git fsck --unreachable` lists: dangling
/// commits (scanned like the others) and blobs no commit holds (added,
/// then never committed), reported with the path `(unreachable blob)`.
pub fn history(
    repo: &Path,
    since: Option<&str>,
    all_objects: bool,
) -> Result<Vec<BlobOrigin>, GitError> {
    let mut args: Vec<String> = [
        "log",
        "--reverse",
        "--no-renames",
        "-m",
        "--raw",
        "--no-abbrev",
        "--format=%x01%H%x00%an <%ae>%x00%aI",
        "-z",
        "--all",
        "--reflog",
    ]
    .map(String::from)
    .to_vec();
    let mut loose_blobs = Vec::new();
    if all_objects {
        let (commits, blobs) = unreachable(repo)?;
        args.extend(commits);
        loose_blobs = blobs;
    }
    if let Some(since) = since {
        args.push(format!("^{since}"));
    }
    // Revisions go on stdin: a repository may have more dangling commits
    // than a command line holds.
    let (flags, revisions): (Vec<String>, Vec<String>) = args
        .into_iter()
        .partition(|arg| arg.starts_with('-') || !arg.chars().all(|c| c.is_ascii_hexdigit()));
    let mut command = git(repo);
    command.args(&flags);
    if !revisions.is_empty() {
        command.arg("--stdin");
    }
    let bytes = run_with_input(command, revisions.join("\n").as_bytes())?;
    let mut seen: HashSet<String> = HashSet::new();
    let mut blobs = Vec::new();
    // Paths are bytes (a file name need not be UTF-8): the output is split
    // as bytes, and only the fields that are text are decoded.
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    for record in bytes.split(|&b| b == 1).filter(|r| !r.is_empty()) {
        let mut tokens = record.split(|&b| b == 0);
        let commit = tokens.next().map(lossy).unwrap_or_default();
        let author = tokens.next().map(lossy).unwrap_or_default();
        let date = tokens.next().map(lossy).unwrap_or_default();
        while let Some(token) = tokens.next() {
            let token = lossy(token);
            let token = token.trim_start_matches('\n');
            if !token.starts_with(':') {
                continue;
            }
            let raw_path = tokens.next().unwrap_or_default();
            if let Some(blob) = raw_new_blob(token)
                && seen.insert(blob.clone())
            {
                let (path, path_base64) = crate::path_names(raw_path);
                blobs.push(BlobOrigin {
                    blob,
                    path,
                    path_base64,
                    commit: commit.clone(),
                    author: author.clone(),
                    date: date.clone(),
                });
            }
        }
    }
    for blob in loose_blobs {
        if seen.insert(blob.clone()) {
            blobs.push(BlobOrigin {
                blob,
                path: "(unreachable blob)".into(),
                path_base64: None,
                commit: String::new(),
                author: String::new(),
                date: String::new(),
            });
        }
    }
    Ok(blobs)
}

/// A commit's or an annotated tag's message: text a key can be pasted
/// into as well as a file's (`git commit -m "rotate sk-…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The commit's id, or the tag object's.
    pub object: String,
    /// Where it is reported: `(commit message)` or `(tag message: NAME)`.
    pub location: String,
    /// The author (tagger for a tag), `Name <email>`.
    pub author: String,
    /// Strict ISO 8601.
    pub date: String,
    pub text: Vec<u8>,
}

/// The location of a commit's message in reports.
pub const COMMIT_MESSAGE: &str = "(commit message)";

/// The messages of every commit `history` reads (every ref, the reflog,
/// with `all_objects` the dangling commits too; only those not reachable
/// from `since`), and of every annotated tag (all of them, `since` or
/// not: a tag is small and cheap to read).
pub fn messages(
    repo: &Path,
    since: Option<&str>,
    all_objects: bool,
) -> Result<Vec<Message>, GitError> {
    let mut revisions: Vec<String> = Vec::new();
    if all_objects {
        revisions.extend(unreachable(repo)?.0);
    }
    if let Some(since) = since {
        revisions.push(format!("^{since}"));
    }
    let mut command = git(repo);
    command.args([
        "log",
        "--reverse",
        "--format=%x01%H%x00%an <%ae>%x00%aI%x00%B",
        "--all",
        "--reflog",
    ]);
    if !revisions.is_empty() {
        command.arg("--stdin");
    }
    let bytes = run_with_input(command, revisions.join("\n").as_bytes())?;
    let mut messages = Vec::new();
    for record in bytes.split(|&b| b == 1).filter(|r| !r.is_empty()) {
        let mut fields = record.splitn(4, |&b| b == 0);
        let (Some(id), Some(author), Some(date), Some(text)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        messages.push(Message {
            object: String::from_utf8_lossy(id).into_owned(),
            location: COMMIT_MESSAGE.into(),
            author: String::from_utf8_lossy(author).into_owned(),
            date: String::from_utf8_lossy(date).into_owned(),
            text: text.to_vec(),
        });
    }
    let tags = output(
        repo,
        &[
            "for-each-ref",
            "refs/tags",
            "--format=%01%(objecttype)%00%(objectname)%00%(refname:short)%00%(taggername) %(taggeremail)%00%(taggerdate:iso-strict)%00%(contents)",
        ],
    )?;
    for record in tags.split(|&b| b == 1).filter(|r| !r.is_empty()) {
        let fields: Vec<&[u8]> = record.splitn(6, |&b| b == 0).collect();
        let [kind, id, name, tagger, date, text] = fields.as_slice() else {
            continue;
        };
        // A lightweight tag names a commit, whose message is read above.
        if *kind != b"tag" {
            continue;
        }
        messages.push(Message {
            object: String::from_utf8_lossy(id).into_owned(),
            location: format!("(tag message: {})", String::from_utf8_lossy(name)),
            author: String::from_utf8_lossy(tagger).into_owned(),
            date: String::from_utf8_lossy(date).into_owned(),
            text: text.to_vec(),
        });
    }
    Ok(messages)
}

/// Runs `command` with `input` on its stdin; its stdout if it succeeds.
fn run_with_input(mut command: Command, input: &[u8]) -> Result<Vec<u8>, GitError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| GitError::Parse("no stdin".into()))?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| GitError::Parse("writer thread failed".into()))??;
    if !output.status.success() {
        return Err(GitError::Failed {
            command: "log".into(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// Commits and blobs no ref or reflog reaches (`git fsck --unreachable
/// --connectivity-only`: reads every object's links, not its hash).
fn unreachable(repo: &Path) -> Result<(Vec<String>, Vec<String>), GitError> {
    let bytes = output(
        repo,
        &[
            "fsck",
            "--unreachable",
            "--connectivity-only",
            "--no-progress",
        ],
    )?;
    let mut commits = Vec::new();
    let mut blobs = Vec::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        let mut fields = line.split(' ');
        match (fields.next(), fields.next(), fields.next()) {
            (Some("unreachable"), Some("commit"), Some(id)) => commits.push(id.to_owned()),
            (Some("unreachable"), Some("blob"), Some(id)) => blobs.push(id.to_owned()),
            _ => {}
        }
    }
    Ok((commits, blobs))
}

/// The blobs `git commit` would record: staged additions and changes.
pub fn staged(repo: &Path) -> Result<Vec<BlobOrigin>, GitError> {
    let bytes = output(
        repo,
        &[
            "diff",
            "--cached",
            "--raw",
            "--no-abbrev",
            "--no-renames",
            "-z",
            "--diff-filter=ACMT",
        ],
    )?;
    let mut tokens = bytes.split(|&b| b == 0);
    let mut blobs = Vec::new();
    while let Some(token) = tokens.next() {
        let token = String::from_utf8_lossy(token);
        if !token.trim_start_matches('\n').starts_with(':') {
            continue;
        }
        let raw_path = tokens.next().unwrap_or_default();
        if let Some(blob) = raw_new_blob(&token) {
            let (path, path_base64) = crate::path_names(raw_path);
            blobs.push(BlobOrigin {
                blob,
                path,
                path_base64,
                commit: String::new(),
                author: String::new(),
                date: String::new(),
            });
        }
    }
    Ok(blobs)
}

/// Reads each blob's content with one `git cat-file --batch` and hands it
/// to `visit`, in order.
pub fn read_blobs(
    repo: &Path,
    blobs: &[BlobOrigin],
    mut visit: impl FnMut(&BlobOrigin, &[u8]),
) -> Result<(), GitError> {
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| GitError::Parse("no stdin".into()))?;
    let ids: Vec<String> = blobs.iter().map(|b| b.blob.clone()).collect();
    // Write the requests from another thread: git answers while we ask.
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stdin = std::io::BufWriter::new(&mut stdin);
        for id in ids {
            stdin.write_all(id.as_bytes())?;
            stdin.write_all(b"\n")?;
        }
        stdin.flush()
    });
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| GitError::Parse("no stdout".into()))?;
    let mut reader = BufReader::with_capacity(256 * 1024, stdout);
    let mut header = String::new();
    let mut content = Vec::new();
    for blob in blobs {
        header.clear();
        if reader.read_line(&mut header)? == 0 {
            return Err(GitError::Parse("cat-file stopped early".into()));
        }
        let fields: Vec<&str> = header.trim_end().split(' ').collect();
        match fields.as_slice() {
            [_, "blob", size] => {
                let size: u64 = size.parse().map_err(|_| GitError::Parse(header.clone()))?;
                content.clear();
                (&mut reader).take(size).read_to_end(&mut content)?;
                let mut newline = [0u8; 1];
                reader.read_exact(&mut newline)?;
                visit(blob, &content);
            }
            [_, "missing"] => {}
            _ => return Err(GitError::Parse(header.clone())),
        }
    }
    writer
        .join()
        .map_err(|_| GitError::Parse("writer thread failed".into()))??;
    let status = child.wait()?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(GitError::Failed {
            command: "cat-file".into(),
            stderr,
        });
    }
    Ok(())
}
