//! A strict JSON reader (RFC 8259) that keeps the byte span of every value
//! and refuses an object naming a key twice.
//!
//! Why not `serde_json::Value`: it keeps the last copy of a duplicated key
//! silently, while some providers keep the first, so the gateway could bound
//! one request and the provider run another; and it forgets where values
//! are, which inserting one field without re-serializing the body needs.

use std::borrow::Cow;
use std::ops::Range;

/// serde_json's default recursion limit: deeper bodies are refused.
const MAX_DEPTH: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    /// The number as written (`8`, `8.0`, `1e3`), checked against the grammar.
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

/// A value and the bytes it spans in the body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node<'a> {
    pub(crate) value: Value<'a>,
    pub(crate) span: Range<usize>,
}

impl<'a> Node<'a> {
    pub(crate) fn get(&self, key: &str) -> Option<&Node<'a>> {
        match &self.value {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(flag) => Some(flag),
            _ => None,
        }
    }

    pub(crate) fn as_array(&self) -> &[Node<'a>] {
        match &self.value {
            Value::Array(items) => items,
            _ => &[],
        }
    }

    pub(crate) fn members(&self) -> &[(Cow<'a, str>, Node<'a>)] {
        match &self.value {
            Value::Object(members) => members,
            _ => &[],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JsonError {
    /// Not JSON: what was wrong and at which byte.
    Malformed(String),
    /// An object names `key` twice; `at` is the JSON pointer of the second.
    DuplicateKey { key: String, at: String },
}

/// Parses a whole body: one value, surrounded only by whitespace.
pub(crate) fn parse(body: &[u8]) -> Result<Node<'_>, JsonError> {
    let mut parser = Parser {
        body,
        at: 0,
        path: Vec::new(),
    };
    parser.skip_whitespace();
    let node = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != body.len() {
        return Err(parser.fail("trailing characters after the JSON value"));
    }
    Ok(node)
}

struct Parser<'a> {
    body: &'a [u8],
    at: usize,
    /// Keys and indices from the root to the value being read, for the
    /// pointer of a duplicate key.
    path: Vec<String>,
}

impl<'a> Parser<'a> {
    fn fail(&self, what: &str) -> JsonError {
        JsonError::Malformed(format!("{what} at byte {}", self.at))
    }

    fn peek(&self) -> Option<u8> {
        self.body.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn literal(&mut self, word: &[u8], value: Value<'a>) -> Result<Value<'a>, JsonError> {
        if self.body.get(self.at..self.at + word.len()) == Some(word) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.fail("expected a JSON value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.fail("JSON nested more than 128 levels deep"));
        }
        let start = self.at;
        let value = match self.peek() {
            None => return Err(self.fail("unexpected end of the body")),
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Value::String(self.string()?),
            Some(b't') => self.literal(b"true", Value::Bool(true))?,
            Some(b'f') => self.literal(b"false", Value::Bool(false))?,
            Some(b'n') => self.literal(b"null", Value::Null)?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.fail("expected a JSON value")),
        };
        Ok(Node {
            value,
            span: start..self.at,
        })
    }

    fn object(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.at += 1;
        let mut members: Vec<(Cow<'a, str>, Node<'a>)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.fail("expected a string key"));
            }
            let key = self.string()?;
            // Objects in requests are small; a linear scan beats hashing.
            if members.iter().any(|(k, _)| *k == key) {
                self.path.push(key.clone().into_owned());
                let at = pointer(&self.path);
                return Err(JsonError::DuplicateKey {
                    key: key.into_owned(),
                    at,
                });
            }
            self.skip_whitespace();
            if self.peek() != Some(b':') {
                return Err(self.fail("expected `:` after an object key"));
            }
            self.at += 1;
            self.skip_whitespace();
            self.path.push(key.clone().into_owned());
            let value = self.value(depth + 1)?;
            self.path.pop();
            members.push((key, value));
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.fail("expected `,` or `}` in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value<'a>, JsonError> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            self.path.push(items.len().to_string());
            let item = self.value(depth + 1)?;
            self.path.pop();
            items.push(item);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.fail("expected `,` or `]` in an array")),
            }
        }
    }

    fn number(&mut self) -> Result<Value<'a>, JsonError> {
        let start = self.at;
        let digits = |parser: &mut Self| {
            let from = parser.at;
            while matches!(parser.peek(), Some(b'0'..=b'9')) {
                parser.at += 1;
            }
            parser.at - from
        };
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.fail("expected a digit")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(self.fail("expected a digit after `.`"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(self.fail("expected a digit in the exponent"));
            }
        }
        // Only ASCII digits and signs were consumed.
        let text = std::str::from_utf8(&self.body[start..self.at])
            .map_err(|_| self.fail("invalid number"))?;
        Ok(Value::Number(text))
    }

    /// Reads a string starting at its opening quote; borrows it when it has
    /// no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.at += 1;
        let start = self.at;
        let mut owned: Option<Vec<u8>> = None;
        let mut plain_from = start;
        loop {
            match self.peek() {
                None => return Err(self.fail("unterminated string")),
                Some(b'"') => {
                    let tail = &self.body[plain_from..self.at];
                    self.at += 1;
                    let bytes: Cow<'a, [u8]> = match owned {
                        None => Cow::Borrowed(tail),
                        Some(mut buffer) => {
                            buffer.extend_from_slice(tail);
                            Cow::Owned(buffer)
                        }
                    };
                    return match bytes {
                        Cow::Borrowed(bytes) => std::str::from_utf8(bytes)
                            .map(Cow::Borrowed)
                            .map_err(|_| self.fail("invalid UTF-8 in a string")),
                        Cow::Owned(bytes) => String::from_utf8(bytes)
                            .map(Cow::Owned)
                            .map_err(|_| self.fail("invalid UTF-8 in a string")),
                    };
                }
                Some(b'\\') => {
                    let buffer = owned.get_or_insert_with(Vec::new);
                    buffer.extend_from_slice(&self.body[plain_from..self.at]);
                    self.at += 1;
                    let escaped = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let first = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&first)
                                && self.body.get(self.at..self.at + 2) == Some(b"\\u")
                            {
                                let save = self.at;
                                self.at += 2;
                                let second = self.hex4()?;
                                if (0xDC00..0xE000).contains(&second) {
                                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                                } else {
                                    self.at = save;
                                    first
                                }
                            } else {
                                first
                            };
                            // A lone surrogate (JavaScript strings carry them)
                            // becomes U+FFFD, as Python's decoder would keep
                            // three bytes for it too.
                            let c = char::from_u32(code).unwrap_or('\u{FFFD}');
                            let mut utf8 = [0u8; 4];
                            buffer.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                            plain_from = self.at;
                            continue;
                        }
                        _ => return Err(self.fail("invalid escape in a string")),
                    };
                    self.at += 1;
                    let mut utf8 = [0u8; 4];
                    buffer.extend_from_slice(escaped.encode_utf8(&mut utf8).as_bytes());
                    plain_from = self.at;
                }
                Some(0x00..=0x1F) => {
                    return Err(self.fail("control character inside a string"));
                }
                Some(_) => self.at += 1,
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .body
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.fail("invalid \\u escape"))?;
        self.at += 4;
        Ok(digits)
    }
}

