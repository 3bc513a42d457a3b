-- calendar-sync's tables, indexes and views. The functions and triggers that
-- work on them are in V2__functions.sql, the operator functions in
-- V3__operator_functions.sql. (Before the first release, eleven development
-- migrations were squashed into these three: issue 15 §1.)
--
-- Producers write only sync_outbox (operation, payload), inside their own
-- transaction; workers do everything else.

-- ---------------------------------------------------------------------------
-- Row ids

-- Outbox ids in time order (the UUIDv7 layout: 48 bits of Unix milliseconds,
-- then random bits), so that primary-key inserts (one per row version:
-- enqueue, claim, outcome) land on recent, cached index pages, not anywhere in
-- an index as large as the history.
CREATE FUNCTION calendar_sync_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

-- ---------------------------------------------------------------------------
-- Tables

-- The transactional outbox. Everything but `operation` and `payload` has a
-- default or is derived from the payload.
CREATE TABLE sync_outbox (
    id              uuid        PRIMARY KEY DEFAULT calendar_sync_uuid_v7(),
    -- Insertion order. Two rows written in one transaction share now(), so
    -- ordering uses this sequence, never created_at alone. Unique by
    -- construction and deliberately without a unique index: the only index
    -- ordered by seq alone is then the partial PENDING one, which the claim's
    -- plans cannot avoid whatever the statistics say.
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    operation       text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'DEAD_LETTER', 'SUPERSEDED')),
    attempts        integer     NOT NULL DEFAULT 0,
    -- Rate-limited answers met by the row. They use no attempt (the item is
    -- not at fault), but its retry delay grows with them as with attempts.
    rate_limited    integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    last_error      text,
    -- Set by the claim; every outcome must present it, so a stale worker can
    -- never overwrite the outcome of a newer claim.
    claim_token     uuid,
    -- The newer item that made this one unnecessary (status SUPERSEDED).
    superseded_by   uuid,
    -- Outcome details (the counts of a REBUILD_ALL), or a long item's checkpoint.
    result          jsonb,
    -- The ordering keys, derived from the payload so that producers need not
    -- write them. calendar_id is the calendar's own id once a worker has
    -- resolved the payload's name for it (calendar_key, see calendar_aliases),
    -- so that "primary" and the owner's address key the same calendar.
    calendar_key    text,
    workspace_id    text GENERATED ALWAYS AS (payload ->> 'workspaceId') STORED,
    calendar_id     text GENERATED ALWAYS AS (coalesce(calendar_key, payload ->> 'calendarId')) STORED,
    source_type     text GENERATED ALWAYS AS (payload ->> 'sourceType') STORED,
    source_id       text GENERATED ALWAYS AS (payload ->> 'sourceId') STORED,
    -- A claim token is set exactly while a row is PROCESSING: the claim sets a
    -- new one, every way out of PROCESSING clears it. Outcomes therefore find
    -- their row by id and token alone, through the primary key: with `status =
    -- 'PROCESSING'` in their WHERE clause the planner preferred the small
    -- PROCESSING index, whose dead entries each cost a heap visit.
    CONSTRAINT sync_outbox_claim_token_held CHECK ((status = 'PROCESSING') = (claim_token IS NOT NULL))
)
-- A queue table churns: vacuum it early and often.
WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

COMMENT ON TABLE sync_outbox IS
    'calendar-sync transactional outbox: INSERT INTO sync_outbox (operation, payload) VALUES (...)';
COMMENT ON COLUMN sync_outbox.calendar_key IS
    'The calendar''s own id, once a worker resolved the payload''s calendarId to another id (calendar_aliases)';

-- Which Google event stands for which application object: the source of truth
-- that makes every operation idempotent.
CREATE TABLE calendar_event_bindings (
    workspace_id    text        NOT NULL,
    calendar_id     text        NOT NULL,
    source_type     text        NOT NULL,
    source_id       text        NOT NULL,
    -- Derived from the key and the generation, and persisted before the insert
    -- call, so a retry after a lost reply finds its own event instead of
    -- creating a second.
    google_event_id text        NOT NULL,
    -- Advances when the source's event was cancelled: Google keeps deleted ids taken.
    generation      integer     NOT NULL DEFAULT 0,
    -- INSERTING: id chosen, insert not yet confirmed. LIVE: synced. CANCELLED: deleted by us.
    state           text        NOT NULL CHECK (state IN ('INSERTING', 'LIVE', 'CANCELLED')),
    etag            text,
    -- SHA-256 of the event body last synced: an unchanged upsert makes no API call.
    content_hash    text,
    -- The event body last synced, so REBUILD_ALL can repair drift from it.
    content         jsonb,
    event_type      text,
    last_outbox_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, calendar_id, source_type, source_id)
);

-- One Google connection (OAuth grant) per workspace.
CREATE TABLE google_connections (
    workspace_id            text        PRIMARY KEY,
    google_email            text        NOT NULL,
    -- Versioned AES-256-GCM envelope; never the plaintext token.
    refresh_token_encrypted text        NOT NULL,
    is_valid                boolean     NOT NULL DEFAULT true,
    invalid_reason          text,
    -- Set while Google's usage limits make the calendar read-only: items wait.
    paused_until            timestamptz,
    -- Bumped by every reconnect (a new envelope, account or validity stored by
    -- put_connection). Before each Google call a worker compares it with the
    -- version its cached access token was minted under, so a reconnect reaches
    -- every process at once. Our own re-seals and Google's token rotations keep
    -- the account and leave it alone.
    connection_version      bigint      NOT NULL DEFAULT 1,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- One calendar, one identity. "primary" and the owner's address (or any other
-- alias Google accepts) name the same calendar, so every key uses the id
-- Google resolves a name to (calendars.get): this table remembers, per
-- workspace, what a name resolved to under the workspace's current
-- connection (a reconnect forgets them: "primary" of another account is
-- another calendar). Rows naming "primary" are keyed from it at insert
-- (calendar_sync_key_calendar); an item whose row is keyed by another name
-- learns the real id from Google and re-keys (calendar_sync_resolve_item).
CREATE TABLE calendar_aliases (
    workspace_id       text        NOT NULL,
    -- The calendar id as producers write it ("primary", an address, an id).
    calendar_id        text        NOT NULL,
    -- calendars.get's id for it.
    resolved_id        text        NOT NULL,
    -- google_connections.connection_version it was resolved under.
    connection_version bigint      NOT NULL,
    resolved_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, calendar_id)
);

