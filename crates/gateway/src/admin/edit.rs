//! Changing providers and keys in place: `PATCH`/`DELETE /providers/{id}`
//! and `PATCH /keys/{id}`, and the checks `provider add`, `key create` and
//! `rotate finish` share with them (base URLs, key names as handles, model
//! patterns nobody has heard of, one provider secret in several
//! environments).
//!
//! Every change follows the admin API's order: take the admin lock, check
//! everything against the snapshot (which only changes under that lock),
//! audit, write the store (which re-seals the row only if its MAC held),
//! reload and publish the snapshot, answer. Bad input is refused before the
//! audit entry, so it changes nothing.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use bytes::Bytes;
use http::StatusCode;
use keyforge_providers::{Api, ProviderKind};
use keyforge_store::{BudgetRecord, KeyUpdate};
use keyforge_types::{
    AnomalyAction, BudgetId, BudgetScope, EnvName, KeyId, ModelPattern, Period, ProviderSecret,
    Scope, Ttl,
};
use time::OffsetDateTime;

use super::api::{RemovedProvider, UpdateKeyRequest, UpdateProviderRequest, UpdatedKey};
use super::{AdminError, audit, key_view, parse_json, parse_key_id, provider_view, reload};
use crate::snapshot::{KeyEntry, Snapshot};
use crate::state::AppState;

/// Whether two provider secrets are the same, by keyed fingerprint (the
/// secrets themselves are never compared).
pub(crate) fn same_secret(state: &AppState, a: &ProviderSecret, b: &ProviderSecret) -> bool {
    let tag = state.secret_fingerprints.tag(a);
    state.secret_fingerprints.matches(b, &tag)
}

/// Providers other than `except` whose current or pending key is `secret`
/// (by fingerprint), as `provider `NAME` (ENV)`.
pub(crate) fn same_secret_elsewhere(
    state: &AppState,
    snapshot: &Snapshot,
    secret: &ProviderSecret,
    except: Option<&keyforge_types::ProviderId>,
) -> Vec<String> {
    let tag = state.secret_fingerprints.tag(secret);
    let mut found: Vec<String> = snapshot
        .providers
        .values()
        .filter(|entry| except != Some(&entry.record.id))
        .filter(|entry| {
            state
                .secret_fingerprints
                .matches(&entry.current.secret, &tag)
                || entry
                    .pending
                    .as_ref()
                    .is_some_and(|pending| state.secret_fingerprints.matches(&pending.secret, &tag))
        })
        .map(|entry| format!("provider `{}` ({})", entry.record.name, entry.record.env))
        .collect();
    found.sort();
    found
}

/// Refuses a value of an ordinary field (a key name, a project, a model
/// pattern, a base URL) that is a secret: one the scanner's rules or the
/// key shapes of the scrubber recognise, or one equal to a stored
/// provider key (by fingerprint). Those fields are written to the
/// hash-chained audit log, which keeps them forever. The error names the
/// field, never the value.
pub(crate) fn refuse_secret(
    state: &AppState,
    snapshot: &Snapshot,
    field: &str,
    value: &str,
) -> Result<(), AdminError> {
    let recognised = state.scrubber.scrub(value.as_bytes(), &[]) != value.as_bytes();
    let stored = !recognised
        && ProviderSecret::parse(value)
            .is_ok_and(|secret| !same_secret_elsewhere(state, snapshot, &secret, None).is_empty());
    if recognised || stored {
        return Err(AdminError::new(
            StatusCode::BAD_REQUEST,
            "secret_in_field",
            format!(
                "the {field} looks like a secret ({}): it was refused and not recorded; ordinary fields are kept in the audit log forever, so give secrets only where one is asked for",
                if stored {
                    "the key of a provider"
                } else {
                    "an API key"
                }
            ),
        ));
    }
    Ok(())
}

/// [`refuse_secret`] for the fields of a key.
pub(crate) fn refuse_secrets_in_key(
    state: &AppState,
    snapshot: &Snapshot,
    name: Option<&str>,
    project: Option<&str>,
    models: &[ModelPattern],
) -> Result<(), AdminError> {
    if let Some(name) = name {
        refuse_secret(state, snapshot, "key name", name)?;
    }
    if let Some(project) = project {
        refuse_secret(state, snapshot, "project", project)?;
    }
    for pattern in models {
        refuse_secret(state, snapshot, "model pattern", pattern.as_str())?;
    }
    Ok(())
}

