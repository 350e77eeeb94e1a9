//! The streaming log scrubber: bytes in, the same bytes out with every
//! secret replaced by `[REDACTED:<rule>]`. It runs the same engine as
//! `keyforge scan` ([`Scanner::scan_deep`]: string joins, percent-encoding,
//! JSON escapes, base64, UTF-16), so whatever `scan -` reports on a stream
//! is gone from `redact`'s output.
//!
//! It works line by line and writes (and flushes) each line as soon as it
//! is complete, so it can sit in a log pipeline; bytes that are not UTF-8
//! pass through untouched; and since it only ever scans whole lines, a
//! secret split across two reads is still found. A line that opens a
//! multi-line secret (a private key's `-----BEGIN`, a PuTTY key, a YAML
//! block scalar, a string continued on the next line) holds the lines after
//! it until the block closes (at most [`MAX_HELD_LINES`] lines or
//! [`MAX_LINE`] bytes), so a key's body lines are redacted with its header.
//! A line longer than [`MAX_LINE`] is processed in pieces that overlap by
//! [`OVERLAP`] bytes, longer than any secret a rule matches. UTF-16 input
//! (a byte order mark) is redacted in pieces of [`crate::CHUNK_BYTES`], its
//! markers written in UTF-16 too.

use std::io::{BufRead, Write};

use crate::Scanner;
use crate::engine::{Utf16, utf16_order};

/// Longest piece of a line held in memory.
pub const MAX_LINE: usize = 1024 * 1024;
/// Bytes kept between pieces of an over-long line.
pub const OVERLAP: usize = 4096;
/// Lines held while waiting for a multi-line secret to close.
pub const MAX_HELD_LINES: usize = 400;

/// Replaces each secret of `data` by `[REDACTED:<rule>]`.
pub fn redact_bytes(scanner: &Scanner, data: &[u8]) -> Vec<u8> {
    let hits: Vec<crate::Hit> = scanner
        .scan_deep(data)
        .into_iter()
        .map(|(hit, _)| hit)
        .collect();
    replace(scanner, data, &hits, utf16_order(data))
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
        let start = hit.start.max(at);
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
        at = hit.end.min(data.len());
    }
    out.extend_from_slice(&data[at..]);
    out
}

/// What a held block waits for before it is scanned and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// `-----END … PRIVATE KEY…-----`.
    PemEnd,
    /// PuTTY's `Private-MAC:` (or `Private-Hash:`) line.
    PuttyMac,
    /// One more line: a YAML block scalar's first line, or the rest of a
    /// string continued across a line end.
    NextLine,
}

/// Whether `line` opens a secret that spans lines, and what closes it.
fn opens(line: &[u8]) -> Option<Hold> {
    let find = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
    if find(b"-----BEGIN") && find(b"PRIVATE KEY") && !find(b"-----END") {
        return Some(Hold::PemEnd);
    }
    if line.starts_with(b"PuTTY-User-Key-File-") {
        return Some(Hold::PuttyMac);
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
    None
}

fn closes(hold: Hold, line: &[u8]) -> bool {
    match hold {
        Hold::PemEnd => memchr::memmem::find(line, b"-----END").is_some(),
        Hold::PuttyMac => line.starts_with(b"Private-MAC:") || line.starts_with(b"Private-Hash:"),
        Hold::NextLine => true,
    }
}

/// Copies `input` to `output`, redacted, line by line (multi-line secrets
/// held until they close). Returns how many secrets were replaced.
pub fn redact_stream(
    scanner: &Scanner,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<usize> {
    // UTF-16 has NULs in every other byte and two-byte line ends: it is
    // redacted in whole pieces instead of lines.
    let head = loop {
        match input.fill_buf() {
            Ok(bytes) => break bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    };
    if let Some(order) =
        utf16_order(head).filter(|_| matches!(head, [0xff, 0xfe, ..] | [0xfe, 0xff, ..]))
    {
        return redact_utf16(scanner, input, output, order);
    }
    let mut replaced = 0;
    let mut pending: Vec<u8> = Vec::new();
    let mut held: Vec<u8> = Vec::new();
    let mut held_lines = 0;
    let mut hold: Option<Hold> = None;
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            held.extend_from_slice(&pending);
            if !held.is_empty() {
                replaced += emit(scanner, &held, output)?;
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
        if line_done {
            match hold {
                Some(waiting) => {
                    held.extend_from_slice(&pending);
                    held_lines += 1;
                    if closes(waiting, &pending)
                        || held_lines >= MAX_HELD_LINES
                        || held.len() >= MAX_LINE
                    {
                        // A continued string may continue again.
                        hold = match waiting {
                            Hold::NextLine => {
                                opens(&pending).filter(|next| *next == Hold::NextLine)
                            }
                            _ => None,
                        };
                        if hold.is_none() || held.len() >= MAX_LINE || held_lines >= MAX_HELD_LINES
                        {
                            hold = None;
                            replaced += emit(scanner, &held, output)?;
                            output.flush()?;
                            held.clear();
                            held_lines = 0;
                        }
                    }
                }
                None => match opens(&pending) {
                    Some(next) => {
                        hold = Some(next);
                        held.extend_from_slice(&pending);
                        held_lines = 1;
                    }
                    None => {
                        replaced += emit(scanner, &pending, output)?;
                        output.flush()?;
                    }
                },
            }
            pending.clear();
        } else if pending.len() >= MAX_LINE {
            // An over-long line: write out all but the tail, taking care
            // not to cut through a secret.
            held.extend_from_slice(&pending);
            pending.clear();
            hold = None;
            held_lines = 0;
            let hits: Vec<crate::Hit> = scanner
                .scan_deep(&held)
                .into_iter()
                .map(|(hit, _)| hit)
                .collect();
            let mut cut = held.len() - OVERLAP;
            for hit in &hits {
                if hit.start < cut && hit.end > cut {
                    cut = hit.start;
                }
            }
            replaced += emit(scanner, &held[..cut], output)?;
            held.drain(..cut);
            pending = std::mem::take(&mut held);
        }
    }
}

fn emit(scanner: &Scanner, piece: &[u8], output: &mut impl Write) -> std::io::Result<usize> {
    let hits: Vec<crate::Hit> = scanner
        .scan_deep(piece)
        .into_iter()
        .map(|(hit, _)| hit)
        .collect();
    if hits.is_empty() {
        output.write_all(piece)?;
    } else {
        output.write_all(&replace(scanner, piece, &hits, None))?;
    }
    Ok(hits.len())
}

/// UTF-16 input, redacted in pieces of [`crate::CHUNK_BYTES`] cut after a
/// line end (or whole, for a piece without one).
fn redact_utf16(
    scanner: &Scanner,
    input: &mut impl BufRead,
    output: &mut impl Write,
    order: Utf16,
) -> std::io::Result<usize> {
    let mut replaced = 0;
    let mut buffer: Vec<u8> = Vec::new();
    let newline: [u8; 2] = match order {
        Utf16::Little => [b'\n', 0],
        Utf16::Big => [0, b'\n'],
    };
    let mut bom: Option<Vec<u8>> = None;
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
        // Every piece is decoded with the byte order mark in front.
        let marked = match &bom {
            None => {
                bom = Some(piece[..2.min(piece.len())].to_vec());
                false
            }
            Some(mark) => {
                let mut with = mark.clone();
                with.extend_from_slice(&piece);
                piece = with;
                true
            }
        };
        let hits: Vec<crate::Hit> = scanner
            .scan_deep(&piece)
            .into_iter()
            .map(|(hit, _)| hit)
            .collect();
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
}
