//! Multi-line private key blocks (PEM of every kind, OpenSSH, PGP, SSH.com's
//! SSH2, PuTTY `.ppk`): where a block that opens at a header ends.
//!
//! A rule matches only the header (`-----BEGIN … PRIVATE KEY-----`,
//! `---- BEGIN SSH2 … PRIVATE KEY ----`, `PuTTY-User-Key-File-N: ALG`);
//! [`key_block_end`] then walks the lines after it, wherever the header
//! sits on its line: behind indentation (a YAML block scalar), a log
//! prefix (`2026-12-01T10:00:00Z app[1]: `, or one whose width changes
//! from line to line: `9:` then `10:`), a comment or quote marker
//! (`# `, `// `, `> `, `* `, `"`), inside a string with `\n` escapes (JSON)
//! or with CRLF line ends, or joined onto one line by blanks (`echo
//! $KEY` unquoted). The block is the header and every following
//! body line (base64, armor headers such as `Proc-Type:` or `Comment:`,
//! one blank line at a time) up to the END line, or up to the last body
//! line when there is none (a truncated log). A header with no base64
//! body is not a key (a PEM library's `"-----BEGIN RSA PRIVATE
//! KEY-----"` constant, a documentation's `...`).
//!
//! Invariant: the walk is linear. It reads each line once, stops at the
//! first line that is not a body line (another header is not one), and
//! goes at most [`MAX_BLOCK_LINES`] lines or [`MAX_BLOCK_BYTES`] bytes, so
//! a file of repeated headers costs one look at each line.

/// Lines after a header the walk reads at most (a 16 kbit RSA key in PEM
/// is about 200 lines).
pub const MAX_BLOCK_LINES: usize = 400;
/// Bytes after a header the walk reads at most.
pub const MAX_BLOCK_BYTES: usize = 64 * 1024;
/// Bytes between a header and its line end at most (`",` or `\n" +`
/// after a PEM header, an algorithm name after PuTTY's).
const MAX_HEADER_REST: usize = 64;

/// How far back from a header its line's prefix is looked for: a header
/// behind more than this on its line keeps only the last this many bytes
/// as the prefix the body lines must repeat.
const MAX_PREFIX: usize = 4096;
/// base64 characters a block's body must hold to be a key.
const MIN_BODY_CHARS: usize = 20;
/// Distinct base64 characters a body must hold (`AAAA…` or `xxxx…` is a
/// placeholder).
const MIN_BODY_DISTINCT: usize = 8;

/// The kind of block a header opens, which says what its END line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `-----BEGIN … PRIVATE KEY-----` (PKCS#1, PKCS#8, SEC1, OpenSSH,
    /// PGP's `PRIVATE KEY BLOCK`), closed by `-----END … PRIVATE KEY…-----`.
    Pem,
    /// `---- BEGIN SSH2 [ENCRYPTED ]PRIVATE KEY ----`, closed by `---- END
    /// SSH2 …`.
    Ssh2,
    /// `PuTTY-User-Key-File-N: ALG`, closed by `Private-MAC: HEX` (or
    /// `Private-Hash:`).
    Putty,
}

fn kind_of(header: &[u8]) -> Option<Kind> {
    if header.starts_with(b"-----BEGIN") {
        Some(Kind::Pem)
    } else if header.starts_with(b"---- BEGIN SSH2") {
        Some(Kind::Ssh2)
    } else if header.starts_with(b"PuTTY-User-Key-File-") {
        Some(Kind::Putty)
    } else {
        None
    }
}

/// What one line after a header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The block's END line; the block ends this many bytes into the line.
    End(usize),
    /// base64 (`=XXXX`, PGP's checksum, too): the content ends this many
    /// bytes into the line.
    Base64(usize),
    /// An armor header (`Proc-Type: 4,ENCRYPTED`, `Comment: "…"`,
    /// PuTTY's `Encryption: none`), ending this many bytes into the line.
    Header(usize),
    Blank,
    Other,
}

