//! The admin API (`/admin/v1/...`), used by the CLI. Every route requires the
//! admin token; `kf_` proxy keys are refused here whatever their scope.

pub mod api;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use keyforge_providers::ProviderKind;
use keyforge_store::{CredentialRecord, NewProvider, RevokeOutcome, StoreError, VirtualKeyRecord};
use keyforge_types::{KeyId, ProviderId, ProviderSecret, Scope, Ttl, VirtualKey};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use self::api::{
    CreateKeyRequest, CreateProviderRequest, CreatedKey, ErrorBody, ErrorDetail, KeyList, KeyView,
    ProviderList, ProviderView, RevokeResult,
};
use crate::snapshot::{ProviderEntry, credential_aad};
use crate::state::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/providers", get(list_providers).post(create_provider))
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}", get(show_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .fallback(|| async {
            AdminError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        })
        .layer(middleware::from_fn_with_state(state, require_admin_token))
}

/// An admin API error: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    fn store(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            other => {
                tracing::error!(error = %other, "admin request failed in the store");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store could not complete the change; nothing was changed",
                )
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

async fn require_admin_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        None => AdminError::new(
            StatusCode::UNAUTHORIZED,
            "missing_admin_token",
            "the admin API needs `Authorization: Bearer <admin token>`",
        )
        .into_response(),
        Some(token) if VirtualKey::looks_like(token) => AdminError::new(
            StatusCode::FORBIDDEN,
            "proxy_key_not_allowed",
            "KeyForge proxy keys (kf_...) cannot call the admin API; use the admin token",
        )
        .into_response(),
        Some(token) => {
            #[expect(
                clippy::disallowed_methods,
                reason = "the admin token is compared in constant time and goes nowhere else"
            )]
            let expected = state.admin_token.expose_secret().as_bytes();
            if bool::from(token.as_bytes().ct_eq(expected)) {
                next.run(request).await
            } else {
                AdminError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_admin_token",
                    "the admin token is not valid",
                )
                .into_response()
            }
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|error| AdminError::bad_request(format!("invalid request body: {error}")))
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

fn provider_view(entry: &ProviderEntry) -> ProviderView {
    ProviderView {
        id: entry.record.id.clone(),
        name: entry.record.name.clone(),
        kind: entry.kind.as_str().to_owned(),
        env: entry.record.env.clone(),
        base_url: entry.base_url.clone(),
        credential_version: entry.record.current.version,
        created_at: rfc3339(entry.record.created_at),
    }
}

fn key_view(record: &VirtualKeyRecord, now: OffsetDateTime) -> KeyView {
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else {
        "active"
    };
    KeyView {
        id: record.id.clone(),
        name: record.name.clone(),
        env: record.env.clone(),
        prefix: record.prefix.clone(),
        scope: record.scope.clone(),
        status: status.to_owned(),
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.map(rfc3339),
        revoked_at: record.revoked_at.map(rfc3339),
    }
}

async fn reload(state: &AppState) -> Result<(), AdminError> {
    state.reload().await.map_err(|error| {
        tracing::error!(error = %error, "could not rebuild the in-memory snapshot after a change");
        AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_failed",
            "the change was stored but the gateway could not reload it; restart the gateway",
        )
    })
}

async fn list_providers(State(state): State<Arc<AppState>>) -> axum::Json<ProviderList> {
    let snapshot = state.snapshot.load();
    let mut providers: Vec<ProviderView> = snapshot
        .providers
        .values()
        .map(|entry| provider_view(entry))
        .collect();
    providers.sort_by(|a, b| (&a.env, &a.name).cmp(&(&b.env, &b.name)));
    axum::Json(ProviderList { providers })
}

