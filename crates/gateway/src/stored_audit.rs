//! The audit log as the store holds it: the signed lines of an export,
//! verification of the whole stored log with its ledger, and one entry
//! appended while no gateway runs. `admin/audit_log.rs` serves the first
//! two; `keyforge backup` and `keyforge restore` use them on a copy of the
//! store, with the master key and no server.
//!
//! Invariant: the chain has one writer. A running gateway's ledger task is
//! that writer; [`append_offline`] may only be called by a process that
//! holds the data directory's lock (no gateway runs on the store), so it is
//! then the only one.

use keyforge_store::{AuditCheckpoint, AuditRow, Store, StoreError};
use keyforge_vault::MasterKey;
use time::OffsetDateTime;

use crate::audit::{
    AuditEvent, CHECKPOINT_KEY_LABEL, Chain, CheckpointKey, Verification, end_line, hash_hex,
    verify, verify_ledger,
};

/// The kind of the entry recording a backup of the store.
pub const BACKUP_KIND: &str = "store.backup";

const PAGE: u32 = 10_000;

/// The checkpoint key of the store's audit log.
pub fn checkpoint_key(master: &MasterKey) -> CheckpointKey {
    CheckpointKey::new(master.derive(CHECKPOINT_KEY_LABEL).as_slice())
}

/// Every line from `after` on, ending with a signed end marker over the
/// stored head.
pub(crate) async fn signed_lines(
    store: &dyn Store,
    key: &CheckpointKey,
    after: u64,
) -> Result<String, StoreError> {
    let head = store.audit_head().await?;
    // The lines end at the head read first: with PostgreSQL another
    // instance may append while the pages are read, and its entries
    // (past the head the end marker signs) are left to the next read
    // rather than reported as entries the marker does not cover.
    let head_seq = head.as_ref().map_or(0, |(seq, _)| *seq);
    let mut out = String::new();
    let mut cursor = after;
    let mut count = 0u64;
    loop {
        let page = store.audit_lines(cursor, PAGE).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        let last = *last;
        for (seq, line) in page.iter().filter(|(seq, _)| *seq <= head_seq) {
            if !line.starts_with("{\"checkpoint\"") && *seq > cursor {
                count += 1;
            }
            out.push_str(line);
            out.push('\n');
        }
        if last == cursor || last > head_seq {
            break;
        }
        cursor = last;
    }
    let head = head
        .filter(|(seq, _)| *seq > after)
        .and_then(|(seq, hash)| {
            <[u8; 32]>::try_from(hash.as_slice())
                .ok()
                .map(|h| (seq, hash_hex(&h)))
        });
    out.push_str(&end_line(key, head, count));
    out.push('\n');
    Ok(out)
}

/// What [`verify_store`] checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreVerification {
    /// The chain's verification, with the ledger's problems in `problem`.
    pub verification: Verification,
    /// The newest entry's sequence number and time (RFC 3339), if any.
    pub newest: Option<(u64, String)>,
    /// Ledger rows compared with the `key.use` entries that seal them.
    pub ledger_rows: usize,
}

/// Verifies the whole stored log (hash chain, signed checkpoints, the end
/// over the stored head), then the ledger and rollups against the uses the
/// log seals: what `keyforge audit verify` asks a running gateway for.
///
/// The log, the ledger and the rollups are read one after the other, not
/// in one transaction: with PostgreSQL another instance may commit a batch
/// in between, whose ledger rows and rollup counts are then read without
/// the `key.use` entry that seals them (it lies past the head the log was
/// read up to). A ledger mismatch found while the head moved is therefore
/// checked again, up to [`VERIFY_ATTEMPTS`] times; a real deletion or edit
/// stays and is reported.
pub async fn verify_store(
    store: &dyn Store,
    key: &CheckpointKey,
) -> Result<StoreVerification, StoreError> {
    let mut attempt = 1;
    loop {
        let head = store.audit_head().await?;
        let verified = verify_store_once(store, key).await?;
        let ledger_problem = verified
            .verification
            .problem
            .as_deref()
            .is_some_and(|problem| problem.starts_with(LEDGER_MISMATCH));
        if !ledger_problem || attempt >= VERIFY_ATTEMPTS || store.audit_head().await? == head {
            return Ok(verified);
        }
        attempt += 1;
    }
}

