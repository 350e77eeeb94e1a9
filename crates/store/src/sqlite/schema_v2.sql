-- Schema version 2: the usage ledger, one row per request that reached a
-- provider. Times are Unix milliseconds (UTC); money is integer nano-USD.
CREATE TABLE ledger (
    id                   INTEGER PRIMARY KEY,
    at_ms                INTEGER NOT NULL,
    request_id           TEXT NOT NULL,
    key_id               TEXT NOT NULL,
    env                  TEXT NOT NULL,
    provider             TEXT NOT NULL,
    provider_key_version INTEGER NOT NULL,
    model                TEXT,
    input_tokens         INTEGER NOT NULL,
    cached_input_tokens  INTEGER NOT NULL,
    cache_write_tokens   INTEGER NOT NULL,
    output_tokens        INTEGER NOT NULL,
    reasoning_tokens     INTEGER NOT NULL,
    usage_source         TEXT NOT NULL,
    cost_nano_usd        INTEGER NOT NULL,
    priced_by            TEXT NOT NULL,
    status               INTEGER NOT NULL,
    latency_ms           INTEGER NOT NULL
) STRICT;

CREATE INDEX ledger_at ON ledger (at_ms);
CREATE INDEX ledger_key_at ON ledger (key_id, at_ms);
