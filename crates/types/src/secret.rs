//! Provider API keys in memory: redacted in `Debug`, zeroized on drop, and
//! exposed only where they are written into an upstream request or sealed.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the API key is empty")]
    Empty,
    #[error("the API key is longer than 4096 bytes")]
    TooLong,
    #[error(
        "the API key contains whitespace or control characters (check for a stray newline or quote)"
    )]
    BadCharacter,
    #[error("that is a KeyForge virtual key, not a provider API key")]
    IsVirtualKey,
}

/// A provider's real API key.
#[derive(Clone)]
pub struct ProviderSecret(SecretString);

impl ProviderSecret {
    /// Validates and wraps the key. Surrounding whitespace (the newline that
    /// `echo` adds) is trimmed; inner whitespace is an error.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty);
        }
        if trimmed.len() > 4096 {
            return Err(SecretError::TooLong);
        }
        if trimmed
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(SecretError::BadCharacter);
        }
        if crate::VirtualKey::looks_like(trimmed) {
            return Err(SecretError::IsVirtualKey);
        }
        Ok(Self(SecretString::from(trimmed.to_owned())))
    }

    pub fn expose(&self) -> &str {
        #[expect(
            clippy::disallowed_methods,
            reason = "the one accessor of a provider key; its own callers are checked by clippy.toml"
        )]
        self.0.expose_secret()
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSecret([redacted])")
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "tests compare secrets with what they should be"
)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_redacts() {
        let secret = ProviderSecret::parse("  canary-secret-value\n").unwrap();
        assert_eq!(secret.expose(), "canary-secret-value");
        assert!(!format!("{secret:?}").contains("canary"));
    }

    #[test]
    fn rejects_bad_values() {
        assert_eq!(ProviderSecret::parse("\n").unwrap_err(), SecretError::Empty);
        assert_eq!(
            ProviderSecret::parse("a b").unwrap_err(),
            SecretError::BadCharacter
        );
        assert_eq!(
            ProviderSecret::parse("kf_dev_x").unwrap_err(),
            SecretError::IsVirtualKey
        );
    }

    #[test]
    fn zeroizes_on_drop() {
        fn assert_zeroize_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<SecretString>();
    }
}
