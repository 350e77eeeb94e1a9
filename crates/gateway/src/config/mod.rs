//! Limits and timeouts of the gateway, already validated by the binary.

pub mod admin_oidc;
pub mod oidc;

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted (413 above it).
    pub max_request_body_bytes: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Time a client has to send its whole request body, on every route
    /// (the proxy, `/admin/v1`, `/keyforge/v1`), counted from the end of
    /// its headers; a body still arriving then is answered 408 and its
    /// connection closed.
    pub body_read_timeout: Duration,
    /// Open client connections, at most; past it a new connection gets a
    /// 503 with `Retry-After` and is closed at once. Below the usual
    /// 1024-descriptor limit, with room for the store, upstream
    /// connections and logs, so a connection flood never leaves the
    /// gateway unable to open a file.
    pub max_connections: usize,
    /// Open connections from one client address (the TCP peer's IP), at
    /// most; past it that address is refused the same way, so one client
    /// cannot take every connection.
    pub max_connections_per_client: usize,
    /// How long a response may wait for a client that stopped reading (its
    /// receive window full, no byte taken); then the connection is closed,
    /// so a client that never reads cannot hold its place for ever.
    pub write_stall_timeout: Duration,
    /// Time a TLS client has to finish its handshake, counted from the
    /// TCP accept; then the connection is closed and its place freed.
    pub tls_handshake_timeout: Duration,
    /// Proxies in front of the gateway whose forwarding header names the
    /// client (`[server] trusted_proxies`). A trusted proxy's own address
    /// is exempt from `max_connections_per_client` (all its clients share
    /// it); it still counts towards `max_connections`.
    pub trusted_proxies: crate::forwarded::TrustedProxies,
    /// Time to connect to an upstream.
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream to start answering (LLM responses can take
    /// minutes when not streamed).
    pub upstream_response_timeout: Duration,
    /// Largest upstream error body read for scrubbing; longer ones are cut.
    pub max_upstream_error_bytes: usize,
    /// Output tokens a budget reserves for a request that sets no cap of
    /// its own (`max_tokens` and the like).
    pub reserve_output_tokens: u64,
    /// Wait before the second attempt to deliver an alert; doubled for each
    /// attempt after (five in all).
    pub alert_retry_base: Duration,
    /// Rogue-client detection thresholds.
    pub anomaly: keyforge_control::AnomalyConfig,
    /// Rotation policy: provider keys older than this are overdue.
    pub rotation_max_age: Duration,
    /// `rotate finish` retires the previous key only when it served no
    /// request in this window (15 minutes by default; a request may name
    /// its own, `FinishRequest::quiet_minutes`).
    pub rotation_quiet_window: Duration,
    /// Workload identity: trusted OIDC issuers and roles.
    pub oidc: oidc::OidcConfig,
    /// `[admin.oidc]`: humans log in to the admin API with OIDC. `None`:
    /// not configured, the login endpoint refuses.
    pub admin_oidc: Option<admin_oidc::AdminOidcConfig>,
    /// How spend is bounded and billed where a response or request does
    /// not say it all.
    pub spend: SpendConfig,
    /// How long raw ledger rows are kept.
    pub ledger: LedgerConfig,
    /// `/metrics` labels requests, tokens and cost with the key id too
    /// (`[metrics] key_labels`): one series per key, so off by default.
    pub metrics_key_labels: bool,
    /// `[redis]` / `--redis`: admission counters shared with the other
    /// instances of a cluster. `None`: this instance counts alone, in
    /// memory (the embedded default).
    pub redis: Option<RedisConfig>,
    /// How `keyforge serve` was started, for `doctor`'s checks of what a
    /// new operator gets wrong. Default: nothing known, those checks skip.
    pub deployment: Deployment,
    /// Cluster mode (a shared PostgreSQL store): how often the gateway
    /// reads the store's change number to catch a change whose notice it
    /// missed (`[store] change_check_interval`, 5 s by default). Notices
    /// themselves arrive within milliseconds; this is the backstop for a
    /// listening connection that died without saying so.
    pub change_check_interval: Duration,
}

/// What the process that started the gateway knows about its setting:
/// facts `doctor` checks (`crate::admin::doctor`), read at start, never on
/// the request path.
#[derive(Debug, Clone, Default)]
pub struct Deployment {
    /// The master key's file, when it came from one (`None`: from the
    /// environment, or not known).
    pub master_key_file: Option<std::path::PathBuf>,
    /// The main listener's address as configured (`None`: not known).
    pub listen: Option<std::net::SocketAddr>,
    /// Whether the main listener serves TLS.
    pub tls: bool,
    /// The data directory, where `keyforge backup` records its last run
    /// (`crate::admin::backup::LAST_BACKUP_FILE`); `None`: not known.
    pub data_dir: Option<std::path::PathBuf>,
    /// Whether the store is the embedded SQLite file, which `keyforge
    /// backup` copies (PostgreSQL is backed up with its own tools).
    pub embedded_store: bool,
}

