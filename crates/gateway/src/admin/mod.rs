//! The admin API (`/admin/v1/...`), used by the CLI. Every route requires a
//! named admin's token (`kfa_...`, or the legacy `admin.token`, which is
//! the `owner` admin's); `kf_` proxy keys are refused here whatever their
//! scope. Then the route table in [`access`] decides, deny by default,
//! whether the admin's role may call the route (a wrong method on a route
//! the role may use is a 405 with `Allow`); every audit entry made here
//! names the admin as `admin:NAME`.

pub(crate) mod access;
pub(crate) mod admins;
mod alerts;
pub mod api;
pub mod audit_log;
pub mod backup;
mod budgets;
pub(crate) mod doctor;
pub(crate) mod edit;
pub(crate) mod mint;
mod oidc_login;
pub mod range;
mod rotation;
pub(crate) mod self_service;
pub mod sessions;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::StatusCode;
use keyforge_providers::ProviderKind;
use keyforge_store::{CredentialRecord, NewProvider, RevokeOutcome, StoreError};
use keyforge_types::{KeyId, ProviderId, ProviderSecret, Ttl, VirtualKey};
use secrecy::ExposeSecret;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use self::api::{
    CreateKeyRequest, CreateProviderRequest, CreatedKey, ErrorBody, ErrorDetail, KeyList, KeyView,
    PriceList, PriceView, ProviderList, ProviderView, RevokeResult, UsageReport, UsageRowView,
};
use crate::snapshot::{KeyEntry, ProviderEntry, credential_aad};
use crate::state::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    routes()
        .0
        .layer(middleware::from_fn_with_state(state, require_admin))
}