/// A base URL checked (see `validate_base_url`) and normalised for its
/// kind, with a warning when it was changed. Clients send the API's whole
/// path (`/v1/chat/completions`) and the gateway appends it to the base
/// URL, so a base URL ending in the version segment (`https://api.openai.com/v1`,
/// as the OpenAI SDKs write it) would call `/v1/v1/...`: both forms are
/// accepted, and stored without the version.
pub(crate) fn normalise_base_url(
    kind: ProviderKind,
    text: &str,
) -> Result<(String, Option<String>), AdminError> {
    let url = super::validate_base_url(text)?;
    let suffixes: &[&str] = match kind.api() {
        Api::OpenAi | Api::Anthropic => &["/v1"],
        Api::Gemini => &["/v1beta", "/v1"],
    };
    for suffix in suffixes {
        if let Some(root) = url.strip_suffix(suffix) {
            // `.../v1/v1` is a mistake, not a base URL: which part is the
            // API's path cannot be guessed.
            if suffixes.iter().any(|inner| root.ends_with(inner)) {
                return Err(AdminError::bad_request(format!(
                    "base URL {url} ends in the API version twice: give it once (or not at all), e.g. https://api.openai.com or https://api.openai.com/v1"
                )));
            }
            // Only a whole path segment, and never the bare host.
            if root.contains("://") && root.rsplit("://").next().is_some_and(|r| !r.is_empty()) {
                let warning = format!(
                    "base URL {url} is stored as {root}: clients send the API's whole path ({suffix}/...), so the version is not part of the base URL"
                );
                return Ok((root.to_owned(), Some(warning)));
            }
        }
    }
    Ok((url, None))
}

/// Key names are handles (`name:ENV/NAME`): unique among the keys in force
/// of an environment unless the admin allows a duplicate.
pub(crate) fn check_name_free(
    snapshot: &Snapshot,
    env: &EnvName,
    name: &str,
    except: Option<&KeyId>,
    now: OffsetDateTime,
) -> Result<(), AdminError> {
    let taken = snapshot.keys_by_id.values().find(|entry| {
        let record = &entry.record;
        except != Some(&record.id)
            && &record.env == env
            && record.name == name
            && in_force(entry, now)
    });
    match taken {
        None => Ok(()),
        Some(entry) => Err(AdminError::new(
            StatusCode::CONFLICT,
            "name_taken",
            format!(
                "key {} in environment `{env}` is already named `{name}`: pick another name, or add --allow-duplicate-name",
                entry.record.id
            ),
        )),
    }
}

fn in_force(entry: &KeyEntry, now: OffsetDateTime) -> bool {
    entry.record.revoked_at.is_none() && entry.record.expires_at.is_none_or(|at| at > now)
}

/// A warning for each pattern that matches no model of the price or limits
/// table (a typo such as `gtp-4o*` would otherwise refuse every request
/// quietly).
pub(crate) fn unknown_model_warnings(state: &AppState, patterns: &[ModelPattern]) -> Vec<String> {
    let known: Vec<&str> = state
        .prices
        .entries()
        .iter()
        .map(|entry| entry.model.as_str())
        .chain(
            state
                .limits
                .entries()
                .iter()
                .map(|entry| entry.model.as_str()),
        )
        .collect();
    patterns
        .iter()
        .filter(|pattern| {
            // Either side may be a glob: `gpt-4o*` against the table's
            // `gpt-4o-mini*`, or `gpt-4o-2024-08-06` against `gpt-4o*`.
            !known
                .iter()
                .any(|model| pattern.matches(model) || table_covers(model, pattern.as_str()))
        })
        .map(|pattern| {
            format!(
                "model pattern `{}` matches no model in the price or limits table: check its spelling (requests for other models are refused)",
                pattern.as_str()
            )
        })
        .collect()
}

/// Whether the table's `model` (perhaps a glob such as `gpt-4o*`) covers
/// the models of `pattern`. A table prefix covers only what continues it
/// after a separator: `gpt-4o*` covers `gpt-4o-2024-08-06` and
/// `gpt-4o-mini*`, not the typo `gpt-4oxyz*`.
fn table_covers(model: &str, pattern: &str) -> bool {
    let text = pattern.trim_end_matches('*');
    match model.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => text.strip_prefix(prefix).is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(['-', '.', ':', '@', '/', '_'])
        }),
        _ => keyforge_types::glob_match(model.as_bytes(), pattern.as_bytes()),
    }
}

