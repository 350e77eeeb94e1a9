//! `/admin/v1/providers/{id}/rotation`: blue/green rotation of a provider's
//! key.
//!
//! Versions move through stages as AWS Secrets Manager's labels do:
//! `start` adds the new key as *pending* (after checking it against the
//! provider); `promote --percent N` lets it serve N % of requests; `promote`
//! makes it *current* and the old current *previous* (still valid at the
//! provider, so requests in flight and a rollback can use it); `finish`
//! retires *previous* once it has carried no traffic for
//! the quiet window (`Config::rotation_quiet_window`, 15 minutes by
//! default; `rotate finish --quiet-window` for one call); `rollback` makes *previous* current again;
//! `cancel` drops a pending key. A request keeps the version it started
//! with to its end, so no switch ever fails a request in flight.

use std::sync::Arc;

use axum::extract::{Path, State};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use keyforge_providers::{Api, inject_provider_key};
use keyforge_store::{CredentialRecord, CredentialStage};
use keyforge_types::{ProviderId, ProviderSecret};
use time::{Duration, OffsetDateTime};

use super::api::{
    FinishRequest, KeyVersionView, PromoteRequest, RotationStatus, StartRotationRequest,
};
use super::{AdminError, parse_json, provider_view, reload, rfc3339};
use crate::snapshot::{ProviderEntry, credential_aad, unix_ms};
use crate::state::AppState;

/// The longest quiet window `finish` accepts, in minutes: a week.
pub(crate) const MAX_QUIET_MINUTES: u32 = 7 * 24 * 60;

pub(super) fn provider(state: &AppState, id: &str) -> Result<Arc<ProviderEntry>, AdminError> {
    let id = ProviderId::parse(id).map_err(|error| AdminError::bad_request(error.to_string()))?;
    state
        .snapshot
        .load()
        .providers
        .values()
        .find(|entry| entry.record.id == id)
        .cloned()
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "provider_not_found",
                format!("no provider with id {id}"),
            )
        })
}

/// Takes the admin lock, finds the provider and records the step in the
/// audit log: what every rotation step does first.
async fn begin<'a>(
    state: &'a AppState,
    id: &str,
    action: &str,
    data: serde_json::Value,
) -> Result<(tokio::sync::MutexGuard<'a, ()>, Arc<ProviderEntry>), AdminError> {
    let guard = state.admin_write.lock().await;
    // Resolve first, so an unknown provider is refused without an entry.
    let entry = provider(state, id)?;
    super::audit(state, action, data).await?;
    Ok((guard, entry))
}

/// A body that may be empty (then the request's defaults apply).
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, AdminError> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

/// "Provider `openai` (dev) has no ... key ...": a rotation step that does
/// not fit the provider's stages.
fn missing(code: &'static str, entry: &ProviderEntry, what: &str) -> AdminError {
    conflict(
        code,
        format!(
            "provider `{}` ({}) has {what}",
            entry.record.name, entry.record.env
        ),
    )
}

fn conflict(code: &'static str, message: String) -> AdminError {
    AdminError::new(StatusCode::CONFLICT, code, message)
}

pub(super) async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    let entry = provider(&state, &id)?;
    Ok(axum::Json(rotation_status(&state, &entry).await?))
}

