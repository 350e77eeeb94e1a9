//! The tamper-evident audit log: every admin action and every use of a
//! provider key, as JSON lines in a hash chain.
//!
//! Each entry line carries its sequence number and the SHA-256 of the line
//! before it (`prev`); its own hash is the SHA-256 of its exact bytes. After
//! every batch the writer adds a checkpoint: the last sequence number and
//! hash, signed with HMAC-SHA-256 under a key derived from the master key
//! (`keyforge/audit/checkpoint/v1`). An export ends with a signed `end` line
//! (last sequence, hash and number of entries). [`verify`] then detects an
//! edited entry (its hash no longer matches the next entry's `prev`, or a
//! checkpoint), a removed or reordered one (a gap in the sequence), and a
//! truncated log (the `end` line missing or not matching), and says where.
//! Without the master key, nobody can forge a checkpoint for a rewritten
//! chain.

use aws_lc_rs::{digest, hmac};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Label of the checkpoint signing key, derived from the master key.
pub const CHECKPOINT_KEY_LABEL: &str = "keyforge/audit/checkpoint/v1";
/// Label of the key that hashes sensitive identifiers (client addresses).
pub const ID_KEY_LABEL: &str = "keyforge/audit/ids/v1";

/// Keyed hashes of identifiers that could be sensitive: `hmac:` and the
/// first 16 bytes of HMAC-SHA-256, in hex.
pub(crate) struct IdHasher(hmac::Key);

impl std::fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdHasher(..)")
    }
}

impl IdHasher {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    pub(crate) fn hash(&self, value: &str) -> String {
        let tag = hmac::sign(&self.0, value.as_bytes());
        format!("hmac:{}", hex(&tag.as_ref()[..16]))
    }
}

/// Something to record.
#[derive(Debug, Clone)]
pub(crate) struct AuditEvent {
    pub(crate) at: OffsetDateTime,
    /// `admin.key.create`, `key.use`, ...
    pub(crate) kind: String,
    /// `admin` for admin API calls, `gateway` for the gateway's own acts.
    pub(crate) actor: String,
    /// Ids, names and outcomes; never a secret.
    pub(crate) data: AuditData,
}

/// An entry's `data`. Written exactly as the JSON object it stands for
/// (keys in sorted order, as `serde_json::Value` writes them), so the
/// typed form of a batch's uses and a `Value` give the same bytes and the
/// same hash; only the cost differs (a `Value` per use built a map of 15
/// allocated keys).
#[derive(Debug, Clone)]
pub(crate) enum AuditData {
    Json(serde_json::Value),
    /// A `key.use` entry: `{"count": n, "uses": [...]}`.
    Uses(Vec<KeyUse>),
}

impl From<serde_json::Value> for AuditData {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value)
    }
}

impl Serialize for AuditData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Self::Json(value) => value.serialize(serializer),
            Self::Uses(uses) => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("count", &uses.len())?;
                map.serialize_entry("uses", uses)?;
                map.end()
            }
        }
    }
}

/// One request that reached a provider, as its `key.use` entry lists it.
/// The fields are in sorted order: that is the order they are written in
/// (see [`AuditData`]). With the cost, every field of the ledger row that
/// carries money or tokens: the entry seals its row, and `audit verify`
/// compares the ledger table against it (deleted or edited spend).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct KeyUse {
    pub(crate) at_ms: i64,
    pub(crate) cache_write_tokens: u64,
    pub(crate) cached_input_tokens: u64,
    /// The client's address, keyed-hashed ([`IdHasher`]).
    pub(crate) client: Option<String>,
    pub(crate) cost_nano_usd: i64,
    pub(crate) env: keyforge_types::EnvName,
    pub(crate) input_tokens: u64,
    pub(crate) key_id: keyforge_types::KeyId,
    pub(crate) outcome: &'static str,
    pub(crate) output_tokens: u64,
    pub(crate) provider: keyforge_types::ProviderName,
    pub(crate) provider_key_version: u32,
    pub(crate) reasoning_tokens: u64,
    pub(crate) request_id: String,
    pub(crate) status: u16,
}