/// Where the block opened by the header at `data[start..end]` ends (one
/// past its END line's closing dashes or MAC, or past its last body line
/// when it has no END line); `None` when the header has no base64 body.
pub fn key_block_end(data: &[u8], start: usize, end: usize) -> Option<usize> {
    let kind = kind_of(&data[start..end])?;
    // The header line's prefix (a log prefix, indentation) is what the
    // body lines repeat: looked for no further back than [`MAX_PREFIX`]
    // bytes, so a long line of many headers costs each header that much,
    // not the whole line before it again (quadratic before).
    let low = start.saturating_sub(MAX_PREFIX);
    let mut line_begin = memchr::memrchr(b'\n', &data[low..start]).map_or(low, |i| low + i + 1);
    // The rest of the header line says how lines are separated: real line
    // ends, or `\n` escapes inside a string (JSON, a log's quoted value),
    // whichever comes first. That rest is short (`-----` then the line
    // end, a PuTTY header's algorithm, a closing quote): looking no
    // further than [`MAX_HEADER_REST`] bytes keeps a line of a million
    // headers linear.
    let rest = &data[end..data.len().min(end + MAX_HEADER_REST)];
    let real = memchr::memchr(b'\n', rest);
    let escape = memchr::memmem::find(rest, b"\\n");
    let escaped = match (real, escape) {
        (Some(real), Some(escape)) => escape < real,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    // A key joined onto one line (`echo $KEY` unquoted: header, body and
    // END separated by blanks): the body follows the header on its line.
    let blanks_then = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map(|i| (i, rest[i]));
    if let Some((skip @ 1.., next)) = blanks_then
        && is_base64_byte(next)
    {
        return one_line_block_end(kind, data, end + skip);
    }
    if real.is_none() && escape.is_none() {
        return None;
    }
    let separator: &[u8] = if escaped { b"\\n" } else { b"\n" };
    if escaped {
        // The header's line starts after the string's opening quote or
        // the escaped line end before it.
        let before = &data[line_begin..start];
        let quote = memchr::memrchr(b'"', before).map(|i| i + 1);
        let escape = memchr::memmem::rfind(before, b"\\n").map(|i| i + 2);
        line_begin += quote.max(escape).unwrap_or(0);
    }
    let prefix = &data[line_begin..start];
    let limit = data.len().min(end.saturating_add(MAX_BLOCK_BYTES));
    let next_separator = |from: usize| -> Option<usize> {
        if from >= limit {
            return None;
        }
        memchr::memmem::find(&data[from..limit], separator).map(|i| from + i)
    };
    // The header line's own rest (a PuTTY header's algorithm, a closing
    // quote) is not part of the walk.
    let mut at = next_separator(end)? + separator.len();
    let mut block_end = None;
    let mut chars = 0;
    let mut seen = [false; 256];
    let mut blanks = 0;
    // An armor header whose line ends in `\` goes on on the next line
    // (RFC 4716's `Comment: "…\`), whatever that holds.
    let mut header_goes_on = false;
    let mut after_body = false;
    for _ in 0..MAX_BLOCK_LINES {
        if at >= limit {
            break;
        }
        let line_end = next_separator(at).unwrap_or(limit);
        let line = &data[at..line_end];
        if header_goes_on {
            header_goes_on = ends_in_backslash(line);
            block_end = Some(at + line.trim_ascii_end().len());
            if line_end >= limit {
                break;
            }
            at = line_end + separator.len();
            continue;
        }
        let (class, content) = classify(kind, prefix, line, after_body);
        after_body = matches!(class, Line::Base64(_)) && content.len() >= 16;
        match (class, content) {
            (Line::End(offset), _) => {
                return (chars >= MIN_BODY_CHARS && distinct(&seen) >= MIN_BODY_DISTINCT)
                    .then_some(at + offset);
            }
            (Line::Base64(offset), content) => {
                chars += content.len();
                for &b in content {
                    seen[usize::from(b)] = true;
                }
                block_end = Some(at + offset);
                blanks = 0;
            }
            (Line::Header(offset), _) => {
                block_end = Some(at + offset);
                blanks = 0;
                header_goes_on = ends_in_backslash(line);
            }
            (Line::Blank, _) => {
                blanks += 1;
                if blanks > 1 {
                    break;
                }
            }
            (Line::Other, _) => break,
        }
        if line_end >= limit {
            break;
        }
        at = line_end + separator.len();
    }
    if chars >= MIN_BODY_CHARS && distinct(&seen) >= MIN_BODY_DISTINCT {
        block_end
    } else {
        None
    }
}

/// Whether `b` is a byte of the standard base64 alphabet or its padding.
fn is_base64_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')
}

