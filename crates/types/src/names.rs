//! Names chosen by operators: environments, providers and projects.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("{kind} name must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is at most {max} characters long")]
    TooLong { kind: &'static str, max: usize },
    #[error(
        "{kind} name may only contain lowercase letters, digits and `-`, and must start with a letter or digit"
    )]
    BadCharacter { kind: &'static str },
}

fn check_name(text: &str, kind: &'static str, max: usize) -> Result<(), NameError> {
    if text.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if text.len() > max {
        return Err(NameError::TooLong { kind, max });
    }
    let first_ok = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let all_ok = text
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !(first_ok && all_ok) {
        return Err(NameError::BadCharacter { kind });
    }
    Ok(())
}

macro_rules! define_name {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn parse(text: &str) -> Result<Self, NameError> {
                check_name(text, $kind, Self::MAX_LEN)?;
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
                write!(f, "{:?}", self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(text: String) -> Result<Self, NameError> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(text: &str) -> Result<Self, NameError> {
                Self::parse(text)
            }
        }
    };
}

define_name!(
    /// An environment such as `dev`, `staging` or `prod`. It is embedded in
    /// every virtual key, so it uses `[a-z0-9-]` only and stays short: `_`
    /// separates the parts of a key and never appears in the name.
    EnvName, "environment", 24
);
define_name!(
    /// The name a provider is configured under (`openai`, `anthropic-eu`). It
    /// is unique within an environment and appears in gateway URLs
    /// (`/p/NAME/...`).
    ProviderName, "provider", 48
);
define_name!(
    /// The project a key belongs to (`checkout`, `support-bot`). A project
    /// spans environments: its budget counts the spend of all its keys.
    ProjectName, "project", 48
);
define_name!(
    /// The name of a named admin (`owner`, `alice`, `finance-bot`): what
    /// audit entries show as `admin:NAME`. Unique among admins, revoked
    /// ones included, so an audit entry's actor always names one person.
    AdminName, "admin", 48
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<(), NameError>)] = &[
            ("dev", Ok(())),
            ("prod-eu-1", Ok(())),
            ("0day", Ok(())),
            (
                "",
                Err(NameError::Empty {
                    kind: "environment",
                }),
            ),
            (
                "Dev",
                Err(NameError::BadCharacter {
                    kind: "environment",
                }),
            ),
            (
                "dev_1",
                Err(NameError::BadCharacter {
                    kind: "environment",
                }),
            ),
            (
                "-dev",
                Err(NameError::BadCharacter {
                    kind: "environment",
                }),
            ),
            (
                "a".repeat(25).leak(),
                Err(NameError::TooLong {
                    kind: "environment",
                    max: 24,
                }),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                EnvName::parse(input).map(|_| ()),
                *expected,
                "input {input:?}"
            );
        }
    }
}
