//! The ledger and audit writer: the request path hands records to a bounded
//! queue and one background task writes them in batches, one transaction
//! each (group commit). Nothing on the request path waits for the database.
//!
//! The same task appends the audit log, so the hash chain has one writer per
//! instance (instances sharing a PostgreSQL store take turns: a batch that
//! finds the stored head moved on is chained again after it, see
//! `StoreError::ChainMoved`):
//! the ledger records of a batch become one `key.use` entry listing every
//! use (one line, one hash and one row per batch rather than per request),
//! admin actions arrive as entries of their own (their caller waits for the
//! commit), and each batch ends with a signed checkpoint, all in the batch's
//! transaction.
//!
//! A full queue is back-pressure, never silent loss: the record waits in a
//! task of its own for room (nothing is ever dropped), and one warning per
//! [`FULL_WARNING_INTERVAL`] gives how many records found the queue full and
//! how deep it is. While more records wait for room than the queue holds,
//! requests of keys under a budget are refused with 503 `ledger_backlog`
//! (see [`LedgerWriter::backlogged`]): their spend would otherwise pile up
//! in memory, unwritten, and a crash would lose it from the budgets rebuilt
//! at start. Keys without budgets keep being served; their records wait.
//! A failing store is retried with backoff; records stay queued meanwhile,
//! while the admin entries of a batch that failed are taken out and their
//! actions refused (see [`AuditWait`]), so none is written after it was
//! refused.
//!
//! [`retain`] is the retention task: raw rows older than the retention
//! period are pruned in bounded batches (rollups stay), after a
//! `ledger.prune` audit entry names the cut-off, so `audit verify` tells a
//! prune from a deletion.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use keyforge_store::{AuditCheckpoint, AuditRow, LedgerRecord, Store, StoreError};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditData, AuditEvent, Chain, IdHasher, KeyUse};
use crate::listen::WarnLimiter;

/// The queue's capacity by default (`LedgerConfig::queue_capacity`).
pub(crate) const QUEUE: usize = 16 * 1024;
const BATCH: usize = 1024;
/// How long the writer waits to fill a batch once a record arrives.
const LINGER: Duration = Duration::from_millis(50);
/// At most one "queue full" warning per interval.
pub(crate) const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// Raw rows deleted per statement when pruning.
const PRUNE_BATCH: u32 = 5_000;
/// Pause between pruning statements, so the ledger writer's batches get
/// the write lock in between.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug)]
enum Message {
    /// A ledger record and the request's client address (for its audit
    /// entry, keyed-hashed).
    Record(Box<LedgerRecord>, Option<std::net::IpAddr>),
    /// An audit entry; answered once it is committed (`true`) or once a
    /// commit of it failed (`false`: it is taken out of the batch).
    Audit(Box<AuditEvent>, AuditWait),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// An audit entry's caller, waiting for its answer. `state` settles who
/// decides about the entry when the caller stops waiting: while the
/// entry is still `QUEUED` the caller may abandon it (and the writer then
/// skips it); once the writer has `TAKEN` it into a batch, the writer
/// answers after its next commit attempt, and the caller waits for that.
/// So an action the caller reports as refused is never written to the
/// audit log later (a store that came back would otherwise commit it).
#[derive(Debug)]
struct AuditWait {
    done: oneshot::Sender<bool>,
    state: Arc<AtomicU8>,
}

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// The ledger writer's counters, in one place so the status endpoint (and
/// a metrics endpoint) read them all. Totals count since the gateway
/// started.
#[derive(Debug, Default)]
pub(crate) struct LedgerCounters {
    /// Records waiting for room in the queue now, each in a task of its own.
    waiting: AtomicU64,
    /// Records that found the queue full.
    queue_full_total: AtomicU64,
    /// Ledger records committed to the store.
    written_total: AtomicU64,
    /// When the writer last committed a batch (Unix ms, system time; 0:
    /// never), for the audit write lag `/metrics` reports.
    last_commit_ms: std::sync::atomic::AtomicI64,
    /// Batches (transactions) committed.
    batches_total: AtomicU64,
    /// Requests refused with 503 `ledger_backlog`.
    refused_total: AtomicU64,
    /// Raw rows deleted by retention.
    pruned_total: AtomicU64,
}

/// A reading of the ledger writer's counters (see `/admin/v1/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerStats {
    /// Records and audit entries in the queue now.
    pub queue_depth: u64,
    /// What the queue holds at most.
    pub queue_capacity: u64,
    /// Records waiting for room in the full queue now.
    pub waiting_for_room: u64,
    /// Above this many records waiting, keys with budgets are refused.
    pub waiting_limit: u64,
    /// Records that found the queue full, since the gateway started.
    pub queue_full_total: u64,
    /// Ledger records committed to the store, since start.
    pub written_total: u64,
    /// Batches (one transaction each) committed, since start.
    pub batches_total: u64,
    /// Always zero: a record is never dropped; this says so where a
    /// dashboard looks for it.
    pub dropped_total: u64,
    /// Requests refused with 503 `ledger_backlog`, since start.
    pub refused_total: u64,
    /// Raw ledger rows deleted by retention, since start.
    pub pruned_total: u64,
    /// When the writer last committed a batch (Unix ms by the system
    /// clock; 0: never).
    pub last_commit_unix_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct LedgerWriter {
    tx: mpsc::Sender<Message>,
    /// Records waiting for room in the queue, beyond which keys with
    /// budgets are refused: as many as the queue holds (by default two
    /// seconds of a store writing 8,000 records a second).
    waiting_limit: u64,
    counters: Arc<LedgerCounters>,
    full_warnings: Arc<WarnLimiter>,
}

impl LedgerWriter {
    /// Starts the writer with a queue of `capacity` records and entries
    /// (at least one).
    pub(crate) fn spawn(
        store: Arc<dyn Store>,
        chain: Chain,
        ids: IdHasher,
        capacity: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let counters = Arc::new(LedgerCounters::default());
        tokio::spawn(run(store, chain, ids, rx, counters.clone()));
        Self {
            tx,
            waiting_limit: u64::try_from(capacity).unwrap_or(u64::MAX),
            counters,
            full_warnings: Arc::new(WarnLimiter::new(FULL_WARNING_INTERVAL)),
        }
    }