/// Why `inner` allows something `outer` does not, if it does. Strict: an
/// empty list (everything) is only within an empty list.
pub(crate) fn scope_excess(outer: &Scope, inner: &Scope) -> Option<String> {
    if !outer.providers.is_empty() {
        if inner.providers.is_empty() {
            return Some("every provider of the environment".to_owned());
        }
        if let Some(provider) = inner
            .providers
            .iter()
            .find(|provider| !outer.allows_provider(provider))
        {
            return Some(format!("provider `{provider}`"));
        }
    }
    if !outer.models.is_empty() {
        if inner.models.is_empty() {
            return Some("every model".to_owned());
        }
        if let Some(pattern) = inner
            .models
            .iter()
            .find(|pattern| !outer.models.iter().any(|own| own.covers(pattern)))
        {
            return Some(format!("models `{}`", pattern.as_str()));
        }
    }
    None
}

fn not_found_provider(id: &str) -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "provider_not_found",
        format!("no provider with id {id}"),
    )
}

pub(super) async fn update_provider(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<super::api::ProviderView>, AdminError> {
    let request: UpdateProviderRequest = parse_json(&body)?;
    if request.kind.is_none() && request.base_url.is_none() {
        return Err(AdminError::bad_request(
            "nothing to change: give a new base URL (--base-url) or kind (--kind)",
        ));
    }
    let entry = super::rotation::provider(&state, &id)?;
    let kind = match &request.kind {
        Some(text) => {
            ProviderKind::parse(text).map_err(|error| AdminError::bad_request(error.to_string()))?
        }
        None => entry.kind,
    };
    let mut warnings = Vec::new();
    let base_url = match (&request.base_url, &entry.record.base_url) {
        (Some(text), _) => {
            refuse_secret(&state, &state.snapshot.load(), "base URL", text)?;
            let (url, warning) = normalise_base_url(kind, text)?;
            warnings.extend(warning);
            Some(url)
        }
        // The kind changes and the old base URL was the old kind's public
        // API: the new kind's public API now.
        (None, None) => None,
        (None, Some(url)) => Some(url.clone()),
    };
    let effective = base_url
        .clone()
        .or_else(|| kind.default_base_url().map(str::to_owned))
        .ok_or_else(|| {
            AdminError::bad_request(format!("a {kind} provider needs a base URL (--base-url)"))
        })?;
    // The check calls the provider: done before the admin lock, so other
    // admin changes do not wait on it.
    if !request.skip_check {
        super::rotation::check_key(&state, kind.api(), &effective, &entry.current.secret).await?;
    }
    let _guard = state.admin_write.lock().await;
    let now_current = super::rotation::provider(&state, &id)?;
    if now_current.current.version != entry.current.version
        || now_current.record.base_url != entry.record.base_url
        || now_current.kind != entry.kind
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "changed_meanwhile",
            "the provider changed while its key was being checked; run the update again",
        ));
    }
    audit(
        &state,
        "provider.update",
        serde_json::json!({
            "id": entry.record.id,
            "name": entry.record.name,
            "env": entry.record.env,
            "kind": {"from": entry.kind.as_str(), "to": kind.as_str()},
            "base_url": {"from": entry.base_url, "to": effective},
            "checked": !request.skip_check,
        }),
    )
    .await?;
    if !state
        .store
        .update_provider(&entry.record.id, kind.as_str(), base_url.as_deref())
        .await
        .map_err(AdminError::store)?
    {
        return Err(not_found_provider(&id));
    }
    reload(&state).await?;
    tracing::info!(provider_id = %entry.record.id, kind = %kind, "provider updated");
    let updated = super::rotation::provider(&state, &id)?;
    let mut view = provider_view(&updated);
    view.warnings = warnings;
    Ok(axum::Json(view))
}

