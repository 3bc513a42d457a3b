-- Operator commands in plain SQL (`calendar-sync-worker requeue` and
-- `cleanup` call them too). They run with the caller's rights.

-- Brings dead letters back: the rows named by `ids`, or (ids NULL) every dead
-- letter, optionally of one workspace. Each goes back to PENDING with attempts
-- and backoff afresh or, when a newer UPSERT_EVENT/CANCEL_EVENT of its source
-- has completed since (with no REBUILD_ALL fence between them), to SUPERSEDED
-- by the newest such item at once: it must never be sent again, and the claim
-- only looks for newer unfinished items. Returns how many rows left
-- DEAD_LETTER. Finding completed items by source reads the outbox once per
-- call (no index keeps finished rows by source): an operator's command, not a
-- worker's.
CREATE FUNCTION requeue_dead_letter_items(ids uuid[] DEFAULT NULL, workspace text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    brought_back integer;
BEGIN
    WITH dead AS (
        SELECT d.id, d.seq, d.operation, d.workspace_id, d.calendar_id, d.source_type, d.source_id
          FROM sync_outbox d
         WHERE d.status = 'DEAD_LETTER'
           AND (ids IS NULL OR d.id = ANY (ids))
           AND (workspace IS NULL OR d.workspace_id = workspace)
    ),
    newest AS (
        SELECT DISTINCT ON (n.workspace_id, n.calendar_id, n.source_type, n.source_id)
               n.id, n.seq, n.workspace_id, n.calendar_id, n.source_type, n.source_id
          FROM sync_outbox n
         WHERE n.status = 'COMPLETED' AND n.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
           AND (n.workspace_id, n.calendar_id, n.source_type, n.source_id) IN (
               SELECT d.workspace_id, d.calendar_id, d.source_type, d.source_id FROM dead d)
         ORDER BY n.workspace_id, n.calendar_id, n.source_type, n.source_id, n.seq DESC
    ),
    verdict AS (
        SELECT d.id,
               (SELECT w.id FROM newest w
                 WHERE d.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                   AND w.workspace_id = d.workspace_id AND w.calendar_id = d.calendar_id
                   AND w.source_type = d.source_type AND w.source_id = d.source_id
                   AND w.seq > d.seq
                   AND NOT EXISTS (
                       SELECT 1 FROM calendar_sync_fences(d.workspace_id, d.calendar_id) f
                        WHERE f.seq > d.seq AND f.seq < w.seq)) AS newer
          FROM dead d
    )
    UPDATE sync_outbox o
       SET status = CASE WHEN v.newer IS NULL THEN 'PENDING' ELSE 'SUPERSEDED' END,
           superseded_by = v.newer,
           processed_at = CASE WHEN v.newer IS NULL THEN o.processed_at ELSE now() END,
           attempts = 0, rate_limited = 0, next_attempt_at = now(),
           claim_token = NULL, updated_at = now(),
           last_error = 'requeued after: ' || coalesce(o.last_error, '')
      FROM verdict v
     WHERE o.id = v.id AND o.status = 'DEAD_LETTER';
    GET DIAGNOSTICS brought_back = ROW_COUNT;
    IF brought_back > 0 THEN
        PERFORM calendar_sync_wake_workers();
    END IF;
    RETURN brought_back;
END;
$$;

-- Deletes finished rows (COMPLETED, DEAD_LETTER, SUPERSEDED) whose last change
-- is older than `days` days. Never touches PENDING or PROCESSING rows.
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
