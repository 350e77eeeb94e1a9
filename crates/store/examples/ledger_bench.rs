//! Sustained ledger throughput into SQLite, measured alone: what the
//! gateway's group-commit writer (crates/gateway/src/ledger.rs) asks of the
//! store for every batch, in the same shape, as fast as the store takes it.
//!
//! Each batch is `BATCH` ledger records plus the audit rows the writer
//! appends with them: one `key.use` entry naming every record (the same
//! fields as the gateway's, serialized with serde_json and hashed with
//! SHA-256) and a checkpoint line. Records are spread over `KEYS` keys,
//! three models and two providers, and their arrival times advance at
//! `RATE` records per second of simulated time, so rollups see realistic
//! minute buckets. Run by `bench/ledger/run` (which also builds the
//! baseline); prints one line of `key=value` figures.
//!
//!   cargo run --release -p keyforge-store --example ledger_bench -- [records] [batch]

use std::time::Instant;

use keyforge_store::{AuditCheckpoint, AuditRow, LedgerRecord, SqliteStore, Store};
use keyforge_types::{EnvName, KeyId, ProjectName, ProviderName};

/// The keyforge binary's allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 50;
const RATE: i64 = 60_000;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let total: usize = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let batch: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into()))?;
    let path = dir.path().join("keyforge.db");
    let store = SqliteStore::open(&path).await?;

    let keys: Vec<KeyId> = (0..KEYS).map(|_| KeyId::generate()).collect();
    let envs = [EnvName::parse("prod")?, EnvName::parse("dev")?];
    let projects = [ProjectName::parse("web")?, ProjectName::parse("agents")?];
    let providers = [
        ProviderName::parse("openai")?,
        ProviderName::parse("anthropic")?,
    ];
    let models = ["gpt-4o-mini", "gpt-4.1", "claude-sonnet-4"];
    let start_ms: i64 = 1_790_000_000_000;

    let mut seq = 0u64;
    let mut prev = [0u8; 32];
    let mut written = 0usize;
    let began = Instant::now();
    let cpu_began = process_cpu_secs();
    let mut tail_began = None;
    let mut batch_secs: Vec<f64> = Vec::with_capacity(total / batch + 1);
    let mut commit_secs: Vec<f64> = Vec::with_capacity(total / batch + 1);
    while written < total {
        let n = batch.min(total - written);
        let records: Vec<LedgerRecord> = (written..written + n)
            .map(|i| {
                let k = i % KEYS;
                LedgerRecord {
                    at_ms: start_ms + i64::try_from(i).unwrap_or(0) * 1000 / RATE,
                    request_id: format!("req_{:024x}", i),
                    key_id: keys[k].clone(),
                    env: envs[k % 2].clone(),
                    project: (!k.is_multiple_of(3)).then(|| projects[k % 2].clone()),
                    provider: providers[k % 2].clone(),
                    provider_key_version: 1 + u32::from(i % 10 == 0),
                    model: Some(models[i % 3].to_owned()),
                    input_tokens: 1200 + (i % 97) as u64,
                    cached_input_tokens: 0,
                    cache_write_tokens: 0,
                    output_tokens: 300 + (i % 31) as u64,
                    reasoning_tokens: 0,
                    usage_source: "reported",
                    cost_nano_usd: 450_000 + (i % 1000) as i64,
                    priced_by: "table",
                    status: if i % 100 == 0 { 429 } else { 200 },
                    latency_ms: 300,
                    outcome: "ok",
                }
            })
            .collect();
        let batch_began = Instant::now();
        // The writer's audit work for the batch: one key.use entry.
        let uses: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "at_ms": r.at_ms, "request_id": r.request_id, "key_id": r.key_id,
                    "env": r.env, "provider": r.provider, "provider_key_version": r.provider_key_version,
                    "status": r.status, "outcome": r.outcome, "cost_nano_usd": r.cost_nano_usd,
                    "input_tokens": r.input_tokens, "cached_input_tokens": r.cached_input_tokens,
                    "cache_write_tokens": r.cache_write_tokens, "output_tokens": r.output_tokens,
                    "reasoning_tokens": r.reasoning_tokens, "client": "c0ffee0123456789",
                })
            })
            .collect();
        seq += 1;
        let line = serde_json::to_string(&serde_json::json!({
            "seq": seq, "at": "2026-09-21T10:00:00Z", "kind": "key.use", "actor": "gateway",
            "data": {"count": uses.len(), "uses": uses},
            "prev": prev.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        }))?;
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, line.as_bytes());
        prev.copy_from_slice(hash.as_ref());
        let audit = [AuditRow {
            seq,
            at_ms: records[0].at_ms,
            kind: "key.use".to_owned(),
            line,
            hash: prev.to_vec(),
        }];
        let checkpoint = AuditCheckpoint {
            seq,
            line: format!(
                "{{\"checkpoint\":{{\"seq\":{seq},\"mac\":\"{}\"}}}}",
                "ab".repeat(32)
            ),
        };
        let commit_began = Instant::now();
        store
            .commit_batch(&records, &audit, Some(&checkpoint))
            .await?;
        commit_secs.push(commit_began.elapsed().as_secs_f64());
        batch_secs.push(batch_began.elapsed().as_secs_f64());
        written += n;
        if tail_began.is_none() && written >= total * 3 / 4 {
            tail_began = Some((Instant::now(), written));
        }
    }
    let secs = began.elapsed().as_secs_f64();
    let cpu = process_cpu_secs() - cpu_began;
    let tail = tail_began.map_or(0.0, |(at, from)| {
        (total - from) as f64 / at.elapsed().as_secs_f64().max(1e-9)
    });
    batch_secs.sort_by(f64::total_cmp);
    commit_secs.sort_by(f64::total_cmp);
    let pct = |p: f64| batch_secs[((batch_secs.len() as f64 - 1.0) * p) as usize] * 1000.0;
    let commit_p50 = commit_secs[commit_secs.len() / 2] * 1000.0;
    drop(store);
    let size: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    #[expect(clippy::print_stdout, reason = "the bench's report is its output")]
    let report = || {
        println!(
            "records={total} batch={batch} secs={secs:.2} records_per_s={:.0} last_quarter_records_per_s={tail:.0} \
         batch_ms_p50={:.1} batch_ms_p99={:.1} commit_ms_p50={commit_p50:.1} db_bytes_per_record={:.0} \
         cpu_s={cpu:.2} records_per_cpu_s={:.0}",
            total as f64 / secs,
            pct(0.5),
            pct(0.99),
            size as f64 / total as f64,
            total as f64 / cpu.max(1e-9),
        )
    };
    report();
    Ok(())
}

/// User and system CPU time of this process so far (every thread: the
/// writer and SQLite's worker), from `/proc/self/stat` (fields 14 and 15,
/// in clock ticks of 1/100 s). On a machine shared with other work, the
/// records per CPU second say what one idle core would sustain.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the name: state is field 3, so utime (14) and stime (15) are
    // at 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}
