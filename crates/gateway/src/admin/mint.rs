//! Minting virtual keys, for every way a key comes to be: the admin API, a
//! `kf_` key minting a child (an agent's sub-key), and an OIDC exchange.
//!
//! A child key can only narrow its parent: the same environment and project,
//! a scope within the parent's, limits at most the parent's, an expiry no
//! later than the parent's, and budgets no larger than the parent's for the
//! same period. Its spend counts against every ancestor's budgets (the
//! snapshot gives a child its ancestors' budget cells), and it is usable only
//! while every ancestor is.

use std::sync::Arc;

use http::StatusCode;
use keyforge_store::{BudgetRecord, VirtualKeyRecord};
use keyforge_types::{
    AnomalyAction, BudgetId, BudgetLimit, BudgetScope, EnvName, KeyId, KeyLimits, ModelPattern,
    Period, ProjectName, ProviderName, Scope, Ttl, VirtualKey,
};
use time::OffsetDateTime;

use super::{AdminError, audit_as, reload};
use crate::snapshot::entry_is_usable;
use crate::snapshot::{KeyEntry, MAX_KEY_DEPTH};
use crate::state::AppState;

/// What a new key asks for, before it is checked against its parent.
#[derive(Debug, Clone)]
pub(crate) struct KeySpec {
    pub(crate) name: String,
    /// Required for a root key; a child defaults to its parent's.
    pub(crate) env: Option<EnvName>,
    pub(crate) providers: Vec<ProviderName>,
    pub(crate) models: Vec<ModelPattern>,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) project: Option<ProjectName>,
    pub(crate) budgets: Vec<BudgetLimit>,
    pub(crate) limits: KeyLimits,
    pub(crate) on_anomaly: AnomalyAction,
    pub(crate) can_mint: bool,
    /// Allow a name another key in force of the environment has (only
    /// admin-minted keys are held to unique names: they are the admin's
    /// handles, `name:ENV/NAME`).
    pub(crate) allow_duplicate_name: bool,
}

impl KeySpec {
    /// The spec of a `POST .../keys` body (the parent, if any, is handled
    /// by the caller).
    pub(crate) fn from_request(request: super::api::CreateKeyRequest) -> Result<Self, AdminError> {
        let ttl = request
            .ttl
            .as_deref()
            .map(Ttl::parse)
            .transpose()
            .map_err(|error| AdminError::bad_request(error.to_string()))?;
        Ok(Self {
            name: request.name,
            env: request.env,
            providers: request.providers,
            models: request.models,
            ttl,
            project: request.project,
            budgets: request.budgets,
            limits: request.limits,
            on_anomaly: request.on_anomaly,
            can_mint: request.can_mint,
            allow_duplicate_name: request.allow_duplicate_name,
        })
    }
}

/// Who is minting, for the record and the audit log.
#[derive(Debug, Clone)]
pub(crate) struct Minter {
    /// The audit log's actor: `admin:NAME`, `key:<id>`, `oidc:<role>`.
    pub(crate) actor: String,
    /// The key's `origin` column.
    pub(crate) origin: String,
    /// Extra facts for the audit entry (an OIDC token's issuer and subject).
    pub(crate) detail: serde_json::Value,
}

/// A key just minted: its secret (shown once) and its snapshot entry.
#[derive(Debug)]
pub(crate) struct Minted {
    pub(crate) key: VirtualKey,
    pub(crate) entry: Arc<KeyEntry>,
}

fn narrowing(error: impl std::fmt::Display) -> AdminError {
    AdminError::new(StatusCode::FORBIDDEN, "exceeds_parent", error.to_string())
}

/// A key name, trimmed: 1 to 100 printable characters.
pub(crate) fn validate_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
        return Err(AdminError::bad_request(
            "key name must be 1 to 100 printable characters",
        ));
    }
    // Names are handles (`name:ENV/NAME`) and are unique: an invisible
    // character would make two names that read the same. (No Unicode
    // normalisation crate is in the tree, so format characters are
    // refused rather than normalised.)
    if let Some(invisible) = name.chars().find(|c| is_format_character(*c)) {
        return Err(AdminError::bad_request(format!(
            "key name contains the invisible character U+{:04X} (zero-width, bidirectional control or other format character): type the name without it",
            u32::from(invisible)
        )));
    }
    Ok(name.to_owned())
}

