//! The ledger's write path and its rollups (see schema_v9.sql).
//!
//! A batch's raw rows go in with multi-row INSERTs of a few fixed sizes, so
//! each statement is prepared once and reused from sqlx's statement cache
//! for every later batch. The batch is then summed in memory into its
//! (minute, key, environment, project, provider, key version, model)
//! groups and those are upserted into `ledger_rollup`: a busy batch of a
//! thousand records touches a handful of rollup rows.
//!
//! Readers sum `ledger_rollup` through [`source`], which adds the raw rows
//! of the partial minute at the start of a query's window, so a window
//! that starts mid-minute is still exact.

use std::collections::HashMap;

use keyforge_types::ProjectName;
use sqlx::SqliteConnection;

use super::to_i64;
use crate::StoreError;
use crate::model::LedgerRecord;

pub(crate) const MINUTE_MS: i64 = 60_000;
pub(crate) const HOUR_MS: i64 = 3_600_000;

/// Raw rows per INSERT statement: the batch is cut into chunks of these
/// sizes (largest first), so at most this many distinct statements exist
/// and all stay prepared. 19 columns x 256 rows stays below SQLite's
/// bound-parameter limit (32,766).
const RAW_CHUNKS: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];
/// Rollup rows per upsert statement (26 columns each).
const ROLLUP_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

const RAW_INSERT: &str = "INSERT INTO ledger (at_ms, request_id, key_id, env, project, provider, provider_key_version, model, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, usage_source, cost_nano_usd, \
     priced_by, status, latency_ms, outcome) ";

const ROLLUP_COLUMNS: &str = "bucket_ms, key_id, env, project, provider, provider_key_version, model, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, errors, \
     estimated, fallback_priced, unmetered, client_cancelled, ok, rejected, rate_limited, failed, client_errors, \
     last_ms, last_status";

/// Adds an incoming rollup row (`excluded`) to the stored one.
const ROLLUP_MERGE: &str = " ON CONFLICT (bucket_ms, key_id, env, project, provider, provider_key_version, model) DO UPDATE SET \
     requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, \
     cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens, \
     cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, \
     output_tokens = output_tokens + excluded.output_tokens, reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
     cost_nano_usd = cost_nano_usd + excluded.cost_nano_usd, errors = errors + excluded.errors, \
     estimated = estimated + excluded.estimated, fallback_priced = fallback_priced + excluded.fallback_priced, \
     unmetered = unmetered + excluded.unmetered, client_cancelled = client_cancelled + excluded.client_cancelled, \
     ok = ok + excluded.ok, rejected = rejected + excluded.rejected, rate_limited = rate_limited + excluded.rate_limited, \
     failed = failed + excluded.failed, client_errors = client_errors + excluded.client_errors, \
     last_status = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last_status ELSE last_status END, \
     last_ms = MAX(last_ms, excluded.last_ms)";

/// Cuts `len` rows into chunks of the given sizes, largest first.
fn chunk_sizes(mut len: usize, sizes: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &size in sizes {
        while len >= size {
            out.push(size);
            len -= size;
        }
    }
    out
}