/// The store's marker that a removed provider of this environment and name
/// reached key version `version`.
pub(crate) fn retired_version_meta(
    env: &EnvName,
    name: &keyforge_types::ProviderName,
    version: u32,
) -> String {
    format!("provider-version-used/{env}/{name}/{version}")
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveParams {
    #[serde(default)]
    force: bool,
}

pub(super) async fn remove_provider(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<RemoveParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<RemovedProvider>, AdminError> {
    let Query(params) = query.map_err(|error| {
        AdminError::bad_request(format!("invalid query: {}", error.body_text()))
    })?;
    let _guard = state.admin_write.lock().await;
    let entry = super::rotation::provider(&state, &id)?;
    let now = state.clock.now();
    let snapshot = state.snapshot.load();
    let mut keys_reaching: Vec<KeyId> = snapshot
        .keys_by_id
        .values()
        .filter(|key| {
            key.record.env == entry.record.env
                && in_force(key, now)
                && key.record.scope.allows_provider(&entry.record.name)
        })
        .map(|key| key.record.id.clone())
        .collect();
    keys_reaching.sort();
    let rotating = entry.pending.is_some() || entry.record.previous.is_some();
    if !params.force && (!keys_reaching.is_empty() || rotating) {
        let mut reasons = Vec::new();
        if !keys_reaching.is_empty() {
            let shown: Vec<&str> = keys_reaching.iter().take(5).map(KeyId::as_str).collect();
            reasons.push(format!(
                "{} keys in force can reach it ({}{})",
                keys_reaching.len(),
                shown.join(", "),
                if keys_reaching.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ));
        }
        if rotating {
            reasons.push(
                "a rotation of its key is in progress (finish or cancel it first)".to_owned(),
            );
        }
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "provider_in_use",
            format!(
                "provider `{}` ({}) was not removed: {}; remove it anyway with --force",
                entry.record.name,
                entry.record.env,
                reasons.join("; ")
            ),
        ));
    }
    audit(
        &state,
        "provider.remove",
        serde_json::json!({
            "id": entry.record.id,
            "name": entry.record.name,
            "env": entry.record.env,
            "force": params.force,
            "keys_reaching": keys_reaching,
            "rotation_in_progress": rotating,
        }),
    )
    .await?;
    // A provider added later under this name carries on its key version
    // numbers: every version it reached is marked, used or not (the
    // ledger only knows the used ones).
    let highest = entry
        .pending
        .as_ref()
        .map_or(entry.current.version, |pending| {
            pending.version.max(entry.current.version)
        });
    for version in 1..=highest {
        state
            .store
            .put_meta_if_absent(
                &retired_version_meta(&entry.record.env, &entry.record.name, version),
                b"1",
            )
            .await
            .map_err(AdminError::store)?;
    }
    if !state
        .store
        .delete_provider(&entry.record.id)
        .await
        .map_err(AdminError::store)?
    {
        return Err(not_found_provider(&id));
    }
    reload(&state).await?;
    tracing::info!(provider_id = %entry.record.id, force = params.force, keys_reaching = keys_reaching.len(), "provider removed");
    Ok(axum::Json(RemovedProvider {
        provider: provider_view(&entry),
        keys_reaching,
    }))
}

/// What an edit would leave inconsistent in a key's family: a key holds no
/// more than its parent (`exceeds_parent`), and no child holds more than
/// its parent's new settings (`child_exceeds`). Every problem is collected
/// and reported at once, so a user fixes them in one go.
#[derive(Default)]
struct FamilyProblems {
    above_parent: Vec<String>,
    children: Vec<String>,
}

impl FamilyProblems {
    fn into_result(self, id: &KeyId) -> Result<(), AdminError> {
        if self.above_parent.is_empty() && self.children.is_empty() {
            return Ok(());
        }
        let mut parts = Vec::new();
        if !self.above_parent.is_empty() {
            parts.push(format!(
                "a child key can only narrow its parent: {}",
                self.above_parent.join("; ")
            ));
        }
        if !self.children.is_empty() {
            parts.push(format!(
                "{}, which the new settings of key {id} do not: narrow or revoke the children first",
                self.children.join("; ")
            ));
        }
        let (status, code) = if self.above_parent.is_empty() {
            (StatusCode::CONFLICT, "child_exceeds")
        } else {
            (StatusCode::FORBIDDEN, "exceeds_parent")
        };
        Err(AdminError::new(
            status,
            code,
            format!("key {id} was not changed: {}", parts.join("; ")),
        ))
    }
}

/// One limit of a child against its parent's: `None` is no limit, which
/// for a child means its parent's (as at minting).
fn limit_within<T: Copy + Ord + std::fmt::Display>(
    name: &str,
    parent: Option<T>,
    asked: Option<T>,
    problems: &mut Vec<String>,
) -> Option<T> {
    match (parent, asked) {
        (Some(parent), Some(asked)) if asked > parent => {
            problems.push(format!("{name} {asked} is above the parent key's {parent}"));
            Some(asked)
        }
        (parent, None) => parent,
        (_, asked) => asked,
    }
}

