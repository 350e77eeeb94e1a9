//! KeyForge's storage: one [`Store`] trait, implemented on SQLite (the
//! embedded default: one file in the data directory).
//!
//! Invariants: the store never sees a plaintext secret. Provider keys arrive
//! sealed by the vault, virtual keys as their keyed hash. The store is not on
//! the request path: the gateway loads what it needs into memory at start and
//! after each change.

mod model;
mod sqlite;

pub use model::{
    CredentialRecord, LedgerRecord, NewProvider, ProviderRecord, RevokeOutcome, UsageGroup,
    UsageQuery, UsageRow, VirtualKeyRecord,
};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use keyforge_types::KeyId;
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
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot prepare the database file: {0}")]
    Io(#[from] std::io::Error),
}

#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A named server value (for example the sealed key-hashing secret).
    async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a named value unless one exists; returns the value now stored, so
    /// two instances racing at first start agree on one.
    async fn put_meta_if_absent(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, StoreError>;

    /// Adds a provider and its first credential version. The name is unique
    /// within its environment.
    async fn insert_provider(&self, provider: &NewProvider) -> Result<(), StoreError>;
    /// Every provider with its current credential.
    async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError>;

    async fn insert_virtual_key(&self, key: &VirtualKeyRecord) -> Result<(), StoreError>;
    async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError>;
    async fn get_virtual_key(&self, id: &KeyId) -> Result<Option<VirtualKeyRecord>, StoreError>;
    async fn revoke_virtual_key(
        &self,
        id: &KeyId,
        at: OffsetDateTime,
    ) -> Result<RevokeOutcome, StoreError>;

    /// Appends a batch of ledger records in one transaction.
    async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError>;
    /// Sums the ledger since a time, optionally for one key or environment,
    /// grouped by key, model, day or environment.
    async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;
}
