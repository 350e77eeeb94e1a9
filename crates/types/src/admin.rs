//! Named admins: the `kfa_` admin token and the four admin roles.
//!
//! An admin token is `kfa_<random><checksum>`, built like the `kf_` key
//! ([`crate::VirtualKey`]): 32 base62 characters from the OS CSPRNG (190
//! bits), then the CRC32 of everything before it as six base62 digits, so a
//! mistyped or truncated token is refused before any lookup. It is shown
//! once, stored only as its keyed hash ([`crate::KeyHasher::hash_admin`]),
//! and hashes compare in constant time.

use std::fmt;

use secrecy::SecretString;

use crate::base62::{self, U32_WIDTH};
use crate::ids::random_base62;

const PREFIX: &str = "kfa_";
const RANDOM_LEN: usize = 32;

/// Why text is not a well-formed `kfa_` token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdminTokenError {
    #[error("malformed admin token: expected `kfa_` followed by {len} letters or digits")]
    Malformed { len: usize },
    #[error(
        "malformed admin token: the checksum does not match (the token was mistyped or truncated)"
    )]
    BadChecksum,
}

/// A checksum-valid `kfa_` admin token. The text is zeroized on drop and
/// never printed by `Debug`.
pub struct AdminToken {
    secret: SecretString,
}

impl AdminToken {
    /// Mints a new random token.
    pub fn generate() -> Self {
        let body = format!("{PREFIX}{}", random_base62(RANDOM_LEN));
        let checksum = base62::encode_u32_fixed(crc32fast::hash(body.as_bytes()));
        let mut text = body;
        text.extend(checksum.iter().map(|&b| char::from(b)));
        Self {
            secret: SecretString::from(text),
        }
    }

    /// Whether this text claims to be a `kfa_` token (then it must parse).
    pub fn looks_like(text: &str) -> bool {
        text.starts_with(PREFIX)
    }

    /// Parses untrusted text: format and checksum only, nothing about
    /// whether an admin holds it.
    pub fn parse(text: &str) -> Result<Self, AdminTokenError> {
        let malformed = AdminTokenError::Malformed {
            len: RANDOM_LEN + U32_WIDTH,
        };
        let tail = text.strip_prefix(PREFIX).ok_or(malformed.clone())?;
        if tail.len() != RANDOM_LEN + U32_WIDTH
            || !tail.bytes().all(|b| base62::digit_value(b).is_some())
        {
            return Err(malformed);
        }
        let (body, checksum) = text.split_at(text.len() - U32_WIDTH);
        let expected = base62::decode_u32(checksum.as_bytes()).ok_or(malformed)?;
        if crc32fast::hash(body.as_bytes()) != expected {
            return Err(AdminTokenError::BadChecksum);
        }
        Ok(Self {
            secret: SecretString::from(text.to_owned()),
        })
    }

    /// The secret text, for the one time it is shown to its admin.
    pub fn secret(&self) -> &SecretString {
        &self.secret
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(kfa_[redacted])")
    }
}

/// What an admin may do; each role includes the ones before it:
/// `viewer` < `auditor` < `operator` < `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminRole {
    /// Usage, budgets, keys (without secrets), status: read only.
    Viewer,
    /// Also reads and verifies the audit log.
    Auditor,
    /// Also changes keys, budgets, rotations and alerts.
    Operator,
    /// Also providers, admins and backups.
    Owner,
}

/// A role name that is none of the four.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("unknown admin role `{0}`: expected viewer, auditor, operator or owner")]
pub struct RoleError(pub String);

impl AdminRole {
    /// Every role, weakest first.
    pub const ALL: [AdminRole; 4] = [Self::Viewer, Self::Auditor, Self::Operator, Self::Owner];

    /// The role's name as written in commands, JSON and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Auditor => "auditor",
            Self::Operator => "operator",
            Self::Owner => "owner",
        }
    }

    /// Parses a role's name (`viewer`, `auditor`, `operator`, `owner`).
    pub fn parse(text: &str) -> Result<Self, RoleError> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| RoleError(text.to_owned()))
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for AdminRole {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for AdminRole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "tests compare secrets with what they should be"
)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn generated_tokens_parse_back() {
        let token = AdminToken::generate();
        let text = token.secret().expose_secret().to_owned();
        assert!(text.starts_with("kfa_"));
        assert_eq!(text.len(), 4 + 32 + 6);
        assert!(AdminToken::parse(&text).is_ok());
        assert!(!format!("{token:?}").contains(&text[4..]));
    }

    #[test]
    fn bad_tokens_are_refused_offline() {
        let good = AdminToken::generate().secret().expose_secret().to_owned();
        let mut flipped = good.clone().into_bytes();
        let i = 10;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let cases = [
            (
                good[..good.len() - 1].to_owned(),
                AdminTokenError::Malformed { len: 38 },
            ),
            (format!("{good}x"), AdminTokenError::Malformed { len: 38 }),
            ("kfa_".to_owned(), AdminTokenError::Malformed { len: 38 }),
            (
                String::from_utf8(flipped).unwrap(),
                AdminTokenError::BadChecksum,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(AdminToken::parse(&input).unwrap_err(), expected, "{input}");
        }
    }

    #[test]
    fn roles_are_ordered_and_round_trip() {
        assert!(AdminRole::Viewer < AdminRole::Auditor);
        assert!(AdminRole::Auditor < AdminRole::Operator);
        assert!(AdminRole::Operator < AdminRole::Owner);
        for role in AdminRole::ALL {
            assert_eq!(AdminRole::parse(role.as_str()), Ok(role));
        }
        assert!(AdminRole::parse("admin").is_err());
    }
}
