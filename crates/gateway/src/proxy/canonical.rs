//! The one canonical form of an upstream path, computed once, so the scope
//! check and the provider read the same path.
//!
//! A key limited to `gemini-2.0-flash` must not reach another model through
//! `models/gemini-2.0-flash/%2e%2e/gemini-2.5-pro:generateContent`: the
//! gateway would see a path under the allowed model, an upstream that
//! normalises dot segments another. So each segment is brought to one form:
//!
//! - percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`,
//!   RFC 3986 §2.3) are decoded, since RFC 3986 §6.2.2.2 makes both forms
//!   equivalent and upstreams do decode them; every other escape is kept
//!   exactly as written (its meaning is reserved);
//! - empty segments (`a//b`) are dropped, as most HTTP servers merge slashes;
//!   a trailing slash is kept;
//! - a segment is refused ([`PathRefusal`]) when it is made of dots only
//!   (`.`, `..`, `...`, perhaps followed by spaces), also before a `;`
//!   parameter (`..;x`, which some servers read as `..`), or when it holds
//!   `\`, a NUL or control byte, an encoded `/`, a malformed escape, or
//!   bytes that are not UTF-8; and that at every level of decoding, so a
//!   double-encoded `%252e%252e` is refused like `..` in case some hop
//!   decodes twice.
//!
//! This file uses only `std`, so `fuzz/` includes it by path.

/// Why a path is refused. Each is a client error (`invalid_path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathRefusal {
    /// A segment of dots only (`.`, `..`, `%2e%2E`, `..;x`, …).
    DotSegment,
    /// A `/` or `\` inside a segment, encoded (`%2F`, `%5c`) or literal `\`.
    Separator,
    /// A NUL or another control byte (`%00`, `%0a`, `%7F`, …).
    ControlByte,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// Escapes that decode to bytes that are not UTF-8 (`%c0%ae`, …).
    NotUtf8,
}

impl PathRefusal {
    /// The message shown to the client (fixed text: the path is never echoed).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::DotSegment => "the path may not contain `.` or `..` segments, encoded or not",
            Self::Separator => {
                "the path may not contain `\\` or an encoded `/` or `\\` (`%2F`, `%5C`) in a segment"
            }
            Self::ControlByte => {
                "the path may not contain NUL or control characters, encoded or not"
            }
            Self::MalformedEscape => "the path holds a `%` that is not followed by two hex digits",
            Self::NotUtf8 => "the path's percent-escapes do not decode to UTF-8",
        }
    }
}

/// Canonicalises `rest`, the API path after the route prefix (`v1/chat/completions`,
/// with or without a leading `/`, no query), into the path forwarded upstream:
/// starting with `/`, segments joined by single `/`, unreserved escapes decoded.
pub(crate) fn canonical_path(rest: &str) -> Result<String, PathRefusal> {
    let mut out = String::with_capacity(rest.len() + 1);
    for segment in rest.split('/').filter(|segment| !segment.is_empty()) {
        out.push('/');
        push_segment(&mut out, segment)?;
    }
    // The root, or a trailing slash, which is kept.
    if out.is_empty() || rest.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// Appends the canonical form of one non-empty segment, after checking it.
fn push_segment(out: &mut String, segment: &str) -> Result<(), PathRefusal> {
    let start = out.len();
    let bytes = segment.as_bytes();
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let decoded = escape_at(bytes, index).ok_or(PathRefusal::MalformedEscape)?;
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else {
                // Kept as written: `%` and two ASCII hex digits.
                out.push_str(segment.get(index..index + 3).unwrap_or_default());
            }
            index += 3;
        } else {
            let width = segment
                .get(index..)
                .and_then(|tail| tail.chars().next())
                .map_or(1, char::len_utf8);
            out.push_str(segment.get(index..index + width).unwrap_or_default());
            index += width;
        }
    }
    check_every_decoding(out.get(start..).unwrap_or_default().as_bytes())
}

/// Checks a segment and each successive full percent-decoding of it, until
/// decoding changes nothing (each round that changes something shortens the
/// bytes, so this ends).
fn check_every_decoding(segment: &[u8]) -> Result<(), PathRefusal> {
    check_level(segment)?;
    // The common case, a segment without escapes, allocates nothing.
    if !segment.contains(&b'%') {
        return Ok(());
    }
    let mut level = segment.to_vec();
    loop {
        let next = decode_all(&level);
        if next == level {
            return Ok(());
        }
        check_level(&next)?;
        level = next;
    }
}

