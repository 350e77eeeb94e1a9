//! Forwarding: swap the client's credentials for the provider's, send, and
//! stream the answer back as it arrives. The upstream body is handed to the
//! client's response frame by frame; dropping it (the client went away)
//! closes the upstream connection and so cancels the generation.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use keyforge_providers::{
    Api, ErrorClass, Meter, Usage, UsageSource, UsageStripper, content_codings,
    decode_request_body, inject_provider_key, insert_include_usage, sanitize_query,
    sanitize_request_headers, strip_response_headers,
};
use keyforge_store::LedgerRecord;
use tokio::sync::oneshot;

use super::RequestContext;
use super::admit::Admission;
use super::authenticate::Authenticated;
use super::authorize::Target;
use super::meter::{KeyGuard, MeteredBody, Outcome, Pending, Settlement, UpstreamBody};
use crate::error::GatewayError;
use crate::state::AppState;

pub(crate) struct Upstream {
    response: http::Response<Incoming>,
    headers_received: Instant,
    settlement: Settlement,
}

/// Sends the request upstream and waits for the response's headers.
///
/// The exchange runs in a task of its own, so it survives the client: if
/// the client goes away before the provider answers, the task keeps reading
/// the response (for at most `cancelled_drain_timeout`) and bills what the
/// provider reports, with the outcome `client_cancelled`. A request the
/// provider failed to answer (unreachable, timed out) is recorded too.
pub(crate) async fn send(
    state: &AppState,
    ctx: &mut RequestContext,
    target: &Target,
    key: &Authenticated,
    parts: Parts,
    body: Bytes,
    admission: Admission,
) -> Result<Upstream, GatewayError> {
    let request = build_request(ctx, target, parts, body)?;
    let mut settlement = settlement(state, ctx, target, key, admission);
    let http = state.http.clone();
    let response_timeout = state.config.upstream_response_timeout;
    let drain_timeout = state.config.spend.cancelled_drain_timeout;
    let name = target.provider.record.name.clone();
    let (answer, answered) = oneshot::channel::<Result<Upstream, GatewayError>>();
    let metrics = state.metrics.clone();
    ctx.overhead_us = elapsed_us(ctx.started, Instant::now());
    tokio::spawn(async move {
        let sent = Instant::now();
        match exchange(&http, request, response_timeout, &name).await {
            Ok(response) => {
                let headers_received = Instant::now();
                metrics.observe_upstream_latency(
                    name.as_str(),
                    headers_received.duration_since(sent).as_secs_f64(),
                );
                let upstream = Upstream {
                    response,
                    headers_received,
                    settlement,
                };
                if let Err(Ok(upstream)) = answer.send(Ok(upstream)) {
                    // The client went away while the provider worked.
                    upstream.drain(drain_timeout).await;
                }
            }
            Err((error, outcome)) => {
                settlement.set_status(error.class.status().as_u16());
                settlement.settle(Usage::default(), UsageSource::None, outcome);
                let _ = answer.send(Err(error));
            }
        }
    });
    answered.await.unwrap_or_else(|_| {
        Err(GatewayError::internal(
            "internal_error",
            "KeyForge lost track of the upstream request",
        ))
    })
}

