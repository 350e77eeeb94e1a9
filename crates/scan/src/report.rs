//! Findings as text (for people), JSON (for scripts) and SARIF 2.1.0 (for
//! GitHub code scanning and other SARIF viewers).

use std::io::Write;

use serde_json::{Value, json};

use crate::Finding;
use crate::rules::Rule;
use crate::walk::Stats;

/// GitHub code scanning keeps at most this many results per run (its
/// upload refuses more); the rest are counted in a notification.
pub const MAX_SARIF_RESULTS: usize = 25_000;

/// The summary line's clause on what was not scanned:
/// `; 2 inputs not scanned (1 binary, 1 unreadable)`, or nothing.
pub fn skipped_clause(stats: &Stats) -> String {
    let total = stats.skipped_total();
    if total == 0 {
        return String::new();
    }
    let mut parts = Vec::new();
    for (count, what) in [
        (stats.skipped_binary, "binary (scan with --binary)"),
        (stats.skipped_large, "over --max-file-size"),
        (stats.unreadable, "unreadable"),
        (stats.skipped_links, "symbolic link (not followed)"),
        (stats.skipped_special, "not a regular file"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    let noun = if total == 1 { "input" } else { "inputs" };
    format!("; {total} {noun} not scanned ({})", parts.join(", "))
}

/// Whether a character must not reach a terminal as it is: C0 and C1
/// controls and DEL (a newline would start a forged finding, ESC moves the
/// cursor), the bidirectional overrides and isolates (U+202A-202E,
/// U+2066-2069) and marks (U+200E, U+200F, U+061C) that reorder what
/// follows, and the line and paragraph separators (U+2028, U+2029).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{061c}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `bytes` as one unambiguous line of text for a terminal: `\n`, `\r`
/// and `\t`; `\xNN` for other ASCII controls and for each byte that is
/// not UTF-8; `\u{NNNN}` for the other characters of [`unprintable`];
/// and `\\` for a backslash, so that an escape in the output always
/// means an escaped byte.
pub fn escape_text(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if unprintable(c) => {
                    let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// `path:line:column: rule: description`, the masked secret, and the fix;
/// then a summary line that also counts what was not scanned. Every name
/// and value is escaped ([`escape_text`]): a file name holding a newline
/// or an escape sequence prints as one line of visible characters.
pub fn text(out: &mut impl Write, findings: &[Finding], stats: &Stats) -> std::io::Result<()> {
    let escape = |text: &str| escape_text(text.as_bytes());
    for finding in findings {
        writeln!(
            out,
            "{}:{}:{}: {}: {}",
            escape_text(&finding.path_bytes()),
            finding.line,
            finding.column,
            escape(&finding.rule),
            escape(&finding.description)
        )?;
        writeln!(out, "    secret: {}", escape(&finding.preview))?;
        if let Some(commit) = &finding.commit {
            writeln!(
                out,
                "    commit: {} ({}, {})",
                escape(commit),
                escape(finding.author.as_deref().unwrap_or("")),
                escape(finding.date.as_deref().unwrap_or(""))
            )?;
        }
        if let Some(revocation) = &finding.revocation {
            writeln!(out, "    revoked: {}", escape(revocation))?;
        }
        if !finding.fix.is_empty() {
            writeln!(out, "    fix: {}", escape(&finding.fix))?;
        }
    }
    for skipped in &stats.skipped {
        writeln!(
            out,
            "not scanned: {} ({})",
            escape_text(&skipped.path_bytes()),
            reason_text(skipped.reason)
        )?;
    }
    let skipped = skipped_clause(stats);
    match findings.len() {
        0 if skipped.is_empty() => writeln!(out, "No secrets found.")?,
        0 => writeln!(out, "No secrets found in what was scanned{skipped}.")?,
        1 => writeln!(out, "1 secret found{skipped}.")?,
        n => writeln!(out, "{n} secrets found{skipped}.")?,
    }
    Ok(())
}

fn reason_text(reason: crate::walk::SkipReason) -> &'static str {
    match reason {
        crate::walk::SkipReason::Binary => "binary",
        crate::walk::SkipReason::TooLarge => "over --max-file-size",
        crate::walk::SkipReason::Unreadable => "unreadable",
        crate::walk::SkipReason::Symlink => "symbolic link, not followed",
        crate::walk::SkipReason::Special => "not a regular file: FIFO, socket or device",
    }
}

/// `{"findings": [...], "scanned": {...}, "skipped": {...}}`: what was
/// found, and what was and was not scanned.
pub fn json(out: &mut impl Write, findings: &[Finding], stats: &Stats) -> std::io::Result<()> {
    let value = json!({
        "findings": findings,
        "scanned": {"inputs": stats.files, "bytes": stats.bytes},
        "skipped": {
            "total": stats.skipped_total(),
            "binary": stats.skipped_binary,
            "too_large": stats.skipped_large,
            "unreadable": stats.unreadable,
            "symlink": stats.skipped_links,
            "special": stats.skipped_special,
            "inputs": stats.skipped,
        },
    });
    write_json(out, &value)
}

/// A JSON formatter that also escapes, as `\uNNNN`, the characters JSON
/// allows raw but a terminal acts on (DEL, C1 controls, bidirectional
/// overrides: see [`unprintable`]), so that `cat report.json` shows what
/// is there. The decoded strings are unchanged.
struct TerminalSafe(serde_json::ser::PrettyFormatter<'static>);

impl serde_json::ser::Formatter for TerminalSafe {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut rest = fragment;
        while let Some((at, c)) = rest.char_indices().find(|(_, c)| unprintable(*c)) {
            writer.write_all(&rest.as_bytes()[..at])?;
            // Every unprintable character is in the Basic Multilingual
            // Plane: one \u escape.
            write!(writer, "\\u{:04x}", u32::from(c))?;
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_array(writer)
    }
    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array(writer)
    }
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(writer, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(writer)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object(writer)
    }
    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object(writer)
    }
    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(writer, first)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(writer)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(writer)
    }
}

/// `value` as pretty JSON, terminal-safe ([`TerminalSafe`]), and a newline.
fn write_json(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut *out,
        TerminalSafe(serde_json::ser::PrettyFormatter::new()),
    );
    serde::Serialize::serialize(value, &mut serializer)?;
    writeln!(out)
}

