-- Schema version 9: the ledger as raw rows plus rollups.
--
-- Raw rows (`ledger`) are kept for a retention period and pruned in the
-- background; they keep one index besides the table itself (`ledger_at`,
-- for pruning and for rebuilding rate limiters), where version 8 kept five.
-- Everything that sums the ledger (usage, budgets, rotation traffic,
-- upstream health) reads `ledger_rollup`, written in the same transaction
-- as the raw rows.
--
-- `ledger_rollup`: one row per bucket and (key, environment, project,
-- provider, provider key version, model). `bucket_ms` is the bucket's start
-- (Unix ms, UTC): a minute while the bucket is younger than the raw rows'
-- retention, an hour after that (older minutes are merged into their hour,
-- which keeps every budget period exact: periods start on the hour). The
-- empty text stands for "no project" and "no model" (the primary key
-- cannot hold NULL). Money is integer nano-USD. The counts are those the
-- readers need: `errors` (status >= 400), `estimated` (usage_source
-- estimated), `fallback_priced`, `unmetered`, `client_cancelled`, and for
-- upstream health `ok` (< 400), `rejected` (401, 403), `rate_limited`
-- (429), `failed` (>= 500), `client_errors` (other 4xx); `last_ms` and
-- `last_status` are the latest request's arrival and status.
DROP INDEX IF EXISTS ledger_key_at;
DROP INDEX IF EXISTS ledger_project_at;
DROP INDEX IF EXISTS ledger_env_at;
DROP INDEX IF EXISTS ledger_provider_version_at;

CREATE TABLE ledger_rollup (
    bucket_ms            INTEGER NOT NULL,
    key_id               TEXT NOT NULL,
    env                  TEXT NOT NULL,
    project              TEXT NOT NULL,
    provider             TEXT NOT NULL,
    provider_key_version INTEGER NOT NULL,
    model                TEXT NOT NULL,
    requests             INTEGER NOT NULL,
    input_tokens         INTEGER NOT NULL,
    cached_input_tokens  INTEGER NOT NULL,
    cache_write_tokens   INTEGER NOT NULL,
    output_tokens        INTEGER NOT NULL,
    reasoning_tokens     INTEGER NOT NULL,
    cost_nano_usd        INTEGER NOT NULL,
    errors               INTEGER NOT NULL,
    estimated            INTEGER NOT NULL,
    fallback_priced      INTEGER NOT NULL,
    unmetered            INTEGER NOT NULL,
    client_cancelled     INTEGER NOT NULL,
    ok                   INTEGER NOT NULL,
    rejected             INTEGER NOT NULL,
    rate_limited         INTEGER NOT NULL,
    failed               INTEGER NOT NULL,
    client_errors        INTEGER NOT NULL,
    last_ms              INTEGER NOT NULL,
    last_status          INTEGER NOT NULL,
    PRIMARY KEY (bucket_ms, key_id, env, project, provider, provider_key_version, model)
) STRICT, WITHOUT ROWID;

-- Rollup rows are written once per bucket and group (later batches update
-- counts, not indexed columns), so these indexes cost next to nothing.
CREATE INDEX ledger_rollup_key ON ledger_rollup (key_id, bucket_ms);
CREATE INDEX ledger_rollup_project ON ledger_rollup (project, bucket_ms);
CREATE INDEX ledger_rollup_env ON ledger_rollup (env, provider, bucket_ms);

-- Upgraded installs keep their figures: every raw row so far, rolled up
-- into its minute. (`MAX(at_ms), status` takes the status of the row with
-- the latest arrival: SQLite's bare-column rule for MAX.)
INSERT INTO ledger_rollup
SELECT (at_ms / 60000) * 60000, key_id, env, COALESCE(project, ''), provider, provider_key_version,
       COALESCE(model, ''), COUNT(*), SUM(input_tokens), SUM(cached_input_tokens),
       SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nano_usd),
       SUM(status >= 400), SUM(usage_source = 'estimated'), SUM(priced_by = 'fallback'),
       SUM(priced_by = 'unmetered'), SUM(outcome = 'client_cancelled'), SUM(status < 400),
       SUM(status IN (401, 403)), SUM(status = 429), SUM(status >= 500),
       SUM(status >= 400 AND status < 500 AND status NOT IN (401, 403, 429)),
       MAX(at_ms), status
FROM ledger
GROUP BY 1, key_id, env, COALESCE(project, ''), provider, provider_key_version, COALESCE(model, '');
