//! `/admin/v1/status`: tells "my key is broken" from "the provider is having
//! a day". Each provider's recent requests are classified per key version
//! from the ledger: 401/403 (the provider rejects the key), 429 (the
//! provider's rate limit), 5xx or no answer (the provider is failing).

use std::sync::Arc;

use axum::extract::State;
use keyforge_store::UpstreamHealth;
use time::{Duration, OffsetDateTime};

use super::api::{ProviderHealthView, StatusReport, VersionHealthView};
use super::{AdminError, rfc3339};
use crate::snapshot::{ProviderEntry, unix_ms};
use crate::state::AppState;

const WINDOW_MINUTES: i64 = 15;

pub(super) async fn status(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<StatusReport>, AdminError> {
    let now = state.clock.now();
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let health = state
        .store
        .upstream_health(unix_ms(now - Duration::minutes(WINDOW_MINUTES)))
        .await
        .map_err(AdminError::store)?;
    let snapshot = state.snapshot.load();
    let mut providers: Vec<ProviderHealthView> = snapshot
        .providers
        .values()
        .map(|entry| provider_health(entry, &health))
        .collect();
    providers.sort_by(|a, b| (&a.env, &a.name).cmp(&(&b.env, &b.name)));
    Ok(axum::Json(StatusReport {
        window: format!("{WINDOW_MINUTES}m"),
        virtual_keys: snapshot.keys.len(),
        audit_failing: state
            .audit_failing
            .load(std::sync::atomic::Ordering::Relaxed),
        providers,
        ledger: state.ledger.stats(),
        redis: state.cluster.as_ref().map(|cluster| {
            if cluster.counters.reachable() {
                "reachable".to_owned()
            } else {
                "unreachable".to_owned()
            }
        }),
        // Only a shared store has a change number.
        changes: (state.changes.counts().applied >= 0).then(|| {
            let counts = state.changes.counts();
            super::api::ChangeStatus {
                listener: if counts.listening {
                    "listening"
                } else {
                    "disconnected"
                }
                .to_owned(),
                seq: counts.applied,
                notices: counts.notices,
                reloads: counts.reloads,
                reconnects: counts.reconnects,
                found_by_check: counts.found_by_check,
                reload_failures: counts.reload_failures,
                check_interval_secs: state.config.change_check_interval.as_secs(),
            }
        }),
    }))
}

fn stage_of(entry: &ProviderEntry, version: u32) -> &'static str {
    let record = &entry.record;
    if record.current.version == version {
        "current"
    } else if record
        .pending
        .as_ref()
        .is_some_and(|c| c.version == version)
    {
        "pending"
    } else if record
        .previous
        .as_ref()
        .is_some_and(|c| c.version == version)
    {
        "previous"
    } else {
        "retired"
    }
}

fn provider_health(entry: &ProviderEntry, health: &[UpstreamHealth]) -> ProviderHealthView {
    let record = &entry.record;
    let rows: Vec<&UpstreamHealth> = health
        .iter()
        .filter(|row| row.env == record.env.as_str() && row.provider == record.name.as_str())
        .collect();
    let versions: Vec<VersionHealthView> = rows
        .iter()
        .map(|row| VersionHealthView {
            version: row.version,
            stage: stage_of(entry, row.version).to_owned(),
            ok: row.ok,
            rejected: row.rejected,
            rate_limited: row.rate_limited,
            failed: row.failed,
            client_errors: row.client_errors,
            last_status: row.last_status,
            last_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.last_ms) * 1_000_000)
                .map(rfc3339)
                .unwrap_or_default(),
        })
        .collect();
    let (verdict, detail) = verdict(entry, &versions);
    ProviderHealthView {
        id: record.id.clone(),
        name: record.name.clone(),
        env: record.env.clone(),
        kind: entry.kind.as_str().to_owned(),
        verdict: verdict.to_owned(),
        detail,
        versions,
    }
}

/// The provider's state, judged on the versions that serve requests now
/// (current and pending); a key rejection outranks a provider outage, which
/// outranks the provider's rate limiting.
fn verdict(entry: &ProviderEntry, versions: &[VersionHealthView]) -> (&'static str, String) {
    let serving: Vec<&VersionHealthView> = versions
        .iter()
        .filter(|v| v.stage == "current" || v.stage == "pending")
        .collect();
    let total: u64 = serving
        .iter()
        .map(|v| v.ok + v.rejected + v.rate_limited + v.failed + v.client_errors)
        .sum();
    let name = &entry.record.name;
    let env = &entry.record.env;
    if total == 0 {
        return (
            "idle",
            format!("no requests to `{name}` in the last {WINDOW_MINUTES} minutes"),
        );
    }
    if let Some(rejected) = serving.iter().find(|v| v.rejected > 0) {
        return (
            "key_rejected",
            format!(
                "the provider rejected key version {} on {} of its requests (last answer HTTP {}): the key was revoked or lost its permissions at the provider; rotate it with `keyforge rotate start {name} --env {env}`",
                rejected.version, rejected.rejected, rejected.last_status
            ),
        );
    }
    let failed: u64 = serving.iter().map(|v| v.failed).sum();
    if failed > 0 {
        return (
            "provider_failing",
            format!(
                "{failed} of {total} requests failed at the provider (5xx, unreachable or timed out): the provider is having trouble, not the key"
            ),
        );
    }
    let limited: u64 = serving.iter().map(|v| v.rate_limited).sum();
    if limited > 0 {
        return (
            "provider_rate_limited",
            format!(
                "{limited} of {total} requests hit the provider's own rate limit (429): the provider account's limits, not KeyForge's"
            ),
        );
    }
    (
        "healthy",
        format!(
            "{total} requests in the last {WINDOW_MINUTES} minutes, none failed at the provider"
        ),
    )
}
