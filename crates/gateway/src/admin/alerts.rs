//! `/admin/v1/alerts`: alert webhooks (their URLs sealed like provider
//! keys) and the log of alerts raised and delivered.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use http::StatusCode;
use keyforge_store::AlertWebhookRecord;
use keyforge_types::AlertId;

use super::api::{
    AlertDeliveryView, AlertLog, AlertView, AlertWebhookList, AlertWebhookView, CreateAlertRequest,
    TestAlertOutcome, TestAlertReport, TestAlertRequest,
};
use super::{AdminError, parse_json, reload, rfc3339};
use crate::alerts::{DEFAULT_THRESHOLDS, display_url};
use crate::snapshot::webhook_aad;
use crate::state::AppState;

fn view(record: &AlertWebhookRecord) -> AlertWebhookView {
    AlertWebhookView {
        id: record.id.clone(),
        url: record.display_url.clone(),
        thresholds: record.thresholds.clone(),
        created_at: rfc3339(record.created_at),
    }
}

/// A webhook URL must be absolute http(s) with a host. The URL itself is
/// never echoed in an error: it may carry a secret.
fn validate_url(text: &str) -> Result<http::Uri, AdminError> {
    let bad =
        || AdminError::bad_request("the webhook URL must be an absolute http:// or https:// URL");
    let uri: http::Uri = text.trim().parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(bad()),
    }
}

fn validate_thresholds(thresholds: Option<Vec<u8>>) -> Result<Vec<u8>, AdminError> {
    let mut thresholds = thresholds.unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec());
    if thresholds.is_empty() || thresholds.iter().any(|t| !(1..=100).contains(t)) {
        return Err(AdminError::bad_request(
            "thresholds are percentages from 1 to 100, e.g. 25,50,75,100",
        ));
    }
    thresholds.sort_unstable();
    thresholds.dedup();
    Ok(thresholds)
}

pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<AlertWebhookView>), AdminError> {
    let request: CreateAlertRequest = parse_json(&body)?;
    let uri = validate_url(&request.url)?;
    let thresholds = validate_thresholds(request.thresholds)?;
    let id = AlertId::generate();
    let record = AlertWebhookRecord {
        sealed_url: state
            .sealer
            .seal(uri.to_string().as_bytes(), &webhook_aad(id.as_str())),
        display_url: display_url(&uri),
        id,
        thresholds,
        created_at: state.clock.now(),
    };
    let _guard = state.admin_write.lock().await;
    super::audit(&state, "alert_webhook.add", serde_json::json!({"id": record.id, "webhook": record.display_url, "thresholds": record.thresholds})).await?;
    state
        .store
        .insert_alert_webhook(&record)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(alert_id = %record.id, webhook = %record.display_url, "alert webhook added");
    Ok((StatusCode::CREATED, axum::Json(view(&record))))
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<AlertWebhookList>, AdminError> {
    let webhooks = state
        .store
        .list_alert_webhooks()
        .await
        .map_err(AdminError::store)?;
    Ok(axum::Json(AlertWebhookList {
        webhooks: webhooks.iter().map(view).collect(),
    }))
}

pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let id = AlertId::parse(&id).map_err(|error| AdminError::bad_request(error.to_string()))?;
    let _guard = state.admin_write.lock().await;
    super::audit(
        &state,
        "alert_webhook.remove",
        serde_json::json!({"id": id}),
    )
    .await?;
    if !state
        .store
        .delete_alert_webhook(&id)
        .await
        .map_err(AdminError::store)?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "alert_not_found",
            format!("no alert webhook with id {id}"),
        ));
    }
    reload(&state).await?;
    tracing::info!(alert_id = %id, "alert webhook removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a test alert, naming the admin who asked, to one webhook or to
/// every one, through the same POST as real alerts, and answers how each
/// went. Audited before anything is sent; an empty body means "every
/// webhook".
pub(super) async fn test(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<TestAlertReport>, AdminError> {
    let request: TestAlertRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TestAlertRequest::default()
    } else {
        parse_json(&body)?
    };
    let actor = super::current_actor()?;
    let snapshot = state.snapshot.load_full();
    let targets: Vec<_> = snapshot
        .webhooks
        .iter()
        .filter(|webhook| {
            request
                .webhook_id
                .as_ref()
                .is_none_or(|id| *id == webhook.id)
        })
        .cloned()
        .collect();
    if let (Some(id), true) = (&request.webhook_id, targets.is_empty()) {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "alert_not_found",
            format!("no alert webhook with id {id} (see `keyforge alerts list`)"),
        ));
    }
    let ids: Vec<&AlertId> = targets.iter().map(|webhook| &webhook.id).collect();
    super::audit(
        &state,
        "alert_webhook.test",
        serde_json::json!({"webhooks": ids}),
    )
    .await?;
    // One after the other: a handful of webhooks, each bounded by the
    // delivery timeout, and the answer lists them in order.
    let mut outcomes = Vec::with_capacity(targets.len());
    for webhook in &targets {
        let outcome = crate::alerts::send_test(&state, webhook, &actor).await;
        tracing::info!(alert_id = %webhook.id, webhook = %webhook.display_url, delivered = outcome.is_ok(), "test alert sent");
        outcomes.push(match outcome {
            Ok(status) => TestAlertOutcome {
                webhook_id: webhook.id.clone(),
                url: webhook.display_url.clone(),
                delivered: true,
                status: Some(status),
                error: None,
            },
            Err(failure) => TestAlertOutcome {
                webhook_id: webhook.id.clone(),
                url: webhook.display_url.clone(),
                delivered: false,
                status: failure.status,
                error: Some(failure.reason),
            },
        });
    }
    Ok(axum::Json(TestAlertReport { outcomes }))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogParams {
    limit: Option<u32>,
}

pub(super) async fn log(
    State(state): State<Arc<AppState>>,
    params: Result<Query<LogParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AlertLog>, AdminError> {
    let Query(params) = params.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let limit = params.limit.unwrap_or(50).clamp(1, 1000);
    let alerts = state
        .store
        .list_alerts(limit)
        .await
        .map_err(AdminError::store)?;
    Ok(axum::Json(AlertLog {
        alerts: alerts
            .into_iter()
            .map(|alert| AlertView {
                id: alert.id,
                at: rfc3339(
                    time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(alert.event.at_ms) * 1_000_000,
                    )
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
                ),
                kind: alert.event.kind,
                message: alert.event.message,
                key_id: alert.event.key_id,
                budget_id: alert.event.budget_id,
                deliveries: alert
                    .deliveries
                    .into_iter()
                    .map(|d| AlertDeliveryView {
                        webhook_id: d.webhook_id,
                        status: d.status,
                        attempts: d.attempts,
                        last_error: d.last_error,
                    })
                    .collect(),
            })
            .collect(),
    }))
}