/// Every admin route, and the (method, path) pairs it was built from: the
/// test of [`access`] walks these to prove each one has a minimum role.
/// Routes are added only through [`Routes::add`], so the list is the
/// router's own.
pub(crate) fn routes() -> (Router<Arc<AppState>>, Vec<(http::Method, &'static str)>) {
    use axum::routing::{delete, patch};
    use http::Method;
    Routes::default()
        .add(Method::GET, "/providers", get(list_providers))
        .add(Method::POST, "/providers", post(create_provider))
        .add(
            Method::PATCH,
            "/providers/{id}",
            patch(edit::update_provider),
        )
        .add(
            Method::DELETE,
            "/providers/{id}",
            delete(edit::remove_provider),
        )
        .add(
            Method::GET,
            "/providers/{id}/rotation",
            get(rotation::status),
        )
        .add(
            Method::POST,
            "/providers/{id}/rotation",
            post(rotation::start),
        )
        .add(
            Method::POST,
            "/providers/{id}/rotation/promote",
            post(rotation::promote),
        )
        .add(
            Method::POST,
            "/providers/{id}/rotation/finish",
            post(rotation::finish),
        )
        .add(
            Method::POST,
            "/providers/{id}/rotation/rollback",
            post(rotation::rollback),
        )
        .add(
            Method::POST,
            "/providers/{id}/rotation/cancel",
            post(rotation::cancel),
        )
        .add(Method::GET, "/keys", get(list_keys))
        .add(Method::POST, "/keys", post(create_key))
        .add(Method::GET, "/keys/{id}", get(show_key))
        .add(Method::PATCH, "/keys/{id}", patch(edit::update_key))
        .add(Method::POST, "/keys/revoke", post(revoke_keys))
        .add(Method::POST, "/keys/{id}/revoke", post(revoke_key))
        .add(Method::POST, "/keys/{id}/resume", post(resume_key))
        .add(Method::POST, "/keys/{id}/rotate", post(rotate_key))
        .add(Method::GET, "/budgets", get(budgets::list))
        .add(Method::POST, "/budgets", post(budgets::set))
        .add(Method::DELETE, "/budgets/{id}", delete(budgets::delete))
        .add(Method::GET, "/alerts", get(alerts::list))
        .add(Method::POST, "/alerts", post(alerts::add))
        .add(Method::GET, "/alerts/log", get(alerts::log))
        .add(Method::POST, "/alerts/test", post(alerts::test))
        .add(Method::DELETE, "/alerts/{id}", delete(alerts::remove))
        .add(Method::GET, "/status", get(status::status))
        .add(Method::GET, "/audit", get(audit_log::tail))
        .add(Method::GET, "/audit/export", get(audit_log::export))
        .add(Method::GET, "/audit/verify", get(audit_log::check))
        .add(Method::POST, "/backup", post(backup::backup))
        .add(Method::GET, "/doctor", get(doctor::doctor))
        .add(Method::GET, "/usage", get(usage))
        .add(Method::GET, "/prices", get(prices))
        .add(Method::GET, "/admins", get(admins::list))
        .add(Method::POST, "/admins", post(admins::add))
        .add(Method::POST, "/admins/{name}/revoke", post(admins::revoke))
        .add(
            Method::POST,
            "/admins/{name}/rotate-token",
            post(admins::rotate_token),
        )
        .add(Method::GET, "/whoami", get(admins::whoami))
        .add(Method::POST, "/session/end", post(admins::end_own_session))
        .finish()
}

/// Builds the admin router one (method, path) at a time and records each.
#[derive(Default)]
struct Routes {
    router: Router<Arc<AppState>>,
    added: Vec<(http::Method, &'static str)>,
}

impl Routes {
    /// Adds one method of one path (axum merges the methods of a path).
    fn add(
        mut self,
        method: http::Method,
        path: &'static str,
        handler: axum::routing::MethodRouter<Arc<AppState>>,
    ) -> Self {
        self.router = self.router.route(path, handler);
        self.added.push((method, path));
        self
    }

    fn finish(self) -> (Router<Arc<AppState>>, Vec<(http::Method, &'static str)>) {
        let router = self.router.fallback(|| async {
            AdminError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
        });
        (router, self.added)
    }
}

/// An admin API error: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub(crate) struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AdminError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(crate) fn internal(message: &'static str) -> Self {
        tracing::error!(message, "admin request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }

    pub(crate) fn store(error: StoreError) -> Self {
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

tokio::task_local! {
    /// The admin whose request is being served: set by [`require_admin`]
    /// around the handler, read by [`audit`] (every audit entry of the
    /// admin API names its admin without each handler passing it on).
    static ACTOR: Caller;
}

/// Who is calling: the admin record the route table checks, and the actor
/// its audit entries name (`admin:NAME`, or `oidc:<email>` for a session).
#[derive(Clone)]
struct Caller {
    record: Arc<keyforge_store::AdminRecord>,
    actor: String,
}

/// The audit actor of the request being served: `admin:NAME`. Outside a
/// request that [`require_admin`] authenticated there is none, and the
/// action is refused (nothing is audited under a made-up name).
pub(crate) fn current_actor() -> Result<String, AdminError> {
    ACTOR
        .try_with(|caller| caller.actor.clone())
        .map_err(|_| AdminError::internal("no admin identity for this request"))
}

/// The admin whose request is being served, if any.
pub(crate) fn current_admin() -> Option<Arc<keyforge_store::AdminRecord>> {
    ACTOR.try_with(|caller| Arc::clone(&caller.record)).ok()
}

/// Authenticates the admin (401 without a valid token), then checks its
/// role against the route table (403 `insufficient_role`, audited), then
/// serves the request as that admin.
async fn require_admin(
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
    let caller = match presented {
        None => {
            return AdminError::new(
                StatusCode::UNAUTHORIZED,
                "missing_admin_token",
                "the admin API needs `Authorization: Bearer <admin token>`",
            )
            .into_response();
        }
        Some(token) if VirtualKey::looks_like(token) => {
            return AdminError::new(
                StatusCode::FORBIDDEN,
                "proxy_key_not_allowed",
                "KeyForge proxy keys (kf_...) cannot call the admin API; use an admin token",
            )
            .into_response();
        }
        Some(token) => {
            // A `kfa_` token with a bad checksum is refused offline, with
            // what is wrong with it; other text may be the legacy token.
            if keyforge_types::AdminToken::looks_like(token)
                && let Err(error) = keyforge_types::AdminToken::parse(token)
            {
                return AdminError::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_admin_token",
                    error.to_string(),
                )
                .into_response();
            }
            let hash = state
                .hasher
                .hash_admin(&secrecy::SecretString::from(token.to_owned()));
            let found = state.snapshot.load().find_admin(&hash).cloned();
            match found {
                Some(admin) => Caller {
                    actor: format!("admin:{}", admin.name),
                    record: admin,
                },
                None => match state.sessions.find(&hash, state.clock.now()) {
                    Some(Ok(session)) => Caller {
                        record: session.record,
                        actor: session.identity,
                    },
                    Some(Err(handle)) => {
                        return AdminError::new(
                            StatusCode::UNAUTHORIZED,
                            "session_ended",
                            format!("admin session `{handle}` has expired or was revoked; log in again (`keyforge admin login --oidc`)"),
                        )
                        .into_response();
                    }
                    None => {
                        return AdminError::new(
                            StatusCode::UNAUTHORIZED,
                            "invalid_admin_token",
                            "the admin token is not valid (unknown, revoked or replaced)",
                        )
                        .into_response();
                    }
                },
            }
        }
    };
    let admin = Arc::clone(&caller.record);
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    ACTOR
        .scope(caller, async move {
            match access::check(&method, matched.as_deref(), admin.role) {
                access::Decision::Allow => next.run(request).await,
                access::Decision::NoSuchRoute => {
                    AdminError::new(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint")
                        .into_response()
                }
                access::Decision::Refuse(refusal) => refuse(&state, &admin, &method, refusal)
                    .await
                    .into_response(),
                access::Decision::MethodNotAllowed { allow } => method_not_allowed(&method, &allow),
            }
        })
        .await
}

/// The 405 of a known route called with a method it does not have, for
/// an admin whose role may use the route: the JSON error shape, and
/// `Allow` listing the route's methods. Not audited (nothing was refused
/// that the admin may do).
fn method_not_allowed(method: &http::Method, allow: &[http::Method]) -> Response {
    let allow_text = allow
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut response = AdminError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not a method of this endpoint; it takes {allow_text}"),
    )
    .into_response();
    if let Ok(value) = http::HeaderValue::from_str(&allow_text) {
        response.headers_mut().insert(http::header::ALLOW, value);
    }
    response
}

/// The 403 of a refused route, after its audit entry
/// (`admin.access.refused`). If the refusal cannot be audited the answer
/// is the audit failure (503): still refused.
async fn refuse(
    state: &AppState,
    admin: &keyforge_store::AdminRecord,
    method: &http::Method,
    refusal: access::Refusal,
) -> AdminError {
    let (code, needed, message) = match refusal.needed {
        Some(needed) => (
            "insufficient_role",
            Some(needed.as_str()),
            format!(
                "{method} {} needs the {needed} role; admin `{}` is {}",
                refusal.route, admin.name, admin.role
            ),
        ),
        None => (
            "route_not_in_access_table",
            None,
            format!(
                "{method} {} is not in the admin access table, so no role may call it (deny by default)",
                refusal.route
            ),
        ),
    };
    let data = serde_json::json!({
        "method": method.as_str(),
        "route": refusal.route,
        "role": admin.role.as_str(),
        "role_needed": needed,
        "code": code,
    });
    if let Err(error) = audit(state, "access.refused", data).await {
        return error;
    }
    tracing::warn!(admin = %admin.name, role = %admin.role, method = %method, route = %refusal.route, code, "admin request refused by role");
    AdminError::new(StatusCode::FORBIDDEN, code, message)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, AdminError> {
    serde_json::from_slice(body)
        .map_err(|error| AdminError::bad_request(format!("invalid request body: {error}")))
}

pub(crate) fn rfc3339(time: OffsetDateTime) -> String {
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
        warnings: Vec::new(),
    }
}

/// A key's own status: `revoked`, `expired`, `suspended` or `active`.
fn own_status(record: &keyforge_store::VirtualKeyRecord, now: OffsetDateTime) -> &'static str {
    if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| now >= at) {
        "expired"
    } else if record.suspended.is_some() {
        "suspended"
    } else {
        "active"
    }
}

pub(crate) fn key_view(entry: &KeyEntry, now: OffsetDateTime) -> KeyView {
    let record = &entry.record;
    // A key is usable only while every ancestor is (as the request path
    // checks): an active child of an expired parent shows `parent_expired`.
    let status = match own_status(record, now) {
        "active" => entry
            .ancestors
            .iter()
            .map(|ancestor| own_status(&ancestor.record, now))
            .find(|status| *status != "active")
            .map_or_else(|| "active".to_owned(), |status| format!("parent_{status}")),
        own => own.to_owned(),
    };
    KeyView {
        id: record.id.clone(),
        name: record.name.clone(),
        env: record.env.clone(),
        prefix: record.prefix.clone(),
        scope: record.scope.clone(),
        status,
        project: record.project.clone(),
        limits: record.limits,
        on_anomaly: record.on_anomaly,
        budgets: entry
            .budgets
            .iter()
            .map(|cell| budgets::view(&cell.status(now)))
            .collect(),
        created_at: rfc3339(record.created_at),
        expires_at: record.expires_at.map(rfc3339),
        revoked_at: record.revoked_at.map(rfc3339),
        suspended_at: record.suspended.as_ref().map(|s| rfc3339(s.at)),
        suspended_reason: record.suspended.as_ref().map(|s| s.reason.clone()),
        parent: record.parent.clone(),
        can_mint: record.can_mint,
        origin: record.origin.clone(),
    }
}

/// Records an admin action in the audit log before it is carried out. If
/// the audit log cannot be written, the action is refused: nothing happens
/// unaudited.
async fn audit(state: &AppState, kind: &str, data: serde_json::Value) -> Result<(), AdminError> {
    audit_as(state, &current_actor()?, &format!("admin.{kind}"), data).await
}

/// Records an action by `actor` (`admin:NAME`, `key:<id>`, `oidc:<role>`) in the
/// audit log before it is carried out; refused if it cannot be recorded.
pub(crate) async fn audit_as(
    state: &AppState,
    actor: &str,
    kind: &str,
    data: serde_json::Value,
) -> Result<(), AdminError> {
    let event = crate::audit::AuditEvent {
        at: state.clock.now(),
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        data: data.into(),
    };
    if state
        .ledger
        .audit(event, std::time::Duration::from_secs(5))
        .await
    {
        state
            .audit_failing
            .store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    } else {
        state
            .audit_failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(
            kind,
            "the audit log cannot be written: admin action refused"
        );
        Err(AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log cannot be written (the store does not answer), so the change was not made and will not be; requests are still served from memory; retry once the store is back (see the gateway's log)",
        ))
    }
}

pub(crate) async fn reload(state: &AppState) -> Result<(), AdminError> {
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
    let mut warnings = Vec::new();
    let base_url = match (&request.base_url, kind.default_base_url()) {
        (Some(url), _) => {
            edit::refuse_secret(&state, &state.snapshot.load(), "base URL", url)?;
            let (url, warning) = edit::normalise_base_url(kind, url)?;
            warnings.extend(warning);
            Some(url)
        }
        (None, Some(_)) => None,
        (None, None) => {
            return Err(AdminError::bad_request(format!(
                "a {kind} provider needs a base URL (--base-url)"
            )));
        }
    };
    // Refused before the key check: no call to the provider for a name
    // that cannot be added (the store checks again under the lock).
    if state
        .snapshot
        .load()
        .providers
        .contains_key(&(request.env.clone(), request.name.clone()))
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a provider named `{}` already exists in environment `{}`; change it with `keyforge provider update {} --env {}`",
                request.name, request.env, request.name, request.env
            ),
        ));
    }
    // Keys in force that name this provider in their scope were scoped to a
    // removed provider of the same name: adding one would give them access
    // to it silently, perhaps to another upstream. The admin says so.
    if !request.allow_scoped_keys {
        let now = state.clock.now();
        let snapshot = state.snapshot.load();
        let mut scoped: Vec<&str> = snapshot
            .keys_by_id
            .values()
            .filter(|key| {
                key.record.env == request.env
                    && key.record.revoked_at.is_none()
                    && key.record.expires_at.is_none_or(|at| at > now)
                    && key.record.scope.providers.contains(&request.name)
            })
            .map(|key| key.record.id.as_str())
            .collect();
        scoped.sort_unstable();
        if !scoped.is_empty() {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "keys_scoped_to_name",
                format!(
                    "keys in force are scoped to a removed provider named `{}` ({}): they would regain access to the new one; narrow or revoke them first, or add it anyway with --force",
                    request.name,
                    scoped.join(", ")
                ),
            ));
        }
    }
    if !request.skip_check {
        let effective = base_url
            .as_deref()
            .or(kind.default_base_url())
            .unwrap_or_default();
        rotation::check_key(&state, kind.api(), effective, &secret).await?;
    }
    let id = ProviderId::generate();
    let now = state.clock.now();
    // The ledger names a provider by environment, name and key version: a
    // provider added under the name of a removed one continues its version
    // numbers, so usage, rotation traffic and health never mix the two.
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    let mut version = state
        .store
        .version_usage(&request.env, &request.name, 0)
        .await
        .map_err(AdminError::store)?
        .iter()
        .map(|usage| usage.version)
        .max()
        .unwrap_or(0)
        + 1;
    // Versions a removed provider reached without using them are marked at
    // its removal (they are contiguous from v1).
    while state
        .store
        .get_meta(&edit::retired_version_meta(
            &request.env,
            &request.name,
            version,
        ))
        .await
        .map_err(AdminError::store)?
        .is_some()
    {
        version += 1;
    }
    #[expect(
        clippy::disallowed_methods,
        reason = "the provider key is sealed here and goes nowhere else"
    )]
    let plaintext = secret.expose().as_bytes();
    let sealed = state
        .sealer
        .seal(plaintext, &credential_aad(id.as_str(), version));
    let provider = NewProvider {
        id: id.clone(),
        name: request.name.clone(),
        env: request.env.clone(),
        kind: kind.as_str().to_owned(),
        base_url,
        created_at: now,
        credential: CredentialRecord {
            version,
            sealed,
            created_at: now,
        },
    };
    let _guard = state.admin_write.lock().await;
    let elsewhere = edit::same_secret_elsewhere(&state, &state.snapshot.load(), &secret, None);
    if !elsewhere.is_empty() {
        warnings.push(format!(
            "this API key is already the key of {}: one leak would expose every environment using it; give each environment its own key",
            elsewhere.join(", ")
        ));
    }
    audit(&state, "provider.add", serde_json::json!({"id": id, "name": request.name, "env": request.env, "kind": kind.as_str(), "checked": !request.skip_check, "same_secret_as": elsewhere})).await?;
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
    let mut view = provider_view(entry);
    view.warnings = warnings;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

