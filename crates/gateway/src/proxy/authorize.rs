//! Is this key still usable, and may it reach this provider and model?
//! Everything not explicitly allowed is denied.

use std::sync::Arc;

use http::request::Parts;
use keyforge_providers::{
    DecodeError, ErrorClass, RequestError, RequestFacts, RequestModel, content_codings,
    decode_request_body, inspect,
};
use keyforge_store::VirtualKeyRecord;
use time::OffsetDateTime;

use super::RequestContext;
use super::authenticate::Authenticated;
use super::route::{Route, Selector};
use crate::error::GatewayError;
use crate::snapshot::{Credential, ProviderEntry, Snapshot};

/// Where a request goes.
pub(crate) struct Target {
    pub(crate) provider: Arc<ProviderEntry>,
    /// Serve with the pending key version (a gradual rollout's share).
    pending: bool,
    pub(crate) upstream_path: String,
    /// What the request body says: model, caps, copies, input size, units.
    pub(crate) facts: RequestFacts,
    /// The body was sent compressed (`Content-Encoding`): it is forwarded
    /// as received, so the gateway cannot edit it.
    pub(crate) encoded: bool,
}

impl Target {
    /// The provider key version this request uses, from start to end.
    pub(crate) fn credential(&self) -> &Credential {
        match (&self.provider.pending, self.pending) {
            (Some(pending), true) => pending,
            _ => &self.provider.current,
        }
    }
}

pub(crate) fn key_is_usable(key: &Authenticated, now: OffsetDateTime) -> Result<(), GatewayError> {
    crate::snapshot::entry_is_usable(&key.entry, now)
}

pub(crate) fn target(
    snapshot: &Snapshot,
    key: &Authenticated,
    route: &Route,
    parts: &Parts,
    body: &[u8],
    max_decoded: usize,
    ctx: &mut RequestContext,
) -> Result<Target, GatewayError> {
    let record = &key.entry.record;
    let provider = select_provider(snapshot, record, &route.selector)?;
    ctx.api = provider.kind.api();
    ctx.provider = Some(provider.record.name.clone());

    let header = |name: http::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
    };
    let content_encoding = content_codings(&parts.headers);
    // A compressed body is inspected decompressed (bounded like any body)
    // and forwarded as received.
    let decoded = decode_request_body(content_encoding.as_deref(), body, max_decoded)
        .map_err(decode_error)?;
    let facts = inspect(
        provider.kind.api(),
        &parts.method,
        &route.upstream_path,
        header(http::header::CONTENT_TYPE),
        &decoded,
    )
    .map_err(|error| {
        let code = match error {
            RequestError::DuplicateKey { .. } => "duplicate_json_key",
            RequestError::MalformedJson(_) | RequestError::ModelNotString => "invalid_json",
        };
        GatewayError::client(ErrorClass::InvalidRequest, code, error.to_string())
    })?;
    // Every other model the request makes the provider run is in scope too.
    if let Some(other) = facts
        .other_models
        .iter()
        .find(|model| !record.scope.allows_model(model))
    {
        let shown: String = other.chars().take(100).collect();
        return Err(GatewayError::client(
            ErrorClass::PermissionDenied,
            "model_not_allowed",
            format!(
                "KeyForge key {} may not use model `{shown}`, which this request names for a tool or as a fallback (allowed: {})",
                record.id,
                allowed_models(record)
            ),
        ));
    }
    match facts.model.clone() {
        RequestModel::Named(model) => {
            if !record.scope.allows_model(&model) {
                let shown: String = model.chars().take(100).collect();
                return Err(GatewayError::client(
                    ErrorClass::PermissionDenied,
                    "model_not_allowed",
                    format!(
                        "KeyForge key {} may not use model `{shown}` (allowed: {})",
                        record.id,
                        allowed_models(record)
                    ),
                ));
            }
            ctx.model = Some(model);
        }
        RequestModel::Listing => {}
        RequestModel::Unknown if record.scope.restricts_models() => {
            return Err(GatewayError::client(
                ErrorClass::PermissionDenied,
                "model_not_allowed",
                format!(
                    "KeyForge key {} is limited to models {} and this request names no model",
                    record.id,
                    allowed_models(record)
                ),
            ));
        }
        RequestModel::Unknown => {}
    }
    let pending = !std::ptr::eq(provider.pick(), &provider.current);
    Ok(Target {
        provider,
        pending,
        upstream_path: route.upstream_path.clone(),
        facts,
        encoded: content_encoding.is_some(),
    })
}

