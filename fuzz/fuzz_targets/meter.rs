//! The usage meter and the usage stripper on arbitrary bytes in arbitrary
//! chunkings (the first byte picks the dialect and mode, the next few the
//! chunk sizes): no panic.
#![no_main]

use keyforge_providers::{Api, Meter, UsageStripper};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let api = match mode % 3 {
        0 => Api::OpenAi,
        1 => Api::Anthropic,
        _ => Api::Gemini,
    };
    let event_stream = mode & 4 != 0;
    let length = (mode & 8 != 0).then_some(rest.len() as u64);
    let (sizes, body) = rest.split_at(rest.len().min(4));
    let mut meter = Meter::new(api, event_stream, length);
    let mut stripper = UsageStripper::new();
    let mut stripped = Vec::new();
    let mut at = 0;
    let mut turn = 0;
    while at < body.len() {
        let size = usize::from(sizes.get(turn % sizes.len().max(1)).copied().unwrap_or(7)).max(1);
        let end = (at + size).min(body.len());
        meter.feed(&body[at..end]);
        stripped.extend_from_slice(&stripper.feed(&body[at..end]));
        at = end;
        turn += 1;
    }
    stripped.extend_from_slice(&stripper.finish());
    let _ = meter.finish(mode & 16 != 0);
});
