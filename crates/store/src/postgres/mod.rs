//! The cluster store: one PostgreSQL database shared by any number of
//! gateways, with the same [`Store`] semantics as the SQLite store (held to
//! the same conformance suite).
//!
//! Invariants:
//! - Migrations run in one transaction under an advisory lock, so two
//!   instances starting at once apply them once; a database written by a
//!   newer KeyForge is refused ([`StoreError::TooNew`]).
//! - The audit log is one chain for every instance: each append takes an
//!   advisory transaction lock and checks that the batch continues the
//!   stored head ([`StoreError::ChainMoved`] otherwise: the writer chains
//!   the batch again on the new head), so `seq` never collides and no
//!   interleaving breaks verification.
//! - A row is checked and re-sealed under its row lock (`SELECT … FOR
//!   UPDATE`), so another instance cannot change it in between.
//! - Every committed transaction that changes what gateways load into
//!   memory sends one notice on `keyforge_changes` carrying the new
//!   `keyforge_changes.seq`, from a deferred trigger in that transaction
//!   (`schema_v11.sql`); ledger, rollup, audit and alert rows send none.
//! - Errors never carry the connection URL (it may hold a password).

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use keyforge_types::{
    AdminId, AdminName, AdminRole, AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope,
    EnvName, KeyHash, KeyId, KeyLimits, NanoUsd, Period, ProjectName, ProviderId, ProviderName,
    Scope,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use crate::model::{
    AdminRecord, AdminRevokeOutcome, AlertDelivery, AlertEvent, AlertWebhookRecord,
    AuditCheckpoint, AuditRow, BudgetRecord, CredentialInfo, CredentialRecord, CredentialStage,
    GraceSecret, KeyRotation, KeyRotationOutcome, KeyUpdate, LedgerRecord, NewProvider,
    ProviderRecord, RecentRequest, RevokeOutcome, StoredAlert, StoredLedgerRow, Suspension,
    UpstreamHealth, UsageGroup, UsageQuery, UsageRow, VersionUsage, VirtualKeyRecord,
};
use crate::sqlite::{
    KEY_COLUMNS, corrupt, from_unix, from_unix_ms, thresholds_text, to_i64, to_u64, to_unix,
    to_unix_ms,
};
use crate::{ChangeListener, RowFailure, RowMac, Store, StoreError};

mod rollup;
mod row_mac;
#[cfg(test)]
mod tests;

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = 11;
/// The migrations, one per version, in order: a database at version `v`
/// runs every entry above `v`. A fresh database starts at version 9 (the
/// SQLite schema's versions 1 to 9 in one step), then takes each later one.
const MIGRATIONS: &[(i64, &str)] = &[
    (9, include_str!("schema_v9.sql")),
    (10, include_str!("schema_v10.sql")),
    (11, include_str!("schema_v11.sql")),
];
/// The channel change notices are sent on (`schema_v11.sql`'s trigger).
const CHANGE_CHANNEL: &str = "keyforge_changes";
/// The change listener's `application_name`, followed by `-<process id>`,
/// so an operator (or a test) can tell each instance's listening
/// connection in `pg_stat_activity`.
pub const CHANGE_LISTENER_APPLICATION: &str = "keyforge-changes";
/// Advisory lock keys (one 64-bit space per database): `kf` then a number.
const MIGRATION_LOCK: i64 = 0x6b66_0000_0001;
const AUDIT_LOCK: i64 = 0x6b66_0000_0002;
const COARSEN_LOCK: i64 = 0x6b66_0000_0003;
/// Connections per instance: the ledger writer, the admin API and the
/// background tasks each hold one at a time.
const POOL_SIZE: u32 = 8;
/// See the SQLite store's constants of the same names.
const ROLLUP_HOURLY_BEFORE: &str = "rollup_hourly_before";
const COARSEN_HOURS_PER_CALL: i64 = 24;
const ROW_MAC_BACKFILL: &str = "row_mac_backfill";

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How to connect, kept for the change listener's own connection.
    options: PgConnectOptions,
    /// The row key, installed once by the gateway at start (the store never
    /// sees the master key).
    row_mac: Arc<OnceLock<RowMac>>,
}

