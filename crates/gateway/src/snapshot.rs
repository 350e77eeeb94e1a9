//! What the request path reads: every virtual key (by hash) with its rate
//! limiters and the budgets that apply to it, and every provider with its
//! decrypted credential, in one immutable snapshot behind an `ArcSwap`.
//! Readers never lock; writers (admin changes) build a new snapshot from the
//! store and swap it in before they answer, so a revocation is in force for
//! the very next request.
//!
//! Counters live in `Arc`s that a rebuild carries over from the previous
//! snapshot (a budget's spend, a key's rate limiters), so an admin change
//! never resets them. At start, with no previous snapshot, they are rebuilt
//! from the ledger: each budget's spend in its current period, each key's
//! requests and tokens of the last minute.
//!
//! The store is not trusted more than the disk: every row whose MAC fails
//! (`Store::integrity_failures`) is refused here, in the safe direction. A
//! provider is left out (requests naming it get a 503 saying so), a key and
//! its descendants are refused (401), a budget is kept at a limit of zero,
//! a webhook is left out. Each failure is logged once and alerted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use keyforge_control::{BudgetCell, InFlight, KeyWatch, RateLimiter};
use keyforge_providers::{ErrorClass, ProviderKind};
use keyforge_store::{
    CredentialRecord, ProviderRecord, RowFailure, SealedTable, Store, StoreError, VirtualKeyRecord,
};
use keyforge_types::{
    BudgetId, BudgetScope, EnvName, KeyHash, KeyId, KeyLimits, NanoUsd, ProviderName,
    ProviderSecret,
};
use keyforge_vault::Sealer;
use secrecy::SecretString;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::alerts::Webhook;
use crate::error::GatewayError;

/// A key's rate limiters; `None` where the key has no such limit.
#[derive(Debug)]
pub(crate) struct KeyLimiters {
    pub(crate) limits: KeyLimits,
    pub(crate) rpm: Option<RateLimiter>,
    pub(crate) tpm: Option<RateLimiter>,
    pub(crate) in_flight: Option<Arc<InFlight>>,
}

impl KeyLimiters {
    /// In-memory limiters for `limits` (the whole limits, kept in
    /// `limits`), each enforcing `1 / share` of its limit: one instance's
    /// share of a cluster of `share` (1 outside cluster mode).
    fn new(limits: KeyLimits, share: u32) -> Self {
        let share = share.max(1);
        Self {
            limits,
            rpm: limits
                .rpm
                .map(|rpm| RateLimiter::new(u64::from(rpm) / u64::from(share))),
            tpm: limits
                .tpm
                .map(|tpm| RateLimiter::new(tpm / u64::from(share))),
            in_flight: limits.max_parallel.map(|max| InFlight::new(max / share)),
        }
    }
}

/// A key as the request path needs it.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub(crate) record: VirtualKeyRecord,
    pub(crate) limiters: Arc<KeyLimiters>,
    /// The key's recent behaviour, for anomaly detection.
    pub(crate) watch: Arc<KeyWatch>,
    /// The key's own budgets, its ancestors', its project's and its
    /// environment's, sorted by id (the order their locks are taken in).
    pub(crate) budgets: Vec<Arc<BudgetCell>>,
    /// The key's parent, grandparent and so on: a child is usable only while
    /// every one of them is.
    pub(crate) ancestors: Vec<Arc<KeyEntry>>,
}

impl KeyEntry {
    /// A key that is not in the snapshot (archived), for display only.
    pub(crate) fn detached(record: VirtualKeyRecord) -> Self {
        Self {
            limiters: Arc::new(KeyLimiters::new(record.limits, 1)),
            watch: Arc::new(KeyWatch::new()),
            budgets: Vec::new(),
            ancestors: Vec::new(),
            record,
        }
    }
}

/// How deep a tree of keys may grow (a root key is depth 0).
pub(crate) const MAX_KEY_DEPTH: usize = 8;

/// A version of a provider's key, decrypted.
#[derive(Debug)]
pub(crate) struct Credential {
    pub(crate) version: u32,
    pub(crate) secret: ProviderSecret,
    /// The key's encodings, precomputed once: searched for in every
    /// response of a request that uses this version, and replaced.
    pub(crate) floor: Arc<crate::floor::KeyFloor>,
}

