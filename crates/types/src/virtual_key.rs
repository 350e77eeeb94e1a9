//! The `kf_` virtual key: `kf_<env>_<random><checksum>`, after GitHub's token
//! design.
//!
//! - `kf_` makes the key easy for scanners to find precisely;
//! - `<env>` is the environment the key belongs to (`[a-z0-9-]`, so the `_`
//!   separators parse unambiguously);
//! - `<random>` is 28 base62 characters from the OS CSPRNG (166 bits);
//! - `<checksum>` is the CRC32 of everything before it, as six base62 digits,
//!   so typos and scanner noise are rejected offline, before any lookup.
//!
//! The key itself is never stored: the store keeps an HMAC-SHA-256 of it under
//! a server key ([`KeyHasher`]), and hashes compare in constant time.

use std::fmt;

use aws_lc_rs::hmac;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::base62::{self, U32_WIDTH};
use crate::ids::random_base62;
use crate::names::EnvName;

const PREFIX: &str = "kf_";
const RANDOM_LEN: usize = 28;
/// Number of random characters shown in the non-secret display prefix.
const DISPLAY_RANDOM_CHARS: usize = 4;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VirtualKeyError {
    #[error("not a KeyForge key: KeyForge keys start with `kf_`")]
    NotAKeyForgeKey,
    #[error(
        "malformed KeyForge key: expected `kf_<environment>_` followed by {len} letters or digits"
    )]
    Malformed { len: usize },
    #[error(
        "malformed KeyForge key: the checksum does not match (the key was mistyped or truncated)"
    )]
    BadChecksum,
}

/// A parsed, checksum-valid virtual key. The secret text is zeroized on drop
/// and never printed by `Debug`.
pub struct VirtualKey {
    secret: SecretString,
    env: EnvName,
}

impl VirtualKey {
    /// Mints a new random key for `env`.
    pub fn generate(env: &EnvName) -> Self {
        let body = format!("{PREFIX}{env}_{}", random_base62(RANDOM_LEN));
        let checksum = base62::encode_u32_fixed(crc32fast::hash(body.as_bytes()));
        let mut text = body;
        text.extend(checksum.iter().map(|&b| char::from(b)));
        Self {
            secret: SecretString::from(text),
            env: env.clone(),
        }
    }

    /// Parses untrusted text. Only format and checksum are checked here; it
    /// says nothing about whether the key exists.
    pub fn parse(text: &str) -> Result<Self, VirtualKeyError> {
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or(VirtualKeyError::NotAKeyForgeKey)?;
        let malformed = VirtualKeyError::Malformed {
            len: RANDOM_LEN + U32_WIDTH,
        };
        let (env, tail) = rest.rsplit_once('_').ok_or(malformed.clone())?;
        let env = EnvName::parse(env).map_err(|_| malformed.clone())?;
        if tail.len() != RANDOM_LEN + U32_WIDTH
            || !tail.bytes().all(|b| base62::digit_value(b).is_some())
        {
            return Err(malformed);
        }
        let (body, checksum) = text.split_at(text.len() - U32_WIDTH);
        let expected = base62::decode_u32(checksum.as_bytes()).ok_or(malformed)?;
        if crc32fast::hash(body.as_bytes()) != expected {
            return Err(VirtualKeyError::BadChecksum);
        }
        Ok(Self {
            secret: SecretString::from(text.to_owned()),
            env,
        })
    }

    /// Cheap syntactic test used by error messages and scanners: does this
    /// look like an attempt at a KeyForge key?
    pub fn looks_like(text: &str) -> bool {
        text.starts_with(PREFIX)
    }

    pub fn env(&self) -> &EnvName {
        &self.env
    }

    /// The non-secret prefix shown in listings: `kf_<env>_` plus the first
    /// four random characters (24 of 166 bits).
    pub fn display_prefix(&self) -> String {
        #[expect(
            clippy::disallowed_methods,
            reason = "only the non-secret leading characters are kept"
        )]
        let text = self.secret.expose_secret();
        let end = PREFIX.len() + self.env.as_str().len() + 1 + DISPLAY_RANDOM_CHARS;
        format!("{}…", &text[..end])
    }

    /// The secret text, for the one time it is shown to its owner.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }
}

impl fmt::Debug for VirtualKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VirtualKey({}[redacted])", self.display_prefix())
    }
}

/// The keyed hash a virtual key is stored and looked up under.
#[derive(Clone, Copy, Hash, PartialEq, Eq)]
pub struct KeyHash([u8; 32]);

impl KeyHash {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison. Lookup tables key on the hash (which leaks
    /// nothing: it is keyed with a server secret), and the final check that a
    /// presented key matches its record uses this.
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(..)")
    }
}

/// HMAC-SHA-256 under the server's key-hashing secret.
pub struct KeyHasher {
    key: hmac::Key,
}

