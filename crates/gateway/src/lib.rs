//! KeyForge's HTTP server: the drop-in proxy for the providers' APIs and the
//! admin API.
//!
//! Invariants:
//! - The request path does no database round trip and takes no lock: keys
//!   and provider credentials are read from an in-memory snapshot that admin
//!   changes replace before they answer (so revocation is immediate). On
//!   a shared PostgreSQL store, other instances' changes arrive as notices
//!   and are reloaded off the request path (`changes.rs`).
//! - Every route requires a credential except the allow-list in
//!   [`Gateway::router`] (`/healthz`, `/readyz`); `/metrics` needs the
//!   metrics token there, and none only on [`serve_metrics`]'s listener.
//! - Metrics are recorded with atomics; their labels never take a value a
//!   client chose (see `metrics.rs`).
//! - Errors reach clients in the dialect of the API they speak, rendered in
//!   one place (`error.rs`), and never contain a secret.
//! - Responses stream through as they arrive; request bodies are bounded in
//!   size and time.
//! - Every listener runs one accept loop (`serve_on`): a connection takes
//!   its slot before anything else, TLS handshakes included, and gives it
//!   back when it closes; a client's address is the TCP peer unless that
//!   peer is a trusted proxy (`forwarded.rs`).
//!
//! It never reads a certificate or key file on its own: the binary loads
//! them and asks for a reload.

pub mod admin;
mod alerts;
pub mod audit;
mod changes;
mod clock;
mod cluster;
mod config;
mod error;
mod floor;
mod forwarded;
mod health;
mod leak_reports;
mod ledger;
mod listen;
mod metrics;
pub mod oidc;
mod proxy;
mod scrub;
mod secret_fingerprints;
mod sessions;
mod snapshot;
mod state;
pub mod stored_audit;
mod tls;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use keyforge_store::{Store, StoreError};
use keyforge_types::KeyHasher;
use keyforge_vault::{MasterKey, Sealer, VaultError};
use secrecy::SecretString;
use tokio::net::TcpListener;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::admin_oidc;
pub use config::{
    Deployment, GatewayConfig, LedgerConfig, OnUnavailable, RedisConfig, SpendConfig, UnknownInput,
};
pub use error::Fault;
pub use forwarded::{ClientAddressHeader, TrustedProxies};
pub use keyforge_control::AnomalyConfig;
pub use ledger::LedgerStats;
pub use snapshot::SnapshotError;
pub use tls::{LoadedCertificate, TlsCertificates, TlsError, TlsFiles};

use state::AppState;

/// Largest request head (request line and headers) accepted; larger ones get
/// 431. SDK requests carry a few hundred bytes of headers.
const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// Concurrent requests (streams) one HTTP/2 connection may carry.
const MAX_H2_STREAMS: u32 = 128;

/// Name of the store's meta row holding the sealed virtual-key hashing key.
const HASH_KEY_META: &str = "virtual_key_hash_key";

#[derive(Debug, thiserror::Error)]
pub enum GatewayInitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot open the virtual-key hashing key: {0} (is this the master key the data directory was created with?)"
    )]
    HashKey(VaultError),
    #[error("cannot load providers and keys: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(String),
    #[error("cannot write the audit log (is the store writable?)")]
    Audit,
    #[error("cannot build the secret scrubber: {0}")]
    Scrubber(String),
    #[error("cannot set up the Redis admission counters: {0}")]
    Redis(String),
}

/// Everything a gateway is built from; the outside world is passed in.
#[derive(Debug)]
pub struct GatewayParts {
    pub config: GatewayConfig,
    pub store: Arc<dyn Store>,
    pub master_key: MasterKey,
    /// The legacy admin token (`admin.token`, `KEYFORGE_ADMIN_TOKEN`): at
    /// the first start with no named admin it becomes the owner admin
    /// `owner`; afterwards it is that admin's token until rotated.
    pub admin_token: SecretString,
    /// The legacy admin token was created by this start (a new data
    /// directory, or a restored or moved one without its `admin.token`).
    /// On a store that already has admins it then becomes a new owner
    /// admin `owner-<unix seconds>`, so a restore elsewhere cannot lock
    /// its operator out (whoever can make the server create the file holds
    /// the data directory, master key included, already).
    pub admin_token_created: bool,
    pub clock: Arc<dyn Clock>,
    /// Prices for metering (the shipped table, with the operator's overrides).
    pub prices: keyforge_providers::PriceTable,
    /// Models' output and input limits, which bound requests that set no
    /// cap (the shipped table, with the operator's overrides).
    pub limits: keyforge_providers::LimitTable,
    /// The bearer token `GET /metrics` needs on the main listener; `None`:
    /// metrics are served only by [`serve_metrics`] on a listener of their
    /// own.
    pub metrics_token: Option<SecretString>,
}

