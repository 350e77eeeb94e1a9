//! Named admins (`/admin/v1/admins`, `/admin/v1/whoami`): add, list,
//! revoke, replace a token. Only owners reach these routes (see
//! [`super::access`]), and an admin never grants a role above its own.
//! Tokens (`kfa_...`) are shown once, in the answer that creates them, and
//! stored as their keyed hash. Changes are audited (`admin.admin.add`,
//! `admin.admin.revoke`, `admin.admin.rotate_token`) before they are made,
//! and the snapshot is rebuilt before the answer, so a revoked or replaced
//! token is refused from the very next request.

use std::sync::Arc;

use axum::extract::{Path, State};
use bytes::Bytes;
use http::StatusCode;
use keyforge_store::{AdminRecord, AdminRevokeOutcome, Store, StoreError};
use keyforge_types::{AdminId, AdminName, AdminRole, AdminToken, KeyHasher};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use super::api::{AdminList, AdminView, AdminWithToken, CreateAdminRequest};
use super::sessions::SESSION_PREFIX;
use super::{AdminError, audit, current_actor, current_admin, parse_json, reload, rfc3339};
use crate::state::AppState;

/// The name of the owner made from the legacy `admin.token` at the first
/// start on schema 10.
pub(crate) const LEGACY_OWNER: &str = "owner";

pub(crate) fn view(record: &AdminRecord) -> AdminView {
    AdminView {
        id: record.id.clone(),
        name: record.name.clone(),
        role: record.role,
        status: if record.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
        created_at: rfc3339(record.created_at),
        created_by: record.created_by.clone(),
        rotated_at: record.rotated_at.map(rfc3339),
        revoked_at: record.revoked_at.map(rfc3339),
    }
}

fn not_found(name: &AdminName) -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "admin_not_found",
        format!("no admin named `{name}`"),
    )
}

fn parse_name(text: &str) -> Result<AdminName, AdminError> {
    AdminName::parse(text).map_err(|error| AdminError::bad_request(error.to_string()))
}

/// The token text, for the one answer that shows it.
fn token_text(token: &AdminToken) -> String {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one time an admin token is shown: to the owner who made it"
    )]
    let text = token.secret().expose_secret().to_owned();
    text
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> axum::Json<AdminList> {
    let snapshot = state.snapshot.load();
    axum::Json(AdminList {
        admins: snapshot
            .admins_by_name
            .values()
            .map(|record| view(record))
            .collect(),
        sessions: state
            .sessions
            .list(state.clock.now())
            .iter()
            .map(super::sessions::view)
            .collect(),
    })
}

pub(crate) async fn whoami() -> Result<axum::Json<AdminView>, AdminError> {
    let admin = current_admin().ok_or_else(|| AdminError::internal("no admin identity"))?;
    Ok(axum::Json(view(&admin)))
}

pub(crate) async fn add(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<AdminWithToken>), AdminError> {
    let request: CreateAdminRequest = parse_json(&body)?;
    let caller = current_admin().ok_or_else(|| AdminError::internal("no admin identity"))?;
    if request.name.as_str().starts_with(SESSION_PREFIX) {
        return Err(AdminError::bad_request(format!(
            "admin names starting with `{SESSION_PREFIX}` are kept for OIDC sessions; choose another name"
        )));
    }
    if request.role > caller.role {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "insufficient_role",
            format!(
                "admin `{}` is {} and cannot grant the {} role (the owner role is needed)",
                caller.name, caller.role, request.role
            ),
        ));
    }
    let _guard = state.admin_write.lock().await;
    if state
        .snapshot
        .load()
        .admins_by_name
        .contains_key(request.name.as_str())
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "an admin named `{}` already exists (names of revoked admins are not reused)",
                request.name
            ),
        ));
    }
    let token = AdminToken::generate();
    let record = AdminRecord {
        id: AdminId::generate(),
        name: request.name.clone(),
        role: request.role,
        token_hash: state.hasher.hash_admin_token(&token),
        created_at: state.clock.now(),
        created_by: current_actor()?,
        rotated_at: None,
        revoked_at: None,
    };
    audit(
        &state,
        "admin.add",
        serde_json::json!({"id": record.id, "name": record.name, "role": record.role.as_str()}),
    )
    .await?;
    state
        .store
        .insert_admin(&record)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(admin = %record.name, role = %record.role, by = %record.created_by, "admin added");
    Ok((
        StatusCode::CREATED,
        axum::Json(AdminWithToken {
            token: token_text(&token),
            admin: view(&record),
        }),
    ))
}

