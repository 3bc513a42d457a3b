-- The claim, set-based: a page of due rows is judged in one query and claimed
-- in one statement, instead of seven statements per row; the group commit of
-- successes as a function too; plans that cannot go bad.
--
-- Measured (docs/benchmarks/README.md): the per-row statements of V6 cost
-- about as much in executor start-up as in the work itself, and the claim runs
-- on one connection per worker, one claim after another: its cost per row
-- bounds a worker's throughput. The rules are V6's, unchanged (see
-- calendar_sync_claim below). Both functions keep one generic plan per session
-- (re-planning every call cost more than the claim itself) that reaches rows
-- through their own indexes whatever the statistics said when it was made
-- (tests/schema.rs: claims_and_outcomes_never_scan_a_whole_table).

-- SHA-256 of a source's identity at a generation: the input of its event id.
-- Plain SQL, so that the planner inlines it; STABLE like convert_to, or the
-- planner would not (an inlined body may not be more volatile than declared).
CREATE FUNCTION calendar_sync_event_digest(
    p_workspace_id text, p_calendar_id text, p_source_type text, p_source_id text,
    p_generation integer
) RETURNS bytea
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT sha256(
        convert_to('calendar-sync/v1', 'UTF8') || '\x00'::bytea
        || convert_to(p_workspace_id, 'UTF8') || '\x00'::bytea
        || convert_to(p_calendar_id, 'UTF8') || '\x00'::bytea
        || convert_to(p_source_type, 'UTF8') || '\x00'::bytea
        || convert_to(p_source_id, 'UTF8') || '\x00'::bytea
        || int4send(p_generation))
$$;

-- The first 20 bytes of a digest in lower-case base32hex: 32 characters of
-- [0-9a-v], 5 bits each, most significant first. One expression with no
-- loop, so that the planner inlines it wherever the digest is a plain value
-- (a column or a variable): 11 us an id against V6's PL/pgSQL loop's 15-28.
CREATE FUNCTION calendar_sync_base32hex20(d bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 0) >> 3) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 0) & 7) << 2) | (get_byte(d, 1) >> 6)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 1) >> 1) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 1) & 1) << 4) | (get_byte(d, 2) >> 4)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 2) & 15) << 1) | (get_byte(d, 3) >> 7)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 3) >> 2) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 3) & 3) << 3) | (get_byte(d, 4) >> 5)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 4) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 5) >> 3) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 5) & 7) << 2) | (get_byte(d, 6) >> 6)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 6) >> 1) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 6) & 1) << 4) | (get_byte(d, 7) >> 4)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 7) & 15) << 1) | (get_byte(d, 8) >> 7)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 8) >> 2) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 8) & 3) << 3) | (get_byte(d, 9) >> 5)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 9) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 10) >> 3) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 10) & 7) << 2) | (get_byte(d, 11) >> 6)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 11) >> 1) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 11) & 1) << 4) | (get_byte(d, 12) >> 4)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 12) & 15) << 1) | (get_byte(d, 13) >> 7)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 13) >> 2) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 13) & 3) << 3) | (get_byte(d, 14) >> 5)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 14) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 15) >> 3) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 15) & 7) << 2) | (get_byte(d, 16) >> 6)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 16) >> 1) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 16) & 1) << 4) | (get_byte(d, 17) >> 4)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 17) & 15) << 1) | (get_byte(d, 18) >> 7)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', ((get_byte(d, 18) >> 2) & 31) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (((get_byte(d, 18) & 3) << 3) | (get_byte(d, 19) >> 5)) + 1, 1)
        || substr('0123456789abcdefghijklmnopqrstuv', (get_byte(d, 19) & 31) + 1, 1)
$$;

-- Same result as V6's (tests/schema.rs checks it against the Rust
-- calendar_sync::event_id), through the two functions above.
CREATE OR REPLACE FUNCTION calendar_sync_event_id(
    p_workspace_id text, p_calendar_id text, p_source_type text, p_source_id text,
    p_generation integer
) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    digest bytea;
BEGIN
    digest := calendar_sync_event_digest(p_workspace_id, p_calendar_id, p_source_type,
                                         p_source_id, p_generation);
    RETURN calendar_sync_base32hex20(digest);
END;
$$;