/// Cluster mode's shared admission counters (see `crate::cluster`).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; never logged or printed.
    pub url: secrecy::SecretString,
    /// What a request does while Redis cannot be reached; `None`: keys
    /// with a budget fail closed, keys without one count locally.
    pub on_unavailable: Option<OnUnavailable>,
    /// How many instances share the limits: while Redis is unreachable a
    /// `local` instance enforces `1 / instances` of each limit.
    pub instances: u32,
    /// Lifetime of a reservation or place in flight never settled (an
    /// instance that crashed).
    pub lease: Duration,
    /// Put before every Redis key.
    pub prefix: String,
}

/// `[redis] on_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnUnavailable {
    /// 503 `admission_unavailable`: never serve unmetered.
    FailClosed,
    /// Count in memory, at this instance's share of each limit.
    Local,
}

impl GatewayConfig {
    /// The share of each limit the in-memory counters enforce: `1 /
    /// instances` in cluster mode, the whole limit otherwise.
    pub(crate) fn cluster_share(&self) -> u32 {
        self.redis
            .as_ref()
            .map_or(1, |redis| redis.instances.max(1))
    }
}

/// Ledger retention. Rollups (what usage, budgets, rotation and status
/// read) are kept for good: per minute while younger than `retention`,
/// merged per hour after.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Raw rows (one per request) older than this are pruned.
    pub retention: Duration,
    /// How often the retention task runs (and once at start).
    pub prune_interval: Duration,
    /// Records (and audit entries) the writer's queue holds; past as many
    /// again waiting for room, keys with budgets are refused with 503
    /// `ledger_backlog`.
    pub queue_capacity: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(30 * 86_400),
            prune_interval: Duration::from_secs(3_600),
            queue_capacity: crate::ledger::QUEUE,
        }
    }
}

/// Spend control where the request or the response leaves the cost open.
#[derive(Debug, Clone)]
pub struct SpendConfig {
    /// Charged against budgets, and recorded with `priced_by = unmetered`,
    /// for a successful generating request (a POST) whose response carried
    /// nothing the price table can price: no token usage, no priced unit.
    /// Reserved up front for every POST too, so a budget always binds.
    pub unmetered_request_cost: keyforge_types::NanoUsd,
    /// How long the gateway keeps reading an upstream response after its
    /// client went away before the response's headers arrived, to bill what
    /// the provider reports (the provider runs the request either way).
    pub cancelled_drain_timeout: Duration,
    /// What a key with a budget may do when the request's input is not in
    /// the request (stored conversation state, files by id).
    pub unknown_input: UnknownInput,
}

/// The operator's choice for requests whose input the gateway cannot see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownInput {
    /// Reserve this many input tokens; `None`: the model's context window
    /// from the limits table (a true upper bound).
    Bound(Option<u64>),
    /// Refuse such requests for keys that have a budget (400
    /// `unknown_input`), naming the field.
    Refuse,
}

impl Default for SpendConfig {
    fn default() -> Self {
        Self {
            // Five cents: above what one image, one minute of audio or one
            // file operation costs at the providers' list prices, so an
            // unpriced endpoint is never cheaper to abuse than a priced one.
            unmetered_request_cost: keyforge_types::NanoUsd(50_000_000),
            cancelled_drain_timeout: Duration::from_secs(120),
            unknown_input: UnknownInput::Bound(None),
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 768,
            max_connections_per_client: 64,
            write_stall_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(10),
            trusted_proxies: crate::forwarded::TrustedProxies::default(),
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_response_timeout: Duration::from_secs(600),
            max_upstream_error_bytes: 1024 * 1024,
            reserve_output_tokens: 4096,
            alert_retry_base: Duration::from_secs(1),
            anomaly: keyforge_control::AnomalyConfig::default(),
            rotation_max_age: Duration::from_secs(90 * 86_400),
            rotation_quiet_window: Duration::from_secs(15 * 60),
            oidc: oidc::OidcConfig::default(),
            admin_oidc: None,
            spend: SpendConfig::default(),
            ledger: LedgerConfig::default(),
            metrics_key_labels: false,
            redis: None,
            deployment: Deployment::default(),
            change_check_interval: Duration::from_secs(5),
        }
    }
}