    /// Appends an audit entry and waits until it is committed, for at most
    /// `limit`. `false`: the audit log could not be written in time.
    pub(crate) async fn audit(&self, event: AuditEvent, limit: Duration) -> bool {
        let (done, mut wait) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let message = Message::Audit(
            Box::new(event),
            AuditWait {
                done,
                state: state.clone(),
            },
        );
        let written =
            async { self.tx.send(message).await.is_ok() && (&mut wait).await.unwrap_or(false) };
        if let Ok(written) = tokio::time::timeout(limit, written).await {
            return written;
        }
        // Out of time. Still queued: abandoned, the writer will skip it.
        // Already taken into a batch: the writer answers after its
        // current commit attempt, whichever way it goes.
        match state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => false,
            Err(_) => wait.await.unwrap_or(false),
        }
    }

    pub(crate) fn record(&self, record: LedgerRecord, client: Option<std::net::IpAddr>) {
        match self.tx.try_send(Message::Record(Box::new(record), client)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                let counters = &self.counters;
                counters.queue_full_total.fetch_add(1, Ordering::Relaxed);
                let waiting = counters.waiting.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = self.full_warnings.allow() {
                    tracing::warn!(
                        records = suppressed + 1,
                        interval_s = FULL_WARNING_INTERVAL.as_secs(),
                        queue_depth = self.tx.max_capacity(),
                        waiting_for_room = waiting,
                        "ledger queue full: the store is not keeping up; records wait for room (records: how many found it full since the last warning)"
                    );
                }
                let tx = self.tx.clone();
                let counters = self.counters.clone();
                // A settlement may be dropped while the runtime shuts down,
                // where nothing can be spawned any more.
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            let sent = tx.send(message).await;
                            counters.waiting.fetch_sub(1, Ordering::Relaxed);
                            if sent.is_err() {
                                tracing::error!(
                                    "ledger writer stopped before a queued record could be written"
                                );
                            }
                        });
                    }
                    Err(_) => {
                        self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!(
                            "the runtime is shutting down; a ledger record could not be queued"
                        )
                    }
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("ledger writer stopped; a ledger record could not be written")
            }
        }
    }

    /// Whether the store has fallen so far behind that more than
    /// `waiting_limit` records wait for room in the full queue. The
    /// request path refuses keys with budgets then (and counts the refusal
    /// here).
    pub(crate) fn backlogged(&self) -> bool {
        let backlogged = self.counters.waiting.load(Ordering::Relaxed) > self.waiting_limit;
        if backlogged {
            self.counters.refused_total.fetch_add(1, Ordering::Relaxed);
        }
        backlogged
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> LedgerStats {
        let c = &self.counters;
        LedgerStats {
            queue_depth: u64::try_from(self.tx.max_capacity() - self.tx.capacity()).unwrap_or(0),
            queue_capacity: u64::try_from(self.tx.max_capacity()).unwrap_or(0),
            waiting_for_room: c.waiting.load(Ordering::Relaxed),
            waiting_limit: self.waiting_limit,
            queue_full_total: c.queue_full_total.load(Ordering::Relaxed),
            written_total: c.written_total.load(Ordering::Relaxed),
            batches_total: c.batches_total.load(Ordering::Relaxed),
            dropped_total: 0,
            refused_total: c.refused_total.load(Ordering::Relaxed),
            pruned_total: c.pruned_total.load(Ordering::Relaxed),
            last_commit_unix_ms: c.last_commit_ms.load(Ordering::Relaxed),
        }
    }

    /// Waits until every record queued so far is in the store, for at most
    /// `limit` (a failing store is retried indefinitely, and neither shutdown
    /// nor a usage query should hang on it). Returns whether it finished.
    pub(crate) async fn flush(&self, limit: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        let flushed =
            async { self.tx.send(Message::Flush(done)).await.is_ok() && wait.await.is_ok() };
        let finished = tokio::time::timeout(limit, flushed).await.unwrap_or(false);
        if !finished {
            tracing::warn!(
                limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                "ledger records are still queued (is the store failing?)"
            );
        }
        finished
    }

    /// One retention round: raw rows that arrived before `before_ms` (Unix
    /// ms) are deleted in bounded batches, after a `ledger.prune` audit
    /// entry naming the cut-off is committed; then minute rollups older
    /// than the cut-off are merged into hours. Returns the rows deleted.
    pub(crate) async fn prune(
        &self,
        store: &dyn Store,
        now: time::OffsetDateTime,
        before_ms: i64,
        retention: Duration,
    ) -> Result<u64, StoreError> {
        let mut pruned = 0u64;
        if store
            .ledger_oldest_ms()
            .await?
            .is_some_and(|oldest| oldest < before_ms)
        {
            // The chain says which rows may go before any goes: a crash in
            // between leaves rows that verify checks all the same.
            let event = AuditEvent {
                at: now,
                kind: crate::audit::LEDGER_PRUNE_KIND.to_owned(),
                actor: "gateway".to_owned(),
                data: json!({"before_ms": before_ms, "retention_s": retention.as_secs()}).into(),
            };
            if !self.audit(event, Duration::from_secs(30)).await {
                return Err(StoreError::Conflict(
                    "the audit log cannot be written; nothing pruned".into(),
                ));
            }
            loop {
                let deleted = store.prune_ledger(before_ms, PRUNE_BATCH).await?;
                pruned += deleted;
                self.counters
                    .pruned_total
                    .fetch_add(deleted, Ordering::Relaxed);
                if deleted < u64::from(PRUNE_BATCH) {
                    break;
                }
                tokio::time::sleep(PRUNE_PAUSE).await;
            }
        }
        while store.coarsen_rollups(before_ms).await? {
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
        Ok(pruned)
    }
}

/// The retention task: a round at start and every `interval` after, until
/// the gateway is dropped. Raw rows older than `retention` (by the
/// gateway's clock) go; rollups stay.
pub(crate) async fn retain(
    state: std::sync::Weak<crate::state::AppState>,
    retention: Duration,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        match prune_now(&state, retention).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                retention_s = retention.as_secs(),
                "ledger: raw rows past retention pruned (rollups kept)"
            ),
            Err(error) => {
                tracing::warn!(error = %error, "ledger retention round failed; retrying at the next one")
            }
        }
    }
}

