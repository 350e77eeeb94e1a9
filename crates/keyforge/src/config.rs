//! Configuration, in two stages: [`RawConfig`] is what the TOML file says;
//! [`ServeConfig`] is the validated result after environment overrides and
//! flags (flags win over the environment, which wins over the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use keyforge_gateway::{AnomalyConfig, GatewayConfig};
use keyforge_gateway::{LedgerConfig, SpendConfig, UnknownInput};
use keyforge_providers::{
    LimitTable, ModelLimits, PriceTable, RawLimit, RawPrice, TokenPrices, parse_usd_per_million,
};
use keyforge_types::Ttl;
use serde::Deserialize;

use crate::cli::ServeArgs;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    pricing: RawPricing,
    #[serde(default)]
    budgets: RawBudgets,
    #[serde(default)]
    anomaly: RawAnomaly,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    redis: RawRedis,
    /// Workload identity: `[[oidc.issuer]]` and `[[oidc.role]]`.
    #[serde(default)]
    oidc: keyforge_gateway::oidc::config::RawOidc,
    /// `[admin.oidc]`: humans log in to the admin API with OIDC.
    #[serde(default)]
    admin: keyforge_gateway::admin_oidc::RawAdmin,
    /// Price entries that extend or override the shipped table.
    #[serde(default)]
    price: Vec<RawPrice>,
    /// Model limits (max output, context window) that extend or override
    /// the shipped table.
    #[serde(default)]
    limit: Vec<RawLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPricing {
    /// USD per million tokens for models the table does not know.
    fallback_input: Option<String>,
    fallback_output: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudgets {
    /// Output tokens reserved for a request that sets no max tokens, for
    /// a model the limits table does not know.
    reserve_output_tokens: Option<u64>,
    /// Charged for a success that reports nothing the price table can
    /// price (`"0.05usd"`).
    unmetered_request_cost: Option<String>,
    /// How long a response is still read after its client left (`2m`).
    cancelled_drain_timeout: Option<String>,
    /// `"bound"` (reserve the model's context window, or
    /// `unknown_input_tokens`) or `"refuse"` (for keys with a budget).
    unknown_input: Option<String>,
    unknown_input_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotation {
    /// Provider keys older than this are overdue (`90d`).
    max_age: Option<String>,
    /// `rotate finish` waits for this long without traffic on the
    /// previous key (`15m`; 1m to 7d).
    quiet_window: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    /// Raw ledger rows older than this are pruned (`30d`); rollups stay.
    retention: Option<String>,
}

/// Rogue-client detection (see `keyforge_control::anomaly`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnomaly {
    spike_factor: Option<f64>,
    spike_min_requests: Option<u64>,
    spike_min_tokens: Option<u64>,
    learning_minutes: Option<u32>,
    new_address_after: Option<String>,
    auth_failure_burst: Option<u32>,
}

/// `[server]`: TLS and the proxies in front of the gateway.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// PEM certificate chain (relative paths: to the config file).
    tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    tls_key: Option<PathBuf>,
    /// Networks (`10.0.0.0/8`) or addresses of proxies whose forwarding
    /// header names the client.
    #[serde(default)]
    trusted_proxies: Vec<String>,
    /// `"x-forwarded-for"` (default) or `"forwarded"` (RFC 7239).
    client_address_header: Option<String>,
}

/// `[store]`: where the state lives. Unset: the embedded SQLite file in
/// the data directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    /// A `postgres://` URL: the cluster store, shared by every instance.
    database: Option<String>,
    /// How often each instance checks the shared store for changes whose
    /// notice it missed (`"5s"` by default; 1 s to 1 h).
    change_check_interval: Option<String>,
}

/// `[redis]`: cluster mode's shared admission counters.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    /// `redis://[:password@]host:port[/db]`.
    url: Option<String>,
    /// `"fail_closed"` or `"local"`; unset: keys with a budget fail
    /// closed, keys without one count locally.
    on_unavailable: Option<String>,
    /// Instances sharing the limits (what `local` divides each limit by).
    instances: Option<u32>,
    /// Lifetime of an unsettled reservation or place in flight (`5m`).
    lease: Option<String>,
    /// Put before every Redis key (`keyforge:`).
    prefix: Option<String>,
}

impl std::fmt::Debug for RawRedis {
    /// The URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRedis")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("on_unavailable", &self.on_unavailable)
            .field("instances", &self.instances)
            .field("lease", &self.lease)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Whether a Redis URL carries credentials (`redis://user:pass@host`).
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.contains('@')
}