/// How many times [`verify_store`] reads a log that another writer
/// appended to meanwhile.
pub const VERIFY_ATTEMPTS: u32 = 5;

const LEDGER_MISMATCH: &str = "the ledger does not match the audit log";

async fn verify_store_once(
    store: &dyn Store,
    key: &CheckpointKey,
) -> Result<StoreVerification, StoreError> {
    let lines = signed_lines(store, key, 0).await?;
    let mut verification = verify(lines.lines(), key);
    let newest = lines
        .lines()
        .rev()
        .find(|line| line.starts_with("{\"seq\""))
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .and_then(|entry| {
            Some((
                entry.get("seq")?.as_u64()?,
                entry.get("at")?.as_str()?.to_owned(),
            ))
        });
    let mut ledger_rows = 0;
    if verification.problem.is_none() {
        // The chain is intact; now the ledger must match the key uses it
        // sealed (rows deleted or edited to reset spend).
        let mut rows = Vec::new();
        let mut after = 0;
        loop {
            let page = store.ledger_rows(after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            rows.extend(page);
        }
        ledger_rows = rows.len();
        let rollups = store.rollup_totals().await?;
        let problems = verify_ledger(lines.lines(), rows, Some(rollups));
        if !problems.is_empty() {
            const SHOWN: usize = 20;
            let mut text = format!(
                "{LEDGER_MISMATCH} ({} problems): {}",
                problems.len(),
                problems[..problems.len().min(SHOWN)].join("; ")
            );
            if problems.len() > SHOWN {
                text.push_str(&format!("; and {} more", problems.len() - SHOWN));
            }
            verification.problem = Some(text);
        }
    }
    Ok(StoreVerification {
        verification,
        newest,
        ledger_rows,
    })
}

/// Appends one entry (and its signed checkpoint) to the store's chain
/// while no gateway runs; returns its sequence number. The caller must
/// hold the data directory's lock (see the module's invariant).
pub async fn append_offline(
    store: &dyn Store,
    master: &MasterKey,
    at: OffsetDateTime,
    kind: &str,
    actor: &str,
    data: serde_json::Value,
) -> Result<u64, StoreError> {
    let head = store
        .audit_head()
        .await?
        .and_then(|(seq, hash)| <[u8; 32]>::try_from(hash.as_slice()).ok().map(|h| (seq, h)));
    let chain = Chain::resume(head, checkpoint_key(master));
    let event = AuditEvent {
        at,
        kind: kind.to_owned(),
        actor: actor.to_owned(),
        data: data.into(),
    };
    let entries = chain.entries(std::slice::from_ref(&event));
    let Some(last) = entries.last() else {
        return Err(StoreError::Conflict("no audit entry was built".to_owned()));
    };
    let checkpoint = AuditCheckpoint {
        seq: last.seq,
        line: chain.checkpoint(last),
    };
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
    store.commit_batch(&[], &rows, Some(&checkpoint)).await?;
    Ok(last.seq)
}

#[cfg(test)]
mod tests {
    use keyforge_store::SqliteStore;

    use super::*;

    #[tokio::test]
    async fn entries_appended_offline_continue_a_chain_that_verifies() {
        let store = SqliteStore::open_in_memory().await.unwrap();
        let master = MasterKey::generate();
        let key = checkpoint_key(&master);
        let at = OffsetDateTime::UNIX_EPOCH;
        for n in 1..=3u64 {
            let data = serde_json::json!({"to": format!("/b/{n}")});
            let seq = append_offline(&store, &master, at, BACKUP_KIND, "local", data)
                .await
                .unwrap();
            assert_eq!(seq, n);
        }
        let checked = verify_store(&store, &key).await.unwrap();
        assert_eq!(checked.verification.problem, None);
        assert_eq!(checked.verification.entries, 3);
        assert_eq!(checked.newest.unwrap().0, 3);
        // Another master key's checkpoints do not verify.
        let other = checkpoint_key(&MasterKey::generate());
        let forged = verify_store(&store, &other).await.unwrap();
        assert!(forged.verification.problem.is_some());
    }
}