/// Appends raw ledger rows.
pub(crate) async fn insert_raw(
    connection: &mut SqliteConnection,
    records: &[LedgerRecord],
) -> Result<(), StoreError> {
    let mut rest = records;
    for size in chunk_sizes(records.len(), &RAW_CHUNKS) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(RAW_INSERT);
        insert.push_values(chunk, |mut row, r| {
            row.push_bind(r.at_ms)
                .push_bind(r.request_id.as_str())
                .push_bind(r.key_id.as_str())
                .push_bind(r.env.as_str())
                .push_bind(r.project.as_ref().map(ProjectName::as_str))
                .push_bind(r.provider.as_str())
                .push_bind(i64::from(r.provider_key_version))
                .push_bind(r.model.as_deref())
                .push_bind(to_i64(r.input_tokens))
                .push_bind(to_i64(r.cached_input_tokens))
                .push_bind(to_i64(r.cache_write_tokens))
                .push_bind(to_i64(r.output_tokens))
                .push_bind(to_i64(r.reasoning_tokens))
                .push_bind(r.usage_source)
                .push_bind(r.cost_nano_usd)
                .push_bind(r.priced_by)
                .push_bind(i64::from(r.status))
                .push_bind(to_i64(r.latency_ms))
                .push_bind(r.outcome);
        });
        insert
            .build()
            .persistent(true)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// One rollup group: a minute and the dimensions usage is asked by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Group<'a> {
    pub(crate) bucket_ms: i64,
    pub(crate) key_id: &'a str,
    pub(crate) env: &'a str,
    /// Empty: no project.
    pub(crate) project: &'a str,
    pub(crate) provider: &'a str,
    pub(crate) provider_key_version: u32,
    /// Empty: no model.
    pub(crate) model: &'a str,
}

/// A group's sums (see schema_v9.sql for each count's meaning).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sums {
    pub(crate) requests: i64,
    pub(crate) input_tokens: i64,
    pub(crate) cached_input_tokens: i64,
    pub(crate) cache_write_tokens: i64,
    pub(crate) output_tokens: i64,
    pub(crate) reasoning_tokens: i64,
    pub(crate) cost_nano_usd: i64,
    pub(crate) errors: i64,
    pub(crate) estimated: i64,
    pub(crate) fallback_priced: i64,
    pub(crate) unmetered: i64,
    pub(crate) client_cancelled: i64,
    pub(crate) ok: i64,
    pub(crate) rejected: i64,
    pub(crate) rate_limited: i64,
    pub(crate) failed: i64,
    pub(crate) client_errors: i64,
    pub(crate) last_ms: i64,
    pub(crate) last_status: i64,
}

impl Sums {
    fn add(&mut self, r: &LedgerRecord) {
        let status = r.status;
        self.requests += 1;
        self.input_tokens = self.input_tokens.saturating_add(to_i64(r.input_tokens));
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(to_i64(r.cached_input_tokens));
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(to_i64(r.cache_write_tokens));
        self.output_tokens = self.output_tokens.saturating_add(to_i64(r.output_tokens));
        self.reasoning_tokens = self
            .reasoning_tokens
            .saturating_add(to_i64(r.reasoning_tokens));
        self.cost_nano_usd = self.cost_nano_usd.saturating_add(r.cost_nano_usd);
        self.errors += i64::from(status >= 400);
        self.estimated += i64::from(r.usage_source == "estimated");
        self.fallback_priced += i64::from(r.priced_by == "fallback");
        self.unmetered += i64::from(r.priced_by == "unmetered");
        self.client_cancelled += i64::from(r.outcome == "client_cancelled");
        self.ok += i64::from(status < 400);
        self.rejected += i64::from(status == 401 || status == 403);
        self.rate_limited += i64::from(status == 429);
        self.failed += i64::from(status >= 500);
        self.client_errors +=
            i64::from((400..500).contains(&status) && !matches!(status, 401 | 403 | 429));
        // Later records of a batch win ties, as later rows did in the
        // ledger's `ORDER BY at_ms DESC, id DESC`.
        if self.requests == 1 || r.at_ms >= self.last_ms {
            self.last_ms = r.at_ms;
            self.last_status = i64::from(status);
        }
    }
}

/// A batch's records summed into their rollup groups, in first-seen order
/// (so statements, and tests, are deterministic).
pub(crate) fn summarize(records: &[LedgerRecord]) -> Vec<(Group<'_>, Sums)> {
    let mut groups: HashMap<Group<'_>, Sums> = HashMap::new();
    let mut order: Vec<Group<'_>> = Vec::new();
    for r in records {
        let group = Group {
            bucket_ms: r.at_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            key_id: r.key_id.as_str(),
            env: r.env.as_str(),
            project: r.project.as_ref().map_or("", ProjectName::as_str),
            provider: r.provider.as_str(),
            provider_key_version: r.provider_key_version,
            model: r.model.as_deref().unwrap_or(""),
        };
        groups
            .entry(group.clone())
            .or_insert_with(|| {
                order.push(group);
                Sums::default()
            })
            .add(r);
    }
    order
        .into_iter()
        .filter_map(|group| groups.remove(&group).map(|sums| (group, sums)))
        .collect()
}

