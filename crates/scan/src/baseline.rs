//! A baseline: the fingerprints of findings already known (and being dealt
//! with), so they do not block new commits. It never holds a secret.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::Finding;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub version: u32,
    pub findings: Vec<BaselineEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BaselineEntry {
    pub fingerprint: String,
    pub rule: String,
    pub path: String,
    pub line: usize,
}

impl Baseline {
    pub fn of(findings: &[Finding]) -> Self {
        let mut entries: Vec<BaselineEntry> = findings
            .iter()
            .map(|finding| BaselineEntry {
                fingerprint: finding.fingerprint.clone(),
                rule: finding.rule.clone(),
                path: finding.path.clone(),
                line: finding.line,
            })
            .collect();
        entries.sort_by(|a, b| (&a.path, a.line, &a.rule).cmp(&(&b.path, b.line, &b.rule)));
        entries.dedup();
        Self {
            version: 1,
            findings: entries,
        }
    }

    /// Reads a baseline file; a scan report given in its place (JSON or
    /// SARIF) is refused as such.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
            let report_entry = value
                .get("findings")
                .and_then(|f| f.as_array())
                .and_then(|f| f.first())
                .is_some_and(|entry| {
                    entry.get("preview").is_some() || entry.get("description").is_some()
                });
            if value.get("runs").is_some()
                && value.get("version").and_then(|v| v.as_str()).is_some()
            {
                return Err("this is a SARIF scan report, not a baseline; create a baseline with `keyforge scan baseline create` (add `--git` for history)".into());
            }
            if report_entry || (value.get("findings").is_some() && value.get("version").is_none()) {
                return Err("this is a scan report (`keyforge scan --format json`), not a baseline; create a baseline with `keyforge scan baseline create` (add `--git` for history)".into());
            }
        }
        let baseline: Baseline = serde_json::from_str(text)
            .map_err(|error| format!("not a KeyForge baseline: {error}"))?;
        if baseline.version != 1 {
            return Err(format!(
                "baseline version {} is not supported (this KeyForge writes version 1)",
                baseline.version
            ));
        }
        Ok(baseline)
    }

    /// Drops the findings the baseline knows (by fingerprint: the same
    /// secret stays known when its line or file moves).
    pub fn filter(&self, findings: Vec<Finding>) -> Vec<Finding> {
        let known: HashSet<&str> = self
            .findings
            .iter()
            .map(|entry| entry.fingerprint.as_str())
            .collect();
        findings
            .into_iter()
            .filter(|finding| !known.contains(finding.fingerprint.as_str()))
            .collect()
    }
}