pub(crate) fn validate_base_url(text: &str) -> Result<String, AdminError> {
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
    // `http::Uri` keeps any digits after the colon; a port is 1 to 65535.
    if let Some(authority) = uri.authority()
        && let Some((_, port)) = authority.as_str().rsplit_once(':')
        && !port.ends_with(']')
        && port.parse::<u16>().map_or(true, |port| port == 0)
    {
        return Err(AdminError::bad_request(
            "base URL has an invalid port: a port is a number from 1 to 65535",
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
        .map(|entry| key_view(entry, now))
        .collect();
    keys.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    axum::Json(KeyList { keys })
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, axum::Json<CreatedKey>), AdminError> {
    let request: CreateKeyRequest = parse_json(&body)?;
    let parent = request.parent.clone();
    let warnings = edit::unknown_model_warnings(&state, &request.models);
    let spec = mint::KeySpec::from_request(request)?;
    let minter = mint::Minter {
        actor: current_actor()?,
        origin: "admin".to_owned(),
        detail: serde_json::Value::Null,
    };
    let minted = mint::mint(&state, spec, parent.as_ref(), minter).await?;
    let mut created = created_key(&minted, state.clock.now());
    created.warnings = warnings;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// The creation response: the one time a key's secret is shown.
pub(crate) fn created_key(minted: &mint::Minted, now: OffsetDateTime) -> CreatedKey {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one time a new key is shown: in the response to whoever minted it"
    )]
    let key = minted.key.secret().expose_secret().to_owned();
    CreatedKey {
        key,
        view: key_view(&minted.entry, now),
        warnings: Vec::new(),
    }
}

pub(crate) fn parse_key_id(text: &str) -> Result<KeyId, AdminError> {
    KeyId::parse(text).map_err(|error| AdminError::bad_request(error.to_string()))
}

async fn show_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, AdminError> {
    let id = parse_key_id(&id)?;
    let now = state.clock.now();
    if let Some(entry) = state.snapshot.load().key_by_id(&id) {
        return Ok(axum::Json(key_view(entry, now)));
    }
    // Archived (revoked or expired long ago): still in the store.
    let record = state
        .store
        .get_virtual_key(&id)
        .await
        .map_err(AdminError::store)?
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            )
        })?;
    Ok(axum::Json(key_view(&KeyEntry::detached(record), now)))
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<RevokeResult>, AdminError> {
    let id = parse_key_id(&id)?;
    let _guard = state.admin_write.lock().await;
    audit(&state, "key.revoke", serde_json::json!({"id": id})).await?;
    let outcome = state
        .store
        .revoke_virtual_key(&id, state.clock.now())
        .await
        .map_err(AdminError::store)?;
    let result = revoke_result(id, outcome)?;
    reload(&state).await?;
    tracing::info!(key_id = %result.id, outcome = %result.outcome, descendants = result.descendants.len(), "virtual key revoked");
    Ok(axum::Json(result))
}