/// Adds a batch's records to their rollup rows.
pub(crate) async fn upsert(
    connection: &mut SqliteConnection,
    records: &[LedgerRecord],
) -> Result<(), StoreError> {
    let summed = summarize(records);
    let rows: Vec<(&Group<'_>, &Sums)> = summed.iter().map(|(g, s)| (g, s)).collect();
    let mut rest = rows.as_slice();
    for size in chunk_sizes(rows.len(), &ROLLUP_CHUNKS) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "INSERT INTO ledger_rollup ({ROLLUP_COLUMNS}) "
        ));
        insert.push_values(chunk, |mut row, (g, s)| {
            row.push_bind(g.bucket_ms)
                .push_bind(g.key_id)
                .push_bind(g.env)
                .push_bind(g.project)
                .push_bind(g.provider)
                .push_bind(i64::from(g.provider_key_version))
                .push_bind(g.model)
                .push_bind(s.requests)
                .push_bind(s.input_tokens)
                .push_bind(s.cached_input_tokens)
                .push_bind(s.cache_write_tokens)
                .push_bind(s.output_tokens)
                .push_bind(s.reasoning_tokens)
                .push_bind(s.cost_nano_usd)
                .push_bind(s.errors)
                .push_bind(s.estimated)
                .push_bind(s.fallback_priced)
                .push_bind(s.unmetered)
                .push_bind(s.client_cancelled)
                .push_bind(s.ok)
                .push_bind(s.rejected)
                .push_bind(s.rate_limited)
                .push_bind(s.failed)
                .push_bind(s.client_errors)
                .push_bind(s.last_ms)
                .push_bind(s.last_status);
        });
        insert.push(ROLLUP_MERGE);
        insert
            .build()
            .persistent(true)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// The first minute boundary at or after `since_ms`.
pub(crate) fn minute_ceil(since_ms: i64) -> i64 {
    since_ms.div_euclid(MINUTE_MS) * MINUTE_MS
        + if since_ms.rem_euclid(MINUTE_MS) == 0 {
            0
        } else {
            MINUTE_MS
        }
}

/// The rollups' columns, in the shape `SOURCE` gives (a macro, so
/// `concat!` can join it into the queries below).
macro_rules! rollup_rows {
    () => {
        "SELECT bucket_ms AS at_ms, key_id, env, project, provider, provider_key_version, model, requests, input_tokens, \
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, errors, estimated, \
       fallback_priced, unmetered, client_cancelled, ok, rejected, rate_limited, failed, client_errors, last_ms, last_status \
     FROM ledger_rollup"
    };
}

/// Raw ledger rows in rollup shape (counts of one request).
macro_rules! raw_rows {
    () => {
        "SELECT at_ms, key_id, env, COALESCE(project, ''), provider, provider_key_version, COALESCE(model, ''), 1, input_tokens, \
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nano_usd, status >= 400, \
       usage_source = 'estimated', priced_by = 'fallback', priced_by = 'unmetered', outcome = 'client_cancelled', \
       status < 400, status IN (401, 403), status = 429, status >= 500, \
       status >= 400 AND status < 500 AND status NOT IN (401, 403, 429), at_ms, status \
     FROM ledger"
    };
}