/// What a child holds beyond `limit` (the parent's new value), if it does.
/// Strict, as minting stores a child's limits: no limit is only within no
/// limit.
fn limit_excess<T: Copy + Ord + std::fmt::Display>(
    name: &str,
    limit: Option<T>,
    child: Option<T>,
) -> Option<String> {
    match (limit, child) {
        (Some(limit), None) => Some(format!("no {name} limit (above {limit})")),
        (Some(limit), Some(child)) if child > limit => {
            Some(format!("{name} {child} (above {limit})"))
        }
        _ => None,
    }
}

pub(super) async fn update_key(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<UpdatedKey>, AdminError> {
    let id = parse_key_id(&id)?;
    let request: UpdateKeyRequest = parse_json(&body)?;
    if request.is_empty() {
        return Err(AdminError::bad_request(
            "nothing to change: give at least one of --name, --project, --provider, --model, --ttl, --rpm, --tpm, --max-parallel, --on-anomaly, --budget or --remove-budget",
        ));
    }
    let _guard = state.admin_write.lock().await;
    apply_key_update(&state, &id, &request)
        .await
        .map(axum::Json)
}

/// Changes a key in place. Every path that changes a key's budgets,
/// limits, scope or expiry (`key update`, `budget set --key`) comes here,
/// so each is checked the same way: not revoked, within its parent, and
/// not below any child in force. The caller holds the admin lock.
pub(super) async fn apply_key_update(
    state: &AppState,
    id: &KeyId,
    request: &UpdateKeyRequest,
) -> Result<UpdatedKey, AdminError> {
    let id = id.clone();
    let now = state.clock.now();
    let snapshot = state.snapshot.load_full();
    let entry = snapshot.key_by_id(&id).cloned().ok_or_else(|| {
        AdminError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key with id {id}"),
        )
    })?;
    let old = &entry.record;
    if old.revoked_at.is_some() {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "key_revoked",
            format!("key {id} is revoked; create a new key instead"),
        ));
    }
    // An expired key stays expired, like a revoked one: a new lifetime
    // would bring back a secret that may have been handed out and
    // forgotten, under a name another key may hold by now.
    if let Some(at) = old.expires_at
        && at <= now
    {
        return Err(AdminError::new(
            StatusCode::CONFLICT,
            "key_expired",
            format!(
                "key {id} expired at {}; create a new key instead",
                super::rfc3339(at)
            ),
        ));
    }
    let parent = entry.ancestors.first().cloned();
    let children: Vec<&KeyEntry> = snapshot
        .keys_by_id
        .values()
        .filter(|child| child.record.parent.as_ref() == Some(&id) && in_force(child, now))
        .map(|child| &**child)
        .collect();
    refuse_secrets_in_key(
        state,
        &snapshot,
        request.name.as_deref(),
        request
            .project
            .as_ref()
            .and_then(|p| p.as_ref())
            .map(|p| p.as_str()),
        request.models.as_deref().unwrap_or_default(),
    )?;
    // Only the fields this request changes are checked against the family,
    // so an inconsistency left by an earlier version never blocks an
    // unrelated edit such as a rename.
    let mut problems = FamilyProblems::default();

    let name = match &request.name {
        Some(name) => super::mint::validate_name(name)?,
        None => old.name.clone(),
    };
    if name != old.name && !request.allow_duplicate_name {
        check_name_free(&snapshot, &old.env, &name, Some(&id), now)?;
    }

    let project = match &request.project {
        None => old.project.clone(),
        Some(asked) => {
            if let Some(parent) = &parent
                && asked != &parent.record.project
            {
                problems.above_parent.push(format!(
                    "a child key stays in its parent's project ({})",
                    parent
                        .record
                        .project
                        .as_ref()
                        .map_or("none".to_owned(), |p| format!("`{p}`"))
                ));
            }
            // A child stays in its parent's project (its spend counts
            // against that project's budgets), so a parent keeps its
            // project while it has children in force.
            if asked != &old.project {
                for child in &children {
                    problems.children.push(format!(
                        "child key {} is in the project (revoke its children before moving it to another project)",
                        child.record.id
                    ));
                }
            }
            asked.clone()
        }
    };

    let scope_changes = request.providers.is_some() || request.models.is_some();
    let asked_scope = Scope {
        providers: request
            .providers
            .as_ref()
            .map(|providers| dedup(providers))
            .unwrap_or_else(|| old.scope.providers.clone()),
        models: request
            .models
            .as_ref()
            .map(|models| dedup(models))
            .unwrap_or_else(|| old.scope.models.clone()),
    };
    let scope = match &parent {
        // A child's empty list is its parent's, as at minting.
        Some(parent) if scope_changes => match parent.record.scope.narrow(asked_scope.clone()) {
            Ok(scope) => scope,
            Err(error) => {
                problems.above_parent.push(error.0);
                asked_scope
            }
        },
        _ => asked_scope,
    };
    if scope_changes {
        for provider in &scope.providers {
            if !snapshot
                .providers
                .contains_key(&(old.env.clone(), provider.clone()))
            {
                return Err(AdminError::bad_request(format!(
                    "no provider named `{provider}` in environment `{}`",
                    old.env
                )));
            }
        }
    }
    let widening = scope_excess(&old.scope, &scope);
    if let Some(excess) = &widening
        && !request.allow_widen
    {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "scope_widening",
            format!(
                "the new scope of key {id} allows {excess}, which its current scope does not: add --allow-widen to widen it (audited)"
            ),
        ));
    }

    let mut limits = old.limits;
    if let Some(rpm) = request.rpm {
        limits.rpm = rpm;
    }
    if let Some(tpm) = request.tpm {
        limits.tpm = tpm;
    }
    if let Some(max_parallel) = request.max_parallel {
        limits.max_parallel = max_parallel;
    }
    if limits.rpm == Some(0) || limits.tpm == Some(0) || limits.max_parallel == Some(0) {
        return Err(AdminError::bad_request(
            "rpm, tpm and max-parallel must be at least 1 (remove a limit with `none`)",
        ));
    }
    if let Some(parent) = &parent {
        let own = parent.record.limits;
        let problems = &mut problems.above_parent;
        if request.rpm.is_some() {
            limits.rpm = limit_within("rpm", own.rpm, limits.rpm, problems);
        }
        if request.tpm.is_some() {
            limits.tpm = limit_within("tpm", own.tpm, limits.tpm, problems);
        }
        if request.max_parallel.is_some() {
            limits.max_parallel = limit_within(
                "max-parallel",
                own.max_parallel,
                limits.max_parallel,
                problems,
            );
        }
    }

    let expires_at = match &request.ttl {
        None => old.expires_at,
        Some(None) => None,
        Some(Some(text)) => {
            let ttl = Ttl::parse(text)
                .map_err(|error| AdminError::bad_request(format!("ttl: {error}")))?;
            Some(now + ttl.as_duration())
        }
    };
    let expires_at = match (&parent, request.ttl.is_some()) {
        (Some(parent), true) => match (expires_at, parent.record.expires_at) {
            (Some(asked), Some(own)) if asked > own => {
                problems.above_parent.push(format!(
                    "the parent key expires at {}; a child cannot outlive it",
                    super::rfc3339(own)
                ));
                Some(asked)
            }
            (None, own) => own,
            (asked, _) => asked,
        },
        _ => expires_at,
    };

    let on_anomaly = match (&parent, request.on_anomaly) {
        (Some(parent), _) if parent.record.on_anomaly == AnomalyAction::Suspend => {
            AnomalyAction::Suspend
        }
        (_, Some(action)) => action,
        (_, None) => old.on_anomaly,
    };

    let (set_budgets, remove_budgets) = budget_changes(
        request,
        &entry,
        parent.as_deref(),
        now,
        &mut problems.above_parent,
    )?;

    // Children hold only what their parent holds: narrowing a key below
    // one of its children is refused (the child's own settings are what
    // the request path and `key show` report).
    for child in &children {
        let record = &child.record;
        let mut excess = Vec::new();
        if scope_changes && let Some(what) = scope_excess(&scope, &record.scope) {
            excess.push(what);
        }
        if request.rpm.is_some() {
            excess.extend(limit_excess("rpm", limits.rpm, record.limits.rpm));
        }
        if request.tpm.is_some() {
            excess.extend(limit_excess("tpm", limits.tpm, record.limits.tpm));
        }
        if request.max_parallel.is_some() {
            excess.extend(limit_excess(
                "max-parallel",
                limits.max_parallel,
                record.limits.max_parallel,
            ));
        }
        if request.ttl.is_some()
            && let Some(until) = expires_at
        {
            match record.expires_at {
                None => excess.push(format!("no expiry (after {})", super::rfc3339(until))),
                Some(at) if at > until => excess.push(format!(
                    "expiry {} (after {})",
                    super::rfc3339(at),
                    super::rfc3339(until)
                )),
                Some(_) => {}
            }
        }
        for budget in &set_budgets {
            let scope = BudgetScope::Key(record.id.clone());
            if let Some(own) = child
                .budgets
                .iter()
                .map(|cell| cell.status(now))
                .find(|status| status.scope == scope && status.limit.period == budget.limit.period)
                && own.limit.amount > budget.limit.amount
            {
                excess.push(format!("budget {} (above {})", own.limit, budget.limit));
            }
        }
        if !excess.is_empty() {
            problems.children.push(format!(
                "child key {} allows {}",
                record.id,
                excess.join(", ")
            ));
        }
    }
    problems.into_result(&id)?;

    let mut warnings = request
        .models
        .as_deref()
        .map(|models| unknown_model_warnings(state, models))
        .unwrap_or_default();
    if name != old.name && request.allow_duplicate_name {
        warnings.extend(
            check_name_free(&snapshot, &old.env, &name, Some(&id), now)
                .err()
                .map(|error| format!("another key is also named `{name}` ({})", error.code)),
        );
    }
    let kind = if widening.is_some() {
        "key.widen"
    } else {
        "key.update"
    };
    audit(
        state,
        kind,
        serde_json::json!({
            "id": id,
            "name": name,
            "project": project,
            "scope": {"from": old.scope, "to": scope},
            "widened": widening,
            "limits": {"from": old.limits, "to": limits},
            "expires_at": expires_at.map(super::rfc3339),
            "on_anomaly": on_anomaly,
            "budgets_set": set_budgets.iter().map(|b| b.limit.to_string()).collect::<Vec<_>>(),
            "budgets_removed": remove_budgets,
        }),
    )
    .await?;
    // A budget's spend this period is read from the ledger: write out
    // what is still queued first.
    if !set_budgets.is_empty() {
        state.ledger.flush(std::time::Duration::from_secs(5)).await;
    }
    let update = KeyUpdate {
        id: id.clone(),
        name,
        scope,
        project,
        limits,
        on_anomaly,
        expires_at,
        set_budgets,
        remove_budgets,
    };
    if !state
        .store
        .update_virtual_key(&update)
        .await
        .map_err(AdminError::store)?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "key_not_found",
            format!("no key with id {id}"),
        ));
    }
    reload(state).await?;
    tracing::info!(key_id = %id, widened = widening.is_some(), "virtual key updated");
    let snapshot = state.snapshot.load();
    let entry = snapshot
        .key_by_id(&id)
        .ok_or_else(|| AdminError::internal("the key is missing from the reloaded snapshot"))?;
    Ok(UpdatedKey {
        view: key_view(entry, now),
        widened: widening.is_some(),
        warnings,
    })
}