/// An entry line, in the order its fields are written (the hash covers the
/// exact bytes, so the order is part of the format).
#[derive(Debug, Serialize, Deserialize)]
struct EntryLine {
    seq: u64,
    at: String,
    kind: String,
    actor: String,
    data: serde_json::Value,
    prev: String,
}

/// [`EntryLine`] as written, borrowing the event: the same fields in the
/// same order, so a batch's `key.use` data (every use of the batch) is
/// serialized in place rather than deep-copied first.
#[derive(Serialize)]
struct EntryLineRef<'a> {
    seq: u64,
    at: String,
    kind: &'a str,
    actor: &'a str,
    data: &'a AuditData,
    prev: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    seq: u64,
    hash: String,
    mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct End {
    seq: u64,
    hash: String,
    count: u64,
    mac: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Marker {
    Checkpoint(Checkpoint),
    End(End),
}

/// A written entry, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainedEntry {
    pub(crate) seq: u64,
    pub(crate) at_ms: i64,
    pub(crate) kind: String,
    pub(crate) line: String,
    pub(crate) hash: [u8; 32],
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The chain's head and the checkpoint key: what appending needs.
#[derive(Debug)]
pub(crate) struct Chain {
    next_seq: u64,
    last_hash: [u8; 32],
    key: CheckpointKey,
}

/// Signs and checks checkpoints.
pub struct CheckpointKey(hmac::Key);

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(..)")
    }
}

impl CheckpointKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn sign(&self, what: &str) -> String {
        hex(hmac::sign(&self.0, what.as_bytes()).as_ref())
    }

    fn verify(&self, what: &str, mac_hex: &str) -> bool {
        // Recomputing and comparing hex is constant-time enough here: the
        // MAC is not a secret the verifier could leak.
        self.sign(what) == mac_hex
    }
}

fn checkpoint_input(seq: u64, hash: &str) -> String {
    format!("keyforge-audit/checkpoint/{seq}/{hash}")
}

fn end_input(seq: u64, hash: &str, count: u64) -> String {
    format!("keyforge-audit/end/{seq}/{hash}/{count}")
}

impl Chain {
    /// Continues after the entry `last` (none: a new log).
    pub(crate) fn resume(last: Option<(u64, [u8; 32])>, key: CheckpointKey) -> Self {
        let (seq, hash) = last.unwrap_or((0, [0u8; 32]));
        Self {
            next_seq: seq + 1,
            last_hash: hash,
            key,
        }
    }