-- Claims up to p_max_items due rows for the calling session, which must keep
-- it (the row locks are session-level advisory locks). The rules, as in V6:
--
-- * walks due PENDING rows in insertion order (FIFO), a page at a time; a row
--   is due once it has been due for p_settle_secs (0: at once), so that a
--   burst of separate commits to one source can collapse into one call;
-- * supersedes a row when a newer unfinished item of its source makes it
--   unnecessary (outcome SUPERSEDED, not claimed); a row whose newer item has
--   completed already can only be a requeued dead letter, and
--   requeue_dead_letter_items supersedes it there and then;
-- * skips a row while another item of its source is in flight or an earlier
--   REBUILD_ALL of its calendar is unfinished, and a REBUILD_ALL until
--   everything of its calendar enqueued before it is done (blocked rows are
--   skipped, so they cannot starve other sources);
-- * takes the row's advisory lock (outcome BUSY when another session holds
--   it), marks it PROCESSING with the attempt counted and a new claim token,
--   supersedes the older waiting items of its source, reads its binding and,
--   for an upsert that will insert, reserves the event id in the binding
--   (state INSERTING) before any call to Google (outcome CLAIMED);
-- * stops after p_max_examined rows (outcome CAPPED), so a long run of blocked
--   rows cannot make one claim expensive.
--
-- Judging a whole page against one snapshot gives the same verdicts as V6's
-- row-by-row walk: of a page's rows, at most one per source can be claimable
-- (an older one has a newer item, or a REBUILD_ALL between them blocks the
-- newer), claiming leaves a row unfinished, and superseding a row never
-- unblocks a later one (the newer item that superseded it is unfinished too).
-- The next page sees this page's claims.
--
-- Claims are serialised across sessions by a transaction-level advisory lock,
-- so each sees every earlier claim. Lock namespace 1668512110 is 0x6373796e
-- ("csyn"); row keys are 1..=2^31-1, the claim mutex is key 0.
--
-- Rows already read are written by id with `status = (SELECT 'PENDING'::text)`:
-- a value the planner cannot see when it plans, so that it cannot prefer the
-- partial PENDING index (a walk of the whole backlog) to the primary key, as a
-- plan made while the outbox was young did.
DROP FUNCTION calendar_sync_claim(integer, integer);
CREATE FUNCTION calendar_sync_claim(
    p_max_items integer, p_max_examined integer, p_settle_secs double precision DEFAULT 0
)
RETURNS TABLE (
    outcome text, id uuid, seq bigint, operation text, payload jsonb, attempts integer,
    rate_limited integer, claim_token uuid, result jsonb, superseded_older integer,
    google_event_id text, generation integer, binding_state text, etag text,
    content_hash text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    -- Rows judged per page: first as many as can be claimed (each costs a few
    -- index probes, so a claim of one judges one), twice as many on each
    -- further page when some were superseded or blocked.
    page_size integer := least(greatest(p_max_items, 1), 256);
    c record;
    r record;
    after_seq bigint := 0;
    page_rows integer;
    claimed integer := 0;
    examined integer := 0;
    capped boolean := false;
    v_key integer;
    superseded_ids uuid[];
    newer_ids uuid[];
    locked_ids uuid[];
    locked_keys integer[];
    claimed_ids uuid[];
    due_by constant timestamptz := now() - make_interval(secs => p_settle_secs);
BEGIN
    PERFORM pg_advisory_xact_lock(1668512110, 0);
    <<pages>>
    LOOP
        page_rows := 0;
        superseded_ids := '{}'; newer_ids := '{}'; locked_ids := '{}'; locked_keys := '{}';
        -- Judge the page: each row's newest later item of its source (with no
        -- REBUILD_ALL of the calendar between them), and whether it is blocked.
        FOR c IN
            SELECT o.id, o.seq, o.operation,
                   CASE WHEN o.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT') THEN (
                       SELECT n.id
                         FROM sync_outbox n
                        WHERE n.workspace_id = o.workspace_id AND n.calendar_id = o.calendar_id
                          AND n.source_type = o.source_type AND n.source_id = o.source_id
                          AND n.status IN ('PENDING', 'PROCESSING')
                          AND n.seq > o.seq
                          AND n.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                          AND NOT EXISTS (
                              SELECT 1 FROM sync_outbox r
                               WHERE r.operation = 'REBUILD_ALL' AND r.status IN ('PENDING', 'PROCESSING')
                                 AND r.workspace_id = o.workspace_id AND r.calendar_id = o.calendar_id
                                 AND r.seq > o.seq AND r.seq < n.seq)
                        ORDER BY n.seq DESC
                        LIMIT 1) END AS newer,
                   CASE WHEN o.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT') THEN
                            EXISTS (
                                SELECT 1 FROM sync_outbox p
                                 WHERE p.workspace_id = o.workspace_id AND p.calendar_id = o.calendar_id
                                   AND p.source_type = o.source_type AND p.source_id = o.source_id
                                   AND p.status = 'PROCESSING')
                            OR EXISTS (
                                SELECT 1 FROM sync_outbox r
                                 WHERE r.operation = 'REBUILD_ALL' AND r.status IN ('PENDING', 'PROCESSING')
                                   AND r.workspace_id = o.workspace_id AND r.calendar_id = o.calendar_id
                                   AND r.seq < o.seq)
                        WHEN o.operation = 'REBUILD_ALL' THEN
                            EXISTS (
                                SELECT 1 FROM sync_outbox e
                                 WHERE ARRAY[e.workspace_id, e.calendar_id] = ARRAY[o.workspace_id, o.calendar_id]
                                   AND e.status IN ('PENDING', 'PROCESSING')
                                   AND (e.seq < o.seq OR e.status = 'PROCESSING'))
                        ELSE false END AS blocked
              FROM (SELECT o.id, o.seq, o.operation, o.workspace_id, o.calendar_id,
                           o.source_type, o.source_id
                      FROM sync_outbox o
                     WHERE o.status = 'PENDING' AND o.seq > after_seq AND o.next_attempt_at <= due_by
                     ORDER BY o.seq
                     LIMIT 256) o
             ORDER BY o.seq
             -- Outside, so that the walk stops after page_size rows: a LIMIT
             -- whose value the kept (generic) plan does not know, put on the
             -- index walk itself, made that plan 20-30x slower (measured).
             LIMIT page_size
        LOOP
            page_rows := page_rows + 1;
            after_seq := c.seq;
            examined := examined + 1;
            IF examined > p_max_examined THEN
                capped := true;
                EXIT;
            END IF;
            IF c.newer IS NOT NULL THEN
                superseded_ids := array_append(superseded_ids, c.id);
                newer_ids := array_append(newer_ids, c.newer);
                CONTINUE;
            END IF;
            CONTINUE WHEN c.blocked;
            v_key := ((c.seq - 1) % 2147483647 + 1)::integer;
            IF NOT pg_try_advisory_lock(1668512110, v_key) THEN
                outcome := 'BUSY'; id := c.id; seq := c.seq; operation := c.operation;
                payload := NULL; attempts := NULL; rate_limited := NULL; claim_token := NULL;
                result := NULL; superseded_older := NULL; google_event_id := NULL;
                generation := NULL; binding_state := NULL; etag := NULL; content_hash := NULL;
                RETURN NEXT;
                CONTINUE;
            END IF;
            locked_ids := array_append(locked_ids, c.id);
            locked_keys := array_append(locked_keys, v_key);
            claimed := claimed + 1;
            -- Enough: later rows are judged (lazily, as the loop fetches them)
            -- by the next claim.
            EXIT WHEN claimed >= p_max_items;
        END LOOP;

        IF cardinality(superseded_ids) > 0 THEN
            RETURN QUERY
            UPDATE sync_outbox o
               SET status = 'SUPERSEDED', superseded_by = s.newer, claim_token = NULL,
                   updated_at = now(), processed_at = now()
              FROM unnest(superseded_ids, newer_ids) AS s(id, newer)
             WHERE o.id = s.id AND o.status = (SELECT 'PENDING'::text)
            RETURNING 'SUPERSEDED'::text, o.id, o.seq, o.operation, NULL::jsonb, NULL::integer,
                      NULL::integer, NULL::uuid, NULL::jsonb, NULL::integer, NULL::text,
                      NULL::integer, NULL::text, NULL::text, NULL::text;
        END IF;

        IF cardinality(locked_ids) > 0 THEN
            claimed_ids := '{}';
            -- Mark the locked rows PROCESSING, supersede their sources' older
            -- waiting items, read their bindings and reserve the ids of
            -- inserts: one statement.
            FOR r IN
                WITH mine AS (
                    UPDATE sync_outbox o
                       SET status = 'PROCESSING', attempts = o.attempts + 1,
                           claim_token = gen_random_uuid(), updated_at = now()
                     WHERE o.id = ANY (locked_ids) AND o.status = (SELECT 'PENDING'::text)
                    RETURNING o.id, o.seq, o.operation, o.payload, o.attempts, o.rate_limited,
                              o.claim_token, o.result, o.workspace_id, o.calendar_id,
                              o.source_type, o.source_id
                ),
                stale AS (
                    UPDATE sync_outbox o
                       SET status = 'SUPERSEDED', superseded_by = m.id, claim_token = NULL,
                           updated_at = now(), processed_at = now()
                      FROM mine m
                     WHERE m.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                       AND o.workspace_id = m.workspace_id AND o.calendar_id = m.calendar_id
                       AND o.source_type = m.source_type AND o.source_id = m.source_id
                       AND o.status = 'PENDING' AND o.seq < m.seq
                       AND o.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                       AND NOT EXISTS (
                           SELECT 1 FROM sync_outbox r
                            WHERE r.operation = 'REBUILD_ALL' AND r.status IN ('PENDING', 'PROCESSING')
                              AND r.workspace_id = m.workspace_id AND r.calendar_id = m.calendar_id
                              AND r.seq > o.seq AND r.seq < m.seq)
                    RETURNING o.superseded_by
                ),
                bound AS (
                    SELECT m.*, b.google_event_id AS b_event_id, b.generation AS b_generation,
                           b.state AS b_state, b.etag AS b_etag, b.content_hash AS b_hash,
                           -- An upsert with no live binding will insert: persist the id
                           -- it will insert under now, so that a crash between Google's
                           -- answer and our write cannot lead to a second event.
                           (m.operation = 'UPSERT_EVENT'
                            AND m.workspace_id IS NOT NULL AND m.calendar_id IS NOT NULL
                            AND m.source_type IS NOT NULL AND m.source_id IS NOT NULL
                            AND (b.state IS NULL OR b.state = 'CANCELLED')) AS inserts,
                           CASE WHEN b.state IS NULL THEN 0 ELSE b.generation + 1 END AS next_generation
                      FROM mine m
                      -- One primary-key probe per row (LATERAL, LIMIT): never a scan
                      -- of every binding, whatever plan young statistics suggest.
                      LEFT JOIN LATERAL (
                           SELECT b.google_event_id, b.generation, b.state, b.etag, b.content_hash
                             FROM calendar_event_bindings b
                            WHERE m.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                              AND b.workspace_id = m.workspace_id AND b.calendar_id = m.calendar_id
                              AND b.source_type = m.source_type AND b.source_id = m.source_id
                            LIMIT 1) b ON true
                ),
                fresh AS (
                    SELECT x.id, x.next_generation, calendar_sync_base32hex20(h.digest) AS event_id
                      FROM bound x
                     CROSS JOIN LATERAL (
                           SELECT calendar_sync_event_digest(x.workspace_id, x.calendar_id,
                                      x.source_type, x.source_id, x.next_generation) AS digest
                           OFFSET 0) h
                     WHERE x.inserts
                ),
                reserved AS (
                    INSERT INTO calendar_event_bindings AS b
                           (workspace_id, calendar_id, source_type, source_id, google_event_id,
                            generation, state, event_type, last_outbox_id)
                    SELECT x.workspace_id, x.calendar_id, x.source_type, x.source_id, f.event_id,
                           f.next_generation, 'INSERTING', x.payload ->> 'eventType', x.id
                      FROM bound x JOIN fresh f ON f.id = x.id
                    ON CONFLICT ON CONSTRAINT calendar_event_bindings_pkey DO UPDATE
                       SET google_event_id = excluded.google_event_id,
                           generation = excluded.generation, state = excluded.state,
                           etag = NULL, content_hash = NULL,
                           event_type = coalesce(excluded.event_type, b.event_type),
                           last_outbox_id = excluded.last_outbox_id, updated_at = now()
                )
                SELECT x.id, x.seq, x.operation, x.payload, x.attempts, x.rate_limited,
                       x.claim_token, x.result,
                       (SELECT count(*)::integer FROM stale s WHERE s.superseded_by = x.id) AS stale,
                       CASE WHEN f.id IS NULL THEN x.b_event_id ELSE f.event_id END AS event_id,
                       CASE WHEN f.id IS NULL THEN x.b_generation ELSE f.next_generation END AS gen,
                       CASE WHEN f.id IS NULL THEN x.b_state ELSE 'INSERTING' END AS state,
                       CASE WHEN f.id IS NULL THEN x.b_etag END AS etag,
                       CASE WHEN f.id IS NULL THEN x.b_hash END AS hash
                  FROM bound x LEFT JOIN fresh f ON f.id = x.id
                 ORDER BY x.seq
            LOOP
                claimed_ids := array_append(claimed_ids, r.id);
                outcome := 'CLAIMED'; id := r.id; seq := r.seq; operation := r.operation;
                payload := r.payload; attempts := r.attempts; rate_limited := r.rate_limited;
                claim_token := r.claim_token; result := r.result; superseded_older := r.stale;
                google_event_id := r.event_id; generation := r.gen; binding_state := r.state;
                etag := r.etag; content_hash := r.hash;
                RETURN NEXT;
            END LOOP;
            -- Rows changed since the page was read (dead-lettered with their
            -- connection) were not claimed: release their locks.
            IF cardinality(claimed_ids) < cardinality(locked_ids) THEN
                FOR i IN 1 .. cardinality(locked_ids) LOOP
                    IF NOT (locked_ids[i] = ANY (claimed_ids)) THEN
                        PERFORM pg_advisory_unlock(1668512110, locked_keys[i]);
                        claimed := claimed - 1;
                    END IF;
                END LOOP;
            END IF;
        END IF;

        IF capped THEN
            outcome := 'CAPPED';
            id := NULL; seq := NULL; operation := NULL; payload := NULL; attempts := NULL;
            rate_limited := NULL; claim_token := NULL; result := NULL; superseded_older := NULL;
            google_event_id := NULL; generation := NULL; binding_state := NULL;
            etag := NULL; content_hash := NULL;
            RETURN NEXT;
            EXIT pages;
        END IF;
        EXIT pages WHEN claimed >= p_max_items OR page_rows < page_size;
        page_size := least(page_size * 2, 256);
    END LOOP;