/// A provider as the request path needs it.
#[derive(Debug)]
pub(crate) struct ProviderEntry {
    pub(crate) record: ProviderRecord,
    pub(crate) kind: ProviderKind,
    /// The base URL without a trailing slash.
    pub(crate) base_url: String,
    pub(crate) current: Credential,
    /// Being rotated in: serves `record.rollout_percent` % of requests.
    pub(crate) pending: Option<Credential>,
    /// Requests so far, to give the pending version exactly its share.
    rollout_counter: AtomicU64,
    /// The hour (Unix hours) of the last "key rejected" alert, so a storm of
    /// rejections raises one alert, not one per request.
    rejection_alert_hour: AtomicI64,
}

impl ProviderEntry {
    /// True once per hour: whether a rejection seen now should alert.
    pub(crate) fn first_rejection_this_hour(&self, now: time::OffsetDateTime) -> bool {
        let hour = unix_ms(now).div_euclid(3_600_000);
        self.rejection_alert_hour.swap(hour, Ordering::Relaxed) != hour
    }

    /// The key version this request uses: the pending one for its share of
    /// requests during a gradual rollout, else the current one. A request
    /// keeps the version it was given to the end (it holds this entry), so
    /// promotions never switch keys under a request in flight.
    pub(crate) fn pick(&self) -> &Credential {
        let percent = u64::from(self.record.rollout_percent);
        if let Some(pending) = &self.pending
            && percent > 0
        {
            // Multiplying by 37 (coprime with 100) spreads the pending
            // version's share evenly over every hundred requests.
            let n = self.rollout_counter.fetch_add(1, Ordering::Relaxed);
            if (n.wrapping_mul(37)) % 100 < percent {
                return pending;
            }
        }
        &self.current
    }
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) keys: HashMap<KeyHash, Arc<KeyEntry>>,
    pub(crate) keys_by_id: HashMap<KeyId, Arc<KeyEntry>>,
    /// Earlier secrets of rotated keys, with the end of their grace window
    /// (kept for a month after it, to say why they are refused).
    pub(crate) grace: HashMap<KeyHash, (Arc<KeyEntry>, OffsetDateTime)>,
    pub(crate) providers: HashMap<(EnvName, ProviderName), Arc<ProviderEntry>>,
    pub(crate) budgets: HashMap<BudgetId, Arc<BudgetCell>>,
    /// Alert webhooks with their URLs decrypted (for the alert dispatcher).
    pub(crate) webhooks: Vec<Arc<Webhook>>,
    /// Providers left out because a row of theirs failed its integrity
    /// check, by the (environment, name) the row claims.
    pub(crate) refused_providers: HashMap<(EnvName, ProviderName), keyforge_types::ProviderId>,
    /// Keys refused because their row (or an ancestor's) failed its
    /// integrity check, by the hash the row holds: the key they name.
    pub(crate) refused_keys: HashMap<KeyHash, KeyId>,
    /// Every row that failed its check, with what was done about it.
    pub(crate) integrity_failures: HashMap<RowFailure, &'static str>,
    /// Unrevoked admins whose row holds its MAC, by the hash of their
    /// token: what the admin API authenticates against, with no database
    /// call. Revoked admins and admins whose row failed its check are left
    /// out, so their tokens are refused from the next request on.
    pub(crate) admins: HashMap<KeyHash, Arc<keyforge_store::AdminRecord>>,
    /// Every admin (revoked ones included), by name, for listings and
    /// checks such as "the last owner".
    pub(crate) admins_by_name: std::collections::BTreeMap<String, Arc<keyforge_store::AdminRecord>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("alert webhook {id}: {reason}")]
    Webhook { id: String, reason: String },
    #[error("provider `{name}` ({env}): {reason}")]
    Provider {
        name: ProviderName,
        env: EnvName,
        reason: String,
    },
}

/// Associated data binding a webhook URL's ciphertext to its row.
pub(crate) fn webhook_aad(id: &str) -> Vec<u8> {
    format!("keyforge/alert/{id}").into_bytes()
}

/// Associated data binding a provider credential's ciphertext to its row.
pub(crate) fn credential_aad(record_id: &str, version: u32) -> Vec<u8> {
    format!("keyforge/provider/{record_id}/v{version}").into_bytes()
}