    /// The next entry of the chain. Nothing changes until [`Self::commit`]:
    /// a batch the store refused is built again from the same head.
    pub(crate) fn entries(&self, events: &[AuditEvent]) -> Vec<ChainedEntry> {
        let mut seq = self.next_seq;
        let mut prev = self.last_hash;
        events
            .iter()
            .map(|event| {
                let line = EntryLineRef {
                    seq,
                    at: event.at.format(&Rfc3339).unwrap_or_default(),
                    kind: &event.kind,
                    actor: &event.actor,
                    data: &event.data,
                    prev: hex(&prev),
                };
                let text = serde_json::to_string(&line).unwrap_or_default();
                let hash = sha256(text.as_bytes());
                let entry = ChainedEntry {
                    seq,
                    at_ms: i64::try_from(event.at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                    kind: event.kind.clone(),
                    line: text,
                    hash,
                };
                seq += 1;
                prev = hash;
                entry
            })
            .collect()
    }

    /// The signed checkpoint line after `entries`, and the MAC alone.
    pub(crate) fn checkpoint(&self, last: &ChainedEntry) -> String {
        let hash = hex(&last.hash);
        let mac = self.key.sign(&checkpoint_input(last.seq, &hash));
        checkpoint_line(last.seq, &hash, &mac)
    }

    /// Continues after `last` from now on: another instance appended to
    /// the shared chain since this one last wrote (PostgreSQL).
    pub(crate) fn rebase(&mut self, last: Option<(u64, [u8; 32])>) {
        let (seq, hash) = last.unwrap_or((0, [0u8; 32]));
        self.next_seq = seq + 1;
        self.last_hash = hash;
    }

    pub(crate) fn commit(&mut self, entries: &[ChainedEntry]) {
        if let Some(last) = entries.last() {
            self.next_seq = last.seq + 1;
            self.last_hash = last.hash;
        }
    }
}

fn checkpoint_line(seq: u64, hash: &str, mac: &str) -> String {
    serde_json::to_string(&Marker::Checkpoint(Checkpoint {
        seq,
        hash: hash.to_owned(),
        mac: mac.to_owned(),
    }))
    .unwrap_or_default()
}

/// The signed `end` line closing an export or a full verification.
pub(crate) fn end_line(key: &CheckpointKey, last: Option<(u64, String)>, count: u64) -> String {
    let (seq, hash) = last.unwrap_or((0, hex(&[0u8; 32])));
    let mac = key.sign(&end_input(seq, &hash, count));
    serde_json::to_string(&Marker::End(End {
        seq,
        hash,
        count,
        mac,
    }))
    .unwrap_or_default()
}

pub(crate) fn hash_hex(hash: &[u8; 32]) -> String {
    hex(hash)
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub entries: u64,
    pub checkpoints: u64,
    /// `None`: the log is intact. Otherwise where and how it is not.
    pub problem: Option<String>,
}

/// Verifies a log (or an export of part of it) line by line.
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>, key: &CheckpointKey) -> Verification {
    let mut entries = 0u64;
    let mut checkpoints = 0u64;
    let mut last: Option<(u64, String)> = None;
    let mut ended = false;
    let fail = |entries, checkpoints, problem: String| Verification {
        entries,
        checkpoints,
        problem: Some(problem),
    };
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        if ended {
            return fail(
                entries,
                checkpoints,
                format!("line {number}: entries after the end marker"),
            );
        }
        if let Ok(marker) = serde_json::from_str::<Marker>(line) {
            let Some((seq, hash)) = &last else {
                // An export of an empty stretch: just a signed end marker.
                if let Marker::End(e) = &marker
                    && e.count == 0
                    && key.verify(&end_input(e.seq, &e.hash, 0), &e.mac)
                {
                    ended = true;
                    continue;
                }
                return fail(
                    entries,
                    checkpoints,
                    format!("line {number}: a marker before any entry"),
                );
            };
            match marker {
                Marker::Checkpoint(c) => {
                    if c.seq != *seq || &c.hash != hash {
                        return fail(
                            entries,
                            checkpoints,
                            format!(
                                "line {number}: checkpoint for entry {} does not match entry {seq} before it (an entry was edited, removed or reordered)",
                                c.seq
                            ),
                        );
                    }
                    if !key.verify(&checkpoint_input(c.seq, &c.hash), &c.mac) {
                        return fail(
                            entries,
                            checkpoints,
                            format!(
                                "line {number}: checkpoint signature is invalid (forged, or a different master key)"
                            ),
                        );
                    }
                    checkpoints += 1;
                }
                Marker::End(e) => {
                    if e.seq != *seq || &e.hash != hash || e.count != entries {
                        return fail(
                            entries,
                            checkpoints,
                            format!(
                                "line {number}: the end marker covers {} entries up to {}, but {entries} entries up to {seq} precede it (entries were removed or edited)",
                                e.count, e.seq
                            ),
                        );
                    }
                    if !key.verify(&end_input(e.seq, &e.hash, e.count), &e.mac) {
                        return fail(
                            entries,
                            checkpoints,
                            format!("line {number}: end marker signature is invalid"),
                        );
                    }
                    ended = true;
                }
            }
            continue;
        }
        let entry: EntryLine = match serde_json::from_str(line) {
            Ok(entry) => entry,
            Err(error) => {
                return fail(
                    entries,
                    checkpoints,
                    format!("line {number}: not an audit entry ({error})"),
                );
            }
        };
        if let Some((seq, hash)) = &last {
            if entry.seq != seq + 1 {
                return fail(
                    entries,
                    checkpoints,
                    format!(
                        "line {number}: entry {} follows entry {seq} (entries were removed or reordered)",
                        entry.seq
                    ),
                );
            }
            if &entry.prev != hash {
                return fail(
                    entries,
                    checkpoints,
                    format!(
                        "line {number}: entry {} does not chain to entry {seq} (entry {seq} was edited)",
                        entry.seq
                    ),
                );
            }
        }
        entries += 1;
        last = Some((entry.seq, hex(&sha256(line.as_bytes()))));
    }
    if !ended {
        return fail(
            entries,
            checkpoints,
            "no end marker: the log was truncated".to_owned(),
        );
    }
    Verification {
        entries,
        checkpoints,
        problem: None,
    }
}