/// A gateway ready to serve.
#[derive(Debug, Clone)]
pub struct Gateway {
    state: Arc<AppState>,
}

impl Gateway {
    pub async fn new(parts: GatewayParts) -> Result<Self, GatewayInitError> {
        let sealer = Sealer::new(&parts.master_key);
        let hasher = load_or_create_hash_key(parts.store.as_ref(), &sealer).await?;
        // Rows are sealed under a master-derived key; rows from before
        // schema 8 are sealed once, now.
        let row_mac =
            keyforge_store::RowMac::new(&parts.master_key.derive(keyforge_store::RowMac::LABEL));
        let sealed = parts.store.install_row_mac(row_mac).await?;
        if sealed > 0 {
            tracing::warn!(
                rows = sealed,
                "store upgraded: existing rows sealed with MACs"
            );
        }
        // The legacy admin token becomes the owner admin on the first start
        // with no admin (said once in the log, and in `gateway.start`).
        let legacy_owner_created = admin::admins::adopt_legacy_token(
            parts.store.as_ref(),
            &hasher,
            &parts.admin_token,
            parts.admin_token_created,
            parts.clock.now(),
        )
        .await?;
        // Read before the first load (see `AppState::reload`); `None` on
        // the embedded store, which has no other instance to hear from.
        let change_seq = parts.store.change_seq().await?;
        let snapshot = snapshot::Snapshot::load(
            parts.store.as_ref(),
            &sealer,
            None,
            parts.clock.now(),
            parts.config.cluster_share(),
        )
        .await?;
        let snapshot_counts = (snapshot.providers.len(), snapshot.keys.len());
        let integrity_failures = snapshot.integrity_failures.len();
        let http = upstream::build(&parts.config).map_err(GatewayInitError::HttpClient)?;
        let head =
            parts.store.audit_head().await?.and_then(|(seq, hash)| {
                <[u8; 32]>::try_from(hash.as_slice()).ok().map(|h| (seq, h))
            });
        let checkpoint_key = parts.master_key.derive(audit::CHECKPOINT_KEY_LABEL);
        let chain =
            audit::Chain::resume(head, audit::CheckpointKey::new(checkpoint_key.as_slice()));
        let ids = audit::IdHasher::new(parts.master_key.derive(audit::ID_KEY_LABEL).as_slice());
        let ledger = ledger::LedgerWriter::spawn(
            parts.store.clone(),
            chain,
            ids,
            parts.config.ledger.queue_capacity,
        );
        let oidc = oidc::Oidc::new(&parts.config.oidc);
        let sessions = sessions::Sessions::new(parts.config.admin_oidc.as_ref());
        let key_labels = parts.config.metrics_key_labels;
        let (alerts, raised) = alerts::Alerts::new();
        snapshot.report_integrity_failures(None, &alerts);
        alerts.set_webhooks(&snapshot.webhooks);
        let cluster = match &parts.config.redis {
            Some(redis) => Some(Arc::new(
                cluster::Cluster::new(redis, parts.store.clone())
                    .map_err(GatewayInitError::Redis)?,
            )),
            None => None,
        };
        if let Some(cluster) = &cluster {
            // Spend into Redis if it has none (a first start, or Redis came
            // back empty); unreachable now is not fatal: admission follows
            // `[redis] on_unavailable` and the first reservation rebuilds.
            match cluster.counters.rebuild(parts.clock.now()).await {
                Ok(rebuilt) => tracing::info!(rebuilt, "redis admission counters ready"),
                Err(error) => {
                    tracing::warn!(error = %error, "redis unreachable at start: admission follows [redis] on_unavailable until it is back")
                }
            }
        }
        let changes = Arc::new(changes::Changes::new());
        if let Some(seq) = change_seq {
            changes.applied(seq);
        }
        let (changes_stop, changes_stopped) = tokio::sync::watch::channel(());
        let state = AppState {
            changes,
            changes_stop,
            cluster,
            config: parts.config,
            store: parts.store,
            sealer,
            hasher,
            secret_fingerprints: secret_fingerprints::SecretFingerprints::new(
                parts
                    .master_key
                    .derive(secret_fingerprints::SECRET_FINGERPRINT_LABEL)
                    .as_slice(),
            ),
            snapshot: ArcSwap::from_pointee(snapshot),
            clock: parts.clock,
            http,
            scrubber: scrub::Scrubber::new()
                .map_err(|error| GatewayInitError::Scrubber(error.to_string()))?,
            admin_write: tokio::sync::Mutex::new(()),
            prices: Arc::new(parts.prices),
            limits: Arc::new(parts.limits),
            ledger,
            alerts,
            audit_key: audit::CheckpointKey::new(checkpoint_key.as_slice()),
            audit_failing: std::sync::atomic::AtomicBool::new(false),
            oidc,
            sessions,
            leak_reports: leak_reports::LeakReportLimiter::new(
                leak_reports::LEAK_REPORTS_PER_MINUTE,
            ),
            metrics: Arc::new(metrics::Metrics::new(key_labels)),
            metrics_token: parts.metrics_token,
        };
        // The gateway's start (with its configuration) opens its stretch of
        // the audit log; a gateway that cannot audit does not start.
        let started = audit::AuditEvent {
            at: state.clock.now(),
            kind: "gateway.start".to_owned(),
            actor: "gateway".to_owned(),
            data: serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "providers": snapshot_counts.0,
                "virtual_keys": snapshot_counts.1,
                // A backfill re-seals every row: the chain keeps a trace of
                // each one, so a faked upgrade cannot go unseen.
                "rows_sealed_at_upgrade": sealed,
                "rows_failing_integrity": integrity_failures,
                "legacy_owner_created": legacy_owner_created,
                "max_request_body_bytes": state.config.max_request_body_bytes,
                "reserve_output_tokens": state.config.reserve_output_tokens,
                "rotation_max_age_days": state.config.rotation_max_age.as_secs() / 86_400,
            })
            .into(),
        };
        if !state.ledger.audit(started, Duration::from_secs(30)).await {
            return Err(GatewayInitError::Audit);
        }
        let state = Arc::new(state);
        // The dispatcher holds the state weakly: it stops when the gateway
        // is dropped, as its queue closes.
        tokio::spawn(alerts::dispatch(Arc::downgrade(&state), raised));
        tokio::spawn(admin::doctor::watch(Arc::downgrade(&state)));
        if change_seq.is_some() {
            // A shared store: hear of the other instances' changes.
            changes::spawn(&state, &changes_stopped);
        }
        tokio::spawn(ledger::retain(
            Arc::downgrade(&state),
            state.config.ledger.retention,
            state.config.ledger.prune_interval,
        ));
        Ok(Self { state })
    }

    /// Runs a ledger retention round now, by the gateway's clock (the
    /// background task runs one at start and every
    /// `ledger.prune_interval`): raw rows older than `ledger.retention` are
    /// deleted after a `ledger.prune` audit entry, and old minute rollups
    /// merged into hours. Returns the raw rows deleted.
    pub async fn prune_ledger(&self) -> Result<u64, StoreError> {
        ledger::prune_now(&self.state, self.state.config.ledger.retention).await
    }

    /// The ledger writer's counters now (queue depth, records waiting,
    /// written, refused; see [`LedgerStats`]).
    pub fn ledger_stats(&self) -> LedgerStats {
        self.state.ledger.stats()
    }

    /// The whole HTTP surface. `/healthz`, `/readyz` and the OIDC exchange
    /// are the only routes that need no credential (the exchange's
    /// credential is the token it is given); `/metrics` needs the metrics
    /// token; `/admin/v1` needs the admin token; `/keyforge/v1`
    /// (a key acting on itself) and the proxy need a `kf_` key.
    pub fn router(&self) -> Router {
        // The API routes read their bodies whole, within the body deadline
        // (the proxy bounds its bodies itself, as it streams them).
        let bounded_body =
            || axum::middleware::from_fn_with_state(self.state.clone(), listen::bounded_body);
        Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(health::ready))
            .route("/metrics", get(health::metrics_with_token))
            .nest(
                "/admin/v1",
                admin::router(self.state.clone()).layer(bounded_body()),
            )
            .nest(
                "/keyforge/v1",
                admin::self_service::router().layer(bounded_body()),
            )
            .fallback(proxy::handle)
            .with_state(self.state.clone())
    }

    /// The separate metrics listener's surface: `/metrics` without a
    /// token (the listener's address is the access control), `/healthz`
    /// and `/readyz`.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(health::metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(health::ready))
            .with_state(self.state.clone())
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.state.config
    }

    /// Number of (providers, virtual keys) currently served.
    pub fn counts(&self) -> (usize, usize) {
        let snapshot = self.state.snapshot.load();
        (snapshot.providers.len(), snapshot.keys.len())
    }
}