/// [`key_block_end`] for a block joined onto one line, its body starting
/// at `data[at]`: words separated by blanks, each base64, up to the END
/// marker (`-----END … PRIVATE KEY-----`, `---- END SSH2 … ----`,
/// `Private-MAC: HEX`), or up to the last base64 word when the line holds
/// none. The same bounds and the same stop at the first word that is no
/// body word as the walk over lines.
fn one_line_block_end(kind: Kind, data: &[u8], mut at: usize) -> Option<usize> {
    let limit = data.len().min(at.saturating_add(MAX_BLOCK_BYTES));
    let mut block_end = None;
    let mut chars = 0;
    let mut seen = [false; 256];
    for _ in 0..MAX_BLOCK_LINES {
        while at < limit && matches!(data[at], b' ' | b'\t') {
            at += 1;
        }
        if at >= limit {
            break;
        }
        let word_end = data[at..limit]
            .iter()
            .position(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .map_or(limit, |i| at + i);
        let word = &data[at..word_end];
        if let Some(offset) = end_line(kind, &data[at..limit.min(at + MAX_HEADER_REST * 2)]) {
            return (chars >= MIN_BODY_CHARS && distinct(&seen) >= MIN_BODY_DISTINCT)
                .then_some(at + offset);
        }
        // An armor header (`Proc-Type: 4,ENCRYPTED`, PuTTY's
        // `Encryption: none`): its name and one word of value, or a
        // quoted value.
        if ARMOR_NAMES
            .iter()
            .any(|name| data[at..limit].starts_with(name))
        {
            let name_end = at + word.len();
            let value = data[name_end..limit]
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\t'))
                .map_or(limit, |i| name_end + i);
            // A quoted value (RFC 4716's `Comment: "…"`) holds blanks.
            let value_end = if data.get(value) == Some(&b'"') {
                memchr::memchr(b'"', &data[value + 1..limit]).map_or(limit, |i| value + i + 2)
            } else {
                data[value..limit]
                    .iter()
                    .position(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                    .map_or(limit, |i| value + i)
            };
            block_end = Some(value_end);
            if value_end >= limit || !matches!(data[value_end], b' ' | b'\t') {
                break;
            }
            at = value_end;
            continue;
        }
        if !(word.iter().all(|&b| is_base64_byte(b)) && looks_encoded(word)) {
            break;
        }
        chars += word.len();
        for &b in word {
            seen[usize::from(b)] = true;
        }
        block_end = Some(word_end);
        if word_end >= limit || !matches!(data[word_end], b' ' | b'\t') {
            break;
        }
        at = word_end;
    }
    (chars >= MIN_BODY_CHARS && distinct(&seen) >= MIN_BODY_DISTINCT)
        .then_some(block_end)
        .flatten()
}

/// Whether a line (its `\r` aside) ends in a backslash: an armor
/// header's value continued on the next line.
fn ends_in_backslash(line: &[u8]) -> bool {
    line.trim_ascii_end().ends_with(b"\\")
}

fn distinct(seen: &[bool; 256]) -> usize {
    seen.iter().filter(|&&b| b).count()
}

/// Bytes that may open a body line before its content: indentation,
/// comment and quote markers (`# `, `// `, `> `, ` * `, `"`, `'`), YAML's
/// `|`.
fn is_decoration(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'#' | b'/' | b'>' | b'*' | b';' | b'"' | b'\'' | b'|'
    )
}

/// Bytes that may close a body line after its content: a closing quote, a
/// joiner (`+`, `,`, `\`), `;`, `)`, blanks and `\r`.
fn is_closing(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t' | b'\r' | b'"' | b'\'' | b',' | b'+' | b'\\' | b';' | b')'
    )
}

/// The armor headers key blocks carry (RFC 1421's PEM, RFC 4880's PGP,
/// RFC 4716's SSH2, PuTTY's `.ppk`), with their `: `: what a body line
/// behind a prefix of changing width may start with.
const ARMOR_NAMES: [&[u8]; 10] = [
    b"Proc-Type: ",
    b"DEK-Info: ",
    b"Comment: ",
    b"Version: ",
    b"Subject: ",
    b"Encryption: ",
    b"Public-Lines: ",
    b"Private-Lines: ",
    b"Key-Derivation: ",
    b"Argon2-",
];