/// The fields of a ledger row that a `key.use` entry seals, by their name
/// in the entry. Entries written before a field was listed simply do not
/// name it, and it is not compared.
fn sealed_fields(row: &keyforge_store::StoredLedgerRow) -> [(&'static str, serde_json::Value); 9] {
    [
        ("key_id", row.key_id.clone().into()),
        ("cost_nano_usd", row.cost_nano_usd.into()),
        ("input_tokens", row.input_tokens.into()),
        ("cached_input_tokens", row.cached_input_tokens.into()),
        ("cache_write_tokens", row.cache_write_tokens.into()),
        ("output_tokens", row.output_tokens.into()),
        ("reasoning_tokens", row.reasoning_tokens.into()),
        ("status", row.status.into()),
        ("outcome", row.outcome.clone().into()),
    ]
}

/// The audit entry the retention task writes before it prunes raw ledger
/// rows: `data.before_ms` (Unix ms) says which rows may be gone.
pub(crate) const LEDGER_PRUNE_KIND: &str = "ledger.prune";

/// Checks the ledger table against the `key.use` entries of a verified
/// log: every row must be listed by exactly one entry with the same money
/// and token fields, and every listed use must still have its row, unless
/// it arrived before the latest `ledger.prune` entry's `before_ms` (pruned
/// by retention: only the rows still retained are checked for presence;
/// those still stored are checked all the same). Returns one line per
/// problem, naming the batch (the entry's sequence number), the row id and
/// the request; empty when the ledger matches.
///
/// With `rollups`, also checks the usage rollups (what budgets, usage and
/// rotation figures are rebuilt from) against the uses the log seals,
/// summed per hour, key, environment, provider and key version: requests
/// and cost must agree for every hour, pruned raw rows or not. Hours with a
/// use logged before uses carried their cost cannot be checked and are
/// skipped. Project and model are not in the log, so spend moved between
/// projects or models of one key is not seen here.
pub fn verify_ledger<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    rows: impl IntoIterator<Item = keyforge_store::StoredLedgerRow>,
    rollups: Option<Vec<keyforge_store::RollupTotal>>,
) -> Vec<String> {
    // request id -> (the key.use entry's seq, the use as logged).
    let mut uses: std::collections::HashMap<String, (u64, serde_json::Value)> =
        std::collections::HashMap::new();
    // Rows that arrived before this (Unix ms) may have been pruned.
    let mut pruned_before: Option<i64> = None;
    for line in lines {
        let Ok(entry) = serde_json::from_str::<EntryLine>(line) else {
            continue;
        };
        if entry.kind == LEDGER_PRUNE_KIND {
            if let Some(before) = entry.data.get("before_ms").and_then(|b| b.as_i64()) {
                pruned_before = Some(pruned_before.map_or(before, |p| p.max(before)));
            }
            continue;
        }
        if entry.kind != "key.use" {
            continue;
        }
        let Some(listed) = entry.data.get("uses").and_then(|u| u.as_array()) else {
            continue;
        };
        for one in listed {
            if let Some(request_id) = one.get("request_id").and_then(|r| r.as_str()) {
                uses.insert(request_id.to_owned(), (entry.seq, one.clone()));
            }
        }
    }
    let mut problems = Vec::new();
    if let Some(rollups) = rollups {
        problems.extend(check_rollups(
            uses.values().map(|(_, logged)| logged),
            rollups,
        ));
    }
    for row in rows {
        let Some((seq, logged)) = uses.remove(&row.request_id) else {
            problems.push(format!(
                "ledger row {} (request {}) is in no key.use entry: added outside KeyForge",
                row.id, row.request_id
            ));
            continue;
        };
        for (name, stored) in sealed_fields(&row) {
            if let Some(expected) = logged.get(name)
                && expected != &stored
            {
                problems.push(format!(
                    "batch of key.use entry {seq}: ledger row {} (request {}) has {name} {stored}, the audit log says {expected}",
                    row.id, row.request_id
                ));
            }
        }
    }
    let retained = |logged: &serde_json::Value| match pruned_before {
        None => true,
        // A use without its arrival time is checked: it cannot be shown
        // to predate the prune.
        Some(before) => logged
            .get("at_ms")
            .and_then(|at| at.as_i64())
            .is_none_or(|at| at >= before),
    };
    let mut deleted: Vec<(u64, String, serde_json::Value)> = uses
        .into_iter()
        .filter(|(_, (_, logged))| retained(logged))
        .map(|(request_id, (seq, logged))| (seq, request_id, logged))
        .collect();
    deleted.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    for (seq, request_id, logged) in deleted {
        let cost = logged
            .get("cost_nano_usd")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        problems.push(format!(
            "batch of key.use entry {seq}: the ledger row of request {request_id} (cost_nano_usd {cost}) was deleted"
        ));
    }
    problems
}

