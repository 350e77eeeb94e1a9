-- Schema version 10: named admins with roles (issue #14), as in the
-- SQLite store's schema_v10.sql (BLOB as BYTEA, an identity `rid` for the
-- row MAC). Times are Unix seconds (UTC).
CREATE TABLE admins (
    rid        BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    role       TEXT COLLATE "C" NOT NULL CHECK (role IN ('viewer', 'auditor', 'operator', 'owner')),
    token_hash BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT COLLATE "C" NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT,
    mac        BYTEA
);