/// What opens a key block's header (see [`kind_of`]).
const HEADER_MARKERS: [&[u8]; 3] = [b"-----BEGIN", b"---- BEGIN SSH2", b"PuTTY-User-Key-File-"];

/// What `line` is in a block of `kind` whose header line began with
/// `prefix`, and its content (the base64 of a body line). `after_body`:
/// the line before was a whole body line (16 base64 characters or more),
/// so a short run of base64 in whole 4-character groups is the wrapped
/// body's last line whatever it reads like (a PuTTY key's 4-character
/// `Public-Lines` tail, a PEM body's last `AbCd`); a word of another
/// length (`after`) still ends the block.
fn classify<'a>(kind: Kind, prefix: &[u8], line: &'a [u8], after_body: bool) -> (Line, &'a [u8]) {
    // Another key's header, wherever it sits, is never a body line: the
    // walk stops there, and the header starts a walk of its own.
    if HEADER_MARKERS
        .iter()
        .any(|marker| memchr::memmem::find(line, marker).is_some())
    {
        return (Line::Other, &[]);
    }
    // Closing bytes, and a string's escaped line end (`"MII…\n" +`).
    let mut content_end = line.len();
    loop {
        // `+` joins strings (`"MII…" +`) only after a quote or a blank;
        // glued to the run it is base64's own (`Khh+`, a wrapped body's
        // last line).
        let joiner_glued = content_end >= 2
            && line[content_end - 1] == b'+'
            && !matches!(line[content_end - 2], b' ' | b'\t' | b'"' | b'\'');
        if content_end > 0 && is_closing(line[content_end - 1]) && !joiner_glued {
            content_end -= 1;
        } else if content_end >= 2
            && line[content_end - 2] == b'\\'
            && matches!(line[content_end - 1], b'n' | b'r')
        {
            content_end -= 2;
        } else {
            break;
        }
    }
    let trimmed = &line[..content_end];
    // The content starts after as much of the header line's prefix as the
    // line shares (same shape: a log prefix's changing timestamp), or
    // after a word of that (`key: PuTTY-User-…` behind a log prefix, then
    // `Encryption: none` behind it alone), or after decoration alone.
    let shared = trimmed
        .iter()
        .zip(prefix)
        .take_while(|(x, y)| x == y || (x.is_ascii_digit() && y.is_ascii_digit()))
        .count();
    if shared == trimmed.len()
        && shared < prefix.len()
        && prefix[shared..].iter().all(u8::is_ascii_whitespace)
    {
        // The prefix alone, its blanks trimmed: a blank line.
        return (Line::Blank, &[]);
    }
    let decorated = trimmed
        .iter()
        .position(|&b| !is_decoration(b))
        .unwrap_or(trimmed.len());
    let words = (0..shared)
        .rev()
        .filter(|&i| trimmed[i] == b' ')
        .map(|i| i + 1)
        .take(4);
    let starts = std::iter::once(shared)
        .chain(words)
        .chain(std::iter::once(decorated));
    // Last, a prefix of any width (a timestamp whose trailing zeros are
    // dropped, `grep -n`'s `9:` then `10:`, `app[8]:` then `app[33]:`, a
    // log level that changes): the END marker wherever it sits, or the
    // base64 run that ends the line after its last byte of another kind.
    let marker = match kind {
        Kind::Pem => &b"-----END "[..],
        Kind::Ssh2 => b"---- END SSH2 ",
        Kind::Putty => b"Private-MAC:",
    };
    let end_marker = memchr::memmem::rfind(trimmed, marker);
    let last_run = trimmed
        .iter()
        .rposition(|&b| !is_base64_byte(b))
        .map(|i| i + 1)
        .filter(|&i| i < trimmed.len());
    // An armor header behind such a prefix starts at its name.
    let armor = ARMOR_NAMES
        .iter()
        .filter_map(|name| memchr::memmem::find(trimmed, name))
        .min();
    // A line of no body content whose prefix changed width (`9:` then
    // `10:`, a timestamp's digits): a blank line, if no longer than the
    // header's prefix and a few bytes more. At most one in a row, as ever.
    let blank_behind_prefix = end_marker.is_none()
        && armor.is_none()
        && last_run.is_none()
        && !prefix.is_empty()
        && trimmed.len() <= prefix.len() + 4;
    let any_width = end_marker.into_iter().chain(armor).chain(last_run);
    for start in starts.chain(any_width) {
        let rest = &trimmed[start..];
        let kind_of_line = classify_rest(kind, rest, after_body);
        match kind_of_line {
            Line::Other => continue,
            Line::End(offset) => return (Line::End(start + offset), rest),
            Line::Base64(_) => return (Line::Base64(content_end), rest),
            Line::Header(_) => return (Line::Header(content_end), rest),
            Line::Blank => return (Line::Blank, rest),
        }
    }
    if blank_behind_prefix {
        return (Line::Blank, &[]);
    }
    (Line::Other, &[])
}

