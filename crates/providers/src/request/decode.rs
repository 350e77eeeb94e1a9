//! Compressed request bodies (`Content-Encoding`, RFC 9110 §8.4): the
//! gateway inspects the decoded bytes and forwards the original ones.
//! Decoding stops at a limit, so a small bomb cannot fill memory.

use std::borrow::Cow;
use std::io::Read;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("unsupported Content-Encoding `{0}`: send identity, gzip, deflate, br or zstd")]
    UnknownEncoding(String),
    #[error("the request body decodes to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body is not valid {encoding}: {reason}")]
    Corrupt {
        encoding: &'static str,
        reason: String,
    },
}

/// The codings a message's `Content-Encoding` lines name, as one list in
/// the order applied (several lines are one list, RFC 9110 §5.3), without
/// `identity`; `None` when there are none. A value that is not text is
/// kept as a coding nobody knows, so decoding refuses it rather than pass
/// the bytes on undecoded.
pub fn content_codings(headers: &http::HeaderMap) -> Option<String> {
    let codings: Vec<&str> = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .map(|value| value.to_str().unwrap_or("(not text)"))
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"))
        .collect();
    (!codings.is_empty()).then(|| codings.join(", "))
}

/// Decodes `body` (a request's, or an upstream response's) as sent with
/// `Content-Encoding: content_encoding`:
/// `identity`, `gzip`/`x-gzip`, `deflate` (zlib as RFC 9110 says, or raw
/// deflate as some browsers send), `br`, `zstd`, and comma-separated stacks
/// (`gzip, br`: applied in that order, so undone from the right). Case and
/// spaces do not matter. Borrows the body when nothing is to be undone;
/// refuses a result longer than `max_decoded` bytes, at any stage (a plain
/// body too).
pub fn decode_request_body<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    max_decoded: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let mut codings = Vec::new();
    for coding in content_encoding.unwrap_or("").split(',') {
        let coding = coding.trim().to_ascii_lowercase();
        let known = match coding.as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => {
                let shown: String = coding.chars().take(40).collect();
                return Err(DecodeError::UnknownEncoding(shown));
            }
        };
        codings.push(known);
    }
    if codings.is_empty() && body.len() > max_decoded {
        return Err(DecodeError::TooLarge { limit: max_decoded });
    }
    let mut current = Cow::Borrowed(body);
    for coding in codings.into_iter().rev() {
        current = Cow::Owned(coding.decode(&current, max_decoded)?);
    }
    Ok(current)
}

#[derive(Debug, Clone, Copy)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    fn decode(self, input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        match self {
            // Several gzip members concatenated are one stream (RFC 1952).
            Coding::Gzip => bounded(flate2::read::MultiGzDecoder::new(input), limit, self),
            Coding::Deflate if is_zlib(input) => {
                bounded(flate2::read::ZlibDecoder::new(input), limit, self)
            }
            Coding::Deflate => bounded(flate2::read::DeflateDecoder::new(input), limit, self),
            Coding::Brotli => bounded(
                brotli_decompressor::Decompressor::new(input, 4096),
                limit,
                self,
            ),
            Coding::Zstd => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(input).map_err(|error| {
                    DecodeError::Corrupt {
                        encoding: self.name(),
                        reason: error.to_string(),
                    }
                })?;
                bounded(decoder, limit, self)
            }
        }
    }
}

/// A zlib header (RFC 1950): deflate method, and the check bits.
fn is_zlib(input: &[u8]) -> bool {
    match input {
        [cmf, flg, ..] => cmf & 0x0F == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Reads at most `limit + 1` bytes: one more than allowed means too many.
fn bounded(reader: impl Read, limit: usize, coding: Coding) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|error| DecodeError::Corrupt {
            encoding: coding.name(),
            reason: error.to_string(),
        })?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(out)
}