END;
$$;

-- Records successes, with their bindings, in one statement (group commit):
-- COMPLETED where the claim still holds (id and claim token), and a binding
-- only for those. Returns the ids recorded; the others were taken over.
-- A function rather than a statement sent by the worker for the same reason as
-- the claim's SET below: its plan is kept for the session, and one made while
-- the outbox was young matched rows by a scan of the whole table (seen: a hash
-- join over a sequential scan). A row's claim token is its whole condition
-- (see sync_outbox_claim_token_held below).
CREATE FUNCTION calendar_sync_complete(
    p_ids uuid[], p_tokens uuid[], p_results jsonb[], p_workspace_ids text[],
    p_calendar_ids text[], p_source_types text[], p_source_ids text[], p_event_ids text[],
    p_generations integer[], p_states text[], p_etags text[], p_hashes text[],
    p_contents jsonb[], p_event_types text[]
) RETURNS SETOF uuid
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT *
          FROM unnest(p_ids, p_tokens, p_results, p_workspace_ids, p_calendar_ids, p_source_types,
                      p_source_ids, p_event_ids, p_generations, p_states, p_etags, p_hashes,
                      p_contents, p_event_types)
            AS i(id, token, result, workspace_id, calendar_id, source_type, source_id,
                 google_event_id, generation, state, etag, content_hash, content, event_type)
    ),
    -- One table, rows by id (= ANY): the primary key is the only way in, so no
    -- plan can match rows by scanning the table or a whole index.
    done AS (
        UPDATE sync_outbox o
           SET status = 'COMPLETED', processed_at = now(), updated_at = now(),
               last_error = NULL, claim_token = NULL,
               result = p_results[array_position(p_ids, o.id)]
         WHERE o.id = ANY (p_ids)
           AND o.claim_token = p_tokens[array_position(p_ids, o.id)]
     RETURNING o.id
    ),
    bind AS (
        INSERT INTO calendar_event_bindings AS b
               (workspace_id, calendar_id, source_type, source_id, google_event_id, generation,
                state, etag, content_hash, content, event_type, last_outbox_id)
        SELECT i.workspace_id, i.calendar_id, i.source_type, i.source_id, i.google_event_id,
               i.generation, i.state, i.etag, i.content_hash, i.content, i.event_type, i.id
          FROM input i JOIN done d ON d.id = i.id
         WHERE i.google_event_id IS NOT NULL
        ON CONFLICT (workspace_id, calendar_id, source_type, source_id) DO UPDATE
           SET google_event_id = excluded.google_event_id, generation = excluded.generation,
               state = excluded.state, etag = excluded.etag,
               content_hash = excluded.content_hash,
               content = coalesce(excluded.content, b.content),
               event_type = coalesce(excluded.event_type, b.event_type),
               last_outbox_id = excluded.last_outbox_id, updated_at = now()
    )
    SELECT d.id FROM done d;