/// `url` with its password (if any: in the user information or as a
/// `password=` parameter) replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user information ends at the last `@` before the path.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                        format!("{name}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// Whether `url` carries a password (in its user information or as a
/// `password=` parameter).
pub fn url_has_password(url: &str) -> bool {
    redact_url(url) != url
}

/// Whether `url` names a PostgreSQL database (`postgres://` or
/// `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Listens on [`CHANGE_CHANNEL`] over a connection of its own.
#[derive(Debug)]
struct PgChangeListener {
    /// Holds the only handle of its pool: dropping it closes the
    /// connection.
    listener: sqlx::postgres::PgListener,
}

#[async_trait]
impl ChangeListener for PgChangeListener {
    async fn next(&mut self) -> Result<i64, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(notice)) => Ok(notice.payload().parse().unwrap_or(i64::MAX)),
            Ok(None) => Err(StoreError::ListenerLost),
            Err(error) => Err(StoreError::Database(error)),
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`;
    /// TLS as `sslmode` says, with rustls; a password may come from the URL,
    /// `PGPASSWORD` or a `PGPASSFILE`) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|_| {
            StoreError::Conflict(format!(
                "not a valid PostgreSQL URL: {} (expected postgres://user@host:port/database)",
                redact_url(url)
            ))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let store = Self {
            pool,
            options,
            row_mac: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for copying a whole store ([`crate::copy_sqlite_to_postgres`]).
    pub(crate) fn pool_ref(&self) -> &PgPool {
        &self.pool
    }

    /// The pool, for tests that edit rows behind the store's back.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Held until the transaction ends: a second instance starting now
        // waits here, then finds the schema up to date.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS keyforge_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let version: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keyforge_schema")
            .fetch_one(&mut *tx)
            .await?;
        let version = version.unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        for (to, sql) in MIGRATIONS {
            if *to > version {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
            }
        }
        if version < SCHEMA_VERSION {
            sqlx::query("DELETE FROM keyforge_schema")
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO keyforge_schema (version) VALUES ($1)")
                .bind(SCHEMA_VERSION)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn mac(&self) -> Option<&RowMac> {
        self.row_mac.get()
    }

    /// A transaction whose reads all see one snapshot (as a SQLite
    /// transaction's do).
    async fn snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// Of these rows (locked by the caller), those whose MAC holds now; only
    /// these are re-sealed after a change, so an admin action on a tampered
    /// row never launders it.
    async fn intact_rows(
        &self,
        connection: &mut PgConnection,
        spec: &row_mac::Spec,
        rids: &[i64],
    ) -> Result<Vec<i64>, StoreError> {
        let mut intact = Vec::with_capacity(rids.len());
        for rid in rids {
            if row_mac::is_intact(&mut *connection, self.mac(), spec, *rid).await? {
                intact.push(*rid);
            }
        }
        Ok(intact)
    }

    async fn reseal(
        &self,
        connection: &mut PgConnection,
        spec: &row_mac::Spec,
        rids: &[i64],
    ) -> Result<(), StoreError> {
        for rid in rids {
            row_mac::seal(&mut *connection, self.mac(), spec, *rid).await?;
        }
        Ok(())
    }

    /// Locks the key's row and returns its `rid` if its MAC holds now
    /// (empty otherwise), to re-seal it after a change.
    async fn key_intact(
        &self,
        connection: &mut PgConnection,
        id: &str,
    ) -> Result<Vec<i64>, StoreError> {
        let rids: Vec<i64> = row_mac::rid_for_update(&mut *connection, &row_mac::KEYS, id)
            .await?
            .into_iter()
            .collect();
        self.intact_rows(connection, &row_mac::KEYS, &rids).await
    }
}

fn credential_from_row(row: &PgRow) -> Result<CredentialRecord, StoreError> {
    Ok(CredentialRecord {
        version: u32::try_from(row.try_get::<i64, _>("version")?)
            .map_err(corrupt("credential version"))?,
        sealed: row.try_get("sealed")?,
        created_at: from_unix(row.try_get("created_at")?)?,
    })
}

fn provider_from_row(
    row: &PgRow,
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

fn key_from_row(row: &PgRow) -> Result<VirtualKeyRecord, StoreError> {
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

fn optional_u32(row: &PgRow, column: &'static str) -> Result<Option<u32>, StoreError> {
    row.try_get::<Option<i64>, _>(column)?
        .map(u32::try_from)
        .transpose()
        .map_err(corrupt(column))
}

fn budget_from_row(row: &PgRow) -> Result<BudgetRecord, StoreError> {
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

/// Sets a budget and seals its row (see the SQLite store's twin).
async fn upsert_budget_in(
    connection: &mut PgConnection,
    mac: Option<&RowMac>,
    budget: &BudgetRecord,
) -> Result<BudgetRecord, StoreError> {
    let row = sqlx::query(
        "INSERT INTO budgets (id, scope_kind, scope, period, limit_nano_usd, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (scope_kind, scope, period) DO UPDATE SET limit_nano_usd = EXCLUDED.limit_nano_usd \
         RETURNING rid, id, scope_kind, scope, period, limit_nano_usd, created_at_ms",
    )
    .bind(budget.id.as_str())
    .bind(budget.scope.kind())
    .bind(budget.scope.name())
    .bind(budget.limit.period.as_str())
    .bind(budget.limit.amount.0)
    .bind(to_unix_ms(budget.created_at))
    .fetch_one(&mut *connection)
    .await?;
    row_mac::seal(connection, mac, &row_mac::BUDGETS, row.try_get("rid")?).await?;
    budget_from_row(&row)
}

async fn insert_credential(
    connection: &mut PgConnection,
    mac: Option<&RowMac>,
    provider_id: &ProviderId,
    credential: &CredentialRecord,
    stage: &str,
) -> Result<(), StoreError> {
    let rid: i64 = sqlx::query_scalar(
        "INSERT INTO provider_credentials (provider_id, version, stage, sealed, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING rid",
    )
    .bind(provider_id.as_str())
    .bind(i64::from(credential.version))
    .bind(stage)
    .bind(&credential.sealed)
    .bind(to_unix(credential.created_at))
    .fetch_one(&mut *connection)
    .await?;
    row_mac::seal(connection, mac, &row_mac::CREDENTIALS, rid).await
}

/// The columns [`admin_from_row`] reads, as the SQLite store's.
const ADMIN_COLUMNS: &str =
    "id, name, role, token_hash, created_at, created_by, rotated_at, revoked_at";

fn admin_from_row(row: &PgRow) -> Result<AdminRecord, StoreError> {
    let hash: Vec<u8> = row.try_get("token_hash")?;
    let time = |column: &str| -> Result<Option<OffsetDateTime>, StoreError> {
        row.try_get::<Option<i64>, _>(column)?
            .map(from_unix)
            .transpose()
    };
    Ok(AdminRecord {
        id: AdminId::parse(row.try_get("id")?).map_err(corrupt("admin id"))?,
        name: AdminName::parse(row.try_get("name")?).map_err(corrupt("admin name"))?,
        role: AdminRole::parse(row.try_get("role")?).map_err(corrupt("admin role"))?,
        token_hash: KeyHash::from_slice(&hash)
            .ok_or_else(|| StoreError::Corrupt("admin token hash length".into()))?,
        created_at: from_unix(row.try_get("created_at")?)?,
        created_by: row.try_get("created_by")?,
        rotated_at: time("rotated_at")?,
        revoked_at: time("revoked_at")?,
    })
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Reads 8 big-endian bytes of a meta value as an `i64`.
fn meta_i64(bytes: &[u8], name: &str) -> Result<i64, StoreError> {
    Ok(i64::from_be_bytes(bytes.try_into().map_err(|_| {
        StoreError::Corrupt(format!("meta {name}"))
    })?))
}

#[async_trait]
impl Store for PgStore {
    async fn change_seq(&self) -> Result<Option<i64>, StoreError> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM keyforge_changes WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(Some(seq))
    }

    async fn listen_changes(&self) -> Result<Option<Box<dyn ChangeListener>>, StoreError> {
        let application = format!("{CHANGE_LISTENER_APPLICATION}-{}", std::process::id());
        // A pool of one connection of its own, so listening never takes a
        // connection from the requests' pool; it is never recycled (a
        // recycled connection would drop the LISTEN silently).
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(self.options.clone().application_name(&application))
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        // A lost connection is reported (`ListenerLost`), not mended behind
        // the caller's back: the caller must reload after it.
        listener.eager_reconnect(false);
        listener.listen(CHANGE_CHANNEL).await?;
        Ok(Some(Box::new(PgChangeListener { listener })))
    }

    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // A read-only server (a standby) answers but cannot take writes.
        let mut tx = self.pool.begin().await?;
        let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        if read_only == "on" {
            return Err(StoreError::Conflict(
                "the PostgreSQL server is read-only (a standby?); KeyForge needs the primary"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored)
    }

    async fn install_row_mac(&self, mac: RowMac) -> Result<u64, StoreError> {
        let mac = self.row_mac.get_or_init(|| mac);
        let mut tx = self.pool.begin().await?;
        let pending = sqlx::query("DELETE FROM meta WHERE name = $1")
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
        let mut tx = self.snapshot().await?;
        let failed = row_mac::failures(&mut tx, mac).await?;
        tx.commit().await?;
        Ok(failed)
    }

    async fn insert_provider(&self, provider: &NewProvider) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted: Result<i64, _> = sqlx::query_scalar(
            "INSERT INTO providers (id, name, env, kind, base_url, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING rid",
        )
        .bind(provider.id.as_str())
        .bind(provider.name.as_str())
        .bind(provider.env.as_str())
        .bind(&provider.kind)
        .bind(&provider.base_url)
        .bind(to_unix(provider.created_at))
        .fetch_one(&mut *tx)
        .await;
        let rid = match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "a provider named `{}` already exists in environment `{}`",
                    provider.name, provider.env
                )));
            }
            other => other?,
        };
        row_mac::seal(&mut tx, self.mac(), &row_mac::PROVIDERS, rid).await?;
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
        let rids: Vec<i64> = row_mac::rid_for_update(&mut tx, &row_mac::PROVIDERS, id.as_str())
            .await?
            .into_iter()
            .collect();
        let intact = self
            .intact_rows(&mut tx, &row_mac::PROVIDERS, &rids)
            .await?;
        let done = sqlx::query("UPDATE providers SET kind = $1, base_url = $2 WHERE id = $3")
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
        sqlx::query("DELETE FROM provider_credentials WHERE provider_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM providers WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut tx = self.snapshot().await?;
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
        let mut tx = self.pool.begin().await?;
        match insert_credential(&mut tx, self.mac(), provider_id, credential, stage.as_str()).await
        {
            Err(StoreError::Database(error)) if is_unique_violation(&error) => {
                Err(StoreError::Conflict(format!(
                    "provider {provider_id} already has a key version {}",
                    credential.version
                )))
            }
            Err(other) => Err(other),
            Ok(()) => {
                tx.commit().await?;
                Ok(())
            }
        }
    }

    async fn list_credentials(
        &self,
        provider_id: &ProviderId,
    ) -> Result<Vec<CredentialInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, stage, created_at FROM provider_credentials WHERE provider_id = $1 ORDER BY version DESC",
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
        // The provider's row lock serializes stage changes across instances,
        // so the count below sees every other change.
        sqlx::query("SELECT 1 FROM providers WHERE id = $1 FOR UPDATE")
            .bind(provider_id.as_str())
            .execute(&mut *tx)
            .await?;
        for (version, stage) in stages {
            sqlx::query(
                "UPDATE provider_credentials SET stage = $1 WHERE provider_id = $2 AND version = $3",
            )
            .bind(stage.as_str())
            .bind(provider_id.as_str())
            .bind(i64::from(*version))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE providers SET rollout_percent = $1 WHERE id = $2")
            .bind(i64::from(rollout_percent))
            .bind(provider_id.as_str())
            .execute(&mut *tx)
            .await?;
        let counts: Vec<(String, i64)> = sqlx::query_as(
            "SELECT stage, COUNT(*) FROM provider_credentials WHERE provider_id = $1 AND stage != 'retired' GROUP BY stage",
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
        let rows = sqlx::query(&format!(
            "WITH {} SELECT env, provider, provider_key_version AS version, SUM(ok)::BIGINT AS ok, \
             SUM(rejected)::BIGINT AS rejected, SUM(rate_limited)::BIGINT AS rate_limited, SUM(failed)::BIGINT AS failed, \
             SUM(client_errors)::BIGINT AS client_errors, MAX(last_ms) AS last_ms, \
             (array_agg(last_status ORDER BY last_ms DESC))[1] AS last_status \
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
            "WITH {} SELECT provider_key_version, SUM(requests)::BIGINT AS requests, MAX(last_ms) AS last_ms FROM src \
             WHERE env = $3 AND provider = $4 GROUP BY provider_key_version ORDER BY provider_key_version DESC",
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
        let rid: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO virtual_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16, $17, $18, $19) RETURNING rid"
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
        .fetch_one(&mut *tx)
        .await?;
        for budget in budgets {
            upsert_budget_in(&mut tx, self.mac(), budget).await?;
        }
        // Sealed last: the key's MAC covers its own budgets.
        row_mac::seal(&mut tx, self.mac(), &row_mac::KEYS, rid).await?;
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
             WHERE $1::BIGINT IS NULL OR (COALESCE(revoked_at, $1) >= $1 AND COALESCE(expires_at, $1) >= $1) \
             ORDER BY created_at, id"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn get_virtual_key(&self, id: &KeyId) -> Result<Option<VirtualKeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys WHERE id = $1"
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
            sqlx::query_scalar("SELECT revoked_at FROM virtual_keys WHERE id = $1 FOR UPDATE")
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
        // The key and every descendant still in force, locked; revocation
        // applies to each, intact or not; only intact ones are re-sealed.
        const TREE: &str = "WITH RECURSIVE tree (id) AS ( \
                 SELECT $1::TEXT COLLATE \"C\" UNION SELECT k.id FROM virtual_keys k JOIN tree ON k.parent_id = tree.id) ";
        let rids: Vec<i64> = sqlx::query_scalar(&format!(
            "{TREE} SELECT rid FROM virtual_keys WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree) \
             ORDER BY rid FOR UPDATE OF virtual_keys"
        ))
        .bind(id.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let intact = self.intact_rows(&mut tx, &row_mac::KEYS, &rids).await?;
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "{TREE} UPDATE virtual_keys SET revoked_at = $2 \
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
        let rids: Vec<i64> = sqlx::query_scalar(
            "SELECT rid FROM virtual_keys WHERE revoked_at IS NULL \
             AND ($1::TEXT IS NULL OR env = $1) AND ($2::TEXT IS NULL OR project = $2) ORDER BY rid FOR UPDATE",
        )
        .bind(env.map(EnvName::as_str))
        .bind(project.map(ProjectName::as_str))
        .fetch_all(&mut *tx)
        .await?;
        let intact = self.intact_rows(&mut tx, &row_mac::KEYS, &rids).await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE virtual_keys SET revoked_at = $1 WHERE revoked_at IS NULL \
             AND ($2::TEXT IS NULL OR env = $2) AND ($3::TEXT IS NULL OR project = $3) RETURNING id",
        )
        .bind(to_unix(at))
        .bind(env.map(EnvName::as_str))
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
            "UPDATE virtual_keys SET name = $1, scope = $2, project = $3, rpm = $4, tpm = $5, \
             max_parallel = $6, on_anomaly = $7, expires_at = $8 WHERE id = $9",
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
            sqlx::query("DELETE FROM budgets WHERE id = $1 AND scope_kind = 'key' AND scope = $2")
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
            "UPDATE virtual_keys SET suspended_at = $1, suspended_reason = $2 WHERE id = $3",
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
            sqlx::query_as("SELECT scope_kind, scope FROM budgets WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let key = match &scope {
            Some((kind, key_id)) if kind == "key" => self.key_intact(&mut tx, key_id).await?,
            _ => Vec::new(),
        };
        let done = sqlx::query("DELETE FROM budgets WHERE id = $1")
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
                     SELECT $3::TEXT COLLATE \"C\" UNION SELECT k.id FROM virtual_keys k JOIN tree ON k.parent_id = tree.id), {} \
                 SELECT SUM(cost_nano_usd)::BIGINT FROM src WHERE key_id IN (SELECT id FROM tree)",
                rollup::SOURCE
            ),
            BudgetScope::Project(_) => format!(
                "WITH {} SELECT SUM(cost_nano_usd)::BIGINT FROM src WHERE project = $3",
                rollup::SOURCE
            ),
            BudgetScope::Env(_) => format!(
                "WITH {} SELECT SUM(cost_nano_usd)::BIGINT FROM src WHERE env = $3",
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
            "SELECT key_id, at_ms, input_tokens + output_tokens AS tokens FROM ledger WHERE at_ms >= $1 ORDER BY at_ms, id",
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
        let rid: i64 = sqlx::query_scalar("INSERT INTO alert_webhooks (id, sealed_url, display_url, thresholds, created_at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING rid")
            .bind(webhook.id.as_str())
            .bind(&webhook.sealed_url)
            .bind(&webhook.display_url)
            .bind(thresholds_text(&webhook.thresholds))
            .bind(to_unix_ms(webhook.created_at))
            .fetch_one(&mut *tx)
            .await?;
        row_mac::seal(&mut tx, self.mac(), &row_mac::WEBHOOKS, rid).await?;
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
        let done = sqlx::query("DELETE FROM alert_webhooks WHERE id = $1")
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
            "INSERT INTO alert_events (at_ms, kind, dedup, key_id, budget_id, message, payload) VALUES ($1, $2, $3, $4, $5, $6, $7) \
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
            sqlx::query("INSERT INTO alert_deliveries (event_id, webhook_id, status, attempts, updated_at_ms) VALUES ($1, $2, 'pending', 0, $3)")
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
        sqlx::query("UPDATE alert_deliveries SET status = $1, attempts = $2, last_error = $3, updated_at_ms = $4 WHERE event_id = $5 AND webhook_id = $6")
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
            "SELECT id, at_ms, kind, dedup, key_id, budget_id, message, payload FROM alert_events ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut alerts = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let deliveries = sqlx::query(
                "SELECT webhook_id, status, attempts, last_error FROM alert_deliveries WHERE event_id = $1 ORDER BY webhook_id",
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
        let mut tx = self.pool.begin().await?;
        if !audit.is_empty() || checkpoint.is_some() {
            // One appender at a time across every instance, and the batch
            // must continue the stored head: otherwise another instance
            // appended since this writer last read it, and the batch is
            // chained again on the new head (nothing was written).
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK)
                .execute(&mut *tx)
                .await?;
            let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
                .fetch_one(&mut *tx)
                .await?;
            let head = to_u64(head.unwrap_or(0));
            if let Some(first) = audit.first()
                && first.seq != head + 1
            {
                return Err(StoreError::ChainMoved { head });
            }
        }
        rollup::insert_raw(&mut tx, ledger).await?;
        rollup::upsert(&mut tx, ledger).await?;
        if !audit.is_empty() {
            sqlx::query(
                "INSERT INTO audit_log (seq, at_ms, kind, line, hash) \
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::BYTEA[])",
            )
            .bind(audit.iter().map(|r| to_i64(r.seq)).collect::<Vec<_>>())
            .bind(audit.iter().map(|r| r.at_ms).collect::<Vec<_>>())
            .bind(audit.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
            .bind(audit.iter().map(|r| r.line.clone()).collect::<Vec<_>>())
            .bind(audit.iter().map(|r| r.hash.clone()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        if let Some(checkpoint) = checkpoint {
            sqlx::query("INSERT INTO audit_checkpoints (seq, line) VALUES ($1, $2)")
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
             SUM(requests)::BIGINT AS requests, SUM(cost_nano_usd)::BIGINT AS cost FROM ledger_rollup \
             GROUP BY 1, key_id, env, provider, provider_key_version",
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
             output_tokens, reasoning_tokens, status, outcome FROM ledger WHERE id > $1 ORDER BY id LIMIT $2",
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
        let mut tx = self.snapshot().await?;
        let entries: Vec<(i64, String)> =
            sqlx::query_as("SELECT seq, line FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(to_i64(after_seq))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
        let last = entries.last().map_or(0, |(seq, _)| *seq);
        let checkpoints: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, line FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(to_i64(after_seq))
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
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
            sqlx::query_scalar("SELECT MIN(seq) FROM audit_log WHERE at_ms >= $1")
                .bind(since_ms)
                .fetch_one(&self.pool)
                .await?;
        Ok(seq.map(to_u64))
    }

    async fn usage_window_start(&self, since_ms: i64) -> Result<i64, StoreError> {
        let merged: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(ROLLUP_HOURLY_BEFORE)
            .fetch_optional(&self.pool)
            .await?;
        let merged_before = match merged {
            Some(bytes) => meta_i64(&bytes, ROLLUP_HOURLY_BEFORE)?,
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
            UsageGroup::Day => {
                "to_char(to_timestamp(at_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD') COLLATE \"C\""
            }
            UsageGroup::Env => "env",
            UsageGroup::Project => "CASE project WHEN '' THEN '(none)' ELSE project END",
        };
        let sql = format!(
            "WITH {} SELECT {group} AS grp, SUM(requests)::BIGINT AS requests, SUM(input_tokens)::BIGINT AS input_tokens, \
             SUM(cached_input_tokens)::BIGINT AS cached_input_tokens, SUM(cache_write_tokens)::BIGINT AS cache_write_tokens, \
             SUM(output_tokens)::BIGINT AS output_tokens, SUM(reasoning_tokens)::BIGINT AS reasoning_tokens, \
             SUM(cost_nano_usd)::BIGINT AS cost_nano_usd, SUM(estimated)::BIGINT AS estimated, \
             SUM(fallback_priced)::BIGINT AS fallback_priced, SUM(unmetered)::BIGINT AS unmetered, \
             SUM(client_cancelled)::BIGINT AS client_cancelled, SUM(errors)::BIGINT AS errors \
             FROM src WHERE ($3::TEXT IS NULL OR key_id = $3) AND ($4::TEXT IS NULL OR env = $4) \
             AND ($5::TEXT IS NULL OR project = $5) \
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
        let pruned = sqlx::query(
            "DELETE FROM ledger WHERE id IN (SELECT id FROM ledger WHERE at_ms < $1 ORDER BY at_ms LIMIT $2)",
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
        // Instances run retention on their own clocks: one merges at a time.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(COARSEN_LOCK)
            .execute(&mut *tx)
            .await?;
        let done: Option<Vec<u8>> = sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(ROLLUP_HOURLY_BEFORE)
            .fetch_optional(&mut *tx)
            .await?;
        let from = match done {
            Some(bytes) => meta_i64(&bytes, ROLLUP_HOURLY_BEFORE)?,
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
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
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
        let inserted: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "INSERT INTO admins (id, name, role, token_hash, created_at, created_by, rotated_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING rid",
        )
        .bind(admin.id.as_str())
        .bind(admin.name.as_str())
        .bind(admin.role.as_str())
        .bind(admin.token_hash.as_bytes().as_slice())
        .bind(to_unix(admin.created_at))
        .bind(&admin.created_by)
        .bind(admin.rotated_at.map(to_unix))
        .bind(admin.revoked_at.map(to_unix))
        .fetch_one(&mut *tx)
        .await;
        let rid = match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "an admin named `{}` already exists (names of revoked admins are not reused)",
                    admin.name
                )));
            }
            other => other?,
        };
        row_mac::seal(&mut tx, self.mac(), &row_mac::ADMINS, rid).await?;
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
            "SELECT {ADMIN_COLUMNS} FROM admins WHERE token_hash = $1"
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
        // Every owner row is locked first, in one order: two instances
        // revoking the two last owners at once cannot both succeed.
        sqlx::query("SELECT rid FROM admins WHERE role = 'owner' ORDER BY rid FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
        let row =
            sqlx::query("SELECT rid, role, revoked_at FROM admins WHERE name = $1 FOR UPDATE")
                .bind(name.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(row) = row else {
            tx.commit().await?;
            return Ok(AdminRevokeOutcome::NotFound);
        };
        let rid: i64 = row.try_get("rid")?;
        if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
            tx.commit().await?;
            return Ok(AdminRevokeOutcome::AlreadyRevoked);
        }
        if row.try_get::<String, _>("role")? == AdminRole::Owner.as_str() {
            let other_owners: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM admins WHERE role = 'owner' AND revoked_at IS NULL AND name <> $1",
            )
            .bind(name.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if other_owners == 0 {
                tx.commit().await?;
                return Ok(AdminRevokeOutcome::LastOwner);
            }
        }
        let intact = self.intact_rows(&mut tx, &row_mac::ADMINS, &[rid]).await?;
        sqlx::query("UPDATE admins SET revoked_at = $1 WHERE rid = $2")
            .bind(to_unix(at))
            .bind(rid)
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
        let rid: Option<i64> = sqlx::query_scalar(
            "SELECT rid FROM admins WHERE name = $1 AND revoked_at IS NULL FOR UPDATE",
        )
        .bind(name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(rid) = rid else {
            tx.commit().await?;
            return Ok(false);
        };
        let intact = self.intact_rows(&mut tx, &row_mac::ADMINS, &[rid]).await?;
        sqlx::query("UPDATE admins SET token_hash = $1, rotated_at = $2 WHERE rid = $3")
            .bind(token_hash.as_bytes().as_slice())
            .bind(to_unix(at))
            .bind(rid)
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::ADMINS, &intact).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn backup_to(&self, dest: &std::path::Path, overwrite: bool) -> Result<(), StoreError> {
        let _ = (dest, overwrite);
        Err(StoreError::Conflict(
            "the PostgreSQL store is backed up with PostgreSQL's own tools: `pg_dump --format=custom` \
             (or continuous archiving); keep the master key apart from the dump"
                .to_owned(),
        ))
    }

    async fn rotate_virtual_key(
        &self,
        rotation: &KeyRotation,
    ) -> Result<KeyRotationOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = rotation.key_id.as_str();
        // The key's row lock first: two instances rotating the same key at
        // once take turns, and the second sees the first's rotation.
        let key: Option<(i64, Vec<u8>, String, Option<i64>)> = sqlx::query_as(
            "SELECT rid, hash, prefix, revoked_at FROM virtual_keys WHERE id = $1 FOR UPDATE",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((idempotency_key, _)) = &rotation.idempotency {
            let earlier: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT sealed_key FROM key_rotations WHERE key_id = $1 AND idempotency_key = $2",
            )
            .bind(id)
            .bind(idempotency_key)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(sealed) = earlier {
                return Ok(KeyRotationOutcome::Repeated(sealed));
            }
        }
        let Some((rid, hash, prefix, revoked_at)) = key else {
            return Ok(KeyRotationOutcome::NotFound);
        };
        if revoked_at.is_some() {
            return Ok(KeyRotationOutcome::Revoked);
        }
        if !rotation.force {
            let in_grace: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(valid_until) FROM key_grace WHERE key_id = $1 AND valid_until > $2",
            )
            .bind(id)
            .bind(to_unix(rotation.at))
            .fetch_one(&mut *tx)
            .await?;
            if let Some(until) = in_grace {
                return Ok(KeyRotationOutcome::InGrace(from_unix(until)?));
            }
        }
        let grace_rid: i64 = sqlx::query_scalar(
            "INSERT INTO key_grace (hash, key_id, prefix, valid_until) VALUES ($1, $2, $3, $4) RETURNING rid",
        )
        .bind(&hash)
        .bind(id)
        .bind(&prefix)
        .bind(to_unix(rotation.grace_until))
        .fetch_one(&mut *tx)
        .await?;
        row_mac::seal(&mut tx, self.mac(), &row_mac::KEY_GRACE, grace_rid).await?;
        let intact = self.intact_rows(&mut tx, &row_mac::KEYS, &[rid]).await?;
        sqlx::query("UPDATE virtual_keys SET hash = $1, prefix = $2 WHERE id = $3")
            .bind(rotation.new_hash.as_bytes().as_slice())
            .bind(&rotation.new_prefix)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.reseal(&mut tx, &row_mac::KEYS, &intact).await?;
        if let Some((idempotency_key, sealed)) = &rotation.idempotency {
            sqlx::query("INSERT INTO key_rotations (key_id, idempotency_key, sealed_key, created_at) VALUES ($1, $2, $3, $4)")
                .bind(id)
                .bind(idempotency_key)
                .bind(sealed)
                .bind(to_unix(rotation.at))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM key_rotations WHERE created_at < $1")
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
        let mut tx = self.snapshot().await?;
        let rows = sqlx::query(
            "SELECT rid, hash, key_id, prefix, valid_until FROM key_grace WHERE valid_until > $1",
        )
        .bind(to_unix(now))
        .fetch_all(&mut *tx)
        .await?;
        // A row failing its MAC is left out: the secret is refused, and
        // `integrity_failures` reports the row.
        let mut intact = Vec::with_capacity(rows.len());
        for row in rows {
            let rid: i64 = row.try_get("rid")?;
            if row_mac::is_intact(&mut tx, self.mac(), &row_mac::KEY_GRACE, rid).await? {
                intact.push(row);
            }
        }
        tx.commit().await?;
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
}
