//! A baseline: the fingerprints of findings already known (and being dealt
//! with), so they do not block new commits. It never holds a secret, nor
//! the salt its fingerprints are keyed with: only a short check of which
//! salt that was (see [`crate::fingerprint`]).
//!
//! Version 3 (this KeyForge's) records each known secret with its rule and
//! its path relative to the repository's root, and a finding is known only
//! when the same fingerprint is recorded at the same path (its line may
//! move): a known secret copied into another file is reported there.
//! Version 2 fingerprints are the same HMAC-SHA-256 under the repository's
//! salt, but matched at any path; version 1 baselines (unsalted SHA-256,
//! which let a reader test guesses of short secrets) too. Both still load
//! and match as they did; `keyforge scan` says once that they match
//! regardless of path and how to recreate them.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Finding;

/// The version this KeyForge writes.
pub const VERSION: u32 = 3;

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
    /// Relative to the repository's root, `/`-separated (version 3; in
    /// older versions, as the scan printed it, and not matched); lossy
    /// (U+FFFD) when the name is not UTF-8.
    pub path: String,
    /// The path's exact bytes in standard base64, only for a name that is
    /// not UTF-8 (as [`Finding::path_base64`]); matched by these bytes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_base64: Option<String>,
    /// Where it was when recorded (informative: lines move).
    pub line: usize,
    /// For a baseline of history (`--git`): the commit where the secret was
    /// first seen at this path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub commit: Option<String>,
}

/// How findings' paths become a baseline's: findings name files relative to
/// `from` (the working directory, or the repository for history), and a
/// baseline names them relative to `root` (the repository's top directory,
/// or the working directory outside a repository), so a baseline matches
/// whichever subdirectory a scan runs from.
#[derive(Debug, Clone)]
pub struct PathBase {
    /// The directory findings' relative paths start from, absolute.
    pub from: PathBuf,
    /// The repository's root, absolute.
    pub root: PathBuf,
}

impl PathBase {
    /// Paths relative to `directory` (absolute), recorded as they are.
    pub fn at(directory: PathBuf) -> Self {
        Self {
            from: directory.clone(),
            root: directory,
        }
    }

    /// `path` relative to the root, lexically normalized, `/`-separated;
    /// a path outside the root stays absolute.
    pub fn key(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.key_bytes(path.as_bytes())).into_owned()
    }

    /// [`PathBase::key`] of a path's exact bytes (a name need not be
    /// UTF-8), as bytes.
    pub fn key_bytes(&self, path: &[u8]) -> Vec<u8> {
        let path = path_of_bytes(path);
        let absolute = crate::report::lexically_normal(&self.from.join(path));
        let relative = absolute
            .strip_prefix(crate::report::lexically_normal(&self.root))
            .unwrap_or(&absolute);
        if relative.is_absolute() {
            return relative
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect();
        }
        relative
            .components()
            .map(|part| part.as_os_str().as_encoded_bytes())
            .collect::<Vec<_>>()
            .join(&b'/')
    }
}

/// A path from its exact bytes (on Unix any bytes; elsewhere a name is
/// UTF-8 or taken lossily).
fn path_of_bytes(bytes: &[u8]) -> PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt as _;
        PathBuf::from(std::ffi::OsStr::from_bytes(bytes))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(bytes).into_owned())
    }
}

impl Baseline {
    /// A baseline of `findings`, whose fingerprints were keyed by `salt`:
    /// each secret once per path, with the line (and for history, the
    /// commit) of its first finding there; findings of history come
    /// oldest first, so that is where it was first seen.
    pub fn of(findings: &[Finding], salt: &[u8], paths: &PathBase) -> Self {
        let mut seen: HashSet<(String, String, Vec<u8>)> = HashSet::new();
        let mut entries: Vec<BaselineEntry> = Vec::new();
        for finding in findings {
            let exact = paths.key_bytes(&finding.path_bytes());
            if !seen.insert((
                finding.fingerprint.clone(),
                finding.rule.clone(),
                exact.clone(),
            )) {
                continue;
            }
            let (path, path_base64) = crate::path_names(&exact);
            entries.push(BaselineEntry {
                fingerprint: finding.fingerprint.clone(),
                rule: finding.rule.clone(),
                path,
                path_base64,
                line: finding.line,
                commit: finding.commit.clone(),
            });
        }
        entries.sort_by(|a, b| (&a.path, a.line, &a.rule).cmp(&(&b.path, b.line, &b.rule)));
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
            2 | VERSION if baseline.salt_check.is_some() => {}
            version @ (2 | VERSION) => {
                return Err(format!(
                    "a version {version} baseline needs its `salt_check`"
                ));
            }
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

    /// Whether this baseline matches a fingerprint at any path (versions 1
    /// and 2, which recorded paths but did not match them).
    pub fn is_path_agnostic(&self) -> bool {
        self.version < 3
    }

    /// Drops the findings the baseline knows: the same fingerprint (of the
    /// same rule) at the same path, its line free to move; at any path for
    /// an older baseline ([`Baseline::is_path_agnostic`]). Findings keyed
    /// by another salt than the baseline's are refused, not matched
    /// against nothing.
    pub fn filter(
        &self,
        findings: Vec<Finding>,
        salt: &[u8],
        paths: &PathBase,
    ) -> Result<Vec<Finding>, String> {
        if let Some(check) = &self.salt_check
            && *check != crate::salt_check(salt)
        {
            return Err("this baseline's fingerprints were made with another salt (another repository, or another KEYFORGE_SCAN_SALT or .keyforge-scan-salt): scan with the same salt, or recreate the baseline with `keyforge scan baseline create`".into());
        }
        let legacy = self.is_legacy();
        if self.is_path_agnostic() {
            let known: HashSet<&str> = self
                .findings
                .iter()
                .map(|entry| entry.fingerprint.as_str())
                .collect();
            return Ok(findings
                .into_iter()
                .filter(|finding| {
                    let fingerprint = if legacy {
                        &finding.legacy_fingerprint
                    } else {
                        &finding.fingerprint
                    };
                    !known.contains(fingerprint.as_str())
                })
                .collect());
        }
        let known: HashSet<(&str, &str, Vec<u8>)> = self
            .findings
            .iter()
            .map(|entry| {
                (
                    entry.fingerprint.as_str(),
                    entry.rule.as_str(),
                    crate::path_bytes(&entry.path, entry.path_base64.as_deref()).into_owned(),
                )
            })
            .collect();
        Ok(findings
            .into_iter()
            .filter(|finding| {
                let path = paths.key_bytes(&finding.path_bytes());
                !known.contains(&(finding.fingerprint.as_str(), finding.rule.as_str(), path))
            })
            .collect())
    }
}
