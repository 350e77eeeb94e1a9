//! The ledger's write path and its rollups in PostgreSQL (the same shape
//! as SQLite's, see `../sqlite/rollup.rs` and `../sqlite/schema_v9.sql`).
//!
//! A batch's raw rows go in with one `INSERT … SELECT FROM UNNEST(…)`: one
//! statement and one round trip whatever the batch's size, prepared once.
//! Its rollup groups are upserted the same way in the same transaction,
//! sorted by their primary key, so two instances writing batches that
//! touch the same groups lock them in the same order and never deadlock.

use keyforge_types::ProjectName;
use sqlx::PgConnection;

use crate::StoreError;
use crate::model::LedgerRecord;
use crate::sqlite::rollup::summarize;
use crate::sqlite::to_i64;

pub(crate) use crate::sqlite::rollup::{HOUR_MS, minute_ceil, minute_floor};

const RAW_INSERT: &str = "INSERT INTO ledger (at_ms, request_id, key_id, env, project, provider, provider_key_version, model, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost_nano_usd, \
     priced_by, status, latency_ms, outcome) \
     SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::BIGINT[], $8::TEXT[], \
     $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::BIGINT[], $13::BIGINT[], $14::TEXT[], $15::BIGINT[], $16::TEXT[], \
     $17::BIGINT[], $18::BIGINT[], $19::TEXT[])";

const ROLLUP_COLUMNS: &str = "bucket_ms, key_id, env, project, provider, provider_key_version, model, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, errors, \
     estimated, fallback_priced, unmetered, client_cancelled, ok, rejected, rate_limited, failed, client_errors, \
     last_ms, last_status";

/// Adds an incoming rollup row (`EXCLUDED`) to the stored one.
const ROLLUP_MERGE: &str = " ON CONFLICT (bucket_ms, key_id, env, project, provider, provider_key_version, model) DO UPDATE SET \
     requests = r.requests + EXCLUDED.requests, input_tokens = r.input_tokens + EXCLUDED.input_tokens, \
     cached_input_tokens = r.cached_input_tokens + EXCLUDED.cached_input_tokens, \
     cache_write_tokens = r.cache_write_tokens + EXCLUDED.cache_write_tokens, \
     output_tokens = r.output_tokens + EXCLUDED.output_tokens, reasoning_tokens = r.reasoning_tokens + EXCLUDED.reasoning_tokens, \
     cost_nano_usd = r.cost_nano_usd + EXCLUDED.cost_nano_usd, errors = r.errors + EXCLUDED.errors, \
     estimated = r.estimated + EXCLUDED.estimated, fallback_priced = r.fallback_priced + EXCLUDED.fallback_priced, \
     unmetered = r.unmetered + EXCLUDED.unmetered, client_cancelled = r.client_cancelled + EXCLUDED.client_cancelled, \
     ok = r.ok + EXCLUDED.ok, rejected = r.rejected + EXCLUDED.rejected, rate_limited = r.rate_limited + EXCLUDED.rate_limited, \
     failed = r.failed + EXCLUDED.failed, client_errors = r.client_errors + EXCLUDED.client_errors, \
     last_status = CASE WHEN EXCLUDED.last_ms >= r.last_ms THEN EXCLUDED.last_status ELSE r.last_status END, \
     last_ms = GREATEST(r.last_ms, EXCLUDED.last_ms)";

/// Appends raw ledger rows: one statement for the whole batch.
pub(crate) async fn insert_raw(
    connection: &mut PgConnection,
    records: &[LedgerRecord],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&LedgerRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let text = |f: fn(&LedgerRecord) -> String| records.iter().map(f).collect::<Vec<String>>();
    let optional =
        |f: fn(&LedgerRecord) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
    sqlx::query(RAW_INSERT)
        .bind(column(|r| r.at_ms))
        .bind(text(|r| r.request_id.clone()))
        .bind(text(|r| r.key_id.as_str().to_owned()))
        .bind(text(|r| r.env.as_str().to_owned()))
        .bind(optional(|r| {
            r.project
                .as_ref()
                .map(|p| ProjectName::as_str(p).to_owned())
        }))
        .bind(text(|r| r.provider.as_str().to_owned()))
        .bind(column(|r| i64::from(r.provider_key_version)))
        .bind(optional(|r| r.model.clone()))
        .bind(column(|r| to_i64(r.input_tokens)))
        .bind(column(|r| to_i64(r.cached_input_tokens)))
        .bind(column(|r| to_i64(r.cache_write_tokens)))
        .bind(column(|r| to_i64(r.output_tokens)))
        .bind(column(|r| to_i64(r.reasoning_tokens)))
        .bind(text(|r| r.usage_source.to_owned()))
        .bind(column(|r| r.cost_nano_usd))
        .bind(text(|r| r.priced_by.to_owned()))
        .bind(column(|r| i64::from(r.status)))
        .bind(column(|r| to_i64(r.latency_ms)))
        .bind(text(|r| r.outcome.to_owned()))
        .execute(connection)
        .await?;
    Ok(())
}

