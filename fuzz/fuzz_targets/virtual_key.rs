//! `kf_` key parsing and the other text parsers of `keyforge_types` on
//! arbitrary text: no panic, and a parsed key round-trips.
#![no_main]

use keyforge_types::{BudgetLimit, EnvName, ModelPattern, Ttl, VirtualKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = VirtualKey::parse(text) {
        assert!(key.display_prefix().starts_with("kf_"));
        assert_eq!(key.env().as_str(), text.split('_').nth(1).unwrap_or(""));
    }
    let _ = VirtualKey::looks_like(text);
    let _ = Ttl::parse(text);
    let _ = EnvName::parse(text);
    let _ = BudgetLimit::parse(text);
    if let Ok(pattern) = ModelPattern::parse(text) {
        let _ = pattern.matches(text);
    }
});
