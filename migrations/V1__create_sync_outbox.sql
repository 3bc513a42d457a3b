-- The transactional outbox. Producers write only `operation` and `payload`,
-- inside their own transaction; everything else has a default.
CREATE TABLE sync_outbox (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Insertion order. Two rows written in one transaction share now(), so
    -- ordering uses this sequence, never created_at alone.
    seq             bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    operation       text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'DEAD_LETTER', 'SUPERSEDED')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- Set at claim time; completion must match it, so a stale worker can never
    -- overwrite the outcome of a newer claim.
    claim_token     uuid,
    -- The newer item that made this one unnecessary (status SUPERSEDED).
    superseded_by   uuid,
    -- Outcome details, e.g. the counts of a REBUILD_ALL.
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    -- The ordering keys, derived from the payload so producers need not write them.
    workspace_id    text GENERATED ALWAYS AS (payload ->> 'workspaceId') STORED,
    calendar_id     text GENERATED ALWAYS AS (payload ->> 'calendarId') STORED,
    source_type     text GENERATED ALWAYS AS (payload ->> 'sourceType') STORED,
    source_id       text GENERATED ALWAYS AS (payload ->> 'sourceId') STORED
);

COMMENT ON TABLE sync_outbox IS
    'calendar-sync transactional outbox: INSERT INTO sync_outbox (operation, payload) VALUES (...)';

-- The claim reads due PENDING rows in insertion order. The index is partial, so
-- its size (and the claim's cost) does not grow with finished history.
CREATE INDEX sync_outbox_pending_idx ON sync_outbox (seq) WHERE status = 'PENDING';

-- Rows in flight, for orphan recovery.
CREATE INDEX sync_outbox_processing_idx ON sync_outbox (seq) WHERE status = 'PROCESSING';

-- Per-source ordering and coalescing look up unfinished and completed rows of one source.
CREATE INDEX sync_outbox_source_idx ON sync_outbox (workspace_id, calendar_id, source_type, source_id, seq)
    WHERE status IN ('PENDING', 'PROCESSING', 'COMPLETED');

-- A REBUILD_ALL fences its (workspace, calendar).
CREATE INDEX sync_outbox_rebuild_idx ON sync_outbox (workspace_id, calendar_id, seq)
    WHERE operation = 'REBUILD_ALL' AND status IN ('PENDING', 'PROCESSING');

-- REBUILD_ALL waits for everything of its pair enqueued before it.
CREATE INDEX sync_outbox_pair_unfinished_idx ON sync_outbox (workspace_id, calendar_id, seq)
    WHERE status IN ('PENDING', 'PROCESSING');

-- Operators read dead letters newest first; cleanup deletes old finished rows.
CREATE INDEX sync_outbox_dead_letter_idx ON sync_outbox (updated_at DESC) WHERE status = 'DEAD_LETTER';
CREATE INDEX sync_outbox_finished_idx ON sync_outbox (updated_at)
    WHERE status IN ('COMPLETED', 'DEAD_LETTER', 'SUPERSEDED');

-- A queue table churns: vacuum it early and often.
ALTER TABLE sync_outbox SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- Wake idle workers within milliseconds of a commit. Statement-level and
-- payload-free: one cheap notification per INSERT statement, and PostgreSQL folds
-- identical notifications of one transaction into one.
CREATE FUNCTION calendar_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('calendar_sync_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sync_outbox_notify
    AFTER INSERT ON sync_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION calendar_sync_notify();