END;
$$;

-- The claim's plans are made once per session and kept, sometimes while a table
-- is young (the bindings of a first drain: measured, a generic plan that read
-- every binding for each claim, 670 claims out of 670). Every lookup in it has
-- an index that fits; never let statistics pick a scan of a whole table.
-- And keep the one plan: left to choose, PostgreSQL planned the claim's
-- statements afresh at every call (custom plans), 3.8 ms of a 4.9 ms claim of
-- one row; their shape does not depend on the values.
ALTER FUNCTION calendar_sync_claim(integer, integer, double precision)
    SET enable_seqscan = off SET plan_cache_mode = force_generic_plan;

-- A claim token is set exactly while a row is PROCESSING: the claim sets a new
-- one, every way out of PROCESSING clears it. Outcomes therefore find their row
-- by id and token alone, through the primary key: with `status = 'PROCESSING'`
-- in their WHERE clause the planner preferred the small PROCESSING index,
-- whose dead entries (every row that was ever in flight, until vacuumed) each
-- cost a heap visit. NOT VALID: enforced for every row written from now on,
-- without a scan of the history.
ALTER TABLE sync_outbox ADD CONSTRAINT sync_outbox_claim_token_held
    CHECK ((status = 'PROCESSING') = (claim_token IS NOT NULL)) NOT VALID;