/// Adds a batch's records to their rollup rows, in primary-key order.
pub(crate) async fn upsert(
    connection: &mut PgConnection,
    records: &[LedgerRecord],
) -> Result<(), StoreError> {
    let mut rows = summarize(records);
    if rows.is_empty() {
        return Ok(());
    }
    rows.sort_by(|(a, _), (b, _)| {
        (
            a.bucket_ms,
            a.key_id,
            a.env,
            a.project,
            a.provider,
            a.provider_key_version,
            a.model,
        )
            .cmp(&(
                b.bucket_ms,
                b.key_id,
                b.env,
                b.project,
                b.provider,
                b.provider_key_version,
                b.model,
            ))
    });
    let texts: [Vec<String>; 5] = [
        rows.iter().map(|(g, _)| g.key_id.to_owned()).collect(),
        rows.iter().map(|(g, _)| g.env.to_owned()).collect(),
        rows.iter().map(|(g, _)| g.project.to_owned()).collect(),
        rows.iter().map(|(g, _)| g.provider.to_owned()).collect(),
        rows.iter().map(|(g, _)| g.model.to_owned()).collect(),
    ];
    let number = |f: &dyn Fn(&crate::sqlite::rollup::Sums) -> i64| {
        rows.iter().map(|(_, s)| f(s)).collect::<Vec<i64>>()
    };
    let [key_id, env, project, provider, model] = texts;
    let sql = format!(
        "INSERT INTO ledger_rollup AS r ({ROLLUP_COLUMNS}) SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], \
         $4::TEXT[], $5::TEXT[], $6::BIGINT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], \
         $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[], $16::BIGINT[], $17::BIGINT[], $18::BIGINT[], \
         $19::BIGINT[], $20::BIGINT[], $21::BIGINT[], $22::BIGINT[], $23::BIGINT[], $24::BIGINT[], $25::BIGINT[], \
         $26::BIGINT[]){ROLLUP_MERGE}"
    );
    sqlx::query(&sql)
        .bind(rows.iter().map(|(g, _)| g.bucket_ms).collect::<Vec<i64>>())
        .bind(key_id)
        .bind(env)
        .bind(project)
        .bind(provider)
        .bind(
            rows.iter()
                .map(|(g, _)| i64::from(g.provider_key_version))
                .collect::<Vec<i64>>(),
        )
        .bind(model)
        .bind(number(&|s| s.requests))
        .bind(number(&|s| s.input_tokens))
        .bind(number(&|s| s.cached_input_tokens))
        .bind(number(&|s| s.cache_write_tokens))
        .bind(number(&|s| s.output_tokens))
        .bind(number(&|s| s.reasoning_tokens))
        .bind(number(&|s| s.cost_nano_usd))
        .bind(number(&|s| s.errors))
        .bind(number(&|s| s.estimated))
        .bind(number(&|s| s.fallback_priced))
        .bind(number(&|s| s.unmetered))
        .bind(number(&|s| s.client_cancelled))
        .bind(number(&|s| s.ok))
        .bind(number(&|s| s.rejected))
        .bind(number(&|s| s.rate_limited))
        .bind(number(&|s| s.failed))
        .bind(number(&|s| s.client_errors))
        .bind(number(&|s| s.last_ms))
        .bind(number(&|s| s.last_status))
        .execute(connection)
        .await?;
    Ok(())
}

/// A boolean as 0 or 1, typed as the rollups' counts.
macro_rules! count {
    ($e:literal) => {
        concat!("((", $e, ")::INT4)::BIGINT")
    };
}

/// The rollups' columns in `SOURCE`'s shape (a macro, for `concat!`).
macro_rules! rollup_rows {
    () => {
        concat!(
            "SELECT bucket_ms AS at_ms, key_id, env, project, provider, provider_key_version, model, requests, input_tokens, \
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, errors, estimated, \
       fallback_priced, unmetered, client_cancelled, ok, rejected, rate_limited, failed, client_errors, last_ms, last_status \
     FROM ledger_rollup"
        )
    };
}

