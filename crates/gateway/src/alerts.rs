//! Alerts: budget thresholds and anomalies, recorded in the store and
//! delivered to webhooks, entirely off the request path.
//!
//! The request path only *raises* an alert: a non-blocking `try_send` into a
//! bounded queue (a full queue drops the alert with a warning rather than
//! slow a request). One dispatcher task records each alert in the store,
//! where a unique `dedup` key makes a budget threshold fire once per period,
//! also across restarts, then delivers it to every webhook that wants it,
//! each delivery in its own task with retries and exponential backoff. A
//! slow or failing webhook therefore never delays requests or other alerts.
//!
//! Webhook bodies are JSON with a Slack-compatible `text` field, so a Slack
//! (or Mattermost, Discord `/slack`) incoming-webhook URL works as is.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use keyforge_control::{BudgetStatus, SpendChange};
use keyforge_store::{AlertDelivery, AlertEvent, Suspension};
use keyforge_types::{AlertId, BudgetId, BudgetLimit, BudgetScope, KeyId, NanoUsd};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

use crate::snapshot::{Snapshot, unix_ms};
use crate::state::AppState;

/// Thresholds (percent of a budget) every alert log records, whatever the
/// webhooks ask for.
pub(crate) const DEFAULT_THRESHOLDS: [u8; 4] = [25, 50, 75, 100];
const QUEUE: usize = 4096;
const ATTEMPTS: u32 = 5;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Something worth telling an operator about.
#[derive(Debug, Clone)]
pub(crate) enum Raised {
    /// A budget's spend reached `percent` of its limit in a period.
    Budget {
        id: BudgetId,
        scope: BudgetScope,
        limit: BudgetLimit,
        period_start_ms: i64,
        percent: u8,
        spent: NanoUsd,
        /// The budget refused a request (it is effectively spent).
        blocked: bool,
    },
    /// A provider rejected one of its keys (401/403).
    KeyRejected {
        provider_id: keyforge_types::ProviderId,
        provider: keyforge_types::ProviderName,
        env: keyforge_types::EnvName,
        version: u32,
        status: u16,
    },
    /// A provider key is older than the rotation policy allows.
    RotationOverdue {
        provider_id: keyforge_types::ProviderId,
        /// "provider `openai` (dev)".
        subject: String,
        version: u32,
        age_days: i64,
        max_age_days: i64,
        /// The command that rotates it, `--env` included.
        rotate: String,
    },
    /// A store row failed its MAC check: it was edited outside KeyForge
    /// and is refused.
    Integrity {
        table: keyforge_store::SealedTable,
        /// The row's id (never a secret).
        id: String,
        /// What the gateway does about it, as fixed text.
        effect: &'static str,
    },
    /// A success reported nothing the price table can price: it was charged
    /// the per-request fallback, which may be far from what the provider
    /// bills (add a `[[price]]` entry for it).
    Unmetered {
        key_id: KeyId,
        provider: keyforge_types::ProviderName,
        /// The model the request named, if any.
        model: Option<String>,
        charged: NanoUsd,
    },
    /// A key behaved unlike itself.
    Anomaly {
        key_id: KeyId,
        /// `spike`, `new_address` or `auth_failures`.
        rule: &'static str,
        /// Fixed text with numbers and ids, never request content.
        detail: String,
        /// Raised once per this key.
        dedup: Option<String>,
        suspended: bool,
    },
}

/// A webhook, decrypted, as the dispatcher needs it.
#[derive(Debug)]
pub(crate) struct Webhook {
    pub(crate) id: AlertId,
    pub(crate) url: SecretString,
    pub(crate) display_url: String,
    pub(crate) thresholds: Vec<u8>,
}

/// The request path's handle: raise alerts without waiting.
#[derive(Debug, Clone)]
pub(crate) struct Alerts {
    tx: mpsc::Sender<Raised>,
    /// Every threshold anyone wants (the defaults and each webhook's),
    /// ascending; republished on every snapshot reload.
    thresholds: Arc<ArcSwap<Vec<u8>>>,
}

impl Alerts {
    pub(crate) fn new() -> (Self, mpsc::Receiver<Raised>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let alerts = Self {
            tx,
            thresholds: Arc::new(ArcSwap::from_pointee(DEFAULT_THRESHOLDS.to_vec())),
        };
        (alerts, rx)
    }

