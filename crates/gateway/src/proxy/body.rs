//! Reading the request body: bounded in size and in time.

use axum::body::Body;
use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use keyforge_providers::ErrorClass;

use crate::config::GatewayConfig;
use crate::error::GatewayError;

pub(crate) async fn read(
    config: &GatewayConfig,
    parts: &Parts,
    body: Body,
) -> Result<Bytes, GatewayError> {
    let max = config.max_request_body_bytes;
    let too_large = || {
        GatewayError::client(
            ErrorClass::RequestTooLarge,
            "body_too_large",
            format!("the request body is larger than the {max} bytes this gateway accepts"),
        )
    };
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    let collected =
        tokio::time::timeout(config.body_read_timeout, Limited::new(body, max).collect())
            .await
            .map_err(|_| {
                GatewayError::client(
                    ErrorClass::RequestTimeout,
                    "request_timeout",
                    "the request body was not received in time",
                )
            })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(GatewayError::client(
            ErrorClass::InvalidRequest,
            "body_read_failed",
            "the request body could not be read",
        )),
    }
}
