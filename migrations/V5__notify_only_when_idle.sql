-- NOTIFY serialises committing transactions (PostgreSQL holds a global lock on
-- its notification queue from pre-commit to the end of commit), which halves
-- the commit rate of busy producers. A notification only matters to an idle
-- worker, and workers are only idle when nothing is due: while due work is
-- waiting, workers are busy and claim new rows as they finish, without being
-- told. So notify only when no other due row is waiting.
--
-- The check runs at commit (a deferred constraint trigger), once per
-- transaction (a transaction-local flag), so a producer's long transaction
-- cannot hide its row from a worker that drained the queue meanwhile. Polling
-- (poll_interval) stays the safety net for the remaining microsecond window.
DROP TRIGGER sync_outbox_notify ON sync_outbox;

CREATE OR REPLACE FUNCTION calendar_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('calendar_sync.notify_checked', true), '') = 'yes' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('calendar_sync.notify_checked', 'yes', true);
    -- Due work other than this transaction's own rows (their xmin is ours).
    IF NOT EXISTS (
        SELECT 1 FROM sync_outbox
         WHERE status = 'PENDING' AND next_attempt_at <= now()
           AND xmin <> pg_current_xact_id()::xid
    ) THEN
        PERFORM pg_notify('calendar_sync_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER sync_outbox_notify
    AFTER INSERT ON sync_outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION calendar_sync_notify();
