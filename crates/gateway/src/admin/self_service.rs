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
use crate::leak_reports::LEAK_REPORTS_PER_MINUTE;
use crate::snapshot::KeyEntry;
use crate::snapshot::entry_is_usable;
use crate::state::AppState;

/// How many unexpired, unrevoked children one key may have at a time.
pub(crate) const MAX_LIVE_CHILDREN: usize = 1_000;

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/keys/self", get(describe_self))
        .route("/keys/self/revoke", post(revoke_self))
        .route("/keys", post(mint_child))
        .route("/keys/{id}/revoke", post(revoke_descendant))
        .route("/oidc/login", post(super::oidc_login::login))
        .route("/admin/oidc", get(super::sessions::info))
        .route("/admin/oidc/login", post(super::sessions::login))
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

/// Largest leak report body, bytes (413 above it). GitHub's secret-scanning
/// partner program sends a JSON array of small objects (a token of a few
/// dozen bytes, a URL, a type and a source); 100 of them fit with room.
pub(crate) const MAX_LEAK_REPORT_BYTES: usize = 256 * 1024;

/// Most entries one leak report may carry (413 above it).
pub(crate) const MAX_REPORTED_TOKENS: usize = 100;

/// Longest URL recorded for a leak, in characters; longer ones are cut.
const MAX_LEAK_URL_CHARS: usize = 512;

/// Longest `type` or `source` recorded or echoed, in characters.
const MAX_LEAK_LABEL_CHARS: usize = 64;

/// One reported token, in the shape of GitHub's secret-scanning partner
/// program (`[{"token", "type", "url", "source"}]`, docs.github.com "Secret
/// scanning partner program", read 2026-11). No `Debug`: it holds the token.
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

/// What a report did about one reported token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum LeakOutcome {
    /// A secret that authenticates today: its key (and descendants) is now
    /// revoked.
    Revoked,
    /// A secret this gateway issued that no longer authenticates (its key
    /// is revoked or expired, or it is a rotated-out earlier secret): it is
    /// harmless, nothing is changed and nothing audited.
    Inactive,
    /// Not a secret of this gateway.
    NotFound,
}

#[derive(Debug, serde::Serialize)]
struct LeakLabel {
    /// SHA-256 of the token, hex (as GitHub expects it back).
    token_hash: String,
    token_type: String,
    /// `true_positive` (a key this gateway issued, live or not) or
    /// `false_positive`, GitHub's two labels.
    label: &'static str,
    outcome: LeakOutcome,
}

