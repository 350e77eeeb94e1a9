-- PostgreSQL schema version 9: SQLite's schema v1 to v9 (see
-- ../sqlite/schema*.sql for what each table and column means) in one step.
-- A PostgreSQL database starts at version 9; later versions are one file
-- each, like SQLite's.
--
-- Mapping: INTEGER -> BIGINT, BLOB -> BYTEA, TEXT -> TEXT COLLATE "C" (so
-- text sorts and compares byte-wise, as in SQLite). Where SQLite code
-- names rows by `rowid`, the table has `rid BIGINT GENERATED ALWAYS AS
-- IDENTITY`. Times are Unix seconds where SQLite has seconds, Unix ms in
-- `*_ms` columns; money is integer nano-USD.
CREATE TABLE meta (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE providers (
    rid             BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT COLLATE "C" NOT NULL,
    env             TEXT COLLATE "C" NOT NULL,
    kind            TEXT COLLATE "C" NOT NULL,
    base_url        TEXT COLLATE "C",
    created_at      BIGINT NOT NULL,
    rollout_percent BIGINT NOT NULL DEFAULT 0,
    mac             BYTEA,
    UNIQUE (env, name)
);

CREATE TABLE provider_credentials (
    rid         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    provider_id TEXT COLLATE "C" NOT NULL REFERENCES providers (id),
    version     BIGINT NOT NULL,
    stage       TEXT COLLATE "C" NOT NULL,
    sealed      BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    mac         BYTEA,
    PRIMARY KEY (provider_id, version)
);

CREATE TABLE virtual_keys (
    rid              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT COLLATE "C" NOT NULL,
    env              TEXT COLLATE "C" NOT NULL,
    hash             BYTEA NOT NULL UNIQUE,
    prefix           TEXT COLLATE "C" NOT NULL,
    scope            TEXT COLLATE "C" NOT NULL,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT,
    revoked_at       BIGINT,
    project          TEXT COLLATE "C",
    rpm              BIGINT,
    tpm              BIGINT,
    max_parallel     BIGINT,
    on_anomaly       TEXT COLLATE "C" NOT NULL DEFAULT 'alert',
    suspended_at     BIGINT,
    suspended_reason TEXT COLLATE "C",
    parent_id        TEXT COLLATE "C" REFERENCES virtual_keys (id),
    can_mint         BIGINT NOT NULL DEFAULT 0,
    origin           TEXT COLLATE "C" NOT NULL DEFAULT 'admin',
    mac              BYTEA
);
CREATE INDEX virtual_keys_parent ON virtual_keys (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE ledger (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms                BIGINT NOT NULL,
    request_id           TEXT COLLATE "C" NOT NULL,
    key_id               TEXT COLLATE "C" NOT NULL,
    env                  TEXT COLLATE "C" NOT NULL,
    provider             TEXT COLLATE "C" NOT NULL,
    provider_key_version BIGINT NOT NULL,
    model                TEXT COLLATE "C",
    input_tokens         BIGINT NOT NULL,
    cached_input_tokens  BIGINT NOT NULL,
    cache_write_tokens   BIGINT NOT NULL,
    output_tokens        BIGINT NOT NULL,
    reasoning_tokens     BIGINT NOT NULL,
    usage_source         TEXT COLLATE "C" NOT NULL,
    cost_nano_usd        BIGINT NOT NULL,
    priced_by            TEXT COLLATE "C" NOT NULL,
    status               BIGINT NOT NULL,
    latency_ms           BIGINT NOT NULL,
    project              TEXT COLLATE "C",
    outcome              TEXT COLLATE "C" NOT NULL DEFAULT 'ok'
);
CREATE INDEX ledger_at ON ledger (at_ms);

CREATE TABLE budgets (
    rid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id             TEXT COLLATE "C" PRIMARY KEY,
    scope_kind     TEXT COLLATE "C" NOT NULL,
    scope          TEXT COLLATE "C" NOT NULL,
    period         TEXT COLLATE "C" NOT NULL,
    limit_nano_usd BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    mac            BYTEA,
    UNIQUE (scope_kind, scope, period)
);

CREATE TABLE alert_webhooks (
    rid           BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id            TEXT COLLATE "C" PRIMARY KEY,
    sealed_url    BYTEA NOT NULL,
    display_url   TEXT COLLATE "C" NOT NULL,
    thresholds    TEXT COLLATE "C" NOT NULL,
    created_at_ms BIGINT NOT NULL,
    mac           BYTEA
);

CREATE TABLE alert_events (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms     BIGINT NOT NULL,
    kind      TEXT COLLATE "C" NOT NULL,
    dedup     TEXT COLLATE "C" UNIQUE,
    key_id    TEXT COLLATE "C",
    budget_id TEXT COLLATE "C",
    message   TEXT COLLATE "C" NOT NULL,
    payload   TEXT COLLATE "C" NOT NULL
);

CREATE TABLE alert_deliveries (
    event_id      BIGINT NOT NULL REFERENCES alert_events (id),
    webhook_id    TEXT COLLATE "C" NOT NULL,
    status        TEXT COLLATE "C" NOT NULL,
    attempts      BIGINT NOT NULL,
    last_error    TEXT COLLATE "C",
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (event_id, webhook_id)
);

CREATE TABLE key_grace (
    rid         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    hash        BYTEA PRIMARY KEY,
    key_id      TEXT COLLATE "C" NOT NULL REFERENCES virtual_keys (id),
    prefix      TEXT COLLATE "C" NOT NULL,
    valid_until BIGINT NOT NULL,
    mac         BYTEA
);

CREATE TABLE key_rotations (
    key_id          TEXT COLLATE "C" NOT NULL REFERENCES virtual_keys (id),
    idempotency_key TEXT COLLATE "C" NOT NULL,
    sealed_key      BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
);

-- One chain for every instance: appends are serialized by an advisory
-- lock (see `commit_batch`), so `seq` stays dense and unique.
CREATE TABLE audit_log (
    seq   BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind  TEXT COLLATE "C" NOT NULL,
    line  TEXT COLLATE "C" NOT NULL,
    hash  BYTEA NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE TABLE audit_checkpoints (
    seq  BIGINT PRIMARY KEY,
    line TEXT COLLATE "C" NOT NULL
);

CREATE TABLE ledger_rollup (
    bucket_ms            BIGINT NOT NULL,
    key_id               TEXT COLLATE "C" NOT NULL,
    env                  TEXT COLLATE "C" NOT NULL,
    project              TEXT COLLATE "C" NOT NULL,
    provider             TEXT COLLATE "C" NOT NULL,
    provider_key_version BIGINT NOT NULL,
    model                TEXT COLLATE "C" NOT NULL,
    requests             BIGINT NOT NULL,
    input_tokens         BIGINT NOT NULL,
    cached_input_tokens  BIGINT NOT NULL,
    cache_write_tokens   BIGINT NOT NULL,
    output_tokens        BIGINT NOT NULL,
    reasoning_tokens     BIGINT NOT NULL,
    cost_nano_usd        BIGINT NOT NULL,
    errors               BIGINT NOT NULL,
    estimated            BIGINT NOT NULL,
    fallback_priced      BIGINT NOT NULL,
    unmetered            BIGINT NOT NULL,
    client_cancelled     BIGINT NOT NULL,
    ok                   BIGINT NOT NULL,
    rejected             BIGINT NOT NULL,
    rate_limited         BIGINT NOT NULL,
    failed               BIGINT NOT NULL,
    client_errors        BIGINT NOT NULL,
    last_ms              BIGINT NOT NULL,
    last_status          BIGINT NOT NULL,
    PRIMARY KEY (bucket_ms, key_id, env, project, provider, provider_key_version, model)
);
CREATE INDEX ledger_rollup_key ON ledger_rollup (key_id, bucket_ms);
CREATE INDEX ledger_rollup_project ON ledger_rollup (project, bucket_ms);
CREATE INDEX ledger_rollup_env ON ledger_rollup (env, provider, bucket_ms);
