//! The streaming log scrubber: bytes in, the same bytes out with every
//! secret replaced by `[REDACTED:<rule>]`. It runs the same engine as
//! `keyforge scan` ([`Scanner::scan_deep_every_run`]: string joins,
//! percent-encoding, JSON escapes, base64, UTF-16; every base64 run
//! decoded, since a line does not show whether it is in a Kubernetes
//! Secret), so whatever `scan -` reports on a stream is gone from
//! `redact`'s output.
//!
//! It works line by line and writes (and flushes) each line as soon as it
//! is complete, so it can sit in a log pipeline; bytes that are not UTF-8
//! pass through untouched; and since it only ever scans whole lines, a
//! secret split across two reads is still found. A line that opens a
//! multi-line secret (a private key's `-----BEGIN`, a PuTTY key, a JSON
//! Web Key, a YAML block scalar, a string continued on the next line) holds the lines after
//! it until the block closes (at most [`MAX_HELD_LINES`] lines or
//! [`MAX_LINE`] bytes), so a key's body lines are redacted with its header.
//! A line longer than [`MAX_LINE`] is processed in pieces that overlap by
//! [`OVERLAP`] bytes, longer than any secret a rule matches. UTF-16 input
//! (a byte order mark, or without one what [`utf16_order`] takes for
//! UTF-16 in its first 512 bytes, as `scan` does) is redacted in pieces of
//! [`crate::CHUNK_BYTES`], its markers written in the stream's byte order
//! over whole code units.
//!
//! Rules limited to some paths (`.pgpass`, `.npmrc`, `config/master.key`)
//! run on a stream without a name as well, since `scan` reports their
//! secrets under the file's real name and redaction errs toward removing;
//! a stream given a name (`keyforge redact --path NAME`) runs them only
//! where `scan` would for that name.

use std::io::{BufRead, Write};

use crate::Scanner;
use crate::blocks;
use crate::engine::{Utf16, utf16_order};

/// Longest piece of a line held in memory.
pub const MAX_LINE: usize = 1024 * 1024;
/// Bytes kept between pieces of an over-long line.
pub const OVERLAP: usize = 4096;
/// Lines held while waiting for a multi-line secret to close.
pub const MAX_HELD_LINES: usize = 400;

/// Replaces each secret of `data` by `[REDACTED:<rule>]` (every rule
/// limited to some paths runs too: see the module's paragraph).
pub fn redact_bytes(scanner: &Scanner, data: &[u8]) -> Vec<u8> {
    redact_bytes_named(scanner, data, None)
}

/// [`redact_bytes`] for data read as the file `name` (`None`: no name).
pub fn redact_bytes_named(scanner: &Scanner, data: &[u8], name: Option<&str>) -> Vec<u8> {
    replace(scanner, data, &hits(scanner, data, name), utf16_order(data))
}

/// The secrets of one piece, as `scan` finds them and more (every base64
/// run; rules limited to paths as `name` says).
fn hits(scanner: &Scanner, data: &[u8], name: Option<&str>) -> Vec<crate::Hit> {
    scanner
        .scan_deep_every_run_named(data, name)
        .into_iter()
        .map(|(hit, _)| hit)
        .collect()
}

/// `data` with the secrets at `hits` replaced; overlapping spans are
/// replaced as one.
fn replace(scanner: &Scanner, data: &[u8], hits: &[crate::Hit], utf16: Option<Utf16>) -> Vec<u8> {
    if hits.is_empty() {
        return data.to_vec();
    }
    let mut sorted = hits.to_vec();
    sorted.sort_by_key(|hit| hit.start);
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    for hit in &sorted {
        if hit.end <= at {
            continue;
        }
        // UTF-16 is replaced over whole code units (a BOM is one unit, so
        // units start at even offsets with or without it).
        let (hit_start, hit_end) = match utf16 {
            None => (hit.start, hit.end),
            Some(_) => (hit.start & !1, (hit.end + 1) & !1),
        };
        if hit_end <= at {
            continue;
        }
        let start = hit_start.max(at);
        out.extend_from_slice(&data[at..start]);
        let marker = format!("[REDACTED:{}]", scanner.rules()[hit.rule].id);
        match utf16 {
            None => out.extend_from_slice(marker.as_bytes()),
            Some(order) => {
                for unit in marker.encode_utf16() {
                    out.extend_from_slice(&match order {
                        Utf16::Little => unit.to_le_bytes(),
                        Utf16::Big => unit.to_be_bytes(),
                    });
                }
            }
        }
        at = hit_end.min(data.len());
    }
    out.extend_from_slice(&data[at..]);
    out
}

/// What a held block waits for before it is scanned and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// A private key block (PEM, SSH2, PuTTY; its header anywhere on its
    /// line): its END line (`-----END … PRIVATE KEY…-----`, `---- END
    /// SSH2`, PuTTY's `Private-MAC:`) closes it, and a line that is no
    /// body line of it ends it before that line (see
    /// [`blocks::continues_key_block`]).
    KeyBlock,
    /// One more line: a YAML block scalar's first line, or the rest of a
    /// string continued across a line end.
    NextLine,
    /// A .netrc entry's `password` line (`machine HOST` opened it, `login
    /// USER` lines continue it): any line that is not `login`, `account`
    /// or `port` closes it.
    NetrcPassword,
    /// A base64 run wrapped at `width` columns (the `base64` tool's 76,
    /// PEM's 64), each line behind the opening line's indentation: lines
    /// of that width continue it, a shorter one closes it, and any other
    /// line ends it before that line.
    Base64Wrap { width: usize },
    /// A JSON Web Key written over several lines (`"kty"` opened it): its
    /// private `"d"` may come lines later; a line with `}` closes it.
    JwkEnd,
}