/// The request as it goes upstream: the provider's URL, the client's body
/// (asking OpenAI streams for usage), the provider's credential.
fn build_request(
    ctx: &mut RequestContext,
    target: &Target,
    parts: Parts,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, GatewayError> {
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
    // A compressed body is forwarded as received: it cannot be edited.
    let body = match (
        provider.kind.api(),
        target.upstream_path.ends_with("/completions") && !target.encoded,
    ) {
        (Api::OpenAi, true) => match insert_include_usage(&body) {
            Some(rewritten) => {
                ctx.strip_usage = true;
                Bytes::from(rewritten)
            }
            None => body,
        },
        _ => body,
    };
    let mut headers = sanitize_request_headers(&parts.headers);
    // Plain bodies only: the meter and the key floor read what passes, and
    // without this header any coding is acceptable (RFC 9110 §12.5.3).
    headers.insert(
        http::header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
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
    Ok(request)
}

/// One round trip to the provider, up to its response headers. On failure,
/// also says whether the request may have reached the provider.
async fn exchange(
    http: &crate::upstream::UpstreamClient,
    request: http::Request<Full<Bytes>>,
    response_timeout: std::time::Duration,
    name: &keyforge_types::ProviderName,
) -> Result<http::Response<Incoming>, (GatewayError, Outcome)> {
    match tokio::time::timeout(response_timeout, http.request(request)).await {
        Err(_) => Err((
            GatewayError::upstream(
                ErrorClass::GatewayTimeout,
                "upstream_timeout",
                format!("provider `{name}` did not answer in time"),
            ),
            Outcome::UpstreamFailed,
        )),
        Ok(Err(error)) => {
            let (code, what, outcome) = if error.is_connect() {
                (
                    "upstream_unreachable",
                    "could not be reached",
                    Outcome::Unreached,
                )
            } else {
                (
                    "upstream_failed",
                    "closed the connection without an answer",
                    Outcome::UpstreamFailed,
                )
            };
            // The error's chain names host and port at most, never headers.
            tracing::warn!(provider = %name, error = %error, "upstream request failed");
            Err((
                GatewayError::upstream(
                    ErrorClass::BadGateway,
                    code,
                    format!("provider `{name}` {what}"),
                ),
                outcome,
            ))
        }
        Ok(Ok(response)) => Ok(response),
    }
}

impl Upstream {
    /// The client is gone: read the response to its end (bounded in time),
    /// metering it, and bill what the provider reports.
    async fn drain(self, limit: std::time::Duration) {
        let Upstream {
            response,
            mut settlement,
            ..
        } = self;
        let (parts, mut body) = response.into_parts();
        settlement.set_status(parts.status.as_u16());
        let Some(api) = settlement.api() else {
            return;
        };
        if !parts.status.is_success() {
            settlement.settle(Usage::default(), UsageSource::None, Outcome::UpstreamError);
            return;
        }
        let mut meter = Meter::new(api, is_event_stream(&parts.headers), None)
            .with_input_estimate(settlement.input_estimate());
        let read_all = async {
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            meter.feed(data);
                        }
                    }
                    Err(_) => return false,
                }
            }
            true
        };
        let complete = tokio::time::timeout(limit, read_all).await.unwrap_or(false);
        let (usage, source) = meter.finish(complete);
        settlement.settle(usage, source, Outcome::ClientCancelled);
    }
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"))
}

