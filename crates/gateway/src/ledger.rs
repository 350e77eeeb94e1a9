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

    /// Waits until every record queued so far is in the store.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
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
