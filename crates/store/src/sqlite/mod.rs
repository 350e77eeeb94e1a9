//! The embedded store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;

use async_trait::async_trait;
use keyforge_types::{EnvName, KeyHash, KeyId, ProviderId, ProviderName, Scope};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection};
use time::OffsetDateTime;

use crate::model::{
    CredentialRecord, LedgerRecord, NewProvider, ProviderRecord, RevokeOutcome, UsageGroup,
    UsageQuery, UsageRow, VirtualKeyRecord,
};
use crate::{Store, StoreError};

const SCHEMA_VERSION: i64 = 2;
/// 17 columns x 100 rows stays far below SQLite's bound-parameter limit.
const LEDGER_ROWS_PER_STATEMENT: usize = 100;
const SCHEMA_V1: &str = include_str!("schema.sql");
const SCHEMA_V2: &str = include_str!("schema_v2.sql");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
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
        let store = Self { pool };
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
        if version < SCHEMA_VERSION {
            sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
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

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_unix(time: OffsetDateTime) -> i64 {
    time.unix_timestamp()
}

fn from_unix(seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| StoreError::Corrupt(format!("timestamp {seconds}")))
}

fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |error| StoreError::Corrupt(format!("{what}: {error}"))
}

fn provider_from_row(row: &SqliteRow) -> Result<ProviderRecord, StoreError> {
    Ok(ProviderRecord {
        id: ProviderId::parse(row.try_get("id")?).map_err(corrupt("provider id"))?,
        name: ProviderName::parse(row.try_get("name")?).map_err(corrupt("provider name"))?,
        env: EnvName::parse(row.try_get("env")?).map_err(corrupt("provider environment"))?,
        kind: row.try_get("kind")?,
        base_url: row.try_get("base_url")?,
        created_at: from_unix(row.try_get("created_at")?)?,
        current: CredentialRecord {
            version: u32::try_from(row.try_get::<i64, _>("version")?)
                .map_err(corrupt("credential version"))?,
            sealed: row.try_get("sealed")?,
            created_at: from_unix(row.try_get("credential_created_at")?)?,
        },
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
        created_at: from_unix(row.try_get("created_at")?)?,
        expires_at: row
            .try_get::<Option<i64>, _>("expires_at")?
            .map(from_unix)
            .transpose()?,
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_unix)
            .transpose()?,
    })
}

const KEY_COLUMNS: &str = "id, name, env, hash, prefix, scope, created_at, expires_at, revoked_at";

async fn insert_credential(
    connection: &mut SqliteConnection,
    provider_id: &ProviderId,
    credential: &CredentialRecord,
    stage: &str,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO provider_credentials (provider_id, version, stage, sealed, created_at) VALUES (?, ?, ?, ?, ?)")
        .bind(provider_id.as_str())
        .bind(i64::from(credential.version))
        .bind(stage)
        .bind(&credential.sealed)
        .bind(to_unix(credential.created_at))
        .execute(connection)
        .await?;
    Ok(())
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
        match inserted {
            Err(error) if is_unique_violation(&error) => {
                return Err(StoreError::Conflict(format!(
                    "a provider named `{}` already exists in environment `{}`",
                    provider.name, provider.env
                )));
            }
            other => other?,
        };
        insert_credential(&mut tx, &provider.id, &provider.credential, "current").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.id, p.name, p.env, p.kind, p.base_url, p.created_at, c.version, c.sealed, c.created_at AS credential_created_at \
             FROM providers p JOIN provider_credentials c ON c.provider_id = p.id AND c.stage = 'current' \
             ORDER BY p.env, p.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(provider_from_row).collect()
    }

    async fn insert_virtual_key(&self, key: &VirtualKeyRecord) -> Result<(), StoreError> {
        let scope = serde_json::to_string(&key.scope).map_err(corrupt("key scope"))?;
        sqlx::query(&format!(
            "INSERT INTO virtual_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM virtual_keys ORDER BY created_at, id"
        ))
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
        let outcome = match revoked_at {
            None => RevokeOutcome::NotFound,
            Some(Some(_)) => RevokeOutcome::AlreadyRevoked,
            Some(None) => {
                sqlx::query("UPDATE virtual_keys SET revoked_at = ? WHERE id = ?")
                    .bind(to_unix(at))
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
                RevokeOutcome::Revoked
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // One transaction per batch, and many rows per statement: each
        // statement is a round trip to SQLite's worker thread.
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(LEDGER_ROWS_PER_STATEMENT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO ledger (at_ms, request_id, key_id, env, provider, provider_key_version, model, input_tokens, cached_input_tokens, \
                 cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost_nano_usd, priced_by, status, latency_ms) ",
            );
            insert.push_values(chunk, |mut row, r| {
                row.push_bind(r.at_ms)
                    .push_bind(r.request_id.as_str())
                    .push_bind(r.key_id.as_str())
                    .push_bind(r.env.as_str())
                    .push_bind(r.provider.as_str())
                    .push_bind(i64::from(r.provider_key_version))
                    .push_bind(r.model.as_deref())
                    .push_bind(to_i64(r.input_tokens))
                    .push_bind(to_i64(r.cached_input_tokens))
                    .push_bind(to_i64(r.cache_write_tokens))
                    .push_bind(to_i64(r.output_tokens))
                    .push_bind(to_i64(r.reasoning_tokens))
                    .push_bind(r.usage_source)
                    .push_bind(r.cost_nano_usd)
                    .push_bind(r.priced_by)
                    .push_bind(i64::from(r.status))
                    .push_bind(to_i64(r.latency_ms));
            });
            insert.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let group = match query.group_by {
            UsageGroup::Key => "key_id",
            UsageGroup::Model => "COALESCE(model, '(none)')",
            UsageGroup::Day => "strftime('%Y-%m-%d', at_ms / 1000, 'unixepoch')",
            UsageGroup::Env => "env",
        };
        let sql = format!(
            "SELECT {group} AS grp, COUNT(*) AS requests, SUM(input_tokens) AS input_tokens, SUM(cached_input_tokens) AS cached_input_tokens, \
             SUM(cache_write_tokens) AS cache_write_tokens, SUM(output_tokens) AS output_tokens, SUM(reasoning_tokens) AS reasoning_tokens, \
             SUM(cost_nano_usd) AS cost_nano_usd, SUM(usage_source = 'estimated') AS estimated, SUM(priced_by = 'fallback') AS fallback_priced, \
             SUM(status >= 400) AS errors \
             FROM ledger WHERE at_ms >= ? AND (? IS NULL OR key_id = ?) AND (? IS NULL OR env = ?) \
             GROUP BY grp ORDER BY grp"
        );
        let key = query.key_id.as_ref().map(|id| id.as_str().to_owned());
        let env = query.env.as_ref().map(|env| env.as_str().to_owned());
        let rows = sqlx::query(&sql)
            .bind(query.since_ms)
            .bind(&key)
            .bind(&key)
            .bind(&env)
            .bind(&env)
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
                    errors: to_u64(row.try_get("errors")?),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
