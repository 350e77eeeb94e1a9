//! Forwarding: swap the client's credentials for the provider's, send, and
//! stream the answer back as it arrives. The upstream body is handed to the
//! client's response frame by frame; dropping it (the client went away)
//! closes the upstream connection and so cancels the generation.

use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use keyforge_providers::{
    Api, ErrorClass, Meter, Usage, UsageSource, UsageStripper, inject_provider_key,
    request_usage_in_stream, sanitize_query, sanitize_request_headers, strip_response_headers,
};
use keyforge_store::LedgerRecord;

use super::RequestContext;
use super::admit::Admission;
use super::authenticate::Authenticated;
use super::authorize::Target;
use super::meter::{MeteredBody, Settlement};
use crate::error::{Fault, GatewayError};
use crate::state::AppState;

pub(crate) struct Upstream {
    response: http::Response<Incoming>,
    headers_received: Instant,
    admission: Admission,
}

/// Sends the request upstream. A request the provider failed to answer
/// (unreachable, timed out) is still recorded in the ledger, with no usage.
pub(crate) async fn send(
    state: &AppState,
    ctx: &mut RequestContext,
    target: &Target,
    key: &Authenticated,
    parts: Parts,
    body: Bytes,
    admission: Admission,
) -> Result<Upstream, GatewayError> {
    match send_once(state, ctx, target, parts, body).await {
        Ok((response, headers_received)) => Ok(Upstream {
            response,
            headers_received,
            admission,
        }),
        Err(error) => {
            if error.fault == Fault::Upstream {
                settlement(
                    state,
                    ctx,
                    target,
                    key,
                    error.class.status().as_u16(),
                    admission,
                )
                .settle(Usage::default(), UsageSource::None);
            }
            Err(error)
        }
    }
}

async fn send_once(
    state: &AppState,
    ctx: &mut RequestContext,
    target: &Target,
    parts: Parts,
    body: Bytes,
) -> Result<(http::Response<Incoming>, Instant), GatewayError> {
    let provider = &target.provider;
    let name = &provider.record.name;
    let mut url = String::with_capacity(provider.base_url.len() + target.upstream_path.len() + 64);
    url.push_str(&provider.base_url);
    url.push_str(&target.upstream_path);
    if let Some(query) = parts.uri.query().and_then(sanitize_query) {
        url.push('?');
        url.push_str(&query);
    }
    let uri: Uri = url.parse().map_err(|_| {
        GatewayError::client(
            ErrorClass::InvalidRequest,
            "invalid_path",
            "the request path cannot be forwarded as a URL",
        )
    })?;

    // Meter every OpenAI stream from the provider's own count: ask for
    // usage on the client's behalf, and strip it from the response again.
    let body = match (
        provider.kind.api(),
        target.upstream_path.ends_with("/completions"),
    ) {
        (Api::OpenAi, true) => match request_usage_in_stream(&body) {
            Some(rewritten) => {
                ctx.strip_usage = true;
                Bytes::from(rewritten)
            }
            None => body,
        },
        _ => body,
    };
    let mut headers = sanitize_request_headers(&parts.headers);
    inject_provider_key(
        provider.kind.api(),
        &mut headers,
        &target.credential().secret,
    )
    .map_err(|_| {
        GatewayError::internal(
            "bad_provider_key",
            format!("the stored key of provider `{name}` cannot be sent in an HTTP header"),
        )
    })?;
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;

    let sent = Instant::now();
    ctx.overhead_us = elapsed_us(ctx.started, sent);
    let response = match tokio::time::timeout(
        state.config.upstream_response_timeout,
        state.http.request(request),
    )
    .await
    {
        Err(_) => {
            return Err(GatewayError::upstream(
                ErrorClass::GatewayTimeout,
                "upstream_timeout",
                format!("provider `{name}` did not answer in time"),
            ));
        }
        Ok(Err(error)) => {
            let (code, what) = if error.is_connect() {
                ("upstream_unreachable", "could not be reached")
            } else {
                ("upstream_failed", "closed the connection without an answer")
            };
            // The error's chain names host and port at most, never headers.
            tracing::warn!(provider = %name, error = %error, "upstream request failed");
            return Err(GatewayError::upstream(
                ErrorClass::BadGateway,
                code,
                format!("provider `{name}` {what}"),
            ));
        }
        Ok(Ok(response)) => response,
    };
    Ok((response, Instant::now()))
}

