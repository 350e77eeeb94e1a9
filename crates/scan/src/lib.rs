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
pub mod blocks;
pub mod engine;
pub mod git;
pub mod image;
pub mod redact;
pub mod report;
pub mod rules;
pub mod walk;

use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Serialize};

pub use engine::{Hit, LineIndex, Scanner};

/// One secret found.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    /// Where: a path, `-` for stdin, or `path@commit` style locations.
    /// A name that is not UTF-8 is here lossily (U+FFFD for each invalid
    /// byte); its exact bytes are in [`Finding::path_base64`].
    pub path: String,
    /// The exact bytes of a path that is not UTF-8, standard base64 (RFC
    /// 4648 §4, padded); absent when `path` is exact. Reports print the
    /// path from these bytes (`\xNN` in text, `%NN` in SARIF URIs).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub path_base64: Option<String>,
    pub line: usize,
    pub column: usize,
    /// The line the secret ends on (a private key block spans lines).
    #[serde(default)]
    pub end_line: usize,
    /// One past the secret's last character on `end_line`.
    pub end_column: usize,
    pub rule: String,
    pub description: String,
    /// The secret masked (`sk-proj-AbCd…(164 chars)`), or whole with
    /// `--show-secrets`.
    pub preview: String,
    /// HMAC-SHA-256 of the rule id and the secret under the repository's
    /// salt, for baselines and SARIF's `partialFingerprints`; not the
    /// secret, and no way to test guesses of it without the salt.
    pub fingerprint: String,
    /// The unsalted fingerprint of version 1 baselines, held in memory
    /// only to match such a baseline; never written out.
    #[serde(skip)]
    pub legacy_fingerprint: String,
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

impl Finding {
    /// The path's exact bytes: decoded from [`Finding::path_base64`] when
    /// it is set (and valid), else the UTF-8 of `path`.
    pub fn path_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        path_bytes(&self.path, self.path_base64.as_deref())
    }
}

/// A path's exact bytes from its text and optional base64 form (see
/// [`Finding::path_base64`]).
pub(crate) fn path_bytes<'a>(path: &'a str, exact: Option<&str>) -> std::borrow::Cow<'a, [u8]> {
    use base64::Engine as _;
    match exact.and_then(|exact| base64::engine::general_purpose::STANDARD.decode(exact).ok()) {
        Some(bytes) => std::borrow::Cow::Owned(bytes),
        None => std::borrow::Cow::Borrowed(path.as_bytes()),
    }
}

/// A file name as reports carry it: the text (lossy when the name is not
/// UTF-8) and, only then, its exact bytes in base64 (see
/// [`Finding::path_base64`]).
pub fn path_names(raw: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    match std::str::from_utf8(raw) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(raw).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(raw)),
        ),
    }
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

/// A finding's fingerprint: HMAC-SHA-256, keyed by the repository's salt,
/// of the rule id and the secret, cut to 128 bits. Keyed, because a plain
/// hash of a short secret (a password) lets anyone holding a report test
/// guesses offline.
pub fn fingerprint(salt: &[u8], rule: &str, secret: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut context = hmac::Context::with_key(&key);
    context.update(b"keyforge-scan-v2\0");
    context.update(rule.as_bytes());
    context.update(b"\0");
    context.update(secret);
    hex(&context.sign().as_ref()[..16])
}

/// A short, non-secret check of which salt fingerprints were made with
/// (a baseline records it, so one made with another salt is refused as
/// such instead of matching nothing).
pub fn salt_check(salt: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    hex(&hmac::sign(&key, b"keyforge-scan-salt-check").as_ref()[..8])
}

/// Version 1 fingerprints (unsalted SHA-256): only to match old baselines.
pub fn legacy_fingerprint(rule: &str, secret: &[u8]) -> String {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(b"keyforge-scan-v1\0");
    context.update(rule.as_bytes());
    context.update(b"\0");
    context.update(secret);
    hex(&context.finish().as_ref()[..16])
}

