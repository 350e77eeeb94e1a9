//! Verifying a workload's OIDC token: its algorithm (RS256 or ES256, never
//! `none` or a shared-secret HMAC), its signature under the issuer's key
//! named by `kid` (and of that key's type), then `iss`, `aud`, `exp`, `nbf`
//! and `iat` on the gateway's clock with a small leeway, then the role's
//! bound claims. Each refusal says which check failed.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::config::{ClaimBinding, IssuerConfig, RoleConfig};

/// The pure header parser, in a file of its own so `fuzz/` can include it.
#[path = "jwt_header.rs"]
mod jwt_header;

/// A refused token.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// 401 for a token that is not valid, 403 for a valid token this role
    /// does not accept.
    pub(crate) forbidden: bool,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

fn invalid(message: impl Into<String>) -> Refusal {
    Refusal {
        forbidden: false,
        code: "invalid_token",
        message: message.into(),
    }
}

/// The algorithm a token's header names, read before anything else so a
/// bad one is refused by name.
pub(crate) struct Header {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
}

pub(crate) fn header(token: &str) -> Result<Header, Refusal> {
    let header = jwt_header::parse_header(token).map_err(invalid)?;
    let alg = match header.alg {
        jwt_header::JwtAlg::Rs256 => Algorithm::RS256,
        jwt_header::JwtAlg::Es256 => Algorithm::ES256,
    };
    Ok(Header {
        alg,
        kid: header.kid,
    })
}

/// Whether `jwk` is a key for `alg`: RSA for RS256, P-256 for ES256, and if
/// the key names its algorithm or use, those agree.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let type_fits = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    let alg_fits = matches!(
        (&jwk.common.key_algorithm, alg),
        (None, _)
            | (Some(KeyAlgorithm::RS256), Algorithm::RS256)
            | (Some(KeyAlgorithm::ES256), Algorithm::ES256)
    );
    let use_fits = jwk
        .common
        .public_key_use
        .as_ref()
        .is_none_or(|key_use| matches!(key_use, jsonwebtoken::jwk::PublicKeyUse::Signature));
    type_fits && alg_fits && use_fits
}

/// Checks the signature and returns the claims (not yet validated).
pub(crate) fn signature(
    token: &str,
    header: &Header,
    keys: &JwkSet,
    issuer: &IssuerConfig,
) -> Result<Map<String, Value>, Refusal> {
    let jwk = match &header.kid {
        Some(kid) => keys.find(kid).ok_or_else(|| {
            let shown: String = kid.chars().take(64).collect();
            invalid(format!(
                "the issuer `{}` has no signing key `{shown}` (its keys were fetched and this one is not among them)",
                issuer.name
            ))
        })?,
        None => {
            let fitting: Vec<&Jwk> = keys
                .keys
                .iter()
                .filter(|jwk| key_fits(jwk, header.alg))
                .collect();
            match fitting.as_slice() {
                [one] => *one,
                [] => {
                    return Err(invalid(format!(
                        "the issuer `{}` has no {:?} key",
                        issuer.name, header.alg
                    )));
                }
                _ => {
                    return Err(invalid(
                        "the token names no `kid` and the issuer has several keys",
                    ));
                }
            }
        }
    };
    if !key_fits(jwk, header.alg) {
        return Err(invalid(format!(
            "the token says {:?} but its key `{}` is not a key for {:?}",
            header.alg,
            jwk.common.key_id.as_deref().unwrap_or("?"),
            header.alg
        )));
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|_| invalid("the issuer's key for this token is malformed"))?;
    let mut validation = Validation::new(header.alg);
    // Time and audience are checked below on the gateway's clock, with
    // clear messages; the library checks the algorithm and signature.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|error| {
            match error.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    invalid("the token's signature does not verify under the issuer's key")
                }
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    invalid("the token's algorithm does not match its key")
                }
                _ => invalid("the token could not be decoded"),
            }
        })?;
    Ok(data.claims)
}

pub(crate) fn timestamp(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Refusal> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| invalid(format!("the token's `{name}` is not a number"))),
    }
}

fn when(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| seconds.to_string())
}

