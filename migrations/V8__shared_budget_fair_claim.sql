-- Google's quotas shared by every live worker through this database, and a
-- claim that is fair between tenants and finds due work past any number of
-- blocked rows (issue #12 §1-§3, #13 §6).
--
-- * Budgets: a token bucket per connection (workspace) and one for the
--   project, refilled lazily from the time they were last touched. The claim
--   pays one token of each for every row it hands out, so a row the budgets
--   cannot pay for is never claimed and never occupies a slot; calls an item
--   makes beyond its first pay through calendar_sync_take_budget before they
--   are sent. No worker needs to know how many others are running.
-- * Round robin: the claim walks (workspace, calendar) groups of PENDING rows
--   in key order from where the previous claim stopped (a cursor), FIFO
--   within a group. A group that cannot go (its connection has no budget,
--   its REBUILD_ALL is in flight, the rest of it is fenced) is passed with one
--   index probe, however many rows it has.

-- A bucket holds at most `burst` tokens and refills at `rate` a second, from
-- `tokens` at `at`. Scope 'p' (name '') is the project, 'c' a connection.
CREATE TABLE calendar_sync_budget (
    scope  "char"            NOT NULL,
    name   text              NOT NULL,
    tokens double precision  NOT NULL,
    at     timestamptz       NOT NULL,
    PRIMARY KEY (scope, name)
);

-- Where the last claim stopped: the next one starts after it.
CREATE TABLE calendar_sync_claim_cursor (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    pair     text[],
    seq      bigint
);
INSERT INTO calendar_sync_claim_cursor (only_row) VALUES (true);

-- PENDING rows by (workspace, calendar) as one value, then seq: the claim's
-- way from one group to the next. Keyed by the pair as an array, like the
-- fence check's index of V6, so that no per-source probe can pick it.
CREATE INDEX sync_outbox_group_pending_idx
    ON sync_outbox ((ARRAY[workspace_id, calendar_id]), seq)
    WHERE status = 'PENDING';

-- The shape of a bucket for `quota` calls per sliding window of `window_secs`:
-- a burst of a sixtieth of the quota (1 to 100), refilled so that the burst
-- plus the refill over a window and a lag allowance (a sixtieth of the
-- window: 1 s a minute) is the quota. A call is sent a little after its token
-- was taken (the claim, then the item's start); any window of Google's
-- therefore sees tokens taken over at most the window plus that lag, which
-- the bucket never lets exceed the quota. Steady state uses
-- (59/60)·(60/61) = 96.7 % of the quota.
CREATE FUNCTION calendar_sync_bucket_shape(
    p_quota integer, p_window_secs double precision,
    OUT burst double precision, OUT rate double precision
)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT b, (q - b) / (p_window_secs * 61.0 / 60.0)
      FROM (SELECT greatest(p_quota, 2)::double precision AS q) x
     CROSS JOIN LATERAL (SELECT least(greatest(floor(x.q / 60.0), 1.0), 100.0) AS b) y
$$;

-- A bucket's tokens at `p_now`, read for update (created full when missing).
-- Callers hold it until they commit; the claim locks the project's first,
-- then connections', and so does calendar_sync_take_budget, so they cannot
-- deadlock.
CREATE FUNCTION calendar_sync_bucket_tokens(
    p_scope "char", p_name text, p_burst double precision, p_rate double precision,
    p_now timestamptz
) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    SELECT tokens, at INTO b FROM calendar_sync_budget
     WHERE scope = p_scope AND name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO calendar_sync_budget (scope, name, tokens, at)
        VALUES (p_scope, p_name, p_burst, p_now)
        ON CONFLICT DO NOTHING;
        SELECT tokens, at INTO b FROM calendar_sync_budget
         WHERE scope = p_scope AND name = p_name FOR UPDATE;
    END IF;
    RETURN least(p_burst,
                 b.tokens + p_rate * greatest(extract(epoch FROM p_now - b.at)::float8, 0));
END;
$$;

CREATE FUNCTION calendar_sync_bucket_store(
    p_scope "char", p_name text, p_tokens double precision, p_now timestamptz
) RETURNS void
LANGUAGE sql AS $$
    UPDATE calendar_sync_budget SET tokens = p_tokens, at = p_now
     WHERE scope = p_scope AND name = p_name
$$;

-- Pays for one call of `p_workspace` beyond an item's first: 0 when paid,
-- else the seconds until both buckets could pay (nothing taken then).
CREATE FUNCTION calendar_sync_take_budget(
    p_workspace text, p_per_connection integer, p_per_project integer,
    p_window_secs double precision
) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    t constant timestamptz := clock_timestamp();
    ps record;
    cs record;
    p_tokens double precision;
    c_tokens double precision;
BEGIN
    ps := calendar_sync_bucket_shape(p_per_project, p_window_secs);
    cs := calendar_sync_bucket_shape(p_per_connection, p_window_secs);
    p_tokens := calendar_sync_bucket_tokens('p', '', ps.burst, ps.rate, t);
    c_tokens := calendar_sync_bucket_tokens('c', p_workspace, cs.burst, cs.rate, t);
    IF p_tokens >= 1 AND c_tokens >= 1 THEN
        PERFORM calendar_sync_bucket_store('p', '', p_tokens - 1, t);
        PERFORM calendar_sync_bucket_store('c', p_workspace, c_tokens - 1, t);
        RETURN 0;
    END IF;
    RETURN greatest((1 - p_tokens) / ps.rate, (1 - c_tokens) / cs.rate, 0.001);
END;
$$;

-- Claims up to p_max_items due rows for the calling session (which keeps
-- their advisory locks). The rules of V7 hold within a (workspace, calendar)
-- group; what changed is the order groups are visited in, and budgets:
--
-- * groups are visited round robin, from the cursor the previous claim left;
--   within a group rows go in insertion order (FIFO), so per-source order
--   and REBUILD_ALL fences hold as before (they never span groups);
-- * a group is passed with one probe when its connection's bucket is empty,
--   when a REBUILD_ALL of it is in flight (nothing of a calendar runs then,
--   whatever its seq: #13 §6), or when its next rows lie behind a waiting
--   REBUILD_ALL's fence; within a group, rows are walked up to and including
--   its first waiting REBUILD_ALL only;
-- * with budgets (p_per_connection and p_per_project not NULL) each claimed
--   row with a workspace pays a token of its connection's bucket and of the
--   project's; when the project's is empty the claim stops. A BUDGET row then
--   says in wait_secs when the next token is due, if no row could be claimed
--   for want of one;
-- * supersedes, skips rows whose source has an item in flight, takes the
--   row's advisory lock (BUSY when held), marks it PROCESSING, supersedes the
--   older waiting items of its source, reads its binding and reserves the
--   event id of an insert, as V7 does;
-- * stops after p_max_examined rows and groups (CAPPED); the cursor keeps its
--   place, so the next claim goes on from there and a long run of blocked
--   groups delays a group by a few claims, never for ever.
DROP FUNCTION calendar_sync_claim(integer, integer, double precision);
CREATE FUNCTION calendar_sync_claim(
    p_max_items integer, p_max_examined integer, p_settle_secs double precision DEFAULT 0,
    p_per_connection integer DEFAULT NULL, p_per_project integer DEFAULT NULL,
    p_window_secs double precision DEFAULT 60
)
RETURNS TABLE (
    outcome text, id uuid, seq bigint, operation text, payload jsonb, attempts integer,
    rate_limited integer, claim_token uuid, result jsonb, superseded_older integer,
    google_event_id text, generation integer, binding_state text, etag text,
    content_hash text, wait_secs double precision
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t constant timestamptz := clock_timestamp();
    due_by constant timestamptz := now() - make_interval(secs => p_settle_secs);
    budgeted constant boolean := p_per_connection IS NOT NULL AND p_per_project IS NOT NULL;
    never constant bigint := 9223372036854775807;
    ps record;
    cs record;
    p_tokens double precision;
    c_tokens double precision;
    c_ws text;
    wait double precision;
    project_dry boolean := false;
    page_size integer;
    c record;
    r record;
    g_key text[];
    g_seq bigint;
    start_key text[];
    start_seq bigint;
    wrapped boolean := false;
    n_key text[];
    n_seq bigint;
    fence bigint;
    in_flight boolean;
    after_seq bigint;
    page_rows integer;
    group_open boolean;
    claimed integer := 0;
    examined integer := 0;
    capped boolean := false;
    v_key integer;
    superseded_ids uuid[];
    newer_ids uuid[];
    locked_ids uuid[];
    locked_keys integer[];
    claimed_ids uuid[];
BEGIN
    PERFORM pg_advisory_xact_lock(1668512110, 0);
    outcome := NULL; id := NULL; seq := NULL; operation := NULL; payload := NULL;
    attempts := NULL; rate_limited := NULL; claim_token := NULL; result := NULL;
    superseded_older := NULL; google_event_id := NULL; generation := NULL;
    binding_state := NULL; etag := NULL; content_hash := NULL; wait_secs := NULL;
    IF budgeted THEN
        ps := calendar_sync_bucket_shape(p_per_project, p_window_secs);
        cs := calendar_sync_bucket_shape(p_per_connection, p_window_secs);
        p_tokens := calendar_sync_bucket_tokens('p', '', ps.burst, ps.rate, t);
        IF p_tokens < 1 THEN
            outcome := 'BUDGET'; wait_secs := (1 - p_tokens) / ps.rate;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    SELECT k.pair, k.seq INTO start_key, start_seq FROM calendar_sync_claim_cursor k WHERE k.only_row;
    g_key := start_key; g_seq := start_seq;
    <<groups>>
    LOOP
        -- The next group (or the rest of the current one) after the position.
        n_key := NULL;
        IF g_key IS NULL THEN
            SELECT ARRAY[o.workspace_id, o.calendar_id], o.seq INTO n_key, n_seq
              FROM sync_outbox o
             WHERE o.status = 'PENDING'
             ORDER BY ARRAY[o.workspace_id, o.calendar_id], o.seq
             LIMIT 1;
        ELSE
            SELECT ARRAY[o.workspace_id, o.calendar_id], o.seq INTO n_key, n_seq
              FROM sync_outbox o
             WHERE o.status = 'PENDING'
               AND (ARRAY[o.workspace_id, o.calendar_id], o.seq) > (g_key, g_seq)
             ORDER BY ARRAY[o.workspace_id, o.calendar_id], o.seq
             LIMIT 1;
        END IF;
        IF n_key IS NULL THEN
            -- The end of the key space: once round from the start, if the
            -- walk did not start there.
            EXIT groups WHEN wrapped OR start_key IS NULL;
            wrapped := true;
            g_key := NULL;
            CONTINUE groups;
        END IF;
        EXIT groups WHEN wrapped AND (n_key, n_seq) >= (start_key, start_seq);
        examined := examined + 1;
        IF examined > p_max_examined THEN
            capped := true;
            EXIT groups;
        END IF;
        -- Pass the group when it cannot go. Its REBUILD_ALLs (index by pair).
        SELECT min(f.seq) FILTER (WHERE f.status = 'PENDING'), bool_or(f.status = 'PROCESSING')
          INTO fence, in_flight
          FROM sync_outbox f
         WHERE f.operation = 'REBUILD_ALL' AND f.status IN ('PENDING', 'PROCESSING')
           AND f.workspace_id = n_key[1] AND f.calendar_id = n_key[2];
        g_key := n_key; g_seq := never;
        CONTINUE groups WHEN coalesce(in_flight, false) OR n_seq > coalesce(fence, never);
        IF budgeted AND n_key[1] IS NOT NULL THEN
            IF c_ws IS DISTINCT FROM n_key[1] THEN
                IF c_ws IS NOT NULL THEN
                    PERFORM calendar_sync_bucket_store('c', c_ws, c_tokens, t);
                END IF;
                c_ws := n_key[1];
                c_tokens := calendar_sync_bucket_tokens('c', c_ws, cs.burst, cs.rate, t);
            END IF;
            IF c_tokens < 1 THEN
                wait := least(coalesce(wait, 'Infinity'), (1 - c_tokens) / cs.rate);
                CONTINUE groups;
            END IF;
        END IF;

        -- Walk the group from n_seq, a page at a time (first as many rows as
        -- can be claimed, then twice as many), up to its fence.
        after_seq := n_seq - 1;
        page_size := least(greatest(p_max_items - claimed, 1), 256);
        group_open := true;
        <<pages>>
        LOOP
            page_rows := 0;
            superseded_ids := '{}'; newer_ids := '{}'; locked_ids := '{}'; locked_keys := '{}';
            FOR c IN
                SELECT o.id, o.seq, o.operation, o.workspace_id,
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
                         -- Bounds as row comparisons: only the group index
                         -- fits them (with `pair = n_key AND seq > ...`, a plan
                         -- made on young statistics walked the seq index).
                         WHERE o.status = 'PENDING'
                           AND (ARRAY[o.workspace_id, o.calendar_id], o.seq) > (n_key, after_seq)
                           AND (ARRAY[o.workspace_id, o.calendar_id], o.seq) <= (n_key, coalesce(fence, never))
                           AND o.next_attempt_at <= due_by
                         ORDER BY ARRAY[o.workspace_id, o.calendar_id], o.seq
                         LIMIT 256) o
                 -- The inner order (one group: seq order), so that no sort
                 -- reads the inner 256 first: the walk stops after page_size.
                 ORDER BY ARRAY[o.workspace_id, o.calendar_id], o.seq
                 LIMIT page_size
            LOOP
                page_rows := page_rows + 1;
                after_seq := c.seq;
                examined := examined + 1;
                IF examined > p_max_examined THEN
                    capped := true;
                    -- Resume here: this row has not been judged.
                    after_seq := c.seq - 1;
                    EXIT;
                END IF;
                IF c.newer IS NOT NULL THEN
                    superseded_ids := array_append(superseded_ids, c.id);
                    newer_ids := array_append(newer_ids, c.newer);
                    CONTINUE;
                END IF;
                CONTINUE WHEN c.blocked;
                IF budgeted AND c.workspace_id IS NOT NULL THEN
                    IF p_tokens < 1 THEN
                        project_dry := true;
                        -- Resume at this row: the group keeps its turn.
                        after_seq := c.seq - 1;
                        wait := least(coalesce(wait, 'Infinity'), (1 - p_tokens) / ps.rate);
                        EXIT;
                    END IF;
                    IF c_tokens < 1 THEN
                        wait := least(coalesce(wait, 'Infinity'), (1 - c_tokens) / cs.rate);
                        group_open := false;
                        EXIT;
                    END IF;
                END IF;
                v_key := ((c.seq - 1) % 2147483647 + 1)::integer;
                IF NOT pg_try_advisory_lock(1668512110, v_key) THEN
                    outcome := 'BUSY'; id := c.id; seq := c.seq; operation := c.operation;
                    RETURN NEXT;
                    outcome := NULL; id := NULL; seq := NULL; operation := NULL;
                    CONTINUE;
                END IF;
                locked_ids := array_append(locked_ids, c.id);
                locked_keys := array_append(locked_keys, v_key);
                claimed := claimed + 1;
                IF budgeted AND c.workspace_id IS NOT NULL THEN
                    p_tokens := p_tokens - 1;
                    c_tokens := c_tokens - 1;
                END IF;
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
                          NULL::integer, NULL::text, NULL::text, NULL::text,
                          NULL::double precision;
            END IF;

            IF cardinality(locked_ids) > 0 THEN
                claimed_ids := '{}';
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
                               (m.operation = 'UPSERT_EVENT'
                                AND m.workspace_id IS NOT NULL AND m.calendar_id IS NOT NULL
                                AND m.source_type IS NOT NULL AND m.source_id IS NOT NULL
                                AND (b.state IS NULL OR b.state = 'CANCELLED')) AS inserts,
                               CASE WHEN b.state IS NULL THEN 0 ELSE b.generation + 1 END AS next_generation
                          FROM mine m
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
                outcome := NULL; id := NULL; seq := NULL; operation := NULL; payload := NULL;
                attempts := NULL; rate_limited := NULL; claim_token := NULL; result := NULL;
                superseded_older := NULL; google_event_id := NULL; generation := NULL;
                binding_state := NULL; etag := NULL; content_hash := NULL;
                -- Rows changed since the page was read (dead-lettered with their
                -- connection) were not claimed: release their locks and tokens.
                IF cardinality(claimed_ids) < cardinality(locked_ids) THEN
                    FOR i IN 1 .. cardinality(locked_ids) LOOP
                        IF NOT (locked_ids[i] = ANY (claimed_ids)) THEN
                            PERFORM pg_advisory_unlock(1668512110, locked_keys[i]);
                            claimed := claimed - 1;
                            IF budgeted AND n_key[1] IS NOT NULL THEN
                                p_tokens := p_tokens + 1;
                                c_tokens := c_tokens + 1;
                            END IF;
                        END IF;
                    END LOOP;
                END IF;
            END IF;
            EXIT pages WHEN capped OR project_dry OR NOT group_open
                OR claimed >= p_max_items OR page_rows < page_size;
            page_size := least(page_size * 2, 256);
        END LOOP;
        IF capped OR project_dry THEN
            -- Resume inside this group next time.
            g_seq := after_seq;
        END IF;
        IF capped THEN
            EXIT groups;
        END IF;
        EXIT groups WHEN project_dry OR claimed >= p_max_items;
    END LOOP;

    IF budgeted THEN
        PERFORM calendar_sync_bucket_store('p', '', p_tokens, t);
        IF c_ws IS NOT NULL THEN
            PERFORM calendar_sync_bucket_store('c', c_ws, c_tokens, t);
        END IF;
    END IF;
    UPDATE calendar_sync_claim_cursor SET pair = g_key, seq = g_seq WHERE only_row;
    IF capped THEN
        outcome := 'CAPPED';
        RETURN NEXT;
        outcome := NULL;
    END IF;
    IF wait IS NOT NULL AND claimed = 0 THEN
        outcome := 'BUDGET'; wait_secs := wait;
        RETURN NEXT;
    END IF;
END;
$$;

-- As V7's, and: no bitmap scans (one made on young statistics ANDed the pair
-- index with the whole PENDING index); no sorts where an index gives the
-- order (with real statistics the group walk read the whole PENDING index by
-- seq and sorted it: 10 ms a claim, measured); no JIT (a plan costed with
-- seq scans disabled looks expensive enough to compile: 55 ms, measured).
ALTER FUNCTION calendar_sync_claim(integer, integer, double precision, integer, integer, double precision)
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off
    SET plan_cache_mode = force_generic_plan;
