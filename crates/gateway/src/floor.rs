//! The provider-key floor: every response header and body (streams
//! included) is searched for the exact provider key injected for the
//! request, in the encodings an echo takes, and each match is replaced by
//! `[REDACTED]`. Pattern-based scrubbing of error bodies ([`crate::scrub::Scrubber`])
//! stays on top of it; this is the guarantee underneath that holds for any
//! key shape, known or not.
//!
//! Encodings searched, for each secret:
//! - raw bytes;
//! - percent-escapes (`%HH`, upper or lower hex) and JSON `\u00HH` escapes
//!   (upper or lower hex), in any mix with raw bytes and with each other:
//!   a match is searched in a *decoded view* of the bytes, where escapes of
//!   bytes some needle holds are decoded, built only where there are such
//!   escapes (the common case costs one SIMD `memchr2`); the view also
//!   reads JSON's `\/` as `/`, for base64 echoed in JSON;
//! - base64, standard and URL-safe alphabets, at each of the three byte
//!   alignments the key can take inside a longer encoded text: the
//!   characters that depend only on the key's bytes (its "core"), which
//!   are the same with and without `=` padding.
//!
//! Streams: [`FloorStream`] holds back, between chunks, only a tail that
//! could begin a match (at most the longest encoded needle minus one byte),
//! never the whole stream; a chunk whose tail cannot begin a match passes
//! through as the same `Bytes`, uncopied.
//!
//! Every needle is searched with `memchr::memmem` (SIMD two-way search).
//! This module uses no other part of the gateway, so `fuzz/` includes it by
//! path.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;

/// What every match is replaced by.
pub(crate) const REPLACEMENT: &[u8] = b"[REDACTED]";

/// Secrets shorter than this are not searched: they would match ordinary
/// text (a provider key is 20 bytes or more; the existing scrubber uses the
/// same floor).
pub(crate) const MIN_SECRET_BYTES: usize = 8;

/// The longest original text one decoded byte can come from (`\u00HH`).
const MAX_ESCAPE_BYTES: usize = 6;

/// The precomputed needles of a request's secrets (built once per request,
/// or once per provider key version and shared).
#[derive(Debug, Clone)]
pub(crate) struct KeyFloor {
    needles: Vec<Finder<'static>>,
    /// Whether any needle starts with each byte, for the tail check.
    first_bytes: [bool; 256],
    /// Whether any needle holds each byte: an escape decoding to another
    /// byte cannot be part of a match, so it needs no decoded view.
    needle_bytes: [bool; 256],
    /// The most original bytes a match can span, minus one: what a stream
    /// may hold back.
    hold_back: usize,
}

