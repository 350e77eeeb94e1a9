//! One error type for every AWS call, saying whose fault a failure is.
//!
//! AWS error codes come from the JSON 1.1 protocol's `__type` field (Secrets
//! Manager, KMS) or the query protocol's `<Error><Code>` (STS); see
//! "Common Errors" in the AWS API references. The message AWS sent is kept
//! only after the credentials in use were cut out of it, and never for
//! signature errors (some services echo the canonical request, which names
//! the session token).

use std::fmt;

/// Whose fault a failure is, and so what the operator should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// KeyForge's AWS settings are wrong or incomplete (region, endpoint,
    /// profile, a KMS key that is disabled or of the wrong kind).
    Config,
    /// No credentials were found, or AWS refused them (unknown, expired,
    /// badly signed).
    Credentials,
    /// The credentials are valid but their policy does not allow the call.
    AccessDenied,
    /// The secret, version, staging label or key does not exist.
    NotFound,
    /// AWS refused the request itself (bad parameter, a ciphertext that is
    /// not KMS's, a secret that is not JSON when a field is selected).
    Invalid,
    /// AWS asked KeyForge to slow down; retried with backoff.
    Throttled,
    /// AWS could not be reached or failed on its side (connection refused,
    /// timeout, HTTP 5xx); retried with backoff.
    Unavailable,
}

impl AwsErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Config => "AWS configuration error",
            Self::Credentials => "AWS credentials missing or refused",
            Self::AccessDenied => "access denied by AWS",
            Self::NotFound => "not found in AWS",
            Self::Invalid => "request refused by AWS",
            Self::Throttled => "throttled by AWS",
            Self::Unavailable => "AWS unreachable or failing",
        }
    }
}

/// A failed AWS call: its kind, the operation (`secretsmanager:GetSecretValue`),
/// AWS's error code when there was one, and a detail that never holds a
/// secret value or a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    kind: AwsErrorKind,
    operation: String,
    code: Option<String>,
    detail: String,
}

impl AwsError {
    /// An error made by KeyForge itself (no AWS code).
    pub fn new(
        kind: AwsErrorKind,
        operation: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            operation: operation.into(),
            code: None,
            detail: detail.into(),
        }
    }

    /// A configuration error found before any call was made.
    pub fn config(detail: impl Into<String>) -> Self {
        Self::new(AwsErrorKind::Config, "configuration", detail)
    }

    /// An error response from AWS: `status` is the HTTP status, `code` the
    /// AWS error code, `message` AWS's text, from which every string in
    /// `redact` (the credentials in use) is removed.
    pub(crate) fn from_response(
        operation: &str,
        status: u16,
        code: Option<&str>,
        message: Option<&str>,
        redact: &[&str],
    ) -> Self {
        let code = code.map(short_code);
        let kind = classify(status, code.as_deref());
        let detail = match (code.as_deref(), message) {
            (Some(code), _) if is_signature_code(code) => {
                "the request signature was refused (check the secret access key and the clock)"
                    .to_owned()
            }
            (_, Some(message)) => sanitize(message, redact),
            (_, None) => format!("HTTP {status}"),
        };
        Self {
            kind,
            operation: operation.to_owned(),
            code,
            detail,
        }
    }

    /// Whose fault the failure is.
    pub fn kind(&self) -> AwsErrorKind {
        self.kind
    }

    /// AWS's error code (`ResourceNotFoundException`), if AWS sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The operation that failed, as `service:Action`.
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// True when trying again later may succeed (throttling, AWS down).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            AwsErrorKind::Throttled | AwsErrorKind::Unavailable
        )
    }

    /// True when the credentials expired, so fresh ones may succeed.
    pub(crate) fn is_expired_credentials(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("ExpiredTokenException" | "ExpiredToken" | "RequestExpired")
        )
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, self.kind.describe())?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for AwsError {}

/// `com.amazonaws.kms#NotFoundException` and `NotFoundException:http://…`
/// both mean `NotFoundException` (the JSON protocol allows both forms).
fn short_code(code: &str) -> String {
    let code = code.split(':').next().unwrap_or(code);
    code.rsplit('#').next().unwrap_or(code).to_owned()
}

