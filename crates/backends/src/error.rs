//! One error type for every backend call, saying whose fault a failure is.

use std::fmt;

use crate::BackendKind;

/// Whose fault a failure is, and so what the operator should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// KeyForge's backend settings or the reference are wrong (address,
    /// CA file, an auth file that cannot be read, a malformed reference).
    Config,
    /// The backend refused KeyForge's credentials (a bad or expired token,
    /// an AppRole secret id or JWT it does not accept).
    Auth,
    /// The credentials are valid but their policy does not allow the call.
    AccessDenied,
    /// The secret, version or field does not exist (or was deleted).
    NotFound,
    /// The value cannot be used (not text, not a JSON object when a field
    /// is named, several fields and none named).
    Invalid,
    /// The backend could not be reached, is sealed, or failed on its side.
    Unavailable,
}

impl BackendErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Config => "configuration error",
            Self::Auth => "authentication refused",
            Self::AccessDenied => "access denied",
            Self::NotFound => "not found",
            Self::Invalid => "unusable value",
            Self::Unavailable => "unreachable or failing",
        }
    }
}

/// A failed backend call: the backend, its kind, the operation
/// (`kv2:read`, `auth:approle`) and a detail that never holds a secret
/// value or a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    backend: BackendKind,
    kind: BackendErrorKind,
    operation: String,
    detail: String,
}

impl BackendError {
    /// An error of `kind` in `operation` of `backend`.
    pub fn new(
        backend: BackendKind,
        kind: BackendErrorKind,
        operation: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            backend,
            kind,
            operation: operation.into(),
            detail: detail.into(),
        }
    }

    /// Whose fault it is.
    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// The backend that failed.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// True when retrying later may succeed (the backend is down or
    /// failing), as opposed to a problem someone must fix.
    pub fn is_transient(&self) -> bool {
        self.kind == BackendErrorKind::Unavailable
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}): {}",
            self.backend.name(),
            self.kind.describe(),
            self.operation,
            self.detail
        )
    }
}

impl std::error::Error for BackendError {}

impl From<keyforge_aws::AwsError> for BackendError {
    fn from(error: keyforge_aws::AwsError) -> Self {
        use keyforge_aws::AwsErrorKind as A;
        let kind = match error.kind() {
            A::Config => BackendErrorKind::Config,
            A::Credentials => BackendErrorKind::Auth,
            A::AccessDenied => BackendErrorKind::AccessDenied,
            A::NotFound => BackendErrorKind::NotFound,
            A::Invalid => BackendErrorKind::Invalid,
            A::Throttled | A::Unavailable => BackendErrorKind::Unavailable,
        };
        // AwsError's Display already cuts credentials out of AWS's text.
        Self::new(
            BackendKind::AwsSecretsManager,
            kind,
            "aws",
            error.to_string(),
        )
    }
}
