//! The reference syntax: where a provider key lives, never the key.
//!
//! - `vault://MOUNT/PATH#FIELD`: field FIELD of the KV v2 secret PATH under
//!   the mount MOUNT (`vault://secret/llm/prod/openai#api_key` is what
//!   `bao kv get -mount=secret -field=api_key llm/prod/openai` prints).
//!   Without `#FIELD` the secret must hold exactly one field.
//! - `aws-sm://SECRET_ID[#FIELD]`: the `SecretString` of the Secrets
//!   Manager secret SECRET_ID (a name or an ARN), or the key FIELD of it
//!   when it is a JSON object.
//!
//! References are stored in the clear (they are not secrets), so they are
//! checked strictly: no user info, query, whitespace or control
//! characters, no empty or `.`/`..` path segments.

use std::fmt;

use crate::{BackendError, BackendErrorKind};

/// Which backend a reference points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// HashiCorp Vault or OpenBao, KV v2 (`vault://`).
    Vault,
    /// AWS Secrets Manager (`aws-sm://`).
    AwsSecretsManager,
}

impl BackendKind {
    /// The reference scheme and configuration name: `vault`, `aws-sm`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::AwsSecretsManager => "aws-sm",
        }
    }
}

/// A parsed reference. `Display` gives the canonical form back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    /// The backend.
    pub backend: BackendKind,
    /// Vault: the KV v2 mount (the first path segment). Empty for AWS.
    pub mount: String,
    /// Vault: the secret's path under the mount. AWS: the secret id.
    pub path: String,
    /// The field to select, when named.
    pub field: Option<String>,
}

fn invalid(detail: String) -> BackendError {
    // The backend is unknown until the scheme is read; Vault is reported
    // for scheme errors, which name the accepted schemes anyway.
    BackendError::new(
        crate::BackendKind::Vault,
        BackendErrorKind::Config,
        "reference",
        detail,
    )
}

/// The punctuation a reference's path may hold, besides letters and digits.
fn path_punctuation(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Vault => "_-./",
        BackendKind::AwsSecretsManager => AWS_NAME_PUNCTUATION,
    }
}

/// Secrets Manager names: letters, digits and `/_+=.@-`; ARNs add `:`.
const AWS_NAME_PUNCTUATION: &str = "/_+=.@-:";

const FORMS: &str = "vault://MOUNT/PATH#FIELD or aws-sm://SECRET_ID[#FIELD]";

impl SecretRef {
    /// Parses a reference. Errors (`Config`) name the rule broken and the
    /// accepted forms; the text is echoed only when it is a well-formed
    /// reference candidate (it never holds a secret, but a user may paste
    /// a key by mistake, so a value that fails is not repeated).
    pub fn parse(text: &str) -> Result<Self, BackendError> {
        let (backend, rest) = if let Some(rest) = text.strip_prefix("vault://") {
            (BackendKind::Vault, rest)
        } else if let Some(rest) = text.strip_prefix("aws-sm://") {
            (BackendKind::AwsSecretsManager, rest)
        } else {
            return Err(invalid(format!(
                "a secret reference must be {FORMS} (an unknown scheme or no scheme was given)"
            )));
        };
        let (locator, field) = match rest.split_once('#') {
            Some((locator, field)) => (locator, Some(field)),
            None => (rest, None),
        };
        if let Some(field) = field
            && (field.is_empty()
                || !field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(invalid(format!(
                "the #FIELD of a {} reference must be letters, digits, '_', '-' or '.'",
                backend.name()
            )));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || path_punctuation(backend).contains(c);
        if locator.is_empty() || !locator.chars().all(allowed) {
            return Err(invalid(format!(
                "a {} reference's path may hold only letters, digits and {} (no spaces, '@' user info, '?' or '%'): {FORMS}",
                backend.name(),
                path_punctuation(backend)
            )));
        }
        match backend {
            BackendKind::Vault => {
                let segments: Vec<&str> = locator.split('/').collect();
                if segments.len() < 2 {
                    return Err(invalid(format!(
                        "a vault reference needs the KV v2 mount and a path: vault://secret/llm/openai#api_key, not vault://{locator}"
                    )));
                }
                if segments
                    .iter()
                    .any(|s| s.is_empty() || *s == "." || *s == "..")
                {
                    return Err(invalid(
                        "a vault reference's path has an empty, '.' or '..' segment".to_owned(),
                    ));
                }
                Ok(Self {
                    backend,
                    mount: segments[0].to_owned(),
                    path: segments[1..].join("/"),
                    field: field.map(str::to_owned),
                })
            }
            BackendKind::AwsSecretsManager => Ok(Self {
                backend,
                mount: String::new(),
                path: locator.to_owned(),
                field: field.map(str::to_owned),
            }),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            BackendKind::Vault => write!(f, "vault://{}/{}", self.mount, self.path)?,
            BackendKind::AwsSecretsManager => write!(f, "aws-sm://{}", self.path)?,
        }
        if let Some(field) = &self.field {
            write!(f, "#{field}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for SecretRef {
    type Err = BackendError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_examples_parse_and_print_back() {
        for text in [
            "vault://secret/llm/prod/openai#api_key",
            "aws-sm://llm/prod/anthropic#ANTHROPIC_API_KEY",
            "aws-sm://arn:aws:secretsmanager:eu-west-1:123456789012:secret:groq-AbCdEf",
            "vault://kv/a#b.c-d_e",
        ] {
            let parsed = SecretRef::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let vault = SecretRef::parse("vault://secret/llm/prod/openai#api_key").unwrap();
        assert_eq!(vault.mount, "secret");
        assert_eq!(vault.path, "llm/prod/openai");
        assert_eq!(vault.field.as_deref(), Some("api_key"));
        let whole = SecretRef::parse("aws-sm://groq").unwrap();
        assert_eq!(whole.field, None);
    }

    #[test]
    fn malformed_references_are_refused_with_the_rule_they_break() {
        for (text, says) in [
            ("secret/llm/openai#api_key", "unknown scheme"),
            ("https://vault:8200/v1/secret/data/x", "unknown scheme"),
            ("vault://secret#api_key", "mount and a path"),
            ("vault://secret//x#f", "empty"),
            ("vault://secret/../x#f", "'..'"),
            ("vault://secret/x#", "#FIELD"),
            ("vault://secret/x#a b", "#FIELD"),
            ("vault://token@secret/x#f", "user info"),
            ("vault://secret/x?version=2#f", "'?'"),
            ("vault://secret/x%2e#f", "'%'"),
            ("aws-sm://", "path"),
            ("aws-sm://my secret", "spaces"),
        ] {
            let error = SecretRef::parse(text).unwrap_err();
            assert_eq!(error.kind(), BackendErrorKind::Config, "{text}");
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }
}
