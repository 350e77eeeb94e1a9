//! The admin API's request and response bodies, shared with the CLI.

use keyforge_types::{EnvName, KeyId, ModelPattern, ProviderId, ProviderName, Scope};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Serialize)]
pub struct CreateProviderRequest {
    pub name: ProviderName,
    pub kind: String,
    pub env: EnvName,
    #[serde(default)]
    pub base_url: Option<String>,
    /// The provider's API key. Sent once, over the admin connection; it is
    /// sealed before it is stored and never returned.
    pub api_key: String,
}

impl std::fmt::Debug for CreateProviderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateProviderRequest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("env", &self.env)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProviderView {
    pub id: ProviderId,
    pub name: ProviderName,
    pub kind: String,
    pub env: EnvName,
    pub base_url: String,
    pub credential_version: u32,
    pub created_at: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CreateKeyRequest {
    pub name: String,
    pub env: EnvName,
    #[serde(default)]
    pub providers: Vec<ProviderName>,
    #[serde(default)]
    pub models: Vec<ModelPattern>,
    /// `30m`, `12h`, `90d`; absent for a key that does not expire.
    #[serde(default)]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KeyView {
    pub id: KeyId,
    pub name: String,
    pub env: EnvName,
    /// Non-secret prefix (`kf_dev_AbCd…`) to recognise the key by.
    pub prefix: String,
    pub scope: Scope,
    pub status: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// The answer to a key creation: the only time the key's text is shown.
#[derive(Deserialize, Serialize)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RevokeResult {
    pub id: KeyId,
    /// `revoked`, or `already_revoked` when the key was revoked before.
    pub outcome: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Sums of the ledger for one group (a key, model, day or environment).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UsageRowView {
    pub group: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nano_usd: i64,
    /// The cost as dollars, for people (`$1.234567`).
    pub cost_usd: String,
    /// Requests whose usage was estimated because their stream was cut.
    pub estimated: u64,
    /// Requests priced at the fallback price: their model is not in the price table.
    pub fallback_priced: u64,
    pub errors: u64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct UsageReport {
    pub since: String,
    pub group_by: String,
    pub rows: Vec<UsageRowView>,
    pub total: UsageRowView,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PriceView {
    pub api: String,
    pub model: String,
    pub since: String,
    /// USD per million tokens.
    pub input: String,
    pub cached_input: String,
    pub cache_write: String,
    pub output: String,
    pub origin: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct PriceList {
    pub version: String,
    pub prices: Vec<PriceView>,
    pub fallback: PriceView,
}