async fn load_or_create_hash_key(
    store: &dyn Store,
    sealer: &Sealer,
) -> Result<KeyHasher, GatewayInitError> {
    let aad = format!("keyforge/meta/{HASH_KEY_META}").into_bytes();
    let sealed = match store.get_meta(HASH_KEY_META).await? {
        Some(sealed) => sealed,
        None => {
            let fresh = keyforge_vault::random_secret();
            store
                .put_meta_if_absent(HASH_KEY_META, &sealer.seal(fresh.as_slice(), &aad))
                .await?
        }
    };
    let opened = sealer
        .open(&sealed, &aad)
        .map_err(GatewayInitError::HashKey)?;
    let key: [u8; 32] = opened
        .as_slice()
        .try_into()
        .map_err(|_| GatewayInitError::HashKey(VaultError::Format))?;
    Ok(KeyHasher::new(&key))
}

/// The client's address of a request: the TCP peer, or, when the peer is
/// a trusted proxy, the address its forwarding header names
/// ([`TrustedProxies`]). What anomaly detection, the ledger's client HMAC
/// and the leak-report rate limit see.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub(crate) std::net::IpAddr);

/// Serves `gateway` over plain HTTP/1.1 on `listener` until `shutdown`
/// completes, then lets in-flight requests finish (for up to 30 seconds).
///
/// Connections past `max_connections`, or past `max_connections_per_client`
/// from one address (trusted proxies exempt), get a 503 with
/// `Retry-After: 1` and are closed at once; a failing `accept` (out of file
/// descriptors) is retried with a backoff of 5 ms doubling to 1 s. Both are
/// logged at most once a second.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let router = gateway.router();
    serve_on(listener, router, &gateway, None, Surface::Main, shutdown).await
}