/// Where a SARIF log's relative URIs are rooted.
#[derive(Debug, Clone)]
pub struct SarifRoot {
    /// The directory findings' relative paths start from (the working
    /// directory, or the repository for `--git`), absolute.
    pub directory: std::path::PathBuf,
}

/// The uriBaseId every relative location names.
pub const SRCROOT: &str = "%SRCROOT%";

/// A SARIF 2.1.0 log with one run: every rule as a reporting descriptor,
/// every finding as an `error` result with its region and fingerprint,
/// locations relative to `%SRCROOT%` (given in `originalUriBaseIds`), and
/// what was not scanned as `toolExecutionNotifications` of the invocation.
/// Shaped for GitHub's upload: rule ids, `partialFingerprints`, columns
/// from 1, at most [`MAX_SARIF_RESULTS`] results.
pub fn sarif_value(
    findings: &[Finding],
    rules: &[Rule],
    version: &str,
    stats: &Stats,
    root: &SarifRoot,
) -> Value {
    let descriptors: Vec<Value> = rules
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": rule.id.replace('-', "_"),
                "shortDescription": {"text": rule.description},
                "fullDescription": {"text": format!("{} found in the source.", rule.description)},
                "help": {"text": rule.fix, "markdown": rule.fix},
                "defaultConfiguration": {"level": "error"},
                "properties": {"tags": ["security", "secret"], "security-severity": "9.0"},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .take(MAX_SARIF_RESULTS)
        .map(|finding| {
            let index = rules.iter().position(|rule| rule.id == finding.rule);
            let mut location = json!({
                "physicalLocation": {
                    "artifactLocation": artifact(&finding.path_bytes(), root),
                    "region": {
                        "startLine": finding.line.max(1),
                        "startColumn": finding.column.max(1),
                        "endLine": finding.end_line.max(finding.line).max(1),
                        "endColumn": finding.end_column.max(1),
                    }
                }
            });
            if let (Some(Value::Object(extra)), Some(object)) =
                (message_location(finding), location.as_object_mut())
            {
                object.extend(extra);
            }
            let mut result = json!({
                "ruleId": finding.rule,
                "level": "error",
                "message": {"text": format!("{}: {}", finding.description, finding.preview)},
                "locations": [location],
                // v2: keyed by the repository's salt (v1 was an unsalted hash).
                "partialFingerprints": {"keyforgeSecret/v2": finding.fingerprint},
            });
            if let (Some(commit), Some(object)) = (&finding.commit, result.as_object_mut()) {
                object.insert(
                    "properties".into(),
                    json!({"commit": commit, "author": finding.author, "date": finding.date}),
                );
            }
            if let (Some(index), Some(object)) = (index, result.as_object_mut()) {
                object.insert("ruleIndex".into(), json!(index));
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "keyforge",
                "informationUri": "https://github.com/keyforge/keyforge",
                "semanticVersion": version,
                "rules": descriptors,
            }},
            "columnKind": "unicodeCodePoints",
            "originalUriBaseIds": {
                SRCROOT: {"uri": directory_uri(&root.directory)},
            },
            "invocations": [invocation(findings, stats)],
            "results": results,
        }]
    })
}

