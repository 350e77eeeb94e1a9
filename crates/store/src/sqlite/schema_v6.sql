-- Schema version 6: key trees and where a key came from.
-- `parent_id`: a child key (an agent's sub-key) narrows its parent; its
-- spend counts against the parent's budgets and revoking the parent revokes
-- it. `can_mint`: whether the key itself may create children. `origin`: who
-- created the key (`admin`, `key:<parent id>`, `oidc:<role>`), for listings
-- and audits.
ALTER TABLE virtual_keys ADD COLUMN parent_id TEXT REFERENCES virtual_keys (id);
ALTER TABLE virtual_keys ADD COLUMN can_mint INTEGER NOT NULL DEFAULT 0;
ALTER TABLE virtual_keys ADD COLUMN origin TEXT NOT NULL DEFAULT 'admin';
CREATE INDEX virtual_keys_parent ON virtual_keys (parent_id) WHERE parent_id IS NOT NULL;
