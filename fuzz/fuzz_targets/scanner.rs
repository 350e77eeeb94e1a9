//! The scanner engine and the redactor on arbitrary bytes: no panic, and
//! every hit lies inside the data.
#![no_main]

use std::sync::OnceLock;

use keyforge_scan::Scanner;
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static SCANNER: OnceLock<Scanner> = OnceLock::new();
    SCANNER.get_or_init(|| Scanner::new(None).expect("the built-in rules compile"))
}

fuzz_target!(|data: &[u8]| {
    let scanner = scanner();
    let _ = Scanner::is_binary(data);
    let _ = scanner.scan(data);
    let _ = scanner.scan_deep(data);
    let _ = keyforge_scan::redact::redact_bytes(scanner, data);
});
