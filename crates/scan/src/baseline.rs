//! A baseline: the fingerprints of findings already known (and being dealt
//! with), so they do not block new commits. It never holds a secret, nor
//! the salt its fingerprints are keyed with: only a short check of which
//! salt that was (see [`crate::fingerprint`]).
//!
//! Version 2 fingerprints are HMAC-SHA-256 under the repository's salt.
//! Version 1 baselines (unsalted SHA-256, which let a reader test guesses
//! of short secrets) still load and match; `keyforge scan` says to
//! recreate them.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::Finding;

/// The version this KeyForge writes.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Baseline {
    pub version: u32,
    /// [`crate::salt_check`] of the salt the fingerprints were made with
    /// (version 2).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub salt_check: Option<String>,
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
    /// A baseline of `findings`, whose fingerprints were keyed by `salt`.
    pub fn of(findings: &[Finding], salt: &[u8]) -> Self {
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
            version: VERSION,
            salt_check: Some(crate::salt_check(salt)),
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
        match baseline.version {
            1 => {}
            VERSION if baseline.salt_check.is_some() => {}
            VERSION => return Err("a version 2 baseline needs its `salt_check`".into()),
            other => {
                return Err(format!(
                    "baseline version {other} is not supported (this KeyForge writes version {VERSION})"
                ));
            }
        }
        Ok(baseline)
    }

    /// Whether this is a version 1 baseline (unsalted fingerprints).
    pub fn is_legacy(&self) -> bool {
        self.version == 1
    }

    /// Drops the findings the baseline knows (by fingerprint: the same
    /// secret stays known when its line or file moves). Findings keyed by
    /// another salt than the baseline's are refused, not matched against
    /// nothing.
    pub fn filter(&self, findings: Vec<Finding>, salt: &[u8]) -> Result<Vec<Finding>, String> {
        if let Some(check) = &self.salt_check
            && *check != crate::salt_check(salt)
        {
            return Err("this baseline's fingerprints were made with another salt (another repository, or another KEYFORGE_SCAN_SALT or .keyforge-scan-salt): scan with the same salt, or recreate the baseline with `keyforge scan baseline create`".into());
        }
        let known: HashSet<&str> = self
            .findings
            .iter()
            .map(|entry| entry.fingerprint.as_str())
            .collect();
        let legacy = self.is_legacy();
        Ok(findings
            .into_iter()
            .filter(|finding| {
                let fingerprint = if legacy {
                    &finding.legacy_fingerprint
                } else {
                    &finding.fingerprint
                };
                !known.contains(fingerprint.as_str())
            })
            .collect())
    }
}