/// What a revocation answers; a key that does not exist is a 404.
pub(crate) fn revoke_result(id: KeyId, outcome: RevokeOutcome) -> Result<RevokeResult, AdminError> {
    let (outcome, descendants) = match outcome {
        RevokeOutcome::NotFound => {
            return Err(AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            ));
        }
        RevokeOutcome::AlreadyRevoked { descendants } => ("already_revoked", descendants),
        RevokeOutcome::Revoked { descendants } => ("revoked", descendants),
    };
    Ok(RevokeResult {
        id,
        outcome: outcome.to_owned(),
        descendants,
    })
}

/// Issues a successor secret for a key (same id, scope, budgets and
/// history); the current secret keeps working for the grace window.
async fn rotate_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<api::RotatedKey>, AdminError> {
    let id = parse_key_id(&id)?;
    let request: api::RotateKeyRequest = if body.is_empty() {
        api::RotateKeyRequest::default()
    } else {
        parse_json(&body)?
    };
    let grace = Ttl::parse(request.grace.as_deref().unwrap_or("24h"))
        .map_err(|error| AdminError::bad_request(format!("grace: {error}")))?;
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(AdminError::bad_request(
            "an idempotency key is 1 to 128 printable ASCII characters",
        ));
    }
    let _guard = state.admin_write.lock().await;
    audit(
        &state,
        "key.rotate",
        serde_json::json!({"id": id, "grace": request.grace, "force": request.force}),
    )
    .await?;
    let env = state
        .snapshot
        .load()
        .key_by_id(&id)
        .map(|entry| entry.record.env.clone())
        .ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            )
        })?;
    let successor = VirtualKey::generate(&env);
    #[expect(
        clippy::disallowed_methods,
        reason = "the successor is sealed for idempotent retries and shown once to the admin"
    )]
    let successor_text = successor.secret().expose_secret().to_owned();
    let now = state.clock.now();
    let aad = |idempotency_key: &str| {
        format!("keyforge/key-rotation/{id}/{idempotency_key}").into_bytes()
    };
    let rotation = keyforge_store::KeyRotation {
        key_id: id.clone(),
        new_hash: state.hasher.hash(&successor),
        new_prefix: successor.display_prefix(),
        grace_until: now + grace.as_duration(),
        force: request.force,
        idempotency: request.idempotency_key.as_ref().map(|key| {
            (
                key.clone(),
                state.sealer.seal(successor_text.as_bytes(), &aad(key)),
            )
        }),
        at: now,
    };
    let outcome = state
        .store
        .rotate_virtual_key(&rotation)
        .await
        .map_err(AdminError::store)?;
    let (key, grace_until) = match outcome {
        keyforge_store::KeyRotationOutcome::Rotated => {
            (successor_text, Some(rfc3339(rotation.grace_until)))
        }
        keyforge_store::KeyRotationOutcome::Repeated(sealed) => {
            let idempotency_key = request.idempotency_key.as_deref().unwrap_or_default();
            let plaintext = state
                .sealer
                .open(&sealed, &aad(idempotency_key))
                .map_err(|_| AdminError::internal("cannot open the stored successor"))?;
            let text = String::from_utf8(plaintext.to_vec())
                .map_err(|_| AdminError::internal("the stored successor is not text"))?;
            (text, None)
        }
        keyforge_store::KeyRotationOutcome::NotFound => {
            return Err(AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            ));
        }
        keyforge_store::KeyRotationOutcome::Revoked => {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "key_revoked",
                format!("key {id} is revoked; create a new key instead"),
            ));
        }
        keyforge_store::KeyRotationOutcome::InGrace(until) => {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "rotation_in_grace",
                format!(
                    "key {id} was rotated recently and its earlier secret works until {}; a retry with the same idempotency key returns that successor, or rotate again with --force",
                    rfc3339(until)
                ),
            ));
        }
    };
    reload(&state).await?;
    tracing::info!(key_id = %id, "virtual key rotated");
    let snapshot = state.snapshot.load();
    let entry = snapshot
        .key_by_id(&id)
        .ok_or_else(|| AdminError::internal("the key is missing from the reloaded snapshot"))?;
    Ok(axum::Json(api::RotatedKey {
        key,
        grace_until,
        view: key_view(entry, now),
    }))
}