/// `items` in their order, each once (`--provider oa --provider oa` is
/// one provider).
pub(crate) fn dedup<T: Clone + PartialEq>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

/// The key's own budgets to set and to remove, checked: amounts above zero,
/// one per period, removals of budgets that exist, and a child's budgets no
/// larger than its parent's of the same period (pushed to `above_parent`).
fn budget_changes(
    request: &UpdateKeyRequest,
    entry: &KeyEntry,
    parent: Option<&KeyEntry>,
    now: OffsetDateTime,
    above_parent: &mut Vec<String>,
) -> Result<(Vec<BudgetRecord>, Vec<BudgetId>), AdminError> {
    let own_scope = BudgetScope::Key(entry.record.id.clone());
    let own = |key: &KeyEntry, period: Period| {
        let scope = BudgetScope::Key(key.record.id.clone());
        key.budgets
            .iter()
            .find(|cell| cell.scope() == &scope && cell.status(now).limit.period == period)
            .map(|cell| cell.status(now))
    };
    let mut periods: Vec<Period> = Vec::new();
    let mut set = Vec::new();
    for limit in &request.budgets {
        if limit.amount.0 <= 0 {
            return Err(AdminError::bad_request(
                "a budget must be greater than zero (remove one with --remove-budget PERIOD)",
            ));
        }
        if periods.contains(&limit.period) {
            return Err(AdminError::bad_request(format!(
                "two budgets for the same period ({}): give one per period",
                limit.period
            )));
        }
        periods.push(limit.period);
        if let Some(parent) = parent
            && let Some(parents) = own(parent, limit.period)
            && limit.amount > parents.limit.amount
        {
            above_parent.push(format!(
                "budget {limit} is above the parent key's {}",
                parents.limit
            ));
        }
        set.push(BudgetRecord {
            id: own(entry, limit.period).map_or_else(BudgetId::generate, |status| status.id),
            scope: own_scope.clone(),
            limit: *limit,
            created_at: now,
        });
    }
    let mut remove = Vec::new();
    for period in &request.remove_budgets {
        if periods.contains(period) {
            return Err(AdminError::bad_request(format!(
                "the {period} budget is both set and removed"
            )));
        }
        let status = own(entry, *period).ok_or_else(|| {
            AdminError::bad_request(format!(
                "key {} has no {period} budget of its own to remove",
                entry.record.id
            ))
        })?;
        if !remove.contains(&status.id) {
            remove.push(status.id);
        }
    }
    Ok((set, remove))
}

