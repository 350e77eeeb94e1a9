//! The ledger writer: the request path hands records to a bounded queue and
//! one background task writes them in batches, one transaction each (group
//! commit). Nothing on the request path waits for the database.
//!
//! A full queue is back-pressure, never silent loss: the record waits in a
//! task of its own for room, and the condition is logged. A failing store is
//! retried with backoff; records stay queued meanwhile.

use std::sync::Arc;
use std::time::Duration;

use keyforge_store::{LedgerRecord, Store};
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 16 * 1024;
const BATCH: usize = 1024;
/// How long the writer waits to fill a batch once a record arrives.
const LINGER: Duration = Duration::from_millis(50);

#[derive(Debug)]
enum Message {
    Record(Box<LedgerRecord>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub(crate) struct LedgerWriter {
    tx: mpsc::Sender<Message>,
}

impl LedgerWriter {
    pub(crate) fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    pub(crate) fn record(&self, record: LedgerRecord) {
        match self.tx.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) => {
                tracing::warn!(
                    capacity = QUEUE,
                    "ledger queue full: the store is not keeping up; records wait for room"
                );
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(message).await.is_err() {
                        tracing::error!(
                            "ledger writer stopped before a queued record could be written"
                        );
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("ledger writer stopped; a ledger record could not be written")
            }
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
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Message>) {
    let mut batch: Vec<LedgerRecord> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        take(first, &mut batch, &mut waiting);
        // Linger briefly so a busy gateway writes hundreds of records per
        // transaction instead of one. The writer sleeps rather than waiting
        // on the queue, so senders meanwhile wake nobody (a wake-up per
        // record cost a fifth of throughput). A flush waits at most LINGER.
        if waiting.is_empty() {
            tokio::time::sleep(LINGER).await;
        }
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(message) => take(message, &mut batch, &mut waiting),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = store.insert_ledger(&batch).await {
            tracing::error!(error = %error, records = batch.len(), "cannot write the ledger; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        batch.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn take(message: Message, batch: &mut Vec<LedgerRecord>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match message {
        Message::Record(record) => batch.push(*record),
        Message::Flush(done) => waiting.push(done),
    }
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
        async fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_meta(name).await
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
        async fn list_virtual_keys(&self) -> Result<Vec<VirtualKeyRecord>, StoreError> {
            self.inner.list_virtual_keys().await
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
        async fn insert_ledger(&self, records: &[LedgerRecord]) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Conflict("disk full (simulated)".into()));
            }
            self.inner.insert_ledger(records).await
        }
        async fn query_usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
            self.inner.query_usage(query).await
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
        }
    }

    #[tokio::test]
    async fn a_failing_store_loses_nothing_and_does_not_hang_flush() {
        let store = Arc::new(Flaky {
            inner: SqliteStore::open_in_memory().await.unwrap(),
            failing: AtomicBool::new(true),
        });
        let writer = LedgerWriter::spawn(store.clone());
        for n in 0..100 {
            writer.record(record(n));
        }
        assert!(
            !writer.flush(Duration::from_millis(300)).await,
            "flush cannot finish while the store fails"
        );
        store.failing.store(false, Ordering::SeqCst);
        assert!(writer.flush(Duration::from_secs(30)).await);
        let query = UsageQuery {
            since_ms: 0,
            key_id: None,
            env: None,
            project: None,
            group_by: UsageGroup::Env,
        };
        let rows = store.query_usage(&query).await.unwrap();
        assert_eq!(rows[0].requests, 100);
    }
}