impl LeakLabel {
    fn new(token_hash: String, token_type: String, outcome: LeakOutcome) -> Self {
        Self {
            token_hash,
            token_type,
            label: if outcome == LeakOutcome::NotFound {
                "false_positive"
            } else {
                "true_positive"
            },
            outcome,
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first `max` characters of `text` (never splitting a character).
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// The live key a reported token's secret belongs to, if it authenticates
/// today: its current secret, or an earlier one still in its grace window,
/// of a key neither revoked nor expired, whose ancestors are neither. A
/// suspended key counts as live: a resume would bring the leaked secret
/// back. Returns `Err(())` for a secret of this gateway that is dead.
fn live_key(
    snapshot: &crate::snapshot::Snapshot,
    hash: &keyforge_types::KeyHash,
    now: time::OffsetDateTime,
) -> Option<Result<Arc<KeyEntry>, ()>> {
    let (entry, valid_until) = snapshot.find_key(hash)?;
    let dead = |entry: &KeyEntry| {
        entry.record.revoked_at.is_some() || entry.record.expires_at.is_some_and(|at| now >= at)
    };
    let authenticates = valid_until.is_none_or(|until| now < until)
        && !dead(entry)
        && !entry.ancestors.iter().any(|ancestor| dead(ancestor));
    Some(if authenticates {
        Ok(entry.clone())
    } else {
        Err(())
    })
}

/// `POST /keyforge/v1/leaks`: revokes every reported key this gateway
/// issued whose secret still authenticates (with its descendants) and
/// records where it leaked. It needs no credential: the report carries the
/// secrets themselves, and whoever holds one may already revoke its key
/// (`/keys/self/revoke`). So a report can do nothing a secret's holder
/// could not: a dead secret (rotated out, or of a revoked or expired key)
/// revokes nothing, and only revocations are audited.
///
/// Bounds: [`MAX_LEAK_REPORT_BYTES`] and [`MAX_REPORTED_TOKENS`] (413),
/// [`LEAK_REPORTS_PER_MINUTE`] per client address (429 with
/// `Retry-After`); a repeated token is looked at and audited once (each
/// entry still gets its label); URLs and labels are cut to a bounded
/// length.
async fn report_leaks(
    State(state): State<Arc<AppState>>,
    client: Option<axum::Extension<crate::ClientAddr>>,
    body: Bytes,
) -> Result<axum::response::Response, AdminError> {
    use axum::response::IntoResponse;
    let now = state.clock.now();
    let now_ns = i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    let address = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0);
    if let Err(retry_after) = state.leak_reports.admit(address, now_ns) {
        let seconds = retry_after.as_secs().max(1);
        tracing::info!(client = %address, "leak report refused: too many reports from this address");
        let error = AdminError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "at most {LEAK_REPORTS_PER_MINUTE} leak reports per minute from one address; retry in {seconds}s"
            ),
        );
        return Ok(([(http::header::RETRY_AFTER, seconds.to_string())], error).into_response());
    }
    if body.len() > MAX_LEAK_REPORT_BYTES {
        return Err(AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "report_too_large",
            format!("a leak report is at most {MAX_LEAK_REPORT_BYTES} bytes; split it"),
        ));
    }
    let reports: Vec<ReportedToken> = parse_json(&body)?;
    if reports.len() > MAX_REPORTED_TOKENS {
        return Err(AdminError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_tokens",
            format!(
                "a leak report carries at most {MAX_REPORTED_TOKENS} tokens, this one {}; split it",
                reports.len()
            ),
        ));
    }
    // Each distinct token is looked at once; its repeats get the same answer
    // (one label per entry, as GitHub and `keyforge scan --revoke` match
    // labels to entries by position) but no further work or audit entry.
    let mut decided: std::collections::HashMap<String, LeakOutcome> =
        std::collections::HashMap::new();
    let mut revoked: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
    let mut labels = Vec::with_capacity(reports.len());
    let _guard = state.admin_write.lock().await;
    let snapshot = state.snapshot.load_full();
    for report in reports {
        let token_hash = sha256_hex(report.token.as_bytes());
        let token_type = report.kind.as_deref().map_or_else(
            || "keyforge_virtual_key".to_owned(),
            |kind| truncated(kind, MAX_LEAK_LABEL_CHARS),
        );
        if let Some(outcome) = decided.get(&token_hash).copied() {
            labels.push(LeakLabel::new(token_hash, token_type, outcome));
            continue;
        }
        let found = keyforge_types::VirtualKey::parse(report.token.trim())
            .ok()
            .and_then(|key| live_key(&snapshot, &state.hasher.hash(&key), now));
        let outcome = match found {
            None => LeakOutcome::NotFound,
            Some(Err(())) => LeakOutcome::Inactive,
            // A second secret of a key this report already revoked.
            Some(Ok(entry)) if revoked.contains(&entry.record.id) => LeakOutcome::Inactive,
            Some(Ok(entry)) => {
                let id = entry.record.id.clone();
                let url = report
                    .url
                    .as_deref()
                    .map(|u| truncated(u, MAX_LEAK_URL_CHARS));
                let source = report
                    .source
                    .as_deref()
                    .map(|s| truncated(s, MAX_LEAK_LABEL_CHARS));
                audit_as(
                    &state,
                    "leak-report",
                    "key.leaked",
                    serde_json::json!({"id": id, "url": url, "source": source}),
                )
                .await?;
                state
                    .store
                    .revoke_virtual_key(&id, now)
                    .await
                    .map_err(AdminError::store)?;
                tracing::warn!(key_id = %id, url = url.as_deref().unwrap_or(""), "leaked KeyForge key reported: revoked");
                revoked.insert(id);
                LeakOutcome::Revoked
            }
        };
        if outcome == LeakOutcome::Inactive {
            tracing::info!(client = %address, "leak report names a KeyForge secret that no longer authenticates: nothing to revoke");
        }
        decided.insert(token_hash.clone(), outcome);
        labels.push(LeakLabel::new(token_hash, token_type, outcome));
    }
    if !revoked.is_empty() {
        reload(&state).await?;
    }
    Ok(axum::Json(labels).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters() {
        fn check(text: &str, max: usize, expected: &str) {
            assert_eq!(truncated(text, max), expected, "{text:?} to {max}");
        }
        check("https://x", 100, "https://x");
        check("abcdef", 3, "abc");
        check("ééééé", 2, "éé");
        check("日本語テキスト", 3, "日本語");
        check("", 5, "");
    }
}
