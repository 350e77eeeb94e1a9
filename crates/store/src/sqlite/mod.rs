//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use keyforge_types::{
    AdminId, AdminName, AdminRole, AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope,
    EnvName, KeyHash, KeyId, KeyLimits, NanoUsd, Period, ProjectName, ProviderId, ProviderName,
    Scope,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::model::{
    AdminRecord, AdminRevokeOutcome, AlertDelivery, AlertEvent, AlertWebhookRecord,
    AuditCheckpoint, AuditRow, BudgetRecord, CredentialInfo, CredentialRecord, CredentialStage,
    GraceSecret, KeyRotation, KeyRotationOutcome, KeyUpdate, LedgerRecord, NewProvider,
    ProviderRecord, RecentRequest, RevokeOutcome, StoredAlert, StoredLedgerRow, Suspension,
    UpstreamHealth, UsageGroup, UsageQuery, UsageRow, VersionUsage, VirtualKeyRecord,
};
use crate::{RowFailure, RowMac, Store, StoreError};

mod backup;
pub(crate) mod rollup;
mod row_mac;

pub use backup::{FileCheck, check_file, checkpoint_file, sync_dir};

const SCHEMA_VERSION: i64 = 10;
/// Audit rows per INSERT statement (a batch has a few: its `key.use`
/// entries and admin entries).
const AUDIT_ROWS_PER_STATEMENT: usize = 100;
const SCHEMA_V1: &str = include_str!("schema.sql");
const SCHEMA_V2: &str = include_str!("schema_v2.sql");
const SCHEMA_V3: &str = include_str!("schema_v3.sql");
const SCHEMA_V4: &str = include_str!("schema_v4.sql");
const SCHEMA_V5: &str = include_str!("schema_v5.sql");
const SCHEMA_V6: &str = include_str!("schema_v6.sql");
const SCHEMA_V7: &str = include_str!("schema_v7.sql");
const SCHEMA_V8: &str = include_str!("schema_v8.sql");
const SCHEMA_V9: &str = include_str!("schema_v9.sql");
const SCHEMA_V10: &str = include_str!("schema_v10.sql");
/// How far minute rollups have been merged into hours (Unix ms, 8 bytes
/// big-endian); absent until the first merge.
const ROLLUP_HOURLY_BEFORE: &str = "rollup_hourly_before";
/// Hours of minute rollups merged per [`Store::coarsen_rollups`] call.
const COARSEN_HOURS_PER_CALL: i64 = 24;
/// Set by the upgrade to schema 8: rows written before it still need MACs.
const ROW_MAC_BACKFILL: &str = "row_mac_backfill";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The row key, installed once by the gateway at start (the store never
    /// sees the master key).
    row_mac: Arc<OnceLock<RowMac>>,
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600) the database at `path` and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            // Create the file ourselves so it is 0600 from the start; SQLite
            // gives its -wal and -shm files the same mode.
            match create_private_file(path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(error.into()),
            }
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            row_mac: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for copying a whole store ([`crate::copy_sqlite_to_postgres`]).
    pub(crate) fn pool_ref(&self) -> &SqlitePool {
        &self.pool
    }

    /// The pool, for tests that edit rows behind the store's back.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// An in-memory database, for tests.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        // One connection: every connection to `:memory:` is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            row_mac: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version < 1 {
            sqlx::raw_sql(SCHEMA_V1).execute(&mut *tx).await?;
        }
        if version < 2 {
            sqlx::raw_sql(SCHEMA_V2).execute(&mut *tx).await?;
        }
        if version < 3 {
            sqlx::raw_sql(SCHEMA_V3).execute(&mut *tx).await?;
        }
        if version < 4 {
            sqlx::raw_sql(SCHEMA_V4).execute(&mut *tx).await?;
        }
        if version < 5 {
            sqlx::raw_sql(SCHEMA_V5).execute(&mut *tx).await?;
        }
        if version < 6 {
            sqlx::raw_sql(SCHEMA_V6).execute(&mut *tx).await?;
        }
        if version < 7 {
            sqlx::raw_sql(SCHEMA_V7).execute(&mut *tx).await?;
        }
        if version < 8 {
            sqlx::raw_sql(SCHEMA_V8).execute(&mut *tx).await?;
        }
        if version < 9 {
            sqlx::raw_sql(SCHEMA_V9).execute(&mut *tx).await?;
        }
        if version < 10 {
            sqlx::raw_sql(SCHEMA_V10).execute(&mut *tx).await?;
        }
        if version < SCHEMA_VERSION {
            sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl SqliteStore {
    fn mac(&self) -> Option<&RowMac> {
        self.row_mac.get()
    }

    /// Of these rows, those whose MAC holds now. A writer that changes rows
    /// in place asks this first and re-seals ([`Self::reseal`]) only these,
    /// so an admin action on a tampered row never launders it (a revocation
    /// still applies: the row stays refused, and revoked too).
    async fn intact_rows(
        &self,
        connection: &mut SqliteConnection,
        spec: &row_mac::Spec,
        rowids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        let mut intact = Vec::with_capacity(rowids.len());
        for rowid in rowids {
            if row_mac::is_intact(&mut *connection, self.mac(), spec, *rowid).await? {
                intact.push(*rowid);
            }
        }
        Ok(intact)
    }

    async fn reseal(
        &self,
        connection: &mut SqliteConnection,
        spec: &row_mac::Spec,
        rowids: &[i64],
    ) -> Result<(), StoreError> {
        for rowid in rowids {
            row_mac::seal(&mut *connection, self.mac(), spec, *rowid).await?;
        }
        Ok(())
    }

    /// The key's rowid if its MAC holds now (empty otherwise), to re-seal it
    /// after a change.
    async fn key_intact(
        &self,
        connection: &mut SqliteConnection,
        id: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let rowids: Vec<i64> = row_mac::rowid(&mut *connection, &row_mac::KEYS, id)
            .await?
            .into_iter()
            .collect();
        self.intact_rows(connection, &row_mac::KEYS, &rowids).await
    }
}

/// Creates an empty file with mode 0600.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(|_| ())
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn to_unix(time: OffsetDateTime) -> i64 {
    time.unix_timestamp()
}

pub(crate) fn from_unix(seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {seconds}")))
}

pub(crate) fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |error| StoreError::Corrupt(format!("{what}: {error}"))
}

fn credential_from_row(row: &SqliteRow) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        version: u32::try_from(row.try_get::<i64, _>("version")?)
            .map_err(corrupt("credential version"))?,
        sealed: row.try_get("sealed")?,
        created_at: from_unix(row.try_get("created_at")?)?,
    })
}

