//! KeyForge's storage: one [`Store`] trait, implemented on SQLite (the
//! embedded default: one file in the data directory) and on PostgreSQL
//! ([`PgStore`]: one database shared by a cluster of gateways). Both are
//! held to one conformance suite (`conformance.rs`).
//!
//! Invariants: the store never sees a plaintext secret. Provider keys arrive
//! sealed by the vault, virtual keys and admin tokens as their keyed hash. The store is not on
//! the request path: the gateway loads what it needs into memory at start and
//! after each change.

#[cfg(test)]
mod conformance;
mod migrate;
mod model;
mod postgres;
mod row_mac;
mod sqlite;

pub use migrate::{CopyReport, copy_sqlite_to_postgres};
pub use model::{
    AdminRecord, AdminRevokeOutcome, AlertDelivery, AlertEvent, AlertWebhookRecord,
    AuditCheckpoint, AuditRow, BudgetRecord, CredentialInfo, CredentialRecord, CredentialStage,
    GraceSecret, KeyRotation, KeyRotationOutcome, KeyUpdate, LedgerRecord, NewProvider,
    ProviderRecord, RecentRequest, RevokeOutcome, RollupTotal, StoredAlert, StoredLedgerRow,
    Suspension, UpstreamHealth, UsageGroup, UsageQuery, UsageRow, VersionUsage, VirtualKeyRecord,
};
pub use postgres::{
    CHANGE_LISTENER_APPLICATION, PgStore, is_postgres_url, redact_url, url_has_password,
};
pub use sqlite::{FileCheck, SqliteStore, check_file, checkpoint_file, sync_dir};

/// The key security-relevant rows are sealed under (HMAC-SHA-256; the
/// gateway derives it from the master key). The store computes each row's
/// MAC in the statement that writes it and reports rows that fail.
#[derive(Clone)]
pub struct RowMac {
    key: aws_lc_rs::hmac::Key,
}

impl RowMac {
    /// The master-key derivation label of the row key.
    pub const LABEL: &'static str = "keyforge/row-mac/v1";

    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret),
        }
    }

    pub(crate) fn sign(&self, input: &[u8]) -> Vec<u8> {
        aws_lc_rs::hmac::sign(&self.key, input).as_ref().to_vec()
    }

    /// Constant-time comparison.
    pub(crate) fn verify(&self, input: &[u8], tag: &[u8]) -> bool {
        aws_lc_rs::hmac::verify(&self.key, input, tag).is_ok()
    }
}

impl std::fmt::Debug for RowMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowMac(..)")
    }
}

/// A table whose rows carry a MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealedTable {
    Provider,
    /// A provider key version (`id` is `<provider id>/v<version>`).
    Credential,
    VirtualKey,
    Budget,
    AlertWebhook,
    /// An earlier secret of a rotated key, in its grace window (`id` is the
    /// key's id).
    KeyGrace,
    /// A named admin (`id` is the admin's name).
    Admin,
}

impl SealedTable {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::Credential => "provider key version",
            Self::VirtualKey => "virtual key",
            Self::Budget => "budget",
            Self::AlertWebhook => "alert webhook",
            Self::KeyGrace => "earlier secret of a rotated key",
            Self::Admin => "admin",
        }
    }
}

/// A row whose MAC is missing or does not match its contents: edited
/// outside KeyForge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowFailure {
    pub table: SealedTable,
    /// The row's id (never a secret).
    pub id: String,
}