    pub(crate) fn set_webhooks(&self, webhooks: &[Arc<Webhook>]) {
        let mut all = DEFAULT_THRESHOLDS.to_vec();
        all.extend(webhooks.iter().flat_map(|w| w.thresholds.iter().copied()));
        all.sort_unstable();
        all.dedup();
        self.thresholds.store(Arc::new(all));
    }

    pub(crate) fn raise(&self, raised: Raised) {
        if let Err(error) = self.tx.try_send(raised) {
            tracing::warn!(error = %error, "alert queue full or closed: alert dropped");
        }
    }

    /// Raises an alert for each threshold a settlement crossed.
    pub(crate) fn observe(&self, changes: &[SpendChange]) {
        if changes.is_empty() {
            return;
        }
        let thresholds = self.thresholds.load();
        for change in changes {
            for percent in change.crossed(&thresholds) {
                self.raise(Raised::Budget {
                    id: change.id.clone(),
                    scope: change.scope.clone(),
                    limit: change.limit,
                    period_start_ms: change.period_start_ms,
                    percent,
                    spent: NanoUsd(change.after),
                    blocked: false,
                });
            }
        }
    }

    /// A budget refused a request: it is spent for practical purposes, so
    /// its 100 % alert fires (once per period) even if settled spend stops
    /// just short of the limit.
    pub(crate) fn exhausted(&self, status: &BudgetStatus) {
        self.raise(Raised::Budget {
            id: status.id.clone(),
            scope: status.scope.clone(),
            limit: status.limit,
            period_start_ms: unix_ms(status.period_start),
            percent: 100,
            spent: status.spent,
            blocked: true,
        });
    }
}

/// Runs until every `Alerts` handle is gone (the gateway was dropped).
pub(crate) async fn dispatch(state: Weak<AppState>, mut rx: mpsc::Receiver<Raised>) {
    while let Some(raised) = rx.recv().await {
        let Some(state) = state.upgrade() else {
            return;
        };
        let now = state.clock.now();
        if let Raised::Anomaly {
            key_id,
            detail,
            suspended: true,
            ..
        } = &raised
        {
            suspend(&state, key_id, detail, now).await;
        }
        let snapshot = state.snapshot.load_full();
        let (event, percent) = event_of(&raised, now, &snapshot);
        let targets: Vec<Arc<Webhook>> = snapshot
            .webhooks
            .iter()
            .filter(|w| percent.is_none_or(|p| w.thresholds.contains(&p)))
            .cloned()
            .collect();
        let ids: Vec<AlertId> = targets.iter().map(|w| w.id.clone()).collect();
        let alert_id = match state.store.insert_alert(&event, &ids).await {
            Ok(Some(id)) => id,
            // Raised before in this period (or by another instance).
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(error = %error, kind = %event.kind, "could not record an alert");
                continue;
            }
        };
        tracing::warn!(alert_id, kind = %event.kind, message = %event.message, "alert raised");
        let body = Bytes::from(event.payload.clone());
        for webhook in targets {
            tokio::spawn(deliver(
                Arc::downgrade(&state),
                alert_id,
                webhook,
                body.clone(),
            ));
        }
    }
}

/// Records a suspension the request path already enforces (the key's watch
/// flag), so it holds across reloads and restarts.
async fn suspend(state: &AppState, key_id: &KeyId, reason: &str, now: OffsetDateTime) {
    let _guard = state.admin_write.lock().await;
    let already = state
        .snapshot
        .load()
        .key_by_id(key_id)
        .is_some_and(|entry| entry.record.suspended.is_some());
    if already {
        return;
    }
    let suspension = Suspension {
        at: now,
        reason: reason.to_owned(),
    };
    match state
        .store
        .set_key_suspension(key_id, Some(&suspension))
        .await
    {
        Ok(_) => {
            if let Err(error) = state.reload().await {
                tracing::error!(error = %error, key_id = %key_id, "could not reload after suspending a key");
            }
            tracing::warn!(key_id = %key_id, reason, "key suspended");
        }
        Err(error) => {
            tracing::error!(error = %error, key_id = %key_id, "could not record a key's suspension; it holds until restart");
        }
    }
}

