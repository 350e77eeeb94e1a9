//! Shared state of a running gateway.

use std::sync::Arc;

use arc_swap::ArcSwap;
use keyforge_store::Store;
use keyforge_types::KeyHasher;
use keyforge_vault::Sealer;
use secrecy::SecretString;

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::scrub::Scrubber;
use crate::snapshot::{Snapshot, SnapshotError};

#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) config: GatewayConfig,
    /// Cluster mode: admission counters shared in Redis; `None` in the
    /// embedded mode, where admission counts in memory only.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) sealer: Sealer,
    pub(crate) hasher: KeyHasher,
    /// Fingerprints provider secrets (HMAC under a master-derived key) to
    /// find one secret used by several providers.
    pub(crate) secret_fingerprints: crate::secret_fingerprints::SecretFingerprints,
    /// Read lock-free by every request; replaced whole after admin changes.
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) http: crate::upstream::UpstreamClient,
    pub(crate) scrubber: Scrubber,
    pub(crate) prices: Arc<keyforge_providers::PriceTable>,
    pub(crate) limits: Arc<keyforge_providers::LimitTable>,
    pub(crate) ledger: crate::ledger::LedgerWriter,
    pub(crate) alerts: crate::alerts::Alerts,
    /// Signs audit checkpoints and export end markers.
    pub(crate) audit_key: crate::audit::CheckpointKey,
    /// The last admin action could not be audited (reported by `status`).
    pub(crate) audit_failing: std::sync::atomic::AtomicBool,
    /// Serializes admin writes with the snapshot rebuild that follows them,
    /// so two concurrent changes cannot publish snapshots out of order. Only
    /// the admin API takes it; the request path never does.
    pub(crate) admin_write: tokio::sync::Mutex<()>,
    /// Trusted OIDC issuers and roles (workload identity).
    pub(crate) oidc: crate::oidc::Oidc,
    /// `[admin.oidc]`'s verifier and the admin sessions of humans who
    /// logged in with it (in memory; see `sessions.rs`).
    pub(crate) sessions: crate::sessions::Sessions,
    /// Leak reports accepted per client address (the endpoint needs no
    /// credential).
    pub(crate) leak_reports: crate::leak_reports::LeakReportLimiter,
    /// What `/metrics` exposes, recorded with atomics as requests pass.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The token `/metrics` needs on the main listener; `None`: it is served
    /// there to nobody (only on a separate metrics listener).
    pub(crate) metrics_token: Option<SecretString>,
    /// Cluster mode: how far the snapshot is in the shared store's
    /// changes, and the change tasks' counters (`changes.rs`); unused on
    /// the embedded store.
    pub(crate) changes: Arc<crate::changes::Changes>,
    /// Dropped with the state, which ends the change tasks.
    #[expect(
        dead_code,
        reason = "held only to be dropped with the state, which ends the change tasks"
    )]
    pub(crate) changes_stop: tokio::sync::watch::Sender<()>,
}

impl AppState {
    /// Rebuilds the snapshot from the store and publishes it. Callers hold
    /// `admin_write` across their store write and this call (local admin
    /// changes, and `changes.rs` for other instances' changes).
    pub(crate) async fn reload(&self) -> Result<(), SnapshotError> {
        // Read before loading: the snapshot then holds every change up to
        // it (the number grows in commit order). `None` on SQLite.
        let seq = self.store.change_seq().await?;
        let previous = self.snapshot.load_full();
        let snapshot = Snapshot::load(
            self.store.as_ref(),
            &self.sealer,
            Some(&previous),
            self.clock.now(),
            self.config.cluster_share(),
        )
        .await?;
        snapshot.report_integrity_failures(Some(&previous), &self.alerts);
        self.alerts.set_webhooks(&snapshot.webhooks);
        self.snapshot.store(Arc::new(snapshot));
        if let Some(seq) = seq {
            self.changes.applied(seq);
        }
        Ok(())
    }
}