fn redis_config(
    raw: RawRedis,
    flag: Option<&str>,
    env: Option<&str>,
) -> anyhow::Result<Option<keyforge_gateway::RedisConfig>> {
    if flag.is_some_and(has_credentials) {
        bail!(
            "--redis carries a password, and the command line is visible to every user of this machine: pass the URL in KEYFORGE_REDIS_URL or `[redis] url` instead"
        );
    }
    let (url, source) = match (flag, env, raw.url) {
        (Some(url), _, _) => (url.to_owned(), "--redis"),
        (None, Some(url), _) => (url.to_owned(), "KEYFORGE_REDIS_URL"),
        (None, None, Some(url)) => (url, "config `redis.url`"),
        (None, None, None) => {
            if raw.on_unavailable.is_some() || raw.instances.is_some() || raw.lease.is_some() {
                bail!(
                    "config `[redis]` sets options but no `url`: set `[redis] url`, KEYFORGE_REDIS_URL or --redis"
                );
            }
            return Ok(None);
        }
    };
    // The URL itself is never repeated in an error: it may hold a password.
    if !url.starts_with("redis://") {
        bail!(
            "{source} must be a redis:// URL (redis://[:password@]host:port[/db]); rediss:// (TLS) is not supported"
        );
    }
    let on_unavailable = match raw.on_unavailable.as_deref() {
        None => None,
        Some("fail_closed") => Some(keyforge_gateway::OnUnavailable::FailClosed),
        Some("local") => Some(keyforge_gateway::OnUnavailable::Local),
        Some(other) => bail!(
            "config `redis.on_unavailable = \"{other}\"` is not one of \"fail_closed\", \"local\""
        ),
    };
    let instances = raw.instances.unwrap_or(1);
    if instances == 0 {
        bail!("config `redis.instances` must be at least 1");
    }
    let lease = match raw.lease {
        // Five minutes: longer than most requests, short enough that a
        // crashed instance's reservations free their budget soon.
        None => Duration::from_secs(300),
        Some(text) => Ttl::parse(&text)
            .map(|ttl| ttl.as_duration())
            .context("config `redis.lease`")?,
    };
    Ok(Some(keyforge_gateway::RedisConfig {
        url: secrecy::SecretString::from(url),
        on_unavailable,
        instances,
        lease,
        prefix: raw.prefix.unwrap_or_else(|| "keyforge:".to_owned()),
    }))
}

/// `[metrics]`: what `/metrics` labels and where it is served besides the
/// main listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// Label requests, tokens and cost by key id (one series per key).
    #[serde(default)]
    key_labels: bool,
    /// A listener of its own for `/metrics`, without a token.
    listen: Option<String>,
    /// Serve that listener over TLS too, with `[server]`'s certificate.
    #[serde(default)]
    tls: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_body_bytes: Option<usize>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    upstream_connect_timeout: Option<String>,
    upstream_response_timeout: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    write_stall_timeout: Option<String>,
    tls_handshake_timeout: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ServeConfig {
    pub(crate) listen: SocketAddr,
    /// `--metrics-listen` or `[metrics] listen`: `/metrics` without a token.
    pub(crate) metrics_listen: Option<SocketAddr>,
    pub(crate) data_dir: PathBuf,
    /// `--database`, `KEYFORGE_DATABASE_URL` or `[store] database`: a
    /// PostgreSQL URL (`None`: the SQLite file in the data directory).
    pub(crate) database: Option<String>,
    /// `--tls-cert`/`--tls-key` or `[server]`: serve HTTPS.
    pub(crate) tls: Option<keyforge_gateway::TlsFiles>,
    /// `[metrics] tls`: the metrics listener serves HTTPS too.
    pub(crate) metrics_tls: bool,
    pub(crate) gateway: GatewayConfig,
    pub(crate) prices: PriceTable,
    pub(crate) limits: LimitTable,
}

/// Values read from the environment, passed in so tests need not mutate it.
#[derive(Debug, Default)]
pub(crate) struct EnvOverrides {
    pub(crate) config: Option<PathBuf>,
    pub(crate) listen: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    /// `KEYFORGE_DATABASE_URL`.
    pub(crate) database: Option<String>,
    /// `KEYFORGE_REDIS_URL`.
    pub(crate) redis_url: Option<String>,
}

/// The environment variable naming the PostgreSQL database.
pub(crate) const DATABASE_URL_ENV: &str = "KEYFORGE_DATABASE_URL";

impl EnvOverrides {
    pub(crate) fn from_process() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        Self {
            config: var("KEYFORGE_CONFIG").map(PathBuf::from),
            listen: var("KEYFORGE_LISTEN").and_then(|value| value.into_string().ok()),
            data_dir: var("KEYFORGE_DATA_DIR").map(PathBuf::from),
            database: var(DATABASE_URL_ENV).and_then(|value| value.into_string().ok()),
            redis_url: var("KEYFORGE_REDIS_URL").and_then(|value| value.into_string().ok()),
        }
    }
}

/// The platform's data directory for KeyForge (`~/.local/share/keyforge` on
/// Linux).
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("keyforge")).context(
        "cannot determine a data directory for this user; pass --data-dir or set KEYFORGE_DATA_DIR",
    )
}