impl KeyFloor {
    /// Precomputes every encoded needle of `secrets` (raw bytes: the
    /// provider key exactly as injected). Secrets shorter than
    /// [`MIN_SECRET_BYTES`] are skipped.
    pub(crate) fn new(secrets: &[&[u8]]) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET_BYTES) {
            needles.push(secret.to_vec());
            needles.extend(base64_needles(secret));
        }
        needles.sort();
        needles.dedup();
        let mut first_bytes = [false; 256];
        let mut needle_bytes = [false; 256];
        for needle in &needles {
            if let Some(&first) = needle.first() {
                first_bytes[usize::from(first)] = true;
            }
            for &byte in needle {
                needle_bytes[usize::from(byte)] = true;
            }
        }
        let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            hold_back: (longest * MAX_ESCAPE_BYTES).saturating_sub(1),
            first_bytes,
            needle_bytes,
            needles: needles
                .into_iter()
                .map(|needle| Finder::new(&needle).into_owned())
                .collect(),
        }
    }

    /// Whether there is nothing to search for.
    pub(crate) fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Returns `bytes` with every match replaced, or `None` if nothing matched.
    pub(crate) fn scrub(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let view = View::new(bytes, &self.needle_bytes);
        let matches = self.matches(&view, bytes.len());
        (!matches.is_empty()).then(|| replace(bytes, &matches))
    }

    /// Replaces the value of every header that holds a secret; a header that
    /// did keeps its name (and stays marked sensitive).
    pub(crate) fn scrub_headers(&self, headers: &mut http::HeaderMap) {
        if self.is_empty() {
            return;
        }
        for value in headers.values_mut() {
            if let Some(scrubbed) = self.scrub(value.as_bytes()) {
                // The replacement is visible ASCII and the rest were the
                // value's own bytes, so this only fails on a value that was
                // not valid to begin with; then the whole value goes.
                let mut new = http::HeaderValue::from_bytes(&scrubbed)
                    .unwrap_or(http::HeaderValue::from_static("[REDACTED]"));
                new.set_sensitive(true);
                *value = new;
            }
        }
    }

    /// A streaming scrubber for one body; it shares the floor, so it can
    /// live in a `'static` response body.
    pub(crate) fn stream(self: &Arc<Self>) -> FloorStream {
        FloorStream {
            floor: Arc::clone(self),
            carry: Bytes::new(),
        }
    }

    /// Matches in `view`, as sorted, merged ranges of original offsets.
    fn matches(&self, view: &View<'_>, original_len: usize) -> Vec<(usize, usize)> {
        let mut ranges = Vec::new();
        self.occurrences(view, original_len, &mut ranges);
        if view.decoded.is_some() {
            // A secret may itself hold text that reads as an escape (`\/`,
            // `%41`): the original bytes are searched too (found by fuzzing).
            self.occurrences(&View::identity(view.original), original_len, &mut ranges);
        }
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    fn occurrences(&self, view: &View<'_>, original_len: usize, ranges: &mut Vec<(usize, usize)>) {
        let haystack = view.bytes();
        for needle in &self.needles {
            // Every occurrence, overlapping ones included, so the union of
            // the ranges does not depend on where a stream was cut.
            let mut from = 0;
            while let Some(found) = haystack.get(from..).and_then(|rest| needle.find(rest)) {
                let start = from + found;
                let end = start + needle.needle().len();
                ranges.push((
                    view.original_start(start),
                    view.original_end(end, original_len),
                ));
                from = start + 1;
            }
        }
    }

    /// Where a stream must start holding back: before a match that could
    /// begin in `bytes` and run past its end, given the ranges `matches`
    /// already found.
    fn hold_from(&self, view: &View<'_>, bytes: &[u8], matches: &[(usize, usize)]) -> usize {
        let partial = self.partial_from(view, bytes);
        // A partial match overlapping a found range could merge with it:
        // hold the whole range, unless that would hold more than the bound
        // (only a needle that overlaps itself, repeated, gets there); then
        // the range is released as found.
        match matches
            .iter()
            .find(|range| range.0 <= partial && partial < range.1)
        {
            Some(range) if bytes.len() - range.0 <= self.hold_back => range.0,
            Some(range) => range.1,
            None => partial.max(matches.last().map_or(0, |range| range.1)),
        }
    }

    /// The earliest original offset where a match could begin and run past
    /// the end of `bytes`, or the length of `bytes`.
    fn partial_from(&self, view: &View<'_>, bytes: &[u8]) -> usize {
        let in_view = self.partial_in(view, bytes);
        if view.decoded.is_some() {
            in_view.min(self.partial_in(&View::identity(bytes), bytes))
        } else {
            in_view
        }
    }

    fn partial_in(&self, view: &View<'_>, bytes: &[u8]) -> usize {
        let window_start = bytes.len().saturating_sub(self.hold_back);
        let decoded = view.bytes();
        // An escape cut by the end of the bytes runs to the end; what comes
        // before it is compared with the needles' beginnings.
        let end = view
            .open_escape
            .map_or(decoded.len(), |start| view.decoded_index_at_or_after(start));
        for index in view.decoded_index_at_or_after(window_start)..end {
            let Some(&byte) = decoded.get(index) else {
                break;
            };
            if !self.first_bytes[usize::from(byte)] {
                continue;
            }
            let tail = decoded.get(index..end).unwrap_or_default();
            if self.needles.iter().any(|needle| {
                needle.needle().len() > tail.len() && needle.needle().starts_with(tail)
            }) {
                return view.original_start(index);
            }
        }
        // The cut escape itself may decode to a needle's first byte.
        match view.open_escape {
            Some(start) if start >= window_start => start,
            _ => bytes.len(),
        }
    }
}

