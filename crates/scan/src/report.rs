//! Findings as text (for people), JSON (for scripts) and SARIF 2.1.0 (for
//! GitHub code scanning and other SARIF viewers).

use std::io::Write;

use serde_json::{Value, json};

use crate::Finding;
use crate::rules::Rule;

/// `path:line:column: rule: description`, the masked secret, and the fix.
pub fn text(out: &mut impl Write, findings: &[Finding]) -> std::io::Result<()> {
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
    match findings.len() {
        0 => writeln!(out, "No secrets found.")?,
        1 => writeln!(out, "1 secret found.")?,
        n => writeln!(out, "{n} secrets found.")?,
    }
    Ok(())
}

pub fn json(out: &mut impl Write, findings: &[Finding]) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &json!({ "findings": findings }))?;
    writeln!(out)
}

/// A SARIF 2.1.0 log with one run: every rule as a reporting descriptor,
/// every finding as an `error` result with its region and fingerprint.
pub fn sarif_value(findings: &[Finding], rules: &[Rule], version: &str) -> Value {
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
        .map(|finding| {
            let index = rules.iter().position(|rule| rule.id == finding.rule);
            let mut result = json!({
                "ruleId": finding.rule,
                "level": "error",
                "message": {"text": format!("{}: {}", finding.description, finding.preview)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&finding.path)},
                        "region": {
                            "startLine": finding.line,
                            "startColumn": finding.column,
                            "endLine": finding.line,
                            "endColumn": finding.end_column,
                        }
                    }
                }],
                "partialFingerprints": {"keyforgeSecret/v1": finding.fingerprint},
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
            "results": results,
        }]
    })
}

pub fn sarif(
    out: &mut impl Write,
    findings: &[Finding],
    rules: &[Rule],
    version: &str,
) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, &sarif_value(findings, rules, version))?;
    writeln!(out)
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