fn provider_from_row(
    row: &SqliteRow,
    credentials: &mut std::collections::HashMap<String, Vec<(CredentialStage, CredentialRecord)>>,
) -> Result<ProviderRecord, StoreError> {
    let id: String = row.try_get("id")?;
    let mut current = None;
    let mut pending = None;
    let mut previous = None;
    for (stage, credential) in credentials.remove(&id).unwrap_or_default() {
        match stage {
            CredentialStage::Current => current = Some(credential),
            CredentialStage::Pending => pending = Some(credential),
            CredentialStage::Previous => previous = Some(credential),
            CredentialStage::Retired => {}
        }
    }
    let current =
        current.ok_or_else(|| StoreError::Corrupt(format!("provider {id} has no current key")))?;
    Ok(ProviderRecord {
        id: ProviderId::parse(&id).map_err(corrupt("provider id"))?,
        name: ProviderName::parse(row.try_get("name")?).map_err(corrupt("provider name"))?,
        env: EnvName::parse(row.try_get("env")?).map_err(corrupt("provider environment"))?,
        kind: row.try_get("kind")?,
        base_url: row.try_get("base_url")?,
        created_at: from_unix(row.try_get("created_at")?)?,
        current,
        pending,
        previous,
        rollout_percent: u8::try_from(row.try_get::<i64, _>("rollout_percent")?)
            .map_err(corrupt("rollout percent"))?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<VirtualKeyRecord, StoreError> {
    let hash: Vec<u8> = row.try_get("hash")?;
    let scope: String = row.try_get("scope")?;
    Ok(VirtualKeyRecord {
        id: KeyId::parse(row.try_get("id")?).map_err(corrupt("key id"))?,
        name: row.try_get("name")?,
        env: EnvName::parse(row.try_get("env")?).map_err(corrupt("key environment"))?,
        hash: KeyHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("key hash length".into()))?,
        prefix: row.try_get("prefix")?,
        scope: serde_json::from_str::<Scope>(&scope).map_err(corrupt("key scope"))?,
        project: row
            .try_get::<Option<String>, _>("project")?
            .map(|name| ProjectName::parse(&name))
            .transpose()
            .map_err(corrupt("key project"))?,
        limits: KeyLimits {
            rpm: optional_u32(row, "rpm")?,
            tpm: row
                .try_get::<Option<i64>, _>("tpm")?
                .map(u64::try_from)
                .transpose()
                .map_err(corrupt("key tpm"))?,
            max_parallel: optional_u32(row, "max_parallel")?,
        },
        on_anomaly: AnomalyAction::parse(&row.try_get::<String, _>("on_anomaly")?)
            .ok_or_else(|| StoreError::Corrupt("key on_anomaly".into()))?,
        suspended: match row.try_get::<Option<i64>, _>("suspended_at")? {
            None => None,
            Some(at) => Some(Suspension {
                at: from_unix(at)?,
                reason: row
                    .try_get::<Option<String>, _>("suspended_reason")?
                    .unwrap_or_default(),
            }),
        },
        created_at: from_unix(row.try_get("created_at")?)?,
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_unix)
            .transpose()?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_unix)
            .transpose()?,
        parent: row
            .try_get::<Option<String>, _>("parent_id")?
            .map(|id| KeyId::parse(&id))
            .transpose()
            .map_err(corrupt("key parent id"))?,
        can_mint: row.try_get::<i64, _>("can_mint")? != 0,
        origin: row.try_get("origin")?,
    })
}

fn optional_u32(row: &SqliteRow, column: &'static str) -> Result<Option<u32>, StoreError> {
    row.try_get::<Option<i64>, _>(column)?
        .map(u32::try_from)
        .transpose()
        .map_err(corrupt(column))
}

pub(crate) const KEY_COLUMNS: &str = "id, name, env, hash, prefix, scope, created_at, expires_at, revoked_at, \
     project, rpm, tpm, max_parallel, on_anomaly, suspended_at, suspended_reason, parent_id, can_mint, \
     origin";

const ADMIN_COLUMNS: &str =
    "id, name, role, token_hash, created_at, created_by, rotated_at, revoked_at";

fn admin_from_row(row: &SqliteRow) -> Result<AdminRecord, StoreError> {
    let hash: Vec<u8> = row.try_get("token_hash")?;
    Ok(AdminRecord {
        id: AdminId::parse(row.try_get("id")?).map_err(corrupt("admin id"))?,
        name: AdminName::parse(row.try_get("name")?).map_err(corrupt("admin name"))?,
        role: AdminRole::parse(row.try_get("role")?).map_err(corrupt("admin role"))?,
        token_hash: KeyHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("admin token hash length".into()))?,
        created_at: from_unix(row.try_get("created_at")?)?,
        created_by: row.try_get("created_by")?,
        rotated_at: row
            .try_get::<Option<i64>, _>("rotated_at")?
            .map(from_unix)
            .transpose()?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_unix)
            .transpose()?,
    })
}

fn budget_from_row(row: &SqliteRow) -> Result<BudgetRecord, StoreError> {
    let kind: String = row.try_get("scope_kind")?;
    let scope: String = row.try_get("scope")?;
    Ok(BudgetRecord {
        id: BudgetId::parse(row.try_get("id")?).map_err(corrupt("budget id"))?,
        scope: BudgetScope::from_parts(&kind, &scope)
            .ok_or_else(|| StoreError::Corrupt(format!("budget scope {kind}")))?,
        limit: BudgetLimit {
            amount: NanoUsd(row.try_get("limit_nano_usd")?),
            period: Period::parse(row.try_get("period")?).map_err(corrupt("budget period"))?,
        },
        created_at: from_unix_ms(row.try_get("created_at_ms")?)?,
    })
}