/// Rollup totals against the logged uses, per (hour, key, env, provider,
/// version): `(requests, cost)`.
fn check_rollups<'a>(
    uses: impl Iterator<Item = &'a serde_json::Value>,
    rollups: Vec<keyforge_store::RollupTotal>,
) -> Vec<String> {
    type Bucket = (i64, String, String, String, i64);
    let mut logged: std::collections::BTreeMap<Bucket, (i64, i64)> = Default::default();
    let mut uncheckable: std::collections::HashSet<Bucket> = Default::default();
    for one in uses {
        let text = |name: &str| {
            one.get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let at = one
            .get("at_ms")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        let bucket = (
            at - at.rem_euclid(3_600_000),
            text("key_id"),
            text("env"),
            text("provider"),
            one.get("provider_key_version")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0),
        );
        match one.get("cost_nano_usd").and_then(serde_json::Value::as_i64) {
            Some(cost) => {
                let sums = logged.entry(bucket).or_default();
                sums.0 += 1;
                sums.1 += cost;
            }
            None => {
                uncheckable.insert(bucket);
            }
        }
    }
    let mut problems = Vec::new();
    for total in rollups {
        let bucket = (
            total.hour_ms,
            total.key_id,
            total.env,
            total.provider,
            total.provider_key_version,
        );
        if uncheckable.contains(&bucket) {
            logged.remove(&bucket);
            continue;
        }
        let expected = logged.remove(&bucket).unwrap_or((0, 0));
        if expected != (total.requests, total.cost_nano_usd) {
            problems.push(format!(
                "usage rollup of key {} ({}/{} v{}) for the hour from {}: {} requests, {} nano-USD; the audit log says {} requests, {} nano-USD",
                bucket.1, bucket.2, bucket.3, bucket.4, ms_rfc3339(bucket.0),
                total.requests, total.cost_nano_usd, expected.0, expected.1
            ));
        }
    }
    for (bucket, (requests, cost)) in logged {
        if uncheckable.contains(&bucket) {
            continue;
        }
        problems.push(format!(
            "usage rollup of key {} ({}/{} v{}) for the hour from {} is missing: the audit log says {requests} requests, {cost} nano-USD",
            bucket.1, bucket.2, bucket.3, bucket.4, ms_rfc3339(bucket.0)
        ));
    }
    problems
}