/// What a body line's content is (offsets into `rest`).
fn classify_rest(kind: Kind, rest: &[u8], after_body: bool) -> Line {
    if rest.is_empty() {
        return Line::Blank;
    }
    if let Some(end) = end_line(kind, rest) {
        return Line::End(end);
    }
    if rest
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        && (looks_encoded(rest) || (after_body && rest.len().is_multiple_of(4)))
    {
        return Line::Base64(rest.len());
    }
    // `Name: value`, but never another key's header.
    let name = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or(rest.len());
    if name > 0
        && rest[0].is_ascii_alphabetic()
        && rest[name..].starts_with(b": ")
        && !rest.starts_with(b"PuTTY-User-Key-File-")
    {
        return Line::Header(rest.len());
    }
    Line::Other
}

/// Whether a run of base64 characters reads as encoded data rather than a
/// word (`after`, `Done`): 16 characters or more (a body line is 64 or
/// 70), or a short last line with capitals, small letters and a digit,
/// `+`, `/` or `=` (PGP's checksum `=Zq8p` too).
fn looks_encoded(run: &[u8]) -> bool {
    run.len() >= 16
        || (run.iter().any(u8::is_ascii_uppercase)
            && run.iter().any(u8::is_ascii_lowercase)
            && run
                .iter()
                .any(|&b| b.is_ascii_digit() || matches!(b, b'+' | b'/' | b'=')))
}

