-- Drift detection (issue 18, part 3): people edit and delete synced events by
-- hand. Each calendar with LIVE bindings is listed through Google's
-- incremental sync every DrainerConfig::drift_check_interval; what changed by
-- hand is recorded below and, per the deployment's policy, repaired,
-- reported or adopted.

-- One row per (connection, calendar) checked: where its listing stands.
--   sync_token: Google's nextSyncToken of the last finished listing (NULL:
--     the next check is a full listing).
--   page_token: the page a listing in progress resumes from (one page per step).
--   next_check_at: when it is due; a claim moves it ahead by a lease, so two
--     workers never check one calendar at once, and a crashed check resumes
--     once the lease ends.
--   claim_token: set by each claim; a step writes its result only while its
--     claim holds.
CREATE TABLE calendar_sync_drift_checks (
    workspace_id  text        NOT NULL,
    calendar_id   text        NOT NULL,
    sync_token    text,
    page_token    text,
    next_check_at timestamptz NOT NULL DEFAULT now(),
    claim_token   uuid,
    checked_at    timestamptz,
    PRIMARY KEY (workspace_id, calendar_id)
);

CREATE INDEX calendar_sync_drift_checks_due_idx ON calendar_sync_drift_checks (next_check_at);

-- Every drift found, whatever the policy did about it.
--   kind: 'deleted' (cancelled by hand) or 'edited' (an etag other than ours).
--   action: 'repaired' (an UPSERT_EVENT re-asserts our content), 'reported'
--     (nothing changed), 'adopted' (the binding took the remote content; a
--     deletion marked the binding CANCELLED).
--   remote_etag: the etag Google showed; one drift is recorded (and repaired)
--     once, however many workers or retried checks meet it.
CREATE TABLE calendar_sync_drift (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id    text        NOT NULL,
    calendar_id     text        NOT NULL,
    source_type     text        NOT NULL,
    source_id       text        NOT NULL,
    google_event_id text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('deleted', 'edited')),
    action          text        NOT NULL CHECK (action IN ('repaired', 'reported', 'adopted')),
    remote_etag     text        NOT NULL,
    detected_at     timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX calendar_sync_drift_once_idx
    ON calendar_sync_drift (workspace_id, calendar_id, google_event_id, remote_etag);
CREATE INDEX calendar_sync_drift_detected_idx ON calendar_sync_drift (detected_at);

COMMENT ON TABLE calendar_sync_drift IS
    'calendar-sync: events edited or deleted by hand in Google, and what the drift policy did';

-- cleanup_old_outbox_items (V3) also forgets drift recorded more than `days`
-- days ago, and the check rows of calendars that no longer have a LIVE event
-- (the next check run adds a calendar back when it has one again). It still
-- returns the number of outbox rows deleted.
CREATE OR REPLACE FUNCTION cleanup_old_outbox_items(days integer) RETURNS integer
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
    DELETE FROM calendar_sync_drift
     WHERE detected_at < now() - make_interval(days => days);
    DELETE FROM calendar_sync_drift_checks d
     WHERE NOT EXISTS (SELECT 1 FROM calendar_event_bindings b
                        WHERE b.workspace_id = d.workspace_id
                          AND b.calendar_id = d.calendar_id
                          AND b.state = 'LIVE');
    RETURN deleted;
END;
$$;