/// As [`serve`], over TLS: ALPN picks HTTP/2 (`h2`) or HTTP/1.1; a
/// handshake not finished within `tls_handshake_timeout` is dropped, so
/// it holds its connection slot no longer. `tls` can be reloaded
/// ([`TlsCertificates::reload`]) while this runs.
pub async fn serve_tls(
    listener: TcpListener,
    gateway: Gateway,
    tls: TlsCertificates,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let router = gateway.router();
    serve_on(
        listener,
        router,
        &gateway,
        Some(tls),
        Surface::Main,
        shutdown,
    )
    .await
}

/// Serves [`Gateway::metrics_router`] on `listener` until `shutdown`
/// completes (`keyforge serve --metrics-listen`), over TLS if `tls` is
/// given; with the main listener's connection caps and timeouts.
pub async fn serve_metrics(
    listener: TcpListener,
    gateway: Gateway,
    tls: Option<TlsCertificates>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = gateway.metrics_router();
    serve_on(listener, router, &gateway, tls, Surface::Metrics, shutdown).await
}

/// Which of the gateway's surfaces a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    /// The proxy and the APIs: its connections are counted in
    /// `keyforge_open_connections`, and the ledger is flushed at shutdown.
    Main,
    /// `/metrics` (and health) on a listener of its own.
    Metrics,
}