/// What a finding in a commit's or an annotated tag's message (`scan
/// --git`), which is no file, adds to its location: `None` for any other
/// finding.
///
/// GitHub's upload refuses a result without a physical location with an
/// artifact URI ("locationFromSarifResult: expected at least one location"
/// / "expected artifact location", as reported against
/// github/codeql-action and Checkmarx/2ms), so such a finding keeps the
/// placeholder artifact `(commit message)` / `(tag message: NAME)` under
/// `%SRCROOT%`, and gains what SARIF allows for a place that is named
/// rather than found in an artifact:
///
/// In SARIF 2.1.0 a `location` object (§3.28) has its
/// `physicalLocation` (§3.28.3), `logicalLocations` (§3.28.4) and
/// `message` (§3.28.5) each optional, and a `logicalLocation` (§3.33)
/// stands for what is named rather than found in an artifact; its `kind`
/// (§3.33.7) may be a value of the producer's own where none of the
/// listed ones fits. So a message is a logical location named by the
/// commit (or tag object) id, its fully qualified name saying which
/// message it is, and the line the secret sits on is in the location's
/// `message`.
fn message_location(finding: &Finding) -> Option<Value> {
    let commit = finding.commit.as_deref()?;
    let (kind, what) = if finding.path == crate::git::COMMIT_MESSAGE {
        ("commitMessage", format!("message of commit {commit}"))
    } else {
        let tag = finding
            .path
            .strip_prefix("(tag message: ")?
            .strip_suffix(')')?;
        (
            "tagMessage",
            format!("message of tag {tag} (object {commit})"),
        )
    };
    Some(json!({
        "logicalLocations": [{
            "name": commit,
            "fullyQualifiedName": what,
            "kind": kind,
        }],
        "message": {"text": format!(
            "line {}, column {} of the {what}",
            finding.line.max(1),
            finding.column.max(1)
        )},
    }))
}