use async_trait::async_trait;
use keyforge_types::{
    AdminName, AlertId, BudgetId, BudgetScope, EnvName, KeyHash, KeyId, ProviderId, ProviderName,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("the store holds a row it cannot read ({0}); was it written by a newer KeyForge?")]
    Corrupt(String),
    #[error(
        "the database was written by a newer KeyForge (schema version {found}, this build knows up to {known}); upgrade KeyForge"
    )]
    TooNew { found: i64, known: i64 },
    /// The audit batch does not continue the stored chain: another
    /// instance appended up to `head` since this writer read it. Nothing
    /// was written; chain the batch again after `head`.
    #[error(
        "the audit log moved on to entry {head} (another instance appended); the batch must be chained again"
    )]
    ChainMoved { head: u64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot prepare the database file: {0}")]
    Io(#[from] std::io::Error),
    /// A [`ChangeListener`]'s connection was lost: notices sent meanwhile
    /// are missed. Listen again, then reload.
    #[error("the change listener lost its connection to the database")]
    ListenerLost,
}

/// Notices of changes other gateways made to a shared store
/// ([`Store::listen_changes`]).
#[async_trait]
pub trait ChangeListener: Send + std::fmt::Debug {
    /// Waits for the next notice: the store's change sequence number
    /// ([`Store::change_seq`]) a committed change reached (`i64::MAX` for
    /// a notice whose number cannot be read: reload to be sure). An error
    /// (above all [`StoreError::ListenerLost`]) ends this listener:
    /// changes may have been missed since; listen again and reload.
    async fn next(&mut self) -> Result<i64, StoreError>;
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A named server value (for example the sealed key-hashing secret).
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Whether the store answers and can take a write now (`/readyz`):
    /// takes the write lock and gives it back without writing.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Sets a named value unless one exists; returns the value now stored, so
    /// two instances racing at first start agree on one.
    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Installs the key rows are sealed under, before any write. On the
    /// first start after the upgrade to schema 8, seals the rows written
    /// before it, once; returns how many rows that sealed.
    async fn install_row_mac(&self, mac: RowMac) -> Result<u64, StoreError>;
    /// Every sealed row whose MAC is missing or wrong (needs the row key).
    async fn integrity_failures(&self) -> Result<Vec<RowFailure>, StoreError>;

    /// Adds a provider and its first credential version. The name is unique
    /// within its environment.
    async fn insert_provider(&self, provider: &NewProvider) -> Result<(), StoreError>;
    /// Changes a provider's kind and base URL (`None`: the kind's public
    /// API); `false` if there is no such provider. The row is re-sealed
    /// only if its MAC held before, so an edit made outside KeyForge is
    /// never laundered by an admin change.
    async fn update_provider(
        &self,
        id: &ProviderId,
        kind: &str,
        base_url: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Deletes a provider and every version of its key, in one
    /// transaction; `false` if there is no such provider. Its ledger rows
    /// stay (they name the provider, they do not point at its row).
    async fn delete_provider(&self, id: &ProviderId) -> Result<bool, StoreError>;
    /// Every provider with its current, pending and previous credentials.
    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;
    /// Adds a version of a provider's key. Versions are unique per provider.
    async fn insert_credential(
        &self,
        provider_id: &ProviderId,
        credential: &CredentialRecord,
        stage: CredentialStage,
    ) -> Result<(), StoreError>;
    /// Every version of a provider's key, newest first, without secrets.
    async fn list_credentials(
        &self,
        provider_id: &ProviderId,
    ) -> Result<Vec<CredentialInfo>, StoreError>;
    /// Moves versions between stages and sets the pending version's share of
    /// requests, in one transaction.
    async fn set_credential_stages(
        &self,
        provider_id: &ProviderId,
        stages: &[(u32, CredentialStage)],
        rollout_percent: u8,
    ) -> Result<(), StoreError>;
    /// Outcomes per provider and key version since a time (from the ledger).
    async fn upstream_health(&self, since_ms: i64) -> Result<Vec<UpstreamHealth>, StoreError>;
    /// Requests per provider key version since a time (from the ledger).
    async fn version_usage(
        &self,
        env: &EnvName,
        provider: &ProviderName,
        since_ms: i64,
    ) -> Result<Vec<VersionUsage>, StoreError>;

    /// Adds a key and its own budgets, in one transaction.
    async fn insert_virtual_key(
        &self,
        key: &VirtualKeyRecord,
        budgets: &[BudgetRecord],
    ) -> Result<(), StoreError>;
    /// Every key, or with `retired_before`, every key except those revoked
    /// or expired before that instant (archived: short-lived keys pile up).
    async fn list_virtual_keys(
        &self,
        retired_before: Option<OffsetDateTime>,
    ) -> Result<Vec<VirtualKeyRecord>, StoreError>;
    async fn get_virtual_key(&self, id: &KeyId) -> Result<Option<VirtualKeyRecord>, StoreError>;
    async fn revoke_virtual_key(
        &self,
        id: &KeyId,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError>;
    /// Gives a key a new secret; the current one stays valid until the
    /// rotation's grace ends. The key id is unchanged.
    async fn rotate_virtual_key(
        &self,
        rotation: &KeyRotation,
    ) -> Result<KeyRotationOutcome, StoreError>;
    /// Earlier secrets of rotated keys still in their grace window.
    async fn list_grace_secrets(&self, now: OffsetDateTime)
    -> Result<Vec<GraceSecret>, StoreError>;
    /// Revokes every unrevoked key of an environment and/or project (at
    /// least one is given); returns the ids revoked.
    async fn revoke_virtual_keys_where(
        &self,
        env: Option<&EnvName>,
        project: Option<&keyforge_types::ProjectName>,
        at: OffsetDateTime,
    ) -> Result<Vec<KeyId>, StoreError>;
    /// Changes a key's editable fields and its own budgets in one
    /// transaction; `false` if there is no such key. The key (whose MAC
    /// covers the set of its budgets) is re-sealed only if its MAC held
    /// before.
    async fn update_virtual_key(&self, update: &KeyUpdate) -> Result<bool, StoreError>;
    /// Suspends (`Some`) or resumes (`None`) a key; `false` if there is no
    /// such key.
    async fn set_key_suspension(
        &self,
        id: &KeyId,
        suspension: Option<&Suspension>,
    ) -> Result<bool, StoreError>;

    /// Sets a budget; a budget for the same scope and period is replaced
    /// (keeping its id). Returns the budget as stored.
    async fn upsert_budget(&self, budget: &BudgetRecord) -> Result<BudgetRecord, StoreError>;
    async fn list_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError>;
    /// `false` if there is no such budget.
    async fn delete_budget(&self, id: &BudgetId) -> Result<bool, StoreError>;
    /// The ledger's spend in a budget's scope since a time (nano-USD).
    async fn spend_since(&self, scope: &BudgetScope, since_ms: i64) -> Result<i64, StoreError>;
    /// Every request since a time, oldest first, to rebuild rate limiters.
    async fn recent_requests(&self, since_ms: i64) -> Result<Vec<RecentRequest>, StoreError>;

    async fn insert_alert_webhook(&self, webhook: &AlertWebhookRecord) -> Result<(), StoreError>;
    async fn list_alert_webhooks(&self) -> Result<Vec<AlertWebhookRecord>, StoreError>;
    async fn delete_alert_webhook(&self, id: &AlertId) -> Result<bool, StoreError>;
    /// Records an alert with a pending delivery to each webhook. Returns its
    /// id, or `None` when an alert with the same `dedup` was raised before.
    async fn insert_alert(
        &self,
        event: &AlertEvent,
        webhooks: &[AlertId],
    ) -> Result<Option<i64>, StoreError>;
    async fn update_alert_delivery(
        &self,
        alert_id: i64,
        delivery: &AlertDelivery,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The latest alerts, newest first.
    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError>;

    /// Appends a batch of ledger records in one transaction.
    async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError>;
    /// Appends ledger records, audit entries and the checkpoint after them
    /// in one transaction: all or nothing.
    async fn commit_batch(
        &self,
        ledger: &[LedgerRecord],
        audit: &[AuditRow],
        checkpoint: Option<&AuditCheckpoint>,
    ) -> Result<(), StoreError>;
    /// Ledger rows with an id above `after_id`, at most `limit`, by id.
    async fn ledger_rows(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredLedgerRow>, StoreError>;
    /// Every usage rollup, summed per hour and per key, environment,
    /// provider and provider key version (see [`RollupTotal`]).
    async fn rollup_totals(&self) -> Result<Vec<RollupTotal>, StoreError>;
    /// The last audit entry's sequence number and hash.
    async fn audit_head(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Audit entries after `after_seq` (at most `limit`), with the
    /// checkpoints among them, in order: (sequence, line).
    async fn audit_lines(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// The sequence number of the first audit entry at or after a time.
    async fn audit_seq_since(&self, since_ms: i64) -> Result<Option<u64>, StoreError>;
    /// Sums the ledger since a time, optionally for one key, project or
    /// environment, grouped by key, model, day, environment or project.
    /// Read from the rollups (plus the raw rows of a window's partial first
    /// minute), so it stays exact after raw rows are pruned; a window
    /// reaching into the hourly rollups (older than the retention period)
    /// leaves out the hour `since_ms` falls in: callers ask
    /// [`Store::usage_window_start`] first and query from there.
    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;
    /// Where a usage window asked to start at `since_ms` (Unix ms) really
    /// starts: `since_ms` while its minute is still kept per minute, else
    /// the start of its hour (its minutes were merged into the hour past
    /// retention, so the window takes the whole hour and says so).
    async fn usage_window_start(&self, since_ms: i64) -> Result<i64, StoreError>;

    /// The arrival time (Unix ms) of the oldest raw ledger row still
    /// stored; `None` when there is none.
    async fn ledger_oldest_ms(&self) -> Result<Option<i64>, StoreError>;
    /// Deletes at most `limit` raw ledger rows that arrived before
    /// `before_ms` (Unix ms), oldest first; returns how many it deleted.
    /// Rollups are kept: usage, budgets and rotation figures do not change.
    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// Merges minute rollups older than `before_ms` (rounded down to the
    /// hour) into one row per hour and group, a bounded stretch (a day) per
    /// call, in one transaction; returns whether older minutes remain.
    async fn coarsen_rollups(&self, before_ms: i64) -> Result<bool, StoreError>;

    /// Adds a named admin (schema 10, table `admins`), sealing its row.
    /// A name already taken (revoked admins included) or a token hash
    /// already stored is a [`StoreError::Conflict`].
    async fn insert_admin(&self, admin: &AdminRecord) -> Result<(), StoreError>;
    /// Every admin, revoked ones included, by name.
    async fn list_admins(&self) -> Result<Vec<AdminRecord>, StoreError>;
    /// The admin whose token hashes to `token_hash` (revoked or not);
    /// `None` if none does. Not on the request path (the gateway serves
    /// admins from its snapshot); for tools and the conformance suite.
    async fn get_admin_by_token_hash(
        &self,
        token_hash: &KeyHash,
    ) -> Result<Option<AdminRecord>, StoreError>;
    /// Revokes an admin by name at `at`, in one transaction that refuses
    /// to revoke the last unrevoked owner. Re-seals the row only if its MAC
    /// held before.
    async fn revoke_admin(
        &self,
        name: &AdminName,
        at: OffsetDateTime,
    ) -> Result<AdminRevokeOutcome, StoreError>;
    /// Gives an unrevoked admin a new token hash and sets `rotated_at`;
    /// `false` if there is no such unrevoked admin. The old token stops
    /// working at once. Re-seals the row only if its MAC held before.
    async fn replace_admin_token(
        &self,
        name: &AdminName,
        token_hash: &KeyHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// The store's change sequence number: it grows by one with every
    /// committed transaction that changed what a gateway's snapshot is
    /// built from (providers, key versions, keys, budgets, webhooks,
    /// admins), in commit order, so a snapshot loaded after reading `n`
    /// holds every change up to `n`. `None`: the store is not shared
    /// (SQLite), there is nothing to watch.
    async fn change_seq(&self) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }

    /// Starts listening for other gateways' changes on a connection of
    /// its own; `None` where the store is not shared (SQLite).
    async fn listen_changes(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        Ok(None)
    }

    /// Writes a consistent copy of the whole store to `dest` (mode 0600,
    /// moved into place in one step; an existing file is replaced only
    /// with `overwrite`) while the store keeps serving.
    async fn backup_to(&self, dest: &std::path::Path, overwrite: bool) -> Result<(), StoreError> {
        let _ = (dest, overwrite);
        Err(StoreError::Conflict(
            "this store cannot write backups".to_owned(),
        ))
    }
}
