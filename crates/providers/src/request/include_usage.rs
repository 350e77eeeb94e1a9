//! Asking a stream for its usage (`stream_options.include_usage`) by
//! editing the body's bytes: the client's request is forwarded as written
//! (DESIGN.md, 2026-11-29), so key order (which structured-output schemas
//! depend on), number spellings and escapes are kept.

use super::json::{self, Node, Value};

/// For a JSON object with `"stream": true` and no
/// `stream_options.include_usage: true`, the body with only that field
/// inserted or set; `None` when nothing needs to change (not a stream, usage
/// already asked for, `stream_options` neither an object nor null, or not a
/// JSON object the gateway accepts: duplicate keys included).
pub fn insert_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    // Most requests do not stream: skip parsing them a second time.
    if !contains(body, b"\"stream\"") {
        return None;
    }
    let root = json::parse(body).ok()?;
    if root.get("stream").and_then(Node::as_bool) != Some(true) {
        return None;
    }
    let (range, text): (std::ops::Range<usize>, &[u8]) = match root.get("stream_options") {
        None => {
            let end = last_member_end(&root)?;
            (end..end, br#","stream_options":{"include_usage":true}"#)
        }
        Some(options) => match &options.value {
            Value::Null => (options.span.clone(), br#"{"include_usage":true}"#),
            Value::Object(members) => match options.get("include_usage") {
                Some(flag) if flag.as_bool() == Some(true) => return None,
                Some(flag) => (flag.span.clone(), b"true"),
                None if members.is_empty() => {
                    let inside = options.span.start + 1;
                    (inside..inside, br#""include_usage":true"#)
                }
                None => {
                    let end = last_member_end(options)?;
                    (end..end, br#","include_usage":true"#)
                }
            },
            _ => return None,
        },
    };
    let mut out = Vec::with_capacity(body.len() + text.len());
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(text);
    out.extend_from_slice(&body[range.end..]);
    Some(out)
}

/// Where the last member's value ends: the new member goes right after it,
/// so whitespace before the closing brace stays where it was.
fn last_member_end(object: &Node<'_>) -> Option<usize> {
    object.members().last().map(|(_, value)| value.span.end)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
