-- Schema version 4: blue/green rotation of provider keys. A provider's
-- pending version serves `rollout_percent` % of its requests until it is
-- promoted; the ledger is indexed to show each version's recent traffic.
ALTER TABLE providers ADD COLUMN rollout_percent INTEGER NOT NULL DEFAULT 0;
CREATE INDEX ledger_provider_version_at ON ledger (env, provider, provider_key_version, at_ms);

-- Virtual-key rotation: a key's earlier secrets stay valid until the end of
-- their grace window. The key id (and with it budgets, ledger and limits)
-- stays the same.
CREATE TABLE key_grace (
    hash        BLOB PRIMARY KEY,
    key_id      TEXT NOT NULL REFERENCES virtual_keys (id),
    prefix      TEXT NOT NULL,
    valid_until INTEGER NOT NULL
) STRICT;

-- A rotation asked with an idempotency key answers a retry with the same
-- successor (sealed like provider keys) instead of creating another.
CREATE TABLE key_rotations (
    key_id          TEXT NOT NULL REFERENCES virtual_keys (id),
    idempotency_key TEXT NOT NULL,
    sealed_key      BLOB NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (key_id, idempotency_key)
) STRICT;