/// Scrubs one body as it streams: [`FloorStream::feed`] each chunk, then
/// [`FloorStream::finish`] once.
#[derive(Debug)]
pub(crate) struct FloorStream {
    floor: Arc<KeyFloor>,
    /// Held-back tail of the previous chunk (shorter than the floor's
    /// hold-back), which could begin a match.
    carry: Bytes,
}

impl FloorStream {
    /// Returns the part of `carry + chunk` that can be released, scrubbed.
    /// The same `Bytes` comes back, uncopied, when nothing is held back,
    /// nothing matched and nothing was held before; a prefix of it, still
    /// uncopied, when only its tail is held.
    pub(crate) fn feed(&mut self, chunk: Bytes) -> Bytes {
        if self.floor.is_empty() {
            return chunk;
        }
        let buffer = if self.carry.is_empty() {
            chunk
        } else {
            let mut joined = BytesMut::with_capacity(self.carry.len() + chunk.len());
            joined.extend_from_slice(&self.carry);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        };
        let view = View::new(&buffer, &self.floor.needle_bytes);
        let matches = self.floor.matches(&view, buffer.len());
        let hold = self.floor.hold_from(&view, &buffer, &matches);
        self.carry = buffer.slice(hold..);
        let released: Vec<(usize, usize)> = matches
            .into_iter()
            .filter(|range| range.1 <= hold)
            .collect();
        if released.is_empty() {
            buffer.slice(..hold)
        } else {
            Bytes::from(replace(buffer.get(..hold).unwrap_or_default(), &released))
        }
    }

    /// The body's last chunk: [`FloorStream::feed`] and
    /// [`FloorStream::finish`] in one. With nothing held back from earlier
    /// chunks (a body in one frame, the common JSON response) it is one
    /// search of the chunk, and the same `Bytes` comes back uncopied when
    /// nothing matched.
    pub(crate) fn feed_last(&mut self, chunk: Bytes) -> Bytes {
        if self.carry.is_empty() {
            return match self.floor.scrub(&chunk) {
                Some(scrubbed) => Bytes::from(scrubbed),
                None => chunk,
            };
        }
        let released = self.feed(chunk);
        let tail = self.finish();
        join(released, tail)
    }

    /// Releases the held-back tail at the end of the body, scrubbed: it
    /// may hold a match kept back because a longer one could have
    /// overlapped it (found by fuzzing).
    pub(crate) fn finish(&mut self) -> Bytes {
        let carry = std::mem::take(&mut self.carry);
        match self.floor.scrub(&carry) {
            Some(scrubbed) => Bytes::from(scrubbed),
            None => carry,
        }
    }
}

/// `head` then `tail`, copied only when both hold bytes.
pub(crate) fn join(head: Bytes, tail: Bytes) -> Bytes {
    if tail.is_empty() {
        return head;
    }
    if head.is_empty() {
        return tail;
    }
    let mut joined = BytesMut::with_capacity(head.len() + tail.len());
    joined.extend_from_slice(&head);
    joined.extend_from_slice(&tail);
    joined.freeze()
}

/// `bytes` with each sorted, disjoint `(start, end)` range replaced.
fn replace(bytes: &[u8], ranges: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for &(start, end) in ranges {
        out.extend_from_slice(bytes.get(at..start).unwrap_or_default());
        out.extend_from_slice(REPLACEMENT);
        at = end;
    }
    out.extend_from_slice(bytes.get(at..).unwrap_or_default());
    out
}

/// The base64 texts of `secret`: for each alignment (0, 1 or 2 bytes of
/// other data before it), in both alphabets, the characters that depend on
/// the secret's bytes only. They are found with and without `=` padding
/// after them; the one or two characters around them that mix in other
/// data's bits (at most 4 bits of the secret at each end) stay. Needles
/// for the padded ending were dropped on purpose: being longer versions of
/// the same match, they made a stream's output depend on where it was cut.
fn base64_needles(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut needles = Vec::new();
    for alignment in 0..3usize {
        let mut data = vec![0u8; alignment];
        data.extend_from_slice(secret);
        // Characters before `skip` mix in the other data's bits.
        let skip = (alignment * 8).div_ceil(6);
        // Characters from `core_end` on mix in the bits of what follows.
        let core_end = (data.len() * 8) / 6;
        for engine in [STANDARD_NO_PAD, URL_SAFE_NO_PAD] {
            if let Some(core) = engine.encode(&data).as_bytes().get(skip..core_end) {
                needles.push(core.to_vec());
            }
        }
    }
    needles.retain(|needle| needle.len() >= MIN_SECRET_BYTES);
    needles
}

