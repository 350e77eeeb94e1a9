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
/// event. Bytes of an event still incomplete at the end of a chunk are held
/// until its end arrives (SSE clients only act on complete events anyway).
#[derive(Debug, Default)]
pub struct UsageStripper {
    pending: BytesMut,
}

impl UsageStripper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a chunk; returns the bytes to pass on now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::with_capacity(self.pending.len());
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            rewrite_event(&event, &mut out);
        }
        out.freeze()
    }

    /// The end of the stream: passes on whatever is left, rewritten.
    pub fn finish(&mut self) -> Bytes {
        let rest = self.pending.split();
        let mut out = BytesMut::with_capacity(rest.len());
        if !rest.is_empty() {
            rewrite_event(&rest, &mut out);
        }
        out.freeze()
    }
}

/// The end (exclusive) of the first complete event: after a blank line
/// (`\n\n` or `\r\n\r\n`).
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

const NULL_USAGE_AFTER: &[u8] = b",\"usage\":null";
const NULL_USAGE_BEFORE: &[u8] = b"\"usage\":null,";

fn rewrite_event(event: &[u8], out: &mut BytesMut) {
    let is_usage_only = contains(event, b"\"choices\":[]") && contains(event, b"\"usage\":{");
    if is_usage_only {
        return;
    }
    let mut rest = event;
    while !rest.is_empty() {
        let (cut, skip) = match (find(rest, NULL_USAGE_AFTER), find(rest, NULL_USAGE_BEFORE)) {
            (Some(a), Some(b)) if b < a => (b, NULL_USAGE_BEFORE.len()),
            (Some(a), _) => (a, NULL_USAGE_AFTER.len()),
            (None, Some(b)) => (b, NULL_USAGE_BEFORE.len()),
            (None, None) => {
                out.extend_from_slice(rest);
                return;
            }
        };
        out.extend_from_slice(&rest[..cut]);
        rest = &rest[cut + skip..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}

#[cfg(test)]
mod tests;
