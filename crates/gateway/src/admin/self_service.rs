//! `/keyforge/v1`: what a `kf_` key may do about itself, with no admin
//! token. A key can describe itself (`GET /keys/self`, which `keyforge run`
//! uses to set up a child process), revoke itself and its descendants, and,
//! if it was created with `can_mint`, mint child keys that narrow it (one
//! per agent in a multi-agent system).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, Uri};
use keyforge_providers::{CredentialError, extract_client_credential};
use keyforge_types::KeyId;

use super::api::{CreateKeyRequest, CreatedKey, ReachableProvider, RevokeResult, SelfView};
use super::{AdminError, audit_as, created_key, key_view, mint, parse_json, parse_key_id, reload};
use crate::proxy::entry_is_usable;
use crate::snapshot::KeyEntry;
use crate::state::AppState;

/// How many unexpired, unrevoked children one key may have at a time.
pub(crate) const MAX_LIVE_CHILDREN: usize = 1_000;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/keys/self", get(describe_self))
        .route("/keys/self/revoke", post(revoke_self))
        .route("/keys", post(mint_child))
        .route("/keys/{id}/revoke", post(revoke_descendant))
        .route("/oidc/login", post(crate::oidc::login))
        .route("/leaks", post(report_leaks))
        .fallback(|| async {
            AdminError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
}

/// The presenting key, which must be usable (a revoked, expired or
/// suspended key can do nothing here, not even revoke itself again).
fn caller(state: &AppState, headers: &HeaderMap, uri: &Uri) -> Result<Arc<KeyEntry>, AdminError> {
    let credential = extract_client_credential(headers, uri.query()).map_err(|error| {
        let code = match error {
            CredentialError::Missing => "missing_api_key",
            _ => "invalid_api_key",
        };
        AdminError::new(StatusCode::UNAUTHORIZED, code, error.to_string())
    })?;
    let hash = state.hasher.hash(&credential.key);
    let snapshot = state.snapshot.load();
    let now = state.clock.now();
    let entry = match snapshot.find_key(&hash) {
        Some((entry, None)) => entry.clone(),
        Some((entry, Some(valid_until))) if now < valid_until => entry.clone(),
        _ => {
            return Err(AdminError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "unknown KeyForge key, or a rotated secret past its grace period",
            ));
        }
    };
    entry_is_usable(&entry, now)
        .map_err(|error| AdminError::new(StatusCode::UNAUTHORIZED, error.code, error.message))?;
    Ok(entry)
}

async fn describe_self(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<SelfView>, AdminError> {
    let entry = caller(&state, &headers, &uri)?;
    let snapshot = state.snapshot.load();
    let mut providers: Vec<ReachableProvider> = snapshot
        .providers_in(&entry.record.env)
        .filter(|provider| entry.record.scope.allows_provider(&provider.record.name))
        .map(|provider| ReachableProvider {
            name: provider.record.name.clone(),
            kind: provider.kind.as_str().to_owned(),
            path: format!("/p/{}", provider.record.name),
        })
        .collect();
    providers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(SelfView {
        key: key_view(&entry, state.clock.now()),
        providers,
    }))
}

async fn revoke_self(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<RevokeResult>, AdminError> {
    let entry = caller(&state, &headers, &uri)?;
    let id = entry.record.id.clone();
    revoke(&state, &entry, id).await
}

async fn revoke_descendant(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<axum::Json<RevokeResult>, AdminError> {
    let entry = caller(&state, &headers, &uri)?;
    let id = parse_key_id(&id)?;
    let snapshot = state.snapshot.load();
    let is_own = id == entry.record.id
        || snapshot.key_by_id(&id).is_some_and(|target| {
            target
                .ancestors
                .iter()
                .any(|ancestor| ancestor.record.id == entry.record.id)
        });
    if !is_own {
        // The same answer whether or not the key exists: a key learns
        // nothing about keys outside its own tree.
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key with id {id} under key {}", entry.record.id),
        ));
    }
    revoke(&state, &entry, id).await
}

async fn revoke(
    state: &AppState,
    caller: &KeyEntry,
    id: KeyId,
) -> Result<axum::Json<RevokeResult>, AdminError> {
    let _guard = state.admin_write.lock().await;
    let actor = format!("key:{}", caller.record.id);
    audit_as(
        state,
        &actor,
        "key.revoke",
        serde_json::json!({"id": id, "by": caller.record.id}),
    )
    .await?;
    let outcome = state
        .store
        .revoke_virtual_key(&id, state.clock.now())
        .await
        .map_err(AdminError::store)?;
    let result = super::revoke_result(id, outcome)?;
    reload(state).await?;
    tracing::info!(key_id = %result.id, by = %caller.record.id, outcome = %result.outcome, descendants = result.descendants.len(), "virtual key revoked by a key");
    Ok(axum::Json(result))
}