pub(crate) async fn revoke(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<AdminView>, AdminError> {
    let name = parse_name(&name)?;
    if name.as_str().starts_with(SESSION_PREFIX) {
        return revoke_session(&state, &name).await;
    }
    let _guard = state.admin_write.lock().await;
    // Refusals are decided on the snapshot (current under the write lock),
    // before the audit entry, so the log never records a revocation that
    // did not happen; the store checks the last owner again.
    {
        let snapshot = state.snapshot.load();
        let record = snapshot
            .admins_by_name
            .get(name.as_str())
            .ok_or_else(|| not_found(&name))?;
        if record.revoked_at.is_some() {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "admin_revoked",
                format!("admin `{name}` is already revoked"),
            ));
        }
        let other_owners = snapshot
            .admins
            .values()
            .filter(|admin| admin.role == AdminRole::Owner && admin.name != name)
            .count();
        if record.role == AdminRole::Owner && other_owners == 0 {
            return Err(last_owner(&name));
        }
    }
    audit(&state, "admin.revoke", serde_json::json!({"name": name})).await?;
    match state
        .store
        .revoke_admin(&name, state.clock.now())
        .await
        .map_err(AdminError::store)?
    {
        AdminRevokeOutcome::Revoked | AdminRevokeOutcome::AlreadyRevoked => {}
        AdminRevokeOutcome::LastOwner => return Err(last_owner(&name)),
        AdminRevokeOutcome::NotFound => return Err(not_found(&name)),
    }
    reload(&state).await?;
    tracing::info!(admin = %name, "admin revoked");
    let snapshot = state.snapshot.load();
    let record = snapshot
        .admins_by_name
        .get(name.as_str())
        .ok_or_else(|| AdminError::internal("the admin is missing from the reloaded snapshot"))?;
    Ok(axum::Json(view(record)))
}

/// `admin revoke session-...`: ends an OIDC session at once (audited
/// first, like every admin change). Its token is refused from the next
/// request; the listing shows it revoked until it would have expired.
async fn revoke_session(
    state: &AppState,
    name: &AdminName,
) -> Result<axum::Json<AdminView>, AdminError> {
    let now = state.clock.now();
    if !state
        .sessions
        .list(now)
        .iter()
        .any(|session| session.record.name == *name && session.record.revoked_at.is_none())
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no live admin session `{name}` (it may have expired or been revoked)"),
        ));
    }
    audit(state, "session.revoke", serde_json::json!({"name": name})).await?;
    let session = state
        .sessions
        .revoke(name.as_str(), now)
        .ok_or_else(|| not_found(name))?;
    tracing::info!(session = %name, identity = %session.identity, "admin session revoked");
    Ok(axum::Json(view(&session.record)))
}

/// `POST /admin/v1/session/end`: the calling OIDC session ends itself
/// (`keyforge admin logout`). A named admin's token is refused here
/// (`not_a_session`): those are revoked by an owner.
pub(crate) async fn end_own_session(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<AdminView>, AdminError> {
    let caller = current_admin().ok_or_else(|| AdminError::internal("no admin identity"))?;
    if !caller.name.as_str().starts_with(SESSION_PREFIX) {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "not_a_session",
            format!(
                "`{}` is a named admin, not an OIDC session; an owner revokes it with `keyforge admin revoke`",
                caller.name
            ),
        ));
    }
    revoke_session(&state, &caller.name).await
}