/// Whether `line` opens a secret that spans lines, and what closes it.
fn opens(line: &[u8]) -> Option<Hold> {
    let find = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
    if blocks::opens_key_block(line) {
        return Some(Hold::KeyBlock);
    }
    if find(b"\"kty\"") && !find(b"}") {
        return Some(Hold::JwkEnd);
    }
    if first_word(line) == b"machine" && !find(b"password") {
        return Some(Hold::NetrcPassword);
    }
    let trimmed = line.trim_ascii_end();
    let block = [&b": |"[..], b": >", b": |-", b": >-", b": |+", b": >+"];
    let joiners = [&b"+"[..], b"\\", b".", b"..", b"\" \\", b"' \\"];
    if block.iter().any(|end| trimmed.ends_with(end))
        || (trimmed.len() > 1
            && joiners.iter().any(|end| trimmed.ends_with(end))
            && memchr::memchr2(b'"', b'\'', trimmed).is_some())
    {
        return Some(Hold::NextLine);
    }
    match crate::engine::wrap_line(line) {
        Some((_, width)) if crate::engine::opens_wrapped_run(width) => {
            Some(Hold::Base64Wrap { width })
        }
        _ => None,
    }
}

/// Whether `line` goes on with the wrapped base64 run that `header_line`
/// (`width` characters behind its indentation) opened: the same
/// indentation, then a run no wider.
fn continues_wrapped(header_line: &[u8], width: usize, line: &[u8]) -> bool {
    let Some((indent, _)) = crate::engine::wrap_line(header_line) else {
        return false;
    };
    match crate::engine::wrap_line(line) {
        Some((line_indent, line_width)) => {
            line_indent == indent
                && line[..indent] == header_line[..indent]
                && (line_width == width
                    || (line_width < width
                        && crate::engine::ends_wrapped_run(&line[indent..indent + line_width])))
        }
        None => false,
    }
}

/// Whether `line` may continue on the next one without a joiner at its
/// end: a string literal closes it (`k = ("sk-ant-…"`, `const k =
/// "sk-ant-…"`) and it holds a keyword, so the next line could add `+
/// "…"` or, in Python, another literal. Held for one line only.
fn may_continue(scanner: &Scanner, line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_end();
    matches!(trimmed.last(), Some(b'"' | b'\''))
        && trimmed.len() > 1
        && scanner.has_keyword(trimmed)
}

/// Whether `line` continues the string the line before ended with.
fn continues(line: &[u8]) -> bool {
    let start = line.trim_ascii_start();
    matches!(start.first(), Some(b'+' | b'.' | b'"' | b'\''))
}

/// The last line of `held` (its line end included).
fn last_line(held: &[u8]) -> &[u8] {
    let body = held.strip_suffix(b"\n").unwrap_or(held);
    memchr::memrchr(b'\n', body).map_or(held, |i| &held[i + 1..])
}

/// A line's first word (split at blanks).
fn first_word(line: &[u8]) -> &[u8] {
    line.split(u8::is_ascii_whitespace)
        .find(|word| !word.is_empty())
        .unwrap_or_default()
}

fn closes(hold: Hold, line: &[u8]) -> bool {
    match hold {
        Hold::NetrcPassword => {
            !matches!(first_word(line), b"login" | b"account" | b"port")
                || memchr::memmem::find(line, b"password").is_some()
        }
        Hold::KeyBlock => blocks::closes_key_block(line),
        Hold::NextLine => true,
        Hold::JwkEnd => memchr::memchr(b'}', line).is_some(),
        Hold::Base64Wrap { width } => {
            crate::engine::wrap_line(line).is_none_or(|(_, line_width)| line_width < width)
        }
    }
}

