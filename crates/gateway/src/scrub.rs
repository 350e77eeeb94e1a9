//! Scrubbing secrets from upstream error bodies before they reach the client.
//! Providers sometimes echo part of a key in their errors ("Incorrect API key
//! provided: sk-proj-****abcd"). Three passes: the exact credentials of the
//! request; every secret `keyforge scan`'s rules find (the same engine as
//! `keyforge redact`, `[REDACTED:<rule>]`); and, more aggressively than a
//! scanner may be, anything shaped like a known API key, masked echoes
//! included.

use keyforge_scan::Scanner;
use regex::bytes::Regex;

#[derive(Debug)]
pub(crate) struct Scrubber {
    scanner: Scanner,
    patterns: Regex,
}

const REPLACEMENT: &[u8] = b"[REDACTED]";

impl Scrubber {
    pub(crate) fn new() -> Result<Self, String> {
        let patterns = Regex::new(concat!(
            r"kf_[a-z0-9][a-z0-9-]{0,23}_[0-9A-Za-z]{34}",
            r"|sk-ant-[A-Za-z0-9_\-]{16,}",
            r"|sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-*]{16,}",
            r"|AIza[0-9A-Za-z_\-]{35}",
        ))
        .map_err(|error| error.to_string())?;
        let scanner = Scanner::new(None).map_err(|error| error.to_string())?;
        Ok(Self { scanner, patterns })
    }

    /// Returns `body` with every occurrence of `exact` secrets and of known
    /// key shapes replaced by `[REDACTED]`.
    pub(crate) fn scrub(&self, body: &[u8], exact: &[&str]) -> Vec<u8> {
        let mut text = body.to_vec();
        for secret in exact.iter().filter(|secret| secret.len() >= 8) {
            text = replace_all(&text, secret.as_bytes());
        }
        let text = keyforge_scan::redact::redact_bytes(&self.scanner, &text);
        self.patterns.replace_all(&text, REPLACEMENT).into_owned()
    }
}

fn replace_all(haystack: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(index) = rest
        .windows(needle.len())
        .position(|window| window == needle)
    {
        out.extend_from_slice(&rest[..index]);
        out.extend_from_slice(REPLACEMENT);
        rest = &rest[index + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_exact_secrets_and_key_shapes() {
        let scrubber = Scrubber::new().unwrap();
        let fake_openai = format!("sk-proj-{}", "a1B2".repeat(10));
        let body = format!(
            r#"{{"error":"Incorrect API key provided: {fake_openai}. Also my-upstream-secret-1 and plain text."}}"#
        );
        let out =
            String::from_utf8(scrubber.scrub(body.as_bytes(), &["my-upstream-secret-1"])).unwrap();
        assert_eq!(
            out,
            r#"{"error":"Incorrect API key provided: [REDACTED]. Also [REDACTED] and plain text."}"#
        );
    }

    #[test]
    fn secrets_the_scanner_knows_are_named_by_rule() {
        let scrubber = Scrubber::new().unwrap();
        let groq = format!("gsk_{}", keyforge_types::random_base62(52));
        let body = format!(r#"{{"error":"upstream key {groq} is invalid"}}"#);
        let out = String::from_utf8(scrubber.scrub(body.as_bytes(), &[])).unwrap();
        assert_eq!(
            out,
            r#"{"error":"upstream key [REDACTED:groq-api-key] is invalid"}"#
        );
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let scrubber = Scrubber::new().unwrap();
        let body = br#"{"error":{"message":"The model `gpt-4o` does not exist","type":"invalid_request_error"}}"#;
        assert_eq!(scrubber.scrub(body, &[]), body.to_vec());
    }
}