fn last_owner(name: &AdminName) -> AdminError {
    AdminError::new(
        StatusCode::CONFLICT,
        "last_owner",
        format!(
            "`{name}` is the last owner: add another owner first (`keyforge admin add NAME --role owner`), or nobody could manage admins"
        ),
    )
}

pub(crate) async fn rotate_token(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<axum::Json<AdminWithToken>, AdminError> {
    let name = parse_name(&name)?;
    let _guard = state.admin_write.lock().await;
    match state.snapshot.load().admins_by_name.get(name.as_str()) {
        None => return Err(not_found(&name)),
        Some(record) if record.revoked_at.is_some() => {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "admin_revoked",
                format!("admin `{name}` is revoked; add a new admin instead"),
            ));
        }
        Some(_) => {}
    }
    audit(
        &state,
        "admin.rotate_token",
        serde_json::json!({"name": name}),
    )
    .await?;
    let token = AdminToken::generate();
    if !state
        .store
        .replace_admin_token(
            &name,
            &state.hasher.hash_admin_token(&token),
            state.clock.now(),
        )
        .await
        .map_err(AdminError::store)?
    {
        return Err(not_found(&name));
    }
    reload(&state).await?;
    tracing::info!(admin = %name, "admin token replaced");
    let snapshot = state.snapshot.load();
    let record = snapshot
        .admins_by_name
        .get(name.as_str())
        .ok_or_else(|| AdminError::internal("the admin is missing from the reloaded snapshot"))?;
    Ok(axum::Json(AdminWithToken {
        token: token_text(&token),
        admin: view(record),
    }))
}

/// At start: with no admin at all (a new data directory, or the first
/// start after the upgrade to schema 10), the legacy admin token becomes
/// the owner admin [`LEGACY_OWNER`]; says so in the log, once. Returns
/// whether it made an owner. When admins exist and the legacy token is
/// none of theirs: a token `created` by this start (a restored or moved
/// data directory without its `admin.token`) becomes a new owner
/// `owner-<unix seconds>`, said in the log; any other (rotated, revoked,
/// or changed in the environment) is refused, and the log warns.
pub(crate) async fn adopt_legacy_token(
    store: &dyn Store,
    hasher: &KeyHasher,
    legacy_token: &SecretString,
    created: bool,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let hash = hasher.hash_admin(legacy_token);
    let admins = store.list_admins().await?;
    let name = if admins.is_empty() {
        LEGACY_OWNER.to_owned()
    } else if admins
        .iter()
        .any(|admin| admin.revoked_at.is_none() && admin.token_hash.ct_eq(&hash))
    {
        return Ok(false);
    } else if created {
        format!("{LEGACY_OWNER}-{}", now.unix_timestamp())
    } else {
        tracing::warn!(
            "the admin token (admin.token or KEYFORGE_ADMIN_TOKEN) belongs to no active admin and is refused; use a named admin's token (keyforge admin list)"
        );
        return Ok(false);
    };
    let owner = AdminRecord {
        id: AdminId::generate(),
        name: AdminName::parse(&name).map_err(|error| StoreError::Corrupt(error.to_string()))?,
        role: AdminRole::Owner,
        token_hash: hash,
        created_at: now,
        created_by: "gateway".to_owned(),
        rotated_at: None,
        revoked_at: None,
    };
    match store.insert_admin(&owner).await {
        // Another instance sharing the store made it first.
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(error) => Err(error),
        Ok(()) if admins.is_empty() => {
            tracing::warn!(
                admin = LEGACY_OWNER,
                role = "owner",
                "admins: the admin token (admin.token or KEYFORGE_ADMIN_TOKEN) is now the owner admin `owner`; add named admins with `keyforge admin add NAME --role ROLE`"
            );
            Ok(true)
        }
        Ok(()) => {
            tracing::warn!(
                admin = %name,
                role = "owner",
                "admins: a new admin.token was made for a store that has admins (a restored or moved data directory); it is the new owner admin `{name}`: revoke it once named owners are in place",
            );
            Ok(true)
        }
    }
}