/// The bytes to search: the original, or, where it holds `%HH`, `\u00HH`
/// or `\/` escapes of bytes some needle holds, the original with those
/// decoded, with a map back to original offsets.
#[derive(Debug)]
struct View<'a> {
    original: &'a [u8],
    decoded: Option<Decoded>,
    /// Where an escape cut by the end of the bytes starts.
    open_escape: Option<usize>,
}

#[derive(Debug)]
struct Decoded {
    bytes: Vec<u8>,
    /// `starts[i]`: the original offset decoded byte `i` comes from; one
    /// more entry, the original length, closes the last.
    starts: Vec<usize>,
}

impl<'a> View<'a> {
    fn identity(original: &'a [u8]) -> Self {
        Self {
            original,
            decoded: None,
            open_escape: None,
        }
    }

    fn new(original: &'a [u8], needle_bytes: &[bool; 256]) -> Self {
        // Most text holds no escape that could be part of a match (JSON's
        // `\n` and `\"` are not escapes here, `\u00e9` decodes to no byte
        // of a key): then the view is the original, and nothing is
        // allocated.
        let has_escape =
            memchr::memchr2_iter(b'%', b'\\', original).any(|at| match escape_at(original, at) {
                Escape::Decoded(byte, _) => needle_bytes[usize::from(byte)],
                Escape::Cut => true,
                Escape::None => false,
            });
        if !has_escape {
            return Self {
                original,
                decoded: None,
                open_escape: None,
            };
        }
        let mut bytes = Vec::with_capacity(original.len());
        let mut starts = Vec::with_capacity(original.len() + 1);
        let mut open_escape = None;
        let mut at = 0;
        // Runs between escapes are copied whole.
        for escape in memchr::memchr2_iter(b'%', b'\\', original) {
            if escape < at {
                continue; // inside the previous escape (`%5C` then `\`)
            }
            bytes.extend_from_slice(original.get(at..escape).unwrap_or_default());
            starts.extend(at..escape);
            at = escape;
            starts.push(at);
            match escape_at(original, at) {
                // Only escapes of bytes some needle holds are decoded, the
                // same whether or not a view is built, so where a stream is
                // cut never changes what matches (found by fuzzing).
                Escape::Decoded(value, width) if needle_bytes[usize::from(value)] => {
                    bytes.push(value);
                    at += width;
                }
                other => {
                    if matches!(other, Escape::Cut) {
                        open_escape.get_or_insert(at);
                    }
                    bytes.extend_from_slice(original.get(at..=at).unwrap_or_default());
                    at += 1;
                }
            }
        }
        bytes.extend_from_slice(original.get(at..).unwrap_or_default());
        starts.extend(at..original.len());
        starts.push(original.len());
        Self {
            original,
            decoded: Some(Decoded { bytes, starts }),
            open_escape,
        }
    }

    fn bytes(&self) -> &[u8] {
        self.decoded
            .as_ref()
            .map_or(self.original, |decoded| decoded.bytes.as_slice())
    }

    fn original_start(&self, index: usize) -> usize {
        match &self.decoded {
            None => index,
            Some(decoded) => decoded
                .starts
                .get(index)
                .copied()
                .unwrap_or(self.original.len()),
        }
    }

    /// The original offset just past decoded byte `end - 1`.
    fn original_end(&self, end: usize, original_len: usize) -> usize {
        match &self.decoded {
            None => end,
            Some(decoded) => decoded.starts.get(end).copied().unwrap_or(original_len),
        }
    }