fn is_signature_code(code: &str) -> bool {
    matches!(
        code,
        "SignatureDoesNotMatch" | "InvalidSignatureException" | "IncompleteSignature"
    )
}

fn classify(status: u16, code: Option<&str>) -> AwsErrorKind {
    match code {
        Some(
            "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "InvalidSignatureException"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "MissingAuthenticationTokenException"
            | "ExpiredTokenException"
            | "ExpiredToken"
            | "RequestExpired"
            | "InvalidIdentityToken"
            | "IDPRejectedClaim"
            | "IDPCommunicationError",
        ) => AwsErrorKind::Credentials,
        Some("AccessDeniedException" | "AccessDenied" | "AuthFailure") => {
            AwsErrorKind::AccessDenied
        }
        Some("ResourceNotFoundException" | "NotFoundException") => AwsErrorKind::NotFound,
        Some(
            "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "ProvisionedThroughputExceededException",
        ) => AwsErrorKind::Throttled,
        Some(
            "InternalServiceError"
            | "InternalFailure"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "KMSInternalException"
            | "DependencyTimeoutException",
        ) => AwsErrorKind::Unavailable,
        Some(
            "DisabledException"
            | "KMSInvalidStateException"
            | "InvalidKeyUsageException"
            | "KeyUnavailableException"
            | "InvalidArnException",
        ) => AwsErrorKind::Config,
        _ if status == 429 => AwsErrorKind::Throttled,
        _ if status >= 500 => AwsErrorKind::Unavailable,
        _ if status == 403 => AwsErrorKind::AccessDenied,
        _ if status == 404 => AwsErrorKind::NotFound,
        _ => AwsErrorKind::Invalid,
    }
}

/// AWS's message, at most 300 characters, without any of `redact` and
/// without control characters (a log line stays one line).
fn sanitize(message: &str, redact: &[&str]) -> String {
    let mut text = message.to_owned();
    for secret in redact.iter().filter(|secret| secret.len() >= 4) {
        text = text.replace(secret, "[redacted]");
    }
    let mut text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > 300 {
        text = text.chars().take(300).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_aws_codes_by_whose_fault_it_is() {
        let table = [
            (400, "ResourceNotFoundException", AwsErrorKind::NotFound),
            (
                400,
                "com.amazonaws.kms#NotFoundException",
                AwsErrorKind::NotFound,
            ),
            (
                400,
                "UnrecognizedClientException",
                AwsErrorKind::Credentials,
            ),
            (403, "InvalidClientTokenId", AwsErrorKind::Credentials),
            (400, "ExpiredTokenException", AwsErrorKind::Credentials),
            (400, "AccessDeniedException", AwsErrorKind::AccessDenied),
            (400, "ThrottlingException", AwsErrorKind::Throttled),
            (500, "InternalServiceError", AwsErrorKind::Unavailable),
            (400, "DisabledException", AwsErrorKind::Config),
            (400, "InvalidCiphertextException", AwsErrorKind::Invalid),
            (503, "SomethingNew", AwsErrorKind::Unavailable),
            (429, "SomethingNew", AwsErrorKind::Throttled),
        ];
        for (status, code, kind) in table {
            let error = AwsError::from_response("kms:Decrypt", status, Some(code), None, &[]);
            assert_eq!(error.kind(), kind, "{code}");
            assert_eq!(
                error.is_retryable(),
                matches!(kind, AwsErrorKind::Throttled | AwsErrorKind::Unavailable)
            );
        }
    }

    #[test]
    fn never_repeats_a_credential_or_a_canonical_request() {
        let token = format!("FQoG{}", "x".repeat(30));
        let token = token.as_str();
        let error = AwsError::from_response(
            "sts:GetCallerIdentity",
            400,
            Some("InvalidClientTokenId"),
            Some(&format!(
                "The security token {token} is invalid\nsecond line"
            )),
            &[token],
        );
        let text = error.to_string();
        assert!(!text.contains(token), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let error = AwsError::from_response(
            "sts:GetCallerIdentity",
            403,
            Some("SignatureDoesNotMatch"),
            Some(&format!("canonical string: x-amz-security-token:{token}")),
            &[],
        );
        assert!(!error.to_string().contains(token), "{error}");
        assert_eq!(error.kind(), AwsErrorKind::Credentials);
    }
}