pub(crate) async fn respond(
    state: &AppState,
    ctx: &mut RequestContext,
    target: &Target,
    key: &Authenticated,
    upstream: Upstream,
) -> Result<Response<Body>, GatewayError> {
    let Upstream {
        response,
        headers_received,
        admission,
    } = upstream;
    let (mut parts, incoming) = response.into_parts();
    strip_response_headers(&mut parts.headers);
    admission.write_headers(&mut parts.headers);
    let settlement = settlement(state, ctx, target, key, parts.status.as_u16(), admission);

    let body = if parts.status.is_success()
        || parts.status.is_informational()
        || parts.status.is_redirection()
    {
        let event_stream = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        let length = http_body::Body::size_hint(&incoming).exact();
        let meter = Meter::new(target.provider.kind.api(), event_stream, length);
        let stripper = (ctx.strip_usage && event_stream).then(UsageStripper::new);
        Body::new(MeteredBody::new(incoming, meter, stripper, settlement))
    } else {
        if (parts.status == http::StatusCode::UNAUTHORIZED
            || parts.status == http::StatusCode::FORBIDDEN)
            && target.provider.first_rejection_this_hour(state.clock.now())
        {
            // The provider refuses its own key: tell an operator.
            state.alerts.raise(crate::alerts::Raised::KeyRejected {
                provider_id: target.provider.record.id.clone(),
                provider: target.provider.record.name.clone(),
                env: target.provider.record.env.clone(),
                version: target.credential().version,
                status: parts.status.as_u16(),
            });
        }
        // A provider error carries no usage: nothing is billed.
        settlement.settle(Usage::default(), UsageSource::None);
        // Errors are small and may echo credentials: read (bounded), scrub.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let limited = http_body_util::Limited::new(incoming, state.config.max_upstream_error_bytes);
        let raw =
            match tokio::time::timeout(state.config.body_read_timeout, limited.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => Bytes::new(),
            };
        #[expect(
            clippy::disallowed_methods,
            reason = "the client's key is only searched for, to scrub it from the upstream's error body"
        )]
        let client_key = secrecy::ExposeSecret::expose_secret(key.key.secret());
        #[expect(
            clippy::disallowed_methods,
            reason = "the provider key is only searched for, to scrub it from the upstream's error body"
        )]
        let provider_key = target.credential().secret.expose();
        Body::from(state.scrubber.scrub(&raw, &[provider_key, client_key]))
    };

    let mut out = Response::new(body);
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    ctx.overhead_us += elapsed_us(headers_received, Instant::now());
    let out_headers = out.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&ctx.request_id) {
        out_headers.insert("x-keyforge-request-id", value);
    }
    out_headers.insert("x-keyforge-overhead-us", HeaderValue::from(ctx.overhead_us));
    Ok(out)
}

/// The ledger record of this request, still without its usage.
pub(crate) fn settlement(
    state: &AppState,
    ctx: &RequestContext,
    target: &Target,
    key: &Authenticated,
    status: u16,
    admission: Admission,
) -> Settlement {
    let record = LedgerRecord {
        at_ms: i64::try_from(ctx.arrived.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        request_id: ctx.request_id.clone(),
        key_id: key.entry.record.id.clone(),
        env: key.entry.record.env.clone(),
        project: key.entry.record.project.clone(),
        provider: target.provider.record.name.clone(),
        provider_key_version: target.credential().version,
        model: ctx.model.clone(),
        input_tokens: 0,
        cached_input_tokens: 0,
        cache_write_tokens: 0,
        output_tokens: 0,
        reasoning_tokens: 0,
        usage_source: "none",
        cost_nano_usd: 0,
        priced_by: "none",
        status,
        latency_ms: 0,
    };
    Settlement {
        record,
        api: target.provider.kind.api(),
        arrived: ctx.arrived,
        started: ctx.started,
        prices: state.prices.clone(),
        ledger: state.ledger.clone(),
        admission,
        clock: state.clock.clone(),
        alerts: state.alerts.clone(),
        anomaly: state.config.anomaly,
        client: ctx.client,
    }
}

fn elapsed_us(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}
