//! Finding secrets: LLM provider keys, cloud and SaaS tokens, private keys,
//! and KeyForge's own `kf_` keys, in files, streams and logs.
//!
//! - [`rules`]: rules as data (built-in TOML, user files override by id).
//! - [`engine`]: one Aho-Corasick pass over all keywords, then only the
//!   rules that fired, over bytes; candidates confirmed by checksum, entropy
//!   and placeholder checks, and `keyforge:allow` comments.
//! - [`Finding`]: where a secret is, with a masked preview and a fingerprint
//!   (never the secret itself unless asked); [`report`] renders findings as
//!   text, JSON or SARIF 2.1.0; [`baseline`] records fingerprints of known
//!   findings so they do not block new commits.
//! - [`walk`]: files and directories, `.gitignore`-aware, in parallel.
//! - [`redact`]: the streaming log scrubber behind `keyforge redact`.
//!
//! No network, no async: the binary drives it.

pub mod baseline;
pub mod engine;
pub mod git;
pub mod image;
pub mod redact;
pub mod report;
pub mod rules;
pub mod walk;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};

pub use engine::{Hit, LineIndex, Scanner};

/// One secret found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// Where: a path, `-` for stdin, or `path@commit` style locations.
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub end_column: usize,
    pub rule: String,
    pub description: String,
    /// The secret masked (`sk-proj-AbCd…(164 chars)`), or whole with
    /// `--show-secrets`.
    pub preview: String,
    /// SHA-256 of the rule id and the secret, for baselines; not the secret.
    pub fingerprint: String,
    pub fix: String,
    /// Whether the secret is a KeyForge key (revocable by `--revoke`).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub keyforge_key: bool,
    /// Filled by `--revoke` for KeyForge keys: what happened.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revocation: Option<String>,
    /// For a finding in git history: the commit where the blob first
    /// appeared, its author and date.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub date: Option<String>,
}

/// How much of a secret a preview shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preview {
    Masked,
    /// Not a character of the secret: `[REDACTED] (164 chars)`.
    Redacted,
    Full,
}

/// `[REDACTED] (164 chars)`.
pub fn redacted(secret: &[u8]) -> String {
    format!(
        "[REDACTED] ({} chars)",
        String::from_utf8_lossy(secret).chars().count()
    )
}

/// Characters of the secret shown after its recognisable prefix.
const SHOWN: usize = 4;

/// `sk-proj-AbCd…(164 chars)`: the non-random prefix (up to the last `-`
/// or `_` among the first 16 characters) and four more characters.
pub fn mask(secret: &[u8]) -> String {
    let text = String::from_utf8_lossy(secret);
    let chars: Vec<char> = text.chars().collect();
    let head = chars
        .iter()
        .take(16)
        .rposition(|c| *c == '-' || *c == '_' || *c == '.')
        .map_or(0, |i| i + 1);
    // Never more than half of the secret.
    let shown = (head + SHOWN).min(chars.len() / 2);
    let prefix: String = chars[..shown].iter().collect();
    format!("{prefix}…({} chars)", chars.len())
}

pub fn fingerprint(rule: &str, secret: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"keyforge-scan-v1\0");
    context.update(rule.as_bytes());
    context.update(b"\0");
    context.update(secret);
    let digest = context.finish();
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Scanner {
    /// Scans one buffer and describes its findings, located at `path`.
    pub fn findings(&self, path: &str, data: &[u8], preview: Preview) -> Vec<Finding> {
        let hits = self.scan_deep(data);
        let mut lines = LineIndex::new(data);
        hits.iter()
            .map(|(hit, secret)| {
                let rule = &self.rules()[hit.rule];
                let secret = secret.as_slice();
                let (line, byte_column) = lines.locate(hit.start);
                // Columns count characters (SARIF's unicodeCodePoints).
                let chars = |bytes: &[u8]| String::from_utf8_lossy(bytes).chars().count();
                let column = chars(&data[hit.start + 1 - byte_column..hit.start]) + 1;
                Finding {
                    path: path.to_owned(),
                    line,
                    column,
                    end_column: column + chars(&data[hit.start..hit.end]),
                    rule: rule.id.clone(),
                    description: rule.description.clone(),
                    preview: match preview {
                        Preview::Masked => mask(secret),
                        Preview::Redacted => redacted(secret),
                        Preview::Full => String::from_utf8_lossy(secret).into_owned(),
                    },
                    fingerprint: fingerprint(&rule.id, secret),
                    fix: rule.fix.clone(),
                    keyforge_key: rule.validation == rules::Validation::KfChecksum,
                    revocation: None,
                    commit: None,
                    author: None,
                    date: None,
                }
            })
            .collect()
    }

    /// Scans git blobs (history or staged), each once; findings carry the
    /// blob's path and, for history, the commit where it first appeared.
    pub fn git_findings(
        &self,
        repo: &std::path::Path,
        blobs: &[git::BlobOrigin],
        options: &walk::WalkOptions,
    ) -> Result<(Vec<Finding>, walk::Stats), git::GitError> {
        let mut findings = Vec::new();
        let mut stats = walk::Stats::default();
        let wanted: Vec<git::BlobOrigin> = blobs
            .iter()
            .filter(|blob| !options.allow_paths.is_match(&blob.path))
            .cloned()
            .collect();
        git::read_blobs(repo, &wanted, |blob, data| {
            if data.len() as u64 > options.max_file_bytes {
                stats.skipped_large += 1;
                return;
            }
            if !options.binary && Scanner::is_binary(data) {
                stats.skipped_binary += 1;
                return;
            }
            stats.files += 1;
            stats.bytes += data.len() as u64;
            for mut finding in self.findings(&blob.path, data, options.preview) {
                if !blob.commit.is_empty() {
                    finding.commit = Some(blob.commit.clone());
                    finding.author = Some(blob.author.clone());
                    finding.date = Some(blob.date.clone());
                }
                findings.push(finding);
            }
        })?;
        Ok((findings, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_the_prefix_and_never_the_secret() {
        assert_eq!(
            mask(b"sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"),
            "sk-proj-AbCd…(44 chars)"
        );
        assert_eq!(mask(b"ABCDEFGHIJKLMNOPQRST"), "ABCD…(20 chars)");
        let short = mask(b"abcdefgh");
        assert_eq!(short, "abcd…(8 chars)");
    }
}
