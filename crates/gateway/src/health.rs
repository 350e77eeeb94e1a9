//! `/readyz` and `/metrics`: what an orchestrator and a Prometheus server
//! ask the gateway. `/healthz` (liveness) is a constant answer in the
//! router.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// How long `/readyz` waits for the store before calling it unreachable.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// 200 when the store answers (and can be written), the snapshot is
/// loaded and the ledger queue has room; else 503 naming the checks that
/// failed, so a load balancer stops sending traffic a gateway cannot bill.
pub(crate) async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let mut failed: Vec<serde_json::Value> = Vec::new();
    // The ping runs in a task of its own: a timed-out check must not
    // cancel it half-way through its transaction.
    let store = state.store.clone();
    let ping = tokio::spawn(async move { store.ping().await });
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, ping).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Err(_)) => failed.push(serde_json::json!({"check": "store", "reason": "the store check failed"})),
        Ok(Ok(Err(error))) => failed.push(serde_json::json!({
            "check": "store",
            "reason": format!("the store is unreachable: {error}"),
        })),
        Err(_) => failed.push(serde_json::json!({
            "check": "store",
            "reason": format!("the store did not answer within {} s (locked or down)", STORE_CHECK_TIMEOUT.as_secs()),
        })),
    }
    // The snapshot check holds by construction: `Gateway::new` loads the
    // snapshot of keys and providers before anything is served, and a
    // failed rebuild keeps the previous one. It is listed so the answer
    // names every check.
    let ledger = state.ledger.stats();
    if ledger.queue_depth >= ledger.queue_capacity || ledger.waiting_for_room > 0 {
        failed.push(serde_json::json!({
            "check": "ledger_queue",
            "reason": format!("the ledger queue is full ({} of {} queued, {} waiting for room): the store is not keeping up", ledger.queue_depth, ledger.queue_capacity, ledger.waiting_for_room),
        }));
    }
    if failed.is_empty() {
        (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ready", "checks": ["store", "snapshot", "ledger_queue"]})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"status": "not_ready", "failed": failed})),
        )
            .into_response()
    }
}

/// `/metrics` on the main listener: the metrics token is required
/// (compared in constant time); with no token configured nobody gets them
/// there.
pub(crate) async fn metrics_with_token(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    let allowed = match (&state.metrics_token, presented) {
        (Some(expected), Some(token)) => {
            #[expect(
                clippy::disallowed_methods,
                reason = "the metrics token is compared in constant time and goes nowhere else"
            )]
            let expected = expected.expose_secret().as_bytes();
            bool::from(token.as_bytes().ct_eq(expected))
        }
        _ => false,
    };
    if !allowed {
        let message = if state.metrics_token.is_none() {
            "metrics are not served on this listener: set a metrics token (KEYFORGE_METRICS_TOKEN or the data directory's metrics.token) or use --metrics-listen\n"
        } else {
            "/metrics needs `Authorization: Bearer <metrics token>`\n"
        };
        let mut response = (StatusCode::UNAUTHORIZED, message).into_response();
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    metrics(State(state)).await
}

/// The exposition text (OpenMetrics-compatible Prometheus text format).
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot.load_full();
    let now = state.clock.now();
    let mut budgets: Vec<_> = snapshot
        .budgets
        .values()
        .map(|cell| cell.status(now))
        .collect();
    budgets.sort_by(|a, b| a.id.cmp(&b.id));
    let scrape = crate::metrics::Scrape {
        metrics: &state.metrics,
        ledger: state.ledger.stats(),
        budgets,
        now_ms: crate::ledger::system_unix_ms(),
    };
    match scrape.encode() {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