/// Revokes every key of an environment and/or project at once (a leak's
/// blast radius), effective on the next request.
async fn revoke_keys(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<axum::Json<api::BulkRevokeResult>, AdminError> {
    let request: api::BulkRevokeRequest = parse_json(&body)?;
    if request.env.is_none() && request.project.is_none() {
        return Err(AdminError::bad_request(
            "give an environment, a project or both: every key matching them is revoked",
        ));
    }
    let _guard = state.admin_write.lock().await;
    audit(
        &state,
        "key.revoke_bulk",
        serde_json::json!({"env": request.env, "project": request.project}),
    )
    .await?;
    let revoked = state
        .store
        .revoke_virtual_keys_where(
            request.env.as_ref(),
            request.project.as_ref(),
            state.clock.now(),
        )
        .await
        .map_err(AdminError::store)?;
    reload(&state).await?;
    tracing::info!(env = ?request.env, project = ?request.project, count = revoked.len(), "virtual keys revoked in bulk");
    Ok(axum::Json(api::BulkRevokeResult { revoked }))
}

/// Lifts a suspension (set by anomaly detection).
async fn resume_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<KeyView>, AdminError> {
    let id = parse_key_id(&id)?;
    let _guard = state.admin_write.lock().await;
    // Resuming lifts a suspension only: a revoked or expired key stays
    // dead, and the refusal writes no audit entry.
    let now = state.clock.now();
    if let Some(entry) = state.snapshot.load().key_by_id(&id) {
        let record = &entry.record;
        if record.revoked_at.is_some() {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "key_revoked",
                format!(
                    "key {id} is revoked, which resuming does not undo; create a new key instead"
                ),
            ));
        }
        if let Some(at) = record.expires_at.filter(|at| *at <= now) {
            return Err(AdminError::new(
                StatusCode::CONFLICT,
                "key_expired",
                format!(
                    "key {id} expired at {}, which resuming does not undo; create a new key instead",
                    rfc3339(at)
                ),
            ));
        }
    }
    audit(&state, "key.resume", serde_json::json!({"id": id})).await?;
    if !state
        .store
        .set_key_suspension(&id, None)
        .await
        .map_err(AdminError::store)?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key with id {id}"),
        ));
    }
    reload(&state).await?;
    tracing::info!(key_id = %id, "virtual key resumed");
    let snapshot = state.snapshot.load();
    let entry = snapshot
        .key_by_id(&id)
        .ok_or_else(|| AdminError::internal("the key is missing from the reloaded snapshot"))?;
    Ok(axum::Json(key_view(entry, state.clock.now())))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    /// How far back (`30d`) or from when (RFC 3339 or `YYYY-MM-DD`, UTC).
    since: Option<String>,
    /// Until when, excluded (RFC 3339 or `YYYY-MM-DD`, UTC).
    until: Option<String>,
    /// One calendar month, `YYYY-MM` (UTC); not with `since` or `until`.
    month: Option<String>,
    key: Option<String>,
    env: Option<String>,
    project: Option<String>,
    by: Option<String>,
}

