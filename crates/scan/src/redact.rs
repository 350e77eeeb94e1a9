//! The streaming log scrubber: bytes in, the same bytes out with every
//! secret replaced by `[REDACTED:<rule>]`. It works line by line and writes
//! (and flushes) each line as soon as it is complete, so it can sit in a log
//! pipeline; bytes that are not UTF-8 pass through untouched; and since it
//! only ever scans whole lines, a secret split across two reads is still
//! found. A line longer than [`MAX_LINE`] is processed in pieces that
//! overlap by [`OVERLAP`] bytes, longer than any secret a rule matches.

use std::io::{BufRead, Write};

use crate::Scanner;

/// Longest piece of a line held in memory.
pub const MAX_LINE: usize = 1024 * 1024;
/// Bytes kept between pieces of an over-long line.
pub const OVERLAP: usize = 4096;

/// Replaces each secret of `data` by `[REDACTED:<rule>]`.
pub fn redact_bytes(scanner: &Scanner, data: &[u8]) -> Vec<u8> {
    replace(scanner, data, &scanner.scan(data))
}

/// `data` with the secrets at `hits` replaced.
fn replace(scanner: &Scanner, data: &[u8], hits: &[crate::Hit]) -> Vec<u8> {
    if hits.is_empty() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut at = 0;
    for hit in hits {
        if hit.start < at {
            continue;
        }
        out.extend_from_slice(&data[at..hit.start]);
        out.extend_from_slice(b"[REDACTED:");
        out.extend_from_slice(scanner.rules()[hit.rule].id.as_bytes());
        out.push(b']');
        at = hit.end;
    }
    out.extend_from_slice(&data[at..]);
    out
}

/// Copies `input` to `output`, redacted, line by line. Returns how many
/// secrets were replaced.
pub fn redact_stream(
    scanner: &Scanner,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> std::io::Result<usize> {
    let mut replaced = 0;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let available = match input.fill_buf() {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            if !pending.is_empty() {
                replaced += emit(scanner, &pending, output)?;
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
            replaced += emit(scanner, &pending, output)?;
            output.flush()?;
            pending.clear();
        } else if pending.len() >= MAX_LINE {
            // An over-long line: write out all but the tail, taking care
            // not to cut through a secret.
            let hits = scanner.scan(&pending);
            let mut cut = pending.len() - OVERLAP;
            for hit in &hits {
                if hit.start < cut && hit.end > cut {
                    cut = hit.start;
                }
            }
            replaced += emit(scanner, &pending[..cut], output)?;
            pending.drain(..cut);
        }
    }
}

fn emit(scanner: &Scanner, piece: &[u8], output: &mut impl Write) -> std::io::Result<usize> {
    let hits = scanner.scan(piece);
    if hits.is_empty() {
        output.write_all(piece)?;
    } else {
        output.write_all(&replace(scanner, piece, &hits))?;
    }
    Ok(hits.len())
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
