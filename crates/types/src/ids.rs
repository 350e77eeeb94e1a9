//! Stable, non-secret identifiers. They appear in the CLI, the ledger and the
//! audit log, and knowing one grants nothing.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::base62::{ALPHABET, digit_value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} ids look like `{prefix}` followed by {len} letters or digits")]
    Malformed {
        kind: &'static str,
        prefix: &'static str,
        len: usize,
    },
}

/// Draws `len` uniformly random base62 characters from the operating
/// system's CSPRNG (rejection sampling keeps the distribution uniform).
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buffer = [0u8; 64];
    while out.len() < len {
        // `fill` only fails if the OS has no entropy source at all, in which
        // case no key can be made safely and aborting is the right outcome.
        if aws_lc_rs::rand::fill(&mut buffer).is_err() {
            std::process::abort();
        }
        for &byte in &buffer {
            // 248 = 4 * 62: bytes at or above it would bias the result.
            if byte < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    out
}

macro_rules! define_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $prefix:literal, $len:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            const PREFIX: &'static str = $prefix;
            const RANDOM_LEN: usize = $len;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", Self::PREFIX, random_base62(Self::RANDOM_LEN)))
            }

            pub fn parse(text: &str) -> Result<Self, IdError> {
                let malformed = IdError::Malformed { kind: $kind, prefix: Self::PREFIX, len: Self::RANDOM_LEN };
                let rest = text.strip_prefix(Self::PREFIX).ok_or(malformed.clone())?;
                if rest.len() != Self::RANDOM_LEN || !rest.bytes().all(|b| digit_value(b).is_some()) {
                    return Err(malformed);
                }
                Ok(Self(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(text: String) -> Result<Self, IdError> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

impl Clone for IdError {
    fn clone(&self) -> Self {
        match self {
            Self::Malformed { kind, prefix, len } => Self::Malformed {
                kind,
                prefix,
                len: *len,
            },
        }
    }
}

define_id!(
    /// The public id of a virtual key (`key_` + 16 base62 characters).
    KeyId, "key", "key_", 16
);
define_id!(
    /// The id of a configured provider (`prv_` + 16 base62 characters).
    ProviderId, "provider", "prv_", 16
);
define_id!(
    /// The id of a budget (`bgt_` + 16 base62 characters).
    BudgetId, "budget", "bgt_", 16
);
define_id!(
    /// The id of a named admin (`adm_` + 16 base62 characters).
    AdminId, "admin", "adm_", 16
);
define_id!(
    /// The id of an alert webhook (`alr_` + 16 base62 characters).
    AlertId, "alert", "alr_", 16
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_and_differ() {
        let a = KeyId::generate();
        let b = KeyId::generate();
        assert_ne!(a, b);
        assert_eq!(KeyId::parse(a.as_str()), Ok(a.clone()));
        assert!(a.as_str().starts_with("key_"));
        assert_eq!(a.as_str().len(), 20);
    }

    #[test]
    fn rejects_wrong_prefix_length_and_alphabet() {
        for bad in [
            "",
            "key_",
            "prv_0123456789abcdef",
            "key_0123456789abcde",
            "key_0123456789abcde-",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_base62_is_in_alphabet() {
        let text = random_base62(1000);
        assert_eq!(text.len(), 1000);
        assert!(text.bytes().all(|b| digit_value(b).is_some()));
    }
}
