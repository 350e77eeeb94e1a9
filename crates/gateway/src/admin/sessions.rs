//! Admin sessions of humans who logged in with OIDC (`[admin.oidc]`).
//!
//! `POST /keyforge/v1/admin/oidc/login` takes an ID token from the
//! configured issuer, verifies it with [`crate::oidc::verify`] (signature
//! under the issuer's discovered keys, `iss`, `aud`, `exp`, `nbf`, `iat`),
//! maps its claims to a role with the configured bindings (the most
//! powerful match wins; none: refused), and answers a session token
//! (`kfa_...`, shown once) that lives `session_ttl`. The gateway keeps only
//! the token's keyed hash, with the session's role, identity
//! (`oidc:<email>`, else `oidc:<sub>`) and expiry.
//!
//! A session is a named admin to the rest of the admin API: its handle is
//! `session-<id>` (what `admin list` shows and `admin revoke` takes) and
//! every audit entry made with it names `oidc:<email>`. Every refusal of a
//! login is audited (`admin.oidc.refused`, at most
//! `REFUSALS_AUDITED_PER_MINUTE` a minute since anyone can send tokens)
//! and says why, never echoing the token.
//!
//! The session store is the core's `crate::sessions`. Sessions are held
//! in this process's memory: a restart ends them all
//! (users log in again), and in a cluster each instance knows only the
//! sessions it issued. Both are safe failures (refusals), and sessions are
//! short-lived.

use std::sync::Arc;

use axum::extract::State;
use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use keyforge_store::AdminRecord;
use keyforge_types::{AdminId, AdminName, AdminRole, AdminToken};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{AdminError, audit_as, parse_json, rfc3339};
use crate::oidc::verify::{self, Refusal};
use crate::sessions::Session;
use crate::state::AppState;

/// Handles of sessions start with this; `admin add` refuses such names.
pub(crate) const SESSION_PREFIX: &str = "session-";
/// `GET /keyforge/v1/admin/oidc`: what the CLI needs for the device flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminOidcInfo {
    /// The issuer URL (discovery is at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// Space-separated scopes to ask for.
    pub scopes: String,
    /// Session lifetime, seconds.
    pub session_ttl_seconds: u64,
}

/// `POST /keyforge/v1/admin/oidc/login`. Its `Debug` hides the token.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminLoginRequest {
    pub id_token: String,
}

impl std::fmt::Debug for AdminLoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminLoginRequest")
            .field("id_token", &"<redacted>")
            .finish()
    }
}

/// A session as `admin list` and the login answer show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    /// `session-<id>`: what `admin revoke` takes.
    pub name: String,
    pub role: AdminRole,
    /// `oidc:<email>`: the actor of its audit entries.
    pub identity: String,
    /// `active` or `revoked`.
    pub status: String,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// The answer of a login: the session token, shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct AdminLoginResponse {
    pub token: String,
    pub session: SessionView,
}

pub(crate) fn view(session: &Session) -> SessionView {
    SessionView {
        name: session.record.name.to_string(),
        role: session.record.role,
        identity: session.identity.clone(),
        status: if session.record.revoked_at.is_some() {
            "revoked"
        } else {
            "active"
        }
        .to_owned(),
        issued_at: rfc3339(session.issued_at),
        expires_at: rfc3339(session.expires_at),
    }
}

fn not_configured() -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "admin_oidc_not_configured",
        "this gateway has no [admin.oidc] block: humans cannot log in with OIDC here",
    )
}

pub(crate) async fn info(
    State(state): State<Arc<AppState>>,
) -> Result<axum::Json<AdminOidcInfo>, AdminError> {
    let (config, _) = state.sessions.config.as_ref().ok_or_else(not_configured)?;
    Ok(axum::Json(AdminOidcInfo {
        issuer: config.issuer.url.clone(),
        client_id: config.client_id.clone(),
        scopes: config.scopes.clone(),
        session_ttl_seconds: config.session_ttl.as_secs(),
    }))
}

/// The `iss` of a token before its signature is checked, so a token of
/// another issuer is refused by name rather than as "unknown key".
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes).ok()?;
    Some(claims.get("iss")?.as_str()?.chars().take(200).collect())
}

fn text_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|text| !text.is_empty())
        .map(|text| text.chars().take(200).collect())
}

