//! Cluster mode's change notification: what another instance changes in
//! the shared store reaches this instance's snapshot at once.
//!
//! Every committed change to what the snapshot is built from (keys,
//! providers and their key versions, budgets, webhooks, admins) bumps the
//! store's change number and sends it as a notice, both in the writing
//! transaction (`Store::change_seq`, `Store::listen_changes`; PostgreSQL
//! `NOTIFY` from a deferred trigger, `schema_v11.sql`). Three tasks act on
//! them:
//! - [`listen`] receives notices and wakes the reloader for a number the
//!   snapshot does not hold yet. When its connection is lost it says so
//!   once, reconnects (100 ms, doubling to 5 s) and then reloads at once,
//!   since notices sent meanwhile are gone; the reconnect is logged once
//!   and counted in `keyforge status`.
//! - [`check`] reads the change number every `change_check_interval` and
//!   wakes the reloader when the snapshot is behind: the backstop for a
//!   connection that died without a word.
//! - [`reload_when_woken`] rebuilds and publishes the snapshot. Wake-ups
//!   coalesce (a `Notify` stores one permit), and a reload is skipped when
//!   the snapshot already holds the number announced (a local admin
//!   change reloads by itself, and its own notice comes back), so a burst
//!   of notices costs a bounded number of reloads. It takes `admin_write`
//!   as local changes do, so snapshots are published in order; the request
//!   path never takes that lock and keeps reading the previous snapshot
//!   until the new one is swapped in.
//!
//! Revoking a key on one instance also ends that key's open streams on the
//! others: their `KeyGuard`s read the snapshot this reload publishes.
//!
//! The embedded (SQLite) store has no change number: none of this runs.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use keyforge_store::Store;
use tokio::sync::{Notify, watch};

use crate::state::AppState;

/// First wait before listening again after a lost connection; doubled
/// after each failed attempt up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Wait before retrying a reload that failed (the store is down).
const RELOAD_RETRY: Duration = Duration::from_secs(1);

/// What the change tasks share with the gateway: the numbers the
/// snapshot is at, the reloader's wake-up, and counters for `status`.
/// Atomics only: the request path never reads these.
#[derive(Debug)]
pub(crate) struct Changes {
    /// The change number the published snapshot holds every change up to
    /// (read before the snapshot was loaded); -1 before the first load.
    applied: AtomicI64,
    /// The highest change number a notice or a check announced.
    announced: AtomicI64,
    /// Reload whatever the numbers say (the listener reconnected).
    force: AtomicBool,
    wake: Notify,
    listening: AtomicBool,
    notices: AtomicU64,
    reloads: AtomicU64,
    reconnects: AtomicU64,
    found_by_check: AtomicU64,
    reload_failures: AtomicU64,
}

/// The change tasks' counters, for `/admin/v1/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChangeCounts {
    pub(crate) listening: bool,
    pub(crate) applied: i64,
    pub(crate) notices: u64,
    pub(crate) reloads: u64,
    pub(crate) reconnects: u64,
    pub(crate) found_by_check: u64,
    pub(crate) reload_failures: u64,
}

