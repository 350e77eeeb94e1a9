//! Errors in each dialect's own shape, so SDKs raise their usual exception
//! types (`openai.AuthenticationError`, `anthropic.PermissionDeniedError`, ...)
//! with KeyForge's message.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

use crate::kind::Api;

/// The class of a gateway error; each dialect names it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 400: malformed request.
    InvalidRequest,
    /// 401: no key, malformed, unknown, revoked or expired key.
    Authentication,
    /// 403: the key may not use this provider or model.
    PermissionDenied,
    /// 404: nothing configured for this route.
    NotFound,
    /// 413: request body too large.
    RequestTooLarge,
    /// 429: a rate limit (requests or tokens per minute, requests in flight).
    RateLimited,
    /// 429: a budget is spent.
    QuotaExceeded,
    /// 408: the client was too slow sending its request.
    RequestTimeout,
    /// 502: the upstream could not be reached or broke the connection.
    BadGateway,
    /// 504: the upstream did not answer in time.
    GatewayTimeout,
    /// 500: a bug in KeyForge.
    Internal,
    /// 503: KeyForge cannot serve right now (store unavailable, shutting down).
    Unavailable,
}

impl ErrorClass {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::Authentication => StatusCode::UNAUTHORIZED,
            Self::PermissionDenied => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited | Self::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn openai_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest
            | Self::NotFound
            | Self::RequestTooLarge
            | Self::RequestTimeout => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::PermissionDenied => "permission_error",
            // OpenAI's own types for these two.
            Self::RateLimited => "requests",
            Self::QuotaExceeded => "insufficient_quota",
            Self::BadGateway | Self::GatewayTimeout | Self::Internal | Self::Unavailable => {
                "api_error"
            }
        }
    }

    fn anthropic_type(&self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTimeout => "invalid_request_error",
            Self::Authentication => "authentication_error",
            Self::PermissionDenied => "permission_error",
            Self::NotFound => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimited | Self::QuotaExceeded => "rate_limit_error",
            Self::BadGateway | Self::GatewayTimeout | Self::Internal => "api_error",
            Self::Unavailable => "overloaded_error",
        }
    }

    fn gemini_status(&self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::RequestTooLarge => "INVALID_ARGUMENT",
            Self::Authentication => "UNAUTHENTICATED",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::NotFound => "NOT_FOUND",
            Self::RateLimited | Self::QuotaExceeded => "RESOURCE_EXHAUSTED",
            Self::RequestTimeout | Self::GatewayTimeout => "DEADLINE_EXCEEDED",
            Self::BadGateway | Self::Unavailable => "UNAVAILABLE",
            Self::Internal => "INTERNAL",
        }
    }
}

/// Renders an error body in `api`'s shape. `code` is a stable, machine
/// readable KeyForge code (`invalid_api_key`, `model_not_allowed`, ...).
pub fn render_error(api: Api, class: ErrorClass, code: &str, message: &str) -> (StatusCode, Bytes) {
    let status = class.status();
    let body = match api {
        Api::OpenAi => json!({
            "error": { "message": message, "type": class.openai_type(), "param": null, "code": code }
        }),
        Api::Anthropic => json!({
            "type": "error",
            "error": { "type": class.anthropic_type(), "message": message }
        }),
        Api::Gemini => json!({
            "error": { "code": status.as_u16(), "message": message, "status": class.gemini_status() }
        }),
    };
    (status, Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let (status, body) = render_error(
            Api::OpenAi,
            ErrorClass::Authentication,
            "invalid_api_key",
            "bad key",
        );
        assert_eq!(status, 401);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"error": {"message": "bad key", "type": "authentication_error", "param": null, "code": "invalid_api_key"}})
        );
        let (status, body) = render_error(
            Api::Anthropic,
            ErrorClass::PermissionDenied,
            "model_not_allowed",
            "no",
        );
        assert_eq!(status, 403);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"type": "error", "error": {"type": "permission_error", "message": "no"}})
        );
        let (status, body) = render_error(
            Api::Gemini,
            ErrorClass::RequestTooLarge,
            "body_too_large",
            "big",
        );
        assert_eq!(status, 413);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"error": {"code": 413, "message": "big", "status": "INVALID_ARGUMENT"}})
        );
    }
}