/// The week number (Unix weeks) of `time`, for alert deduplication.
pub(crate) fn week_of(time: OffsetDateTime) -> i64 {
    time.unix_timestamp().div_euclid(7 * 86_400)
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// A key as alerts name it: its name, id, environment and project, read
/// from the snapshot (memory, never the database). Text for people
/// (``key `checkout` (key_..., env prod, project `shop`)``) and the JSON
/// object webhook bodies carry (`id`, `name`, `env`, `project`). A key the
/// snapshot no longer holds is named by its id alone.
fn key_naming(snapshot: &Snapshot, key_id: &KeyId) -> (String, serde_json::Value) {
    match snapshot.key_by_id(key_id) {
        Some(entry) => {
            let record = &entry.record;
            let project = record
                .project
                .as_ref()
                .map(|project| format!(", project `{project}`"))
                .unwrap_or_default();
            (
                format!(
                    "key `{}` ({key_id}, env {}{project})",
                    record.name, record.env
                ),
                json!({
                    "id": key_id,
                    "name": record.name,
                    "env": record.env,
                    "project": record.project,
                }),
            )
        }
        None => (format!("key {key_id}"), json!({"id": key_id})),
    }
}

/// The stored event (message, dedup key, webhook body) of an alert, and the
/// budget percentage webhooks filter on (`None`: every webhook). Keys are
/// named from `snapshot`.
fn event_of(raised: &Raised, now: OffsetDateTime, snapshot: &Snapshot) -> (AlertEvent, Option<u8>) {
    let at = rfc3339(now);
    match raised {
        Raised::Budget {
            id,
            scope: budget_scope,
            limit,
            period_start_ms,
            percent,
            spent,
            blocked,
        } => {
            let period_start = from_ms(*period_start_ms);
            let resets_at = limit.period.end_of(period_start).map(rfc3339);
            let (scope_text, key) = match budget_scope {
                BudgetScope::Key(key_id) => {
                    let (text, key) = key_naming(snapshot, key_id);
                    (text, Some(key))
                }
                other => (other.to_string(), None),
            };
            let scope = &scope_text;
            let message = if *blocked {
                format!(
                    "KeyForge: the budget of {scope} ({limit}) is exhausted and refusing requests ({spent} spent){}",
                    resets_at
                        .as_deref()
                        .map(|r| format!("; it resets at {r}"))
                        .unwrap_or_default()
                )
            } else {
                format!("KeyForge: {scope} has used {percent}% of its budget ({spent} of {limit})")
            };
            let payload = json!({
                "text": message,
                "kind": "budget",
                "at": at,
                "percent": percent,
                "blocked": blocked,
                "budget": {
                    "id": id,
                    "scope": budget_scope,
                    "limit_usd": limit.to_string(),
                    "limit_nano_usd": limit.amount.0,
                    "period": limit.period,
                    "period_start": rfc3339(period_start),
                    "resets_at": resets_at,
                },
                "spent_usd": spent.to_string(),
                "spent_nano_usd": spent.0,
            });
            let mut payload = payload;
            if let (Some(key), Some(fields)) = (key, payload.as_object_mut()) {
                fields.insert("key".to_owned(), key);
            }
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "budget".to_owned(),
                dedup: Some(format!("budget/{id}/{period_start_ms}/{percent}")),
                key_id: match budget_scope {
                    BudgetScope::Key(key) => Some(key.clone()),
                    _ => None,
                },
                budget_id: Some(id.clone()),
                message,
                payload: payload.to_string(),
            };
            (event, Some(*percent))
        }
        Raised::KeyRejected {
            provider_id,
            provider,
            env,
            version,
            status,
        } => {
            let message = format!(
                "KeyForge: provider `{provider}` ({env}) rejected its key version {version} with HTTP {status}: the key was revoked or lost its permissions at the provider; rotate it with `keyforge rotate start {provider} --env {env}`"
            );
            let payload = json!({
                "text": message,
                "kind": "provider",
                "at": at,
                "provider": {"id": provider_id, "name": provider, "env": env},
                "key_version": version,
                "status": status,
            });
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "provider".to_owned(),
                // Once an hour per key version.
                dedup: Some(format!(
                    "provider/{provider_id}/v{version}/rejected/{}",
                    unix_ms(now).div_euclid(3_600_000)
                )),
                key_id: None,
                budget_id: None,
                message,
                payload: payload.to_string(),
            };
            (event, None)
        }
        Raised::RotationOverdue {
            provider_id,
            subject,
            version,
            age_days,
            max_age_days,
            rotate,
        } => {
            let message = format!(
                "KeyForge: {subject}: key version {version} is {age_days} days old, past the {max_age_days}-day rotation policy; rotate it with `{rotate}`"
            );
            let payload = json!({
                "text": message,
                "kind": "rotation",
                "at": at,
                "provider_id": provider_id,
                "key_version": version,
                "age_days": age_days,
                "max_age_days": max_age_days,
            });
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "rotation".to_owned(),
                // Once a week per key version.
                dedup: Some(format!(
                    "rotation/{provider_id}/v{version}/{}",
                    week_of(now)
                )),
                key_id: None,
                budget_id: None,
                message,
                payload: payload.to_string(),
            };
            (event, None)
        }
        Raised::Unmetered {
            key_id,
            provider,
            model,
            charged,
        } => {
            let named = model.as_deref().map_or_else(
                || "a request naming no model".to_owned(),
                |model| format!("model `{}`", model.chars().take(100).collect::<String>()),
            );
            let (key_text, key) = key_naming(snapshot, key_id);
            let message = format!(
                "KeyForge: a response of provider `{provider}` for {named} ({key_text}) reported nothing the price table can price; it was charged the unmetered fallback of {charged}. Add a [[price]] entry so such requests are billed at their price"
            );
            let payload = json!({
                "text": message,
                "kind": "unmetered",
                "at": at,
                "key_id": key_id,
                "key": key,
                "provider": provider,
                "model": model,
                "charged_nano_usd": charged.0,
            });
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "unmetered".to_owned(),
                // Once an hour per key, provider and model.
                dedup: Some(format!(
                    "unmetered/{key_id}/{provider}/{}/{}",
                    model.as_deref().unwrap_or(""),
                    unix_ms(now).div_euclid(3_600_000)
                )),
                key_id: Some(key_id.clone()),
                budget_id: None,
                message,
                payload: payload.to_string(),
            };
            (event, None)
        }
        Raised::Integrity { table, id, effect } => {
            let what = table.as_str();
            let message = format!(
                "KeyForge: {what} {id} failed its integrity check (its row in the store was edited outside KeyForge); {effect}"
            );
            let payload = json!({
                "text": message,
                "kind": "integrity",
                "at": at,
                "table": what,
                "id": id,
            });
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "integrity".to_owned(),
                // Once a day per row, also across restarts.
                dedup: Some(format!(
                    "integrity/{what}/{id}/{}",
                    unix_ms(now) / 86_400_000
                )),
                key_id: None,
                budget_id: None,
                message,
                payload: payload.to_string(),
            };
            (event, None)
        }
        Raised::Anomaly {
            key_id,
            rule,
            detail,
            dedup,
            suspended,
        } => {
            let action = if *suspended {
                format!(
                    " The key is suspended until an operator runs `keyforge key resume {key_id}`."
                )
            } else {
                String::new()
            };
            let (key_text, key) = key_naming(snapshot, key_id);
            let message = format!("KeyForge: {key_text}: {detail}.{action}");
            let payload = json!({
                "text": message,
                "kind": "anomaly",
                "at": at,
                "rule": rule,
                "key_id": key_id,
                "key": key,
                "suspended": suspended,
            });
            let event = AlertEvent {
                at_ms: unix_ms(now),
                kind: "anomaly".to_owned(),
                dedup: dedup.clone(),
                key_id: Some(key_id.clone()),
                budget_id: None,
                message,
                payload: payload.to_string(),
            };
            (event, None)
        }
    }
}

