-- Schema version 11: change notification between the gateways sharing
-- this database (issue #13). PostgreSQL only: the SQLite store serves one
-- gateway and needs none.
--
-- Every committed transaction that wrote a row the gateways' in-memory
-- snapshot is built from (providers and their key versions, virtual keys
-- and the earlier secrets of rotated ones, budgets, alert webhooks,
-- admins) bumps `keyforge_changes.seq` once and sends its new value on the
-- channel `keyforge_changes`. The triggers are deferred to commit, so:
-- - the notice and the counter commit with the change (a rolled-back
--   transaction sends nothing, and no notice arrives before its change is
--   visible);
-- - the counter row is locked only at commit, after every other lock the
--   transaction takes, so two instances' writes cannot deadlock on it, and
--   `seq` grows in commit order: an instance that read `seq = n` before
--   loading has every change up to `n`.
-- Ledger, rollup, audit and alert rows are not watched: they are written
-- on every batch and the snapshot does not read them.
CREATE TABLE keyforge_changes (
    id  SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO keyforge_changes (id, seq) VALUES (1, 0);

CREATE FUNCTION keyforge_note_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next_seq BIGINT;
BEGIN
    -- Once per transaction, however many rows it wrote.
    IF current_setting('keyforge.change_noted', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('keyforge.change_noted', 'on', true);
    UPDATE keyforge_changes SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO next_seq;
    PERFORM pg_notify('keyforge_changes', next_seq::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON providers
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON provider_credentials
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON virtual_keys
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON key_grace
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON budgets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON alert_webhooks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
CREATE CONSTRAINT TRIGGER keyforge_changed AFTER INSERT OR UPDATE OR DELETE ON admins
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keyforge_note_change();
