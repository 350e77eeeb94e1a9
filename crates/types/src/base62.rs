//! Base62 (0-9, A-Z, a-z), the alphabet of the random and checksum parts of a
//! virtual key: no characters that URL, shell or JSON encoding would touch.

pub(crate) const ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Width of a base62-encoded `u32` (62^6 > 2^32).
pub(crate) const U32_WIDTH: usize = 6;

/// Encodes `value` as exactly six base62 digits, most significant first.
pub fn encode_u32_fixed(mut value: u32) -> [u8; U32_WIDTH] {
    let mut out = [b'0'; U32_WIDTH];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Decodes base62 digits into a `u32`; `None` on a foreign byte or overflow.
pub fn decode_u32(digits: &[u8]) -> Option<u32> {
    let mut value: u32 = 0;
    for &byte in digits {
        let digit = digit_value(byte)?;
        value = value.checked_mul(62)?.checked_add(u32::from(digit))?;
    }
    Some(value)
}

pub(crate) fn digit_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'Z' => Some(byte - b'A' + 10),
        b'a'..=b'z' => Some(byte - b'a' + 36),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(&encode_u32_fixed(0), b"000000");
        assert_eq!(&encode_u32_fixed(61), b"00000z");
        assert_eq!(&encode_u32_fixed(62), b"000010");
        assert_eq!(&encode_u32_fixed(u32::MAX), b"4gfFC3");
    }

    #[test]
    fn rejects_foreign_bytes_and_overflow() {
        assert_eq!(decode_u32(b"00-000"), None);
        assert_eq!(decode_u32(b"zzzzzz"), None);
    }

    proptest! {
        #[test]
        fn round_trips(value: u32) {
            prop_assert_eq!(decode_u32(&encode_u32_fixed(value)), Some(value));
        }
    }
}