async fn serve_on(
    listener: TcpListener,
    router: Router,
    gateway: &Gateway,
    tls: Option<TlsCertificates>,
    surface: Surface,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let config = gateway.config();
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true)
        .max_header_size(MAX_REQUEST_HEAD_BYTES);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_REQUEST_HEAD_BYTES).unwrap_or(u32::MAX))
        // Streams, not connections, carry requests in HTTP/2: this bounds
        // what one connection slot can hold at once.
        .max_concurrent_streams(MAX_H2_STREAMS)
        // A peer that stops answering pings is gone: its streams and slot
        // are freed.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builders = Arc::new((http1, http2));
    let acceptor = tls.as_ref().map(TlsCertificates::acceptor);
    let limits =
        listen::ConnectionLimits::new(config.max_connections, config.max_connections_per_client);
    let refusals_logged = listen::WarnLimiter::new(Duration::from_secs(1));
    let accept_errors_logged = listen::WarnLimiter::new(Duration::from_secs(1));
    let handshakes_logged = Arc::new(listen::WarnLimiter::new(Duration::from_secs(1)));
    let mut backoff = listen::AcceptBackoff::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(error) => {
                let wait = backoff.failed();
                if let Some(suppressed) = accept_errors_logged.allow() {
                    tracing::warn!(error = %error, retry_in_ms = wait.as_millis(), suppressed, "accept failed (out of file descriptors?); backing off");
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let peer_ip = peer.ip().to_canonical();
        let proxied = config.trusted_proxies.trusts(peer_ip);
        let slot = match limits.admit(peer_ip, proxied) {
            Ok(slot) => slot,
            Err(refusal) => {
                if let Some(suppressed) = refusals_logged.allow() {
                    tracing::warn!(client = %peer_ip, cap = ?refusal, suppressed, "connection refused: too many open connections");
                }
                // A best-effort answer into the socket's send buffer, which
                // a fresh connection always has room for; the connection is
                // closed when `stream` drops. Over TLS the client cannot
                // read it, but the close is prompt all the same.
                if acceptor.is_none() {
                    let _ = stream.try_write(&listen::refusal_response(refusal));
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let counted = (surface == Surface::Main).then(|| gateway.state.metrics.connection_opened());
        // The client's address rides along in each request's extensions,
        // for anomaly detection and per-address limits; behind a trusted
        // proxy it is read from each request's forwarding header.
        let trusted = proxied.then(|| config.trusted_proxies.clone());
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                let client = match &trusted {
                    Some(proxies) => proxies.client_address(peer_ip, request.headers()),
                    None => peer_ip,
                };
                request.extensions_mut().insert(ClientAddr(client));
                request
            },
        );
        let service = TowerToHyperService::new(service);
        let stream = listen::WriteDeadline::new(stream, config.write_stall_timeout);
        let watcher = graceful.watcher();
        let builders = builders.clone();
        let acceptor = acceptor.clone();
        let handshake_timeout = config.tls_handshake_timeout;
        let handshakes_logged = handshakes_logged.clone();
        tokio::spawn(async move {
            // The slot is held for as long as the connection is open,
            // handshake included.
            let _slot = slot;
            let _counted = counted;
            let (http1, http2) = &*builders;
            let result = match acceptor {
                None => {
                    watcher
                        .watch(http1.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            // Debug: scanners and clients with an old CA
                            // fail handshakes all day long.
                            tracing::debug!(client = %peer_ip, error = %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            if let Some(suppressed) = handshakes_logged.allow() {
                                tracing::info!(client = %peer_ip, timeout_ms = handshake_timeout.as_millis(), suppressed, "TLS handshake not finished in time; connection closed");
                            }
                            return;
                        }
                    };
                    if tls::negotiated_h2(stream.get_ref().1) {
                        watcher
                            .watch(http2.serve_connection(TokioIo::new(stream), service))
                            .await
                    } else {
                        watcher
                            .watch(http1.serve_connection(TokioIo::new(stream), service))
                            .await
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(error = %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within 30 seconds of shutdown");
    }
    if surface == Surface::Main {
        // Every finished request's ledger record is in the store before we
        // return.
        gateway.state.ledger.flush(Duration::from_secs(30)).await;
    }
    Ok(())
}
