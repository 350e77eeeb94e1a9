//! Limits and timeouts of the gateway, already validated by the binary.

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
    /// Workload identity: trusted OIDC issuers and roles.
    pub oidc: crate::oidc::config::OidcConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 32 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_connections: 768,
            max_connections_per_client: 64,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_response_timeout: Duration::from_secs(600),
            max_upstream_error_bytes: 1024 * 1024,
            reserve_output_tokens: 4096,
            alert_retry_base: Duration::from_secs(1),
            anomaly: keyforge_control::AnomalyConfig::default(),
            rotation_max_age: Duration::from_secs(90 * 86_400),
            oidc: crate::oidc::config::OidcConfig::default(),
        }
    }
}
