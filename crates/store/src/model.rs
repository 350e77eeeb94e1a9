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