/// RFC 6901: `~` is written `~0`, `/` is written `~1`.
fn pointer(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        out.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every body serde_json accepts this reader accepts with the same
    /// value, and the other way round; duplicates are the one difference.
    fn check(body: &str, expected: Result<(), &str>) {
        let ours = parse(body.as_bytes());
        let theirs = serde_json::from_str::<serde_json::Value>(body);
        match expected {
            Ok(()) => {
                let ours = ours.unwrap_or_else(|e| panic!("{body}: {e:?}"));
                assert_eq!(to_serde(&ours), theirs.unwrap(), "{body}");
            }
            Err(what) => {
                let error = ours.expect_err(body);
                let text = format!("{error:?}");
                assert!(text.contains(what), "{body}: {text}");
            }
        }
    }

    fn to_serde(node: &Node<'_>) -> serde_json::Value {
        use serde_json::Value as J;
        match &node.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Number(n) => serde_json::from_str(n).unwrap(),
            Value::String(s) => J::String(s.to_string()),
            Value::Array(items) => J::Array(items.iter().map(to_serde).collect()),
            Value::Object(members) => J::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.to_string(), to_serde(v)))
                    .collect(),
            ),
        }
    }

    #[test]
    fn table() {
        check(r#"{"a":[1,-2.5e3,true,false,null,"x"]}"#, Ok(()));
        check(" \t\r\n{ \"a\" : { } , \"b\" : [ ] } \n", Ok(()));
        check(r#""\u00e9\ud83d\ude00\n\"\\\/\b\f\r\t""#, Ok(()));
        check(r#"{"a":1,}"#, Err("expected a string key"));
        check(r#"{"a":1 "b":2}"#, Err("expected `,` or `}`"));
        check(r#"[1,]"#, Err("expected a JSON value"));
        check(r#"01"#, Err("trailing"));
        check(r#"1."#, Err("after `.`"));
        check(r#"1e"#, Err("exponent"));
        check(r#""a"#, Err("unterminated"));
        check("\"a\u{1}\"", Err("control character"));
        check(r#""\x""#, Err("invalid escape"));
        check(r#""\u12g4""#, Err("u escape at byte 3"));
        check(r#"{"a":1}{"#, Err("trailing"));
        check("", Err("end of the body"));
        check(&"[".repeat(200), Err("128 levels"));
        check(
            r#"{"a":{"b":[{"c":1,"c":2}]}}"#,
            Err(r#"DuplicateKey { key: "c", at: "/a/b/0/c" }"#),
        );
        // Escaped and plain spellings of one key are the same key.
        check(
            r#"{"n":1,"\u006e":2}"#,
            Err(r#"DuplicateKey { key: "n", at: "/n" }"#),
        );
        check(r#"{"a/b~":{"x":1,"x":1}}"#, Err(r#"at: "/a~1b~0/x""#));
    }

    #[test]
    fn spans_cover_each_value() {
        let body = r#" {"a" : [1, "x"] , "b":{}} "#;
        let root = parse(body.as_bytes()).unwrap();
        assert_eq!(&body[root.span.clone()], r#"{"a" : [1, "x"] , "b":{}}"#);
        let a = root.get("a").unwrap();
        assert_eq!(&body[a.span.clone()], r#"[1, "x"]"#);
        assert_eq!(&body[a.as_array()[1].span.clone()], r#""x""#);
        assert_eq!(&body[root.get("b").unwrap().span.clone()], "{}");
    }

    #[test]
    fn a_lone_surrogate_becomes_a_replacement_character() {
        let root = parse(br#""\ud800x""#).unwrap();
        assert_eq!(root.as_str(), Some("\u{FFFD}x"));
    }
}