fn usage_row_view(row: &keyforge_store::UsageRow) -> UsageRowView {
    UsageRowView {
        group: row.group.clone(),
        key_name: None,
        env: None,
        project: None,
        requests: row.requests,
        input_tokens: row.input_tokens,
        cached_input_tokens: row.cached_input_tokens,
        cache_write_tokens: row.cache_write_tokens,
        output_tokens: row.output_tokens,
        reasoning_tokens: row.reasoning_tokens,
        cost_nano_usd: row.cost_nano_usd,
        cost_usd: keyforge_types::NanoUsd(row.cost_nano_usd).to_string(),
        estimated: row.estimated,
        fallback_priced: row.fallback_priced,
        unmetered: row.unmetered,
        client_cancelled: row.client_cancelled,
        errors: row.errors,
    }
}

async fn usage(
    State(state): State<Arc<AppState>>,
    query: Result<axum::extract::Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<UsageReport>, AdminError> {
    let axum::extract::Query(params) = query.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let now = state.clock.now();
    let (asked, until) = usage_window(&params, now)?;
    let group_by = match params.by.as_deref().unwrap_or("key") {
        "key" => keyforge_store::UsageGroup::Key,
        "model" => keyforge_store::UsageGroup::Model,
        "day" => keyforge_store::UsageGroup::Day,
        "env" => keyforge_store::UsageGroup::Env,
        "project" => keyforge_store::UsageGroup::Project,
        other => {
            return Err(AdminError::bad_request(format!(
                "by `{other}`: expected key, model, day, env or project"
            )));
        }
    };
    let key_id = params.key.as_deref().map(parse_key_id).transpose()?;
    let env = params
        .env
        .as_deref()
        .map(keyforge_types::EnvName::parse)
        .transpose()
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    let project = params
        .project
        .as_deref()
        .map(keyforge_types::ProjectName::parse)
        .transpose()
        .map_err(|error| AdminError::bad_request(error.to_string()))?;
    // Records of requests that just finished may still be queued.
    state.ledger.flush(std::time::Duration::from_secs(5)).await;
    // Past retention the window starts on the hour: the report says where.
    let since_ms = state
        .store
        .usage_window_start(i64::try_from(asked.unix_timestamp_nanos() / 1_000_000).unwrap_or(0))
        .await
        .map_err(AdminError::store)?;
    let since_at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
            .unwrap_or(asked);
    let query = keyforge_store::UsageQuery {
        since_ms,
        until_ms: until.map(range::unix_ms),
        key_id: key_id.clone(),
        env,
        project,
        group_by,
    };
    let rows = state
        .store
        .query_usage(&query)
        .await
        .map_err(AdminError::store)?;
    let mut total = UsageRowView {
        group: "total".to_owned(),
        ..UsageRowView::default()
    };
    for row in &rows {
        total.requests += row.requests;
        total.input_tokens += row.input_tokens;
        total.cached_input_tokens += row.cached_input_tokens;
        total.cache_write_tokens += row.cache_write_tokens;
        total.output_tokens += row.output_tokens;
        total.reasoning_tokens += row.reasoning_tokens;
        total.cost_nano_usd = total.cost_nano_usd.saturating_add(row.cost_nano_usd);
        total.estimated += row.estimated;
        total.fallback_priced += row.fallback_priced;
        total.unmetered += row.unmetered;
        total.client_cancelled += row.client_cancelled;
        total.errors += row.errors;
    }
    total.cost_usd = keyforge_types::NanoUsd(total.cost_nano_usd).to_string();
    let mut views: Vec<UsageRowView> = rows.iter().map(usage_row_view).collect();
    if group_by == keyforge_store::UsageGroup::Key {
        for view in &mut views {
            if let Ok(id) = KeyId::parse(&view.group)
                && let Some(key) = usage_key_view(&state, &id).await?
            {
                view.key_name = Some(key.name);
                view.env = Some(key.env);
                view.project = key.project;
            }
        }
    }
    let key = match &key_id {
        Some(id) => usage_key_view(&state, id).await?,
        None => None,
    };
    Ok(axum::Json(UsageReport {
        since: rfc3339(since_at.replace_nanosecond(0).unwrap_or(since_at)),
        until: until.map(rfc3339),
        key,
        group_by: params.by.unwrap_or_else(|| "key".to_owned()),
        rows: views,
        total,
    }))
}

/// The window a usage request asks for: `[since, until)`. `since` is a
/// duration back from `now` (`30d`, the default) or a time; `month` is a
/// whole calendar month and takes neither.
fn usage_window(
    params: &UsageParams,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, Option<OffsetDateTime>), AdminError> {
    if let Some(month) = &params.month {
        if params.since.is_some() || params.until.is_some() {
            return Err(AdminError::bad_request(
                "month is a whole calendar month: it does not combine with since or until",
            ));
        }
        let (first, next) = range::parse_month(month)
            .map_err(|error| AdminError::bad_request(format!("month: {error}")))?;
        return Ok((first, Some(next)));
    }
    let text = params.since.as_deref().unwrap_or("30d");
    let since = match Ttl::parse(text) {
        Ok(back) => now - back.as_duration(),
        Err(_) => range::parse_instant(text).map_err(|error| {
            AdminError::bad_request(format!(
                "since: {error}, or a duration back from now (12h, 30d)"
            ))
        })?,
    };
    let until = params
        .until
        .as_deref()
        .map(|text| {
            range::parse_instant(text)
                .map_err(|error| AdminError::bad_request(format!("until: {error}")))
        })
        .transpose()?;
    if let Some(until) = until
        && until <= since
    {
        return Err(AdminError::bad_request(format!(
            "until ({}) must be after since ({}): the window is [since, until)",
            rfc3339(until),
            rfc3339(since)
        )));
    }
    Ok((since, until))
}

/// A key's name, environment and project for a usage report: from the
/// snapshot, else (an archived key) from the store; `None` for a key
/// neither knows.
async fn usage_key_view(
    state: &AppState,
    id: &KeyId,
) -> Result<Option<api::UsageKeyView>, AdminError> {
    let view = |record: &keyforge_store::VirtualKeyRecord| api::UsageKeyView {
        id: record.id.clone(),
        name: record.name.clone(),
        env: record.env.to_string(),
        project: record.project.as_ref().map(ToString::to_string),
    };
    if let Some(entry) = state.snapshot.load().key_by_id(id) {
        return Ok(Some(view(&entry.record)));
    }
    Ok(state
        .store
        .get_virtual_key(id)
        .await
        .map_err(AdminError::store)?
        .as_ref()
        .map(view))
}

/// Pico-USD per token back to "USD per million tokens".
fn per_million(pico: u64) -> String {
    let fraction = format!("{:06}", pico % 1_000_000);
    // At least two decimals, as prices are written ("0.60", "0.075").
    let fraction = fraction.trim_end_matches('0');
    format!("{}.{fraction:0<2}", pico / 1_000_000)
}

fn price_view(
    api: &str,
    model: &str,
    since: &str,
    prices: &keyforge_providers::TokenPrices,
    origin: &str,
) -> PriceView {
    PriceView {
        api: api.to_owned(),
        model: model.to_owned(),
        since: since.to_owned(),
        input: per_million(prices.input),
        cached_input: per_million(prices.cached_input),
        cache_write: per_million(prices.cache_write),
        output: per_million(prices.output),
        origin: origin.to_owned(),
    }
}

async fn prices(State(state): State<Arc<AppState>>) -> axum::Json<PriceList> {
    let table = &state.prices;
    let mut prices: Vec<PriceView> = table
        .entries()
        .iter()
        .map(|e| price_view(e.api, &e.model, &e.since, &e.prices, e.origin))
        .collect();
    prices.sort_by(|a, b| (&a.api, &a.model, &a.since).cmp(&(&b.api, &b.model, &b.since)));
    axum::Json(PriceList {
        version: table.version.clone(),
        prices,
        fallback: price_view("any", "*", "-", &table.fallback, "fallback"),
    })
}