/// 32 random bytes, for a scanner whose caller sets no salt.
pub(crate) fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 32];
    // The kernel's random source first: aws-lc's generator seeds itself
    // from CPU jitter on its first use, about 420 million instructions
    // (callgrind) that every scan, a pre-commit hook's included, paid
    // for a salt that is most often replaced by the repository's.
    let kernel = std::fs::File::open("/dev/urandom")
        .and_then(|mut source| std::io::Read::read_exact(&mut source, &mut salt));
    if kernel.is_err() {
        // The system's random source failing leaves zeros: fingerprints
        // are then as weak as version 1's, never wrong.
        let _ = aws_lc_rs::rand::fill(&mut salt);
    }
    salt
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes scanned as one piece: larger inputs (a 100 MiB log, stdin) are
/// streamed in pieces of this size that overlap by [`CHUNK_OVERLAP`].
pub const CHUNK_BYTES: usize = 32 * 1024 * 1024;
/// Overlap of consecutive pieces: a secret starting in the first half of
/// the overlap is reported by the earlier piece, one starting later by the
/// next; either way its keyword and its whole span (a rule's window is at
/// most 64 KiB) are in the piece that reports it.
pub const CHUNK_OVERLAP: usize = 256 * 1024;

/// Where a piece of an input starts: its line, and the characters of that
/// line before it (0 at a line start).
#[derive(Debug, Clone, Copy)]
struct Origin {
    line: usize,
    column: usize,
}

impl Scanner {
    /// Scans one buffer and describes its findings, located at `path`.
    pub fn findings(&self, path: &str, data: &[u8], preview: Preview) -> Vec<Finding> {
        if data.len() <= CHUNK_BYTES + CHUNK_OVERLAP {
            let rule_path = (path != "-").then_some(path);
            let mut lines = LineIndex::new(data);
            return self
                .scan_deep_at(data, rule_path)
                .into_iter()
                .map(|(hit, secret)| {
                    let origin = Origin { line: 1, column: 0 };
                    self.describe(path, data, &mut lines, origin, hit, &secret, preview)
                })
                .collect();
        }
        let mut reader = data;
        // Reading from a slice cannot fail.
        self.findings_streamed(path, &mut reader, preview)
            .map(|(findings, _)| findings)
            .unwrap_or_default()
    }

    /// Scans everything `input` yields, in overlapping pieces of
    /// [`CHUNK_BYTES`], and describes the findings, located at `path`.
    /// Returns them and the number of bytes read.
    pub fn findings_streamed(
        &self,
        path: &str,
        input: &mut impl std::io::Read,
        preview: Preview,
    ) -> std::io::Result<(Vec<Finding>, u64)> {
        self.findings_in_pieces(path, input, preview, CHUNK_BYTES, CHUNK_OVERLAP)
    }

