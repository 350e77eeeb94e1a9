//! Throughput of `FloorStream::feed` on bodies that hold no key (the case of
//! every response), in 16 KiB chunks, for a 164-byte OpenAI-project-shaped
//! fake key (the longest provider key shape, so the longest hold-back).
//! Prints ns per KiB and GB/s; asserts nothing about time.

#[path = "../../../crates/gateway/src/proxy/floor.rs"]
#[expect(dead_code, reason = "the benchmark uses the streaming part only")]
mod floor;

use std::time::Instant;

use bytes::Bytes;

const CHUNK: usize = 16 * 1024;
const TOTAL: usize = 256 * 1024 * 1024;

/// A fake key: deterministic base62 text, never a real credential.
fn fake_key() -> Vec<u8> {
    let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut key = b"sk-proj-".to_vec();
    while key.len() < 164 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        key.push(alphabet[(state % 62) as usize]);
    }
    key
}

fn run(name: &str, floor: &std::sync::Arc<floor::KeyFloor>, chunk: &Bytes) {
    let rounds = TOTAL / chunk.len();
    let started = Instant::now();
    let mut out_bytes = 0;
    let mut stream = floor.stream();
    for _ in 0..rounds {
        out_bytes += stream.feed(chunk.clone()).len();
    }
    out_bytes += stream.finish().len();
    let elapsed = started.elapsed();
    assert_eq!(out_bytes, rounds * chunk.len());
    let ns_per_kib = elapsed.as_nanos() as f64 / (TOTAL as f64 / 1024.0);
    let gb_per_s = TOTAL as f64 / elapsed.as_secs_f64() / 1e9;
    println!("{name:<44} {ns_per_kib:>8.0} ns/KiB {gb_per_s:>6.2} GB/s");
}

fn main() {
    let key = fake_key();
    let floor = std::sync::Arc::new(floor::KeyFloor::new(&[&key]));
    // An SSE stream of chat deltas: plain text, JSON, `\n` escapes.
    let event = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"The quick brown fox jumps over the lazy dog.\n"}}]}

"#;
    let sse: Vec<u8> = event.iter().copied().cycle().take(CHUNK).collect();
    run("sse deltas, no escapes", &floor, &Bytes::from(sse));
    // JSON with `\u00XX` and `%XX` escapes of bytes no key holds: no view.
    let escaped = br#"{"content":"caf\u00e9 \u003cb\u003e 50%25 off"} "#;
    let escaped: Vec<u8> = escaped.iter().copied().cycle().take(CHUNK).collect();
    run(
        "json with \\u00XX and %XX escapes",
        &floor,
        &Bytes::from(escaped),
    );
    // Escapes of bytes a key holds (`%2D` is `-`): the decoded view is built.
    let key_escapes = br#"{"url":"https://example.com/a%2Db%2Dc?q=x%2Dy","t":"a\u002db"} "#;
    let key_escapes: Vec<u8> = key_escapes.iter().copied().cycle().take(CHUNK).collect();
    run(
        "escapes of key bytes (decoded view built)",
        &floor,
        &Bytes::from(key_escapes),
    );
    if std::env::var_os("FLOOR_BENCH_DETAIL").is_some() {
        for (name, text) in [
            (
                "only \\u00e9",
                &br#"{"content":"caf\u00e9 caf\u00e9 caf\u00e9 caf"} "#[..],
            ),
            (
                "only %25",
                &br#"{"content":"50%25 off 50%25 off 50%25"} "#[..],
            ),
            ("plain json", &br#"{"content":"cafe cafe <b> 50 off"} "#[..]),
        ] {
            let text: Vec<u8> = text.iter().copied().cycle().take(CHUNK).collect();
            run(name, &floor, &Bytes::from(text));
        }
    }
    // Random base64-ish bytes: many positions begin a needle.
    let noise: Vec<u8> = key.iter().rev().copied().cycle().take(CHUNK).collect();
    run(
        "base62 noise (worst case for the tail check)",
        &floor,
        &Bytes::from(noise),
    );
}