/// One retention round for `state`, by its clock.
pub(crate) async fn prune_now(
    state: &crate::state::AppState,
    retention: Duration,
) -> Result<u64, StoreError> {
    let now = state.clock.now();
    let before_ms = crate::snapshot::unix_ms(now)
        .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX));
    state
        .ledger
        .prune(state.store.as_ref(), now, before_ms, retention)
        .await
}

/// What one batch carries.
#[derive(Default)]
struct Batch {
    ledger: Vec<LedgerRecord>,
    /// Key uses not yet gathered into a `key.use` entry.
    uses: Vec<KeyUse>,
    /// Keyed hashes of the batch's client addresses: clients repeat, and
    /// an HMAC per record was a tenth of the writer's work.
    clients: std::collections::HashMap<std::net::IpAddr, String>,
    /// First arrival time of those uses (Unix ms).
    uses_from_ms: i64,
    /// In order: `key.use` entries and admin entries.
    audit: Vec<AuditEvent>,
    /// The callers of the admin entries, with each entry's index in
    /// `audit`.
    audited: Vec<(usize, oneshot::Sender<bool>)>,
    flushed: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn take(&mut self, message: Message, ids: &IdHasher) {
        match message {
            Message::Record(record, client) => {
                if self.uses.is_empty() {
                    self.uses_from_ms = record.at_ms;
                }
                let client = client.map(|ip| {
                    self.clients
                        .entry(ip)
                        .or_insert_with(|| ids.hash(&ip.to_string()))
                        .clone()
                });
                self.uses.push(key_use(&record, client));
                self.ledger.push(*record);
            }
            Message::Audit(event, wait) => {
                let taken =
                    wait.state
                        .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire);
                if taken.is_err() {
                    // Its caller gave up waiting and refused the action.
                    return;
                }
                // Keep the order: the uses before this action come first.
                self.close_uses();
                self.audit.push(*event);
                self.audited.push((self.audit.len() - 1, wait.done));
            }
            Message::Flush(done) => self.flushed.push(done),
        }
    }

    /// Takes the admin entries out of the batch after a failed commit and
    /// tells their callers: the actions are refused, so the entries must
    /// not be written when the store answers again. Ledger records and
    /// their `key.use` entries stay and are retried.
    fn refuse_admin_entries(&mut self) {
        for (index, done) in self.audited.drain(..).rev() {
            if index < self.audit.len() {
                self.audit.remove(index);
            }
            let _ = done.send(false);
        }
    }

    /// Gathers the pending key uses into one `key.use` entry.
    fn close_uses(&mut self) {
        if self.uses.is_empty() {
            return;
        }
        let uses = std::mem::take(&mut self.uses);
        self.audit.push(AuditEvent {
            at: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(self.uses_from_ms) * 1_000_000,
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            kind: "key.use".to_owned(),
            actor: "gateway".to_owned(),
            data: AuditData::Uses(uses),
        });
    }

    fn len(&self) -> usize {
        self.ledger.len() + self.audit.len()
    }
}