pub(crate) fn resolve(args: &ServeArgs, env: &EnvOverrides) -> anyhow::Result<ServeConfig> {
    let config_path = args.config.as_ref().or(env.config.as_ref());
    let raw = match config_path {
        Some(path) => load_file(path)?,
        None => RawConfig::default(),
    };
    // Files named in the configuration are relative to it.
    let config_dir = config_path
        .and_then(|path| path.parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let listen = match (args.listen, &env.listen, &raw.listen) {
        (Some(addr), _, _) => addr,
        (None, Some(text), _) => text.parse().with_context(|| {
            format!("KEYFORGE_LISTEN `{text}` is not an address like 127.0.0.1:8787")
        })?,
        (None, None, Some(text)) => text.parse().with_context(|| {
            format!("config `listen = \"{text}\"` is not an address like 127.0.0.1:8787")
        })?,
        (None, None, None) => DEFAULT_LISTEN.parse()?,
    };
    let metrics_listen = match (args.metrics_listen, &raw.metrics.listen) {
        (Some(addr), _) => Some(addr),
        (None, Some(text)) => Some(text.parse().with_context(|| {
            format!("config `metrics.listen = \"{text}\"` is not an address like 127.0.0.1:9187")
        })?),
        (None, None) => None,
    };
    let tls = match (
        &args.tls_cert,
        &args.tls_key,
        &raw.server.tls_cert,
        &raw.server.tls_key,
    ) {
        (Some(cert), Some(key), _, _) => Some(keyforge_gateway::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, Some(cert), Some(key)) => Some(keyforge_gateway::TlsFiles {
            cert: config_dir.join(cert),
            key: config_dir.join(key),
        }),
        (None, None, None, None) => None,
        (None, None, _, _) => {
            bail!("config `[server]` needs both `tls_cert` and `tls_key`, or neither")
        }
        // clap makes each flag require the other.
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if raw.metrics.tls && tls.is_none() {
        bail!(
            "config `metrics.tls = true` needs a certificate: pass --tls-cert and --tls-key or set `[server] tls_cert` and `tls_key`"
        );
    }
    if raw.metrics.tls && metrics_listen.is_none() {
        bail!(
            "config `metrics.tls = true` applies to the metrics listener: set `[metrics] listen` or pass --metrics-listen"
        );
    }
    let trusted_proxies = trusted_proxies(&raw.server)?;
    let database = database(args.database.as_deref(), env, raw.store.database.as_deref())?;
    let data_dir = match args
        .data_dir
        .clone()
        .or_else(|| env.data_dir.clone())
        .or(raw.data_dir)
    {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let defaults = GatewayConfig::default();
    let limits = raw.limits;
    let duration =
        |value: Option<String>, name: &str, default: Duration| -> anyhow::Result<Duration> {
            match value {
                None => Ok(default),
                Some(text) => Ttl::parse(&text)
                    .map(|ttl| ttl.as_duration())
                    .with_context(|| format!("config `limits.{name}`")),
            }
        };
    let max_request_body_bytes = limits
        .max_request_body_bytes
        .unwrap_or(defaults.max_request_body_bytes);
    if max_request_body_bytes == 0 {
        bail!("config `limits.max_request_body_bytes` must be greater than zero");
    }
    let max_connections = limits.max_connections.unwrap_or(defaults.max_connections);
    let max_connections_per_client = limits
        .max_connections_per_client
        .unwrap_or(defaults.max_connections_per_client);
    if max_connections == 0 || max_connections_per_client == 0 {
        bail!(
            "config `limits.max_connections` and `limits.max_connections_per_client` must be greater than zero"
        );
    }
    if max_connections_per_client > max_connections {
        bail!(
            "config `limits.max_connections_per_client` ({max_connections_per_client}) is more than `limits.max_connections` ({max_connections})"
        );
    }
    let gateway = GatewayConfig {
        max_request_body_bytes,
        max_connections,
        max_connections_per_client,
        tls_handshake_timeout: duration(
            limits.tls_handshake_timeout,
            "tls_handshake_timeout",
            defaults.tls_handshake_timeout,
        )?,
        trusted_proxies,
        write_stall_timeout: duration(
            limits.write_stall_timeout,
            "write_stall_timeout",
            defaults.write_stall_timeout,
        )?,
        header_read_timeout: duration(
            limits.header_read_timeout,
            "header_read_timeout",
            defaults.header_read_timeout,
        )?,
        body_read_timeout: duration(
            limits.body_read_timeout,
            "body_read_timeout",
            defaults.body_read_timeout,
        )?,
        upstream_connect_timeout: duration(
            limits.upstream_connect_timeout,
            "upstream_connect_timeout",
            defaults.upstream_connect_timeout,
        )?,
        upstream_response_timeout: duration(
            limits.upstream_response_timeout,
            "upstream_response_timeout",
            defaults.upstream_response_timeout,
        )?,
        reserve_output_tokens: raw
            .budgets
            .reserve_output_tokens
            .unwrap_or(defaults.reserve_output_tokens),
        spend: spend_config(&raw.budgets, defaults.spend.clone())?,
        anomaly: anomaly_config(raw.anomaly, defaults.anomaly)?,
        rotation_max_age: match raw.rotation.max_age {
            None => defaults.rotation_max_age,
            Some(text) => Ttl::parse(&text)
                .map(|ttl| ttl.as_duration())
                .context("config `rotation.max_age`")?,
        },
        rotation_quiet_window: match raw.rotation.quiet_window {
            None => defaults.rotation_quiet_window,
            Some(text) => {
                let window = Ttl::parse(&text)
                    .map(|ttl| ttl.as_duration())
                    .context("config `rotation.quiet_window`")?;
                anyhow::ensure!(
                    (60..=7 * 86_400).contains(&window.as_secs()),
                    "config `rotation.quiet_window`: 1m to 7d, not {text}"
                );
                window
            }
        },
        ledger: ledger_config(raw.ledger, defaults.ledger.clone())?,
        metrics_key_labels: raw.metrics.key_labels,
        redis: redis_config(raw.redis, args.redis.as_deref(), env.redis_url.as_deref())?,
        change_check_interval: match raw.store.change_check_interval {
            None => defaults.change_check_interval,
            Some(text) => {
                let every = Ttl::parse(&text)
                    .map(|ttl| ttl.as_duration())
                    .context("config `store.change_check_interval`")?;
                anyhow::ensure!(
                    (1..=3_600).contains(&every.as_secs()),
                    "config `store.change_check_interval`: 1s to 1h, not {text}"
                );
                every
            }
        },
        oidc: raw
            .oidc
            .validate(&config_dir)
            .map_err(anyhow::Error::msg)
            .context("config `[oidc]`")?,
        admin_oidc: raw
            .admin
            .oidc
            .map(keyforge_gateway::admin_oidc::RawAdminOidc::validate)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("config `[admin.oidc]`")?,
        ..defaults
    };
    let shipped = PriceTable::shipped().context("the shipped price table is invalid")?;
    let fallback = shipped.fallback;
    let price = |value: Option<String>, name: &str, default: u64| -> anyhow::Result<u64> {
        value.map_or(Ok(default), |text| {
            parse_usd_per_million(&text)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("config `pricing.{name}`"))
        })
    };
    let fallback_input = price(raw.pricing.fallback_input, "fallback_input", fallback.input)?;
    let fallback_output = price(
        raw.pricing.fallback_output,
        "fallback_output",
        fallback.output,
    )?;
    let prices = shipped
        .with_overrides(&raw.price)
        .context("config `[[price]]`")?
        .with_fallback(TokenPrices {
            input: fallback_input,
            cached_input: fallback_input,
            cache_write: fallback_input,
            // Anthropic's one-hour writes cost twice the input price.
            cache_write_1h: fallback_input.saturating_mul(2),
            output: fallback_output,
        });
    let limits = LimitTable::shipped()
        .context("the shipped limits table is invalid")?
        .with_overrides(&raw.limit)
        .context("config `[[limit]]`")?;
    let limits = match raw.budgets.reserve_output_tokens {
        // The operator's figure for models the table does not know.
        Some(tokens) => {
            let fallback = limits.fallback;
            limits.with_fallback(ModelLimits {
                max_output_tokens: tokens,
                ..fallback
            })
        }
        None => limits,
    };
    Ok(ServeConfig {
        listen,
        metrics_listen,
        data_dir,
        database,
        metrics_tls: raw.metrics.tls,
        tls,
        gateway,
        prices,
        limits,
    })
}

/// The PostgreSQL URL from `--database`, the environment or `[store]`
/// (first set wins), checked. A password on the command line is refused:
/// every user of the machine can read argv (`ps`).
fn database(
    flag: Option<&str>,
    env: &EnvOverrides,
    file: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let (url, origin) = match (flag, env.database.as_deref(), file) {
        (Some(url), _, _) => (url, "--database"),
        (None, Some(url), _) => (url, DATABASE_URL_ENV),
        (None, None, Some(url)) => (url, "config `[store] database`"),
        (None, None, None) => return Ok(None),
    };
    if !keyforge_store::is_postgres_url(url) {
        bail!(
            "{origin} takes a postgres:// URL (postgres://user@host:5432/database), not `{}`; leave it unset for the embedded SQLite store",
            keyforge_store::redact_url(url)
        );
    }
    if origin == "--database" && keyforge_store::url_has_password(url) {
        bail!(
            "--database {} carries a password, and the command line is visible to every user (ps); set {DATABASE_URL_ENV} or `[store] database` in a 0600 config file instead, or keep the password in PGPASSFILE (~/.pgpass) or PGPASSWORD",
            keyforge_store::redact_url(url)
        );
    }
    Ok(Some(url.to_owned()))
}

/// `[server] trusted_proxies` and `client_address_header`, checked: each
/// entry a network in CIDR notation or a single address.
fn trusted_proxies(raw: &RawServer) -> anyhow::Result<keyforge_gateway::TrustedProxies> {
    let networks = raw
        .trusted_proxies
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|network| network.trunc())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "config `server.trusted_proxies`: `{text}` is not a network like 10.0.0.0/8 or fd00::/8, nor an address"
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let header = match raw.client_address_header.as_deref() {
        None | Some("x-forwarded-for" | "X-Forwarded-For") => {
            keyforge_gateway::ClientAddressHeader::XForwardedFor
        }
        Some("forwarded" | "Forwarded") => keyforge_gateway::ClientAddressHeader::Forwarded,
        Some(other) => bail!(
            "config `server.client_address_header` is `{other}`: expected \"x-forwarded-for\" or \"forwarded\""
        ),
    };
    if raw.client_address_header.is_some() && networks.is_empty() {
        bail!(
            "config `server.client_address_header` is read only from trusted proxies: set `server.trusted_proxies` too"
        );
    }
    Ok(keyforge_gateway::TrustedProxies { networks, header })
}

/// The shortest retention accepted: rate limiters are rebuilt at start
/// from the last minute of raw rows, and an hour keeps `audit verify`'s
/// view of recent requests whole.
const MIN_LEDGER_RETENTION: Duration = Duration::from_secs(3_600);

fn ledger_config(raw: RawLedger, defaults: LedgerConfig) -> anyhow::Result<LedgerConfig> {
    let retention = match raw.retention {
        None => defaults.retention,
        Some(text) => Ttl::parse(&text)
            .map(|ttl| ttl.as_duration())
            .context("config `ledger.retention`")?,
    };
    if retention < MIN_LEDGER_RETENTION {
        bail!("config `ledger.retention` must be at least 1h");
    }
    Ok(LedgerConfig {
        retention,
        ..defaults
    })
}

fn spend_config(raw: &RawBudgets, defaults: SpendConfig) -> anyhow::Result<SpendConfig> {
    let unmetered_request_cost = match &raw.unmetered_request_cost {
        None => defaults.unmetered_request_cost,
        Some(text) => keyforge_types::BudgetLimit::parse(&format!("{text}/day"))
            .map(|limit| limit.amount)
            .map_err(|error| anyhow::anyhow!("{error}"))
            .context("config `budgets.unmetered_request_cost` (an amount like \"0.05usd\")")?,
    };
    let cancelled_drain_timeout = match &raw.cancelled_drain_timeout {
        None => defaults.cancelled_drain_timeout,
        Some(text) => Ttl::parse(text)
            .map(|ttl| ttl.as_duration())
            .context("config `budgets.cancelled_drain_timeout`")?,
    };
    let unknown_input = match (raw.unknown_input.as_deref(), raw.unknown_input_tokens) {
        (None | Some("bound"), tokens) => UnknownInput::Bound(tokens),
        (Some("refuse"), None) => UnknownInput::Refuse,
        (Some("refuse"), Some(_)) => bail!(
            "config `budgets.unknown_input_tokens` is only used with `unknown_input = \"bound\"`"
        ),
        (Some(other), _) => {
            bail!("config `budgets.unknown_input` is `{other}`: expected \"bound\" or \"refuse\"")
        }
    };
    Ok(SpendConfig {
        unmetered_request_cost,
        cancelled_drain_timeout,
        unknown_input,
    })
}

fn anomaly_config(raw: RawAnomaly, defaults: AnomalyConfig) -> anyhow::Result<AnomalyConfig> {
    let spike_factor = raw.spike_factor.unwrap_or(defaults.spike_factor);
    if !(spike_factor.is_finite() && spike_factor > 1.0) {
        bail!("config `anomaly.spike_factor` must be a number greater than 1");
    }
    let auth_failure_burst = raw
        .auth_failure_burst
        .unwrap_or(defaults.auth_failure_burst);
    if auth_failure_burst == 0 {
        bail!("config `anomaly.auth_failure_burst` must be at least 1");
    }
    Ok(AnomalyConfig {
        spike_factor,
        spike_min_requests: raw
            .spike_min_requests
            .unwrap_or(defaults.spike_min_requests),
        spike_min_tokens: raw.spike_min_tokens.unwrap_or(defaults.spike_min_tokens),
        learning_minutes: raw.learning_minutes.unwrap_or(defaults.learning_minutes),
        new_address_after: match raw.new_address_after {
            None => defaults.new_address_after,
            Some(text) => Ttl::parse(&text)
                .map(|ttl| ttl.as_duration())
                .context("config `anomaly.new_address_after`")?,
        },
        auth_failure_burst,
    })
}

/// Where the PostgreSQL store is named for commands that act on the
/// embedded store only (`backup`, `restore`): `KEYFORGE_DATABASE_URL`, or
/// `[store] database` of the file `KEYFORGE_CONFIG` names, as `serve`
/// reads them. Returns the name of the setting, never the URL (it may
/// hold a password). A config file that cannot be read is an error, not
/// "no PostgreSQL": restoring SQLite under a cluster config must not pass
/// by accident.
pub(crate) fn postgres_setting(env: &EnvOverrides) -> anyhow::Result<Option<String>> {
    if env.database.is_some() {
        return Ok(Some(DATABASE_URL_ENV.to_owned()));
    }
    if let Some(path) = &env.config {
        let raw = load_file(path)?;
        if raw.store.database.is_some_and(|url| !url.is_empty()) {
            return Ok(Some(format!(
                "[store] database in {} (KEYFORGE_CONFIG)",
                path.display()
            )));
        }
    }
    Ok(None)
}

fn load_file(path: &Path) -> anyhow::Result<RawConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs {
            listen: None,
            metrics_listen: None,
            data_dir: None,
            config: None,
            database: None,
            tls_cert: None,
            tls_key: None,
            redis: None,
        }
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyforge.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1111\"\ndata_dir = \"/from/file\"\n[limits]\nmax_request_body_bytes = 1024\nheader_read_timeout = \"5s\"\nmax_connections = 100\nmax_connections_per_client = 10\n").unwrap();
        let env = EnvOverrides {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:2222".into()),
            data_dir: None,
            database: None,
            redis_url: None,
        };
        let config = resolve(&args(), &env).unwrap();
        assert_eq!(config.listen.port(), 2222);
        assert_eq!(config.data_dir, PathBuf::from("/from/file"));
        assert_eq!(config.gateway.max_request_body_bytes, 1024);
        assert_eq!(config.gateway.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.gateway.max_connections, 100);
        assert_eq!(config.gateway.max_connections_per_client, 10);

        let flags = ServeArgs {
            listen: Some("127.0.0.1:3333".parse().unwrap()),
            metrics_listen: None,
            data_dir: Some("/from/flag".into()),
            config: None,
            database: None,
            tls_cert: None,
            tls_key: None,
            redis: None,
        };
        let config = resolve(&flags, &env).unwrap();
        assert_eq!(config.listen.port(), 3333);
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
    }

    #[test]
    fn oidc_files_are_found_beside_the_config_and_open_roles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster-jwks.json"),
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}"#,
        )
        .unwrap();
        let file = dir.path().join("keyforge.toml");
        let issuer = "[[oidc.issuer]]\nname = \"cluster\"\npreset = \"kubernetes\"\nurl = \"https://kubernetes.default.svc\"\naudience = \"keyforge\"\njwks_file = \"cluster-jwks.json\"\n";
        std::fs::write(
            &file,
            format!("{issuer}[[oidc.role]]\nname = \"batch\"\nissuer = \"cluster\"\nenv = \"prod\"\nbound_claims = {{ sub = \"system:serviceaccount:jobs:*\" }}\n"),
        )
        .unwrap();
        let env = EnvOverrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let config = resolve(&args(), &env).unwrap();
        assert_eq!(config.gateway.oidc.roles[0].name, "batch");

        std::fs::write(
            &file,
            format!(
                "{issuer}[[oidc.role]]\nname = \"open\"\nissuer = \"cluster\"\nenv = \"prod\"\n"
            ),
        )
        .unwrap();
        let error = format!("{:#}", resolve(&args(), &env).unwrap_err());
        assert!(error.contains("binds no claim"), "{error}");
    }

    #[test]
    fn no_configuration_at_all_gives_the_embedded_default() {
        let config = resolve(&args(), &EnvOverrides::default()).unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert!(config.data_dir.ends_with("keyforge"));
        // Well below the usual 1024 file descriptors.
        assert_eq!(config.gateway.max_connections, 768);
        assert_eq!(config.gateway.max_connections_per_client, 64);
    }

    #[test]
    fn prices_can_be_extended_and_the_fallback_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyforge.toml");
        std::fs::write(
            &file,
            "[pricing]\nfallback_input = \"1\"\nfallback_output = \"2\"\n\n[[price]]\napi = \"openai\"\nmodel = \"my-finetune\"\nsince = \"2025-01-01\"\ninput = \"3\"\noutput = \"6\"\n",
        )
        .unwrap();
        let env = EnvOverrides {
            config: Some(file),
            ..Default::default()
        };
        let config = resolve(&args(), &env).unwrap();
        let day = time::macros::date!(2026 - 01 - 01);
        assert_eq!(
            config
                .prices
                .lookup(keyforge_providers::Api::OpenAi, "my-finetune", day)
                .0
                .output,
            6_000_000
        );
        let (fallback, _) = config
            .prices
            .lookup(keyforge_providers::Api::OpenAi, "unknown", day);
        assert_eq!((fallback.input, fallback.output), (1_000_000, 2_000_000));
    }

    #[test]
    fn bad_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("lisen = \"x\"", "unknown field"),
            ("listen = \"nowhere\"", "is not an address"),
            (
                "[limits]\nbody_read_timeout = \"soon\"",
                "limits.body_read_timeout",
            ),
            ("[limits]\nmax_request_body_bytes = 0", "greater than zero"),
            ("[limits]\nmax_connections = 0", "greater than zero"),
            (
                "[limits]\nmax_connections = 10\nmax_connections_per_client = 20",
                "is more than `limits.max_connections`",
            ),
            ("[anomaly]\nspike_factor = 0.5", "anomaly.spike_factor"),
            (
                "[anomaly]\nnew_address_after = \"later\"",
                "anomaly.new_address_after",
            ),
            ("[budgets]\nreserve = 1", "unknown field"),
            ("[rotation]\nmax_age = \"ninety days\"", "rotation.max_age"),
            (
                "[rotation]\nquiet_window = \"soon\"",
                "rotation.quiet_window",
            ),
            ("[rotation]\nquiet_window = \"30s\"", "1m to 7d"),
            ("[rotation]\nquiet_window = \"8d\"", "1m to 7d"),
            ("[ledger]\nretention = \"a month\"", "ledger.retention"),
            ("[ledger]\nretention = \"10m\"", "at least 1h"),
            ("[ledger]\nkeep = \"30d\"", "unknown field"),
            (
                "[pricing]\nfallback_output = \"lots\"",
                "pricing.fallback_output",
            ),
            (
                "[[price]]\napi = \"openai\"\nmodel = \"m\"\nsince = \"2025-13-01\"\ninput = \"1\"",
                "not a date",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]",
                "`10.0.0.0/33` is not a network",
            ),
            (
                "[server]\ntrusted_proxies = [\"proxy.internal\"]",
                "`proxy.internal` is not a network",
            ),
            (
                "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\nclient_address_header = \"x-real-ip\"",
                "expected \"x-forwarded-for\" or \"forwarded\"",
            ),
            (
                "[server]\nclient_address_header = \"forwarded\"",
                "set `server.trusted_proxies` too",
            ),
            (
                "[server]\ntls_cert = \"cert.pem\"",
                "both `tls_cert` and `tls_key`",
            ),
            (
                "[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n[metrics]\ntls = true",
                "applies to the metrics listener",
            ),
            (
                "[metrics]\nlisten = \"127.0.0.1:9\"\ntls = true",
                "needs a certificate",
            ),
            (
                "[limits]\ntls_handshake_timeout = \"never\"",
                "limits.tls_handshake_timeout",
            ),
            (
                "[store]\nchange_check_interval = \"0s\"",
                "store.change_check_interval`: duration must be greater than zero",
            ),
            (
                "[store]\nchange_check_interval = \"2h\"",
                "store.change_check_interval`: 1s to 1h",
            ),
        ];
        for (text, expected) in cases {
            let file = dir.path().join("bad.toml");
            std::fs::write(&file, text).unwrap();
            let env = EnvOverrides {
                config: Some(file),
                ..Default::default()
            };
            let error = format!("{:#}", resolve(&args(), &env).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn the_database_comes_from_flag_environment_or_file_and_never_with_a_password_on_argv() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyforge.toml");
        std::fs::write(
            &file,
            "[store]\ndatabase = \"postgres://kf@file-db/keyforge\"\n",
        )
        .unwrap();
        let from_file = EnvOverrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let config = resolve(&args(), &from_file).unwrap();
        assert_eq!(
            config.database.as_deref(),
            Some("postgres://kf@file-db/keyforge")
        );
        let from_env = EnvOverrides {
            config: Some(file.clone()),
            database: Some("postgres://kf@env-db/keyforge".into()),
            ..Default::default()
        };
        let config = resolve(&args(), &from_env).unwrap();
        assert_eq!(
            config.database.as_deref(),
            Some("postgres://kf@env-db/keyforge")
        );
        let mut flagged = args();
        flagged.database = Some("postgres://kf@flag-db/keyforge".into());
        let config = resolve(&flagged, &from_env).unwrap();
        assert_eq!(
            config.database.as_deref(),
            Some("postgres://kf@flag-db/keyforge")
        );
        // No store configured: SQLite.
        assert_eq!(
            resolve(&args(), &EnvOverrides::default()).unwrap().database,
            None
        );
        // The backstop check of a shared store: 5 s unless configured.
        assert_eq!(
            config.gateway.change_check_interval,
            std::time::Duration::from_secs(5)
        );
        std::fs::write(&file, "[store]\nchange_check_interval = \"30s\"\n").unwrap();
        assert_eq!(
            resolve(&args(), &from_file)
                .unwrap()
                .gateway
                .change_check_interval,
            std::time::Duration::from_secs(30)
        );

        let password = ["hun", "ter2"].concat();
        flagged.database = Some(format!("postgres://kf:{password}@db/keyforge"));
        let error = format!(
            "{:#}",
            resolve(&flagged, &EnvOverrides::default()).unwrap_err()
        );
        assert!(error.contains("KEYFORGE_DATABASE_URL"), "{error}");
        assert!(!error.contains(&password), "{error}");
        // The same URL from the environment is fine.
        let env = EnvOverrides {
            database: Some(format!("postgres://kf:{password}@db/keyforge")),
            ..Default::default()
        };
        assert!(resolve(&args(), &env).is_ok());
        flagged.database = Some("mysql://db/keyforge".into());
        let error = format!(
            "{:#}",
            resolve(&flagged, &EnvOverrides::default()).unwrap_err()
        );
        assert!(error.contains("postgres://"), "{error}");
    }

    #[test]
    fn server_section_is_read_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyforge.toml");
        std::fs::write(&file, "[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/k.pem\"\ntrusted_proxies = [\"10.1.2.3/8\", \"::1\", \"192.0.2.7\"]\nclient_address_header = \"forwarded\"\n[limits]\ntls_handshake_timeout = \"3s\"\n").unwrap();
        let env = EnvOverrides {
            config: Some(file),
            ..Default::default()
        };
        let config = resolve(&args(), &env).unwrap();
        let tls = config.tls.unwrap();
        assert_eq!(tls.cert, dir.path().join("tls/cert.pem"));
        assert_eq!(tls.key, PathBuf::from("/etc/k.pem"));
        let proxies = &config.gateway.trusted_proxies;
        let networks: Vec<String> = proxies.networks.iter().map(ToString::to_string).collect();
        assert_eq!(networks, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        assert_eq!(
            proxies.header,
            keyforge_gateway::ClientAddressHeader::Forwarded
        );
        assert_eq!(config.gateway.tls_handshake_timeout, Duration::from_secs(3));
        // Flags beat the file.
        let flags = ServeArgs {
            tls_cert: Some("/flag/c.pem".into()),
            tls_key: Some("/flag/k.pem".into()),
            ..args()
        };
        let config = resolve(&flags, &env).unwrap();
        assert_eq!(config.tls.unwrap().cert, PathBuf::from("/flag/c.pem"));
    }

    /// `--redis` with a password is refused (argv is public), without the
    /// password in the error; the environment and the file may carry one.
    #[test]
    fn redis_urls_keep_their_password_off_argv() {
        let password = format!("pw{}", keyforge_types::random_base62(12));
        let with_password = format!("redis://:{password}@127.0.0.1:6379/0");
        let flags = ServeArgs {
            redis: Some(with_password.clone()),
            ..args()
        };
        let error = format!(
            "{:#}",
            resolve(&flags, &EnvOverrides::default()).unwrap_err()
        );
        assert!(error.contains("KEYFORGE_REDIS_URL"), "{error}");
        assert!(!error.contains(&password), "{error}");
        let env = EnvOverrides {
            redis_url: Some(with_password),
            ..Default::default()
        };
        let redis = resolve(&args(), &env).unwrap().gateway.redis.unwrap();
        assert_eq!(redis.on_unavailable, None);
        assert_eq!(redis.instances, 1);
        assert!(!format!("{redis:?}").contains(&password));
        let flags = ServeArgs {
            redis: Some("redis://127.0.0.1:6379".into()),
            ..args()
        };
        assert!(
            resolve(&flags, &EnvOverrides::default())
                .unwrap()
                .gateway
                .redis
                .is_some()
        );
        assert!(
            resolve(&args(), &EnvOverrides::default())
                .unwrap()
                .gateway
                .redis
                .is_none()
        );
    }

    #[test]
    fn redis_settings_are_checked() {
        let cases = [
            (
                "[redis]\nurl = \"redis://h:1\"\non_unavailable = \"open\"\n",
                "is not one of",
            ),
            (
                "[redis]\nurl = \"redis://h:1\"\ninstances = 0\n",
                "at least 1",
            ),
            ("[redis]\nurl = \"http://h:1\"\n", "must be a redis:// URL"),
            ("[redis]\ninstances = 3\n", "no `url`"),
        ];
        for (text, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("keyforge.toml");
            std::fs::write(&file, text).unwrap();
            let env = EnvOverrides {
                config: Some(file),
                ..Default::default()
            };
            let error = format!("{:#}", resolve(&args(), &env).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyforge.toml");
        std::fs::write(&file, "[redis]\nurl = \"redis://h:1\"\non_unavailable = \"local\"\ninstances = 3\nlease = \"2m\"\n").unwrap();
        let env = EnvOverrides {
            config: Some(file),
            ..Default::default()
        };
        let redis = resolve(&args(), &env).unwrap().gateway.redis.unwrap();
        assert_eq!(
            redis.on_unavailable,
            Some(keyforge_gateway::OnUnavailable::Local)
        );
        assert_eq!(
            (redis.instances, redis.lease),
            (3, Duration::from_secs(120))
        );
    }
}
