-- Schema version 7: how each request that reached a provider ended.
-- `outcome`: `ok` (the response was delivered to its end), `client_cancelled`
-- (the client went away before the end: the provider still ran the
-- request, and it is billed at least its input), `upstream_cut` (the
-- provider's stream broke off), `upstream_error` (the provider answered
-- with an error status), `upstream_failed` (no answer: unreachable, timed
-- out, connection closed). Rows written before version 7 read as `ok`.
ALTER TABLE ledger ADD COLUMN outcome TEXT NOT NULL DEFAULT 'ok';