/// The run's invocation: successful, with a notification for each input
/// not scanned (and one if results were cut at the limit).
fn invocation(findings: &[Finding], stats: &Stats) -> Value {
    let mut notifications: Vec<Value> = Vec::new();
    let total = stats.skipped_total();
    if total > 0 {
        notifications.push(json!({
            "level": "warning",
            "descriptor": {"id": "not-scanned"},
            "message": {"text": skipped_clause(stats).trim_start_matches("; ").to_owned()},
        }));
    }
    for skipped in &stats.skipped {
        notifications.push(json!({
            "level": "warning",
            "descriptor": {"id": "not-scanned"},
            "message": {"text": format!("not scanned: {} ({})", skipped.path, reason_text(skipped.reason))},
        }));
    }
    if findings.len() > MAX_SARIF_RESULTS {
        notifications.push(json!({
            "level": "warning",
            "descriptor": {"id": "results-truncated"},
            "message": {"text": format!("{} findings; the first {MAX_SARIF_RESULTS} are in this log (GitHub's limit per run)", findings.len())},
        }));
    }
    json!({
        "executionSuccessful": true,
        "toolExecutionNotifications": notifications,
    })
}

pub fn sarif(
    out: &mut impl Write,
    findings: &[Finding],
    rules: &[Rule],
    version: &str,
    stats: &Stats,
    root: &SarifRoot,
) -> std::io::Result<()> {
    write_json(out, &sarif_value(findings, rules, version, stats, root))
}

/// A finding's artifact location: relative to `%SRCROOT%` when the path is
/// (or is under the root), a `file://` URI otherwise; `stdin` for `-`.
/// `path` is the name's exact bytes (a name need not be UTF-8).
fn artifact(path: &[u8], root: &SarifRoot) -> Value {
    if path == b"-" {
        return json!({"uri": "stdin", "description": {"text": "standard input"}});
    }
    // A path is resolved against the root and rid of `.` and `..` (GitHub
    // resolves a relative URI against the repository root, and a `..`
    // would climb out of it): under the root it is relative to
    // `%SRCROOT%`; outside (`keyforge scan ../other`, a file named by its
    // absolute path elsewhere) it is an absolute `file://` URI.
    let file = os_path(path);
    let absolute = lexically_normal(&root.directory.join(file));
    match absolute.strip_prefix(lexically_normal(&root.directory)) {
        Ok(rest) if !rest.as_os_str().is_empty() => {
            // `app.tar:LAYER:/etc/x` (an image's layer) has its colons
            // encoded with the rest, so its first segment never reads as
            // a scheme.
            json!({"uri": uri(rest), "uriBaseId": SRCROOT})
        }
        _ => json!({"uri": directory_uri(&absolute).trim_end_matches('/')}),
    }
}

