//! `multipart/form-data` bodies (RFC 7578), as OpenAI's audio transcription
//! and image edit endpoints take them: the model is a form field.

use super::input::InputSize;

/// One part: its `name`, whether it is a file, and its bytes.
#[derive(Debug)]
struct Part<'a> {
    name: String,
    is_file: bool,
    data: &'a [u8],
}

#[derive(Debug)]
pub(crate) struct Form<'a> {
    parts: Vec<Part<'a>>,
}

impl<'a> Form<'a> {
    /// The first text field called `name`, if it is UTF-8.
    pub(crate) fn text(&self, name: &str) -> Option<&'a str> {
        self.parts
            .iter()
            .find(|p| !p.is_file && p.name == name)
            .and_then(|p| std::str::from_utf8(p.data).ok())
            .map(str::trim)
    }

    /// A field name given twice, if any: servers disagree on which copy
    /// wins, as with JSON keys.
    pub(crate) fn repeated_field(&self) -> Option<&str> {
        let fields: Vec<&str> = self
            .parts
            .iter()
            .filter(|p| !p.is_file && !p.name.ends_with("[]"))
            .map(|p| p.name.as_str())
            .collect();
        fields
            .iter()
            .enumerate()
            .find(|(i, name)| fields[..*i].contains(name))
            .map(|(_, name)| *name)
    }

    /// Text fields are text; image files (`image`, `image[]`, `mask`) bill
    /// per image; other files (audio) are bounded by their bytes, since an
    /// audio token covers far more than a byte of audio.
    pub(crate) fn input_size(&self) -> InputSize {
        let mut size = InputSize::default();
        for part in &self.parts {
            if part.is_file && (part.name.starts_with("image") || part.name == "mask") {
                size.images += 1;
            } else {
                size.text_bytes = size
                    .text_bytes
                    .saturating_add(u64::try_from(part.data.len()).unwrap_or(u64::MAX));
            }
        }
        size
    }
}

/// Splits a body by the `boundary` of its content type (as sent: the
/// boundary is case-sensitive); `None` when it has no boundary, several
/// (servers disagree on which one splits the body), or no part.
pub(crate) fn read<'a>(content_type: &str, body: &'a [u8]) -> Option<Form<'a>> {
    if content_type
        .to_ascii_lowercase()
        .matches("boundary=")
        .count()
        > 1
    {
        return None;
    }
    let boundary = parameter(content_type, "boundary")?;
    if boundary.is_empty() {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut rest = &body[find(body, delimiter)? + delimiter.len()..];
    loop {
        // `--` after a delimiter closes the body.
        if rest.starts_with(b"--") {
            break;
        }
        let header_end = find(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..header_end]).ok()?;
        let content = &rest[header_end + 4..];
        let end = find(content, delimiter)?;
        // The CRLF before the next delimiter belongs to the delimiter.
        let data = content[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content[..end]);
        let disposition = headers
            .split("\r\n")
            .find(|h| h.to_ascii_lowercase().starts_with("content-disposition:"))?;
        parts.push(Part {
            name: parameter(disposition, "name")?.to_owned(),
            is_file: parameter(disposition, "filename").is_some(),
            data,
        });
        rest = &content[end + delimiter.len()..];
    }
    (!parts.is_empty()).then_some(Form { parts })
}

/// `name="value"` (or unquoted) in a Content-Disposition header.
fn parameter<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').map(str::trim).find_map(|p| {
        let (key, value) = p.split_once('=')?;
        (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim().trim_matches('"'))
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(offset) = haystack.get(from..)?.iter().position(|b| *b == first) {
        let at = from + offset;
        if haystack.get(at..at + needle.len()) == Some(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}
