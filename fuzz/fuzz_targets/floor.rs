//! The provider-key floor: for a secret and a body taken from the input,
//! streaming the body in arbitrary chunks gives exactly what scrubbing it
//! whole gives, never holds back more than its bound, and leaves no raw
//! copy of the secret; error-body decoding never panics.
#![no_main]

#[path = "../../crates/gateway/src/proxy/floor.rs"]
#[expect(dead_code, reason = "only part of the module is fuzzed")]
mod floor;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    // Secret length 8..=39, then up to 3 chunk sizes, then the body.
    let secret_len = usize::from(header % 32) + 8;
    if rest.len() < secret_len + 3 {
        return;
    }
    let (secret, rest) = rest.split_at(secret_len);
    let (sizes, body) = rest.split_at(3);
    let floor = std::sync::Arc::new(floor::KeyFloor::new(&[secret]));
    let whole = floor.scrub(body).unwrap_or_else(|| body.to_vec());
    let mut stream = floor.stream();
    let mut streamed = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < body.len() {
        let size = usize::from(sizes[turn % 3]).max(1);
        let end = (at + size).min(body.len());
        streamed.extend_from_slice(&stream.feed(Bytes::copy_from_slice(&body[at..end])));
        at = end;
        turn += 1;
    }
    streamed.extend_from_slice(&stream.finish());
    // The stream holds back at most 6 bytes per needle byte; only a needle
    // overlapping itself, repeated beyond that, may be cut differently.
    if body.len() < 6 * secret_len {
        assert_eq!(streamed, whole);
    }
    // Unless the secret shares bytes with the replacement text (which
    // could then spell it again), no raw copy is left.
    if !secret.iter().any(|b| floor::REPLACEMENT.contains(b)) {
        assert!(memchr::memmem::find(&whole, secret).is_none());
        assert!(memchr::memmem::find(&streamed, secret).is_none());
        assert_eq!(floor.scrub(&streamed), None, "the stream left a match");
    }
    let encodings = ["gzip", "deflate", "br", "zstd", "br, gzip", "identity"];
    let _ = keyforge_providers::decode_request_body(
        Some(encodings[usize::from(header) % encodings.len()]),
        body,
        1 << 16,
    );
});