/// Keys revoked or expired longer ago than this are archived: left out of
/// the snapshot (and of listings), so the short-lived keys of workloads do
/// not pile up in memory. They stay in the store (`key show` finds them) and
/// are refused as unknown.
pub(crate) const ARCHIVE_AFTER: time::Duration = time::Duration::days(30);

/// Rate limits are per minute: the ledger's last minute rebuilds them.
const RATE_WINDOW_MS: i64 = 60_000;

impl Snapshot {
    /// Builds a snapshot from the store, carrying counters over from
    /// `previous` (or, at start, rebuilding them from the ledger). `share`:
    /// the in-memory counters enforce `1 / share` of each limit (the
    /// `[redis] instances` of a cluster; 1 outside cluster mode).
    pub(crate) async fn load(
        store: &dyn Store,
        sealer: &Sealer,
        previous: Option<&Snapshot>,
        now: OffsetDateTime,
        share: u32,
    ) -> Result<Self, SnapshotError> {
        let mut snapshot = Snapshot::default();
        let failed: std::collections::HashSet<(SealedTable, String)> = store
            .integrity_failures()
            .await?
            .into_iter()
            .map(|failure| (failure.table, failure.id))
            .collect();
        let fails = |table: SealedTable, id: &str| failed.contains(&(table, id.to_owned()));
        let mut refused: HashMap<RowFailure, &'static str> = HashMap::new();
        let mut refuse = |table: SealedTable, id: &str, effect: &'static str| {
            let failure = RowFailure {
                table,
                id: id.to_owned(),
            };
            refused.insert(failure, effect);
        };
        for budget in store.list_budgets().await? {
            // An edited budget is held at its most restrictive reading: a
            // limit of zero, which refuses every request in its scope.
            let budget = if fails(SealedTable::Budget, budget.id.as_str()) {
                refuse(
                    SealedTable::Budget,
                    budget.id.as_str(),
                    "held at a limit of zero: every request in its scope is refused",
                );
                keyforge_store::BudgetRecord {
                    limit: keyforge_types::BudgetLimit {
                        amount: NanoUsd(0),
                        ..budget.limit
                    },
                    ..budget
                }
            } else {
                budget
            };
            let carried = previous
                .and_then(|previous| previous.budgets.get(&budget.id))
                .filter(|cell| cell.status(now).limit.period == budget.limit.period);
            let cell = match carried {
                Some(cell) => {
                    cell.set_limit(budget.limit);
                    cell.clone()
                }
                None => {
                    let since = BudgetCell::period_start(budget.limit, now);
                    let spent = store.spend_since(&budget.scope, unix_ms(since)).await?;
                    Arc::new(
                        BudgetCell::new(
                            budget.id.clone(),
                            budget.scope.clone(),
                            budget.limit,
                            NanoUsd(spent),
                            now,
                        )
                        .with_share(share),
                    )
                }
            };
            snapshot.budgets.insert(budget.id, cell);
        }
        let previous_keys: HashMap<&KeyId, &Arc<KeyEntry>> = previous
            .map(|previous| {
                previous
                    .keys
                    .values()
                    .map(|entry| (&entry.record.id, entry))
                    .collect()
            })
            .unwrap_or_default();
        let mut fresh_limiters = HashMap::new();
        // Parents before children, so each child can hold its ancestors.
        let records = parents_first(store.list_virtual_keys(Some(now - ARCHIVE_AFTER)).await?);
        let mut refused_ids: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
        for record in records {
            // A refused key's descendants are refused with it: without its
            // entry they would lose its limits and budgets.
            let parent_refused = record
                .parent
                .as_ref()
                .is_some_and(|parent| refused_ids.contains(parent));
            if fails(SealedTable::VirtualKey, record.id.as_str()) || parent_refused {
                if !parent_refused {
                    refuse(
                        SealedTable::VirtualKey,
                        record.id.as_str(),
                        "refused, with every key minted under it",
                    );
                }
                refused_ids.insert(record.id.clone());
                snapshot.refused_keys.insert(record.hash, record.id);
                continue;
            }
            let earlier = previous_keys.get(&record.id);
            let watch = earlier.map_or_else(|| Arc::new(KeyWatch::new()), |e| e.watch.clone());
            // The store is the truth for suspension: a resumed key is
            // usable again, a key suspended by another path is refused.
            watch.set_suspended(record.suspended.is_some());
            let limiters = match earlier {
                Some(entry) if entry.limiters.limits == record.limits => entry.limiters.clone(),
                _ => {
                    let limiters = Arc::new(KeyLimiters::new(record.limits, share));
                    fresh_limiters.insert(record.id.clone(), limiters.clone());
                    limiters
                }
            };
            let mut ancestors: Vec<Arc<KeyEntry>> = Vec::new();
            let mut parent = record.parent.as_ref();
            while let Some(id) = parent {
                let Some(entry) = snapshot.keys_by_id.get(id) else {
                    break;
                };
                ancestors.push(entry.clone());
                parent = entry.record.parent.as_ref();
            }
            let mut budgets: Vec<Arc<BudgetCell>> = snapshot
                .budgets
                .values()
                .filter(|cell| applies_to(cell.scope(), &record, &ancestors))
                .cloned()
                .collect();
            budgets.sort_by(|a, b| a.id().cmp(b.id()));
            let entry = Arc::new(KeyEntry {
                record,
                limiters,
                watch,
                budgets,
                ancestors,
            });
            snapshot
                .keys_by_id
                .insert(entry.record.id.clone(), entry.clone());
            snapshot.keys.insert(entry.record.hash, entry);
        }
        if previous.is_none() {
            replay_recent_requests(store, &snapshot.keys_by_id, &fresh_limiters, now).await?;
        }
        let by_id = &snapshot.keys_by_id;
        let mut grace = HashMap::new();
        for secret in store
            .list_grace_secrets(now - time::Duration::days(30))
            .await?
        {
            if let Some(entry) = by_id.get(&secret.key_id) {
                grace.insert(secret.hash, (Arc::clone(entry), secret.valid_until));
            }
        }
        snapshot.grace = grace;
        for record in store.list_alert_webhooks().await? {
            // An edited webhook could send alerts elsewhere: left out.
            if fails(SealedTable::AlertWebhook, record.id.as_str()) {
                refuse(
                    SealedTable::AlertWebhook,
                    record.id.as_str(),
                    "left out: no alert is sent to it",
                );
                continue;
            }
            let plaintext = sealer
                .open(&record.sealed_url, &webhook_aad(record.id.as_str()))
                .map_err(|error| SnapshotError::Webhook {
                    id: record.id.to_string(),
                    reason: error.to_string(),
                })?;
            let url =
                String::from_utf8(plaintext.to_vec()).map_err(|_| SnapshotError::Webhook {
                    id: record.id.to_string(),
                    reason: "URL is not text".into(),
                })?;
            snapshot.webhooks.push(Arc::new(Webhook {
                id: record.id,
                url: SecretString::from(url),
                display_url: record.display_url,
                thresholds: record.thresholds,
            }));
        }
        for record in store.list_providers().await? {
            // The provider row or one of its key versions was edited: its
            // base URL, kind or environment cannot be trusted, so its key
            // is never decrypted or sent anywhere.
            let id = record.id.as_str();
            let versions = std::iter::once(&record.current)
                .chain(&record.pending)
                .chain(&record.previous);
            let failed_row = std::iter::once((SealedTable::Provider, id.to_owned()))
                .chain(versions.map(|c| (SealedTable::Credential, format!("{id}/v{}", c.version))))
                .find(|(table, row)| fails(*table, row));
            if let Some((table, row)) = failed_row {
                refuse(
                    table,
                    &row,
                    "provider left out: requests to it are refused (503)",
                );
                snapshot
                    .refused_providers
                    .insert((record.env, record.name), record.id);
                continue;
            }
            let entry = provider_entry(record, sealer)?;
            snapshot.providers.insert(
                (entry.record.env.clone(), entry.record.name.clone()),
                Arc::new(entry),
            );
        }
        for record in store.list_admins().await? {
            let record = Arc::new(record);
            if fails(SealedTable::Admin, record.name.as_str()) {
                refuse(
                    SealedTable::Admin,
                    record.name.as_str(),
                    "admin refused: its token cannot call the admin API",
                );
            } else if record.revoked_at.is_none() {
                snapshot
                    .admins
                    .insert(record.token_hash, Arc::clone(&record));
            }
            snapshot
                .admins_by_name
                .insert(record.name.as_str().to_owned(), record);
        }
        snapshot.integrity_failures = refused;
        Ok(snapshot)
    }

    /// Logs and alerts each integrity failure not already in `previous`
    /// (so each is reported once per process, not at every reload). Only
    /// row ids are named, never a secret.
    pub(crate) fn report_integrity_failures(
        &self,
        previous: Option<&Snapshot>,
        alerts: &crate::alerts::Alerts,
    ) {
        for (failure, effect) in &self.integrity_failures {
            if previous.is_some_and(|previous| previous.integrity_failures.contains_key(failure)) {
                continue;
            }
            tracing::error!(
                table = failure.table.as_str(),
                id = %failure.id,
                effect,
                "a store row failed its integrity check (edited outside KeyForge)"
            );
            alerts.raise(crate::alerts::Raised::Integrity {
                table: failure.table,
                id: failure.id.clone(),
                effect,
            });
        }
    }

    /// The key a secret's hash belongs to, and for an earlier secret of a
    /// rotated key, the end of its grace window. The map lookup is on a
    /// keyed hash, which leaks nothing; the final comparison is
    /// constant-time as a matter of principle.
    pub(crate) fn find_key(
        &self,
        hash: &KeyHash,
    ) -> Option<(&Arc<KeyEntry>, Option<OffsetDateTime>)> {
        match self
            .keys
            .get(hash)
            .filter(|entry| entry.record.hash.ct_eq(hash))
        {
            Some(entry) => Some((entry, None)),
            None => self
                .grace
                .get(hash)
                .map(|(entry, valid_until)| (entry, Some(*valid_until))),
        }
    }

    /// The unrevoked, intact admin holding the token that hashes to `hash`
    /// (map lookup on a keyed hash, then a constant-time comparison).
    pub(crate) fn find_admin(&self, hash: &KeyHash) -> Option<&Arc<keyforge_store::AdminRecord>> {
        self.admins
            .get(hash)
            .filter(|admin| admin.token_hash.ct_eq(hash))
    }

    pub(crate) fn key_by_id(&self, id: &KeyId) -> Option<&Arc<KeyEntry>> {
        self.keys_by_id.get(id)
    }

    pub(crate) fn providers_in(&self, env: &EnvName) -> impl Iterator<Item = &Arc<ProviderEntry>> {
        self.providers
            .values()
            .filter(move |entry| &entry.record.env == env)
    }
}

