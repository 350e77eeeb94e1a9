-- Schema version 1. Times are Unix seconds (UTC).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE providers (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    env        TEXT NOT NULL,
    kind       TEXT NOT NULL,
    base_url   TEXT,
    created_at INTEGER NOT NULL,
    UNIQUE (env, name)
) STRICT;

-- Versions of a provider's key, sealed by the vault with associated data
-- `keyforge/provider/<provider_id>/v<version>`. `stage` is current, pending,
-- previous or retired (blue/green rotation).
CREATE TABLE provider_credentials (
    provider_id TEXT NOT NULL REFERENCES providers (id),
    version     INTEGER NOT NULL,
    stage       TEXT NOT NULL,
    sealed      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (provider_id, version)
) STRICT;

CREATE TABLE virtual_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    env        TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    prefix     TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER
) STRICT;