/// Audits a refused login (rate-bounded) and answers its error.
async fn refuse(state: &AppState, identity: &str, refusal: Refusal) -> AdminError {
    tracing::info!(identity, code = refusal.code, reason = %refusal.message, "admin OIDC login refused");
    let now = state.clock.now();
    let now_ns = i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    // Refused either way; an audit failure does not change the answer.
    if state.oidc.refusals_audited.acquire(1, now_ns).is_ok() {
        let _ = audit_as(
            state,
            identity,
            "admin.oidc.refused",
            json!({"code": refusal.code, "reason": refusal.message}),
        )
        .await;
    }
    let status = if refusal.forbidden {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    AdminError::new(status, refusal.code, refusal.message)
}

fn invalid(message: String) -> Refusal {
    Refusal {
        forbidden: false,
        code: "invalid_token",
        message,
    }
}

pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<AdminLoginResponse>), AdminError> {
    let (config, jwks) = state.sessions.config.as_ref().ok_or_else(not_configured)?;
    let request: AdminLoginRequest = parse_json(&body)?;
    let token = request.id_token.trim();
    // Before the signature: nothing here is trusted, so refusals are
    // audited under `oidc:unverified`.
    let unverified = "oidc:unverified";
    match unverified_issuer(token) {
        None => {
            return Err(refuse(
                &state,
                unverified,
                invalid("the ID token is not a JWT with an `iss` claim".to_owned()),
            )
            .await);
        }
        Some(iss)
            if crate::config::oidc::normalize_issuer(&iss)
                != crate::config::oidc::normalize_issuer(&config.issuer.url) =>
        {
            return Err(refuse(
                &state,
                unverified,
                invalid(format!(
                    "unknown issuer: the token was issued by `{iss}`; this gateway accepts admin logins from `{}` only",
                    config.issuer.url
                )),
            )
            .await);
        }
        Some(_) => {}
    }
    let verified = async {
        let header = verify::header(token)?;
        let keys = jwks
            .keys_for(&state.http, header.kid.as_deref(), state.clock.now())
            .await
            .map_err(|error| Refusal {
                forbidden: false,
                code: "issuer_unavailable",
                message: format!(
                    "cannot get the signing keys of issuer `{}`: {}",
                    config.issuer.url, error.0
                ),
            })?;
        verify::signature(token, &header, &keys, &config.issuer)
    }
    .await;
    let claims = match verified {
        Ok(claims) => claims,
        Err(refusal) if refusal.code == "issuer_unavailable" => {
            tracing::warn!(reason = %refusal.message, "admin OIDC login: issuer unavailable");
            return Err(AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal.code,
                refusal.message,
            ));
        }
        Err(refusal) => return Err(refuse(&state, unverified, refusal).await),
    };
    // The signature holds: the claims are the issuer's word, and refusals
    // are audited under the identity they name.
    let identity = format!(
        "oidc:{}",
        text_claim(&claims, "email")
            .or_else(|| text_claim(&claims, "sub"))
            .unwrap_or_else(|| "unknown".to_owned())
    );
    let now = state.clock.now();
    if let Err(refusal) = verify::registered_claims_for(
        &claims,
        &config.issuer,
        std::slice::from_ref(&config.issuer.audience),
        "the admin login",
        now,
        state.oidc.leeway,
    ) {
        return Err(refuse(&state, &identity, refusal).await);
    }
    let Some(role) = config.role_for(&claims) else {
        let refusal = Refusal {
            forbidden: true,
            code: "no_role_binding",
            message: format!(
                "no [[admin.oidc.binding]] gives `{}` a role (bindings test `groups` and `email`); ask an owner to bind one",
                identity.trim_start_matches("oidc:")
            ),
        };
        return Err(refuse(&state, &identity, refusal).await);
    };
    let handle = format!(
        "{SESSION_PREFIX}{}",
        keyforge_types::random_base62(12).to_lowercase()
    );
    let name = AdminName::parse(&handle)
        .map_err(|_| AdminError::internal("a session handle did not parse as an admin name"))?;
    let session_token = AdminToken::generate();
    let expires_at = now + config.session_ttl;
    let session = Session {
        record: Arc::new(AdminRecord {
            id: AdminId::generate(),
            name,
            role,
            token_hash: state.hasher.hash_admin_token(&session_token),
            created_at: now,
            created_by: identity.clone(),
            rotated_at: None,
            revoked_at: None,
        }),
        identity: identity.clone(),
        issued_at: now,
        expires_at,
    };
    audit_as(
        &state,
        &identity,
        "admin.oidc.login",
        json!({
            "session": handle,
            "role": role.as_str(),
            "subject": text_claim(&claims, "sub"),
            "issuer": config.issuer.url,
            "expires_at": rfc3339(expires_at),
        }),
    )
    .await?;
    if !state
        .sessions
        .insert(session.record.token_hash, session.clone(), now)
    {
        return Err(AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_sessions",
            "too many admin sessions are live on this gateway; retry later",
        ));
    }
    tracing::info!(identity = %identity, role = %role, session = %handle, "admin OIDC login: session issued");
    #[expect(
        clippy::disallowed_methods,
        reason = "the one time a session token is shown: to the human who logged in"
    )]
    let token_text = session_token.secret().expose_secret().to_owned();
    Ok((
        StatusCode::CREATED,
        axum::Json(AdminLoginResponse {
            token: token_text,
            session: view(&session),
        }),
    ))
}
