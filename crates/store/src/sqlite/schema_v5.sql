-- Schema version 5: the tamper-evident audit log. `line` is the exact JSON
-- line whose SHA-256 is `hash`; each line names the hash of the one before.
-- Checkpoints are signed lines written after each batch.
CREATE TABLE audit_log (
    seq   INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind  TEXT NOT NULL,
    line  TEXT NOT NULL,
    hash  BLOB NOT NULL
) STRICT;
CREATE INDEX audit_log_at ON audit_log (at_ms);

CREATE TABLE audit_checkpoints (
    seq  INTEGER PRIMARY KEY,
    line TEXT NOT NULL
) STRICT;