-- The per-source index holds unfinished rows only. With COMPLETED rows in it
-- too (V1-V6), every drained item of a source with history read a leaf page of
-- an index as large as the history, in random order (measured: 0.9 blocks per
-- item from outside shared_buffers with 1,000,000 finished rows, the history
-- costing 0.036 ms per item). The claim needed completed rows for one case
-- only: a requeued dead letter that a newer item has overtaken, which the
-- requeue now settles itself.
DROP INDEX sync_outbox_source_idx;
CREATE INDEX sync_outbox_source_idx
    ON sync_outbox (workspace_id, calendar_id, source_type, source_id, seq)
    WHERE status IN ('PENDING', 'PROCESSING');

-- Brings dead letters back: PENDING with attempts and backoff afresh, or, when
-- a newer UPSERT_EVENT/CANCEL_EVENT of the source has completed since (with no
-- unfinished REBUILD_ALL of the calendar between them), SUPERSEDED by the
-- newest such item at once: it must never be sent again. Returns how many rows
-- left DEAD_LETTER. Finding completed items by source reads the outbox once
-- per call (no index keeps finished rows by source): an operator's command,
-- not a worker's.
CREATE OR REPLACE FUNCTION requeue_dead_letter_items(ids uuid[] DEFAULT NULL, workspace text DEFAULT NULL)
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
                       SELECT 1 FROM sync_outbox r
                        WHERE r.operation = 'REBUILD_ALL' AND r.status IN ('PENDING', 'PROCESSING')
                          AND r.workspace_id = d.workspace_id AND r.calendar_id = d.calendar_id
                          AND r.seq > d.seq AND r.seq < w.seq)) AS newer
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
        PERFORM pg_notify('calendar_sync_outbox', '');
    END IF;
    RETURN brought_back;
END;
$$;