async fn create_provider(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<ProviderView>), AdminError> {
    let request: CreateProviderRequest = parse_json(&body)?;
    let kind = ProviderKind::parse(&request.kind)
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    let secret = ProviderSecret::parse(&request.api_key)
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    let base_url = match (&request.base_url, kind.default_base_url()) {
        (Some(url), _) => Some(validate_base_url(url)?),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(AdminError::bad_request(format!(
                "a {kind} provider needs a base URL (--base-url)"
            )));
        }
    };
    let id = ProviderId::generate();
    let now = state.clock.now();
    #[expect(
        clippy::disallowed_methods,
        reason = "the provider key is sealed here and goes nowhere else"
    )]
    let plaintext = secret.expose().as_bytes();
    let sealed = state
        .sealer
        .seal(plaintext, &credential_aad(id.as_str(), 1));
    let provider = NewProvider {
        id: id.clone(),
        name: request.name.clone(),
        env: request.env.clone(),
        kind: kind.as_str().to_owned(),
        base_url,
        created_at: now,
        credential: CredentialRecord {
            version: 1,
            sealed,
            created_at: now,
        },
    };
    let _guard = state.admin_write.lock().await;
    state
        .store
        .insert_provider(&provider)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(provider_id = %id, provider = %request.name, env = %request.env, kind = %kind, "provider added");
    let snapshot = state.snapshot.load();
    let entry = snapshot
        .providers
        .get(&(request.env.clone(), request.name.clone()))
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reload_failed",
                "the provider was stored but is missing after reload",
            )
        })?;
    Ok((StatusCode::CREATED, axum::Json(provider_view(entry))))
}

fn validate_base_url(text: &str) -> Result<String, AdminError> {
    let uri: http::Uri = text
        .parse()
        .map_err(|error| AdminError::bad_request(format!("base URL is not a URL: {error}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(AdminError::bad_request(
            "base URL must start with http:// or https:// and name a host",
        ));
    }
    if uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return Err(AdminError::bad_request(
            "base URL must not carry credentials; the API key is read separately",
        ));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(AdminError::bad_request(
            "base URL must not have a query or fragment",
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

async fn list_keys(State(state): State<Arc<AppState>>) -> axum::Json<KeyList> {
    let now = state.clock.now();
    let snapshot = state.snapshot.load();
    let mut keys: Vec<KeyView> = snapshot
        .keys
        .values()
        .map(|record| key_view(record, now))
        .collect();
    keys.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    axum::Json(KeyList { keys })
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<CreatedKey>), AdminError> {
    let request: CreateKeyRequest = parse_json(&body)?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(AdminError::bad_request(
            "key name must be 1 to 100 printable characters",
        ));
    }
    let ttl = request
        .ttl
        .as_deref()
        .map(Ttl::parse)
        .transpose()
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    {
        let snapshot = state.snapshot.load();
        for provider in &request.providers {
            if !snapshot
                .providers
                .contains_key(&(request.env.clone(), provider.clone()))
            {
                return Err(AdminError::bad_request(format!(
                    "no provider named `{provider}` in environment `{}`",
                    request.env
                )));
            }
        }
    }
    let virtual_key = VirtualKey::generate(&request.env);
    let now = state.clock.now();
    let record = VirtualKeyRecord {
        id: KeyId::generate(),
        name: name.to_owned(),
        env: request.env.clone(),
        hash: state.hasher.hash(&virtual_key),
        prefix: virtual_key.display_prefix(),
        scope: Scope {
            providers: request.providers,
            models: request.models,
        },
        created_at: now,
        expires_at: ttl.map(|ttl| now + ttl.as_duration()),
        revoked_at: None,
    };
    let _guard = state.admin_write.lock().await;
    state
        .store
        .insert_virtual_key(&record)
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(key_id = %record.id, env = %record.env, "virtual key created");
    #[expect(
        clippy::disallowed_methods,
        reason = "the one time a new key is shown: in the creation response to the admin"
    )]
    let key = virtual_key.secret().expose_secret().to_owned();
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedKey {
            key,
            view: key_view(&record, now),
        }),
    ))
}

fn parse_key_id(text: &str) -> Result<KeyId, AdminError> {
    KeyId::parse(text).map_err(|error| AdminError::bad_request(error.to_string()))
}

async fn show_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, AdminError> {
    let id = parse_key_id(&id)?;
    let snapshot = state.snapshot.load();
    let record = snapshot
        .keys
        .values()
        .find(|record| record.id == id)
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            )
        })?;
    Ok(axum::Json(key_view(record, state.clock.now())))
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<RevokeResult>, AdminError> {
    let id = parse_key_id(&id)?;
    let _guard = state.admin_write.lock().await;
    let outcome = state
        .store
        .revoke_virtual_key(&id, state.clock.now())
        .await
        .map_err(AdminError::store)?;
    let outcome = match outcome {
        RevokeOutcome::NotFound => {
            return Err(AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            ));
        }
        RevokeOutcome::AlreadyRevoked => "already_revoked",
        RevokeOutcome::Revoked => "revoked",
    };
    reload(&state).await?;
    tracing::info!(key_id = %id, outcome, "virtual key revoked");
    Ok(axum::Json(RevokeResult {
        id,
        outcome: outcome.to_owned(),
    }))
}
