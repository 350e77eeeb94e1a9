//! The one error type of the request path. Each error knows whose fault it is
//! and how the client sees it; it is rendered in the client's API dialect in
//! exactly one place ([`GatewayError::into_response`]) and its message never
//! contains a secret (messages are built from fixed text, ids and names).

use axum::response::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use keyforge_providers::{Api, ErrorClass, render_error};

/// Whose fault an error is: it decides the log level and whether a retry can
/// help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong; retrying the same request fails again.
    Client,
    /// The upstream provider failed or was unreachable; a retry may succeed.
    Upstream,
    /// A bug or an unavailable dependency inside KeyForge.
    Internal,
}

#[derive(Debug)]
pub(crate) struct GatewayError {
    pub(crate) class: ErrorClass,
    /// Stable machine-readable code (`invalid_api_key`, `model_not_allowed`).
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) fault: Fault,
    /// Extra response headers (`Retry-After`, `x-ratelimit-*`); boxed, as
    /// most errors have none.
    pub(crate) headers: Option<Box<HeaderMap>>,
}

impl GatewayError {
    pub(crate) fn client(
        class: ErrorClass,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            class,
            code,
            message: message.into(),
            fault: Fault::Client,
            headers: None,
        }
    }

    pub(crate) fn upstream(
        class: ErrorClass,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            class,
            code,
            message: message.into(),
            fault: Fault::Upstream,
            headers: None,
        }
    }

    pub(crate) fn internal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Internal,
            code,
            message: message.into(),
            fault: Fault::Internal,
            headers: None,
        }
    }

    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers_mut().insert(name, value);
        self
    }

    pub(crate) fn headers_mut(&mut self) -> &mut HeaderMap {
        self.headers.get_or_insert_with(Box::default)
    }

    pub(crate) fn into_response(self, api: Api, request_id: &str) -> Response {
        let (status, body) = render_error(api, self.class, self.code, &self.message);
        let mut response = Response::new(axum::body::Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        if let Some(extra) = self.headers {
            headers.extend(*extra);
        }
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-keyforge-error", HeaderValue::from_static(self.code));
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert("x-keyforge-request-id", value);
        }
        response
    }
}
