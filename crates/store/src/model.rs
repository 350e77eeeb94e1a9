//! Rows as the rest of KeyForge sees them.

use keyforge_types::{
    AdminId, AdminName, AdminRole, AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope,
    EnvName, KeyHash, KeyId, KeyLimits, ProjectName, ProviderId, ProviderName, Scope,
};
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
    /// Being rotated in; serves `rollout_percent` % of requests until it is
    /// promoted.
    pub pending: Option<CredentialRecord>,
    /// The version `current` replaced, still valid at the provider until the
    /// rotation is finished (and the one a rollback returns to).
    pub previous: Option<CredentialRecord>,
    pub rollout_percent: u8,
}

/// Where a provider key version stands in blue/green rotation (after AWS
/// Secrets Manager's staging labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialStage {
    Current,
    Pending,
    Previous,
    Retired,
}

impl CredentialStage {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Pending => "pending",
            Self::Previous => "previous",
            Self::Retired => "retired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "current" => Some(Self::Current),
            "pending" => Some(Self::Pending),
            "previous" => Some(Self::Previous),
            "retired" => Some(Self::Retired),
            _ => None,
        }
    }
}

/// A provider key version without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialInfo {
    pub version: u32,
    pub stage: CredentialStage,
    pub created_at: OffsetDateTime,
}

/// How much one provider key version was used since a time (from the
/// ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionUsage {
    pub version: u32,
    pub requests: u64,
    /// Unix milliseconds of the latest request.
    pub last_ms: i64,
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
    pub project: Option<ProjectName>,
    pub limits: KeyLimits,
    pub on_anomaly: AnomalyAction,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    /// Suspended by anomaly detection, until an operator resumes the key.
    pub suspended: Option<Suspension>,
    /// The key this one was minted under: it can only narrow the parent, its
    /// spend counts against the parent's budgets, and revoking the parent
    /// revokes it.
    pub parent: Option<KeyId>,
    /// Whether the key itself may mint child keys.
    pub can_mint: bool,
    /// Who created the key: `admin`, `key:<parent id>` or `oidc:<role>`.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub at: OffsetDateTime,
    /// Fixed text naming the rule that fired; never request content.
    pub reason: String,
}

/// What a revocation did. `descendants` are the key's children (and
/// theirs) that were still in force and are revoked with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked { descendants: Vec<KeyId> },
    AlreadyRevoked { descendants: Vec<KeyId> },
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
    pub project: Option<ProjectName>,
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
    /// `table` (the price table), `fallback` (a model the table does not
    /// know: the fallback token prices), `unmetered` (a response that
    /// carried nothing the table can price: the per-request fallback
    /// charge) or `none` (nothing billable: an error, a listing).
    pub priced_by: &'static str,
    pub status: u16,
    /// From arrival to the last byte of the response (or the cut).
    pub latency_ms: u64,
    /// How the request ended: `ok`, `client_cancelled`, `upstream_cut`,
    /// `upstream_error` or `upstream_failed` (see schema_v7.sql).
    pub outcome: &'static str,
}

/// The usage rollups summed per hour and per (key, environment, provider,
/// provider key version): the dimensions a `key.use` audit entry names, so
/// `audit verify` can check the rollups budgets are rebuilt from against
/// the sealed log, for raw rows long pruned as for recent ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupTotal {
    /// Start of the hour, Unix ms (UTC).
    pub hour_ms: i64,
    pub key_id: String,
    pub env: String,
    pub provider: String,
    pub provider_key_version: i64,
    pub requests: i64,
    /// nano-USD.
    pub cost_nano_usd: i64,
}

/// A ledger row as stored, with the fields that carry money and tokens,
/// for checking it against the `key.use` audit entry that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLedgerRow {
    /// The row's id in the ledger table.
    pub id: i64,
    pub request_id: String,
    pub key_id: String,
    pub cost_nano_usd: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub status: i64,
    pub outcome: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    Model,
    Day,
    Env,
    Project,
}

/// What [`crate::Store::query_usage`] sums: the window `[since_ms,
/// until_ms)` (Unix ms, UTC), optionally one key, environment or project.
#[derive(Debug, Clone)]
pub struct UsageQuery {
    /// Start of the window, included (Unix ms).
    pub since_ms: i64,
    /// End of the window, excluded (Unix ms); `None`: up to now. Exact to
    /// the millisecond within the retention period; past it the rollups
    /// are hourly and a window covers the whole hour its end falls in.
    pub until_ms: Option<i64>,
    pub key_id: Option<KeyId>,
    pub env: Option<EnvName>,
    pub project: Option<ProjectName>,
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
    /// Requests whose response carried nothing the price table can price,
    /// charged the per-request fallback instead.
    pub unmetered: u64,
    /// Requests whose client went away before the response ended (the
    /// provider ran them all the same).
    pub client_cancelled: u64,
    pub errors: u64,
}