impl KeyHasher {
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn hash(&self, key: &VirtualKey) -> KeyHash {
        #[expect(
            clippy::disallowed_methods,
            reason = "the key text goes only into the HMAC"
        )]
        let tag = hmac::sign(&self.key, key.secret.expose_secret().as_bytes());
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        KeyHash(bytes)
    }

    /// The keyed hash an admin token is stored under: a `kfa_` token, or
    /// the legacy `admin.token` text (any format). Domain-separated from
    /// [`Self::hash`], so no `kf_` key hash can ever equal an admin's.
    pub fn hash_admin(&self, token: &SecretString) -> KeyHash {
        #[expect(
            clippy::disallowed_methods,
            reason = "the token text goes only into the HMAC"
        )]
        let text = token.expose_secret();
        let mut context = hmac::Context::with_key(&self.key);
        context.update(ADMIN_DOMAIN);
        context.update(text.as_bytes());
        let tag = context.sign();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(tag.as_ref());
        KeyHash(bytes)
    }

    /// [`Self::hash_admin`] of a parsed `kfa_` token.
    pub fn hash_admin_token(&self, token: &crate::AdminToken) -> KeyHash {
        self.hash_admin(token.secret())
    }
}

/// Prefix of every admin token's hash input (a NUL cannot start a key).
const ADMIN_DOMAIN: &[u8] = b"keyforge/admin-token\0";

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "tests compare secrets with what they should be"
)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev() -> EnvName {
        EnvName::parse("dev").unwrap()
    }

    #[test]
    fn generated_keys_parse_back() {
        let key = VirtualKey::generate(&dev());
        let text = key.secret().expose_secret().to_owned();
        assert!(text.starts_with("kf_dev_"));
        assert_eq!(text.len(), "kf_dev_".len() + 28 + 6);
        let parsed = VirtualKey::parse(&text).unwrap();
        assert_eq!(parsed.env(), &dev());
    }

    #[test]
    fn random_part_carries_at_least_160_bits() {
        let bits = RANDOM_LEN as f64 * 62f64.log2();
        assert!(bits >= 160.0, "{bits}");
    }

    #[test]
    fn environments_with_dashes_parse() {
        let env = EnvName::parse("prod-eu-1").unwrap();
        let key = VirtualKey::generate(&env);
        let parsed = VirtualKey::parse(key.secret().expose_secret()).unwrap();
        assert_eq!(parsed.env(), &env);
    }

    #[test]
    fn rejects_bad_inputs_with_the_right_error() {
        let good = VirtualKey::generate(&dev())
            .secret()
            .expose_secret()
            .to_owned();
        let mut flipped = good.clone().into_bytes();
        let i = flipped.len() - 10;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let cases: Vec<(String, VirtualKeyError)> = vec![
            ("sk-abc".into(), VirtualKeyError::NotAKeyForgeKey),
            ("kf_".into(), VirtualKeyError::Malformed { len: 34 }),
            (
                "kf_dev_short".into(),
                VirtualKeyError::Malformed { len: 34 },
            ),
            (
                good[..good.len() - 1].to_owned(),
                VirtualKeyError::Malformed { len: 34 },
            ),
            (
                good.replacen("kf_dev_", "kf_DEV_", 1),
                VirtualKeyError::Malformed { len: 34 },
            ),
            (flipped, VirtualKeyError::BadChecksum),
        ];
        for (input, expected) in cases {
            assert_eq!(
                VirtualKey::parse(&input).unwrap_err(),
                expected,
                "input {input}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = VirtualKey::generate(&dev());
        let text = key.secret().expose_secret().to_owned();
        let debug = format!("{key:?}");
        assert!(!debug.contains(&text));
        assert!(!debug.contains(&text[10..]));
        assert!(debug.contains("kf_dev_"));
    }

    #[test]
    fn hashes_are_keyed() {
        let key = VirtualKey::generate(&dev());
        let a = KeyHasher::new(&[1; 32]).hash(&key);
        let b = KeyHasher::new(&[2; 32]).hash(&key);
        assert!(!a.ct_eq(&b));
        assert!(a.ct_eq(&KeyHasher::new(&[1; 32]).hash(&key)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,80}") {
            let _ = VirtualKey::parse(&text);
        }

        #[test]
        fn any_single_character_change_is_caught(index in 7usize..41, replacement in "[0-9A-Za-z]") {
            let good = VirtualKey::generate(&dev()).secret().expose_secret().to_owned();
            let mut bytes = good.clone().into_bytes();
            bytes[index] = replacement.as_bytes()[0];
            let changed = String::from_utf8(bytes).unwrap();
            prop_assume!(changed != good);
            prop_assert!(VirtualKey::parse(&changed).is_err());
        }
    }
}