/// Delivers one alert to one webhook: up to five attempts, backing off
/// exponentially from `alert_retry_base`; every attempt is recorded.
async fn deliver(state: Weak<AppState>, alert_id: i64, webhook: Arc<Webhook>, body: Bytes) {
    let Some(base) = state.upgrade().map(|s| s.config.alert_retry_base) else {
        return;
    };
    for attempt in 1..=ATTEMPTS {
        let Some(live) = state.upgrade() else {
            return;
        };
        let outcome = post(&live, &webhook, body.clone())
            .await
            .map_err(|failure| failure.reason);
        let (status, last_error) = match &outcome {
            Ok(_) => ("delivered", None),
            Err(_) if attempt == ATTEMPTS => ("failed", outcome.clone().err()),
            Err(_) => ("pending", outcome.clone().err()),
        };
        let delivery = AlertDelivery {
            webhook_id: webhook.id.clone(),
            status: status.to_owned(),
            attempts: attempt,
            last_error,
        };
        if let Err(error) = live
            .store
            .update_alert_delivery(alert_id, &delivery, unix_ms(live.clock.now()))
            .await
        {
            tracing::error!(error = %error, alert_id, "could not record an alert delivery");
        }
        match outcome {
            Ok(_) => return,
            Err(reason) => {
                tracing::warn!(alert_id, webhook = %webhook.display_url, attempt, reason = %reason, "alert delivery failed");
            }
        }
        drop(live);
        if attempt < ATTEMPTS {
            tokio::time::sleep(base.saturating_mul(1 << (attempt - 1))).await;
        }
    }
}