async fn rotation_status(
    state: &AppState,
    entry: &ProviderEntry,
) -> Result<RotationStatus, AdminError> {
    let now = state.clock.now();
    // Requests that just finished may still be queued for the ledger.
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let record = &entry.record;
    let usage = |hours: i64| {
        let since = unix_ms(now - Duration::hours(hours));
        async move {
            state
                .store
                .version_usage(&record.env, &record.name, since)
                .await
                .map_err(AdminError::store)
        }
    };
    let (hour, day, week) = (usage(1).await?, usage(24).await?, usage(24 * 7).await?);
    let count = |rows: &[keyforge_store::VersionUsage], version: u32| {
        rows.iter()
            .find(|row| row.version == version)
            .map_or(0, |row| row.requests)
    };
    let versions = state
        .store
        .list_credentials(&record.id)
        .await
        .map_err(AdminError::store)?
        .into_iter()
        .map(|info| KeyVersionView {
            version: info.version,
            stage: info.stage.as_str().to_owned(),
            created_at: rfc3339(info.created_at),
            age_days: (now - info.created_at).whole_days(),
            requests_last_hour: count(&hour, info.version),
            requests_last_day: count(&day, info.version),
            requests_last_week: count(&week, info.version),
            last_used: week
                .iter()
                .find(|row| row.version == info.version)
                .and_then(|row| {
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(row.last_ms) * 1_000_000)
                        .ok()
                })
                .map(rfc3339),
        })
        .collect();
    Ok(RotationStatus {
        provider: provider_view(entry),
        warnings: Vec::new(),
        rollout_percent: record.rollout_percent,
        versions,
    })
}

pub(super) async fn start(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<RotationStatus>), AdminError> {
    let request: StartRotationRequest = parse_json(&body)?;
    let secret = ProviderSecret::parse(&request.api_key)
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    let entry = provider(&state, &id)?;
    if let Some(pending) = &entry.pending {
        return Err(conflict(
            "rotation_in_progress",
            format!(
                "provider `{}` ({}) already has a pending key (version {}): promote it or cancel the rotation first",
                entry.record.name, entry.record.env, pending.version
            ),
        ));
    }
    // Rotating to the key in force would change nothing while looking
    // done: refused (a paste of the old key is the usual cause).
    if super::edit::same_secret(&state, &secret, &entry.current.secret) {
        return Err(conflict(
            "same_key",
            format!(
                "the new key is already the current key of provider `{}` ({}) (version {}): create a new key at the provider and start the rotation with that one",
                entry.record.name, entry.record.env, entry.current.version
            ),
        ));
    }
    if !request.skip_check {
        check_key(&state, entry.kind.api(), &entry.base_url, &secret).await?;
    }
    let _guard = state.admin_write.lock().await;
    super::audit(&state, "rotation.start", serde_json::json!({"provider_id": entry.record.id, "provider": entry.record.name, "env": entry.record.env})).await?;
    let versions = state
        .store
        .list_credentials(&entry.record.id)
        .await
        .map_err(AdminError::store)?;
    let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    #[expect(
        clippy::disallowed_methods,
        reason = "the new provider key is sealed here and goes nowhere else"
    )]
    let plaintext = secret.expose().as_bytes();
    let credential = CredentialRecord {
        version,
        sealed: state.sealer.seal(
            plaintext,
            &credential_aad(entry.record.id.as_str(), version),
        ),
        created_at: state.clock.now(),
    };
    state
        .store
        .insert_credential(&entry.record.id, &credential, CredentialStage::Pending)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(provider_id = %entry.record.id, version, "provider key rotation started");
    let entry = provider(&state, &id)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(rotation_status(&state, &entry).await?),
    ))
}

