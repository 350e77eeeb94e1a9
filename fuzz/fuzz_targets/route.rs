//! Upstream path canonicalisation: no panic; an accepted path is in
//! canonical form (canonicalising it again changes nothing) and holds no
//! dot segment.
#![no_main]

#[path = "../../crates/gateway/src/proxy/canonical.rs"]
mod canonical;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = canonical::canonical_path(text);
    if let Err(refusal) = result {
        assert!(!refusal.message().is_empty());
    }
    if let Ok(path) = result {
        assert!(path.starts_with('/'));
        assert_eq!(
            canonical::canonical_path(&path).as_deref(),
            Ok(path.as_str())
        );
        assert!(
            !path
                .split('/')
                .any(|segment| segment == "." || segment == "..")
        );
        assert!(!path.contains("//"));
    }
    // The logged path is cut at a character boundary.
    let _ = &text[..text.floor_char_boundary(200)];
});
