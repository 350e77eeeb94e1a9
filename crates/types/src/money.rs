//! Money as integer nano-US-dollars (1 USD = 10^9), so sums never drift.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NanoUsd(pub i64);

impl NanoUsd {
    pub const PER_USD: i64 = 1_000_000_000;

    pub fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }
}

impl std::fmt::Display for NanoUsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = Self::PER_USD.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / per, (abs % per) / 1000)
    }
}

/// Parses a non-negative decimal like `12.5` into an integer scaled by
/// `10^decimals` (`12.5`, 3 -> `12500`), exactly; `None` for anything else
/// (signs, exponents, more decimals than `decimals`, overflow).
pub fn parse_fixed_decimal(text: &str, decimals: usize) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || fraction.len() > decimals
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = 10_u64.checked_pow(u32::try_from(decimals).ok()?)?;
    let whole: u64 = whole.parse().ok()?;
    let fraction: u64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<decimals$}").parse().ok()?
    };
    whole.checked_mul(scale)?.checked_add(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_decimals() {
        assert_eq!(parse_fixed_decimal("12.5", 3), Some(12_500));
        assert_eq!(parse_fixed_decimal("0.001", 3), Some(1));
        assert_eq!(parse_fixed_decimal("7", 2), Some(700));
        for bad in ["", ".5", "1.2345", "-1", "1e3", "99999999999999999999"] {
            assert_eq!(parse_fixed_decimal(bad, 3), None, "{bad}");
        }
    }

    #[test]
    fn displays_dollars_with_micro_precision() {
        assert_eq!(NanoUsd(1_500_000_000).to_string(), "$1.500000");
        assert_eq!(NanoUsd(2_500).to_string(), "$0.000002");
        assert_eq!(NanoUsd(-3_000_000_000).to_string(), "-$3.000000");
    }
}
