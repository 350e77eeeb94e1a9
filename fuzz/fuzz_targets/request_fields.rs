//! Request-body field extraction (the model a request names, its output
//! cap) on arbitrary paths, content types and bodies: no panic.
#![no_main]

use keyforge_providers::{Api, max_output_tokens, request_model};
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
    let method = if mode & 4 != 0 {
        http::Method::GET
    } else {
        http::Method::POST
    };
    // `path \n content type \n body`; the body may be any bytes.
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let content_type = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let _ = request_model(api, &method, &path, content_type.as_deref(), body);
    let _ = max_output_tokens(api, &path, body);
});