/// Raw ledger rows in rollup shape (counts of one request).
macro_rules! raw_rows {
    () => {
        concat!(
            "SELECT at_ms, key_id, env, COALESCE(project, ''), provider, provider_key_version, COALESCE(model, ''), 1::BIGINT, input_tokens, \
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, ",
    count!("status >= 400"),
    ", ",
    count!("usage_source = 'estimated'"),
    ", ",
    count!("priced_by = 'fallback'"),
    ", ",
    count!("priced_by = 'unmetered'"),
    ", ",
    count!("outcome = 'client_cancelled'"),
    ", ",
    count!("status < 400"),
    ", ",
    count!("status IN (401, 403)"),
    ", ",
    count!("status = 429"),
    ", ",
    count!("status >= 500"),
    ", ",
    count!("status >= 400 AND status < 500 AND status NOT IN (401, 403, 429)"),
    ", at_ms, status \
     FROM ledger"
        )
    };
}

/// A common table expression `src` (to follow `WITH`): the ledger since
/// `$1` (Unix ms) in rollup shape, read from the rollups from `$2` (the
/// first minute boundary at or after `$1`: [`minute_ceil`]) and from the
/// raw rows between the two (see SQLite's `SOURCE`).
pub(crate) const SOURCE: &str = concat!(
    "src AS ( ",
    rollup_rows!(),
    " WHERE bucket_ms >= $2 UNION ALL ",
    raw_rows!(),
    " WHERE at_ms >= $1 AND at_ms < $2) "
);

/// `src` for a window `[$1, $7)` (Unix ms): the rollups of the whole
/// minutes `[$2, $6)`, plus the raw rows of the partial minutes at either
/// end (see SQLite's `WINDOW_SOURCE`).
pub(crate) const WINDOW_SOURCE: &str = concat!(
    "src AS ( ",
    rollup_rows!(),
    " WHERE bucket_ms >= $2 AND bucket_ms < $6 UNION ALL ",
    raw_rows!(),
    " WHERE at_ms >= $1 AND at_ms < $7 AND (at_ms < $2 OR at_ms >= $6)) "
);

/// Merges the minute rollups in `[from_ms, to_ms)` (hour-aligned) into
/// their hours: each hour's rows become one per group, at the hour's start.
/// The latest status is the one of the row with the latest arrival.
pub(crate) async fn coarsen(
    connection: &mut PgConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<u64, StoreError> {
    let sql = format!(
        "INSERT INTO ledger_rollup AS r ({ROLLUP_COLUMNS}) \
         SELECT (bucket_ms / {HOUR_MS}) * {HOUR_MS}, key_id, env, project, provider, provider_key_version, model, \
           SUM(requests)::BIGINT, SUM(input_tokens)::BIGINT, SUM(cached_input_tokens)::BIGINT, \
           SUM(cache_write_tokens)::BIGINT, SUM(output_tokens)::BIGINT, SUM(reasoning_tokens)::BIGINT, \
           SUM(cost_nano_usd)::BIGINT, SUM(errors)::BIGINT, SUM(estimated)::BIGINT, SUM(fallback_priced)::BIGINT, \
           SUM(unmetered)::BIGINT, SUM(client_cancelled)::BIGINT, SUM(ok)::BIGINT, SUM(rejected)::BIGINT, \
           SUM(rate_limited)::BIGINT, SUM(failed)::BIGINT, SUM(client_errors)::BIGINT, \
           MAX(last_ms), (array_agg(last_status ORDER BY last_ms DESC))[1] \
         FROM ledger_rollup WHERE bucket_ms >= $1 AND bucket_ms < $2 AND bucket_ms % {HOUR_MS} != 0 \
         GROUP BY 1, key_id, env, project, provider, provider_key_version, model \
         ORDER BY 1, key_id, env, project, provider, provider_key_version, model{ROLLUP_MERGE}"
    );
    sqlx::query(&sql)
        .bind(from_ms)
        .bind(to_ms)
        .execute(&mut *connection)
        .await?;
    let merged = sqlx::query(&format!(
        "DELETE FROM ledger_rollup WHERE bucket_ms >= $1 AND bucket_ms < $2 AND bucket_ms % {HOUR_MS} != 0"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    Ok(merged)
}
