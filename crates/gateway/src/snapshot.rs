//! What the request path reads: every virtual key (by hash) and every
//! provider with its decrypted credential, in one immutable snapshot behind
//! an `ArcSwap`. Readers never lock; writers (admin changes) build a new
//! snapshot from the store and swap it in before they answer, so a
//! revocation is in force for the very next request.

use std::collections::HashMap;
use std::sync::Arc;

use keyforge_providers::ProviderKind;
use keyforge_store::{ProviderRecord, Store, StoreError, VirtualKeyRecord};
use keyforge_types::{EnvName, KeyHash, ProviderName, ProviderSecret};
use keyforge_vault::Sealer;

/// A provider as the request path needs it.
#[derive(Debug)]
pub(crate) struct ProviderEntry {
    pub(crate) record: ProviderRecord,
    pub(crate) kind: ProviderKind,
    /// The base URL without a trailing slash.
    pub(crate) base_url: String,
    pub(crate) secret: ProviderSecret,
}

#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) keys: HashMap<KeyHash, Arc<VirtualKeyRecord>>,
    pub(crate) providers: HashMap<(EnvName, ProviderName), Arc<ProviderEntry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provider `{name}` ({env}): {reason}")]
    Provider {
        name: ProviderName,
        env: EnvName,
        reason: String,
    },
}

/// Associated data binding a provider credential's ciphertext to its row.
pub(crate) fn credential_aad(record_id: &str, version: u32) -> Vec<u8> {
    format!("keyforge/provider/{record_id}/v{version}").into_bytes()
}

impl Snapshot {
    pub(crate) async fn load(store: &dyn Store, sealer: &Sealer) -> Result<Self, SnapshotError> {
        let mut snapshot = Snapshot::default();
        for record in store.list_virtual_keys().await? {
            snapshot.keys.insert(record.hash, Arc::new(record));
        }
        for record in store.list_providers().await? {
            let entry = provider_entry(record, sealer)?;
            snapshot.providers.insert(
                (entry.record.env.clone(), entry.record.name.clone()),
                Arc::new(entry),
            );
        }
        Ok(snapshot)
    }

    pub(crate) fn providers_in(&self, env: &EnvName) -> impl Iterator<Item = &Arc<ProviderEntry>> {
        self.providers
            .values()
            .filter(move |entry| &entry.record.env == env)
    }
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
    let plaintext = sealer
        .open(
            &record.current.sealed,
            &credential_aad(record.id.as_str(), record.current.version),
        )
        .map_err(|error| fail(format!("credential v{}: {error}", record.current.version)))?;
    let text =
        std::str::from_utf8(&plaintext).map_err(|_| fail("credential is not text".into()))?;
    let secret = ProviderSecret::parse(text).map_err(|error| fail(error.to_string()))?;
    Ok(ProviderEntry {
        record,
        kind,
        base_url,
        secret,
    })
}
