-- Schema version 3: projects, per-key rate limits and anomaly policy,
-- budgets, alert webhooks and the alerts they were sent. Times in new
-- tables are Unix milliseconds (UTC); money is integer nano-USD.
ALTER TABLE virtual_keys ADD COLUMN project TEXT;
ALTER TABLE virtual_keys ADD COLUMN rpm INTEGER;
ALTER TABLE virtual_keys ADD COLUMN tpm INTEGER;
ALTER TABLE virtual_keys ADD COLUMN max_parallel INTEGER;
ALTER TABLE virtual_keys ADD COLUMN on_anomaly TEXT NOT NULL DEFAULT 'alert';
ALTER TABLE virtual_keys ADD COLUMN suspended_at INTEGER;
ALTER TABLE virtual_keys ADD COLUMN suspended_reason TEXT;

ALTER TABLE ledger ADD COLUMN project TEXT;
CREATE INDEX ledger_project_at ON ledger (project, at_ms);
CREATE INDEX ledger_env_at ON ledger (env, at_ms);

-- A budget per scope (`key`, `project`, `env`) and period; setting it again
-- changes the amount.
CREATE TABLE budgets (
    id             TEXT PRIMARY KEY,
    scope_kind     TEXT NOT NULL,
    scope          TEXT NOT NULL,
    period         TEXT NOT NULL,
    limit_nano_usd INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    UNIQUE (scope_kind, scope, period)
) STRICT;

-- Webhook URLs carry secrets (Slack's do): sealed like provider keys, with
-- a display form (scheme and host) for listings.
CREATE TABLE alert_webhooks (
    id            TEXT PRIMARY KEY,
    sealed_url    BLOB NOT NULL,
    display_url   TEXT NOT NULL,
    thresholds    TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
) STRICT;

-- Every alert raised. `dedup` makes a budget threshold fire once per
-- period, also across restarts.
CREATE TABLE alert_events (
    id          INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    dedup       TEXT UNIQUE,
    key_id      TEXT,
    budget_id   TEXT,
    message     TEXT NOT NULL,
    payload     TEXT NOT NULL
) STRICT;

-- One row per (alert, webhook): how its delivery went.
CREATE TABLE alert_deliveries (
    event_id      INTEGER NOT NULL REFERENCES alert_events (id),
    webhook_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL,
    last_error    TEXT,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (event_id, webhook_id)
) STRICT;
