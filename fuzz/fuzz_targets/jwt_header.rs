//! JWT header parsing (the gateway's `oidc/jwt_header.rs`) on arbitrary
//! text: no panic, and refusal messages stay short.
#![no_main]

#[path = "../../crates/gateway/src/oidc/jwt_header.rs"]
mod jwt_header;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = jwt_header::parse_header(text) {
        assert!(message.len() < 400, "{message}");
    }
});