/// Orders keys so that every parent comes before its children (a key whose
/// parent is missing is treated as a root).
fn parents_first(records: Vec<VirtualKeyRecord>) -> Vec<VirtualKeyRecord> {
    let ids: std::collections::HashSet<KeyId> =
        records.iter().map(|record| record.id.clone()).collect();
    let mut placed: std::collections::HashSet<KeyId> = std::collections::HashSet::new();
    let mut pending = records;
    let mut ordered = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = ordered.len();
        let (ready, waiting): (Vec<_>, Vec<_>) = pending.into_iter().partition(|record| {
            record
                .parent
                .as_ref()
                .is_none_or(|parent| placed.contains(parent) || !ids.contains(parent))
        });
        for record in &ready {
            placed.insert(record.id.clone());
        }
        ordered.extend(ready);
        pending = waiting;
        if ordered.len() == before {
            // A cycle cannot be created through the API; keep the keys anyway.
            ordered.append(&mut pending);
        }
    }
    ordered
}

fn applies_to(scope: &BudgetScope, key: &VirtualKeyRecord, ancestors: &[Arc<KeyEntry>]) -> bool {
    match scope {
        BudgetScope::Key(id) => {
            id == &key.id || ancestors.iter().any(|entry| &entry.record.id == id)
        }
        BudgetScope::Project(project) => key.project.as_ref() == Some(project),
        BudgetScope::Env(env) => env == &key.env,
    }
}

