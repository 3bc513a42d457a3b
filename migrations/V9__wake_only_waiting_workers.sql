-- The wake-up asks "is a worker waiting?" instead of V5's "is other due work
-- waiting?". V5's test missed two cases (issue 12, section 4):
--
-- * a row inserted inside a released savepoint carries the subtransaction's
--   xid, so `xmin = pg_current_xact_id()` did not recognise it as the
--   transaction's own: the transaction saw "other due work" and sent nothing
--   (Django's nested atomic(), SQLAlchemy's begin_nested(), Rails'
--   requires_new, pgjdbc's autosave);
-- * a due row that cannot be claimed (behind an in-flight item of its source,
--   or a REBUILD_ALL's fence) counted as waiting work and suppressed every
--   producer's wake-up.
--
-- Now a worker with free slots whose last claim came up short registers its
-- lock connection here before it sleeps (and claims once more, for rows
-- committed before it registered); a worker whose claims come back full, or
-- that stops, removes itself. The trigger notifies, at commit and once per
-- transaction, only while some worker is registered. Busy workers are not
-- registered, so busy producers still do not pay for NOTIFY (PostgreSQL
-- serialises the commits of notifying transactions). Rows of workers that
-- died are removed by the next registration. UNLOGGED: it is soft state,
-- rebuilt by the workers after a crash, and its writes need no WAL.
CREATE UNLOGGED TABLE calendar_sync_waiters (
    pid   integer PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION calendar_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('calendar_sync.notify_checked', true), '') = 'yes' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('calendar_sync.notify_checked', 'yes', true);
    IF EXISTS (SELECT 1 FROM calendar_sync_waiters) THEN
        PERFORM pg_notify('calendar_sync_outbox', '');
    END IF;
    RETURN NULL;
END;
$$;
