//! `/admin/v1/doctor`: the rotation policy (provider keys older than
//! `rotation_max_age`, 90 days by default, are overdue) and rotations left
//! half done. Overdue keys also raise an alert (once a week per key
//! version), here and from the gateway's hourly policy check.
//!
//! It also checks what a new operator gets wrong, each finding with a
//! one-line fix: a master key file readable by others, the listener
//! beyond loopback over plain HTTP, no backup ever taken, owners whose
//! token was never rotated within `rotation_max_age`, and (only when
//! asked, `check_providers`, since it calls each provider) provider keys
//! the provider refuses.

use std::sync::{Arc, Weak};

use axum::extract::State;
use time::Duration;

use super::api::{DoctorReport, Finding};
use super::{AdminError, rfc3339};
use crate::alerts::Raised;
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DoctorParams {
    /// Also call each provider with its current key (a models listing).
    #[serde(default)]
    check_providers: bool,
}

pub(super) async fn doctor(
    State(state): State<Arc<AppState>>,
    params: Result<axum::extract::Query<DoctorParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<DoctorReport>, AdminError> {
    let axum::extract::Query(params) = params.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let mut findings = check(&state).await?;
    findings.extend(setup_findings(&state));
    if params.check_providers {
        findings.extend(provider_key_findings(&state).await);
    }
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

fn finding(severity: &str, check: &str, subject: String, message: String) -> Finding {
    Finding {
        severity: severity.into(),
        check: check.into(),
        subject,
        message,
    }
}

/// What a new operator gets wrong in the setting the gateway was started
/// in (`Config::deployment`) and among its admins.
fn setup_findings(state: &AppState) -> Vec<Finding> {
    let deployment = &state.config.deployment;
    let mut findings = Vec::new();
    if let Some(path) = &deployment.master_key_file {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => findings.push(finding(
                "warning",
                "master_key_file_mode",
                format!("master key {}", path.display()),
                format!(
                    "mode {:04o} lets other users read it (and with it every provider key): `chmod 600 {}`",
                    meta.permissions().mode() & 0o777,
                    path.display()
                ),
            )),
            Ok(_) => {}
            Err(error) => findings.push(finding(
                "warning",
                "master_key_file_mode",
                format!("master key {}", path.display()),
                format!(
                    "cannot be read ({error}); the next start fails without it: restore it from its backup"
                ),
            )),
        }
    }
    if let Some(listen) = deployment.listen
        && !listen.ip().is_loopback()
        && !deployment.tls
        && state.config.trusted_proxies.networks.is_empty()
    {
        findings.push(finding(
            "warning",
            "listener_exposed",
            format!("listener on {}", listen.ip()),
            "beyond loopback over plain HTTP, so keys cross the network in clear: serve TLS with `--tls-cert FILE --tls-key FILE`, or listen on 127.0.0.1 behind a TLS terminator (`[server] trusted_proxies`)".to_owned(),
        ));
    }
    if deployment.embedded_store
        && let Some(data_dir) = &deployment.data_dir
    {
        match super::backup::last_backup(data_dir) {
            None => findings.push(finding(
                "warning",
                "backup_never_taken",
                format!("data directory {}", data_dir.display()),
                "no backup has been taken: `keyforge backup --to /var/backups/keyforge/keyforge-$(date +%F).db`, and keep a copy of the master key apart".to_owned(),
            )),
            Some(last) => findings.push(finding(
                "info",
                "backup_last",
                format!("data directory {}", data_dir.display()),
                format!("last backup {} to {}", last.at, last.to),
            )),
        }
    }
    let now = state.clock.now();
    let max_age = max_age(state);
    let snapshot = state.snapshot.load();
    let mut owners: Vec<_> = snapshot
        .admins
        .values()
        .filter(|admin| {
            admin.revoked_at.is_none() && admin.role == keyforge_types::AdminRole::Owner
        })
        .collect();
    owners.sort_by(|a, b| a.name.cmp(&b.name));
    for admin in owners {
        let since = admin.rotated_at.unwrap_or(admin.created_at);
        if now - since > max_age {
            let never = if admin.rotated_at.is_none() {
                "has never been rotated"
            } else {
                "was last rotated"
            };
            findings.push(finding(
                "warning",
                "owner_token_old",
                format!("owner `{}`", admin.name),
                format!(
                    "its token {never} since {} ({} days, past the {}-day policy): `keyforge admin rotate-token {}`",
                    rfc3339(since),
                    (now - since).whole_days(),
                    max_age.whole_days(),
                    admin.name
                ),
            ));
        }
    }
    findings
}

/// Calls each provider with its current key (the check `provider add`
/// makes); a key the provider refuses, or a provider that cannot be
/// reached, is a finding.
async fn provider_key_findings(state: &AppState) -> Vec<Finding> {
    let snapshot = state.snapshot.load_full();
    let mut providers: Vec<_> = snapshot.providers.values().cloned().collect();
    providers.sort_by(|a, b| (&a.record.env, &a.record.name).cmp(&(&b.record.env, &b.record.name)));
    let mut findings = Vec::new();
    for entry in providers {
        let record = &entry.record;
        if let Err(error) = super::rotation::check_key(
            state,
            entry.kind.api(),
            &entry.base_url,
            &entry.current.secret,
        )
        .await
        {
            findings.push(finding(
                "warning",
                "provider_key_check_failed",
                format!("provider `{}` ({})", record.name, record.env),
                format!(
                    "key version {}: {}; fix the key with `keyforge rotate start {} --env {}` (or the base URL with `keyforge provider update`)",
                    entry.current.version,
                    error.message.replace("the new key", "its key"),
                    record.name,
                    record.env
                ),
            ));
        }
    }
    findings
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
