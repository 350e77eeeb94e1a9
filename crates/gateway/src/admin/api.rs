//! The admin API's request and response bodies, shared with the CLI.

use keyforge_types::{
    AlertId, AnomalyAction, BudgetId, BudgetLimit, BudgetScope, EnvName, KeyId, KeyLimits,
    ModelPattern, ProjectName, ProviderId, ProviderName, Scope,
};
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
    /// Skip the authenticated test call (for providers without a models
    /// endpoint).
    #[serde(default)]
    pub skip_check: bool,
    /// Add it although keys in force are scoped to its name (left over from
    /// a removed provider of that name): they regain access to it.
    #[serde(default)]
    pub allow_scoped_keys: bool,
}

impl std::fmt::Debug for CreateProviderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateProviderRequest")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("env", &self.env)
            .field("base_url", &self.base_url)
            .field("skip_check", &self.skip_check)
            .field("allow_scoped_keys", &self.allow_scoped_keys)
            .finish_non_exhaustive()
    }
}

/// `PATCH /providers/{id}`: what to change; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProviderRequest {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub base_url: Option<String>,
    /// Skip the authenticated test call against the new base URL.
    #[serde(default)]
    pub skip_check: bool,
}

/// The answer to `DELETE /providers/{id}`.
#[derive(Debug, Deserialize, Serialize)]
pub struct RemovedProvider {
    pub provider: ProviderView,
    /// Keys in force that could still reach it (removed anyway with
    /// `force`); their requests to it are now refused.
    pub keys_reaching: Vec<KeyId>,
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
    /// What the change that answered this asks the operator to check (the
    /// same secret in another environment, a normalised base URL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ProviderList {
    pub providers: Vec<ProviderView>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CreateKeyRequest {
    pub name: String,
    /// Required for a root key; a child key is in its parent's.
    #[serde(default)]
    pub env: Option<EnvName>,
    /// Mint a child of this key: it can only narrow the parent.
    #[serde(default)]
    pub parent: Option<KeyId>,
    /// Whether the new key may itself mint child keys.
    #[serde(default)]
    pub can_mint: bool,
    #[serde(default)]
    pub providers: Vec<ProviderName>,
    #[serde(default)]
    pub models: Vec<ModelPattern>,
    /// `30m`, `12h`, `90d`; absent for a key that does not expire.
    #[serde(default)]
    pub ttl: Option<String>,
    #[serde(default)]
    pub project: Option<ProjectName>,
    /// The key's own budgets, at most one per period.
    #[serde(default)]
    pub budgets: Vec<BudgetLimit>,
    #[serde(default)]
    pub limits: KeyLimits,
    #[serde(default)]
    pub on_anomaly: AnomalyAction,
    /// Allow a name another key in force in the environment already has
    /// (names are handles: `name:ENV/NAME`).
    #[serde(default)]
    pub allow_duplicate_name: bool,
}

/// `Some(None)` for an explicit `null` (remove the value), `None` for an
/// absent field (keep it).
fn double_option<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// `PATCH /keys/{id}`: what to change; absent fields stay as they are, and
/// `null` removes a limit, the project or the expiry.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub project: Option<Option<ProjectName>>,
    /// The whole new provider list (empty: every provider of the environment).
    #[serde(default)]
    pub providers: Option<Vec<ProviderName>>,
    /// The whole new model list (empty: every model).
    #[serde(default)]
    pub models: Option<Vec<ModelPattern>>,
    /// A new lifetime from now (`30d`), or `null` for no expiry.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub rpm: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tpm: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_parallel: Option<Option<u32>>,
    #[serde(default)]
    pub on_anomaly: Option<AnomalyAction>,
    /// The key's own budgets to set, at most one per period (replacing the
    /// budget of that period, its spend kept).
    #[serde(default)]
    pub budgets: Vec<BudgetLimit>,
    /// Periods whose budget of this key is removed.
    #[serde(default)]
    pub remove_budgets: Vec<keyforge_types::Period>,
    /// Let the new scope allow what the current one does not (audited as a
    /// widening). A child key is never widened beyond its parent.
    #[serde(default)]
    pub allow_widen: bool,
    #[serde(default)]
    pub allow_duplicate_name: bool,
}

impl UpdateKeyRequest {
    /// Whether it changes nothing (the flags only allow things).
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.project.is_none()
            && self.providers.is_none()
            && self.models.is_none()
            && self.ttl.is_none()
            && self.rpm.is_none()
            && self.tpm.is_none()
            && self.max_parallel.is_none()
            && self.on_anomaly.is_none()
            && self.budgets.is_empty()
            && self.remove_budgets.is_empty()
    }
}