/// `iss`, `aud`, `exp`, `nbf`, `iat`, and a subject.
pub(crate) fn registered_claims(
    claims: &Map<String, Value>,
    issuer: &IssuerConfig,
    role: &RoleConfig,
    now: OffsetDateTime,
    leeway: std::time::Duration,
) -> Result<(), Refusal> {
    registered_claims_for(
        claims,
        issuer,
        &role.bound_audiences,
        &format!("role `{}`", role.name),
        now,
        leeway,
    )
}

/// [`registered_claims`] for any use: `audiences` accepted, `what` the
/// token is for in messages (`role `ci``, `the admin login`).
pub(crate) fn registered_claims_for(
    claims: &Map<String, Value>,
    issuer: &IssuerConfig,
    audiences_accepted: &[String],
    what: &str,
    now: OffsetDateTime,
    leeway: std::time::Duration,
) -> Result<(), Refusal> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    if super::config::normalize_issuer(iss) != super::config::normalize_issuer(&issuer.url) {
        let shown: String = iss.chars().take(200).collect();
        return Err(invalid(format!(
            "the token was issued by `{shown}`, not by `{}` (the issuer of {what})",
            issuer.url
        )));
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .any(|aud| audiences_accepted.iter().any(|bound| bound == aud))
    {
        let shown: Vec<String> = audiences
            .iter()
            .take(5)
            .map(|a| a.chars().take(100).collect())
            .collect();
        return Err(invalid(format!(
            "the token's audience {shown:?} does not include {audiences_accepted:?}; mint it for that audience",
        )));
    }
    let now = now.unix_timestamp();
    let leeway = i64::try_from(leeway.as_secs()).unwrap_or(0);
    let exp = timestamp(claims, "exp")?
        .ok_or_else(|| invalid("the token has no `exp`: tokens without an expiry are refused"))?;
    if now > exp + leeway {
        return Err(invalid(format!(
            "the token expired at {} (it is now {})",
            when(exp),
            when(now)
        )));
    }
    if let Some(nbf) = timestamp(claims, "nbf")?
        && now + leeway < nbf
    {
        return Err(invalid(format!(
            "the token is not valid before {} (it is now {})",
            when(nbf),
            when(now)
        )));
    }
    let iat = timestamp(claims, "iat")?.ok_or_else(|| invalid("the token has no `iat`"))?;
    if iat > now + leeway {
        return Err(invalid(format!(
            "the token says it was issued at {}, in the future (it is now {}); check the clocks",
            when(iat),
            when(now)
        )));
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(invalid("the token has no `sub`"));
    }
    Ok(())
}

/// A claim by name, or by `a/b/c` path into nested objects
/// (`kubernetes.io/serviceaccount/name`).
pub(crate) fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('/');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Number(number) => vec![number.to_string()],
        Value::Bool(flag) => vec![flag.to_string()],
        Value::Array(items) => items.iter().flat_map(texts).collect(),
        _ => Vec::new(),
    }
}

/// Every bound claim must be present and match one of its patterns. The
/// message names the claim and the token's value, never the role's
/// patterns.
pub(crate) fn bound_claims(
    claims: &Map<String, Value>,
    bindings: &[ClaimBinding],
    role: &str,
) -> Result<(), Refusal> {
    for binding in bindings {
        let Some(value) = claim(claims, &binding.claim) else {
            return Err(Refusal {
                forbidden: true,
                code: "claims_not_bound",
                message: format!(
                    "role `{role}` requires the claim `{}`, which the token does not have",
                    binding.claim
                ),
            });
        };
        let values = texts(value);
        let matched = values.iter().any(|text| {
            binding
                .patterns
                .iter()
                .any(|pattern| keyforge_types::glob_match(pattern.as_bytes(), text.as_bytes()))
        });
        if !matched {
            let shown: String = values.join(",").chars().take(200).collect();
            return Err(Refusal {
                forbidden: true,
                code: "claims_not_bound",
                message: format!(
                    "role `{role}` does not accept this token: its `{}` is `{shown}`",
                    binding.claim
                ),
            });
        }
    }
    Ok(())
}
