//! Splits a JSON array streamed over time (`[{...}\r\n,{...}\r\n]`, Gemini's
//! `streamGenerateContent` without `?alt=sse`) into its elements as their
//! bytes arrive, so each is metered like an SSE event and a cut array is
//! estimated from what was delivered.
//!
//! The splitter tracks only nesting depth and whether it is inside a string
//! (and after a backslash there); it never parses. Memory is bounded: an
//! element longer than the limit is dropped and the next one metered.

/// Where the splitter is in the array.
#[derive(Debug, Default)]
pub(super) struct ArraySplitter {
    /// 0 before the opening `[`, 1 between elements, 2 and more inside one.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The element being read, carried over between chunks.
    pub(super) element: Vec<u8>,
    /// The current element outgrew the limit: its bytes are not kept.
    oversized: bool,
    /// The closing `]` was seen.
    closed: bool,
}

impl ArraySplitter {
    /// Feeds a chunk; calls `on_element` with each object or array element
    /// completed in it, in order. Scalar elements are skipped.
    pub(super) fn feed(&mut self, chunk: &[u8], limit: usize, mut on_element: impl FnMut(&[u8])) {
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
                        if !self.oversized {
                            on_element(&self.element);
                        }
                        self.element.clear();
                        self.oversized = false;
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
        if self.oversized {
            return;
        }
        if self.element.len() + bytes.len() > limit {
            self.element = Vec::new();
            self.oversized = true;
        } else {
            self.element.extend_from_slice(bytes);
        }
    }
}