/// The answer to a key update.
#[derive(Debug, Deserialize, Serialize)]
pub struct UpdatedKey {
    #[serde(flatten)]
    pub view: KeyView,
    /// Whether the scope now allows something it did not.
    pub widened: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KeyView {
    pub id: KeyId,
    pub name: String,
    pub env: EnvName,
    /// Non-secret prefix (`kf_dev_AbCd…`) to recognise the key by.
    pub prefix: String,
    pub scope: Scope,
    /// `active`, `suspended`, `expired` or `revoked`.
    pub status: String,
    pub project: Option<ProjectName>,
    pub limits: KeyLimits,
    pub on_anomaly: AnomalyAction,
    /// Every budget this key's requests are checked against: its own, its
    /// project's and its environment's.
    #[serde(default)]
    pub budgets: Vec<BudgetView>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub suspended_at: Option<String>,
    pub suspended_reason: Option<String>,
    #[serde(default)]
    pub parent: Option<KeyId>,
    #[serde(default)]
    pub can_mint: bool,
    /// Who created the key: `admin`, `key:<parent id>`, `oidc:<role>`.
    #[serde(default)]
    pub origin: String,
}

/// `GET /keyforge/v1/keys/self`: the presenting key and the providers it
/// can reach (what `keyforge run` sets a child process up with).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SelfView {
    pub key: KeyView,
    pub providers: Vec<ReachableProvider>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReachableProvider {
    pub name: ProviderName,
    /// `openai`, `anthropic`, `gemini`, `openai-compatible`.
    pub kind: String,
    /// The gateway path serving it (`/p/NAME`).
    pub path: String,
}

/// A budget and where it stands in its current period.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct BudgetView {
    pub id: BudgetId,
    pub scope: BudgetScope,
    pub limit: BudgetLimit,
    /// `$50.000000/month`, for people.
    pub limit_usd: String,
    pub spent_nano_usd: i64,
    pub spent_usd: String,
    /// Held by requests in flight.
    pub reserved_nano_usd: i64,
    /// Spent, in percent of the limit (one decimal).
    pub percent_used: f64,
    pub period_start: String,
    /// Absent for `total` budgets.
    pub resets_at: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct SetBudgetRequest {
    pub scope: BudgetScope,
    pub limit: BudgetLimit,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BudgetList {
    pub budgets: Vec<BudgetView>,
}

/// The answer to a key creation: the only time the key's text is shown.
#[derive(Deserialize, Serialize)]
pub struct CreatedKey {
    pub key: String,
    #[serde(flatten)]
    pub view: KeyView,
    /// Model patterns that match no known model, and the like.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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
    /// Its child keys (and theirs) revoked with it.
    #[serde(default)]
    pub descendants: Vec<KeyId>,
}

/// Rotates a virtual key: a successor secret for the same key id.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct RotateKeyRequest {
    /// How long the current secret keeps working: `30m`, `24h`, `7d`
    /// (default 24h; `0s` is not allowed, revoke instead).
    #[serde(default)]
    pub grace: Option<String>,
    /// A retry with the same idempotency key returns the same successor.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Rotate even though an earlier secret is still in its grace window.
    #[serde(default)]
    pub force: bool,
}

/// The answer to a key rotation: the successor's text, shown this once
/// (and again only to a retry with the same idempotency key).
#[derive(Deserialize, Serialize)]
pub struct RotatedKey {
    pub key: String,
    /// When the earlier secret stops working (absent on a repeated answer).
    pub grace_until: Option<String>,
    #[serde(flatten)]
    pub view: KeyView,
}

impl std::fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedKey")
            .field("grace_until", &self.grace_until)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// Revokes every key of an environment and/or a project.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct BulkRevokeRequest {
    #[serde(default)]
    pub env: Option<EnvName>,
    #[serde(default)]
    pub project: Option<ProjectName>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct BulkRevokeResult {
    /// The keys revoked now (keys revoked before are not listed).
    pub revoked: Vec<KeyId>,
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
    /// The key id, model, day (`YYYY-MM-DD`, UTC), environment or project.
    pub group: String,
    /// Grouped by key: the key's name (absent for a key no longer known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Grouped by key: the key's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Grouped by key: the key's project name (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
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
    /// Requests whose response carried nothing the price table can price
    /// (no usage, no priced unit): charged the per-request fallback.
    #[serde(default)]
    pub unmetered: u64,
    /// Requests whose client went away before the response ended; the
    /// provider ran them and they are billed.
    #[serde(default)]
    pub client_cancelled: u64,
    pub errors: u64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct UsageReport {
    /// Start of the window, included (RFC 3339, UTC).
    pub since: String,
    /// End of the window, excluded (RFC 3339, UTC); absent: up to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// With `key=`: the key's name, environment and project, as the rows
    /// of a by-key report name them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<UsageKeyView>,
    pub group_by: String,
    pub rows: Vec<UsageRowView>,
    pub total: UsageRowView,
}

/// A key as usage reports name it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct UsageKeyView {
    pub id: KeyId,
    pub name: String,
    pub env: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
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

/// A webhook to deliver alerts to. The URL is sealed when stored and never
/// returned; listings show its scheme and host only.
#[derive(Deserialize, Serialize)]
pub struct CreateAlertRequest {
    pub url: String,
    /// Percentages of a budget that raise an alert; default 25, 50, 75, 100.
    #[serde(default)]
    pub thresholds: Option<Vec<u8>>,
}

impl std::fmt::Debug for CreateAlertRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateAlertRequest")
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertWebhookView {
    pub id: AlertId,
    /// Scheme and host only: the rest of a webhook URL is often a secret.
    pub url: String,
    pub thresholds: Vec<u8>,
    pub created_at: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct AlertWebhookList {
    pub webhooks: Vec<AlertWebhookView>,
}

/// `POST /admin/v1/alerts/test`: send a test alert.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestAlertRequest {
    /// One webhook (`alr_...`); `None`: every configured webhook.
    #[serde(default)]
    pub webhook_id: Option<AlertId>,
}

/// How the test alert went at one webhook.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TestAlertOutcome {
    pub webhook_id: AlertId,
    /// Scheme and host only, as in listings.
    pub url: String,
    /// Whether the webhook answered 2xx.
    pub delivered: bool,
    /// The HTTP status it answered, if it answered.
    pub status: Option<u16>,
    /// Why it failed (`HTTP 500`, `could not connect`, ...); never the URL.
    pub error: Option<String>,
}

/// The answer of `POST /admin/v1/alerts/test`, one outcome per webhook.
#[derive(Debug, Deserialize, Serialize)]
pub struct TestAlertReport {
    pub outcomes: Vec<TestAlertOutcome>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertDeliveryView {
    pub webhook_id: AlertId,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AlertView {
    pub id: i64,
    pub at: String,
    /// `budget` or `anomaly`.
    pub kind: String,
    pub message: String,
    pub key_id: Option<KeyId>,
    pub budget_id: Option<BudgetId>,
    pub deliveries: Vec<AlertDeliveryView>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct AlertLog {
    pub alerts: Vec<AlertView>,
}

/// Starts a rotation: the new provider key becomes `pending`.
#[derive(Deserialize, Serialize)]
pub struct StartRotationRequest {
    /// The new provider key. Sealed before it is stored, never returned.
    pub api_key: String,
    /// Skip the authenticated test call (for providers without a models
    /// endpoint).
    #[serde(default)]
    pub skip_check: bool,
}

impl std::fmt::Debug for StartRotationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartRotationRequest")
            .field("skip_check", &self.skip_check)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct PromoteRequest {
    /// Share of requests for the pending key, 1 to 100; absent or 100
    /// promotes it to current.
    #[serde(default)]
    pub percent: Option<u8>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FinishRequest {
    /// Retire the previous key even though it served requests recently.
    #[serde(default)]
    pub force: bool,
    /// How long the previous key must have served nothing, in minutes
    /// (1 to 10080, a week); `None`: the gateway's
    /// `[rotation] quiet_window` (15 minutes by default).
    #[serde(default)]
    pub quiet_minutes: Option<u32>,
}

/// One version of a provider's key and its recent traffic.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct KeyVersionView {
    pub version: u32,
    /// `current`, `pending`, `previous` or `retired`.
    pub stage: String,
    pub created_at: String,
    pub age_days: i64,
    pub requests_last_hour: u64,
    pub requests_last_day: u64,
    pub requests_last_week: u64,
    pub last_used: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RotationStatus {
    pub provider: ProviderView,
    /// What the step asks the operator to check (a retired secret still
    /// current for another provider).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Share of requests the pending key serves.
    pub rollout_percent: u8,
    pub versions: Vec<KeyVersionView>,
}

/// One provider key version's outcomes in the status window.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct VersionHealthView {
    pub version: u32,
    pub stage: String,
    pub ok: u64,
    /// 401/403 from the provider: it rejects the key.
    pub rejected: u64,
    /// 429 from the provider: its own rate limit.
    pub rate_limited: u64,
    /// 5xx, unreachable or timed out: the provider is failing.
    pub failed: u64,
    /// Other 4xx: the requests themselves were wrong.
    pub client_errors: u64,
    pub last_status: u16,
    pub last_at: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ProviderHealthView {
    pub id: ProviderId,
    pub name: ProviderName,
    pub env: EnvName,
    pub kind: String,
    /// `healthy`, `idle`, `key_rejected`, `provider_failing` or
    /// `provider_rate_limited`.
    pub verdict: String,
    /// One sentence for people, with what to do.
    pub detail: String,
    pub versions: Vec<VersionHealthView>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StatusReport {
    /// The window the counts cover (`15m`).
    pub window: String,
    pub virtual_keys: usize,
    /// The last admin action could not be written to the audit log.
    pub audit_failing: bool,
    pub providers: Vec<ProviderHealthView>,
    /// The ledger writer's queue and counters.
    #[serde(default)]
    pub ledger: crate::LedgerStats,
    /// Cluster mode: whether the shared admission counters in Redis
    /// answered the last call (`reachable` or `unreachable`); absent in
    /// the embedded mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// Cluster mode (a shared PostgreSQL store): how this instance hears
    /// of the other instances' changes; absent in the embedded mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeStatus>,
}

/// How an instance of a cluster keeps up with the other instances'
/// changes (`keyforge status`).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ChangeStatus {
    /// `listening` (notices arrive as changes commit) or `disconnected`
    /// (reconnecting; the periodic check still runs).
    pub listener: String,
    /// The store's change number the served snapshot holds every change
    /// up to.
    pub seq: i64,
    /// Change notices received (this instance's own included).
    pub notices: u64,
    /// Snapshot reloads for changes made through other instances (or
    /// after a reconnect).
    pub reloads: u64,
    /// Times the listener's connection was lost and came back; each was
    /// followed by a reload.
    pub reconnects: u64,
    /// Changes the periodic check found that no notice had announced.
    pub found_by_check: u64,
    /// Reloads that failed (retried every second).
    pub reload_failures: u64,
    /// Seconds between periodic checks (`[store] change_check_interval`).
    pub check_interval_secs: u64,
}

/// One thing `keyforge doctor` found.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Finding {
    /// `warning` or `info`.
    pub severity: String,
    /// `provider_key_overdue`, `provider_key_never_rotated`,
    /// `rotation_unfinished`, `virtual_key_old`.
    pub check: String,
    /// The provider or key concerned.
    pub subject: String,
    /// What is wrong and what to do.
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DoctorReport {
    /// The rotation policy in force (`90d`).
    pub max_age_days: u64,
    pub findings: Vec<Finding>,
}

/// `POST /admin/v1/backup`: where the gateway writes a copy of its store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// An absolute path on the gateway's machine.
    pub to: String,
    /// Replace an existing file.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupResult {
    pub to: String,
}

/// A named admin as listings show it: never its token or the token's hash.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AdminView {
    pub id: keyforge_types::AdminId,
    pub name: keyforge_types::AdminName,
    /// `viewer`, `auditor`, `operator` or `owner`.
    pub role: keyforge_types::AdminRole,
    /// `active` or `revoked`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// The actor that added it (`admin:NAME`; `gateway` for the owner made
    /// from the legacy `admin.token`).
    pub created_by: String,
    pub rotated_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct AdminList {
    pub admins: Vec<AdminView>,
    /// Live OIDC sessions (`[admin.oidc]`), not yet expired.
    #[serde(default)]
    pub sessions: Vec<super::sessions::SessionView>,
}

/// `POST /admin/v1/admins`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminRequest {
    pub name: keyforge_types::AdminName,
    pub role: keyforge_types::AdminRole,
}

/// The answer to adding an admin or rotating its token: the one time the
/// token (`kfa_...`) is shown.
#[derive(Deserialize, Serialize)]
pub struct AdminWithToken {
    pub token: String,
    pub admin: AdminView,
}

impl std::fmt::Debug for AdminWithToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminWithToken")
            .field("token", &"[redacted]")
            .field("admin", &self.admin)
            .finish()
    }
}