fn decode_error(error: DecodeError) -> GatewayError {
    match error {
        DecodeError::TooLarge { .. } => GatewayError::client(
            ErrorClass::RequestTooLarge,
            "body_too_large",
            error.to_string(),
        ),
        DecodeError::UnknownEncoding(_) | DecodeError::Corrupt { .. } => GatewayError::client(
            ErrorClass::InvalidRequest,
            "invalid_content_encoding",
            error.to_string(),
        ),
    }
}

fn allowed_models(record: &VirtualKeyRecord) -> String {
    record
        .scope
        .models
        .iter()
        .map(|pattern| pattern.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn select_provider(
    snapshot: &Snapshot,
    record: &VirtualKeyRecord,
    selector: &Selector,
) -> Result<Arc<ProviderEntry>, GatewayError> {
    let env = &record.env;
    match selector {
        Selector::Named(name) => {
            if let Some(id) = snapshot.refused_providers.get(&(env.clone(), name.clone())) {
                return Err(provider_integrity_refused(name, env, id));
            }
            let entry = snapshot
                .providers
                .get(&(env.clone(), name.clone()))
                .ok_or_else(|| {
                    GatewayError::client(
                        ErrorClass::NotFound,
                        "provider_not_found",
                        format!("no provider named `{name}` in environment `{env}`"),
                    )
                })?;
            if !record.scope.allows_provider(name) {
                return Err(GatewayError::client(
                    ErrorClass::PermissionDenied,
                    "provider_not_allowed",
                    format!("KeyForge key {} may not use provider `{name}`", record.id),
                ));
            }
            Ok(entry.clone())
        }
        Selector::Kind(kind) => {
            let of_kind: Vec<&Arc<ProviderEntry>> = snapshot
                .providers_in(env)
                .filter(|entry| entry.kind == *kind)
                .collect();
            let allowed: Vec<&Arc<ProviderEntry>> = of_kind
                .iter()
                .copied()
                .filter(|entry| record.scope.allows_provider(&entry.record.name))
                .collect();
            match (allowed.as_slice(), of_kind.is_empty()) {
                ([one], _) => Ok((*one).clone()),
                ([], true)
                    if let Some(((_, name), id)) = snapshot
                        .refused_providers
                        .iter()
                        .find(|((e, _), _)| e == env) =>
                {
                    Err(provider_integrity_refused(name, env, id))
                }
                ([], true) => Err(GatewayError::client(
                    ErrorClass::NotFound,
                    "provider_not_found",
                    format!(
                        "no {kind} provider is configured in environment `{env}` (add one with `keyforge provider add NAME --kind {kind} --env {env}`)"
                    ),
                )),
                ([], false) => Err(GatewayError::client(
                    ErrorClass::PermissionDenied,
                    "provider_not_allowed",
                    format!("KeyForge key {} may not use any {kind} provider", record.id),
                )),
                (several, _) => {
                    let mut names: Vec<&str> = several
                        .iter()
                        .map(|entry| entry.record.name.as_str())
                        .collect();
                    names.sort_unstable();
                    Err(GatewayError::client(
                        ErrorClass::InvalidRequest,
                        "ambiguous_provider",
                        format!(
                            "environment `{env}` has several {kind} providers ({}); address one as /p/NAME/...",
                            names.join(", ")
                        ),
                    ))
                }
            }
        }
    }
}

/// A provider whose row failed its integrity check: its key is never sent.
fn provider_integrity_refused(
    name: &keyforge_types::ProviderName,
    env: &keyforge_types::EnvName,
    id: &keyforge_types::ProviderId,
) -> GatewayError {
    GatewayError {
        class: ErrorClass::Unavailable,
        code: "provider_integrity_failed",
        message: format!(
            "provider `{name}` ({id}) in environment `{env}` failed its integrity check (its record in the store was edited outside KeyForge); requests to it are refused until an operator repairs it"
        ),
        fault: crate::error::Fault::Internal,
        headers: None,
    }
}