    /// [`Scanner::findings_streamed`] in pieces of `piece` bytes that
    /// overlap by `overlap` (tests make them small). Lines and columns
    /// count on across pieces: a piece that starts inside a line (one
    /// longer than a piece) carries the characters before it, in UTF-8 and
    /// UTF-16 alike; UTF-16 (decided on the first piece, as a whole input
    /// is) is cut on code units and every later piece is scanned with a
    /// byte order mark in front, so it is decoded in the input's order.
    fn findings_in_pieces(
        &self,
        path: &str,
        input: &mut impl std::io::Read,
        preview: Preview,
        piece: usize,
        overlap: usize,
    ) -> std::io::Result<(Vec<Finding>, u64)> {
        use std::io::Read as _;
        let mut findings = Vec::new();
        let mut buffer: Vec<u8> = Vec::new();
        let mut origin = Origin { line: 1, column: 0 };
        let mut total = 0u64;
        // Hits starting before this offset of `buffer` were reported.
        let mut reported_until = 0;
        let rule_path = (path != "-").then_some(path);
        let mut order: Option<Option<engine::Utf16>> = None;
        loop {
            // Fill the piece (the buffer grows only as data arrives).
            let want = (piece + overlap - buffer.len()) as u64;
            let read = std::io::Read::by_ref(input)
                .take(want)
                .read_to_end(&mut buffer)?;
            total += read as u64;
            let eof = (read as u64) < want;
            let first = order.is_none();
            let utf16 = *order.get_or_insert_with(|| engine::utf16_order(&buffer));
            // Later pieces of UTF-16 are scanned behind a byte order mark
            // (`shift` bytes before the buffer's first).
            let data: std::borrow::Cow<'_, [u8]> = match utf16 {
                Some(order) if !first => {
                    let mut marked = match order {
                        engine::Utf16::Little => vec![0xff, 0xfe],
                        engine::Utf16::Big => vec![0xfe, 0xff],
                    };
                    marked.extend_from_slice(&buffer);
                    std::borrow::Cow::Owned(marked)
                }
                _ => std::borrow::Cow::Borrowed(&buffer),
            };
            let shift = data.len() - buffer.len();
            let report_until = if eof {
                buffer.len()
            } else {
                buffer.len() - overlap / 2
            };
            let hits = self.scan_deep_at(&data, rule_path);
            let mut lines = LineIndex::new(&data);
            for (hit, secret) in hits {
                let start = hit.start.saturating_sub(shift);
                if start < reported_until || start >= report_until {
                    continue;
                }
                findings
                    .push(self.describe(path, &data, &mut lines, origin, hit, &secret, preview));
            }
            if eof {
                return Ok((findings, total));
            }
            // The next piece starts at a line start in the overlap, or
            // (a line longer than that) at a character's first byte.
            let nominal = buffer.len() - overlap;
            let low = nominal - overlap / 4;
            let next = match utf16 {
                None => memchr::memrchr(b'\n', &buffer[low..nominal]).map_or_else(
                    || {
                        let mut at = nominal;
                        while at > low && (buffer[at] & 0xc0) == 0x80 {
                            at -= 1;
                        }
                        at
                    },
                    |i| low + i + 1,
                ),
                Some(order) => {
                    // Code units start at even offsets (a BOM is one).
                    let unit = |at: usize| match order {
                        engine::Utf16::Little => u16::from_le_bytes([buffer[at], buffer[at + 1]]),
                        engine::Utf16::Big => u16::from_be_bytes([buffer[at], buffer[at + 1]]),
                    };
                    let nominal = nominal & !1;
                    let low = (low + 1) & !1;
                    (low..nominal)
                        .step_by(2)
                        .rev()
                        .find(|&at| unit(at) == u16::from(b'\n'))
                        .map_or_else(
                            // Not between the halves of a surrogate pair.
                            || {
                                nominal
                                    - 2 * usize::from((0xd800..0xdc00).contains(&unit(nominal - 2)))
                            },
                            |at| at + 2,
                        )
                }
            };
            let (line, column) = match utf16 {
                Some(order) => lines.utf16_position(order, next + shift),
                None => lines.locate_chars(next),
            };
            origin = Origin {
                line: origin.line + line - 1,
                column: if line == 1 {
                    origin.column + column - 1
                } else {
                    column - 1
                },
            };
            reported_until = report_until - next;
            drop(data);
            buffer.drain(..next);
        }
    }

    /// One hit as a finding; `lines` indexes `data`, which starts at
    /// `origin` of the input.
    #[expect(clippy::too_many_arguments, reason = "one private call site")]
    fn describe(
        &self,
        path: &str,
        data: &[u8],
        lines: &mut LineIndex<'_>,
        origin: Origin,
        hit: Hit,
        secret: &[u8],
        preview: Preview,
    ) -> Finding {
        let rule = &self.rules()[hit.rule];
        // Columns count characters of the text (SARIF's
        // unicodeCodePoints), in UTF-16 input too; the end is one past the
        // secret's last character, on that character's line.
        let (line, column, end_line, end_column) = match engine::utf16_order(data) {
            Some(order) => {
                let (line, column) = lines.utf16_position(order, hit.start);
                let (end_line, end_column) = lines.utf16_position(order, hit.end);
                (line, column, end_line, end_column)
            }
            None => {
                let chars = |bytes: &[u8]| String::from_utf8_lossy(bytes).chars().count();
                let (line, column) = lines.locate_chars(hit.start);
                let last = hit.end.saturating_sub(1).max(hit.start);
                let (end_line, end_column) = match memchr::memrchr(b'\n', &data[hit.start..=last]) {
                    // The secret's own characters after the column: a
                    // long line's prefix is not counted again.
                    None => (line, column + chars(&data[hit.start..hit.end])),
                    Some(i) => (
                        line + memchr::memchr_iter(b'\n', &data[hit.start..=last]).count(),
                        chars(&data[hit.start + i + 1..hit.end]) + 1,
                    ),
                };
                (line, column, end_line, end_column)
            }
        };
        // On the data's first line, the characters before it count too.
        let carried = |on: usize, column: usize| {
            if on == 1 {
                column + origin.column
            } else {
                column
            }
        };
        Finding {
            path: path.to_owned(),
            path_base64: None,
            line: origin.line + line - 1,
            column: carried(line, column),
            end_line: origin.line + end_line - 1,
            end_column: carried(end_line, end_column),
            rule: rule.id.clone(),
            description: rule.description.clone(),
            preview: match preview {
                Preview::Masked => mask(secret),
                Preview::Redacted => redacted(secret),
                Preview::Full => String::from_utf8_lossy(secret).into_owned(),
            },
            fingerprint: fingerprint(self.fingerprint_salt(), &rule.id, secret),
            legacy_fingerprint: legacy_fingerprint(&rule.id, secret),
            fix: rule.fix.clone(),
            keyforge_key: rule.validation == rules::Validation::KfChecksum,
            revocation: None,
            commit: None,
            author: None,
            date: None,
        }
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
            let location = || match blob.commit.as_str() {
                "" => blob.path.clone(),
                commit => format!("{}@{commit}", blob.path),
            };
            if data.len() as u64 > options.max_file_bytes {
                stats.skip(location(), walk::SkipReason::TooLarge);
                return;
            }
            if !options.binary && Scanner::is_binary(data) {
                stats.skip(location(), walk::SkipReason::Binary);
                return;
            }
            stats.files += 1;
            stats.bytes += data.len() as u64;
            for mut finding in self.findings(&blob.path, data, options.preview) {
                finding.path_base64.clone_from(&blob.path_base64);
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

    /// The secrets in commit and tag messages, each reported at the
    /// message's location (`(commit message)`, `(tag message: NAME)`)
    /// with the commit or tag object's id in `commit`, its author (the
    /// tagger) and date.
    pub fn message_findings(&self, messages: &[git::Message], preview: Preview) -> Vec<Finding> {
        let mut findings = Vec::new();
        for message in messages {
            for mut finding in self.findings(&message.location, &message.text, preview) {
                finding.commit = Some(message.object.clone());
                finding.author = Some(message.author.clone());
                finding.date = Some(message.date.clone());
                findings.push(finding);
            }
        }
        findings
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

    fn utf16le(text: &str) -> Vec<u8> {
        let mut out = vec![0xff, 0xfe];
        for unit in text.encode_utf16() {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        out
    }

    /// Gap 7 of issue #16: in UTF-16 text, columns count characters of the
    /// decoded text (as in UTF-8), not bytes; a byte 0x0A inside another
    /// code unit (`Ċ`, U+010A) does not end a line.
    #[test]
    fn utf16_findings_are_located_in_characters() {
        let scanner = Scanner::new(None).unwrap();
        let token = keyforge_types::random_base62(40);
        for (text, line, column) in [
            (format!("API_TOKEN={token}\r\n"), 1, 11),
            (format!("é=Ċ\r\nAPI_TOKEN={token}\r\n"), 2, 11),
            (format!("# 😀 Ċ\r\n  API_TOKEN=\"{token}\"\r\n"), 2, 14),
        ] {
            let utf8 = scanner.findings("a.env", text.as_bytes(), Preview::Masked);
            let utf16 = scanner.findings("a.env", &utf16le(&text), Preview::Masked);
            assert_eq!(utf8.len(), 1, "{text}");
            assert_eq!(utf16.len(), 1, "{text}");
            for finding in [&utf8[0], &utf16[0]] {
                assert_eq!((finding.line, finding.column), (line, column), "{text}");
                assert_eq!(finding.end_line, line);
                assert_eq!(finding.end_column, column + 40, "{text}");
            }
        }
    }

    /// Issue #16: columns on a line longer than a piece (32 MiB in use,
    /// 4 KiB here) restarted in each piece. Pieces carry the line's
    /// characters: every finding of a streamed input, in UTF-8 and in
    /// UTF-16 (both orders, with and without a BOM), is where a scan of
    /// the whole buffer puts it, line, column and end alike.
    #[test]
    fn columns_on_lines_longer_than_a_piece_count_on_across_pieces() {
        let scanner = Scanner::new(None).unwrap();
        for filler in ["ab ", "é ", "😀 x", "Ċ\u{2028}"] {
            let mut text = String::from("first line\n");
            for line in 0..2 {
                for i in 0..9 {
                    text.push_str(&filler.repeat(150 + 37 * i + line));
                    let key = format!(
                        "sk-proj-{}T3BlbkFJ{}",
                        keyforge_types::random_base62(40),
                        keyforge_types::random_base62(40)
                    );
                    text.push_str(&format!(" OPENAI_API_KEY={key} "));
                }
                text.push('\n');
            }
            let encode = |order: Option<engine::Utf16>, bom: bool| -> Vec<u8> {
                let Some(order) = order else {
                    return text.clone().into_bytes();
                };
                let mut out = match (bom, order) {
                    (false, _) => Vec::new(),
                    (true, engine::Utf16::Little) => vec![0xff, 0xfe],
                    (true, engine::Utf16::Big) => vec![0xfe, 0xff],
                };
                for unit in text.encode_utf16() {
                    out.extend_from_slice(&match order {
                        engine::Utf16::Little => unit.to_le_bytes(),
                        engine::Utf16::Big => unit.to_be_bytes(),
                    });
                }
                out
            };
            for (order, bom) in [
                (None, false),
                (Some(engine::Utf16::Little), false),
                (Some(engine::Utf16::Little), true),
                (Some(engine::Utf16::Big), false),
                (Some(engine::Utf16::Big), true),
            ] {
                // Without a BOM, UTF-16 is recognised by its ASCII text.
                if order.is_some() && !bom && !filler.is_ascii() {
                    continue;
                }
                let data = encode(order, bom);
                let whole = scanner.findings("x.txt", &data, Preview::Masked);
                assert_eq!(whole.len(), 18, "{filler:?} {order:?} {bom}");
                let (streamed, read) = scanner
                    .findings_in_pieces("x.txt", &mut data.as_slice(), Preview::Masked, 4096, 1024)
                    .unwrap();
                assert_eq!(read, data.len() as u64);
                assert!(data.len() > 4 * 4096, "several pieces");
                let place = |f: &Finding| {
                    (
                        f.line,
                        f.column,
                        f.end_line,
                        f.end_column,
                        f.fingerprint.clone(),
                    )
                };
                assert_eq!(
                    streamed.iter().map(place).collect::<Vec<_>>(),
                    whole.iter().map(place).collect::<Vec<_>>(),
                    "{filler:?} {order:?} bom={bom}"
                );
            }
        }
    }

    /// Gap 9: fingerprints are keyed: stable for one salt, different for
    /// another, and not the unsalted hash an attacker could compute.
    #[test]
    fn fingerprints_are_keyed_by_the_salt() {
        let password = ["hunter", "22"].concat();
        let secret = password.as_bytes();
        let a = fingerprint(b"salt-a", "password-assignment", secret);
        assert_eq!(a, fingerprint(b"salt-a", "password-assignment", secret));
        assert_ne!(a, fingerprint(b"salt-b", "password-assignment", secret));
        assert_ne!(a, legacy_fingerprint("password-assignment", secret));
        assert_eq!(a.len(), 32);
        let mut scanner = Scanner::new(None).unwrap();
        scanner.set_fingerprint_salt(b"salt-a".to_vec());
        let line = format!("DB_PASSWORD={password}");
        let found = scanner.findings("x", line.as_bytes(), Preview::Masked);
        assert_eq!(found[0].fingerprint, a);
        assert_eq!(
            found[0].legacy_fingerprint,
            legacy_fingerprint("password-assignment", secret)
        );
        let json = serde_json::to_string(&found[0]).unwrap();
        assert!(!json.contains(&found[0].legacy_fingerprint), "{json}");
    }

    /// Old (version 1, unsalted) baselines still match; a version 2
    /// baseline made with another salt is refused, not silently useless.
    #[test]
    fn old_baselines_still_load_and_another_salt_is_refused() {
        let mut scanner = Scanner::new(None).unwrap();
        scanner.set_fingerprint_salt(b"salt-a".to_vec());
        let password = ["hunter", "22"].concat();
        let line = format!("DB_PASSWORD={password}");
        let found = scanner.findings("x", line.as_bytes(), Preview::Masked);
        let v1 = format!(
            r#"{{"version": 1, "findings": [{{"fingerprint": "{}", "rule": "password-assignment", "path": "x", "line": 1}}]}}"#,
            legacy_fingerprint("password-assignment", password.as_bytes())
        );
        let old = baseline::Baseline::parse(&v1).unwrap();
        assert!(old.is_legacy());
        let here = baseline::PathBase::at(std::path::PathBuf::from("/repo"));
        assert!(
            old.filter(found.clone(), b"salt-a", &here)
                .unwrap()
                .is_empty()
        );
        let v2 = baseline::Baseline::of(&found, b"salt-a", &here);
        assert_eq!(v2.version, 3);
        let text = serde_json::to_string(&v2).unwrap();
        assert!(
            !text.contains("salt-a"),
            "the salt is not in the file: {text}"
        );
        let v2 = baseline::Baseline::parse(&text).unwrap();
        assert!(
            v2.filter(found.clone(), b"salt-a", &here)
                .unwrap()
                .is_empty()
        );
        let refused = v2.filter(found, b"salt-b", &here).unwrap_err();
        assert!(refused.contains("another salt"), "{refused}");
    }

    /// Issue #16, path-agnostic baselines: a baselined secret copied into
    /// another file is reported there; at its own path it stays known
    /// when its line moves, and whichever directory the scan names it
    /// from. Version 1 and 2 baselines still match at any path.
    #[test]
    fn a_baselined_secret_copied_into_another_file_is_reported() {
        let mut scanner = Scanner::new(None).unwrap();
        scanner.set_fingerprint_salt(b"salt-a".to_vec());
        let password = format!("Pw{}", keyforge_types::random_base62(14));
        let line = format!("DB_PASSWORD={password}\n");
        let moved = format!("# a comment\n\n{line}");
        let root = baseline::PathBase::at(std::path::PathBuf::from("/repo"));
        let known = scanner.findings("config/app.env", line.as_bytes(), Preview::Masked);
        let baseline = baseline::Baseline::of(&known, b"salt-a", &root);
        assert_eq!(baseline.findings[0].path, "config/app.env");
        assert_eq!(baseline.findings[0].rule, "password-assignment");
        let text = serde_json::to_string(&baseline).unwrap();
        let baseline = baseline::Baseline::parse(&text).unwrap();
        let scan = |path: &str, data: &str, from: &str| {
            let found = scanner.findings(path, data.as_bytes(), Preview::Masked);
            let paths = baseline::PathBase {
                from: std::path::PathBuf::from(from),
                root: std::path::PathBuf::from("/repo"),
            };
            baseline.filter(found, b"salt-a", &paths).unwrap()
        };
        assert!(
            scan("config/app.env", &moved, "/repo").is_empty(),
            "line moved"
        );
        assert!(scan("./config/../config/app.env", &line, "/repo").is_empty());
        assert!(
            scan("app.env", &line, "/repo/config").is_empty(),
            "from a subdirectory"
        );
        assert!(scan("/repo/config/app.env", &line, "/elsewhere").is_empty());
        let copied = scan("deploy/prod.env", &line, "/repo");
        assert_eq!(copied.len(), 1, "a copy in another file is new");
        assert_eq!(copied[0].path, "deploy/prod.env");
        // A version 2 baseline (path-agnostic) accepts the copy, as before.
        let mut v2: serde_json::Value = serde_json::from_str(&text).unwrap();
        v2["version"] = 2.into();
        let v2 = baseline::Baseline::parse(&v2.to_string()).unwrap();
        assert!(v2.is_path_agnostic());
        let found = scanner.findings("deploy/prod.env", line.as_bytes(), Preview::Masked);
        assert!(v2.filter(found, b"salt-a", &root).unwrap().is_empty());
    }
}