/// Why one POST to a webhook failed: never the URL (it may carry a secret).
#[derive(Debug, Clone)]
pub(crate) struct PostFailure {
    /// The HTTP status the webhook answered, when it answered at all.
    pub(crate) status: Option<u16>,
    /// `HTTP 500`, `timed out`, `could not connect`, ...
    pub(crate) reason: String,
}

impl PostFailure {
    fn without_status(reason: &str) -> Self {
        Self {
            status: None,
            reason: reason.to_owned(),
        }
    }
}

/// Sends the test alert of `keyforge alerts test` to one webhook: the
/// same POST as a real alert, once (no retries, so the operator hears at
/// once), and never recorded in the alert log. `Ok` is the 2xx status.
pub(crate) async fn send_test(
    state: &AppState,
    webhook: &Webhook,
    actor: &str,
) -> Result<u16, PostFailure> {
    let now = state.clock.now();
    let at = now.format(&Rfc3339).unwrap_or_default();
    let message = format!(
        "KeyForge: TEST alert sent by {actor} with `keyforge alerts test` to check this webhook; nothing happened, no action needed"
    );
    let payload = json!({
        "text": message,
        "kind": "test",
        "test": true,
        "at": at,
        "actor": actor,
        "webhook_id": webhook.id,
    });
    post(state, webhook, Bytes::from(payload.to_string())).await
}

/// One POST; `Ok` is the 2xx status. Errors name the status or the kind
/// of failure, never the URL (it may carry a secret).
async fn post(state: &AppState, webhook: &Webhook, body: Bytes) -> Result<u16, PostFailure> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the webhook URL is only parsed into the request's URI"
    )]
    let uri: http::Uri = webhook
        .url
        .expose_secret()
        .parse()
        .map_err(|_| PostFailure::without_status("the stored webhook URL does not parse"))?;
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    request.headers_mut().insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("keyforge-alerts"),
    );
    let response = tokio::time::timeout(DELIVERY_TIMEOUT, state.http.request(request))
        .await
        .map_err(|_| PostFailure::without_status("timed out"))?
        .map_err(|error| {
            PostFailure::without_status(if error.is_connect() {
                "could not connect"
            } else {
                "the connection failed"
            })
        })?;
    let status = response.status();
    // Drain (bounded) so the connection can be reused.
    let _ = tokio::time::timeout(
        DELIVERY_TIMEOUT,
        http_body_util::Limited::new(response.into_body(), 64 * 1024).collect(),
    )
    .await;
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(PostFailure {
            status: Some(status.as_u16()),
            reason: format!("HTTP {}", status.as_u16()),
        })
    }
}

/// `https://hooks.slack.com/services/T0/B0/xyz` -> `https://hooks.slack.com`:
/// what listings and logs show of a webhook.
pub(crate) fn display_url(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_owned())
        .unwrap_or_default();
    format!("{scheme}://{authority}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_urls_keep_only_scheme_and_host() {
        for (url, shown) in [
            (
                "https://hooks.slack.com/services/T000/B000/abcdef",
                "https://hooks.slack.com",
            ),
            (
                "http://127.0.0.1:9000/hook?token=x",
                "http://127.0.0.1:9000",
            ),
            ("https://user:pass@example.com/x", "https://example.com"),
        ] {
            assert_eq!(display_url(&url.parse().unwrap()), shown);
        }
    }
}