fn ms_rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn key() -> CheckpointKey {
        CheckpointKey::new(&[7; 32])
    }

    /// A log of five entries in two batches, exported with its end marker.
    fn export() -> Vec<String> {
        let mut chain = Chain::resume(None, key());
        let mut lines = Vec::new();
        let mut all = Vec::new();
        for batch in [0..3, 3..5] {
            let events: Vec<AuditEvent> = batch
                .map(|n| AuditEvent {
                    at: datetime!(2026-11-23 10:00 UTC),
                    kind: "key.use".into(),
                    actor: "gateway".to_owned(),
                    data: json!({"n": n}).into(),
                })
                .collect();
            let entries = chain.entries(&events);
            lines.extend(entries.iter().map(|e| e.line.clone()));
            lines.push(chain.checkpoint(entries.last().unwrap()));
            chain.commit(&entries);
            all.extend(entries);
        }
        let last = all.last().unwrap();
        lines.push(end_line(&key(), Some((last.seq, hash_hex(&last.hash))), 5));
        lines
    }

    fn check(lines: &[String]) -> Option<String> {
        verify(lines.iter().map(String::as_str), &key()).problem
    }

    #[test]
    fn an_intact_log_verifies() {
        let lines = export();
        assert_eq!(
            verify(lines.iter().map(String::as_str), &key()),
            Verification {
                entries: 5,
                checkpoints: 2,
                problem: None
            }
        );
        // And only with the right key.
        let other = verify(
            lines.iter().map(String::as_str),
            &CheckpointKey::new(&[8; 32]),
        );
        assert!(other.problem.unwrap().contains("signature is invalid"));
    }

    #[test]
    fn every_kind_of_tampering_is_caught_and_located() {
        let edit = |lines: &mut Vec<String>| lines[1] = lines[1].replace("\"n\":1", "\"n\":9");
        let remove = |lines: &mut Vec<String>| {
            lines.remove(1);
        };
        let reorder = |lines: &mut Vec<String>| lines.swap(0, 1);
        let truncate = |lines: &mut Vec<String>| lines.truncate(5);
        let cut_end = |lines: &mut Vec<String>| {
            lines.pop();
        };
        let edit_last = |lines: &mut Vec<String>| lines[5] = lines[5].replace("\"n\":4", "\"n\":0");
        type Tamper<'a> = &'a dyn Fn(&mut Vec<String>);
        let cases: [(&str, Tamper, &str); 6] = [
            (
                "edit",
                &edit,
                "line 3: entry 3 does not chain to entry 2 (entry 2 was edited)",
            ),
            ("remove", &remove, "line 2: entry 3 follows entry 1"),
            ("reorder", &reorder, "line 2: entry 1 follows entry 2"),
            (
                "truncate",
                &truncate,
                "no end marker: the log was truncated",
            ),
            ("drop the end marker", &cut_end, "no end marker"),
            (
                "edit the last entry",
                &edit_last,
                "line 7: checkpoint for entry 5 does not match",
            ),
        ];
        for (what, tamper, expected) in cases {
            let mut lines = export();
            tamper(&mut lines);
            let problem = check(&lines).unwrap_or_else(|| panic!("{what} went unnoticed"));
            assert!(problem.contains(expected), "{what}: {problem}");
        }
    }

    #[test]
    fn an_empty_export_verifies() {
        let lines = [end_line(&key(), None, 0)];
        assert_eq!(check(&lines), None);
        assert!(check(&[]).unwrap().contains("truncated"));
    }

    #[test]
    fn a_rewritten_chain_needs_the_key() {
        // Rebuild the whole chain with an edit, signing with a guessed key.
        let chain = Chain::resume(None, CheckpointKey::new(&[9; 32]));
        let events = vec![AuditEvent {
            at: datetime!(2026-11-23 10:00 UTC),
            kind: "admin.key.create".into(),
            actor: "admin".to_owned(),
            data: json!({"forged": true}).into(),
        }];
        let entries = chain.entries(&events);
        let mut lines: Vec<String> = entries.iter().map(|e| e.line.clone()).collect();
        lines.push(chain.checkpoint(&entries[0]));
        let problem = check(&lines).unwrap();
        assert!(problem.contains("signature is invalid"), "{problem}");
    }

    fn ledger_row(id: i64, request_id: &str, cost: i64) -> keyforge_store::StoredLedgerRow {
        keyforge_store::StoredLedgerRow {
            id,
            request_id: request_id.to_owned(),
            key_id: "key_a".to_owned(),
            cost_nano_usd: cost,
            input_tokens: 10,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 5,
            reasoning_tokens: 0,
            status: 200,
            outcome: "ok".to_owned(),
        }
    }

    #[test]
    fn the_ledger_is_checked_against_the_uses_its_batches_sealed() {
        let entry = |seq: u64, uses: serde_json::Value| {
            serde_json::json!({"seq": seq, "at": "", "kind": "key.use", "actor": "gateway",
                "data": {"uses": uses}, "prev": ""})
            .to_string()
        };
        let one = |request_id: &str, cost: i64| {
            serde_json::json!({"request_id": request_id, "key_id": "key_a", "cost_nano_usd": cost,
                "input_tokens": 10, "output_tokens": 5, "status": 200, "outcome": "ok"})
        };
        let lines = [
            entry(1, serde_json::json!([one("req_a", 100), one("req_b", 200)])),
            entry(2, serde_json::json!([one("req_c", 300)])),
        ];
        let lines = || lines.iter().map(String::as_str);
        let intact = [
            ledger_row(1, "req_a", 100),
            ledger_row(2, "req_b", 200),
            ledger_row(3, "req_c", 300),
        ];
        // (ledger table, the problems verify_ledger must report)
        let cases: Vec<(Vec<keyforge_store::StoredLedgerRow>, Vec<&str>)> = vec![
            (intact.to_vec(), vec![]),
            (
                vec![intact[0].clone(), intact[2].clone()],
                vec![
                    "batch of key.use entry 1: the ledger row of request req_b (cost_nano_usd 200) was deleted",
                ],
            ),
            (
                vec![
                    intact[0].clone(),
                    ledger_row(2, "req_b", 0),
                    intact[2].clone(),
                ],
                vec![
                    "batch of key.use entry 1: ledger row 2 (request req_b) has cost_nano_usd 0, the audit log says 200",
                ],
            ),
            (
                [intact.to_vec(), vec![ledger_row(9, "req_x", 1)]].concat(),
                vec!["ledger row 9 (request req_x) is in no key.use entry: added outside KeyForge"],
            ),
        ];
        for (rows, expected) in cases {
            assert_eq!(verify_ledger(lines(), rows, None), expected);
        }
    }

    #[test]
    fn rows_before_a_logged_prune_may_be_gone_and_later_ones_may_not() {
        let uses = |seq: u64, uses: serde_json::Value| {
            serde_json::json!({"seq": seq, "at": "", "kind": "key.use", "actor": "gateway",
                "data": {"uses": uses}, "prev": ""})
            .to_string()
        };
        let one = |request_id: &str, at_ms: i64| {
            serde_json::json!({"request_id": request_id, "at_ms": at_ms, "key_id": "key_a",
                "cost_nano_usd": 100, "input_tokens": 10, "output_tokens": 5, "status": 200, "outcome": "ok"})
        };
        let prune = |seq: u64, before_ms: i64| {
            serde_json::json!({"seq": seq, "at": "", "kind": LEDGER_PRUNE_KIND, "actor": "gateway",
                "data": {"before_ms": before_ms}, "prev": ""})
            .to_string()
        };
        let log = [
            uses(
                1,
                serde_json::json!([one("req_old", 1_000), one("req_new", 5_000)]),
            ),
            prune(2, 2_000),
        ];
        let lines = || log.iter().map(String::as_str);
        let new_row = ledger_row(2, "req_new", 100);
        // The old row pruned: nothing to report.
        assert_eq!(
            verify_ledger(lines(), vec![new_row.clone()], None),
            Vec::<String>::new()
        );
        // A retained row deleted is still reported.
        assert_eq!(
            verify_ledger(lines(), vec![ledger_row(1, "req_old", 100)], None),
            vec![
                "batch of key.use entry 1: the ledger row of request req_new (cost_nano_usd 100) was deleted"
            ]
        );
        // A row before the horizon that is still there is still compared.
        assert_eq!(
            verify_ledger(lines(), vec![ledger_row(1, "req_old", 7), new_row], None),
            vec![
                "batch of key.use entry 1: ledger row 1 (request req_old) has cost_nano_usd 7, the audit log says 100"
            ]
        );
        // Without the prune entry, the missing old row is a deletion.
        assert_eq!(
            verify_ledger(
                log[..1].iter().map(String::as_str),
                vec![ledger_row(2, "req_new", 100)],
                None
            ),
            vec![
                "batch of key.use entry 1: the ledger row of request req_old (cost_nano_usd 100) was deleted"
            ]
        );
    }

    #[test]
    fn lines_are_written_in_the_entry_format() {
        // The borrowed writer and the owned reader must agree byte for byte:
        // the hash covers the exact line.
        let event = AuditEvent {
            at: datetime!(2026-11-23 10:00 UTC),
            kind: "key.use".into(),
            actor: "gateway".to_owned(),
            data: json!({"count": 1, "uses": [{"request_id": "req_a", "cost_nano_usd": 5}]}).into(),
        };
        let entries = Chain::resume(None, key()).entries(std::slice::from_ref(&event));
        let owned = EntryLine {
            seq: 1,
            at: "2026-11-23T10:00:00Z".to_owned(),
            kind: event.kind.clone(),
            actor: event.actor.clone(),
            data: serde_json::to_value(&event.data).unwrap(),
            prev: hex(&[0u8; 32]),
        };
        assert_eq!(entries[0].line, serde_json::to_string(&owned).unwrap());
        let parsed: EntryLine = serde_json::from_str(&entries[0].line).unwrap();
        assert_eq!(parsed.data, owned.data);
    }

    #[test]
    fn typed_uses_are_written_as_the_json_object_they_stand_for() {
        // The chain's format was a `Value` per use; the typed form must
        // give the same bytes, or old and new entries would hash apart.
        let use_of = |client: Option<&str>| KeyUse {
            at_ms: 1_764_000_000_123,
            cache_write_tokens: 3,
            cached_input_tokens: 4,
            client: client.map(str::to_owned),
            cost_nano_usd: 1_500,
            env: "prod".parse().unwrap(),
            input_tokens: 10,
            key_id: keyforge_types::KeyId::generate(),
            outcome: "client_cancelled",
            output_tokens: 20,
            provider: "openai".parse().unwrap(),
            provider_key_version: 2,
            reasoning_tokens: 5,
            request_id: "req_\"quoted\"".to_owned(),
            status: 200,
        };
        let uses = vec![use_of(Some("c1a2")), use_of(None)];
        let as_value = |u: &KeyUse| {
            json!({
                "at_ms": u.at_ms, "request_id": u.request_id, "key_id": u.key_id,
                "env": u.env, "provider": u.provider,
                "provider_key_version": u.provider_key_version, "status": u.status,
                "outcome": u.outcome, "cost_nano_usd": u.cost_nano_usd,
                "input_tokens": u.input_tokens, "cached_input_tokens": u.cached_input_tokens,
                "cache_write_tokens": u.cache_write_tokens, "output_tokens": u.output_tokens,
                "reasoning_tokens": u.reasoning_tokens, "client": u.client,
            })
        };
        let values: Vec<serde_json::Value> = uses.iter().map(as_value).collect();
        assert_eq!(
            serde_json::to_string(&AuditData::Uses(uses)).unwrap(),
            serde_json::to_string(&json!({"count": 2, "uses": values})).unwrap()
        );
    }
}