pub(crate) fn unix_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn unix_ns(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Feeds the last minute of the ledger through fresh rate limiters, so a
/// restart does not hand every key a new minute's allowance. A request
/// counts for its key and for each of the key's ancestors.
async fn replay_recent_requests(
    store: &dyn Store,
    keys: &HashMap<KeyId, Arc<KeyEntry>>,
    limiters: &HashMap<KeyId, Arc<KeyLimiters>>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if limiters
        .values()
        .all(|l| l.rpm.is_none() && l.tpm.is_none())
    {
        return Ok(());
    }
    for request in store.recent_requests(unix_ms(now) - RATE_WINDOW_MS).await? {
        let ancestors = keys
            .get(&request.key_id)
            .map(|entry| entry.ancestors.as_slice())
            .unwrap_or_default();
        let chain = std::iter::once(&request.key_id)
            .chain(ancestors.iter().map(|ancestor| &ancestor.record.id));
        let at_ns = request.at_ms.saturating_mul(1_000_000);
        for id in chain {
            let Some(limiters) = limiters.get(id) else {
                continue;
            };
            if let Some(rpm) = &limiters.rpm {
                rpm.replay(1, at_ns);
            }
            if let Some(tpm) = &limiters.tpm {
                tpm.replay(request.tokens, at_ns);
            }
        }
    }
    Ok(())
}

fn provider_entry(record: ProviderRecord, sealer: &Sealer) -> Result<ProviderEntry, SnapshotError> {
    let fail = |reason: String| SnapshotError::Provider {
        name: record.name.clone(),
        env: record.env.clone(),
        reason,
    };
    let kind = ProviderKind::parse(&record.kind).map_err(|error| fail(error.to_string()))?;
    let base_url = record
        .base_url
        .as_deref()
        .or(kind.default_base_url())
        .ok_or_else(|| fail("has no base URL".into()))?
        .trim_end_matches('/')
        .to_owned();
    let open = |credential: &CredentialRecord| -> Result<Credential, SnapshotError> {
        let plaintext = sealer
            .open(
                &credential.sealed,
                &credential_aad(record.id.as_str(), credential.version),
            )
            .map_err(|error| fail(format!("credential v{}: {error}", credential.version)))?;
        let text =
            std::str::from_utf8(&plaintext).map_err(|_| fail("credential is not text".into()))?;
        let secret = ProviderSecret::parse(text).map_err(|error| fail(error.to_string()))?;
        #[expect(
            clippy::disallowed_methods,
            reason = "the key's encodings are precomputed only to be searched for in responses and replaced"
        )]
        let floor = Arc::new(crate::floor::KeyFloor::new(&[secret.expose().as_bytes()]));
        Ok(Credential {
            version: credential.version,
            secret,
            floor,
        })
    };
    let current = open(&record.current)?;
    let pending = record.pending.as_ref().map(open).transpose()?;
    Ok(ProviderEntry {
        kind,
        base_url,
        current,
        pending,
        rollout_counter: AtomicU64::new(0),
        rejection_alert_hour: AtomicI64::new(i64::MIN),
        record,
    })
}