#[cfg(test)]
mod tests {
    use keyforge_types::ProviderName;

    use super::*;

    fn scope(providers: &[&str], models: &[&str]) -> Scope {
        Scope {
            providers: providers
                .iter()
                .map(|p| ProviderName::parse(p).unwrap())
                .collect(),
            models: models
                .iter()
                .map(|m| ModelPattern::parse(m).unwrap())
                .collect(),
        }
    }

    #[test]
    fn scope_excess_is_strict() {
        let check = |outer: Scope, inner: Scope, expect: Option<&str>| {
            assert_eq!(scope_excess(&outer, &inner).as_deref(), expect);
        };
        check(scope(&[], &[]), scope(&[], &[]), None);
        check(scope(&[], &[]), scope(&["openai"], &["gpt-4o*"]), None);
        check(
            scope(&["openai"], &[]),
            scope(&[], &[]),
            Some("every provider of the environment"),
        );
        check(
            scope(&["openai"], &[]),
            scope(&["openai", "anthropic"], &[]),
            Some("provider `anthropic`"),
        );
        check(
            scope(&[], &["gpt-4o*"]),
            scope(&[], &[]),
            Some("every model"),
        );
        check(scope(&[], &["gpt-4o*"]), scope(&[], &["gpt-4o-mini"]), None);
        check(
            scope(&[], &["gpt-4o-mini"]),
            scope(&[], &["gpt-4o*"]),
            Some("models `gpt-4o*`"),
        );
    }