/// A cheap authenticated call (the models list) with a key, at the base
/// URL it will be used with: a key the provider rejects (or a base URL that
/// is not the provider's API) is refused with the provider's reason,
/// scrubbed. Used by `rotate start`, `provider add` and `provider update`.
pub(super) async fn check_key(
    state: &AppState,
    api: Api,
    base_url: &str,
    secret: &ProviderSecret,
) -> Result<(), AdminError> {
    let path = match api {
        Api::OpenAi | Api::Anthropic => "/v1/models",
        Api::Gemini => "/v1beta/models",
    };
    let uri: http::Uri = format!("{}{path}", base_url.trim_end_matches('/'))
        .parse()
        .map_err(|_| AdminError::bad_request("the provider's base URL cannot be called"))?;
    let mut request = http::Request::new(Full::new(Bytes::new()));
    *request.uri_mut() = uri;
    if api == Api::Anthropic {
        request.headers_mut().insert(
            "anthropic-version",
            http::HeaderValue::from_static("2023-06-01"),
        );
    }
    inject_provider_key(api, request.headers_mut(), secret)
        .map_err(|_| AdminError::bad_request("the key cannot be sent in an HTTP header"))?;
    let response = tokio::time::timeout(
        state.config.upstream_connect_timeout * 3,
        state.http.request(request),
    )
    .await
    .map_err(|_| {
        AdminError::new(
            StatusCode::BAD_GATEWAY,
            "key_check_failed",
            "the provider did not answer the key check in time; retry, or skip it with --no-check",
        )
    })?
    .map_err(|_| {
        AdminError::new(
            StatusCode::BAD_GATEWAY,
            "key_check_failed",
            "could not reach the provider to check the key; check the base URL and retry, or skip the check with --no-check",
        )
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    #[expect(
        clippy::disallowed_methods,
        reason = "the new key is only searched for, to scrub it from the provider's answer"
    )]
    let scrubbed = state.scrubber.scrub(&body, &[secret.expose()]);
    let reason = provider_reason(&scrubbed);
    let message = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        format!(
            "the provider rejected the new key (HTTP {}): {reason}",
            status.as_u16()
        )
    } else {
        format!(
            "the key check (GET {path}) answered HTTP {}: {reason}; if this provider has no models endpoint, skip the check with --no-check",
            status.as_u16()
        )
    };
    Err(AdminError::new(
        StatusCode::BAD_REQUEST,
        "key_rejected",
        message,
    ))
}

/// The error message of a provider's error body, in any dialect.
fn provider_reason(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let message = value
        .pointer("/error/message")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let message: String = message.chars().take(300).collect();
    if message.trim().is_empty() {
        "no reason given".to_owned()
    } else {
        message
    }
}

/// Applies stage changes and the rollout share, reloads, and answers with
/// the new status.
async fn apply(
    state: &AppState,
    id: &str,
    entry: &ProviderEntry,
    stages: &[(u32, CredentialStage)],
    rollout_percent: u8,
    action: &'static str,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    state
        .store
        .set_credential_stages(&entry.record.id, stages, rollout_percent)
        .await
        .map_err(AdminError::store)?;
    reload(state).await?;
    tracing::info!(provider_id = %entry.record.id, action, rollout_percent, "provider key rotation");
    let entry = provider(state, id)?;
    Ok(axum::Json(rotation_status(state, &entry).await?))
}

pub(super) async fn promote(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    let request: PromoteRequest = optional_json(&body)?;
    let percent = request.percent.unwrap_or(100);
    if !(1..=100).contains(&percent) {
        return Err(AdminError::bad_request("--percent is from 1 to 100"));
    }
    let (_guard, entry) = begin(
        &state,
        &id,
        "rotation.promote",
        serde_json::json!({"provider_id": id, "percent": percent}),
    )
    .await?;
    let Some(pending) = &entry.pending else {
        return Err(missing(
            "no_pending_key",
            &entry,
            "no pending key: start a rotation first",
        ));
    };
    if percent < 100 {
        return apply(&state, &id, &entry, &[], percent, "rollout").await;
    }
    let mut stages = vec![
        (pending.version, CredentialStage::Current),
        (entry.current.version, CredentialStage::Previous),
    ];
    if let Some(previous) = &entry.record.previous {
        stages.insert(0, (previous.version, CredentialStage::Retired));
    }
    apply(&state, &id, &entry, &stages, 0, "promote").await
}