pub(crate) fn to_unix_ms(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_unix_ms(ms: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {ms} ms")))
}

pub(crate) fn thresholds_text(thresholds: &[u8]) -> String {
    thresholds
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets a budget and seals its row: the admin asserts every sealed field
/// of it (scope and period are the row's identity, the amount is new).
async fn upsert_budget_in(
    connection: &mut SqliteConnection,
    mac: Option<&RowMac>,
    budget: &BudgetRecord,
) -> Result<BudgetRecord, StoreError> {
    let row = sqlx::query(
        "INSERT INTO budgets (id, scope_kind, scope, period, limit_nano_usd, created_at_ms) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (scope_kind, scope, period) DO UPDATE SET limit_nano_usd = excluded.limit_nano_usd \
         RETURNING rowid, id, scope_kind, scope, period, limit_nano_usd, created_at_ms",
    )
    .bind(budget.id.as_str())
    .bind(budget.scope.kind())
    .bind(budget.scope.name())
    .bind(budget.limit.period.as_str())
    .bind(budget.limit.amount.0)
    .bind(to_unix_ms(budget.created_at))
    .fetch_one(&mut *connection)
    .await?;
    row_mac::seal(connection, mac, &row_mac::BUDGETS, row.try_get("rowid")?).await?;
    budget_from_row(&row)
}

async fn insert_credential(
    connection: &mut SqliteConnection,
    mac: Option<&RowMac>,
    provider_id: &ProviderId,
    credential: &CredentialRecord,
    stage: &str,
) -> Result<(), StoreError> {
    let inserted = sqlx::query("INSERT INTO provider_credentials (provider_id, version, stage, sealed, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(provider_id.as_str())
        .bind(i64::from(credential.version))
        .bind(stage)
        .bind(&credential.sealed)
        .bind(to_unix(credential.created_at))
        .execute(&mut *connection)
        .await?;
    row_mac::seal(
        connection,
        mac,
        &row_mac::CREDENTIALS,
        inserted.last_insert_rowid(),
    )
    .await
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[async_trait]
impl Store for SqliteStore {
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await?;
        sqlx::query("ROLLBACK").execute(&mut *connection).await?;
        Ok(())
    }

    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn install_row_mac(&self, mac: RowMac) -> Result<u64, StoreError> {
        // A second install (the same store shared by two gateways in one
        // process) keeps the first key.
        let mac = self.row_mac.get_or_init(|| mac);
        let mut tx = self.pool.begin().await?;
        let pending = sqlx::query("DELETE FROM meta WHERE name = ?")
            .bind(ROW_MAC_BACKFILL)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        let sealed = if pending {
            row_mac::seal_all(&mut tx, mac).await?
        } else {
            0
        };
        tx.commit().await?;
        Ok(sealed)
    }

    async fn integrity_failures(&self) -> Result<Vec<RowFailure>, StoreError> {
        let mac = self.mac().ok_or_else(|| {
            StoreError::Conflict("the row key is not installed (install_row_mac)".into())
        })?;
        let mut tx = self.pool.begin().await?;
        let failed = row_mac::failures(&mut tx, mac).await?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn insert_provider(&self, provider: &NewProvider) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO providers (id, name, env, kind, base_url, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(provider.id.as_str())
            .bind(provider.name.as_str())
            .bind(provider.env.as_str())
            .bind(&provider.kind)
            .bind(&provider.base_url)
            .bind(to_unix(provider.created_at))
            .execute(&mut *tx)
            .await;
        let inserted = match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "a provider named `{}` already exists in environment `{}`",
                    provider.name, provider.env
                )));
            }
            other => other?,
        };
        row_mac::seal(
            &mut tx,
            self.mac(),
            &row_mac::PROVIDERS,
            inserted.last_insert_rowid(),
        )
        .await?;
        insert_credential(
            &mut tx,
            self.mac(),
            &provider.id,
            &provider.credential,
            "current",
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_provider(
        &self,
        id: &ProviderId,
        kind: &str,
        base_url: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rowids: Vec<i64> = row_mac::rowid(&mut tx, &row_mac::PROVIDERS, id.as_str())
            .await?
            .into_iter()
            .collect();
        let intact = self
            .intact_rows(&mut tx, &row_mac::PROVIDERS, &rowids)
            .await?;
        let done = sqlx::query("UPDATE providers SET kind = ?, base_url = ? WHERE id = ?")
            .bind(kind)
            .bind(base_url)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::PROVIDERS, &intact).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_provider(&self, id: &ProviderId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM provider_credentials WHERE provider_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM providers WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut credentials: std::collections::HashMap<String, Vec<_>> =
            std::collections::HashMap::new();
        for row in sqlx::query(
            "SELECT provider_id, version, stage, sealed, created_at FROM provider_credentials WHERE stage != 'retired'",
        )
        .fetch_all(&mut *tx)
        .await?
        {
            let stage: String = row.try_get("stage")?;
            let stage = CredentialStage::parse(&stage)
                .ok_or_else(|| StoreError::Corrupt(format!("credential stage {stage}")))?;
            credentials
                .entry(row.try_get("provider_id")?)
                .or_default()
                .push((stage, credential_from_row(&row)?));
        }
        let rows = sqlx::query(
            "SELECT id, name, env, kind, base_url, created_at, rollout_percent FROM providers ORDER BY env, name",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| provider_from_row(row, &mut credentials))
            .collect()
    }

    async fn insert_credential(
        &self,
        provider_id: &ProviderId,
        credential: &CredentialRecord,
        stage: CredentialStage,
    ) -> Result<(), StoreError> {
        let mut connection = self.pool.acquire().await?;
        match insert_credential(
            &mut connection,
            self.mac(),
            provider_id,
            credential,
            stage.as_str(),
        )
        .await
        {
            Err(StoreError::Database(error)) if is_unique_violation(&error) => {
                Err(StoreError::Conflict(format!(
                    "provider {provider_id} already has a key version {}",
                    credential.version
                )))
            }
            other => other,
        }
    }

    async fn list_credentials(
        &self,
        provider_id: &ProviderId,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, stage, created_at FROM provider_credentials WHERE provider_id = ? ORDER BY version DESC",
        )
        .bind(provider_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let stage: String = row.try_get("stage")?;
                Ok(CredentialInfo {
                    version: u32::try_from(row.try_get::<i64, _>("version")?)
                        .map_err(corrupt("credential version"))?,
                    stage: CredentialStage::parse(&stage)
                        .ok_or_else(|| StoreError::Corrupt(format!("credential stage {stage}")))?,
                    created_at: from_unix(row.try_get("created_at")?)?,
                })
            })
            .collect()
    }

    async fn set_credential_stages(
        &self,
        provider_id: &ProviderId,
        stages: &[(u32, CredentialStage)],
        rollout_percent: u8,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (version, stage) in stages {
            sqlx::query(
                "UPDATE provider_credentials SET stage = ? WHERE provider_id = ? AND version = ?",
            )
            .bind(stage.as_str())
            .bind(provider_id.as_str())
            .bind(i64::from(*version))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE providers SET rollout_percent = ? WHERE id = ?")
            .bind(i64::from(rollout_percent))
            .bind(provider_id.as_str())
            .execute(&mut *tx)
            .await?;
        // Exactly one current version, at most one pending and one previous.
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stage, COUNT(*) FROM provider_credentials WHERE provider_id = ? AND stage != 'retired' GROUP BY stage",
        )
        .bind(provider_id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let count = |stage: &str| {
            counts
                .iter()
                .find(|(s, _)| s == stage)
                .map_or(0, |(_, n)| *n)
        };
        if count("current") != 1 || count("pending") > 1 || count("previous") > 1 {
            return Err(StoreError::Conflict(format!(
                "provider {provider_id}: the stage change would leave {} current, {} pending and {} previous versions",
                count("current"),
                count("pending"),
                count("previous")
            )));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn upstream_health(&self, since_ms: i64) -> Result<Vec<UpstreamHealth>, StoreError> {
        // `MAX(last_ms), last_status`: the status of the latest request
        // (SQLite's bare-column rule for MAX).
        let rows = sqlx::query(&format!(
            "WITH {} SELECT env, provider, provider_key_version AS version, SUM(ok) AS ok, SUM(rejected) AS rejected, \
             SUM(rate_limited) AS rate_limited, SUM(failed) AS failed, SUM(client_errors) AS client_errors, \
             MAX(last_ms) AS last_ms, last_status \
             FROM src GROUP BY env, provider, provider_key_version ORDER BY env, provider, version DESC",
            rollup::SOURCE
        ))
        .bind(since_ms)
        .bind(rollup::minute_ceil(since_ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UpstreamHealth {
                    env: row.try_get("env")?,
                    provider: row.try_get("provider")?,
                    version: u32::try_from(row.try_get::<i64, _>("version")?)
                        .map_err(corrupt("ledger key version"))?,
                    ok: to_u64(row.try_get("ok")?),
                    rejected: to_u64(row.try_get("rejected")?),
                    rate_limited: to_u64(row.try_get("rate_limited")?),
                    failed: to_u64(row.try_get("failed")?),
                    client_errors: to_u64(row.try_get("client_errors")?),
                    last_status: u16::try_from(row.try_get::<i64, _>("last_status")?)
                        .map_err(corrupt("ledger status"))?,
                    last_ms: row.try_get("last_ms")?,
                })
            })
            .collect()
    }

    async fn version_usage(
        &self,
        env: &EnvName,
        provider: &ProviderName,
        since_ms: i64,
    ) -> Result<Vec<VersionUsage>, StoreError> {
        let rows = sqlx::query(&format!(
            "WITH {} SELECT provider_key_version, SUM(requests) AS requests, MAX(last_ms) AS last_ms FROM src \
             WHERE env = ?3 AND provider = ?4 GROUP BY provider_key_version ORDER BY provider_key_version DESC",
            rollup::SOURCE
        ))
        .bind(since_ms)
        .bind(rollup::minute_ceil(since_ms))
        .bind(env.as_str())
        .bind(provider.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(VersionUsage {
                    version: u32::try_from(row.try_get::<i64, _>("provider_key_version")?)
                        .map_err(corrupt("ledger key version"))?,
                    requests: to_u64(row.try_get("requests")?),
                    last_ms: row.try_get("last_ms")?,
                })
            })
            .collect()
    }

    async fn insert_virtual_key(
        &self,
        key: &VirtualKeyRecord,
        budgets: &[BudgetRecord],
    ) -> Result<(), StoreError> {
        let scope = serde_json::to_string(&key.scope).map_err(corrupt("key scope"))?;
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO virtual_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(key.id.as_str())
        .bind(&key.name)
        .bind(key.env.as_str())
        .bind(key.hash.as_bytes().as_slice())
        .bind(&key.prefix)
        .bind(scope)
        .bind(to_unix(key.created_at))
        .bind(key.expires_at.map(to_unix))
        .bind(key.revoked_at.map(to_unix))
        .bind(key.project.as_ref().map(ProjectName::as_str))
        .bind(key.limits.rpm.map(i64::from))
        .bind(key.limits.tpm.map(to_i64))
        .bind(key.limits.max_parallel.map(i64::from))
        .bind(key.on_anomaly.as_str())
        .bind(key.suspended.as_ref().map(|s| to_unix(s.at)))
        .bind(key.suspended.as_ref().map(|s| s.reason.as_str()))
        .bind(key.parent.as_ref().map(KeyId::as_str))
        .bind(i64::from(key.can_mint))
        .bind(&key.origin)
        .execute(&mut *tx)
        .await?;
        for budget in budgets {
            upsert_budget_in(&mut tx, self.mac(), budget).await?;
        }
        // Sealed last: the key's MAC covers its own budgets.
        let rowid = inserted.last_insert_rowid();
        row_mac::seal(&mut tx, self.mac(), &row_mac::KEYS, rowid).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_virtual_keys(
        &self,
        retired_before: Option<OffsetDateTime>,
    ) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        let cutoff = retired_before.map(to_unix);
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys \
             WHERE ?1 IS NULL OR (COALESCE(revoked_at, ?1) >= ?1 AND COALESCE(expires_at, ?1) >= ?1) \
             ORDER BY created_at, id"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_virtual_key(&self, id: &KeyId) -> Result<Option<VirtualKeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE id = ?"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_virtual_key(
        &self,
        id: &KeyId,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revoked_at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT revoked_at FROM virtual_keys WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let already = match revoked_at {
            None => {
                tx.commit().await?;
                return Ok(RevokeOutcome::NotFound);
            }
            Some(at) => at.is_some(),
        };
        // The key and every descendant still in force. Revocation applies
        // to every one of them, intact or not (revoked is the safe
        // direction); only the intact ones are re-sealed.
        const TREE: &str = "WITH RECURSIVE tree (id) AS ( \
                 SELECT ? UNION SELECT k.id FROM virtual_keys k JOIN tree ON k.parent_id = tree.id) ";
        let rowids: Vec<i64> = sqlx::query_scalar(&format!(
            "{TREE} SELECT rowid FROM virtual_keys WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree)"
        ))
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let intact = self.intact_rows(&mut tx, &row_mac::KEYS, &rowids).await?;
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "{TREE} UPDATE virtual_keys SET revoked_at = ? \
             WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree) RETURNING id"
        ))
        .bind(id.as_str())
        .bind(to_unix(at))
        .fetch_all(&mut *tx)
        .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        tx.commit().await?;
        let mut descendants = ids
            .iter()
            .filter(|revoked| revoked.as_str() != id.as_str())
            .map(|id| KeyId::parse(id).map_err(corrupt("key id")))
            .collect::<Result<Vec<_>, _>>()?;
        descendants.sort();
        Ok(if already {
            RevokeOutcome::AlreadyRevoked { descendants }
        } else {
            RevokeOutcome::Revoked { descendants }
        })
    }

    async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
        self.commit_batch(records, &[], None).await
    }

    async fn commit_batch(
        &self,
        ledger: &[LedgerRecord],
        audit: &[AuditRow],
        checkpoint: Option<&AuditCheckpoint>,
    ) -> Result<(), StoreError> {
        if ledger.is_empty() && audit.is_empty() {
            return Ok(());
        }
        // One transaction per batch (group commit), and many rows per
        // statement: each statement is a round trip to SQLite's worker
        // thread. The rollups are written in the same transaction, so they
        // never disagree with the raw rows.
        let mut tx = self.pool.begin().await?;
        rollup::insert_raw(&mut tx, ledger).await?;
        rollup::upsert(&mut tx, ledger).await?;
        for chunk in audit.chunks(AUDIT_ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO audit_log (seq, at_ms, kind, line, hash) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(to_i64(r.seq))
                    .push_bind(r.at_ms)
                    .push_bind(r.kind.as_str())
                    .push_bind(r.line.as_str())
                    .push_bind(r.hash.as_slice());
            });
            insert.build().execute(&mut *tx).await?;
        }
        if let Some(checkpoint) = checkpoint {
            sqlx::query("INSERT INTO audit_checkpoints (seq, line) VALUES (?, ?)")
                .bind(to_i64(checkpoint.seq))
                .bind(&checkpoint.line)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rollup_totals(&self) -> Result<Vec<crate::RollupTotal>, StoreError> {
        let rows = sqlx::query(
            "SELECT bucket_ms - (bucket_ms % 3600000) AS hour_ms, key_id, env, provider, provider_key_version, \
             SUM(requests) AS requests, SUM(cost_nano_usd) AS cost FROM ledger_rollup \
             GROUP BY hour_ms, key_id, env, provider, provider_key_version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(crate::RollupTotal {
                    hour_ms: row.try_get("hour_ms")?,
                    key_id: row.try_get("key_id")?,
                    env: row.try_get("env")?,
                    provider: row.try_get("provider")?,
                    provider_key_version: row.try_get("provider_key_version")?,
                    requests: row.try_get("requests")?,
                    cost_nano_usd: row.try_get("cost")?,
                })
            })
            .collect()
    }

    async fn ledger_rows(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredLedgerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, request_id, key_id, cost_nano_usd, input_tokens, cached_input_tokens, cache_write_tokens, \
             output_tokens, reasoning_tokens, status, outcome FROM ledger WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredLedgerRow {
                    id: row.try_get("id")?,
                    request_id: row.try_get("request_id")?,
                    key_id: row.try_get("key_id")?,
                    cost_nano_usd: row.try_get("cost_nano_usd")?,
                    input_tokens: row.try_get("input_tokens")?,
                    cached_input_tokens: row.try_get("cached_input_tokens")?,
                    cache_write_tokens: row.try_get("cache_write_tokens")?,
                    output_tokens: row.try_get("output_tokens")?,
                    reasoning_tokens: row.try_get("reasoning_tokens")?,
                    status: row.try_get("status")?,
                    outcome: row.try_get("outcome")?,
                })
            })
            .collect()
    }

    async fn audit_head(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(seq, hash)| (to_u64(seq), hash)))
    }

    async fn audit_lines(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let entries: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, line FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?")
                .bind(to_i64(after_seq))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
        let last = entries.last().map_or(0, |(seq, _)| *seq);
        let checkpoints: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, line FROM audit_checkpoints WHERE seq > ? AND seq <= ? ORDER BY seq",
        )
        .bind(to_i64(after_seq))
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // Each checkpoint goes right after the entry it covers.
        let mut out = Vec::with_capacity(entries.len() + checkpoints.len());
        let mut pending = checkpoints.into_iter().peekable();
        for (seq, line) in entries {
            out.push((to_u64(seq), line));
            while let Some((_, checkpoint)) = pending.next_if(|(at, _)| *at == seq) {
                out.push((to_u64(seq), checkpoint));
            }
        }
        Ok(out)
    }

    async fn audit_seq_since(&self, since_ms: i64) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at_ms >= ?")
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok(seq.map(to_u64))
    }

    async fn usage_window_start(&self, since_ms: i64) -> Result<i64, StoreError> {
        let merged: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(ROLLUP_HOURLY_BEFORE)
            .fetch_optional(&self.pool)
            .await?;
        let merged_before = match merged {
            Some(bytes) => i64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("meta {ROLLUP_HOURLY_BEFORE}")))?,
            ),
            None => return Ok(since_ms),
        };
        Ok(if since_ms < merged_before {
            since_ms.div_euclid(rollup::HOUR_MS) * rollup::HOUR_MS
        } else {
            since_ms
        })
    }

    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let group = match query.group_by {
            UsageGroup::Key => "key_id",
            UsageGroup::Model => "CASE model WHEN '' THEN '(none)' ELSE model END",
            UsageGroup::Day => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
            UsageGroup::Env => "env",
            UsageGroup::Project => "CASE project WHEN '' THEN '(none)' ELSE project END",
        };
        let sql = format!(
            "WITH {} SELECT {group} AS grp, SUM(requests) AS requests, SUM(input_tokens) AS input_tokens, \
             SUM(cached_input_tokens) AS cached_input_tokens, SUM(cache_write_tokens) AS cache_write_tokens, \
             SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens, \
             SUM(cost_nano_usd) AS cost_nano_usd, SUM(estimated) AS estimated, SUM(fallback_priced) AS fallback_priced, \
             SUM(unmetered) AS unmetered, SUM(client_cancelled) AS client_cancelled, SUM(errors) AS errors \
             FROM src WHERE (?3 IS NULL OR key_id = ?3) AND (?4 IS NULL OR env = ?4) AND (?5 IS NULL OR project = ?5) \
             GROUP BY grp ORDER BY grp",
            rollup::WINDOW_SOURCE
        );
        let rows = sqlx::query(&sql)
            .bind(query.since_ms)
            .bind(rollup::minute_ceil(query.since_ms))
            .bind(query.key_id.as_ref().map(KeyId::as_str))
            .bind(query.env.as_ref().map(EnvName::as_str))
            .bind(query.project.as_ref().map(ProjectName::as_str))
            .bind(query.until_ms.map_or(i64::MAX, rollup::minute_floor))
            .bind(query.until_ms.unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    group: row.try_get("grp")?,
                    requests: to_u64(row.try_get("requests")?),
                    input_tokens: to_u64(row.try_get("input_tokens")?),
                    cached_input_tokens: to_u64(row.try_get("cached_input_tokens")?),
                    cache_write_tokens: to_u64(row.try_get("cache_write_tokens")?),
                    output_tokens: to_u64(row.try_get("output_tokens")?),
                    reasoning_tokens: to_u64(row.try_get("reasoning_tokens")?),
                    cost_nano_usd: row.try_get("cost_nano_usd")?,
                    estimated: to_u64(row.try_get("estimated")?),
                    fallback_priced: to_u64(row.try_get("fallback_priced")?),
                    unmetered: to_u64(row.try_get("unmetered")?),
                    client_cancelled: to_u64(row.try_get("client_cancelled")?),
                    errors: to_u64(row.try_get("errors")?),
                })
            })
            .collect()
    }

    async fn ledger_oldest_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(at_ms) FROM ledger")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        // Oldest first through `ledger_at`; bounded, so the write lock is
        // held briefly and the ledger writer's batches interleave.
        let pruned = sqlx::query(
            "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at_ms < ? ORDER BY at_ms LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(pruned)
    }

    async fn coarsen_rollups(&self, before_ms: i64) -> Result<bool, StoreError> {
        let horizon = before_ms.div_euclid(rollup::HOUR_MS) * rollup::HOUR_MS;
        let mut tx = self.pool.begin().await?;
        let done: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE name = ?")
            .bind(ROLLUP_HOURLY_BEFORE)
            .fetch_optional(&mut *tx)
            .await?;
        let from = match done {
            Some(bytes) => i64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt(format!("meta {ROLLUP_HOURLY_BEFORE}")))?,
            ),
            None => {
                let oldest: Option<i64> =
                    sqlx::query_scalar("SELECT MIN(bucket_ms) FROM ledger_rollup")
                        .fetch_one(&mut *tx)
                        .await?;
                match oldest {
                    Some(oldest) => oldest.div_euclid(rollup::HOUR_MS) * rollup::HOUR_MS,
                    None => horizon,
                }
            }
        };
        if from >= horizon {
            tx.commit().await?;
            return Ok(false);
        }
        let to = horizon.min(from.saturating_add(COARSEN_HOURS_PER_CALL * rollup::HOUR_MS));
        rollup::coarsen(&mut tx, from, to).await?;
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(ROLLUP_HOURLY_BEFORE)
        .bind(to.to_be_bytes().as_slice())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(to < horizon)
    }

    async fn insert_admin(&self, admin: &AdminRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO admins (id, name, role, token_hash, created_at, created_by, rotated_at, revoked_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(admin.id.as_str())
        .bind(admin.name.as_str())
        .bind(admin.role.as_str())
        .bind(admin.token_hash.as_bytes().as_slice())
        .bind(to_unix(admin.created_at))
        .bind(&admin.created_by)
        .bind(admin.rotated_at.map(to_unix))
        .bind(admin.revoked_at.map(to_unix))
        .execute(&mut *tx)
        .await;
        let inserted = match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "an admin named `{}` already exists (names of revoked admins are not reused)",
                    admin.name
                )));
            }
            other => other?,
        };
        row_mac::seal(
            &mut tx,
            self.mac(),
            &row_mac::ADMINS,
            inserted.last_insert_rowid(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_admins(&self) -> Result<Vec<AdminRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {ADMIN_COLUMNS} FROM admins ORDER BY name"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(admin_from_row).collect()
    }

    async fn get_admin_by_token_hash(
        &self,
        token_hash: &KeyHash,
    ) -> Result<Option<AdminRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ADMIN_COLUMNS} FROM admins WHERE token_hash = ?"
        ))
        .bind(token_hash.as_bytes().as_slice())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(admin_from_row).transpose()
    }

    async fn revoke_admin(
        &self,
        name: &AdminName,
        at: OffsetDateTime,
    ) -> Result<AdminRevokeOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT rowid, role, revoked_at FROM admins WHERE name = ?")
            .bind(name.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(AdminRevokeOutcome::NotFound);
        };
        let rowid: i64 = row.try_get("rowid")?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            tx.commit().await?;
            return Ok(AdminRevokeOutcome::AlreadyRevoked);
        }
        if row.try_get::<String, _>("role")? == AdminRole::Owner.as_str() {
            let other_owners: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM admins WHERE role = 'owner' AND revoked_at IS NULL AND name <> ?",
            )
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if other_owners == 0 {
                tx.commit().await?;
                return Ok(AdminRevokeOutcome::LastOwner);
            }
        }
        let intact = self
            .intact_rows(&mut tx, &row_mac::ADMINS, &[rowid])
            .await?;
        sqlx::query("UPDATE admins SET revoked_at = ? WHERE rowid = ?")
            .bind(to_unix(at))
            .bind(rowid)
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::ADMINS, &intact).await?;
        tx.commit().await?;
        Ok(AdminRevokeOutcome::Revoked)
    }

    async fn replace_admin_token(
        &self,
        name: &AdminName,
        token_hash: &KeyHash,
        at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rowid: Option<i64> =
            sqlx::query_scalar("SELECT rowid FROM admins WHERE name = ? AND revoked_at IS NULL")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(rowid) = rowid else {
            tx.commit().await?;
            return Ok(false);
        };
        let intact = self
            .intact_rows(&mut tx, &row_mac::ADMINS, &[rowid])
            .await?;
        sqlx::query("UPDATE admins SET token_hash = ?, rotated_at = ? WHERE rowid = ?")
            .bind(token_hash.as_bytes().as_slice())
            .bind(to_unix(at))
            .bind(rowid)
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::ADMINS, &intact).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn backup_to(&self, dest: &Path, overwrite: bool) -> Result<(), StoreError> {
        self.write_backup(dest, overwrite).await
    }

    async fn rotate_virtual_key(
        &self,
        rotation: &KeyRotation,
    ) -> Result<KeyRotationOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = rotation.key_id.as_str();
        if let Some((idempotency_key, _)) = &rotation.idempotency {
            let earlier: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT sealed_key FROM key_rotations WHERE key_id = ? AND idempotency_key = ?",
            )
            .bind(id)
            .bind(idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(sealed) = earlier {
                return Ok(KeyRotationOutcome::Repeated(sealed));
            }
        }
        let key: Option<(Vec<u8>, String, Option<i64>)> =
            sqlx::query_as("SELECT hash, prefix, revoked_at FROM virtual_keys WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((hash, prefix, revoked_at)) = key else {
            return Ok(KeyRotationOutcome::NotFound);
        };
        if revoked_at.is_some() {
            return Ok(KeyRotationOutcome::Revoked);
        }
        if !rotation.force {
            let in_grace: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(valid_until) FROM key_grace WHERE key_id = ? AND valid_until > ?",
            )
            .bind(id)
            .bind(to_unix(rotation.at))
            .fetch_one(&mut *tx)
            .await?;
            if let Some(until) = in_grace {
                return Ok(KeyRotationOutcome::InGrace(from_unix(until)?));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO key_grace (hash, key_id, prefix, valid_until) VALUES (?, ?, ?, ?)",
        )
        .bind(&hash)
        .bind(id)
        .bind(&prefix)
        .bind(to_unix(rotation.grace_until))
        .execute(&mut *tx)
        .await?;
        row_mac::seal(
            &mut tx,
            self.mac(),
            &row_mac::KEY_GRACE,
            inserted.last_insert_rowid(),
        )
        .await?;
        let intact = self.key_intact(&mut tx, id).await?;
        sqlx::query("UPDATE virtual_keys SET hash = ?, prefix = ? WHERE id = ?")
            .bind(rotation.new_hash.as_bytes().as_slice())
            .bind(&rotation.new_prefix)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        if let Some((idempotency_key, sealed)) = &rotation.idempotency {
            sqlx::query("INSERT INTO key_rotations (key_id, idempotency_key, sealed_key, created_at) VALUES (?, ?, ?, ?)")
                .bind(id)
                .bind(idempotency_key)
                .bind(sealed)
                .bind(to_unix(rotation.at))
                .execute(&mut *tx)
                .await?;
        }
        // Sealed successors are only kept for retries within the grace window.
        sqlx::query("DELETE FROM key_rotations WHERE created_at < ?")
            .bind(to_unix(rotation.at) - 7 * 86_400)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(KeyRotationOutcome::Rotated)
    }

    async fn list_grace_secrets(
        &self,
        now: OffsetDateTime,
    ) -> Result<Vec<GraceSecret>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        let rows = sqlx::query(
            "SELECT rowid, hash, key_id, prefix, valid_until FROM key_grace WHERE valid_until > ?",
        )
        .bind(to_unix(now))
        .fetch_all(&mut *connection)
        .await?;
        // A row failing its MAC (pointed at another key, kept alive past its
        // window) is left out: the secret is refused, and `integrity_failures`
        // reports the row.
        let mut intact = Vec::with_capacity(rows.len());
        for row in rows {
            let rowid: i64 = row.try_get("rowid")?;
            if row_mac::is_intact(&mut connection, self.mac(), &row_mac::KEY_GRACE, rowid).await? {
                intact.push(row);
            }
        }
        intact
            .iter()
            .map(|row| {
                let hash: Vec<u8> = row.try_get("hash")?;
                Ok(GraceSecret {
                    key_id: KeyId::parse(row.try_get("key_id")?).map_err(corrupt("key id"))?,
                    hash: KeyHash::from_slice(&hash)
                        .ok_or_else(|| StoreError::Corrupt("grace hash length".into()))?,
                    prefix: row.try_get("prefix")?,
                    valid_until: from_unix(row.try_get("valid_until")?)?,
                })
            })
            .collect()
    }

    async fn revoke_virtual_keys_where(
        &self,
        env: Option<&EnvName>,
        project: Option<&ProjectName>,
        at: OffsetDateTime,
    ) -> Result<Vec<KeyId>, StoreError> {
        if env.is_none() && project.is_none() {
            return Err(StoreError::Conflict(
                "bulk revocation needs an environment or a project".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let rowids: Vec<i64> = sqlx::query_scalar(
            "SELECT rowid FROM virtual_keys WHERE revoked_at IS NULL \
             AND (?1 IS NULL OR env = ?1) AND (?2 IS NULL OR project = ?2)",
        )
        .bind(env.map(EnvName::as_str))
        .bind(project.map(ProjectName::as_str))
        .fetch_all(&mut *tx)
        .await?;
        let intact = self.intact_rows(&mut tx, &row_mac::KEYS, &rowids).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE virtual_keys SET revoked_at = ? WHERE revoked_at IS NULL \
             AND (? IS NULL OR env = ?) AND (? IS NULL OR project = ?) RETURNING id",
        )
        .bind(to_unix(at))
        .bind(env.map(EnvName::as_str))
        .bind(env.map(EnvName::as_str))
        .bind(project.map(ProjectName::as_str))
        .bind(project.map(ProjectName::as_str))
        .fetch_all(&mut *tx)
        .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        tx.commit().await?;
        let mut ids = ids
            .iter()
            .map(|id| KeyId::parse(id).map_err(corrupt("key id")))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    async fn update_virtual_key(&self, update: &KeyUpdate) -> Result<bool, StoreError> {
        let scope = serde_json::to_string(&update.scope).map_err(corrupt("key scope"))?;
        let mut tx = self.pool.begin().await?;
        let id = update.id.as_str();
        let intact = self.key_intact(&mut tx, id).await?;
        let done = sqlx::query(
            "UPDATE virtual_keys SET name = ?, scope = ?, project = ?, rpm = ?, tpm = ?, \
             max_parallel = ?, on_anomaly = ?, expires_at = ? WHERE id = ?",
        )
        .bind(&update.name)
        .bind(scope)
        .bind(update.project.as_ref().map(ProjectName::as_str))
        .bind(update.limits.rpm.map(i64::from))
        .bind(update.limits.tpm.map(to_i64))
        .bind(update.limits.max_parallel.map(i64::from))
        .bind(update.on_anomaly.as_str())
        .bind(update.expires_at.map(to_unix))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for budget in &update.set_budgets {
            if budget.scope != BudgetScope::Key(update.id.clone()) {
                return Err(StoreError::Conflict(format!(
                    "budget {} is not one of key {id}'s own",
                    budget.id
                )));
            }
            upsert_budget_in(&mut tx, self.mac(), budget).await?;
        }
        for budget in &update.remove_budgets {
            sqlx::query("DELETE FROM budgets WHERE id = ? AND scope_kind = 'key' AND scope = ?")
                .bind(budget.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        // Sealed last: the key's MAC covers its own budgets.
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn set_key_suspension(
        &self,
        id: &KeyId,
        suspension: Option<&Suspension>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let intact = self.key_intact(&mut tx, id.as_str()).await?;
        let done = sqlx::query(
            "UPDATE virtual_keys SET suspended_at = ?, suspended_reason = ? WHERE id = ?",
        )
        .bind(suspension.map(|s| to_unix(s.at)))
        .bind(suspension.map(|s| s.reason.as_str()))
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn upsert_budget(&self, budget: &BudgetRecord) -> Result<BudgetRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A key's MAC covers the set of its budgets.
        let key = match &budget.scope {
            BudgetScope::Key(id) => self.key_intact(&mut tx, id.as_str()).await?,
            _ => Vec::new(),
        };
        let stored = upsert_budget_in(&mut tx, self.mac(), budget).await?;
        self.reseal(&mut tx, &row_mac::KEYS, &key).await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn list_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, scope_kind, scope, period, limit_nano_usd, created_at_ms FROM budgets ORDER BY scope_kind, scope, period",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(budget_from_row).collect()
    }

    async fn delete_budget(&self, id: &BudgetId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let scope: Option<(String, String)> =
            sqlx::query_as("SELECT scope_kind, scope FROM budgets WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let key = match &scope {
            Some((kind, key_id)) if kind == "key" => self.key_intact(&mut tx, key_id).await?,
            _ => Vec::new(),
        };
        let done = sqlx::query("DELETE FROM budgets WHERE id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &key).await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn spend_since(&self, scope: &BudgetScope, since_ms: i64) -> Result<i64, StoreError> {
        let sql = match scope {
            // A key's budget counts its descendants' spend too (every
            // generation: the tree is walked from the key down).
            BudgetScope::Key(_) => format!(
                "WITH RECURSIVE tree (id) AS ( \
                     SELECT ?3 UNION SELECT k.id FROM virtual_keys k JOIN tree ON k.parent_id = tree.id), {} \
                 SELECT SUM(cost_nano_usd) FROM src WHERE key_id IN (SELECT id FROM tree)",
                rollup::SOURCE
            ),
            BudgetScope::Project(_) => format!(
                "WITH {} SELECT SUM(cost_nano_usd) FROM src WHERE project = ?3",
                rollup::SOURCE
            ),
            BudgetScope::Env(_) => format!(
                "WITH {} SELECT SUM(cost_nano_usd) FROM src WHERE env = ?3",
                rollup::SOURCE
            ),
        };
        let spent: Option<i64> = sqlx::query_scalar(&sql)
            .bind(since_ms)
            .bind(rollup::minute_ceil(since_ms))
            .bind(scope.name())
            .fetch_one(&self.pool)
            .await?;
        Ok(spent.unwrap_or(0))
    }

    async fn recent_requests(&self, since_ms: i64) -> Result<Vec<RecentRequest>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_id, at_ms, input_tokens + output_tokens AS tokens FROM ledger WHERE at_ms >= ? ORDER BY at_ms, id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RecentRequest {
                    key_id: KeyId::parse(row.try_get("key_id")?)
                        .map_err(corrupt("ledger key id"))?,
                    at_ms: row.try_get("at_ms")?,
                    tokens: to_u64(row.try_get("tokens")?),
                })
            })
            .collect()
    }

    async fn insert_alert_webhook(&self, webhook: &AlertWebhookRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO alert_webhooks (id, sealed_url, display_url, thresholds, created_at_ms) VALUES (?, ?, ?, ?, ?)")
            .bind(webhook.id.as_str())
            .bind(&webhook.sealed_url)
            .bind(&webhook.display_url)
            .bind(thresholds_text(&webhook.thresholds))
            .bind(to_unix_ms(webhook.created_at))
            .execute(&mut *tx)
            .await?;
        let rowid = inserted.last_insert_rowid();
        row_mac::seal(&mut tx, self.mac(), &row_mac::WEBHOOKS, rowid).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_alert_webhooks(&self) -> Result<Vec<AlertWebhookRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, sealed_url, display_url, thresholds, created_at_ms FROM alert_webhooks ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let thresholds: String = row.try_get("thresholds")?;
                Ok(AlertWebhookRecord {
                    id: AlertId::parse(row.try_get("id")?).map_err(corrupt("webhook id"))?,
                    sealed_url: row.try_get("sealed_url")?,
                    display_url: row.try_get("display_url")?,
                    thresholds: thresholds
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(corrupt("webhook thresholds"))?,
                    created_at: from_unix_ms(row.try_get("created_at_ms")?)?,
                })
            })
            .collect()
    }

    async fn delete_alert_webhook(&self, id: &AlertId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM alert_webhooks WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_alert(
        &self,
        event: &AlertEvent,
        webhooks: &[AlertId],
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO alert_events (at_ms, kind, dedup, key_id, budget_id, message, payload) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (dedup) DO NOTHING RETURNING id",
        )
        .bind(event.at_ms)
        .bind(&event.kind)
        .bind(&event.dedup)
        .bind(event.key_id.as_ref().map(KeyId::as_str))
        .bind(event.budget_id.as_ref().map(BudgetId::as_str))
        .bind(&event.message)
        .bind(&event.payload)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        for webhook in webhooks {
            sqlx::query("INSERT INTO alert_deliveries (event_id, webhook_id, status, attempts, updated_at_ms) VALUES (?, ?, 'pending', 0, ?)")
                .bind(id)
                .bind(webhook.as_str())
                .bind(event.at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(id))
    }

    async fn update_alert_delivery(
        &self,
        alert_id: i64,
        delivery: &AlertDelivery,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE alert_deliveries SET status = ?, attempts = ?, last_error = ?, updated_at_ms = ? WHERE event_id = ? AND webhook_id = ?")
            .bind(&delivery.status)
            .bind(i64::from(delivery.attempts))
            .bind(&delivery.last_error)
            .bind(at_ms)
            .bind(alert_id)
            .bind(delivery.webhook_id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at_ms, kind, dedup, key_id, budget_id, message, payload FROM alert_events ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut alerts = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let deliveries = sqlx::query(
                "SELECT webhook_id, status, attempts, last_error FROM alert_deliveries WHERE event_id = ? ORDER BY webhook_id",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|d| {
                Ok(AlertDelivery {
                    webhook_id: AlertId::parse(d.try_get("webhook_id")?)
                        .map_err(corrupt("delivery webhook id"))?,
                    status: d.try_get("status")?,
                    attempts: u32::try_from(d.try_get::<i64, _>("attempts")?)
                        .map_err(corrupt("delivery attempts"))?,
                    last_error: d.try_get("last_error")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            alerts.push(StoredAlert {
                id,
                event: AlertEvent {
                    at_ms: row.try_get("at_ms")?,
                    kind: row.try_get("kind")?,
                    dedup: row.try_get("dedup")?,
                    key_id: row
                        .try_get::<Option<String>, _>("key_id")?
                        .map(|id| KeyId::parse(&id))
                        .transpose()
                        .map_err(corrupt("alert key id"))?,
                    budget_id: row
                        .try_get::<Option<String>, _>("budget_id")?
                        .map(|id| BudgetId::parse(&id))
                        .transpose()
                        .map_err(corrupt("alert budget id"))?,
                    message: row.try_get("message")?,
                    payload: row.try_get("payload")?,
                },
                deliveries,
            });
        }
        Ok(alerts)
    }
}

#[cfg(test)]
mod tests;
