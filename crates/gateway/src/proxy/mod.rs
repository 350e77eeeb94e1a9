//! The request pipeline. [`pipeline`] reads as the steps of a request's way
//! through the gateway; each step is a module of its own. Cross-cutting
//! concerns (request id, tracing span, panic catching, error rendering) live
//! in [`handle`], around the pipeline, never between its steps.

mod admit;
mod authenticate;
mod authorize;
mod body;
mod canonical;
mod forward;
mod meter;
mod route;
mod watch;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::FutureExt;
use keyforge_providers::{Api, ErrorClass};
use keyforge_types::{KeyId, ProviderName, random_base62};
use tracing::Instrument;

use crate::error::{Fault, GatewayError};
use crate::state::AppState;

/// Per-request state, filled in as the pipeline learns things. It is what
/// the completion log line and error rendering read.
#[derive(Debug)]
pub(crate) struct RequestContext {
    pub(crate) request_id: String,
    pub(crate) started: Instant,
    /// Wall-clock arrival time (from the gateway's clock): the ledger's
    /// timestamp and the date prices are looked up for.
    pub(crate) arrived: time::OffsetDateTime,
    /// The dialect errors are rendered in: guessed from the route at first,
    /// then the provider's.
    pub(crate) api: Api,
    pub(crate) key_id: Option<KeyId>,
    /// The authenticated key, once known (for anomaly detection on refusals).
    pub(crate) key: Option<Arc<crate::snapshot::KeyEntry>>,
    /// The TCP peer's address.
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) provider: Option<ProviderName>,
    pub(crate) model: Option<String>,
    /// Time spent in the gateway itself, excluding the wait for the upstream.
    pub(crate) overhead_us: u64,
    /// The gateway asked for stream usage the client did not ask for, and
    /// strips it from the response.
    pub(crate) strip_usage: bool,
    /// The request can cost money (a POST other than a token count): a
    /// success that reports nothing priceable is charged the unmetered
    /// fallback.
    pub(crate) billable: bool,
}

/// Lets one `ledger_backlog` refusal line through a second.
static BACKLOG_REFUSALS_LOGGED: std::sync::LazyLock<crate::listen::WarnLimiter> =
    std::sync::LazyLock::new(|| crate::listen::WarnLimiter::new(std::time::Duration::from_secs(1)));

/// Entry point of every proxied request.
pub(crate) async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let mut ctx = RequestContext {
        request_id: format!("req_{}", random_base62(16)),
        started: Instant::now(),
        arrived: state.clock.now(),
        api: Api::guess(request.uri().path(), request.headers()),
        key_id: None,
        key: None,
        client: request
            .extensions()
            .get::<crate::ClientAddr>()
            .map(|addr| addr.0),
        provider: None,
        model: None,
        overhead_us: 0,
        strip_usage: false,
        billable: false,
    };
    // A debug span: at the default info level it costs nothing per request
    // (an info span's fields are formatted eagerly, about 2 % of the
    // gateway's CPU); the info-level lines below carry the request id.
    let span = tracing::debug_span!("request", request_id = %ctx.request_id, method = %request.method(), path = %route::loggable_path(request.uri().path()));
    async move {
        let outcome = AssertUnwindSafe(pipeline(&state, &mut ctx, request)).catch_unwind().await;
        let result = outcome.unwrap_or_else(|_| Err(GatewayError::internal("internal_error", "KeyForge hit an internal error; the request was not forwarded")));
        match result {
            Ok(response) => {
                // Debug, not info: one line per request is an access log, which
                // costs about a sixth of throughput; refusals and upstream
                // failures below are logged at info and warn.
                tracing::debug!(status = response.status().as_u16(), key_id = ?ctx.key_id, provider = ?ctx.provider, model = ?ctx.model, overhead_us = ctx.overhead_us, "request forwarded");
                response
            }
            Err(error) => {
                state.metrics.refused(error.code);
                // Refusals of a known key (revoked, expired, suspended, out
                // of scope) count towards its auth-failure burst.
                if let Some(entry) = &ctx.key
                    && matches!(error.class, ErrorClass::Authentication | ErrorClass::PermissionDenied)
                {
                    let now = state.clock.now();
                    if let Some(finding) = entry.watch.on_refused(crate::snapshot::unix_ms(now), &state.config.anomaly) {
                        watch::report(&state.alerts, entry, [finding], now);
                    }
                }
                match error.fault {
                    // A store that cannot keep up refuses every budgeted
                    // request: one line a second with the count, not one
                    // per request (the ledger writer logs the backlog).
                    Fault::Client if error.code == "ledger_backlog" => {
                        if let Some(held_back) = BACKLOG_REFUSALS_LOGGED.allow() {
                            tracing::warn!(request_id = %ctx.request_id, code = error.code, refused_since_last_line = held_back + 1, "requests of keys with budgets refused: the ledger is not keeping up");
                        }
                    }
                    Fault::Client => tracing::info!(request_id = %ctx.request_id, code = error.code, key_id = ?ctx.key_id, "request refused"),
                    Fault::Upstream => tracing::warn!(request_id = %ctx.request_id, code = error.code, key_id = ?ctx.key_id, provider = ?ctx.provider, "upstream failed"),
                    Fault::Internal => tracing::error!(request_id = %ctx.request_id, code = error.code, key_id = ?ctx.key_id, "internal error"),
                }
                error.into_response(ctx.api, &ctx.request_id)
            }
        }
    }
    .instrument(span)
    .await
}

/// A request's way through the gateway (see ARCHITECTURE.md).
async fn pipeline(
    state: &Arc<AppState>,
    ctx: &mut RequestContext,
    request: Request,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let route = route::resolve(&parts.uri)?;
    let snapshot = state.snapshot.load_full();
    let key = authenticate::authenticate(state, &snapshot, &parts, ctx)?;
    authorize::key_is_usable(&key, state.clock.now())?;
    let body = body::read(&state.config, &parts, body).await?;
    ctx.billable = admit::is_billable(&parts.method, &route.upstream_path);
    let target = authorize::target(
        &snapshot,
        &key,
        &route,
        &parts,
        &body,
        state.config.max_request_body_bytes,
        ctx,
    )?;
    let admission = admit::admit(state, ctx, &key, &target).await?;
    let findings = key.entry.watch.on_request(
        crate::snapshot::unix_ms(ctx.arrived),
        ctx.client,
        &state.config.anomaly,
    );
    watch::report(&state.alerts, &key.entry, findings, ctx.arrived);
    let upstream = forward::send(state, ctx, &target, &key, parts, body, admission).await?;
    forward::respond(state, ctx, &target, &key, upstream).await
}
