//! Splits a JSON array streamed over time (`[{...}\r\n,{...}\r\n]`, Gemini's
//! `streamGenerateContent` without `?alt=sse`) into its elements as their
//! bytes arrive, so each is metered like an SSE event and a cut array is
//! estimated from what was delivered.
//!
//! The splitter tracks only nesting depth and whether it is inside a string
//! (and after a backslash there); it never parses. Memory is bounded: of an
//! element longer than the limit only its two ends are kept ([`LongEvent`]).

/// Where the splitter is in the array.
#[derive(Debug, Default)]
pub(super) struct ArraySplitter {
    /// 0 before the opening `[`, 1 between elements, 2 and more inside one.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The element being read, carried over between chunks.
    pub(super) element: Vec<u8>,
    /// The current element outgrew the limit: only its ends are kept.
    pub(super) long: Option<LongEvent>,
    /// The closing `]` was seen.
    closed: bool,
}

impl ArraySplitter {
    /// Feeds a chunk; calls `on_element` with each object or array element
    /// completed in it, in order. Scalar elements are skipped.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        limit: usize,
        mut on_element: impl FnMut(Element<'_>),
    ) {
        // Start (in this chunk) of the element bytes not yet copied.
        let mut start = (self.depth >= 2).then_some(0);
        for (index, &byte) in chunk.iter().enumerate() {
            if self.closed {
                break;
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 2 {
                        start = Some(index);
                    }
                }
                b'}' | b']' => match self.depth {
                    0 => {}
                    1 => {
                        self.depth = 0;
                        self.closed = true;
                    }
                    2 => {
                        self.depth = 1;
                        let from = start.take().unwrap_or(index);
                        self.keep(&chunk[from..=index], limit);
                        match self.long.take() {
                            Some(long) => on_element(Element::Long(&long)),
                            None => on_element(Element::Whole(&self.element)),
                        }
                        self.element.clear();
                    }
                    _ => self.depth -= 1,
                },
                _ => {}
            }
        }
        if let Some(from) = start.filter(|_| self.depth >= 2) {
            self.keep(&chunk[from..], limit);
        }
    }

    fn keep(&mut self, bytes: &[u8], limit: usize) {
        if let Some(long) = &mut self.long {
            long.push(bytes);
        } else if self.element.len() + bytes.len() > limit {
            let mut long = LongEvent::default();
            long.push(&self.element);
            long.push(bytes);
            self.long = Some(long);
            self.element = Vec::new();
        } else {
            self.element.extend_from_slice(bytes);
        }
    }
}

/// A complete array element.
#[derive(Debug)]
pub(super) enum Element<'a> {
    Whole(&'a [u8]),
    Long(&'a LongEvent),
}

/// Bytes kept from the start of a long event: enough for its `type`.
const HEAD: usize = 1024;
/// Bytes kept from the end of a long event: providers put the usage block
/// last (after the output, which is what makes an event long: images,
/// inline audio).
pub(super) const TAIL: usize = 64 * 1024;

/// The two ends of an event too long to keep whole (an SSE line or an
/// array element past the limit), so its usage can still be read.
#[derive(Debug, Default)]
pub(super) struct LongEvent {
    pub(super) head: Vec<u8>,
    /// At least the last [`TAIL`] bytes (at most twice that).
    pub(super) tail: Vec<u8>,
}

impl LongEvent {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        let bytes = &bytes[bytes.len().saturating_sub(TAIL)..];
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL {
            let cut = self.tail.len() - TAIL;
            self.tail.drain(..cut);
        }
    }
}