/// A name's exact bytes as a path.
fn os_path(bytes: &[u8]) -> std::path::PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }
    #[cfg(not(unix))]
    {
        std::path::PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// `path` with `.` dropped and each `..` taking off the name before it
/// (without looking at the file system: the file may be gone, a blob of
/// history).
pub(crate) fn lexically_normal(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut normal = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// `file:///abs/dir/` for a directory (with the trailing slash SARIF asks
/// of a base URI).
fn directory_uri(directory: &std::path::Path) -> String {
    let mut text = String::from("file://");
    let path = uri(directory);
    if !path.starts_with('/') {
        text.push('/');
    }
    text.push_str(&path);
    if !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// The bytes a URI path keeps as they are (RFC 3986 §2.3's unreserved
/// characters, and `/` between segments); every other byte is `%XX`.
const URI_PATH_KEEPS: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A path as a URI path (RFC 3986): `/` between segments (`\` too on
/// Windows), every byte but the unreserved ones percent-encoded (spaces,
/// `#`, `?`, `%`, `:`, non-ASCII as its UTF-8 bytes, and bytes that are
/// not UTF-8 as they are); a leading `./` dropped.
fn uri(path: &std::path::Path) -> String {
    let bytes = path.as_os_str().as_encoded_bytes();
    let bytes = bytes.strip_prefix(b"./").unwrap_or(bytes);
    let separated: std::borrow::Cow<'_, [u8]> = if cfg!(windows) {
        std::borrow::Cow::Owned(
            bytes
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(bytes)
    };
    percent_encoding::percent_encode(&separated, URI_PATH_KEEPS).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One finding of a planted key, at `path` (exact bytes).
    fn finding_at(path: &[u8]) -> Finding {
        let scanner = crate::Scanner::new(None).unwrap();
        let key = format!("sk-proj-{}", keyforge_types::random_base62(48));
        let mut found = scanner.findings(
            "x",
            format!("OPENAI_API_KEY={key}\n").as_bytes(),
            crate::Preview::Masked,
        );
        assert_eq!(found.len(), 1);
        let mut finding = found.remove(0);
        (finding.path, finding.path_base64) = crate::path_names(path);
        finding
    }

    fn text_of(findings: &[Finding], stats: &Stats) -> String {
        let mut out = Vec::new();
        text(&mut out, findings, stats).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Issue #16, forged text output: a file name (or a preview) holding a
    /// newline, a carriage return, ESC, a C1 control or a bidi override
    /// prints as one line of visible escapes, never as a line that looks
    /// like another finding or moves the cursor.
    #[test]
    fn control_characters_in_names_and_previews_cannot_forge_text_output() {
        let forged = "a.env\nfake.env:9:9: openai-api-key: OpenAI\r\x1b[2J\u{9b}31m\u{202e}vne.\u{2066}\\x41";
        let mut finding = finding_at(forged.as_bytes());
        finding.preview = "sk-\n    secret: \x1b]0;title\x07".into();
        let mut stats = Stats::default();
        stats.skip_exact(
            "b\n1 secret found.".into(),
            None,
            crate::walk::SkipReason::Binary,
        );
        let output = text_of(std::slice::from_ref(&finding), &stats);
        let lines: Vec<&str> = output.lines().collect();
        // Header, secret, fix; one skip; the summary: nothing more.
        assert_eq!(lines.len(), 5, "{output}");
        assert_eq!(
            lines[0],
            format!(
                "a.env\\nfake.env:9:9: openai-api-key: OpenAI\\r\\x1b[2J\\u{{009b}}31m\\u{{202e}}vne.\\u{{2066}}\\\\x41:1:16: {}: {}",
                finding.rule, finding.description
            )
        );
        assert_eq!(lines[1], "    secret: sk-\\n    secret: \\x1b]0;title\\x07");
        assert_eq!(lines[3], "not scanned: b\\n1 secret found. (binary)");
        for bad in ['\r', '\x1b', '\u{9b}', '\u{202e}', '\u{2066}', '\x07'] {
            assert!(!output.contains(bad), "{bad:?} in {output}");
        }
    }

    /// A name that is not UTF-8 prints with `\xNN` for each invalid byte
    /// in text (never U+FFFD, which two different names would share), and
    /// JSON keeps the lossy `path` plus the exact bytes in `path_base64`.
    #[test]
    fn a_name_that_is_not_utf8_is_printed_exactly() {
        let raw = b"dir/caf\xe9 \xff.env";
        let finding = finding_at(raw);
        assert_eq!(finding.path, "dir/caf\u{fffd} \u{fffd}.env");
        let output = text_of(std::slice::from_ref(&finding), &Stats::default());
        assert!(
            output.starts_with("dir/caf\\xe9 \\xff.env:1:16: "),
            "{output}"
        );
        let mut out = Vec::new();
        json(&mut out, std::slice::from_ref(&finding), &Stats::default()).unwrap();
        let value: Value = serde_json::from_slice(&out).unwrap();
        let reported = &value["findings"][0];
        assert_eq!(reported["path"], "dir/caf\u{fffd} \u{fffd}.env");
        use base64::Engine as _;
        let exact = base64::engine::general_purpose::STANDARD
            .decode(reported["path_base64"].as_str().unwrap())
            .unwrap();
        assert_eq!(exact, raw);
        // A UTF-8 name has no second field.
        let plain = finding_at(b"plain.env");
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("path_base64")
                .is_none()
        );
    }

    /// JSON escapes C0 controls by itself; DEL, C1 controls and bidi
    /// overrides are escaped too (as `\uNNNN`), in previews and paths
    /// alike, and decode to the same strings.
    #[test]
    fn json_escapes_what_a_terminal_would_act_on() {
        let mut finding = finding_at("x\u{202e}y\u{7f}.env".as_bytes());
        finding.preview = "sk-\u{9b}2J\n\u{2067}".into();
        let mut out = Vec::new();
        json(&mut out, std::slice::from_ref(&finding), &Stats::default()).unwrap();
        let output = String::from_utf8(out.clone()).unwrap();
        for bad in ['\u{9b}', '\u{202e}', '\u{2067}', '\u{7f}'] {
            assert!(!output.contains(bad), "{bad:?} raw in {output}");
        }
        assert!(output.contains("sk-\\u009b2J\\n\\u2067"), "{output}");
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["findings"][0]["preview"], finding.preview);
        assert_eq!(value["findings"][0]["path"], finding.path);
    }

    /// Issue #16, SARIF URIs: every byte outside RFC 3986's unreserved
    /// characters and `/` is percent-encoded: spaces, `#`, `?`, `%`, `:`,
    /// non-ASCII as its UTF-8 bytes, and bytes that are not UTF-8; the
    /// root's `file://` URI too.
    #[test]
    fn sarif_uris_percent_encode_every_reserved_and_non_ascii_byte() {
        let root = SarifRoot {
            directory: std::path::PathBuf::from("/work/my repo#1"),
        };
        for (path, expected) in [
            (&b"a b#c?d%e.env"[..], "a%20b%23c%3Fd%25e.env"),
            ("dir/café/ü.env".as_bytes(), "dir/caf%C3%A9/%C3%BC.env"),
            (b"raw\xff\xfe.env", "raw%FF%FE.env"),
            (
                b"x&y=z+w;[1]@!$'(),*.env",
                "x%26y%3Dz%2Bw%3B%5B1%5D%40%21%24%27%28%29%2C%2A.env",
            ),
            (b"keep-._~/AZaz09", "keep-._~/AZaz09"),
            (b"line\nbreak\\.env", "line%0Abreak%5C.env"),
        ] {
            assert_eq!(
                artifact(path, &root),
                json!({"uri": expected, "uriBaseId": SRCROOT}),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
        assert_eq!(
            directory_uri(&root.directory),
            "file:///work/my%20repo%231/"
        );
        assert_eq!(
            artifact(b"/elsewhere/\xff x.env", &root),
            json!({"uri": "file:///elsewhere/%FF%20x.env"})
        );
    }

    /// Gap 8 of issue #16: no `..` segment and no scheme-less absolute
    /// path: under the root, relative to %SRCROOT%; outside, `file://`.
    #[test]
    fn artifact_uris_never_climb_out_of_the_root() {
        let root = SarifRoot {
            directory: std::path::PathBuf::from("/work/repo"),
        };
        for (path, expected) in [
            (
                "src/a.env",
                json!({"uri": "src/a.env", "uriBaseId": SRCROOT}),
            ),
            (
                "./src/../b.env",
                json!({"uri": "b.env", "uriBaseId": SRCROOT}),
            ),
            (
                "/work/repo/c.env",
                json!({"uri": "c.env", "uriBaseId": SRCROOT}),
            ),
            ("../other/d.env", json!({"uri": "file:///work/other/d.env"})),
            ("/tmp/x/../e.env", json!({"uri": "file:///tmp/e.env"})),
            (
                "app.tar:abc:/etc/f",
                json!({"uri": "app.tar%3Aabc%3A/etc/f", "uriBaseId": SRCROOT}),
            ),
            (
                "-",
                json!({"uri": "stdin", "description": {"text": "standard input"}}),
            ),
        ] {
            let artifact = artifact(path.as_bytes(), &root);
            assert_eq!(artifact, expected, "{path}");
            assert!(!artifact["uri"].as_str().unwrap().contains(".."), "{path}");
        }
    }
}
