-- Schema version 8: the store is not trusted more than the disk. Every
-- security-relevant row carries `mac`, an HMAC-SHA-256 under a key derived
-- from the master key over a canonical, length-prefixed encoding of its
-- sealed columns (see `row_mac.rs`). A row whose `mac` is missing or wrong
-- is refused by the gateway. Rows written before version 8 are sealed once,
-- at the first start after the upgrade (the master key is needed, and only
-- the gateway holds it): `meta.row_mac_backfill` marks that pending work.
ALTER TABLE providers ADD COLUMN mac BLOB;
ALTER TABLE provider_credentials ADD COLUMN mac BLOB;
ALTER TABLE virtual_keys ADD COLUMN mac BLOB;
ALTER TABLE budgets ADD COLUMN mac BLOB;
ALTER TABLE alert_webhooks ADD COLUMN mac BLOB;
ALTER TABLE key_grace ADD COLUMN mac BLOB;
INSERT INTO meta (name, value) VALUES ('row_mac_backfill', x'01') ON CONFLICT (name) DO NOTHING;
