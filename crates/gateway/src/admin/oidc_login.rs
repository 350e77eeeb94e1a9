//! `POST /keyforge/v1/oidc/login`: the OIDC exchange. The token is
//! verified by `crate::oidc` (issuers' keys, signature, registered and
//! bound claims, single use), then a key is minted from the role's
//! template through `mint.rs`. Every exchange is audited with the token's
//! issuer and subject; a valid token that a role refuses is audited too,
//! at most `REFUSALS_AUDITED_PER_MINUTE` a minute (an invalid one is only
//! logged: anyone can send one).

use std::sync::Arc;

use axum::extract::State;
use bytes::Bytes;
use http::StatusCode;
use keyforge_types::Ttl;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::CreatedKey;
use super::{AdminError, audit_as, created_key, mint, parse_json};
use crate::oidc::claim_single_use;
use crate::oidc::verify::{self, Refusal};
use crate::state::AppState;

/// `POST /keyforge/v1/oidc/login`. No `Debug`: it holds the token.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    role: String,
    token: String,
    /// A shorter (or, up to the role's `max_ttl`, longer) lifetime.
    #[serde(default)]
    ttl: Option<String>,
    /// A name for the key (default: the role and the token's subject).
    #[serde(default)]
    name: Option<String>,
}

fn refused(refusal: Refusal) -> AdminError {
    let status = if refusal.forbidden {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    AdminError::new(status, refusal.code, refusal.message)
}

fn claim_text(claims: &serde_json::Map<String, Value>, name: &str) -> String {
    claims
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

pub(crate) async fn login(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<CreatedKey>), AdminError> {
    let request: LoginRequest = parse_json(&body)?;
    let oidc = &state.oidc;
    let role = oidc.roles.get(&request.role).ok_or_else(|| {
        let shown: String = request.role.chars().take(64).collect();
        AdminError::new(
            StatusCode::BAD_REQUEST,
            "unknown_role",
            format!("no OIDC role named `{shown}` is configured on this gateway"),
        )
    })?;
    let Some((issuer, jwks)) = oidc.issuers.get(&role.issuer) else {
        return Err(AdminError::internal("the role's issuer is not configured"));
    };
    let ttl = match &request.ttl {
        None => role.ttl,
        Some(text) => {
            let asked = Ttl::parse(text)
                .map_err(|error| AdminError::bad_request(format!("ttl: {error}")))?
                .as_duration();
            if asked > role.max_ttl {
                return Err(AdminError::bad_request(format!(
                    "ttl {text} is longer than role `{}` allows ({}s)",
                    role.name,
                    role.max_ttl.as_secs()
                )));
            }
            asked
        }
    };
    let outcome = async {
        let header = verify::header(&request.token)?;
        let keys = jwks
            .keys_for(&state.http, header.kid.as_deref(), state.clock.now())
            .await
            .map_err(|error| Refusal {
                forbidden: false,
                code: "issuer_unavailable",
                message: format!(
                    "cannot get the signing keys of issuer `{}`: {}",
                    issuer.name, error.0
                ),
            })?;
        verify::signature(&request.token, &header, &keys, issuer)
    }
    .await;
    let claims = match outcome {
        Ok(claims) => claims,
        Err(refusal) => {
            tracing::info!(role = %role.name, code = refusal.code, reason = %refusal.message, "OIDC login refused");
            if refusal.code == "issuer_unavailable" {
                return Err(AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    refusal.code,
                    refusal.message,
                ));
            }
            return Err(refused(refusal));
        }
    };
    // The signature holds: from here on the claims are the issuer's word,
    // and refusals are audited under them.
    let subject = claim_text(&claims, "sub");
    let token_issuer = claim_text(&claims, "iss");
    let actor = format!("oidc:{}", role.name);
    let now = state.clock.now();
    let checked = verify::registered_claims(&claims, issuer, role, now, oidc.leeway)
        .and_then(|()| verify::bound_claims(&claims, &role.bound_claims, &role.name))
        .and_then(|()| claim_single_use(oidc, issuer, role, &claims, now));
    if let Err(refusal) = checked {
        if refusal.code == "single_use_busy" {
            return Err(AdminError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                refusal.code,
                refusal.message,
            ));
        }
        tracing::info!(role = %role.name, subject = %subject, code = refusal.code, reason = %refusal.message, "OIDC login refused");
        // Refused either way; an audit failure does not change the answer.
        let now_ns = i64::try_from(now.unix_timestamp_nanos()).unwrap_or(i64::MAX);
        if oidc.refusals_audited.acquire(1, now_ns).is_ok() {
            let _ = audit_as(
                &state,
                &actor,
                "oidc.refused",
                json!({"role": role.name, "issuer": token_issuer, "subject": subject, "reason": refusal.message}),
            )
            .await;
        }
        return Err(refused(refusal));
    }
    let name = request.name.unwrap_or_else(|| {
        let mut name = format!("{}: {subject}", role.name);
        name.truncate(name.char_indices().nth(100).map_or(name.len(), |(i, _)| i));
        name
    });
    let spec = mint::KeySpec {
        name,
        env: Some(role.env.clone()),
        providers: role.providers.clone(),
        models: role.models.clone(),
        ttl: Some(
            Ttl::from_seconds(ttl.as_secs().max(1))
                .map_err(|error| AdminError::bad_request(error.to_string()))?,
        ),
        project: role.project.clone(),
        budgets: role.budgets.clone(),
        limits: role.limits,
        on_anomaly: role.on_anomaly,
        can_mint: role.can_mint,
        // Workload keys are named by the exchange, not by the admin.
        allow_duplicate_name: true,
    };
    let minter = mint::Minter {
        actor: actor.clone(),
        origin: actor,
        detail: json!({"oidc": {
            "role": role.name,
            "issuer": token_issuer,
            "subject": subject,
            "jti": claim_text(&claims, "jti"),
        }}),
    };
    let minted = match mint::mint(&state, spec, None, minter).await {
        Ok(minted) => minted,
        Err(error) => {
            // Nothing was exchanged: the token may be tried again.
            if role.single_use
                && let Some(jti) = claims.get("jti").and_then(Value::as_str)
            {
                oidc.used_tokens.release(&issuer.name, jti);
            }
            return Err(error);
        }
    };
    tracing::info!(role = %role.name, subject = %subject, key_id = %minted.entry.record.id, "OIDC login: key minted");
    Ok((
        StatusCode::CREATED,
        axum::Json(created_key(&minted, state.clock.now())),
    ))
}
