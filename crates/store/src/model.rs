//! Rows as the rest of KeyForge sees them.

use keyforge_types::{EnvName, KeyHash, KeyId, ProviderId, ProviderName, Scope};
use time::OffsetDateTime;

/// A provider to add, with its first (sealed) credential.
#[derive(Debug, Clone)]
pub struct NewProvider {
    pub id: ProviderId,
    pub name: ProviderName,
    pub env: EnvName,
    /// `openai`, `anthropic`, `gemini`, `openai-compatible` (parsed by the
    /// providers crate; the store does not interpret it).
    pub kind: String,
    pub base_url: Option<String>,
    pub created_at: OffsetDateTime,
    pub credential: CredentialRecord,
}

/// One version of a provider's API key, sealed by the vault.
#[derive(Clone)]
pub struct CredentialRecord {
    pub version: u32,
    pub sealed: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for CredentialRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRecord")
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct ProviderRecord {
    pub id: ProviderId,
    pub name: ProviderName,
    pub env: EnvName,
    pub kind: String,
    pub base_url: Option<String>,
    pub created_at: OffsetDateTime,
    pub current: CredentialRecord,
}

#[derive(Debug, Clone)]
pub struct VirtualKeyRecord {
    pub id: KeyId,
    pub name: String,
    pub env: EnvName,
    pub hash: KeyHash,
    /// Non-secret display prefix (`kf_dev_AbCd…`).
    pub prefix: String,
    pub scope: Scope,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked,
    NotFound,
}

/// One request that reached a provider, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRecord {
    /// Unix milliseconds when the request arrived.
    pub at_ms: i64,
    pub request_id: String,
    pub key_id: KeyId,
    pub env: EnvName,
    pub provider: ProviderName,
    pub provider_key_version: u32,
    pub model: Option<String>,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    /// `reported`, `estimated` or `none`.
    pub usage_source: &'static str,
    pub cost_nano_usd: i64,
    /// `table`, `fallback` or `none`.
    pub priced_by: &'static str,
    pub status: u16,
    /// From arrival to the last byte of the response (or the cut).
    pub latency_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    Model,
    Day,
    Env,
}

#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub since_ms: i64,
    pub key_id: Option<KeyId>,
    pub env: Option<EnvName>,
    pub group_by: UsageGroup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    pub group: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nano_usd: i64,
    /// Requests whose usage was estimated (cut streams).
    pub estimated: u64,
    /// Requests priced with the fallback price (model not in the table).
    pub fallback_priced: u64,
    pub errors: u64,
}
