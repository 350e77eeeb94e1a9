-- Schema version 10: named admins with roles (issue #14).
--
-- One row per admin identity that can call the admin API. `token_hash` is
-- the HMAC-SHA-256 of the admin's token under the server's key-hashing
-- secret (as `virtual_keys.hash`, with its own domain prefix): the token
-- itself is never stored. `role` is `viewer`, `auditor`, `operator` or
-- `owner`. Times are Unix seconds (UTC). `created_by` is the actor that
-- added the admin (`admin:NAME`, or `gateway` for the owner made from the
-- legacy `admin.token`). A revoked admin keeps its row, so its name is
-- never reused and audit entries naming it stay unambiguous.
-- `rotated_at` is the last time its token was replaced. `mac` seals every
-- column but itself (see `row_mac.rs`): a row edited outside KeyForge (a
-- role raised, a revocation undone) is refused.
--
-- Plain SQL on purpose (the PostgreSQL store ports it as is, BLOB as
-- BYTEA): no SQLite-only features.
CREATE TABLE admins (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'auditor', 'operator', 'owner')),
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    rotated_at INTEGER,
    revoked_at INTEGER,
    mac        BLOB
);