async fn mint_child(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<CreatedKey>), AdminError> {
    let entry = caller(&state, &headers, &uri)?;
    if !entry.record.can_mint {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "cannot_mint",
            format!(
                "KeyForge key {} may not mint keys (an admin creates minting keys with `keyforge key create --can-mint`)",
                entry.record.id
            ),
        ));
    }
    let request: CreateKeyRequest = parse_json(&body)?;
    if let Some(parent) = &request.parent
        && parent != &entry.record.id
    {
        return Err(AdminError::bad_request(
            "a key mints children under itself; leave `parent` out",
        ));
    }
    let now = state.clock.now();
    let live_children = state
        .snapshot
        .load()
        .keys
        .values()
        .filter(|child| {
            child.record.parent.as_ref() == Some(&entry.record.id)
                && child.record.revoked_at.is_none()
                && child.record.expires_at.is_none_or(|at| at > now)
        })
        .count();
    if live_children >= MAX_LIVE_CHILDREN {
        return Err(AdminError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_children",
            format!(
                "KeyForge key {} already has {live_children} live child keys, the most it may have; revoke some first",
                entry.record.id
            ),
        ));
    }
    let spec = mint::KeySpec::from_request(request)?;
    let minter = mint::Minter {
        actor: format!("key:{}", entry.record.id),
        origin: format!("key:{}", entry.record.id),
        detail: serde_json::Value::Null,
    };
    let minted = mint::mint(&state, spec, Some(&entry.record.id), minter).await?;
    Ok((StatusCode::CREATED, axum::Json(created_key(&minted, now))))
}

/// Most tokens one leak report may carry.
const MAX_REPORTED_TOKENS: usize = 1_000;

/// One reported token, in the shape of GitHub's secret-scanning partner
/// program (`[{"token", "type", "url", "source"}]`). No `Debug`: it holds
/// the token.
#[derive(serde::Deserialize)]
struct ReportedToken {
    token: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct LeakLabel {
    /// SHA-256 of the token, hex (as GitHub expects it back).
    token_hash: String,
    token_type: String,
    /// `true_positive` (a key this gateway issued: now revoked) or
    /// `false_positive`.
    label: &'static str,
}

fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST /keyforge/v1/leaks`: revokes every reported key this gateway
/// issued (with its descendants) and records where it leaked. It needs no
/// credential: the report carries the keys themselves, and whoever holds a
/// key may already revoke it (`/keys/self/revoke`).
async fn report_leaks(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<Vec<LeakLabel>>, AdminError> {
    let reports: Vec<ReportedToken> = parse_json(&body)?;
    if reports.len() > MAX_REPORTED_TOKENS {
        return Err(AdminError::bad_request(format!(
            "at most {MAX_REPORTED_TOKENS} tokens per report"
        )));
    }
    let mut labels = Vec::with_capacity(reports.len());
    let mut changed = false;
    let _guard = state.admin_write.lock().await;
    for report in reports {
        let token_hash = sha256_hex(report.token.as_bytes());
        let token_type = report
            .kind
            .clone()
            .unwrap_or_else(|| "keyforge_virtual_key".to_owned());
        let entry = keyforge_types::VirtualKey::parse(report.token.trim())
            .ok()
            .and_then(|key| {
                let hash = state.hasher.hash(&key);
                state
                    .snapshot
                    .load()
                    .find_key(&hash)
                    .map(|(entry, _)| entry.clone())
            });
        let Some(entry) = entry else {
            labels.push(LeakLabel {
                token_hash,
                token_type,
                label: "false_positive",
            });
            continue;
        };
        let id = entry.record.id.clone();
        let url: Option<String> = report.url.map(|u| u.chars().take(2048).collect());
        let source: Option<String> = report.source.map(|s| s.chars().take(100).collect());
        audit_as(
            &state,
            "leak-report",
            "key.leaked",
            serde_json::json!({"id": id, "url": url, "source": source, "already_revoked": entry.record.revoked_at.is_some()}),
        )
        .await?;
        if entry.record.revoked_at.is_none() {
            state
                .store
                .revoke_virtual_key(&id, state.clock.now())
                .await
                .map_err(AdminError::store)?;
            changed = true;
        }
        tracing::warn!(key_id = %id, url = url.as_deref().unwrap_or(""), "leaked KeyForge key reported: revoked");
        labels.push(LeakLabel {
            token_hash,
            token_type,
            label: "true_positive",
        });
    }
    if changed {
        reload(&state).await?;
    }
    Ok(axum::Json(labels))
}
