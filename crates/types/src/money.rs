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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_dollars_with_micro_precision() {
        assert_eq!(NanoUsd(1_500_000_000).to_string(), "$1.500000");
        assert_eq!(NanoUsd(2_500).to_string(), "$0.000002");
        assert_eq!(NanoUsd(-3_000_000_000).to_string(), "-$3.000000");
    }
}