/// Whether `c` is of Unicode general category Cf (format): zero-width
/// spaces and joiners, bidirectional controls, the byte order mark, tags.
fn is_format_character(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Checks `spec` (against `parent` when given) and builds the key's record
/// and budgets.
pub(crate) fn build(
    state: &AppState,
    spec: KeySpec,
    parent: Option<&KeyEntry>,
    minter: &Minter,
    now: OffsetDateTime,
) -> Result<(VirtualKey, VirtualKeyRecord, Vec<BudgetRecord>), AdminError> {
    let name = validate_name(&spec.name)?;
    super::edit::refuse_secrets_in_key(
        state,
        &state.snapshot.load(),
        Some(&name),
        spec.project.as_ref().map(|p| p.as_str()),
        &spec.models,
    )?;
    let limits = spec.limits;
    if limits.rpm == Some(0) || limits.tpm == Some(0) || limits.max_parallel == Some(0) {
        return Err(AdminError::bad_request(
            "rpm, tpm and max-parallel must be at least 1 (leave a limit out for none)",
        ));
    }
    let mut periods: Vec<Period> = Vec::new();
    for limit in &spec.budgets {
        if limit.amount.0 <= 0 {
            return Err(AdminError::bad_request(
                "a budget must be greater than zero",
            ));
        }
        if periods.contains(&limit.period) {
            return Err(AdminError::bad_request(format!(
                "two budgets for the same period ({}): give one per period",
                limit.period
            )));
        }
        periods.push(limit.period);
    }
    let requested_scope = Scope {
        providers: super::edit::dedup(&spec.providers),
        models: super::edit::dedup(&spec.models),
    };
    let requested_expiry = spec.ttl.map(|ttl| now + ttl.as_duration());
    let (env, project, scope, limits, expires_at, on_anomaly) = match parent {
        None => {
            let env = spec
                .env
                .ok_or_else(|| AdminError::bad_request("a key needs an environment (--env)"))?;
            (
                env,
                spec.project,
                requested_scope,
                limits,
                requested_expiry,
                spec.on_anomaly,
            )
        }
        Some(parent) => {
            let record = &parent.record;
            entry_is_usable(parent, now).map_err(|error| {
                AdminError::new(
                    StatusCode::FORBIDDEN,
                    "parent_not_usable",
                    format!("cannot mint under key {}: {}", record.id, error.message),
                )
            })?;
            if parent.ancestors.len() + 1 >= MAX_KEY_DEPTH {
                return Err(narrowing(format!(
                    "key {} is already {} levels deep; a tree of keys is at most {MAX_KEY_DEPTH} levels",
                    record.id,
                    parent.ancestors.len() + 1
                )));
            }
            if let Some(env) = &spec.env
                && env != &record.env
            {
                return Err(narrowing(format!(
                    "a child key stays in its parent's environment `{}` (asked for `{env}`)",
                    record.env
                )));
            }
            let project = match (&spec.project, &record.project) {
                (Some(asked), Some(own)) if asked != own => {
                    return Err(narrowing(format!(
                        "a child key stays in its parent's project `{own}` (asked for `{asked}`)"
                    )));
                }
                (Some(asked), None) => {
                    return Err(narrowing(format!(
                        "the parent key has no project, so its child cannot be put in `{asked}`"
                    )));
                }
                (_, own) => own.clone(),
            };
            let scope = record.scope.narrow(requested_scope).map_err(narrowing)?;
            let limits = record.limits.narrow(limits).map_err(narrowing)?;
            let expires_at = match (requested_expiry, record.expires_at) {
                (Some(asked), Some(own)) if asked > own => {
                    return Err(narrowing(format!(
                        "the parent key expires at {}; a child cannot outlive it",
                        super::rfc3339(own)
                    )));
                }
                (None, own) => own,
                (asked, _) => asked,
            };
            for limit in &spec.budgets {
                let own = parent.budgets.iter().find(|cell| {
                    cell.scope() == &BudgetScope::Key(record.id.clone())
                        && cell.status(now).limit.period == limit.period
                });
                if let Some(own) = own {
                    let own_limit = own.status(now).limit;
                    if limit.amount > own_limit.amount {
                        return Err(narrowing(format!(
                            "budget {limit} is above the parent key's {own_limit}"
                        )));
                    }
                }
            }
            if spec.can_mint && !record.can_mint && minter.origin != "admin" {
                return Err(narrowing(
                    "a key that may not mint keys cannot give that right to a child",
                ));
            }
            // A parent that suspends on anomalies keeps its children on the
            // same rule.
            let on_anomaly = if record.on_anomaly == AnomalyAction::Suspend {
                AnomalyAction::Suspend
            } else {
                spec.on_anomaly
            };
            (
                record.env.clone(),
                project,
                scope,
                limits,
                expires_at,
                on_anomaly,
            )
        }
    };
    {
        let snapshot = state.snapshot.load();
        for provider in &scope.providers {
            if !snapshot
                .providers
                .contains_key(&(env.clone(), provider.clone()))
            {
                return Err(AdminError::bad_request(format!(
                    "no provider named `{provider}` in environment `{env}`"
                )));
            }
        }
    }
    if minter.origin == "admin" && !spec.allow_duplicate_name {
        super::edit::check_name_free(&state.snapshot.load(), &env, &name, None, now)?;
    }
    let virtual_key = VirtualKey::generate(&env);
    let record = VirtualKeyRecord {
        id: KeyId::generate(),
        name,
        env,
        hash: state.hasher.hash(&virtual_key),
        prefix: virtual_key.display_prefix(),
        scope,
        project,
        limits,
        on_anomaly,
        created_at: now,
        expires_at,
        revoked_at: None,
        suspended: None,
        parent: parent.map(|parent| parent.record.id.clone()),
        can_mint: spec.can_mint,
        origin: minter.origin.clone(),
    };
    let budgets: Vec<BudgetRecord> = spec
        .budgets
        .iter()
        .map(|limit| BudgetRecord {
            id: BudgetId::generate(),
            scope: BudgetScope::Key(record.id.clone()),
            limit: *limit,
            created_at: now,
        })
        .collect();
    Ok((virtual_key, record, budgets))
}

/// Checks, audits, stores and publishes a new key. The parent (if any) is
/// looked up again under the admin lock, so a parent revoked a moment ago
/// cannot gain a child.
pub(crate) async fn mint(
    state: &AppState,
    spec: KeySpec,
    parent: Option<&KeyId>,
    minter: Minter,
) -> Result<Minted, AdminError> {
    let _guard = state.admin_write.lock().await;
    let now = state.clock.now();
    let snapshot = state.snapshot.load_full();
    let parent = match parent {
        None => None,
        Some(id) => Some(snapshot.key_by_id(id).cloned().ok_or_else(|| {
            AdminError::new(
                StatusCode::NOT_FOUND,
                "key_not_found",
                format!("no key with id {id}"),
            )
        })?),
    };
    let (virtual_key, record, budgets) = build(state, spec, parent.as_deref(), &minter, now)?;
    let mut data = serde_json::json!({
        "id": record.id,
        "name": record.name,
        "env": record.env,
        "project": record.project,
        "parent": record.parent,
        "origin": record.origin,
        "scope": record.scope,
        "limits": record.limits,
        "budgets": budgets.iter().map(|b| b.limit.to_string()).collect::<Vec<_>>(),
        "expires_at": record.expires_at.map(super::rfc3339),
        "can_mint": record.can_mint,
    });
    if let (Some(data), serde_json::Value::Object(detail)) = (data.as_object_mut(), &minter.detail)
    {
        data.extend(detail.clone());
    }
    let kind = if minter.origin == "admin" {
        "admin.key.create"
    } else {
        "key.create"
    };
    audit_as(state, &minter.actor, kind, data).await?;
    state
        .store
        .insert_virtual_key(&record, &budgets)
        .await
        .map_err(AdminError::store)?;
    reload(state).await?;
    let entry = state
        .snapshot
        .load()
        .key_by_id(&record.id)
        .cloned()
        .ok_or_else(|| AdminError::internal("the new key is missing from the reloaded snapshot"))?;
    tracing::info!(key_id = %record.id, env = %record.env, origin = %record.origin, parent = ?record.parent.as_ref().map(KeyId::as_str), "virtual key created");
    Ok(Minted {
        key: virtual_key,
        entry,
    })
}