    #[test]
    fn base_urls_lose_their_version_segment() {
        let check = |kind: ProviderKind, input: &str, expect: &str, warned: bool| {
            let (url, warning) = normalise_base_url(kind, input).unwrap();
            assert_eq!(url, expect, "{input}");
            assert_eq!(warning.is_some(), warned, "{input}");
        };
        check(
            ProviderKind::OpenAi,
            "https://api.openai.com/v1",
            "https://api.openai.com",
            true,
        );
        check(
            ProviderKind::OpenAi,
            "https://api.openai.com/v1/",
            "https://api.openai.com",
            true,
        );
        check(
            ProviderKind::OpenAi,
            "https://api.openai.com",
            "https://api.openai.com",
            false,
        );
        check(
            ProviderKind::OpenAiCompatible,
            "https://api.groq.com/openai/v1",
            "https://api.groq.com/openai",
            true,
        );
        // Only a whole segment.
        check(
            ProviderKind::OpenAiCompatible,
            "https://example.com/apiv1",
            "https://example.com/apiv1",
            false,
        );
        check(
            ProviderKind::Gemini,
            "https://generativelanguage.googleapis.com/v1beta",
            "https://generativelanguage.googleapis.com",
            true,
        );
        check(
            ProviderKind::OpenAi,
            "http://127.0.0.1:65535",
            "http://127.0.0.1:65535",
            false,
        );
        check(
            ProviderKind::OpenAi,
            "http://[::1]:8080/v1",
            "http://[::1]:8080",
            true,
        );
    }

    /// Regression (issue #14, tester's finding 10).
    #[test]
    fn bad_ports_and_doubled_versions_are_refused() {
        for (kind, input, expect) in [
            (
                ProviderKind::OpenAi,
                "http://127.0.0.1:99999",
                "invalid port",
            ),
            (ProviderKind::OpenAi, "http://127.0.0.1:0", "invalid port"),
            (
                ProviderKind::OpenAi,
                "https://api.openai.com/v1/v1",
                "API version twice",
            ),
            (
                ProviderKind::OpenAi,
                "https://api.openai.com/v1/v1/",
                "API version twice",
            ),
            (
                ProviderKind::Gemini,
                "https://g.example/v1beta/v1beta",
                "API version twice",
            ),
        ] {
            let error = normalise_base_url(kind, input).unwrap_err();
            assert!(error.message.contains(expect), "{input}: {}", error.message);
        }
    }
}