    /// The first decoded index whose original offset is `offset` or later.
    fn decoded_index_at_or_after(&self, offset: usize) -> usize {
        match &self.decoded {
            None => offset,
            Some(decoded) => decoded.starts.partition_point(|&start| start < offset),
        }
    }
}

enum Escape {
    /// A complete escape: the byte and how many original bytes it spans.
    Decoded(u8, usize),
    /// The start of an escape that the end of the bytes cuts.
    Cut,
    None,
}

/// Reads the escape starting at `at` (which holds `%` or `\`).
fn escape_at(bytes: &[u8], at: usize) -> Escape {
    let rest = bytes.get(at..).unwrap_or_default();
    let (pattern, hex_at): (&[u8], usize) = match rest.first() {
        Some(b'%') => (b"%", 1),
        Some(b'\\') if rest.get(1) == Some(&b'/') => return Escape::Decoded(b'/', 2),
        Some(b'\\') => (b"\\u00", 4),
        _ => return Escape::None,
    };
    let width = hex_at + 2;
    let fits = |index: usize, byte: u8| match pattern.get(index) {
        Some(&expected) => byte == expected || (expected == b'u' && byte == b'U'),
        None => hex_value(byte).is_some(),
    };
    // Every byte present must fit; too few bytes present is a cut escape.
    for (index, &byte) in rest.iter().take(width).enumerate() {
        if !fits(index, byte) {
            return Escape::None;
        }
    }
    match (
        rest.get(hex_at).copied().and_then(hex_value),
        rest.get(hex_at + 1).copied().and_then(hex_value),
    ) {
        (Some(high), Some(low)) => Escape::Decoded(high << 4 | low, width),
        _ => Escape::Cut,
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::io::Write as _;

    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    use keyforge_providers::{DecodeError, decode_request_body};

    use super::*;

    /// A fake provider key, made at run time; `/`, `+` and `=` make its
    /// percent-encoding and base64 alphabets differ from the raw text.
    /// A fake key whose last byte is never its first (`s`): a near-match
    /// followed by the key would otherwise hold the key itself (found by a
    /// CI run: `…bYE` + `sk-test-…bYEs` is the key at offset 0 and again
    /// after it, one replacement, about 1 run in 62).
    fn fake_key() -> String {
        format!(
            "sk-test-{}/+={}Q",
            keyforge_types::random_base62(24),
            keyforge_types::random_base62(12)
        )
    }

    fn percent(key: &str, style: usize) -> String {
        key.bytes()
            .enumerate()
            .fold(String::new(), |mut out, (i, b)| {
                match (style, i % 3) {
                    (0, _) => write!(out, "%{b:02X}"),
                    (1, _) => write!(out, "%{b:02x}"),
                    // Any mix: raw, upper, lower.
                    (_, 0) => write!(out, "{}", char::from(b)),
                    (_, 1) => write!(out, "%{b:02X}"),
                    (_, _) => write!(out, "%{b:02x}"),
                }
                .unwrap();
                out
            })
    }

    fn json_escaped(key: &str, style: usize) -> String {
        key.bytes()
            .enumerate()
            .fold(String::new(), |mut out, (i, b)| {
                match (style, i % 4) {
                    (0, _) => write!(out, "\\u{:04x}", b),
                    (1, _) => write!(out, "\\u{:04X}", b),
                    // Any mix, percent-escapes and `\/` included.
                    (_, 0) => write!(out, "{}", char::from(b)),
                    (_, 1) => write!(out, "\\u{:04x}", b),
                    (_, 2) if b == b'/' => write!(out, "\\/"),
                    (_, 2) => write!(out, "%{b:02X}"),
                    (_, _) => write!(out, "\\u{:04X}", b),
                }
                .unwrap();
                out
            })
    }

    /// Every echo of `key` this module promises to catch, with a name.
    fn encodings(key: &str) -> Vec<(String, String)> {
        let mut out = vec![("raw".to_owned(), key.to_owned())];
        for style in 0..3 {
            out.push((format!("percent {style}"), percent(key, style)));
            out.push((format!("json {style}"), json_escaped(key, style)));
        }
        for alignment in 0..3 {
            for (name, engine) in [
                ("standard", STANDARD),
                ("standard no pad", STANDARD_NO_PAD),
                ("url-safe", URL_SAFE),
                ("url-safe no pad", URL_SAFE_NO_PAD),
            ] {
                let mut data = b"xy"[..alignment].to_vec();
                data.extend_from_slice(key.as_bytes());
                // At the end of the data, and followed by more data.
                out.push((
                    format!("base64 {name} @{alignment} end"),
                    engine.encode(&data),
                ));
                data.extend_from_slice(b"!tail");
                out.push((
                    format!("base64 {name} @{alignment} mid"),
                    engine.encode(&data),
                ));
            }
        }
        out
    }

    fn scrub_stream(floor: &Arc<KeyFloor>, chunks: &[&[u8]]) -> Vec<u8> {
        let mut stream = floor.stream();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend_from_slice(&stream.feed(Bytes::copy_from_slice(chunk)));
            assert!(stream.carry.len() <= floor.hold_back, "held back too much");
        }
        out.extend_from_slice(&stream.finish());
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        memchr::memmem::find(haystack, needle).is_some()
    }

    /// The secret's bytes are gone: no raw copy, no base64 core left.
    fn assert_gone(floor: &KeyFloor, out: &[u8], what: &str) {
        assert!(contains(out, REPLACEMENT), "{what}: nothing replaced");
        for needle in &floor.needles {
            assert!(
                !contains(out, needle.needle()),
                "{what}: {:?} left in {:?}",
                String::from_utf8_lossy(needle.needle()),
                String::from_utf8_lossy(out)
            );
        }
    }

    #[test]
    fn every_encoding_is_replaced_at_every_split_point() {
        let key = fake_key();
        let floor = Arc::new(KeyFloor::new(&[key.as_bytes()]));
        for (name, echo) in encodings(&key) {
            let body = format!(r#"{{"error":"bad key {echo} given"}}"#);
            let whole = floor.scrub(body.as_bytes()).unwrap_or_default();
            assert_gone(&floor, &whole, &name);
            assert!(whole.starts_with(br#"{"error":"bad key "#), "{name}");
            assert!(whole.ends_with(br#" given"}"#), "{name}");
            if !name.starts_with("base64") {
                assert_eq!(whole, br#"{"error":"bad key [REDACTED] given"}"#, "{name}");
            }
            let bytes = body.as_bytes();
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(
                    scrub_stream(&floor, &[a, b]),
                    whole,
                    "{name} split at {split}"
                );
            }
        }
    }

    #[test]
    fn a_key_split_across_three_chunks_is_caught() {
        let key = fake_key();
        let floor = Arc::new(KeyFloor::new(&[key.as_bytes()]));
        for (name, echo) in [("raw", key.clone()), ("json mix", json_escaped(&key, 2))] {
            let body = format!("data: {{\"echo\":\"{echo}\"}}\n\n");
            let bytes = body.as_bytes();
            let expected = b"data: {\"echo\":\"[REDACTED]\"}\n\n".to_vec();
            for first in 0..bytes.len() {
                for second in first..=bytes.len() {
                    let chunks = [&bytes[..first], &bytes[first..second], &bytes[second..]];
                    assert_eq!(
                        scrub_stream(&floor, &chunks),
                        expected,
                        "{name} split at {first} and {second}"
                    );
                }
            }
        }
    }

    #[test]
    fn near_matches_stay_and_overlaps_are_one_replacement() {
        let key = fake_key();
        let floor = Arc::new(KeyFloor::new(&[key.as_bytes()]));
        let almost = &key[..key.len() - 1];
        let check = |input: String, expected: String| {
            let bytes = input.as_bytes();
            let whole = floor.scrub(bytes).unwrap_or_else(|| bytes.to_vec());
            assert_eq!(String::from_utf8_lossy(&whole), expected, "{input}");
            for split in 0..=bytes.len() {
                let (a, b) = bytes.split_at(split);
                assert_eq!(scrub_stream(&floor, &[a, b]), whole, "{input} at {split}");
            }
        };
        // A near-match just before the key: the near-match stays.
        check(format!("{almost}{key}"), format!("{almost}[REDACTED]"));
        check(format!("{almost} {almost}"), format!("{almost} {almost}"));
        check(format!("{key}{key}"), "[REDACTED][REDACTED]".to_owned());
        check(format!("a%{key}%"), "a%[REDACTED]%".to_owned());
        // A broken escape inside is not a decoding of the key.
        let broken = format!("{}%G{}", &key[..4], &key[5..]);
        check(broken.clone(), broken);
        // Overlapping secrets are replaced as one range.
        let overlapping = KeyFloor::new(&[key.as_bytes(), &key.as_bytes()[4..]]);
        assert_eq!(
            overlapping.scrub(format!("<{key}>").as_bytes()),
            Some(b"<[REDACTED]>".to_vec())
        );
    }

    /// Regressions found by `fuzz/fuzz_targets/floor.rs`: streaming must
    /// give what scrubbing the whole body gives.
    #[test]
    fn fuzz_regressions() {
        let check = |secret: &[u8], sizes: [usize; 3], body: &[u8]| {
            let floor = Arc::new(KeyFloor::new(&[secret]));
            let whole = floor.scrub(body).unwrap_or_else(|| body.to_vec());
            assert!(!contains(&whole, secret), "{body:?}: the secret is left");
            let mut chunks = Vec::new();
            let mut at = 0;
            for turn in 0.. {
                if at >= body.len() {
                    break;
                }
                let end = (at + sizes[turn % 3].max(1)).min(body.len());
                chunks.push(&body[at..end]);
                at = end;
            }
            assert_eq!(
                String::from_utf8_lossy(&scrub_stream(&floor, &chunks)),
                String::from_utf8_lossy(&whole),
                "{body:?} in {chunks:?}"
            );
        };
        check(b"\0\0\0\0wD\0\xfd", [0, 2, 10], b"U%P%%AAAAAd0QA_P%");
        check(
            b"\0\0\x03\x02\x01:\xe7\0",
            [0, 41, 0],
            b"\0\0\x03\x02\x01:\xe7\0\0",
        );
        // A secret holding text that reads as an escape (`\/`).
        check(
            b"\0e\\/\0\x01\x01\x01\0\x02\x02#\0\xe0\xe5\xff\0\xe0\xff\xe7\0\x10\x01\0",
            [7, 3, 1],
            b"xx\0e\\/\0\x01\x01\x01\0\x02\x02#\0\xe0\xe5\xff\0\xe0\xff\xe7\0\x10\x01\0e\\/yy",
        );
        // A needle overlapping itself (base64 of zero bytes is `AAAA…`).
        check(
            b"\0\0\0\0\0\0\0\0\0",
            [1, 0, 2],
            b"\x02#\0\xe0\xff\xe7\0\x01\x01\0\x02\x02#\0\xe0\xff\xe7\0AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAH4AAAD___8A/\0\x10\0e\\/\0\x18\0\x02",
        );
    }

    #[test]
    fn clean_chunks_pass_through_uncopied() {
        let key = fake_key();
        let floor = Arc::new(KeyFloor::new(&[key.as_bytes()]));
        let mut stream = floor.stream();
        let chunk = Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hello 50% \\n\"}}]}\n\n",
        );
        let out = stream.feed(chunk.clone());
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert_eq!(out.len(), chunk.len());
        // A tail that could begin the key is held back, the rest still
        // uncopied, and released when the stream ends.
        let chunk = Bytes::from(format!("text {}", &key[..5]));
        let out = stream.feed(chunk.clone());
        assert_eq!(
            (out.as_ptr(), out.as_ref()),
            (chunk.as_ptr(), &b"text "[..])
        );
        assert_eq!(stream.finish(), &key.as_bytes()[..5]);
    }

    #[test]
    fn headers_are_scrubbed_and_keep_their_names() {
        let key = fake_key();
        let floor = Arc::new(KeyFloor::new(&[key.as_bytes()]));
        let mut headers = http::HeaderMap::new();
        let value = |text: String| http::HeaderValue::from_str(&text).unwrap();
        headers.insert(
            "www-authenticate",
            value(format!(
                r#"Bearer realm="api", error_description="key {key} is invalid""#
            )),
        );
        headers.insert(
            "x-echo-key",
            value(STANDARD.encode(format!("Bearer {key}"))),
        );
        headers.insert("x-encoded", value(percent(&key, 2)));
        headers.insert("x-request-id", value("req_123".to_owned()));
        floor.scrub_headers(&mut headers);
        assert_eq!(
            headers["www-authenticate"],
            r#"Bearer realm="api", error_description="key [REDACTED] is invalid""#
        );
        assert!(headers["www-authenticate"].is_sensitive());
        assert_gone(&floor, headers["x-echo-key"].as_bytes(), "base64 header");
        assert_eq!(headers["x-encoded"], "[REDACTED]");
        assert_eq!(headers["x-request-id"], "req_123");
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn short_or_no_secrets_search_nothing() {
        let floor = Arc::new(KeyFloor::new(&[b"short", b""]));
        assert!(floor.is_empty());
        assert_eq!(floor.scrub(b"short"), None);
        let chunk = Bytes::from_static(b"short");
        assert_eq!(floor.stream().feed(chunk.clone()).as_ptr(), chunk.as_ptr());
    }

    /// An uncompressed brotli stream (RFC 7932 §9.2: WBITS 16, one stored
    /// meta-block, an empty last one), so no brotli encoder is needed.
    fn brotli_stored(data: &[u8]) -> Vec<u8> {
        assert!((1..=65536).contains(&data.len()));
        let header = ((data.len() as u32 - 1) << 4) | 1 << 20;
        let mut out = header.to_le_bytes()[..3].to_vec();
        out.extend_from_slice(data);
        out.push(0b11);
        out
    }

    /// Upstream bodies are decoded with the providers crate's decoder (the
    /// one request bodies use) before the floor reads them.
    #[test]
    fn error_bodies_are_decoded_by_content_encoding() {
        let text = br#"{"error":{"message":"Incorrect API key provided"}}"#.repeat(3);
        let gzip = {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&text).unwrap();
            encoder.finish().unwrap()
        };
        let zlib = {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&text).unwrap();
            encoder.finish().unwrap()
        };
        let raw_deflate = {
            let mut encoder =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&text).unwrap();
            encoder.finish().unwrap()
        };
        let zstd = ruzstd::encoding::compress_to_vec(
            text.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let brotli = brotli_stored(&text);
        let gzip_of_brotli = {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&brotli).unwrap();
            encoder.finish().unwrap()
        };
        let max = 1 << 20;
        let check = |encoding: Option<&str>, body: &[u8], expected: Result<&[u8], DecodeError>| {
            assert_eq!(
                decode_request_body(encoding, body, max)
                    .as_deref()
                    .map_err(Clone::clone),
                expected,
                "{encoding:?}"
            );
        };
        check(None, &text, Ok(&text));
        check(Some("identity"), &text, Ok(&text));
        check(Some("gzip"), &gzip, Ok(&text));
        check(Some("X-GZIP"), &gzip, Ok(&text));
        check(Some("deflate"), &zlib, Ok(&text));
        check(Some("deflate"), &raw_deflate, Ok(&text));
        check(Some("br"), &brotli, Ok(&text));
        check(Some("zstd"), &zstd, Ok(&text));
        check(Some("br, gzip"), &gzip_of_brotli, Ok(&text));
        let corrupt = |encoding: &str, body: &[u8], name: &str| {
            assert!(
                matches!(
                    decode_request_body(Some(encoding), body, max),
                    Err(DecodeError::Corrupt { encoding, .. }) if encoding == name
                ),
                "{encoding}"
            );
        };
        corrupt("gzip", b"not gzip", "gzip");
        corrupt("br", b"\xff\xff\xff", "br");
        corrupt("zstd", b"nope", "zstd");
        check(
            Some("compress"),
            &text,
            Err(DecodeError::UnknownEncoding("compress".to_owned())),
        );
        // A bomb stops at the cap.
        let zeros = vec![0u8; 100_000];
        let bomb = ruzstd::encoding::compress_to_vec(
            zeros.as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(
            decode_request_body(Some("zstd"), &bomb, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
        assert_eq!(
            decode_request_body(None, &zeros, 1000),
            Err(DecodeError::TooLarge { limit: 1000 })
        );
    }
}