/// One request that reached a provider, for the audit log. The client's
/// address is recorded as a keyed hash (as Vault does): the same address
/// always maps to the same value, so it can be correlated, but the log does
/// not reveal it.
fn key_use(record: &LedgerRecord, client: Option<String>) -> KeyUse {
    KeyUse {
        at_ms: record.at_ms,
        cache_write_tokens: record.cache_write_tokens,
        cached_input_tokens: record.cached_input_tokens,
        client,
        cost_nano_usd: record.cost_nano_usd,
        env: record.env.clone(),
        input_tokens: record.input_tokens,
        key_id: record.key_id.clone(),
        outcome: record.outcome,
        output_tokens: record.output_tokens,
        provider: record.provider.clone(),
        provider_key_version: record.provider_key_version,
        reasoning_tokens: record.reasoning_tokens,
        request_id: record.request_id.clone(),
        status: record.status,
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut chain: Chain,
    ids: IdHasher,
    mut rx: mpsc::Receiver<Message>,
    counters: Arc<LedgerCounters>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Batch::default();
        batch.take(first, &ids);
        // Linger briefly so a busy gateway writes hundreds of records per
        // transaction instead of one. The writer sleeps rather than waiting
        // on the queue, so senders meanwhile wake nobody (a wake-up per
        // record cost a fifth of throughput). A flush or an admin entry
        // waits at most LINGER.
        if batch.flushed.is_empty() && batch.audited.is_empty() {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => batch.take(message, &ids),
                Err(_) => break,
            }
        }
        batch.close_uses();
        let mut backoff = Duration::from_millis(100);
        // Built again on the stored head when another instance appended to
        // the shared chain first (PostgreSQL); nothing was written then.
        let entries = loop {
            let entries = chain.entries(&batch.audit);
            let rows: Vec<AuditRow> = entries
                .iter()
                .map(|entry| AuditRow {
                    seq: entry.seq,
                    at_ms: entry.at_ms,
                    kind: entry.kind.clone(),
                    line: entry.line.clone(),
                    hash: entry.hash.to_vec(),
                })
                .collect();
            let checkpoint = entries.last().map(|last| AuditCheckpoint {
                seq: last.seq,
                line: chain.checkpoint(last),
            });
            let error = match store
                .commit_batch(&batch.ledger, &rows, checkpoint.as_ref())
                .await
            {
                Ok(()) => break entries,
                Err(StoreError::ChainMoved { head }) => match store.audit_head().await {
                    Ok(stored) => {
                        tracing::debug!(head, "the audit log moved on; chaining the batch again");
                        chain.rebase(stored.and_then(|(seq, hash)| {
                            <[u8; 32]>::try_from(hash.as_slice()).ok().map(|h| (seq, h))
                        }));
                        continue;
                    }
                    Err(error) => error,
                },
                Err(error) => error,
            };
            tracing::error!(error = %error, records = batch.ledger.len(), audit_entries = rows.len(), refused_admin_entries = batch.audited.len(), "cannot write the ledger and audit log; retrying (admin actions in the batch are refused)");
            batch.refuse_admin_entries();
            if batch.len() == 0 {
                // Nothing but refused admin entries: nothing left to write.
                break chain.entries(&batch.audit);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        };
        chain.commit(&entries);
        counters
            .last_commit_ms
            .store(system_unix_ms(), Ordering::Relaxed);
        counters.written_total.fetch_add(
            u64::try_from(batch.ledger.len()).unwrap_or(0),
            Ordering::Relaxed,
        );
        counters.batches_total.fetch_add(1, Ordering::Relaxed);
        for (_, done) in batch.audited.drain(..) {
            let _ = done.send(true);
        }
        for done in batch.flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Now by the system clock, in Unix ms (the writer's commits are timed by
/// the machine, not by the gateway's injectable clock).
pub(crate) fn system_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use keyforge_store::{
        AlertDelivery, AlertEvent, AlertWebhookRecord, BudgetRecord, NewProvider, ProviderRecord,
        RecentRequest, RevokeOutcome, SqliteStore, StoreError, StoredAlert, Suspension, UsageGroup,
        UsageQuery, UsageRow, VirtualKeyRecord,
    };
    use keyforge_types::{AlertId, BudgetId, BudgetScope, EnvName, KeyId, ProviderName};
    use time::OffsetDateTime;

    use super::*;

    /// A store whose ledger writes fail while `failing` is set.
    #[derive(Debug)]
    struct Flaky {
        inner: SqliteStore,
        failing: AtomicBool,
    }

    #[async_trait]
    impl Store for Flaky {
        async fn insert_admin(
            &self,
            admin: &keyforge_store::AdminRecord,
        ) -> Result<(), StoreError> {
            self.inner.insert_admin(admin).await
        }
        async fn list_admins(&self) -> Result<Vec<keyforge_store::AdminRecord>, StoreError> {
            self.inner.list_admins().await
        }
        async fn get_admin_by_token_hash(
            &self,
            token_hash: &keyforge_types::KeyHash,
        ) -> Result<Option<keyforge_store::AdminRecord>, StoreError> {
            self.inner.get_admin_by_token_hash(token_hash).await
        }
        async fn revoke_admin(
            &self,
            name: &keyforge_types::AdminName,
            at: time::OffsetDateTime,
        ) -> Result<keyforge_store::AdminRevokeOutcome, StoreError> {
            self.inner.revoke_admin(name, at).await
        }
        async fn replace_admin_token(
            &self,
            name: &keyforge_types::AdminName,
            token_hash: &keyforge_types::KeyHash,
            at: time::OffsetDateTime,
        ) -> Result<bool, StoreError> {
            self.inner.replace_admin_token(name, token_hash, at).await
        }
        async fn usage_window_start(&self, since_ms: i64) -> Result<i64, StoreError> {
            self.inner.usage_window_start(since_ms).await
        }
        async fn rollup_totals(&self) -> Result<Vec<keyforge_store::RollupTotal>, StoreError> {
            self.inner.rollup_totals().await
        }
        async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_meta(name).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn put_meta_if_absent(
            &self,
            name: &str,
            value: &[u8],
        ) -> Result<Vec<u8>, StoreError> {
            self.inner.put_meta_if_absent(name, value).await
        }
        async fn insert_provider(&self, provider: &NewProvider) -> Result<(), StoreError> {
            self.inner.insert_provider(provider).await
        }
        async fn list_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
            self.inner.list_providers().await
        }
        async fn insert_virtual_key(
            &self,
            key: &VirtualKeyRecord,
            budgets: &[BudgetRecord],
        ) -> Result<(), StoreError> {
            self.inner.insert_virtual_key(key, budgets).await
        }
        async fn rotate_virtual_key(
            &self,
            rotation: &keyforge_store::KeyRotation,
        ) -> Result<keyforge_store::KeyRotationOutcome, StoreError> {
            self.inner.rotate_virtual_key(rotation).await
        }
        async fn list_grace_secrets(
            &self,
            now: OffsetDateTime,
        ) -> Result<Vec<keyforge_store::GraceSecret>, StoreError> {
            self.inner.list_grace_secrets(now).await
        }
        async fn revoke_virtual_keys_where(
            &self,
            env: Option<&EnvName>,
            project: Option<&keyforge_types::ProjectName>,
            at: OffsetDateTime,
        ) -> Result<Vec<KeyId>, StoreError> {
            self.inner.revoke_virtual_keys_where(env, project, at).await
        }
        async fn insert_credential(
            &self,
            provider_id: &keyforge_types::ProviderId,
            credential: &keyforge_store::CredentialRecord,
            stage: keyforge_store::CredentialStage,
        ) -> Result<(), StoreError> {
            self.inner
                .insert_credential(provider_id, credential, stage)
                .await
        }
        async fn list_credentials(
            &self,
            provider_id: &keyforge_types::ProviderId,
        ) -> Result<Vec<keyforge_store::CredentialInfo>, StoreError> {
            self.inner.list_credentials(provider_id).await
        }
        async fn set_credential_stages(
            &self,
            provider_id: &keyforge_types::ProviderId,
            stages: &[(u32, keyforge_store::CredentialStage)],
            rollout_percent: u8,
        ) -> Result<(), StoreError> {
            self.inner
                .set_credential_stages(provider_id, stages, rollout_percent)
                .await
        }
        async fn upstream_health(
            &self,
            since_ms: i64,
        ) -> Result<Vec<keyforge_store::UpstreamHealth>, StoreError> {
            self.inner.upstream_health(since_ms).await
        }
        async fn version_usage(
            &self,
            env: &EnvName,
            provider: &ProviderName,
            since_ms: i64,
        ) -> Result<Vec<keyforge_store::VersionUsage>, StoreError> {
            self.inner.version_usage(env, provider, since_ms).await
        }
        async fn set_key_suspension(
            &self,
            id: &KeyId,
            suspension: Option<&Suspension>,
        ) -> Result<bool, StoreError> {
            self.inner.set_key_suspension(id, suspension).await
        }
        async fn update_virtual_key(
            &self,
            update: &keyforge_store::KeyUpdate,
        ) -> Result<bool, StoreError> {
            self.inner.update_virtual_key(update).await
        }
        async fn update_provider(
            &self,
            id: &keyforge_types::ProviderId,
            kind: &str,
            base_url: Option<&str>,
        ) -> Result<bool, StoreError> {
            self.inner.update_provider(id, kind, base_url).await
        }
        async fn delete_provider(
            &self,
            id: &keyforge_types::ProviderId,
        ) -> Result<bool, StoreError> {
            self.inner.delete_provider(id).await
        }
        async fn upsert_budget(&self, budget: &BudgetRecord) -> Result<BudgetRecord, StoreError> {
            self.inner.upsert_budget(budget).await
        }
        async fn list_budgets(&self) -> Result<Vec<BudgetRecord>, StoreError> {
            self.inner.list_budgets().await
        }
        async fn delete_budget(&self, id: &BudgetId) -> Result<bool, StoreError> {
            self.inner.delete_budget(id).await
        }
        async fn spend_since(&self, scope: &BudgetScope, since_ms: i64) -> Result<i64, StoreError> {
            self.inner.spend_since(scope, since_ms).await
        }
        async fn recent_requests(&self, since_ms: i64) -> Result<Vec<RecentRequest>, StoreError> {
            self.inner.recent_requests(since_ms).await
        }
        async fn insert_alert_webhook(
            &self,
            webhook: &AlertWebhookRecord,
        ) -> Result<(), StoreError> {
            self.inner.insert_alert_webhook(webhook).await
        }
        async fn list_alert_webhooks(&self) -> Result<Vec<AlertWebhookRecord>, StoreError> {
            self.inner.list_alert_webhooks().await
        }
        async fn delete_alert_webhook(&self, id: &AlertId) -> Result<bool, StoreError> {
            self.inner.delete_alert_webhook(id).await
        }
        async fn insert_alert(
            &self,
            event: &AlertEvent,
            webhooks: &[AlertId],
        ) -> Result<Option<i64>, StoreError> {
            self.inner.insert_alert(event, webhooks).await
        }
        async fn update_alert_delivery(
            &self,
            alert_id: i64,
            delivery: &AlertDelivery,
            at_ms: i64,
        ) -> Result<(), StoreError> {
            self.inner
                .update_alert_delivery(alert_id, delivery, at_ms)
                .await
        }
        async fn list_alerts(&self, limit: u32) -> Result<Vec<StoredAlert>, StoreError> {
            self.inner.list_alerts(limit).await
        }
        async fn list_virtual_keys(
            &self,
            retired_before: Option<OffsetDateTime>,
        ) -> Result<Vec<VirtualKeyRecord>, StoreError> {
            self.inner.list_virtual_keys(retired_before).await
        }
        async fn get_virtual_key(
            &self,
            id: &KeyId,
        ) -> Result<Option<VirtualKeyRecord>, StoreError> {
            self.inner.get_virtual_key(id).await
        }
        async fn revoke_virtual_key(
            &self,
            id: &KeyId,
            at: OffsetDateTime,
        ) -> Result<RevokeOutcome, StoreError> {
            self.inner.revoke_virtual_key(id, at).await
        }
        async fn commit_batch(
            &self,
            ledger: &[LedgerRecord],
            audit: &[keyforge_store::AuditRow],
            checkpoint: Option<&keyforge_store::AuditCheckpoint>,
        ) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Conflict("disk full (simulated)".into()));
            }
            self.inner.commit_batch(ledger, audit, checkpoint).await
        }
        async fn audit_head(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
            self.inner.audit_head().await
        }
        async fn ledger_rows(
            &self,
            after_id: i64,
            limit: u32,
        ) -> Result<Vec<keyforge_store::StoredLedgerRow>, StoreError> {
            self.inner.ledger_rows(after_id, limit).await
        }
        async fn install_row_mac(&self, mac: keyforge_store::RowMac) -> Result<u64, StoreError> {
            self.inner.install_row_mac(mac).await
        }
        async fn integrity_failures(&self) -> Result<Vec<keyforge_store::RowFailure>, StoreError> {
            self.inner.integrity_failures().await
        }
        async fn audit_lines(
            &self,
            after_seq: u64,
            limit: u32,
        ) -> Result<Vec<(u64, String)>, StoreError> {
            self.inner.audit_lines(after_seq, limit).await
        }
        async fn audit_seq_since(&self, since_ms: i64) -> Result<Option<u64>, StoreError> {
            self.inner.audit_seq_since(since_ms).await
        }
        async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Conflict("disk full (simulated)".into()));
            }
            self.inner.insert_ledger(records).await
        }
        async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
            self.inner.query_usage(query).await
        }
        async fn ledger_oldest_ms(&self) -> Result<Option<i64>, StoreError> {
            self.inner.ledger_oldest_ms().await
        }
        async fn prune_ledger(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
            self.inner.prune_ledger(before_ms, limit).await
        }
        async fn coarsen_rollups(&self, before_ms: i64) -> Result<bool, StoreError> {
            self.inner.coarsen_rollups(before_ms).await
        }
    }

    fn record(n: i64) -> LedgerRecord {
        LedgerRecord {
            at_ms: n,
            request_id: format!("req_{n}"),
            key_id: KeyId::generate(),
            env: EnvName::parse("dev").unwrap(),
            project: None,
            provider: ProviderName::parse("openai").unwrap(),
            provider_key_version: 1,
            model: None,
            input_tokens: 1,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 1,
            reasoning_tokens: 0,
            usage_source: "reported",
            cost_nano_usd: 1,
            priced_by: "table",
            status: 200,
            latency_ms: 1,
            outcome: "ok",
        }
    }

    /// Two instances' writers on one PostgreSQL store, appending at once:
    /// a batch that finds the stored head moved on is chained again after
    /// it, so the shared log verifies and the ledger matches it.
    #[tokio::test(flavor = "multi_thread")]
    async fn two_writers_on_one_postgres_store_keep_one_chain() {
        let admin_url = std::env::var("KEYFORGE_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let admin = match sqlx::PgPool::connect(&admin_url).await {
            Ok(pool) => pool,
            Err(error) => {
                assert!(
                    !std::env::var("CI").is_ok_and(|ci| ci == "true"),
                    "CI=true and no PostgreSQL server at {admin_url}: {error}"
                );
                eprintln!("skipped: no PostgreSQL server at {admin_url} ({error})");
                return;
            }
        };
        let name = format!("kf_test_ledger_{}_{}", std::process::id(), system_unix_ms());
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        let key = || crate::audit::CheckpointKey::new(&[1; 32]);
        let a = Arc::new(keyforge_store::PgStore::connect(&url).await.unwrap());
        let b = Arc::new(keyforge_store::PgStore::connect(&url).await.unwrap());
        let writers: Vec<LedgerWriter> = [a.clone(), b.clone()]
            .into_iter()
            .map(|store| {
                LedgerWriter::spawn(
                    store,
                    Chain::resume(None, key()),
                    IdHasher::new(&[2; 32]),
                    QUEUE,
                )
            })
            .collect();
        let tasks: Vec<_> = writers
            .iter()
            .enumerate()
            .map(|(instance, writer)| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        // Request ids are unique across instances.
                        let id = format!("req_{instance}_{n}");
                        writer.record(
                            LedgerRecord {
                                request_id: id,
                                ..record(n)
                            },
                            None,
                        );
                        let event = AuditEvent {
                            at: OffsetDateTime::UNIX_EPOCH,
                            kind: "admin.test".to_owned(),
                            actor: format!("instance-{instance}"),
                            data: json!({"n": n}).into(),
                        };
                        assert!(
                            writer.audit(event, Duration::from_secs(10)).await,
                            "instance {instance}: entry {n} was not written"
                        );
                    }
                    assert!(writer.flush(Duration::from_secs(10)).await);
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let checked = crate::stored_audit::verify_store(&*a, &key())
            .await
            .unwrap();
        assert_eq!(checked.verification.problem, None);
        assert_eq!(checked.ledger_rows, 50);
        assert!(checked.verification.entries >= 50);
        a.close().await;
        b.close().await;
        sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failing_store_loses_nothing_and_does_not_hang_flush() {
        let store = Arc::new(Flaky {
            inner: SqliteStore::open_in_memory().await.unwrap(),
            failing: AtomicBool::new(true),
        });
        let writer = LedgerWriter::spawn(
            store.clone(),
            Chain::resume(None, crate::audit::CheckpointKey::new(&[1; 32])),
            IdHasher::new(&[2; 32]),
            QUEUE,
        );
        for n in 0..100 {
            writer.record(record(n), None);
        }
        assert!(
            !writer.flush(Duration::from_millis(300)).await,
            "flush cannot finish while the store fails"
        );
        store.failing.store(false, Ordering::SeqCst);
        assert!(writer.flush(Duration::from_secs(30)).await);
        let query = UsageQuery {
            since_ms: 0,
            until_ms: None,
            key_id: None,
            env: None,
            project: None,
            group_by: UsageGroup::Env,
        };
        let rows = store.query_usage(&query).await.unwrap();
        assert_eq!(rows[0].requests, 100);
    }

    #[tokio::test]
    async fn a_store_that_falls_behind_refuses_budgeted_keys_and_loses_nothing() {
        let store = Arc::new(Flaky {
            inner: SqliteStore::open_in_memory().await.unwrap(),
            failing: AtomicBool::new(true),
        });
        let writer = LedgerWriter::spawn(
            store.clone(),
            Chain::resume(None, crate::audit::CheckpointKey::new(&[1; 32])),
            IdHasher::new(&[2; 32]),
            QUEUE,
        );
        assert!(!writer.backlogged());
        // The writer holds at most one batch while the store fails; past
        // the queue, records wait for room, and past the waiting limit the
        // backlog shows.
        let total = QUEUE + BATCH + QUEUE + 2;
        for n in 0..total {
            writer.record(record(i64::try_from(n).unwrap()), None);
        }
        let stats = writer.stats();
        assert!(stats.waiting_for_room > stats.waiting_limit, "{stats:?}");
        assert_eq!(stats.queue_depth, stats.queue_capacity, "{stats:?}");
        assert_eq!(stats.queue_full_total, stats.waiting_for_room, "{stats:?}");
        assert!(writer.backlogged());
        assert_eq!(writer.stats().refused_total, 1);
        // The store recovers: every record is written, none dropped, and
        // budgeted keys are served again.
        store.failing.store(false, Ordering::SeqCst);
        let expected = u64::try_from(total).unwrap();
        for _ in 0..100 {
            if writer.stats().written_total == expected {
                break;
            }
            writer.flush(Duration::from_secs(30)).await;
        }
        let stats = writer.stats();
        assert_eq!(
            (
                stats.written_total,
                stats.waiting_for_room,
                stats.dropped_total
            ),
            (expected, 0, 0),
            "{stats:?}"
        );
        assert!(!writer.backlogged());
        let query = UsageQuery {
            since_ms: 0,
            until_ms: None,
            key_id: None,
            env: None,
            project: None,
            group_by: UsageGroup::Env,
        };
        assert_eq!(
            store.query_usage(&query).await.unwrap()[0].requests,
            expected
        );
    }
}