/// A common table expression `src` (to follow `WITH`): the ledger since `?1` (Unix ms) in
/// rollup shape, read from the rollups from `?2` (the first minute
/// boundary at or after `?1`: [`minute_ceil`]) and from the raw rows
/// between the two. Columns: `at_ms` (bucket start, or the raw row's
/// arrival), the rollup's dimensions (`project` and `model` empty when
/// none) and counts.
pub(crate) const SOURCE: &str = concat!(
    "src AS ( ",
    rollup_rows!(),
    " WHERE bucket_ms >= ?2 UNION ALL ",
    raw_rows!(),
    " WHERE at_ms >= ?1 AND at_ms < ?2) "
);

/// `src` for a window `[?1, ?7)` (Unix ms): the rollups of the whole
/// minutes `[?2, ?6)` (`?2` as in [`SOURCE`], `?6` the minute `?7` falls
/// in: [`minute_floor`]), plus the raw rows of the partial minutes at
/// either end. With no end, `?6` and `?7` are `i64::MAX` and this is
/// [`SOURCE`]. Past retention the rollups are hourly (at the hour's
/// start), so a window then covers the whole hour its end falls in.
pub(crate) const WINDOW_SOURCE: &str = concat!(
    "src AS ( ",
    rollup_rows!(),
    " WHERE bucket_ms >= ?2 AND bucket_ms < ?6 UNION ALL ",
    raw_rows!(),
    " WHERE at_ms >= ?1 AND at_ms < ?7 AND (at_ms < ?2 OR at_ms >= ?6)) "
);

/// The minute boundary at or before `until_ms`.
pub(crate) fn minute_floor(until_ms: i64) -> i64 {
    until_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Merges the minute rollups in `[from_ms, to_ms)` (hour-aligned) into
/// their hours: each hour's rows become one per group, at the hour's start.
pub(crate) async fn coarsen(
    connection: &mut SqliteConnection,
    from_ms: i64,
    to_ms: i64,
) -> Result<u64, StoreError> {
    // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the
    // INSERT, not to a join in the SELECT.
    let sql = format!(
        "INSERT INTO ledger_rollup ({ROLLUP_COLUMNS}) \
         SELECT (bucket_ms / {HOUR_MS}) * {HOUR_MS}, key_id, env, project, provider, provider_key_version, model, \
           SUM(requests), SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), \
           SUM(reasoning_tokens), SUM(cost_nano_usd), SUM(errors), SUM(estimated), SUM(fallback_priced), SUM(unmetered), \
           SUM(client_cancelled), SUM(ok), SUM(rejected), SUM(rate_limited), SUM(failed), SUM(client_errors), \
           MAX(last_ms), last_status \
         FROM ledger_rollup WHERE bucket_ms >= ?1 AND bucket_ms < ?2 AND bucket_ms % {HOUR_MS} != 0 AND true \
         GROUP BY 1, key_id, env, project, provider, provider_key_version, model{ROLLUP_MERGE}"
    );
    sqlx::query(&sql)
        .bind(from_ms)
        .bind(to_ms)
        .execute(&mut *connection)
        .await?;
    let merged = sqlx::query(&format!(
        "DELETE FROM ledger_rollup WHERE bucket_ms >= ?1 AND bucket_ms < ?2 AND bucket_ms % {HOUR_MS} != 0"
    ))
    .bind(from_ms)
    .bind(to_ms)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_batch_with_few_distinct_sizes() {
        assert_eq!(chunk_sizes(0, &RAW_CHUNKS), Vec::<usize>::new());
        assert_eq!(chunk_sizes(1024, &RAW_CHUNKS), vec![256; 4]);
        assert_eq!(chunk_sizes(300, &RAW_CHUNKS), vec![256, 32, 8, 4]);
        assert_eq!(chunk_sizes(3, &ROLLUP_CHUNKS), vec![2, 1]);
    }

    #[test]
    fn a_window_starts_at_the_next_minute_boundary() {
        assert_eq!(minute_ceil(0), 0);
        assert_eq!(minute_ceil(60_000), 60_000);
        assert_eq!(minute_ceil(60_001), 120_000);
        assert_eq!(minute_ceil(119_999), 120_000);
    }
}
