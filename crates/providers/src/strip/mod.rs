//! Undoing the gateway's own `stream_options.include_usage`.
//!
//! A streaming OpenAI chat or completions request reports usage only when the
//! client asks (`stream_options.include_usage`). KeyForge asks on the
//! client's behalf, so every stream is metered from the provider's own
//! count, and then removes what the client did not ask for: the `"usage":null`
//! member the provider adds to every chunk, and the final chunk that carries
//! only the usage (`"choices":[]`). The client sees the stream it would have
//! seen; the meter sees the original.

use bytes::{Bytes, BytesMut};

/// The former name of [`crate::insert_include_usage`], which edits the
/// body's bytes instead of re-serializing it.
pub use crate::request::insert_include_usage as request_usage_in_stream;

/// Removes usage the client did not ask for from an SSE stream, event by
/// event, whatever the JSON's formatting (compact, Python's `", "` and
/// `": "`, any key order): each `data:` line is read as a JSON object, and
/// only the bytes of its top-level `usage` member are cut, nothing is
/// re-serialized. Bytes of an event still incomplete at the end of a chunk
/// are held until its end arrives (SSE clients only act on complete events
/// anyway); LF and CRLF framing, `event:` lines and comments pass through.
#[derive(Debug, Default)]
pub struct UsageStripper {
    pending: BytesMut,
    /// How much of `pending` was already searched for the event's end.
    scanned: usize,
    /// The current event outgrew [`MAX_EVENT`]: it is passed on unchanged
    /// up to its end instead of being held.
    oversized: bool,
}

/// Longest event held for rewriting; a longer one (never a usage chunk) is
/// passed on unchanged, so memory stays bounded.
const MAX_EVENT: usize = 1024 * 1024;

impl UsageStripper {
    /// A stripper for one response stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the bytes to pass on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::with_capacity(self.pending.len());
        while let Some(end) = event_end(&self.pending, self.scanned) {
            let event = self.pending.split_to(end);
            self.scanned = 0;
            if std::mem::take(&mut self.oversized) {
                out.extend_from_slice(&event);
            } else {
                rewrite_event(&event, &mut out);
            }
        }
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_EVENT {
            // Keep the last two bytes: with the next chunk they may make
            // the blank line that ends the event.
            let keep = self.pending.len() - 2;
            out.extend_from_slice(&self.pending.split_to(keep));
            self.scanned = self.pending.len();
            self.oversized = true;
        }
        out.freeze()
    }

    /// The end of the stream: passes on whatever is left, rewritten.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.pending.split();
        self.scanned = 0;
        let mut out = BytesMut::with_capacity(rest.len());
        if std::mem::take(&mut self.oversized) {
            out.extend_from_slice(&rest);
        } else if !rest.is_empty() {
            rewrite_event(&rest, &mut out);
        }
        out.freeze()
    }
}

/// The end (exclusive) of the first complete event: after its blank line
/// (`\n\n` or `\n\r\n`, so LF, CRLF and mixed framing alike). `from` is
/// where the search resumes (bytes before it hold no line end that ends an
/// event).
fn event_end(buffer: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buffer[at..].iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        // The line this `\n` ends is blank when it is empty or a lone `\r`.
        let blank = match newline {
            0 => true,
            1 => matches!(buffer[0], b'\n' | b'\r'),
            _ => {
                buffer[newline - 1] == b'\n'
                    || (buffer[newline - 1] == b'\r' && buffer[newline - 2] == b'\n')
            }
        };
        if blank {
            return Some(newline + 1);
        }
        at = newline + 1;
    }
    None
}

/// What to do with one `data:` line.
enum LineEdit {
    Keep,
    /// Cut these bytes of the line (the `"usage": null` member and its
    /// comma).
    Cut(std::ops::Range<usize>),
    /// The usage-only chunk: drop the whole event.
    DropEvent,
}