/// Copies `input` to `output`, redacted, line by line (multi-line secrets
/// held until they close). Returns how many secrets were replaced. Every
/// rule limited to some paths runs (see the module's paragraph).
pub fn redact_stream(
    scanner: &Scanner,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<usize> {
    redact_stream_named(scanner, None, input, output)
}

/// Bytes at the start of an input that [`utf16_order`] looks at.
const UTF16_SNIFF: usize = 512;

/// Whether [`utf16_order`] of `head` and of any longer input starting
/// with it agree: `head` holds all the bytes it looks at, starts with a
/// byte order mark, or already has more than a tenth of the most pairs it
/// looks at that are not ASCII text beside a NUL in either byte order (it
/// takes UTF-16 only when nine in ten are). A UTF-8 stream is decided
/// after 52 bytes at most, so its first lines are not held longer.
fn utf16_decided(head: &[u8]) -> bool {
    if head.len() >= UTF16_SNIFF || matches!(head, [0xff, 0xfe, ..] | [0xfe, 0xff, ..]) {
        return true;
    }
    let text = |b: u8| b == b'\t' || b == b'\n' || b == b'\r' || (0x20..0x7f).contains(&b);
    let pairs = || head.chunks_exact(2);
    let not_little = pairs().filter(|p| !(p[1] == 0 && text(p[0]))).count();
    let not_big = pairs().filter(|p| !(p[0] == 0 && text(p[1]))).count();
    let most_pairs = UTF16_SNIFF / 2;
    not_little * 10 > most_pairs && not_big * 10 > most_pairs
}

/// [`redact_stream`] for a stream read as the file `name` (`None`: no
/// name, and every rule limited to some paths runs).
pub fn redact_stream_named(
    scanner: &Scanner,
    name: Option<&str>,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<usize> {
    // UTF-16 (a byte order mark, or NULs in every other byte) has two-byte
    // line ends: it is redacted in whole pieces instead of lines. The
    // bytes `scan` decides it on are read first (a reader may hand out one
    // byte at a time), then given back to the line reader.
    let mut head: Vec<u8> = Vec::new();
    while !utf16_decided(&head) {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        let taken = available.len().min(UTF16_SNIFF - head.len());
        head.extend_from_slice(&available[..taken]);
        input.consume(taken);
    }
    if let Some(order) = utf16_order(&head) {
        return redact_utf16(scanner, name, input, output, order, head);
    }
    let mut input = std::io::Read::chain(std::io::Cursor::new(head), input);
    redact_lines(scanner, name, &mut input, output)
}

/// Text other than UTF-16, line by line.
fn redact_lines(
    scanner: &Scanner,
    name: Option<&str>,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<usize> {
    let mut pending: Vec<u8> = Vec::new();
    let mut replaced = 0;
    let mut held: Vec<u8> = Vec::new();
    let mut held_lines = 0;
    let mut hold: Option<Hold> = None;
    // The line that opened a `Hold::KeyBlock` or `Hold::Base64Wrap`: its
    // header's prefix (or indentation) says which lines are body lines.
    let mut key_header: Vec<u8> = Vec::new();
    // A line ending in a string literal, waiting to see whether the next
    // line continues it (see `may_continue`).
    let mut quote_held: Option<Vec<u8>> = None;
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            if let Some(previous) = quote_held.take() {
                replaced += emit(scanner, name, &previous, output)?;
            }
            held.extend_from_slice(&pending);
            if !held.is_empty() {
                replaced += emit(scanner, name, &held, output)?;
                output.flush()?;
            }
            return Ok(replaced);
        }
        let (taken, line_done) = match memchr::memchr(b'\n', available) {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        pending.extend_from_slice(&available[..taken]);
        input.consume(taken);
        if line_done && let Some(previous) = quote_held.take() {
            if continues(&pending) {
                // The two lines are one string: redacted together (and
                // the second may open a hold of its own, as usual).
                let mut both = previous;
                both.extend_from_slice(&pending);
                pending = both;
            } else {
                replaced += emit(scanner, name, &previous, output)?;
                output.flush()?;
            }
        }
        if line_done
            && hold == Some(Hold::KeyBlock)
            && !blocks::continues_key_block(&key_header, last_line(&held), &pending)
        {
            // The block ended on the line before: it is written, and this
            // line is read afresh (it may open a block of its own).
            hold = None;
            replaced += emit(scanner, name, &held, output)?;
            output.flush()?;
            held.clear();
            held_lines = 0;
        }
        if line_done
            && let Some(Hold::Base64Wrap { width }) = hold
            && !continues_wrapped(&key_header, width, &pending)
        {
            // The run ended on the line before (a line of its full width
            // was its last): written, and this line read afresh.
            hold = None;
            replaced += emit(scanner, name, &held, output)?;
            output.flush()?;
            held.clear();
            held_lines = 0;
        }
        if line_done {
            match hold {
                Some(waiting) => {
                    held.extend_from_slice(&pending);
                    held_lines += 1;
                    if closes(waiting, &pending)
                        || held_lines >= MAX_HELD_LINES
                        || held.len() >= MAX_LINE
                    {
                        // A continued string may continue again, and a
                        // block scalar's first line may open a key block
                        // (`tls.key: |` then `  -----BEGIN …`) or a JWK.
                        hold = match waiting {
                            Hold::NextLine => opens(&pending),
                            _ => None,
                        };
                        if matches!(hold, Some(Hold::KeyBlock | Hold::Base64Wrap { .. })) {
                            key_header.clone_from(&pending);
                        }
                        if hold.is_none() || held.len() >= MAX_LINE || held_lines >= MAX_HELD_LINES
                        {
                            hold = None;
                            replaced += emit(scanner, name, &held, output)?;
                            output.flush()?;
                            held.clear();
                            held_lines = 0;
                        }
                    }
                }
                None => match opens(&pending) {
                    Some(next) => {
                        hold = Some(next);
                        if matches!(next, Hold::KeyBlock | Hold::Base64Wrap { .. }) {
                            key_header.clone_from(&pending);
                        }
                        held.extend_from_slice(&pending);
                        held_lines = 1;
                    }
                    None if quote_held.is_none()
                        && pending.len() < MAX_LINE
                        && may_continue(scanner, &pending) =>
                    {
                        // Wait one line: it may continue this string.
                        quote_held = Some(std::mem::take(&mut pending));
                        continue;
                    }
                    None => {
                        replaced += emit(scanner, name, &pending, output)?;
                        output.flush()?;
                    }
                },
            }
            pending.clear();
        } else if pending.len() >= MAX_LINE {
            // An over-long line: write out all but the tail, taking care
            // not to cut through a secret (after a line held back for it).
            if let Some(previous) = quote_held.take() {
                replaced += emit(scanner, name, &previous, output)?;
            }
            held.extend_from_slice(&pending);
            pending.clear();
            hold = None;
            held_lines = 0;
            let hits = hits(scanner, &held, name);
            let mut cut = held.len() - OVERLAP;
            for hit in &hits {
                if hit.start < cut && hit.end > cut {
                    cut = hit.start;
                }
            }
            replaced += emit(scanner, name, &held[..cut], output)?;
            held.drain(..cut);
            pending = std::mem::take(&mut held);
        }
    }
}

fn emit(
    scanner: &Scanner,
    name: Option<&str>,
    piece: &[u8],
    output: &mut impl Write,
) -> std::io::Result<usize> {
    let hits = hits(scanner, piece, name);
    if hits.is_empty() {
        output.write_all(piece)?;
    } else {
        output.write_all(&replace(scanner, piece, &hits, None))?;
    }
    Ok(hits.len())
}

/// UTF-16 input, redacted in pieces of [`crate::CHUNK_BYTES`] cut after a
/// line end (or whole, for a piece without one), each cut at an even
/// offset of the stream (a code unit boundary).
fn redact_utf16(
    scanner: &Scanner,
    name: Option<&str>,
    input: &mut impl BufRead,
    output: &mut impl Write,
    order: Utf16,
    head: Vec<u8>,
) -> std::io::Result<usize> {
    let mut replaced = 0;
    let mut buffer: Vec<u8> = head;
    let (newline, bom): ([u8; 2], [u8; 2]) = match order {
        Utf16::Little => ([b'\n', 0], [0xff, 0xfe]),
        Utf16::Big => ([0, b'\n'], [0xfe, 0xff]),
    };
    let mut first = true;
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes.to_vec(),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let eof = available.is_empty();
        input.consume(available.len());
        buffer.extend_from_slice(&available);
        if !eof && buffer.len() < crate::CHUNK_BYTES {
            continue;
        }
        // Cut after the last complete line end (an even offset).
        let cut = if eof {
            buffer.len()
        } else {
            (0..buffer.len() / 2)
                .rev()
                .map(|unit| unit * 2)
                .find(|&at| buffer[at..at + 2] == newline)
                .map_or(buffer.len() & !1, |at| at + 2)
        };
        let mut piece: Vec<u8> = buffer.drain(..cut).collect();
        // Every piece is scanned with a byte order mark in front (the
        // stream's own, or one added and not written), so it is decoded in
        // the stream's byte order whatever its text looks like.
        let marked = !(first && piece.starts_with(&bom));
        first = false;
        if marked {
            piece.splice(0..0, bom);
        }
        let hits = hits(scanner, &piece, name);
        replaced += hits.len();
        let out = replace(scanner, &piece, &hits, Some(order));
        output.write_all(if marked { &out[2..] } else { &out })?;
        output.flush()?;
        if eof {
            return Ok(replaced);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `chunk` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.chunk.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn planted() -> String {
        use secrecy::ExposeSecret;
        let env = keyforge_types::EnvName::parse("prod").unwrap();
        let key = keyforge_types::VirtualKey::generate(&env);
        #[expect(clippy::disallowed_methods, reason = "the test plants the key")]
        let text = key.secret().expose_secret().to_owned();
        text
    }

    #[test]
    fn a_string_continued_on_the_next_line_is_redacted_whole() {
        let scanner = Scanner::new(None).unwrap();
        let (head, tail) = {
            let key = planted_anthropic();
            (key[..40].to_owned(), key[40..].to_owned())
        };
        for text in [
            // The joiner starts the next line (JavaScript style).
            format!("const k = \"{head}\"\n  + \"{tail}\";\nnext line\n"),
            // Python's implicit concatenation inside parentheses.
            format!("k = (\"{head}\"\n     \"{tail}\")\nnext line\n"),
        ] {
            let found = scanner.scan_deep(text.as_bytes());
            assert!(!found.is_empty(), "scan finds it: {text}");
            let mut output = Vec::new();
            redact_stream(&scanner, &mut text.as_bytes(), &mut output).unwrap();
            let output = String::from_utf8(output).unwrap();
            assert!(!output.contains(&head[14..]), "{output}");
            assert!(!output.contains(&tail), "{output}");
            assert!(output.ends_with("next line\n"), "{output}");
        }
        // A line ending in a string that nothing continues is written
        // as it was, in order.
        let text = "name = \"token\"\nplain\n";
        let mut output = Vec::new();
        redact_stream(&scanner, &mut text.as_bytes(), &mut output).unwrap();
        assert_eq!(String::from_utf8(output).unwrap(), text);
    }

    /// An Anthropic-shaped key built at run time (`sk-ant-api03-`, 95
    /// characters, `AA` at the end).
    fn planted_anthropic() -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let body: String = (0..93u32)
            .map(|i| char::from(alphabet[(i.wrapping_mul(2_654_435_761) >> 26) as usize % 62]))
            .collect();
        format!("{}{body}AA", ["sk", "ant", "api03-"].join("-"))
    }

    #[test]
    fn a_private_key_cut_off_before_its_end_line_loses_its_body_too() {
        // A truncated log or paste: BEGIN and body lines, no END.
        let body: Vec<String> = (0..4u32)
            .map(|i| {
                (0..64u32)
                    .map(|j| {
                        let alphabet =
                            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                        char::from(
                            alphabet[((i * 64 + j).wrapping_mul(2_654_435_761) >> 26) as usize],
                        )
                    })
                    .collect()
            })
            .collect();
        // Built at run time: the repository scans clean.
        let begin = ["-----BEGIN RSA PRIVATE", "KEY-----"].join(" ");
        let text = format!("before\n{begin}\n{}\nafter\n", body.join("\n"));
        let scanner = Scanner::new(None).unwrap();
        let mut output = Vec::new();
        redact_stream(&scanner, &mut text.as_bytes(), &mut output).unwrap();
        let output = String::from_utf8(output).unwrap();
        for line in &body {
            assert!(!output.contains(line.as_str()), "{output}");
        }
        assert!(
            output.starts_with("before\n") && output.ends_with("after\n"),
            "{output}"
        );
    }

    #[test]
    fn secrets_split_across_every_read_boundary_are_still_redacted() {
        let scanner = Scanner::new(None).unwrap();
        let key = planted();
        let log = format!("GET /v1 200 auth={key} ok\nnothing here\n");
        let mut bytes = log.into_bytes();
        // A byte that is not UTF-8 must pass through untouched.
        bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let expected_tail = [0xff, 0xfe, b'\n'];
        for chunk in [1, 2, 3, 7, 16, 64, 4096] {
            let mut input = std::io::BufReader::with_capacity(
                chunk.max(1),
                Trickle {
                    data: &bytes,
                    chunk,
                },
            );
            let mut out = Vec::new();
            let count = redact_stream(&scanner, &mut input, &mut out).unwrap();
            assert_eq!(count, 1, "chunk {chunk}");
            let text = String::from_utf8_lossy(&out);
            assert!(!text.contains(&key), "chunk {chunk}");
            assert!(
                text.starts_with("GET /v1 200 auth=[REDACTED:kf-virtual-key] ok\nnothing here\n"),
                "chunk {chunk}: {text}"
            );
            assert!(out.ends_with(&expected_tail), "chunk {chunk}");
        }
    }

    #[test]
    fn an_over_long_line_is_redacted_in_pieces_without_cutting_a_secret() {
        let scanner = Scanner::new(None).unwrap();
        let key = planted();
        // Put the key right across the first cut.
        let filler = "a ".repeat((MAX_LINE - OVERLAP - 10) / 2);
        let line = format!("{filler}{key} {}", "b ".repeat(MAX_LINE / 2));
        let mut input = std::io::BufReader::new(line.as_bytes());
        let mut out = Vec::new();
        let count = redact_stream(&scanner, &mut input, &mut out).unwrap();
        assert_eq!(count, 1);
        assert_eq!(
            out.len(),
            line.len() - key.len() + "[REDACTED:kf-virtual-key]".len()
        );
        assert!(!String::from_utf8_lossy(&out).contains(&key));
    }

    fn base64(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    fn url_safe(data: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
    }

    /// Issue #16, `redact` corrupted UTF-16 text without a byte order mark
    /// (its marker went out as 8-bit bytes into the UTF-16 stream). In
    /// both byte orders, with and without a BOM, whole and read one byte
    /// at a time: the output is valid UTF-16, the key is gone, its marker
    /// is in the stream's encoding, and every other byte is as it was.
    #[test]
    fn utf16_without_a_bom_is_redacted_in_its_own_encoding() {
        let scanner = Scanner::new(None).unwrap();
        let key = planted();
        let before = "first line é 😀\r\nAPI: ";
        let after = " Ċ done\r\nlast line\r\n";
        let text = format!("{before}{key}{after}");
        for (order, bom) in [
            (Utf16::Little, &[0xff, 0xfe][..]),
            (Utf16::Big, &[0xfe, 0xff][..]),
        ] {
            let encode = |text: &str| -> Vec<u8> {
                text.encode_utf16()
                    .flat_map(|unit| match order {
                        Utf16::Little => unit.to_le_bytes(),
                        Utf16::Big => unit.to_be_bytes(),
                    })
                    .collect()
            };
            for with_bom in [false, true] {
                let mut input = if with_bom { bom.to_vec() } else { Vec::new() };
                let head_len = input.len() + encode(before).len();
                input.extend_from_slice(&encode(&text));
                let tail = encode(after);
                let mut outputs = vec![redact_bytes(&scanner, &input)];
                for chunk in [1, 3, 4096] {
                    let mut reader = std::io::BufReader::with_capacity(
                        chunk,
                        Trickle {
                            data: &input,
                            chunk,
                        },
                    );
                    let mut out = Vec::new();
                    assert_eq!(redact_stream(&scanner, &mut reader, &mut out).unwrap(), 1);
                    outputs.push(out);
                }
                for out in outputs {
                    let case = format!("{order:?} bom={with_bom}");
                    assert_eq!(out.len() % 2, 0, "{case}");
                    assert_eq!(out[..head_len], input[..head_len], "{case}");
                    assert!(out.ends_with(&tail), "{case}");
                    let units: Vec<u16> = out[if with_bom { 2 } else { 0 }..]
                        .chunks_exact(2)
                        .map(|pair| match order {
                            Utf16::Little => u16::from_le_bytes([pair[0], pair[1]]),
                            Utf16::Big => u16::from_be_bytes([pair[0], pair[1]]),
                        })
                        .collect();
                    let decoded = String::from_utf16(&units).expect("valid UTF-16");
                    assert_eq!(
                        decoded,
                        format!("{before}[REDACTED:kf-virtual-key]{after}"),
                        "{case}"
                    );
                }
            }
        }
    }

    /// Issue #16: a `.pgpass` line passed through `redact`, since the rule
    /// is limited to files of that name and a stream has none. Without a
    /// name every such rule runs; named, a stream runs them as `scan` does
    /// for a file of that name.
    #[test]
    fn a_pgpass_line_is_redacted_from_a_stream_without_a_name() {
        let scanner = Scanner::new(None).unwrap();
        let password = format!("Wq8z{}", keyforge_types::random_base62(12));
        let line = format!("db.internal:5432:appdb:app:{password}\n");
        assert!(scanner.scan_deep(line.as_bytes()).is_empty());
        assert_eq!(
            scanner
                .findings(".pgpass", line.as_bytes(), crate::Preview::Masked)
                .len(),
            1
        );
        for name in [None, Some(".pgpass"), Some("home/me/.pgpass")] {
            let mut out = Vec::new();
            redact_stream_named(&scanner, name, &mut line.as_bytes(), &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains(&password), "{name:?}: {out}");
            assert!(
                out.starts_with("db.internal:5432:appdb:app:[REDACTED:"),
                "{out}"
            );
        }
        let mut out = Vec::new();
        redact_stream_named(&scanner, Some("app.log"), &mut line.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), line, "not a .pgpass file");
        assert!(
            !String::from_utf8(redact_bytes(&scanner, line.as_bytes()))
                .unwrap()
                .contains(&password)
        );
    }

    /// The property of the issue: for every rule example and every
    /// encoding, `redact`'s output (streamed, one byte per read, and whole)
    /// holds no byte run that `scan` reports, and scans clean.
    #[test]
    fn redact_output_holds_nothing_scan_reports_for_every_example_and_encoding() {
        let scanner = Scanner::new(None).unwrap();
        let mut checked = 0;
        // How many examples each encoding shows `scan` a secret in: every
        // encoding must be exercised, not only pass through.
        let mut found_in: std::collections::BTreeMap<&str, usize> = Default::default();
        for rule in scanner.rules() {
            // Rules limited to some paths are checked against what `scan`
            // reports in a file of their example's name.
            let path = rule.example_path.as_deref();
            for example in &rule.examples {
                let json: String = example
                    .chars()
                    .flat_map(|c| match c {
                        '"' => vec!['\\', '"'],
                        '\\' => vec!['\\', '\\'],
                        '\n' => vec!['\\', 'n'],
                        c => vec![c],
                    })
                    .collect();
                let mut utf16 = vec![0xff, 0xfe];
                for unit in format!("{example}\n").encode_utf16() {
                    utf16.extend_from_slice(&unit.to_le_bytes());
                }
                let encodings: Vec<(&str, Vec<u8>)> = vec![
                    // Alone: a whole-file rule (`config/master.key`)
                    // matches only so.
                    ("bare", example.as_bytes().to_vec()),
                    (
                        "plain",
                        format!("log: start\n{example}\nlog: end\n").into_bytes(),
                    ),
                    (
                        "base64",
                        format!(
                            "kind: Secret\ndata:\n  value: {}\n",
                            base64(example.as_bytes())
                        )
                        .into_bytes(),
                    ),
                    (
                        "json",
                        format!("{{\"source\": [\"{json}\\n\"]}}\n").into_bytes(),
                    ),
                    (
                        "base64 of URL-safe base64",
                        format!(
                            "kind: Secret\ndata:\n  value: {}\n",
                            base64(url_safe(example.as_bytes()).as_bytes())
                        )
                        .into_bytes(),
                    ),
                    ("utf-16 without a BOM", utf16[2..].to_vec()),
                    ("utf-16", utf16),
                    (
                        "percent-encoded",
                        format!("GET /log?q={} 200\n", percent_encoded(example)).into_bytes(),
                    ),
                    (
                        "JSON \\u escapes",
                        format!("{{\"v\": \"{}\"}}\n", unicode_escaped(&json)).into_bytes(),
                    ),
                ];
                for (encoding, input) in encodings {
                    let hits = scanner.scan_deep_at(&input, path);
                    if !hits.is_empty() {
                        *found_in.entry(encoding).or_insert(0) += 1;
                    }
                    let must_find = if path.is_some() { "bare" } else { "plain" };
                    if encoding == must_find {
                        assert!(!hits.is_empty(), "{}: {example:?} not found", rule.id);
                    }
                    let whole = redact_bytes(&scanner, &input);
                    let mut streamed = Vec::new();
                    let mut reader = std::io::BufReader::with_capacity(
                        1,
                        Trickle {
                            data: &input,
                            chunk: 1,
                        },
                    );
                    redact_stream(&scanner, &mut reader, &mut streamed).unwrap();
                    for output in [&whole, &streamed] {
                        for (hit, _) in &hits {
                            let run = &input[hit.start..hit.end];
                            assert!(
                                memchr::memmem::find(output, run).is_none(),
                                "{} {encoding}: {example:?} survives redaction:\n{}",
                                rule.id,
                                String::from_utf8_lossy(output)
                            );
                        }
                        assert!(
                            scanner.scan_deep_at(output, path).is_empty(),
                            "{} {encoding}: {example:?} redacted still scans dirty:\n{}",
                            rule.id,
                            String::from_utf8_lossy(output)
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 200, "{checked}");
        for (encoding, found) in &found_in {
            assert!(*found >= 20, "{encoding}: {found_in:?}");
        }
        assert_eq!(found_in.len(), 9, "{found_in:?}");
    }

    /// A multi-line example written as a stream would carry it: behind
    /// `encoding` (indentation, a log prefix whose digits change per line,
    /// a comment or quote marker, a YAML block scalar, a JSON string with
    /// `\n` escapes), with CRLF line ends or not, between two plain lines.
    fn dressed(example: &str, encoding: usize, crlf: bool) -> String {
        let end = if crlf { "\r\n" } else { "\n" };
        let lines: Vec<&str> = example.split('\n').collect();
        let prefixed = |prefix: &dyn Fn(usize) -> String| -> String {
            lines
                .iter()
                .enumerate()
                .map(|(i, line)| format!("{}{line}{end}", prefix(i)))
                .collect()
        };
        let body = match encoding {
            0 => prefixed(&|_| "  ".into()),
            1 => prefixed(&|_| "\t\t".into()),
            2 => prefixed(&|i| format!("2026-12-01T10:00:{:02}Z app[{}]: ", i % 60, 1 + i % 9)),
            3 => prefixed(&|_| "# ".into()),
            4 => prefixed(&|_| "// ".into()),
            5 => prefixed(&|_| "> ".into()),
            6 => prefixed(&|_| " * ".into()),
            7..=10 => {
                let indicator = ["|", "|-", ">", ">-"][encoding - 7];
                format!(
                    "data:{end}  tls.key: {indicator}{end}{}",
                    prefixed(&|_| "    ".into())
                )
            }
            11 => {
                let escaped: String = example
                    .chars()
                    .flat_map(|c| match c {
                        '"' => vec!['\\', '"'],
                        '\\' => vec!['\\', '\\'],
                        '\n' if crlf => vec!['\\', 'r', '\\', 'n'],
                        '\n' => vec!['\\', 'n'],
                        c => vec![c],
                    })
                    .collect();
                format!("{{\"key\": \"{escaped}\\n\", \"n\": 1}}{end}")
            }
            // Issue #16 (G1): prefixes whose width changes from line to
            // line: `grep -n`'s `9:` then `10:`; a timestamp with its
            // trailing zeros dropped, a log level that changes and a
            // growing process id (`docker logs -t`, `kubectl logs
            // --timestamps`).
            13 => prefixed(&|i| format!("{}:", 9 + i)),
            14 => prefixed(&|i| {
                let fraction = &"123456789"[..1 + (i * 5) % 9];
                let level = if i % 2 == 0 { "INFO  " } else { "WARN " };
                format!(
                    "2026-12-03T07:00:00.{fraction}Z {level}app[{}]: ",
                    8 + i * 25
                )
            }),
            // Issue #16 (G2): base64 of the whole example wrapped at 76
            // columns (the `base64` tool), and at 64 behind a YAML block
            // scalar's indentation.
            15 => wrapped(&base64(format!("{example}\n").as_bytes()), 76, "", end),
            16 => format!(
                "data:{end}  tls.key: |{end}{}",
                wrapped(&base64(format!("{example}\n").as_bytes()), 64, "    ", end)
            ),
            // Issue #16 (G3): joined onto one line (`echo $KEY` unquoted).
            17 => format!("TLS_KEY={}{end}", lines.join(" ")),
            _ => prefixed(&|_| String::new()),
        };
        format!("before{end}{body}after{end}")
    }

    /// `encoded` cut into lines of `width` characters, each behind
    /// `indent` and ended by `end`.
    fn wrapped(encoded: &str, width: usize, indent: &str, end: &str) -> String {
        encoded
            .as_bytes()
            .chunks(width)
            .map(|line| format!("{indent}{}{end}", String::from_utf8_lossy(line)))
            .collect()
    }

    /// The encodings [`dressed`] knows.
    const DRESSINGS: usize = 18;

    /// The base64 body lines of a private key example (16 characters or
    /// more, nothing else on the line): none may survive `redact`.
    fn body_lines(example: &str) -> Vec<&str> {
        example
            .lines()
            .filter(|line| {
                line.len() >= 16
                    && line
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            })
            .collect()
    }

    /// The values of a JWK example's private members (`d`, and an RSA
    /// key's `p`, `q`, `dp`, `dq`, `qi`).
    fn jwk_private_values(example: &str) -> Vec<&str> {
        ["d", "p", "q", "dp", "dq", "qi"]
            .iter()
            .filter_map(|name| {
                let at = example.find(&format!("\"{name}\""))?;
                let rest = &example[at + name.len() + 2..];
                let open = rest.find('"')? + 1;
                let close = rest[open..].find('"')?;
                Some(&rest[open..open + close])
            })
            .collect()
    }

    /// `text` with every byte but `A-Z a-z 0-9` as `%XX`.
    fn percent_encoded(text: &str) -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    /// A JSON string body with `-`, `_`, `:`, `=`, `/`, `+` and blanks as
    /// `\u00XX` escapes.
    fn unicode_escaped(json: &str) -> String {
        json.chars()
            .map(|c| match c {
                '-' | '_' | ':' | '=' | '/' | '+' | ' ' => format!("\\u{:04x}", u32::from(c)),
                c => c.to_string(),
            })
            .collect()
    }

    fn shared_scanner() -> &'static Scanner {
        static SCANNER: std::sync::OnceLock<Scanner> = std::sync::OnceLock::new();
        SCANNER.get_or_init(|| Scanner::new(None).unwrap())
    }

    /// Redacted whole and streamed `chunk` bytes per read.
    fn both_redactions(scanner: &Scanner, input: &[u8], chunk: usize) -> [Vec<u8>; 2] {
        let whole = redact_bytes(scanner, input);
        let mut streamed = Vec::new();
        let mut reader = std::io::BufReader::with_capacity(chunk, Trickle { data: input, chunk });
        redact_stream(scanner, &mut reader, &mut streamed).unwrap();
        [whole, streamed]
    }

    proptest::proptest! {
        /// Issue #16, S1 and S2: a private key's body went through
        /// `redact` when its block was indented, behind a log prefix or a
        /// comment marker, in a YAML block scalar (`tls.key: |`), in a
        /// JSON string or with CRLF ends, and a PuTTY key whose header did
        /// not start its line kept every line but its first. For every
        /// multi-line rule example in every such dressing: `scan -` finds
        /// the key blocks and JWKs, `redact`'s output (whole and streamed)
        /// holds no byte run `scan` reports nor any body line, and scans
        /// clean.
        #[test]
        fn multi_line_secrets_leave_nothing_in_redact_output(
            pick in 0usize..1000,
            encoding in 0usize..DRESSINGS,
            crlf in proptest::bool::ANY,
            chunk in 1usize..80,
        ) {
            let scanner = shared_scanner();
            let examples: Vec<(&str, &str)> = scanner
                .rules()
                .iter()
                .filter(|rule| rule.path.is_none())
                .flat_map(|rule| {
                    rule.examples
                        .iter()
                        .filter(|example| example.contains('\n'))
                        .map(|example| (rule.id.as_str(), example.as_str()))
                })
                .collect();
            let (rule, example) = examples[pick % examples.len()];
            let input = dressed(example, encoding, crlf);
            let hits = scanner.scan_deep(input.as_bytes());
            // base64 is decoded where a marker shows it hides a key
            // (`-----BEGIN` encoded), as `scan` does anywhere else.
            let base64_dressing = matches!(encoding, 15 | 16);
            // Joined onto one line, a key block is found where its lines
            // were the key's own (not an example already behind a log
            // prefix or inside a string).
            let bare_block = example.lines().any(|line| {
                ["-----BEGIN", "---- BEGIN", "PuTTY-User"]
                    .iter()
                    .any(|marker| line.starts_with(marker))
            }) && !example.contains('"')
                || example.contains("---- BEGIN SSH2");
            let key = matches!(rule, "private-key" | "jwk-private-key")
                && (!base64_dressing || example.contains("-----BEGIN"))
                && (encoding != 17 || (rule == "private-key" && bare_block));
            if key {
                proptest::prop_assert!(
                    hits.iter().any(|(hit, _)| scanner.rules()[hit.rule].id == rule),
                    "{rule} not found in dressing {encoding}:\n{input}"
                );
            }
            for output in both_redactions(scanner, input.as_bytes(), chunk) {
                let shown = String::from_utf8_lossy(&output);
                for (hit, _) in &hits {
                    let run = &input.as_bytes()[hit.start..hit.end];
                    proptest::prop_assert!(
                        memchr::memmem::find(&output, run).is_none(),
                        "{rule} dressing {encoding}: a reported run survives:\n{shown}"
                    );
                }
                if rule == "jwk-private-key" {
                    for value in jwk_private_values(example) {
                        proptest::prop_assert!(
                            !shown.contains(value),
                            "dressing {encoding}: JWK value {value} survives:\n{shown}"
                        );
                    }
                }
                if rule == "private-key" {
                    for line in body_lines(example) {
                        proptest::prop_assert!(
                            !shown.contains(line),
                            "dressing {encoding}: body line {line} survives:\n{shown}"
                        );
                    }
                }
                proptest::prop_assert!(
                    scanner.scan_deep(&output).is_empty(),
                    "{rule} dressing {encoding}: redacted still scans dirty:\n{shown}"
                );
                proptest::prop_assert!(shown.ends_with("after\n") || shown.ends_with("after\r\n"));
            }
        }
    }
}