/// Where the END marker of a `kind` block that opens `rest` ends.
fn end_line(kind: Kind, rest: &[u8]) -> Option<usize> {
    match kind {
        Kind::Pem => {
            let tail = rest.strip_prefix(b"-----END ")?;
            let label = memchr::memmem::find(tail, b"PRIVATE KEY")?;
            let dashes = memchr::memmem::find(&tail[label..], b"-----")?;
            Some(b"-----END ".len() + label + dashes + 5)
        }
        Kind::Ssh2 => {
            let tail = rest.strip_prefix(b"---- END SSH2 ")?;
            let dashes = memchr::memmem::find(tail, b" ----")?;
            Some(b"---- END SSH2 ".len() + dashes + 5)
        }
        Kind::Putty => {
            let tail = rest
                .strip_prefix(b"Private-MAC:")
                .or_else(|| rest.strip_prefix(b"Private-Hash:"))?;
            let skip = usize::from(tail.first() == Some(&b' '));
            let hex = tail[skip..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            (hex > 0).then_some(rest.len() - tail.len() + skip + hex)
        }
    }
}

/// Whether `line` holds a key block's header that its own line does not
/// close: `redact` holds the lines after it until [`closes_key_block`]
/// (or a line that is no body line) says the block is over.
pub fn opens_key_block(line: &[u8]) -> bool {
    let find = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
    (find(b"-----BEGIN") && find(b"PRIVATE KEY") && !find(b"-----END"))
        || (find(b"---- BEGIN SSH2") && !find(b"---- END SSH2"))
        || (find(b"PuTTY-User-Key-File-") && !find(b"Private-MAC") && !find(b"Private-Hash"))
}

/// Whether `line` (its line end included or not), after `previous`, can
/// be part of the key block opened by the header on `header_line`: a body
/// line or its END line, read behind the header line's prefix as
/// [`key_block_end`] reads it, or the rest of an armor header that
/// `previous` ended with `\`.
pub fn continues_key_block(header_line: &[u8], previous: &[u8], line: &[u8]) -> bool {
    // The line before was a header going on here (`Comment: "…\`).
    if previous != header_line && ends_in_backslash(previous) {
        return true;
    }
    let header = [
        &b"-----BEGIN"[..],
        b"---- BEGIN SSH2",
        b"PuTTY-User-Key-File-",
    ]
    .iter()
    .filter_map(|marker| memchr::memmem::find(header_line, marker))
    .min();
    let Some(at) = header else {
        return false;
    };
    let Some(kind) = kind_of(&header_line[at..]) else {
        return false;
    };
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let prefix = &header_line[..at];
    let after_body = previous != header_line && {
        let previous = previous.strip_suffix(b"\n").unwrap_or(previous);
        let (class, content) = classify(kind, prefix, previous, false);
        matches!(class, Line::Base64(_)) && content.len() >= 16
    };
    classify(kind, prefix, line, after_body).0 != Line::Other
}

/// Whether `line` ends a key block (its END line or a PuTTY key's MAC),
/// wherever that sits on the line.
pub fn closes_key_block(line: &[u8]) -> bool {
    let find = |needle: &[u8]| memchr::memmem::find(line, needle).is_some();
    find(b"-----END") || find(b"---- END SSH2") || find(b"Private-MAC:") || find(b"Private-Hash:")
}

/// Where the private members of a JSON Web Key whose `"d"` value ends at
/// `end` end: past the value of the last of `"p"`, `"q"`, `"dp"`, `"dq"`,
/// `"qi"` before the object's closing `}` (at most [`MAX_BLOCK_BYTES`]
/// on), or `end` itself for a key with none (EC, OKP). In the usual order
/// (`d`, `p`, `q`, `dp`, `dq`, `qi`) and in sorted order (`d`, `dp`, `dq`,
/// `e`, `kty`, `n`, `p`, `q`, `qi`) they all follow `d`. Escaped quotes
/// (a JWK inside a JSON string) are read as quotes.
pub fn jwk_private_end(data: &[u8], end: usize) -> usize {
    #[expect(
        clippy::expect_used,
        reason = "a constant pattern, exercised by the tests"
    )]
    fn member() -> &'static regex::bytes::Regex {
        static MEMBER: std::sync::OnceLock<regex::bytes::Regex> = std::sync::OnceLock::new();
        MEMBER.get_or_init(|| {
            regex::bytes::Regex::new(
                r#"\\?"(?:p|q|dp|dq|qi)\\?"[ \t]*:[ \t]*\\?"[A-Za-z0-9_-]+\\?""#,
            )
            .expect("constant regex")
        })
    }
    let limit = data.len().min(end.saturating_add(MAX_BLOCK_BYTES));
    let close = memchr::memchr(b'}', &data[end..limit]).map_or(limit, |i| end + i);
    member()
        .find_iter(&data[end..close])
        .last()
        .map_or(end, |found| end + found.end())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random-looking base64 line of `n` characters, built at run time.
    fn body_line(seed: u32, n: usize) -> String {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n as u32)
            .map(|j| {
                char::from(alphabet[((seed * 977 + j).wrapping_mul(2_654_435_761) >> 26) as usize])
            })
            .collect()
    }

    fn end_of(text: &str) -> Option<usize> {
        let start = text
            .find("-----BEGIN")
            .or_else(|| text.find("PuTTY-User"))?;
        let header_end = match text[start..].find("-----\n") {
            Some(i) if text[start..].starts_with("-----") => start + i + 5,
            _ => start + text[start..].find(['\n', '\\'])?,
        };
        key_block_end(text.as_bytes(), start, header_end)
    }

    #[test]
    fn a_bare_header_is_no_block_and_a_body_makes_one() {
        let begin = ["-----BEGIN", "PRIVATE KEY-----"].join(" ");
        let end = ["-----END", "PRIVATE KEY-----"].join(" ");
        assert_eq!(end_of(&format!("{begin}\n")), None);
        assert_eq!(end_of(&format!("{begin}\n{begin}\n")), None);
        assert_eq!(end_of(&format!("{begin}\n...\n{end}\n")), None);
        let text = format!("{begin}\n{}\n{end}\nafter\n", body_line(1, 64));
        assert_eq!(end_of(&text), text.find("\nafter"));
        // Cut off: the block ends with its last body line.
        let text = format!(
            "{begin}\n{}\n{}\nafter\n",
            body_line(1, 64),
            body_line(2, 10)
        );
        assert_eq!(end_of(&text), text.find("\nafter"));
    }

    /// Issue #16, S3: 32,000 repeated `-----BEGIN PRIVATE KEY-----` lines
    /// took 25 s (each header searched the rest of the file for its END
    /// line) and each was reported. 50,000 headers of every kind, bare or
    /// behind a prefix, are no finding for `scan` and pass `redact`
    /// untouched (the walk from each stops at the next line).
    #[test]
    fn wrapped_bodies_whose_last_line_reads_like_a_word_stay_in_the_block() {
        // A PuTTY v3 ed25519 key: its public blob is 68 base64 characters,
        // wrapped at 64, so `Public-Lines` ends in a 4-character line that
        // is as often as not letters only (`Qbxk`). Found by a tester: the
        // walk stopped there, and `redact` let `Private-Lines` and the MAC
        // through for about half of random keys. Deterministic bodies
        // cover the shapes: letters only, one case, digits.
        use base64::Engine as _;
        let scanner = crate::Scanner::new(None).unwrap();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect()
        };
        let blob = |parts: &[&[u8]]| {
            let mut out = Vec::new();
            for part in parts {
                out.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
                out.extend_from_slice(part);
            }
            base64::engine::general_purpose::STANDARD.encode(out)
        };
        let mut tails = std::collections::BTreeSet::new();
        for _ in 0..64 {
            let public = blob(&[b"ssh-ed25519", &random(32)]);
            let private = blob(&[&random(32)]);
            let mac: String = random(32).iter().map(|b| format!("{b:02x}")).collect();
            let header = ["PuTTY-User-Key", "File-3: ssh-ed25519"].join("-");
            let text = format!(
                "{header}\nEncryption: none\nComment: x\nPublic-Lines: 2\n{}\n{}\nPrivate-Lines: 1\n{private}\nPrivate-MAC: {mac}\n",
                &public[..64],
                &public[64..]
            );
            let tail = &public[64..];
            tails.insert(
                tail.bytes().all(|b| b.is_ascii_alphabetic()) && !looks_encoded(tail.as_bytes()),
            );
            let hits = scanner.scan_deep(text.as_bytes());
            assert!(
                hits.iter()
                    .any(|(hit, _)| hit.end >= text.find(&mac).unwrap() + mac.len()),
                "{text}"
            );
            let mut out = Vec::new();
            crate::redact::redact_stream(&scanner, &mut text.as_bytes(), &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains(&private) && !out.contains(&mac), "{out}");
        }
        assert!(tails.contains(&true), "no letters-only tail among the keys");
    }

    #[test]
    fn fifty_thousand_bare_headers_are_no_finding() {
        let scanner = crate::Scanner::new(None).unwrap();
        let headers = [
            ["-----BEGIN", "PRIVATE KEY-----"].join(" "),
            ["  -----BEGIN RSA", "PRIVATE KEY-----"].join(" "),
            ["---- BEGIN SSH2", "PRIVATE KEY ----"].join(" "),
            ["key: PuTTY-User-Key", "File-3: ssh-ed25519"].join("-"),
        ];
        for header in &headers {
            let text = format!("{header}\n").repeat(50_000);
            assert!(scanner.scan_deep(text.as_bytes()).is_empty(), "{header}");
            let mut out = Vec::new();
            crate::redact::redact_stream(&scanner, &mut text.as_bytes(), &mut out).unwrap();
            assert!(out == text.as_bytes(), "{header}");
        }
        // On one line: joined by blanks, and by `\n` escapes.
        for joint in [" ", "\\n"] {
            let line = vec![headers[0].as_str(); 50_000].join(joint);
            assert!(scanner.scan_deep(line.as_bytes()).is_empty(), "{joint}");
        }
        let mixed: String = (0..50_000)
            .map(|i| format!("{}\n", headers[i % 4]))
            .collect();
        assert!(scanner.scan_deep(mixed.as_bytes()).is_empty());
    }
}