fn rewrite_event(event: &[u8], out: &mut BytesMut) {
    let lines = || {
        event
            .split_inclusive(|&b| b == b'\n')
            .scan(0, |start, line| {
                let at = *start;
                *start += line.len();
                Some((at, line))
            })
    };
    let mut cuts = Vec::new();
    for (at, line) in lines() {
        match edit_line(line) {
            LineEdit::Keep => {}
            LineEdit::DropEvent => return,
            LineEdit::Cut(range) => cuts.push(at + range.start..at + range.end),
        }
    }
    let mut written = 0;
    for cut in cuts {
        out.extend_from_slice(&event[written..cut.start]);
        written = cut.end;
    }
    out.extend_from_slice(&event[written..]);
}

fn edit_line(line: &[u8]) -> LineEdit {
    let Some(data) = line.strip_prefix(b"data:") else {
        return LineEdit::Keep;
    };
    let offset = line.len() - data.len();
    let Some(members) = top_level_members(data) else {
        return LineEdit::Keep;
    };
    let value = |name: &[u8]| {
        members
            .iter()
            .find(|member| &data[member.key.clone()] == name)
            .map(|member| &data[member.value.clone()])
    };
    let choices_empty_or_absent = value(b"choices").is_none_or(|choices| {
        choices
            .strip_prefix(b"[")
            .and_then(|rest| rest.strip_suffix(b"]"))
            .is_some_and(|inside| inside.trim_ascii().is_empty())
    });
    match value(b"usage") {
        Some(usage) if usage.starts_with(b"{") && choices_empty_or_absent => LineEdit::DropEvent,
        Some(b"null") => {
            let Some(index) = members
                .iter()
                .position(|m| &data[m.key.clone()] == b"usage")
            else {
                return LineEdit::Keep;
            };
            let cut = if let Some(next) = members.get(index + 1) {
                // Up to the next member's key: its comma and the blanks after.
                members[index].key.start - 1..next.key.start - 1
            } else if index > 0 {
                // The last member: from the comma after the previous value.
                members[index - 1].value.end..members[index].value.end
            } else {
                members[index].key.start - 1..members[index].value.end
            };
            LineEdit::Cut(offset + cut.start..offset + cut.end)
        }
        _ => LineEdit::Keep,
    }
}

/// One member of a JSON object: the bytes of its key (inside the quotes)
/// and of its value.
struct Member {
    key: std::ops::Range<usize>,
    value: std::ops::Range<usize>,
}

/// The top-level members of a JSON object, found by a structural scan
/// (strings with their escapes, nesting), or `None` when `text` is not one
/// object (`[DONE]`, a truncated line). Values are not validated.
fn top_level_members(text: &[u8]) -> Option<Vec<Member>> {
    let mut at = skip_blanks(text, 0);
    if text.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_blanks(text, at + 1);
    let mut members = Vec::new();
    if text.get(at) == Some(&b'}') {
        return (skip_blanks(text, at + 1) == text.len()).then_some(members);
    }
    loop {
        if text.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(text, at)?;
        let key = at + 1..key_end - 1;
        at = skip_blanks(text, key_end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_blanks(text, at + 1);
        let value_end = value_end(text, value_start)?;
        members.push(Member {
            key,
            value: value_start..value_end,
        });
        at = skip_blanks(text, value_end);
        match text.get(at) {
            Some(b',') => at = skip_blanks(text, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    (skip_blanks(text, at + 1) == text.len()).then_some(members)
}

fn skip_blanks(text: &[u8], from: usize) -> usize {
    from + text.get(from..).map_or(0, |rest| {
        rest.iter().take_while(|b| b.is_ascii_whitespace()).count()
    })
}

/// The end (exclusive, after the closing quote) of the string opening at
/// `start`.
fn string_end(text: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    while let Some(&byte) = text.get(at) {
        match byte {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// The end (exclusive) of the JSON value starting at `start`.
fn value_end(text: &[u8], start: usize) -> Option<usize> {
    match text.get(start)? {
        b'"' => string_end(text, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            while let Some(&byte) = text.get(at) {
                match byte {
                    b'"' => {
                        at = string_end(text, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
            None
        }
        _ => {
            let length = text[start..]
                .iter()
                .take_while(|&&b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                .count();
            (length > 0).then_some(start + length)
        }
    }
}

#[cfg(test)]
mod tests;