/// A budget: an amount per period for a key, a project or an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRecord {
    pub id: BudgetId,
    pub scope: BudgetScope,
    pub limit: BudgetLimit,
    pub created_at: OffsetDateTime,
}

/// One request of the recent past, to rebuild rate limiters after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRequest {
    pub key_id: KeyId,
    pub at_ms: i64,
    pub tokens: u64,
}

/// A webhook alerts are delivered to. The URL is sealed by the vault (it
/// often carries a secret, as Slack's do); `display_url` is its scheme and
/// host only.
#[derive(Clone)]
pub struct AlertWebhookRecord {
    pub id: AlertId,
    pub sealed_url: Vec<u8>,
    pub display_url: String,
    /// Percentages of a budget that raise an alert, ascending.
    pub thresholds: Vec<u8>,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for AlertWebhookRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertWebhookRecord")
            .field("id", &self.id)
            .field("display_url", &self.display_url)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

/// An alert raised by the gateway (a budget threshold, an anomaly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    pub at_ms: i64,
    /// `budget` or `anomaly`.
    pub kind: String,
    /// Alerts with the same `dedup` are raised once: a budget threshold is
    /// `budget/<id>/<period start>/<percent>`.
    pub dedup: Option<String>,
    pub key_id: Option<KeyId>,
    pub budget_id: Option<BudgetId>,
    pub message: String,
    /// The JSON body sent to webhooks.
    pub payload: String,
}

/// An alert as stored, with how its deliveries went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub id: i64,
    pub event: AlertEvent,
    pub deliveries: Vec<AlertDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertDelivery {
    pub webhook_id: AlertId,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// An earlier secret of a rotated key, valid until `valid_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceSecret {
    pub key_id: KeyId,
    pub hash: KeyHash,
    pub prefix: String,
    pub valid_until: OffsetDateTime,
}

/// A key rotation to apply.
#[derive(Debug, Clone)]
pub struct KeyRotation {
    pub key_id: KeyId,
    pub new_hash: KeyHash,
    pub new_prefix: String,
    /// When the current secret stops working.
    pub grace_until: OffsetDateTime,
    /// Rotate even though an earlier secret is still in its grace window.
    pub force: bool,
    /// With the successor's text sealed, so a retry returns it.
    pub idempotency: Option<(String, Vec<u8>)>,
    pub at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRotationOutcome {
    Rotated,
    /// A retry of an earlier rotation: its sealed successor.
    Repeated(Vec<u8>),
    NotFound,
    Revoked,
    /// The key was rotated at this time and that secret is still in grace.
    InGrace(OffsetDateTime),
}

/// How a provider key version's requests went since a time (from the
/// ledger), by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHealth {
    pub env: String,
    pub provider: String,
    pub version: u32,
    /// 2xx and 3xx.
    pub ok: u64,
    /// 401 and 403: the provider rejected the key.
    pub rejected: u64,
    /// 429: the provider's own rate limit.
    pub rate_limited: u64,
    /// 5xx, unreachable, timed out.
    pub failed: u64,
    /// Other 4xx (the request itself was wrong).
    pub client_errors: u64,
    pub last_status: u16,
    pub last_ms: i64,
}

/// An audit log entry, chained and ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub at_ms: i64,
    pub kind: String,
    /// The exact JSON line; `hash` is its SHA-256.
    pub line: String,
    pub hash: Vec<u8>,
}

/// A signed checkpoint line after the entry `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCheckpoint {
    pub seq: u64,
    pub line: String,
}

/// An in-place change of a key's editable fields, with its own budgets
/// set or removed in the same transaction. The key's environment, hash,
/// parent and history never change.
#[derive(Debug, Clone)]
pub struct KeyUpdate {
    pub id: KeyId,
    pub name: String,
    pub scope: Scope,
    pub project: Option<ProjectName>,
    pub limits: KeyLimits,
    pub on_anomaly: AnomalyAction,
    pub expires_at: Option<OffsetDateTime>,
    /// Budgets of this key to set (a budget for the same period is
    /// replaced, keeping its id).
    pub set_budgets: Vec<BudgetRecord>,
    /// Budgets of this key to remove.
    pub remove_budgets: Vec<BudgetId>,
}

/// A named admin (schema 10): who may call the admin API, with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRecord {
    pub id: AdminId,
    pub name: AdminName,
    pub role: AdminRole,
    /// The keyed hash of the admin's token (never the token).
    pub token_hash: KeyHash,
    pub created_at: OffsetDateTime,
    /// The actor that added it (`admin:NAME`, or `gateway` for the owner
    /// made from the legacy `admin.token`).
    pub created_by: String,
    /// When its token was last replaced.
    pub rotated_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
}

/// What [`crate::Store::revoke_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRevokeOutcome {
    Revoked,
    AlreadyRevoked,
    /// Refused: this is the last unrevoked owner (nobody could manage
    /// admins after it).
    LastOwner,
    NotFound,
}
