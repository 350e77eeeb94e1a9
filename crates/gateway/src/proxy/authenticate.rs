//! `kf_` key -> keyed hash -> cached record. Malformed keys (bad checksum)
//! are refused before any lookup.

use std::sync::Arc;

use http::request::Parts;
use keyforge_providers::{CredentialError, ErrorClass, extract_client_credential};

use super::RequestContext;
use crate::error::GatewayError;
use crate::snapshot::{KeyEntry, Snapshot};
use crate::state::AppState;

pub(crate) struct Authenticated {
    pub(crate) entry: Arc<KeyEntry>,
    /// The client's key text, kept only to scrub it from upstream errors.
    pub(crate) key: keyforge_types::VirtualKey,
}

pub(crate) fn authenticate(
    state: &AppState,
    snapshot: &Snapshot,
    parts: &Parts,
    ctx: &mut RequestContext,
) -> Result<Authenticated, GatewayError> {
    let credential =
        extract_client_credential(&parts.headers, parts.uri.query()).map_err(|error| {
            let code = match error {
                CredentialError::Missing => "missing_api_key",
                CredentialError::ProviderKey(_) => "provider_key_not_allowed",
                CredentialError::Malformed(_) | CredentialError::NotAKeyForgeKey => {
                    "invalid_api_key"
                }
            };
            GatewayError::client(ErrorClass::Authentication, code, error.to_string())
        })?;
    let hash = state.hasher.hash(&credential.key);
    let entry = match snapshot.find_key(&hash) {
        Some((entry, None)) => entry.clone(),
        // An earlier secret of a rotated key, in (or past) its grace window.
        Some((entry, Some(valid_until))) if state.clock.now() < valid_until => entry.clone(),
        Some((entry, Some(valid_until))) => {
            let ended = valid_until
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            ctx.key_id = Some(entry.record.id.clone());
            return Err(GatewayError::client(
                ErrorClass::Authentication,
                "key_rotated",
                format!(
                    "this secret of KeyForge key {} was replaced by a rotation; its grace period ended at {ended}: use the new key",
                    entry.record.id
                ),
            ));
        }
        None => {
            if let Some(id) = snapshot.refused_keys.get(&hash) {
                ctx.key_id = Some(id.clone());
                return Err(integrity_refused(id));
            }
            return Err(GatewayError::client(
                ErrorClass::Authentication,
                "invalid_api_key",
                "unknown KeyForge key: this gateway never issued it, or it was revoked or expired more than 30 days ago",
            ));
        }
    };
    ctx.key_id = Some(entry.record.id.clone());
    ctx.key = Some(entry.clone());
    Ok(Authenticated {
        entry,
        key: credential.key,
    })
}

/// A key whose row (or an ancestor's) failed its integrity check.
pub(crate) fn integrity_refused(id: &keyforge_types::KeyId) -> GatewayError {
    GatewayError::client(
        ErrorClass::Authentication,
        "key_integrity_failed",
        format!(
            "KeyForge key {id} failed its integrity check (its record in the store was edited outside KeyForge) and is refused; an operator has been alerted"
        ),
    )
}