impl Changes {
    pub(crate) fn new() -> Self {
        Self {
            applied: AtomicI64::new(-1),
            announced: AtomicI64::new(-1),
            force: AtomicBool::new(false),
            wake: Notify::new(),
            listening: AtomicBool::new(false),
            notices: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            found_by_check: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// The snapshot just published holds every change up to `seq`.
    pub(crate) fn applied(&self, seq: i64) {
        self.applied.fetch_max(seq, Ordering::SeqCst);
    }

    /// The store has reached change `seq`: reload unless the snapshot
    /// already holds it.
    fn announce(&self, seq: i64) {
        self.announced.fetch_max(seq, Ordering::SeqCst);
        if seq > self.applied.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    pub(crate) fn counts(&self) -> ChangeCounts {
        ChangeCounts {
            listening: self.listening.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            notices: self.notices.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            found_by_check: self.found_by_check.load(Ordering::Relaxed),
            reload_failures: self.reload_failures.load(Ordering::Relaxed),
        }
    }
}

/// Starts the three change tasks for a gateway on a shared store. They end
/// when `stopped` closes (its sender is dropped with the gateway's state).
pub(crate) fn spawn(state: &Arc<AppState>, stopped: &watch::Receiver<()>) {
    let changes = Arc::clone(&state.changes);
    let store = Arc::clone(&state.store);
    tokio::spawn(listen(
        Arc::clone(&changes),
        Arc::clone(&store),
        stopped.clone(),
    ));
    tokio::spawn(check(
        Arc::clone(&changes),
        store,
        state.config.change_check_interval,
        stopped.clone(),
    ));
    tokio::spawn(reload_when_woken(
        Arc::downgrade(state),
        changes,
        stopped.clone(),
    ));
}

/// Sleeps for `wait`; false if the gateway stopped meanwhile.
async fn pause(wait: Duration, stopped: &mut watch::Receiver<()>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        _ = stopped.changed() => false,
    }
}

/// Receives the store's change notices; see the module's documentation.
async fn listen(changes: Arc<Changes>, store: Arc<dyn Store>, mut stopped: watch::Receiver<()>) {
    let mut wait = RECONNECT_FIRST;
    let mut listened_before = false;
    let mut failing = false;
    loop {
        let attempt = tokio::select! {
            attempt = store.listen_changes() => attempt,
            _ = stopped.changed() => return,
        };
        let mut listener = match attempt {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(error) => {
                if !failing {
                    tracing::warn!(error = %error, "cannot listen for other instances' changes; retrying (each instance also checks for changes every [store] change_check_interval)");
                    failing = true;
                }
                if !pause(wait, &mut stopped).await {
                    return;
                }
                wait = (wait * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        wait = RECONNECT_FIRST;
        failing = false;
        changes.listening.store(true, Ordering::SeqCst);
        if listened_before {
            // Whatever was announced while the connection was down is
            // lost: reload at once rather than serve what may be stale.
            changes.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                "change listener reconnected; reloading (changes made meanwhile were not announced)"
            );
            changes.force.store(true, Ordering::SeqCst);
            changes.wake.notify_one();
        } else if let Ok(Some(seq)) = store.change_seq().await {
            // A change committed between the snapshot's first load and
            // this LISTEN was announced to nobody.
            changes.announce(seq);
        }
        listened_before = true;
        loop {
            let next = tokio::select! {
                next = listener.next() => next,
                _ = stopped.changed() => return,
            };
            match next {
                Ok(seq) => {
                    changes.notices.fetch_add(1, Ordering::Relaxed);
                    changes.announce(seq);
                }
                Err(error) => {
                    changes.listening.store(false, Ordering::SeqCst);
                    tracing::warn!(error = %error, "change listener lost its connection; reconnecting, and reloading once back");
                    break;
                }
            }
        }
        drop(listener);
        if !pause(RECONNECT_FIRST, &mut stopped).await {
            return;
        }
    }
}

/// The backstop: reads the store's change number every `every` and wakes
/// the reloader when the snapshot is behind and no notice said so.
async fn check(
    changes: Arc<Changes>,
    store: Arc<dyn Store>,
    every: Duration,
    mut stopped: watch::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate: the listener checks once it listens.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.changed() => return,
        }
        let seq = match store.change_seq().await {
            Ok(Some(seq)) => seq,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(error = %error, "cannot read the store's change number");
                continue;
            }
        };
        if seq > changes.announced.load(Ordering::SeqCst)
            && seq > changes.applied.load(Ordering::SeqCst)
        {
            changes.found_by_check.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                seq,
                applied = changes.applied.load(Ordering::Relaxed),
                "periodic change check found changes no notice announced; reloading"
            );
            changes.announce(seq);
        }
    }
}

/// Rebuilds the snapshot when woken and behind (or forced).
async fn reload_when_woken(
    state: Weak<AppState>,
    changes: Arc<Changes>,
    mut stopped: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            () = changes.wake.notified() => {}
            _ = stopped.changed() => return,
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let failed = {
            // Local admin changes hold this across their write and reload,
            // so the two kinds of reload publish in order.
            let _write = state.admin_write.lock().await;
            let force = changes.force.swap(false, Ordering::SeqCst);
            if !force
                && changes.announced.load(Ordering::SeqCst)
                    <= changes.applied.load(Ordering::SeqCst)
            {
                continue;
            }
            let started = std::time::Instant::now();
            match state.reload().await {
                Ok(()) => {
                    changes.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        seq = changes.applied.load(Ordering::Relaxed),
                        elapsed_ms = started.elapsed().as_millis(),
                        "snapshot reloaded for another instance's change"
                    );
                    None
                }
                Err(error) => {
                    changes.reload_failures.fetch_add(1, Ordering::Relaxed);
                    Some((error, force))
                }
            }
        };
        drop(state);
        if let Some((error, force)) = failed {
            tracing::error!(error = %error, "cannot reload another instance's change; retrying in 1 s");
            if !pause(RELOAD_RETRY, &mut stopped).await {
                return;
            }
            if force {
                changes.force.store(true, Ordering::SeqCst);
            }
            changes.wake.notify_one();
        }
    }
}
