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

    pub fn parse(text: &str) -> Result<Self, String> {
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