/// A key is usable while it and every ancestor are: revoking, suspending or
/// the expiry of a parent stops its whole tree at once.
pub(crate) fn entry_is_usable(entry: &KeyEntry, now: OffsetDateTime) -> Result<(), GatewayError> {
    own_status(entry, now, None)?;
    for ancestor in &entry.ancestors {
        own_status(ancestor, now, Some(&entry.record))?;
    }
    Ok(())
}

fn own_status(
    entry: &KeyEntry,
    now: OffsetDateTime,
    child: Option<&VirtualKeyRecord>,
) -> Result<(), GatewayError> {
    let record: &VirtualKeyRecord = &entry.record;
    let say = |what: &str| match child {
        None => format!("KeyForge key {} {what}", record.id),
        Some(child) => format!(
            "KeyForge key {} cannot be used: its parent key {} {what}",
            child.id, record.id
        ),
    };
    if record.revoked_at.is_some() {
        return Err(GatewayError::client(
            ErrorClass::Authentication,
            "key_revoked",
            say("has been revoked"),
        ));
    }
    if record.suspended.is_some() || entry.watch.is_suspended() {
        let reason = record
            .suspended
            .as_ref()
            .map_or("anomaly detected", |s| s.reason.as_str());
        return Err(GatewayError::client(
            ErrorClass::PermissionDenied,
            "key_suspended",
            say(&format!(
                "is suspended ({reason}); an operator can resume it with `keyforge key resume {}`",
                record.id
            )),
        ));
    }
    if let Some(expires_at) = record.expires_at
        && now >= expires_at
    {
        let when = expires_at.format(&Rfc3339).unwrap_or_default();
        return Err(GatewayError::client(
            ErrorClass::Authentication,
            "key_expired",
            say(&format!("expired at {when}")),
        ));
    }
    Ok(())
}
