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

/// `path:line:column: rule: description`, the masked secret, and the fix;
/// then a summary line that also counts what was not scanned.
pub fn text(out: &mut impl Write, findings: &[Finding], stats: &Stats) -> std::io::Result<()> {
    for finding in findings {
        writeln!(
            out,
            "{}:{}:{}: {}: {}",
            finding.path, finding.line, finding.column, finding.rule, finding.description
        )?;
        writeln!(out, "    secret: {}", finding.preview)?;
        if let Some(commit) = &finding.commit {
            writeln!(
                out,
                "    commit: {commit} ({}, {})",
                finding.author.as_deref().unwrap_or(""),
                finding.date.as_deref().unwrap_or("")
            )?;
        }
        if let Some(revocation) = &finding.revocation {
            writeln!(out, "    revoked: {revocation}")?;
        }
        if !finding.fix.is_empty() {
            writeln!(out, "    fix: {}", finding.fix)?;
        }
    }
    for skipped in &stats.skipped {
        writeln!(
            out,
            "not scanned: {} ({})",
            skipped.path,
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
    serde_json::to_writer_pretty(&mut *out, &value)?;
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
            let mut result = json!({
                "ruleId": finding.rule,
                "level": "error",
                "message": {"text": format!("{}: {}", finding.description, finding.preview)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": artifact(&finding.path, root),
                        "region": {
                            "startLine": finding.line.max(1),
                            "startColumn": finding.column.max(1),
                            "endLine": finding.end_line.max(finding.line).max(1),
                            "endColumn": finding.end_column.max(1),
                        }
                    }
                }],
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
    serde_json::to_writer_pretty(
        &mut *out,
        &sarif_value(findings, rules, version, stats, root),
    )?;
    writeln!(out)
}

/// A finding's artifact location: relative to `%SRCROOT%` when the path is
/// (or is under the root), a `file://` URI otherwise; `stdin` for `-`.
fn artifact(path: &str, root: &SarifRoot) -> Value {
    if path == "-" {
        return json!({"uri": "stdin", "description": {"text": "standard input"}});
    }
    // A path is resolved against the root and rid of `.` and `..` (GitHub
    // resolves a relative URI against the repository root, and a `..`
    // would climb out of it): under the root it is relative to
    // `%SRCROOT%`; outside (`keyforge scan ../other`, a file named by its
    // absolute path elsewhere) it is an absolute `file://` URI.
    let file = std::path::Path::new(path);
    let absolute = lexically_normal(&root.directory.join(file));
    match absolute.strip_prefix(lexically_normal(&root.directory)) {
        Ok(rest) if !rest.as_os_str().is_empty() => {
            // `app.tar:LAYER:/etc/x` (an image's layer): a colon in a
            // relative URI's first segment would read as a scheme.
            let relative = uri(&rest.to_string_lossy()).replace(':', "%3A");
            json!({"uri": relative, "uriBaseId": SRCROOT})
        }
        _ => json!({"uri": directory_uri(&absolute).trim_end_matches('/')}),
    }
}

/// `path` with `.` dropped and each `..` taking off the name before it
/// (without looking at the file system: the file may be gone, a blob of
/// history).
fn lexically_normal(path: &std::path::Path) -> std::path::PathBuf {
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
    let path = directory.to_string_lossy().replace('\\', "/");
    if !path.starts_with('/') {
        text.push('/');
    }
    text.push_str(&uri(&path));
    if !text.ends_with('/') {
        text.push('/');
    }
    text
}

/// A relative path as a SARIF URI (forward slashes, spaces and `%`
/// escaped).
fn uri(path: &str) -> String {
    let path = path.strip_prefix("./").unwrap_or(path);
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '?' => out.push_str("%3F"),
            '\\' => out.push('/'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let artifact = artifact(path, &root);
            assert_eq!(artifact, expected, "{path}");
            assert!(!artifact["uri"].as_str().unwrap().contains(".."), "{path}");
        }
    }
}
