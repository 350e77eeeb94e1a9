//! Workload identity: a CI job or a pod trades the OIDC token its platform
//! gives it (GitHub Actions, Kubernetes service accounts, any OIDC issuer)
//! for a short-lived `kf_` key, at `POST /keyforge/v1/oidc/login`. No
//! static key is handed out, so none can leak from a CI variable.
//!
//! This module is the verifying half, held in the gateway's state: the
//! configured issuers with their key caches ([`jwks`]), the checks of a
//! token against its issuer and role ([`verify`]) and the memory of
//! single-use tokens ([`single_use`]). It imports nothing of the admin API
//! or of the state; the exchange handler that mints the key is
//! `admin/oidc_login.rs`.

/// Issuers and roles as configured (`[[oidc.issuer]]`, `[[oidc.role]]`):
/// plain configuration, kept with the rest of it in `crate::config`.
pub use crate::config::oidc as config;
pub(crate) mod jwks;
pub(crate) mod single_use;
pub(crate) mod verify;

use std::collections::HashMap;

use serde_json::Value;

use self::config::{IssuerConfig, OidcConfig, RoleConfig};
use self::jwks::Jwks;
use self::verify::Refusal;

/// Refusals of signed tokens audited per minute, at most. Anyone on a
/// shared issuer (every GitHub repository can get a GitHub token for any
/// audience) can send validly signed tokens that no role accepts; past this
/// rate they are only logged, so they cannot flood the audit log.
const REFUSALS_AUDITED_PER_MINUTE: u64 = 60;

/// The configured issuers and roles, with each issuer's key cache.
#[derive(Debug)]
pub(crate) struct Oidc {
    pub(crate) leeway: std::time::Duration,
    pub(crate) issuers: HashMap<String, (IssuerConfig, Jwks)>,
    pub(crate) roles: HashMap<String, RoleConfig>,
    /// Valid tokens refused by a role that are audited a minute, at most.
    pub(crate) refusals_audited: keyforge_control::RateLimiter,
    /// Tokens exchanged for roles with `single_use = true`.
    pub(crate) used_tokens: single_use::UsedTokens,
}

impl Oidc {
    pub(crate) fn new(config: &OidcConfig) -> Self {
        Self {
            leeway: config.leeway,
            issuers: config
                .issuers
                .iter()
                .map(|issuer| (issuer.name.clone(), (issuer.clone(), Jwks::new(issuer))))
                .collect(),
            roles: config
                .roles
                .iter()
                .map(|role| (role.name.clone(), role.clone()))
                .collect(),
            refusals_audited: keyforge_control::RateLimiter::new(REFUSALS_AUDITED_PER_MINUTE),
            used_tokens: single_use::UsedTokens::default(),
        }
    }
}

/// For a `single_use` role, records the token's `jti` as exchanged, or
/// refuses it: a token without a `jti` (it could not be told from its
/// replays) and a token exchanged before (`token_already_used`). Runs last,
/// once every other check passed, so a token refused for another reason is
/// not used up.
pub(crate) fn claim_single_use(
    oidc: &Oidc,
    issuer: &IssuerConfig,
    role: &RoleConfig,
    claims: &serde_json::Map<String, Value>,
    now: time::OffsetDateTime,
) -> Result<(), Refusal> {
    if !role.single_use {
        return Ok(());
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|jti| !jti.is_empty())
        .ok_or_else(|| Refusal {
            forbidden: false,
            code: "invalid_token",
            message: format!(
                "role `{}` is single-use and accepts only tokens with a `jti`, which this one has not",
                role.name
            ),
        })?;
    if jti.len() > single_use::MAX_JTI_BYTES {
        return Err(Refusal {
            forbidden: false,
            code: "invalid_token",
            message: format!(
                "the token's `jti` is longer than {} bytes",
                single_use::MAX_JTI_BYTES
            ),
        });
    }
    let leeway = i64::try_from(oidc.leeway.as_secs()).unwrap_or(0);
    let now = now.unix_timestamp();
    // `registered_claims` has checked that `exp` is there and a number.
    let expires_at = verify::timestamp(claims, "exp")?
        .unwrap_or(now)
        .saturating_add(leeway);
    oidc.used_tokens
        .claim(&issuer.name, jti, expires_at, now)
        .map_err(|reuse| match reuse {
            single_use::Reuse::AlreadyUsed => Refusal {
                forbidden: false,
                code: "token_already_used",
                message: format!(
                    "this token was already exchanged, and role `{}` is single-use: get a fresh token from the issuer",
                    role.name
                ),
            },
            single_use::Reuse::Full => Refusal {
                forbidden: false,
                code: "single_use_busy",
                message: "too many single-use tokens are outstanding on this gateway; retry in a minute"
                    .to_owned(),
            },
        })
}