pub(super) async fn finish(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    let request: FinishRequest = optional_json(&body)?;
    // The traffic counts reach back a week (`rotate status`).
    if request
        .quiet_minutes
        .is_some_and(|minutes| !(1..=MAX_QUIET_MINUTES).contains(&minutes))
    {
        return Err(AdminError::bad_request(format!(
            "the quiet window is 1 to {MAX_QUIET_MINUTES} minutes (a week)"
        )));
    }
    let (_guard, entry) = begin(
        &state,
        &id,
        "rotation.finish",
        serde_json::json!({"provider_id": id, "force": request.force}),
    )
    .await?;
    let Some(previous) = &entry.record.previous else {
        return Err(missing(
            "no_previous_key",
            &entry,
            "no previous key to retire",
        ));
    };
    if !request.force {
        state.ledger.flush(std::time::Duration::from_secs(5)).await;
        let quiet_minutes = i64::from(request.quiet_minutes.unwrap_or_else(|| {
            u32::try_from(state.config.rotation_quiet_window.as_secs() / 60).unwrap_or(u32::MAX)
        }))
        .max(1);
        let since = unix_ms(state.clock.now() - Duration::minutes(quiet_minutes));
        let recent = state
            .store
            .version_usage(&entry.record.env, &entry.record.name, since)
            .await
            .map_err(AdminError::store)?;
        if let Some(usage) = recent.iter().find(|row| row.version == previous.version) {
            return Err(conflict(
                "previous_key_in_use",
                format!(
                    "version {} of provider `{}` served {} requests in the last {quiet_minutes} minutes (the last at {}); wait until it is quiet, or retire it anyway with --force",
                    previous.version,
                    entry.record.name,
                    usage.requests,
                    OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(usage.last_ms) * 1_000_000
                    )
                    .map(rfc3339)
                    .unwrap_or_default()
                ),
            ));
        }
    }
    let elsewhere = previous_secret_elsewhere(&state, &entry, previous);
    let stages = [(previous.version, CredentialStage::Retired)];
    let axum::Json(mut status) = apply(
        &state,
        &id,
        &entry,
        &stages,
        entry.record.rollout_percent,
        "finish",
    )
    .await?;
    if !elsewhere.is_empty() {
        status.warnings.push(format!(
            "the retired key (version {}) is still the key of {}: do not revoke it at the provider until that one is rotated too",
            previous.version,
            elsewhere.join(", ")
        ));
    }
    Ok(axum::Json(status))
}

/// Other providers whose current or pending key is this provider's
/// previous one (compared by keyed fingerprint).
fn previous_secret_elsewhere(
    state: &AppState,
    entry: &ProviderEntry,
    previous: &CredentialRecord,
) -> Vec<String> {
    let Ok(plaintext) = state.sealer.open(
        &previous.sealed,
        &credential_aad(entry.record.id.as_str(), previous.version),
    ) else {
        return Vec::new();
    };
    let Some(secret) = std::str::from_utf8(&plaintext)
        .ok()
        .and_then(|text| ProviderSecret::parse(text).ok())
    else {
        return Vec::new();
    };
    super::edit::same_secret_elsewhere(
        state,
        &state.snapshot.load(),
        &secret,
        Some(&entry.record.id),
    )
}

pub(super) async fn rollback(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    let (_guard, entry) = begin(
        &state,
        &id,
        "rotation.rollback",
        serde_json::json!({"provider_id": id}),
    )
    .await?;
    match (&entry.record.previous, &entry.pending) {
        (Some(previous), _) => {
            let stages = [
                (entry.current.version, CredentialStage::Retired),
                (previous.version, CredentialStage::Current),
            ];
            apply(&state, &id, &entry, &stages, 0, "rollback").await
        }
        // A gradual rollout not yet promoted: stop sending it traffic.
        (None, Some(_)) if entry.record.rollout_percent > 0 => {
            apply(&state, &id, &entry, &[], 0, "rollback").await
        }
        _ => Err(missing(
            "nothing_to_roll_back",
            &entry,
            "no previous key and no rollout to undo",
        )),
    }
}

pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<RotationStatus>, AdminError> {
    let (_guard, entry) = begin(
        &state,
        &id,
        "rotation.cancel",
        serde_json::json!({"provider_id": id}),
    )
    .await?;
    let Some(pending) = &entry.pending else {
        return Err(missing(
            "no_pending_key",
            &entry,
            "no pending key to cancel",
        ));
    };
    let stages = [(pending.version, CredentialStage::Retired)];
    apply(&state, &id, &entry, &stages, 0, "cancel").await
}