fn check_level(bytes: &[u8]) -> Result<(), PathRefusal> {
    if bytes.iter().any(|&b| b == b'/' || b == b'\\') {
        return Err(PathRefusal::Separator);
    }
    if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(PathRefusal::ControlByte);
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err(PathRefusal::NotUtf8);
    }
    let before_parameters = bytes.split(|&b| b == b';').next().unwrap_or(bytes);
    if is_dots(bytes) || is_dots(before_parameters) {
        return Err(PathRefusal::DotSegment);
    }
    Ok(())
}

/// One or more dots, perhaps followed by spaces (Windows servers trim them).
fn is_dots(bytes: &[u8]) -> bool {
    let trimmed = bytes
        .iter()
        .rposition(|&b| b != b' ')
        .and_then(|last| bytes.get(..=last))
        .unwrap_or_default();
    !trimmed.is_empty() && trimmed.iter().all(|&b| b == b'.')
}

/// Decodes every well-formed `%HH`; malformed ones stay as they are.
fn decode_all(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        match (byte, escape_at(bytes, index)) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                index += 3;
            }
            _ => {
                out.push(byte);
                index += 1;
            }
        }
    }
    out
}

/// The byte encoded by the escape starting at `index` (which holds `%`).
fn escape_at(bytes: &[u8], index: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(index + 1)?)?;
    let low = hex_value(*bytes.get(index + 2)?)?;
    Some(high << 4 | low)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    use PathRefusal::*;

    fn check(rest: &str, expected: Result<&str, PathRefusal>) {
        assert_eq!(
            canonical_path(rest).as_deref(),
            expected.as_deref(),
            "{rest:?}"
        );
    }

    #[test]
    fn canonical_forms() {
        check("", Ok("/"));
        check("/", Ok("/"));
        check("v1/chat/completions", Ok("/v1/chat/completions"));
        check("/v1/chat/completions", Ok("/v1/chat/completions"));
        check("v1/models/", Ok("/v1/models/"));
        // Empty segments are merged, as upstreams merge them.
        check("v1//chat///completions", Ok("/v1/chat/completions"));
        check("//v1/models", Ok("/v1/models"));
        // Unreserved escapes are decoded, in either case.
        check(
            "v1beta/models/gemini%2D2%2E5-pro:generateContent",
            Ok("/v1beta/models/gemini-2.5-pro:generateContent"),
        );
        check("v1/%6d%6F%64els", Ok("/v1/models"));
        check("a%7Eb%5fc", Ok("/a~b_c"));
        // Other escapes are kept as written.
        check("v1/files/a%3Ab%20c", Ok("/v1/files/a%3Ab%20c"));
        check("v1/files/a%3ab", Ok("/v1/files/a%3ab"));
        check("v1/files/%25", Ok("/v1/files/%25"));
        check("v1/files/%2520", Ok("/v1/files/%2520"));
        // Dots inside a name and `;` parameters of ordinary segments pass.
        check(
            "models/gemini-2.0-flash:x",
            Ok("/models/gemini-2.0-flash:x"),
        );
        check("models/a;b=c/x", Ok("/models/a;b=c/x"));
        check("models/a..b", Ok("/models/a..b"));
        check("v1/é", Ok("/v1/é"));
    }

    #[test]
    fn refusals() {
        for dots in [
            ".",
            "..",
            "...",
            "%2e",
            "%2E",
            "%2e%2e",
            "%2E%2e",
            ".%2e",
            "%2e.",
            "%252e%252e",
            "%25252E",
            "..;x",
            ".;x=1",
            "%2e%2e;jsessionid=1",
            "..%3bx",
            ".. ",
            "..%20",
        ] {
            check(
                &format!("models/gemini-2.0-flash/{dots}/gemini-2.5-pro"),
                Err(DotSegment),
            );
            check(dots, Err(DotSegment));
        }
        for separator in ["a%2fb", "a%2Fb", "a%5cb", "a%5Cb", "a\\b", "%252f", "%255C"] {
            check(&format!("v1/{separator}/x"), Err(Separator));
        }
        for control in ["%00", "a%00b", "%0a", "%0D", "%09", "%1f", "%7F", "%2500"] {
            check(&format!("v1/{control}"), Err(ControlByte));
        }
        for malformed in ["%", "%2", "%zz", "a%g0", "%%32%65"] {
            check(&format!("v1/{malformed}"), Err(MalformedEscape));
        }
        check("v1/%c0%ae%c0%ae", Err(NotUtf8));
        check("v1/%ff", Err(NotUtf8));
    }
}