COMMENT ON TABLE calendar_aliases IS
    'calendar-sync: what each calendar name of a workspace resolves to (calendars.get), under its current connection';

-- Google's quotas, shared by every live worker: a token bucket per connection
-- (scope 'c', name = workspace) and one for the project (scope 'p', name ''),
-- refilled lazily from the time they were last touched. A bucket holds at most
-- `burst` tokens and refills at `rate` a second from `tokens` at `at` (see
-- calendar_sync_bucket_shape). No worker needs to know how many others run.
CREATE TABLE calendar_sync_budget (
    scope  "char"            NOT NULL,
    name   text              NOT NULL,
    tokens double precision  NOT NULL,
    at     timestamptz       NOT NULL,
    PRIMARY KEY (scope, name)
);

-- Where the last claim stopped: the next one starts after it (round robin
-- between (workspace, calendar) groups).
CREATE TABLE calendar_sync_claim_cursor (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pair     text[],
    seq      bigint
);
INSERT INTO calendar_sync_claim_cursor (only_row) VALUES (true);

-- Workers waiting for a wake-up. A worker with free slots whose last claim
-- came up short registers its lock connection here before it sleeps (and
-- claims once more, for rows committed before it registered); a worker whose
-- claims come back full, or that stops, removes itself; rows of workers that
-- died are removed by the next registration. Producers' commits notify only
-- while a worker is registered (calendar_sync_notify). UNLOGGED: soft state,
-- rebuilt by the workers after a crash; its writes need no WAL.
CREATE UNLOGGED TABLE calendar_sync_waiters (
    pid   integer PRIMARY KEY,
    since timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- Indexes
--
-- The claim's plans are made once per session and kept (generic plans),
-- sometimes on the statistics of a young table, so every lookup must have
-- exactly one index that fits it. Partial indexes keep their size, and the
-- cost of each lookup, independent of the finished history.

-- PENDING rows in insertion order (the oldest pending row, for monitoring).
CREATE INDEX sync_outbox_pending_idx ON sync_outbox (seq) WHERE status = 'PENDING';

-- PENDING rows by (workspace, calendar) as one value, then seq: the claim's way
-- from one group to the next, and through a group in order. Keyed by the pair
-- as an array so that no per-source probe can pick it.
CREATE INDEX sync_outbox_group_pending_idx
    ON sync_outbox ((ARRAY[workspace_id, calendar_id]), seq)
    WHERE status = 'PENDING';

-- Per-source ordering and coalescing: unfinished rows of one source. Finished
-- rows stay out, so a source's history costs a drain nothing.
CREATE INDEX sync_outbox_source_idx
    ON sync_outbox (workspace_id, calendar_id, source_type, source_id, seq)
    WHERE status IN ('PENDING', 'PROCESSING');

-- "Is an item of this source in flight?" without reading the source's
-- waiting rows; also the rows in flight, for orphan recovery.
CREATE INDEX sync_outbox_source_processing_idx
    ON sync_outbox (workspace_id, calendar_id, source_type, source_id)
    WHERE status = 'PROCESSING';

-- The REBUILD_ALL fences of a calendar (calendar_sync_fences).
CREATE INDEX sync_outbox_rebuild_idx ON sync_outbox (workspace_id, calendar_id, seq)
    WHERE operation = 'REBUILD_ALL' AND status IN ('PENDING', 'PROCESSING');

-- A REBUILD_ALL waits for everything of its calendar enqueued before it. Keyed
-- by the pair as one value, which only that check uses: keyed by (workspace,
-- calendar, seq) it also fitted the per-source probes and read every
-- unfinished row of the calendar for each.
CREATE INDEX sync_outbox_pair_unfinished_idx
    ON sync_outbox ((ARRAY[workspace_id, calendar_id]), seq)
    WHERE status IN ('PENDING', 'PROCESSING');

-- Operators read dead letters newest first; cleanup deletes old finished rows.
CREATE INDEX sync_outbox_dead_letter_idx ON sync_outbox (updated_at DESC) WHERE status = 'DEAD_LETTER';
CREATE INDEX sync_outbox_finished_idx ON sync_outbox (updated_at)
    WHERE status IN ('COMPLETED', 'DEAD_LETTER', 'SUPERSEDED');

-- One event id per calendar. It leads with the event id, so that the claim's
-- binding lookup by source can only use the primary key: led by calendar_id it
-- served that lookup too, reading every binding of the calendar.
CREATE UNIQUE INDEX calendar_event_bindings_event_idx
    ON calendar_event_bindings (google_event_id, calendar_id);

-- The names known to resolve to a calendar (REBUILD_ALL reads the view under each).
CREATE INDEX calendar_aliases_resolved_idx ON calendar_aliases (workspace_id, resolved_id);

-- ---------------------------------------------------------------------------
-- Monitoring in plain SQL

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