pub(crate) async fn respond(
    state: &Arc<AppState>,
    ctx: &mut RequestContext,
    target: &Target,
    key: &Authenticated,
    upstream: Upstream,
) -> Result<Response<Body>, GatewayError> {
    let Upstream {
        response,
        headers_received,
        mut settlement,
    } = upstream;
    let (mut parts, incoming) = response.into_parts();
    strip_response_headers(&mut parts.headers);
    // The floor: the injected provider key, in any encoding, leaves in no
    // header (a 401's `www-authenticate`, an `x-…` echo).
    let floor = target.credential().floor.clone();
    floor.scrub_headers(&mut parts.headers);
    settlement.write_rate_headers(&mut parts.headers);
    settlement.set_status(parts.status.as_u16());

    let body = if parts.status.is_success()
        || parts.status.is_informational()
        || parts.status.is_redirection()
    {
        let event_stream = is_event_stream(&parts.headers);
        let length = http_body::Body::size_hint(&incoming).exact();
        let meter = Meter::new(target.provider.kind.api(), event_stream, length)
            .with_input_estimate(settlement.input_estimate());
        let stripper = (ctx.strip_usage && event_stream).then(UsageStripper::new);
        let guard = KeyGuard::new(state.clone(), key.entry.record.id.clone());
        // Asked for `identity`, an upstream may compress anyway: such a
        // body is decoded whole (bounded) so the floor and the meter read
        // plain bytes, and reaches the client decoded.
        let incoming = if let Some(encoding) = content_codings(&parts.headers) {
            parts.headers.remove(http::header::CONTENT_ENCODING);
            let max = state.config.max_request_body_bytes;
            let limited = http_body_util::Limited::new(incoming, max);
            let collected =
                tokio::time::timeout(state.config.upstream_response_timeout, limited.collect())
                    .await;
            let decoded = match collected {
                Ok(Ok(collected)) => {
                    decode_request_body(Some(&encoding), &collected.to_bytes(), max)
                        .ok()
                        .map(|decoded| Bytes::copy_from_slice(&decoded))
                }
                _ => None,
            };
            match decoded {
                Some(decoded) => UpstreamBody::Decoded(Some(decoded)),
                None => {
                    settlement.settle(Usage::default(), UsageSource::None, Outcome::UpstreamCut);
                    return Err(GatewayError::upstream(
                        ErrorClass::BadGateway,
                        "upstream_bad_encoding",
                        format!(
                            "provider `{}` sent a compressed response KeyForge could not decode",
                            target.provider.record.name
                        ),
                    ));
                }
            }
        } else {
            UpstreamBody::Streaming(incoming)
        };
        // A replaced key changes the body's length: the length is left to
        // the framing.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Body::new(MeteredBody::new(
            incoming,
            meter,
            stripper,
            floor.stream(),
            settlement,
            guard,
        ))
    } else {
        let rejected = parts.status == http::StatusCode::UNAUTHORIZED
            || parts.status == http::StatusCode::FORBIDDEN;
        if rejected {
            // The provider refused KeyForge's provider key, not the
            // client's `kf_` key: an app can tell the two apart.
            parts.headers.insert(
                "x-keyforge-error",
                HeaderValue::from_static("upstream_key_rejected"),
            );
            state.metrics.refused("upstream_key_rejected");
        }
        if rejected && target.provider.first_rejection_this_hour(state.clock.now()) {
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
        settlement.settle(Usage::default(), UsageSource::None, Outcome::UpstreamError);
        // Errors are small and may echo credentials: read (bounded), scrub.
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let limited = http_body_util::Limited::new(incoming, state.config.max_upstream_error_bytes);
        let raw =
            match tokio::time::timeout(state.config.body_read_timeout, limited.collect()).await {
                Ok(Ok(collected)) => collected.to_bytes(),
                _ => Bytes::new(),
            };
        // Scrubbed decompressed: a compressed echo would pass any search.
        let encoding = content_codings(&parts.headers);
        parts.headers.remove(http::header::CONTENT_ENCODING);
        let raw = match decode_request_body(
            encoding.as_deref(),
            &raw,
            state.config.max_upstream_error_bytes,
        ) {
            Ok(decoded) => floor
                .scrub(&decoded)
                .map_or_else(|| Bytes::copy_from_slice(&decoded), Bytes::from),
            Err(_) => Bytes::from_static(
                b"{\"error\":{\"message\":\"the provider's error body could not be decoded; KeyForge withheld it\"}}",
            ),
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
    state
        .metrics
        .observe_overhead(ctx.overhead_us as f64 / 1_000_000.0);
    Ok(out)
}

/// The ledger record of this request, still without its status and usage.
pub(crate) fn settlement(
    state: &AppState,
    ctx: &RequestContext,
    target: &Target,
    key: &Authenticated,
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
        status: 0,
        latency_ms: 0,
        outcome: "ok",
    };
    let input_estimate = admission.input_estimate();
    let unmetered_cost = admission.unmetered_cost(
        &target.upstream_path,
        state.config.spend.unmetered_request_cost,
    );
    Settlement::new(Pending {
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
        billable: ctx.billable,
        input_estimate,
        input: target.facts.input,
        units: target.facts.units,
        limits: state.limits.clone(),
        unmetered_cost,
        unpriced_fallback: state.config.spend.unmetered_request_cost,
        metrics: state.metrics.clone(),
    })
}

fn elapsed_us(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros()).unwrap_or(u64::MAX)
}
