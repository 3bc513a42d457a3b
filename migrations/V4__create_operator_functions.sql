-- Deletes finished rows (COMPLETED, DEAD_LETTER, SUPERSEDED) whose last change is
-- older than `days` days. Never touches PENDING or PROCESSING rows.
CREATE FUNCTION cleanup_old_outbox_items(days integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    deleted integer;
BEGIN
    IF days IS NULL OR days < 0 THEN
        RAISE EXCEPTION 'cleanup_old_outbox_items: days must be >= 0, got %', days;
    END IF;
    DELETE FROM sync_outbox
     WHERE status IN ('COMPLETED', 'DEAD_LETTER', 'SUPERSEDED')
       AND updated_at < now() - make_interval(days => days);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END;
$$;

-- Moves DEAD_LETTER rows back to PENDING with attempts reset: the rows named by
-- `ids`, or (ids NULL) every dead letter, optionally of one workspace.
-- Returns how many rows were requeued.
CREATE FUNCTION requeue_dead_letter_items(ids uuid[] DEFAULT NULL, workspace text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    requeued integer;
BEGIN
    UPDATE sync_outbox
       SET status = 'PENDING', attempts = 0, next_attempt_at = now(),
           claim_token = NULL, updated_at = now(),
           last_error = 'requeued after: ' || coalesce(last_error, '')
     WHERE status = 'DEAD_LETTER'
       AND (ids IS NULL OR id = ANY (ids))
       AND (workspace IS NULL OR workspace_id = workspace);
    GET DIAGNOSTICS requeued = ROW_COUNT;
    IF requeued > 0 THEN
        PERFORM pg_notify('calendar_sync_outbox', '');
    END IF;
    RETURN requeued;
END;
$$;

-- Monitoring in plain SQL.
CREATE VIEW sync_outbox_status AS
    SELECT status, count(*) AS items FROM sync_outbox GROUP BY status;

CREATE VIEW sync_outbox_dead_letters AS
    SELECT id, operation, workspace_id, calendar_id, source_type, source_id,
           attempts, last_error, created_at, updated_at
      FROM sync_outbox
     WHERE status = 'DEAD_LETTER'
     ORDER BY updated_at DESC;

-- The first pending row in insertion order, read through the partial index.
CREATE VIEW sync_outbox_oldest_pending AS
    SELECT created_at AS oldest_created_at,
           extract(epoch FROM now() - created_at)::double precision AS age_seconds
      FROM sync_outbox
     WHERE status = 'PENDING'
     ORDER BY seq
     LIMIT 1;
