//! `/admin/v1/doctor`: the rotation policy (provider keys older than
//! `rotation_max_age`, 90 days by default, are overdue) and rotations left
//! half done. Overdue keys also raise an alert (once a week per key
//! version), here and from the gateway's hourly policy check.

use std::sync::{Arc, Weak};

use axum::extract::State;
use time::{Duration, OffsetDateTime};

use super::api::{DoctorReport, Finding};
use super::{AdminError, rfc3339};
use crate::alerts::Raised;
use crate::state::AppState;

pub(super) async fn doctor(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<DoctorReport>, AdminError> {
    let findings = check(&state).await?;
    Ok(axum::Json(DoctorReport {
        max_age_days: state.config.rotation_max_age.as_secs() / 86_400,
        findings,
    }))
}

fn max_age(state: &AppState) -> Duration {
    Duration::try_from(state.config.rotation_max_age).unwrap_or(Duration::days(90))
}

/// Runs every check, raising an alert for each overdue provider key.
pub(crate) async fn check(state: &AppState) -> Result<Vec<Finding>, AdminError> {
    let now = state.clock.now();
    let max_age = max_age(state);
    let snapshot = state.snapshot.load_full();
    let mut findings = Vec::new();
    let mut providers: Vec<_> = snapshot.providers.values().cloned().collect();
    providers.sort_by(|a, b| (&a.record.env, &a.record.name).cmp(&(&b.record.env, &b.record.name)));
    for entry in &providers {
        let record = &entry.record;
        let subject = format!("provider `{}` ({})", record.name, record.env);
        let rotate = format!("keyforge rotate start {} --env {}", record.name, record.env);
        let age = now - record.current.created_at;
        if age > max_age {
            findings.push(Finding {
                severity: "warning".into(),
                check: "provider_key_overdue".into(),
                subject: subject.clone(),
                message: format!(
                    "key version {} is {} days old, past the {}-day rotation policy: rotate it with `{rotate}`",
                    record.current.version,
                    age.whole_days(),
                    max_age.whole_days()
                ),
            });
            state.alerts.raise(Raised::RotationOverdue {
                provider_id: record.id.clone(),
                subject: subject.clone(),
                version: record.current.version,
                age_days: age.whole_days(),
                max_age_days: max_age.whole_days(),
                rotate: rotate.clone(),
            });
        }
        let versions = state
            .store
            .list_credentials(&record.id)
            .await
            .map_err(AdminError::store)?;
        if versions.len() == 1 {
            findings.push(Finding {
                severity: "info".into(),
                check: "provider_key_never_rotated".into(),
                subject: subject.clone(),
                message: format!(
                    "its key has never been rotated (in use since {}); `{rotate}` does it with no downtime",
                    rfc3339(record.current.created_at)
                ),
            });
        }
        if let Some(pending) = &record.pending
            && now - pending.created_at > Duration::days(1)
        {
            findings.push(Finding {
                severity: "warning".into(),
                check: "rotation_unfinished".into(),
                subject: subject.clone(),
                message: format!(
                    "key version {} has been pending since {} ({} % of requests): promote it or cancel the rotation",
                    pending.version,
                    rfc3339(pending.created_at),
                    record.rollout_percent
                ),
            });
        }
        if let Some(previous) = &record.previous
            && now - record.current.created_at > Duration::days(7)
        {
            findings.push(Finding {
                severity: "warning".into(),
                check: "rotation_unfinished".into(),
                subject,
                message: format!(
                    "the previous key (version {}) is still valid a week after its successor arrived: finish the rotation (`keyforge rotate finish {} --env {}`) and revoke it at the provider",
                    previous.version, record.name, record.env
                ),
            });
        }
    }
    let mut keys: Vec<_> = snapshot
        .keys
        .values()
        .filter(|entry| entry.record.revoked_at.is_none() && entry.record.expires_at.is_none())
        .collect();
    keys.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    let rotated: std::collections::HashSet<_> = snapshot
        .grace
        .values()
        .map(|(entry, _)| entry.record.id.clone())
        .collect();
    for entry in keys {
        let record = &entry.record;
        let age = now - record.created_at;
        if age > max_age && !rotated.contains(&record.id) {
            findings.push(Finding {
                severity: "warning".into(),
                check: "virtual_key_old".into(),
                subject: format!("key {} ({})", record.id, record.name),
                message: format!(
                    "this key never expires and has not been rotated in {} days: rotate it (`keyforge key rotate {}`) or issue keys with --ttl",
                    age.whole_days(),
                    record.id
                ),
            });
        }
    }
    Ok(findings)
}

/// The gateway's hourly policy check, so overdue keys alert even when
/// nobody runs `keyforge doctor`. Stops when the gateway is dropped.
pub(crate) async fn watch(state: Weak<AppState>) {
    let mut every_hour = tokio::time::interval(std::time::Duration::from_secs(3600));
    every_hour.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every_hour.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        if let Err(error) = check(&state).await {
            tracing::warn!(error = ?error, "the rotation policy check failed");
        }
    }
}

/// `OffsetDateTime` of a week number, for alert deduplication.
pub(crate) fn week_of(time: OffsetDateTime) -> i64 {
    time.unix_timestamp().div_euclid(7 * 86_400)
}
