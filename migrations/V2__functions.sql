-- The functions and triggers of calendar-sync: shared helpers, the wake-up and
-- calendar-keying triggers, the shared quota budget, the claim, the group
-- commit of outcomes, and calendar resolution. The tables are in
-- V1__schema.sql.
--
-- Functions the workers call on their hot path keep one generic plan per
-- session (re-planning at every call cost more than the claim itself) and
-- reach rows through their own indexes whatever the statistics said when that
-- plan was made (tests/schema.rs: claims_and_outcomes_never_scan_a_whole_table).
-- Helpers used inside them are plain SQL, not SECURITY DEFINER, with no SET
-- clause and a volatility no stricter than their body's, so that the planner
-- inlines them.

-- ---------------------------------------------------------------------------
-- Helpers

-- The first key of every advisory lock calendar-sync takes, 0x6373796e
-- ("csyn"), so that its locks cannot collide with the host application's
-- two-key advisory locks. Second keys: a row's key (calendar_sync_row_key,
-- 1..=2^31-1), 0 for the claim mutex, -1 for the migration lock. The worker
-- has the same constant (store::LOCK_NAMESPACE; it takes the migration lock
-- before this function exists); tests/schema.rs checks that they agree.
CREATE FUNCTION calendar_sync_lock_namespace() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 1668512110
$$;

-- The advisory-lock key of an outbox row: its seq folded into 1..=2^31-1, so
-- that rows in flight (never 2^31 apart) never share a key. The claim returns
-- it with each row, and the orphan scan matches pg_locks with it: the worker
-- never computes it.
CREATE FUNCTION calendar_sync_row_key(p_seq bigint) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT ((p_seq - 1) % 2147483647 + 1)::integer
$$;

-- The REBUILD_ALL fences of a calendar: its unfinished REBUILD_ALLs. A row of
-- the calendar enqueued after one waits until it is done, and one never
-- supersedes another across it. A set-returning SQL function, STABLE and not
-- STRICT, so that the planner inlines it where it is called in FROM (and
-- reads sync_outbox_rebuild_idx).
CREATE FUNCTION calendar_sync_fences(p_workspace_id text, p_calendar_id text)
RETURNS TABLE (seq bigint, status text)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT r.seq, r.status
      FROM sync_outbox r
     WHERE r.operation = 'REBUILD_ALL' AND r.status IN ('PENDING', 'PROCESSING')
       AND r.workspace_id = p_workspace_id AND r.calendar_id = p_calendar_id
$$;

-- Wakes the workers listening on the channel (store::NOTIFY_CHANNEL).
CREATE FUNCTION calendar_sync_wake_workers() RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT pg_notify('calendar_sync_outbox', '')
$$;

-- The Google event id of a source at a generation, exactly as
-- calendar_sync::event_id computes it (tests/schema.rs compares them): the
-- first 20 bytes of SHA-256("calendar-sync/v1" \0 workspace \0 calendar \0 type
-- \0 id \0 generation as 4 big-endian bytes), in lower-case base32hex (32
-- characters of [0-9a-v], 5 bits each, most significant first).
--
-- The digest: plain SQL, so that the planner inlines it; STABLE like
-- convert_to, or the planner would not (an inlined body may not be more
-- volatile than declared).
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

-- Base32hex digit k (from 0) of a digest: its bits 5k to 5k+4, read from the
-- two bytes they lie in (a SHA-256 digest has a byte after the 20th).
CREATE FUNCTION calendar_sync_base32hex_digit(d bytea, k integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substr('0123456789abcdefghijklmnopqrstuv',
                  ((get_byte(d, k * 5 / 8) << 8 | get_byte(d, k * 5 / 8 + 1)) >> (11 - k * 5 % 8) & 31) + 1, 1)
$$;

-- The first 20 bytes of a digest in base32hex: one expression with no loop,
-- inlined wherever the digest is a plain value (a column or a variable), as
-- the claim computes it.
CREATE FUNCTION calendar_sync_base32hex20(d bytea) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT calendar_sync_base32hex_digit(d, 0) || calendar_sync_base32hex_digit(d, 1) || calendar_sync_base32hex_digit(d, 2) || calendar_sync_base32hex_digit(d, 3)
        || calendar_sync_base32hex_digit(d, 4) || calendar_sync_base32hex_digit(d, 5) || calendar_sync_base32hex_digit(d, 6) || calendar_sync_base32hex_digit(d, 7)
        || calendar_sync_base32hex_digit(d, 8) || calendar_sync_base32hex_digit(d, 9) || calendar_sync_base32hex_digit(d, 10) || calendar_sync_base32hex_digit(d, 11)
        || calendar_sync_base32hex_digit(d, 12) || calendar_sync_base32hex_digit(d, 13) || calendar_sync_base32hex_digit(d, 14) || calendar_sync_base32hex_digit(d, 15)
        || calendar_sync_base32hex_digit(d, 16) || calendar_sync_base32hex_digit(d, 17) || calendar_sync_base32hex_digit(d, 18) || calendar_sync_base32hex_digit(d, 19)
        || calendar_sync_base32hex_digit(d, 20) || calendar_sync_base32hex_digit(d, 21) || calendar_sync_base32hex_digit(d, 22) || calendar_sync_base32hex_digit(d, 23)
        || calendar_sync_base32hex_digit(d, 24) || calendar_sync_base32hex_digit(d, 25) || calendar_sync_base32hex_digit(d, 26) || calendar_sync_base32hex_digit(d, 27)
        || calendar_sync_base32hex_digit(d, 28) || calendar_sync_base32hex_digit(d, 29) || calendar_sync_base32hex_digit(d, 30) || calendar_sync_base32hex_digit(d, 31)
$$;

-- The event id itself, for checks and for operators.
CREATE FUNCTION calendar_sync_event_id(p_workspace_id text, p_calendar_id text, p_source_type text,
                                       p_source_id text, p_generation integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    digest bytea;
BEGIN
    digest := calendar_sync_event_digest(p_workspace_id, p_calendar_id, p_source_type,
                                         p_source_id, p_generation);
    RETURN calendar_sync_base32hex20(digest);
END;
$$;

-- Writes bindings, one per array position that has an event id (the others
-- are skipped): the claim's id reservations, the group commit's bindings, and
-- an item's single writes (store::put_binding). Content and event type are
-- kept when the write has none. Callers decide whose bindings may be written
-- (a claim that still holds).
CREATE FUNCTION calendar_sync_put_bindings(
    p_workspace_ids text[], p_calendar_ids text[], p_source_types text[], p_source_ids text[],
    p_event_ids text[], p_generations integer[], p_states text[], p_etags text[],
    p_hashes text[], p_contents jsonb[], p_event_types text[], p_outbox_ids uuid[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calendar_event_bindings AS b
           (workspace_id, calendar_id, source_type, source_id, google_event_id, generation,
            state, etag, content_hash, content, event_type, last_outbox_id)
    SELECT *
      FROM unnest(p_workspace_ids, p_calendar_ids, p_source_types, p_source_ids, p_event_ids,
                  p_generations, p_states, p_etags, p_hashes, p_contents, p_event_types,
                  p_outbox_ids)
        AS i(workspace_id, calendar_id, source_type, source_id, google_event_id, generation,
             state, etag, content_hash, content, event_type, last_outbox_id)
     WHERE i.google_event_id IS NOT NULL
    ON CONFLICT (workspace_id, calendar_id, source_type, source_id) DO UPDATE
       SET google_event_id = excluded.google_event_id, generation = excluded.generation,
           state = excluded.state, etag = excluded.etag, content_hash = excluded.content_hash,
           content = coalesce(excluded.content, b.content),
           event_type = coalesce(excluded.event_type, b.event_type),
           last_outbox_id = excluded.last_outbox_id, updated_at = now();
END;
$$;

-- ---------------------------------------------------------------------------
-- Triggers

-- The wake-up. A notification only matters to an idle worker, so a commit
-- that inserted outbox rows notifies only while some worker is registered as
-- waiting (calendar_sync_waiters). Busy workers are not registered, so busy
-- producers do not pay for NOTIFY: PostgreSQL serialises the commits of
-- notifying transactions (a global lock on its notification queue from
-- pre-commit to the end of commit). The check runs at commit (a deferred
-- constraint trigger), once per transaction (a transaction-local flag), so
-- that rows inserted inside savepoints count, and a producer's long
-- transaction cannot miss a worker that started waiting meanwhile. Polling
-- (poll_interval) stays the safety net.
CREATE FUNCTION calendar_sync_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('calendar_sync.notify_checked', true), '') = 'yes' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config('calendar_sync.notify_checked', 'yes', true);
    IF EXISTS (SELECT 1 FROM calendar_sync_waiters) THEN
        PERFORM calendar_sync_wake_workers();
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER sync_outbox_notify
    AFTER INSERT ON sync_outbox
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION calendar_sync_notify();

-- Keys a row naming "primary" (the one alias every account has) by the
-- calendar's own id at once, when the workspace's alias is known. Only
-- "primary": a row naming a calendar by its own id (the usual case) fires
-- nothing, and rows under other aliases are keyed by their item. SECURITY
-- DEFINER: producers insert with their own rights and need no grant on
-- calendar_aliases; it reads one alias, nothing else.
CREATE FUNCTION calendar_sync_key_calendar() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    NEW.calendar_key := (
        SELECT a.resolved_id FROM calendar_aliases a
         WHERE a.workspace_id = NEW.payload ->> 'workspaceId'
           AND a.calendar_id = NEW.payload ->> 'calendarId');
    RETURN NEW;
END;
$$;

CREATE TRIGGER sync_outbox_key_calendar
    BEFORE INSERT ON sync_outbox
    FOR EACH ROW WHEN ((NEW.payload ->> 'calendarId') = 'primary')
    EXECUTE FUNCTION calendar_sync_key_calendar();

-- A reconnect (a new connection version) or a removed connection forgets what
-- the workspace's calendar names meant.
CREATE FUNCTION calendar_sync_forget_aliases() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM calendar_aliases WHERE workspace_id = OLD.workspace_id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER google_connections_forget_aliases
    AFTER UPDATE OF connection_version OR DELETE ON google_connections
    FOR EACH ROW EXECUTE FUNCTION calendar_sync_forget_aliases();

-- ---------------------------------------------------------------------------
-- The shared quota budget (calendar_sync_budget)
--
-- The claim pays one token of its connection's bucket and of the project's
-- for every row it hands out, so a row the budgets cannot pay for is never
-- claimed and never occupies a slot; calls an item makes beyond its first pay
-- through calendar_sync_take_budget before they are sent.

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

-- ---------------------------------------------------------------------------
-- The claim

-- Claims up to p_max_items due rows for the calling session, which keeps
-- their advisory locks (session-level: the worker's lock connection) until it
-- unlocks them. One statement and one round trip, whose cost follows the rows
-- it hands out, not the backlog or what is blocked.
--
-- * Groups: PENDING rows are visited by (workspace, calendar) group, round
--   robin from where the previous claim stopped (calendar_sync_claim_cursor),
--   so one tenant's backlog never delays another's. A group that cannot go is
--   passed with one index probe, however many rows it has: when its
--   connection's bucket is empty, when a REBUILD_ALL of it is in flight
--   (nothing of a calendar runs then, whatever its seq), or when its next
--   rows lie behind a waiting REBUILD_ALL's fence.
-- * Within a group, rows go in insertion order (FIFO), a page at a time (first
--   as many rows as can be claimed, then twice as many), up to and including
--   the group's first waiting REBUILD_ALL. A row is due once it has been due
--   for p_settle_secs (0: at once), so that a burst of separate commits to
--   one source can collapse into one call.
-- * A row is superseded (outcome SUPERSEDED, not claimed) when a newer
--   unfinished item of its source, with no fence between them, makes it
--   unnecessary. A row whose newer item has completed already can only be a
--   requeued dead letter, and requeue_dead_letter_items supersedes it there
--   and then.
-- * A row is skipped while another item of its source is in flight, and a
--   REBUILD_ALL while anything of its calendar enqueued before it is
--   unfinished (or anything of it is in flight).
-- * Budgets (p_per_connection and p_per_project not NULL): each claimed row
--   with a workspace pays a token of its connection's bucket and of the
--   project's; when the project's is empty the claim stops. A BUDGET row then
--   says in wait_secs when the next token is due, if no row could be claimed
--   for want of one.
-- * A claimable row's advisory lock is taken (outcome BUSY when another
--   session holds it); then, in one statement, the locked rows are marked
--   PROCESSING with the attempt counted and a new claim token, the older
--   waiting items of their sources are superseded, and their bindings are
--   read. An upsert with no live binding will insert: its event id is
--   reserved in the binding (state INSERTING) before any call to Google, so
--   that a crash between Google's answer and our write cannot lead to a
--   second event (outcome CLAIMED, with lock_key). Reserving here, in one
--   insert per claim, drains 2.4x faster than each item reserving its own
--   (docs/benchmarks, session 5): that is why the event id exists in SQL too.
-- * After p_max_examined rows and groups the claim stops (one CAPPED row); the
--   cursor keeps its place, so the next claim goes on from there and a long
--   run of blocked groups delays a group by a few claims, never for ever.
--
-- Judging a whole page against one snapshot gives the same verdicts as a
-- row-by-row walk: of a page's rows, at most one per source can be claimable
-- (an older one has a newer item), claiming leaves a row unfinished, and
-- superseding a row never unblocks a later one (the newer item that
-- superseded it is unfinished too). The next page sees this page's claims.
--
-- Claims are serialised across sessions by a transaction-level advisory lock
-- (the claim mutex), so each sees every earlier claim; statements that lock
-- many PENDING rows take it shared (store::lock_claims).
--
-- Plans: rows already read are written by id with `status = (SELECT
-- 'PENDING'::text)`, a value the planner cannot see when it plans, so that it
-- cannot prefer the partial PENDING index (a walk of the whole backlog) to the
-- primary key. The function's settings keep the one generic plan per
-- statement that reaches every row through its own index: no sequential
-- scans (a plan made while the bindings were empty read every binding for
-- each claim), no bitmap scans (one ANDed the pair index with the whole
-- PENDING index), no sorts where an index gives the order (the group walk
-- read the whole PENDING index by seq and sorted it), no JIT (a plan costed
-- with sequential scans disabled looks expensive enough to compile), and
-- generic plans (left to choose, PostgreSQL re-planned the statements at
-- every call; their shape does not depend on the values). The figures are in
-- docs/benchmarks/README.md.
CREATE FUNCTION calendar_sync_claim(
    p_max_items integer, p_max_examined integer, p_settle_secs double precision DEFAULT 0,
    p_per_connection integer DEFAULT NULL, p_per_project integer DEFAULT NULL,
    p_window_secs double precision DEFAULT 60
)
RETURNS TABLE (
    outcome text, id uuid, seq bigint, lock_key integer, operation text, payload jsonb,
    attempts integer, rate_limited integer, claim_token uuid, result jsonb,
    superseded_older integer, google_event_id text, generation integer, binding_state text,
    etag text, content_hash text, wait_secs double precision
)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
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
    -- The event ids to reserve, written once at the end (a source has at
    -- most one row claimed per claim).
    rsv_workspaces text[] := '{}';
    rsv_calendars text[] := '{}';
    rsv_types text[] := '{}';
    rsv_sources text[] := '{}';
    rsv_event_ids text[] := '{}';
    rsv_generations integer[] := '{}';
    rsv_event_types text[] := '{}';
    rsv_ids uuid[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(calendar_sync_lock_namespace(), 0);
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
        -- Pass the group when it cannot go: a REBUILD_ALL in flight, or its
        -- next rows behind a fence.
        SELECT min(f.seq) FILTER (WHERE f.status = 'PENDING'), bool_or(f.status = 'PROCESSING')
          INTO fence, in_flight
          FROM calendar_sync_fences(n_key[1], n_key[2]) f;
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

        -- Walk the group from n_seq, a page at a time, up to its fence.
        after_seq := n_seq - 1;
        page_size := least(greatest(p_max_items - claimed, 1), 256);
        group_open := true;
        <<pages>>
        LOOP
            page_rows := 0;
            superseded_ids := '{}'; newer_ids := '{}'; locked_ids := '{}'; locked_keys := '{}';
            -- Judge the page: each row's newest later item of its source (with
            -- no fence between them), and whether it is blocked.
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
                                  SELECT 1 FROM calendar_sync_fences(o.workspace_id, o.calendar_id) f
                                   WHERE f.seq > o.seq AND f.seq < n.seq)
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
                 -- The walk stops after page_size rows: a LIMIT whose value the
                 -- kept (generic) plan does not know, put on the index walk
                 -- itself, made that plan many times slower. The outer order is
                 -- the inner one (one group: seq order), so that no sort reads
                 -- the inner 256 first.
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
                v_key := calendar_sync_row_key(c.seq);
                IF NOT pg_try_advisory_lock(calendar_sync_lock_namespace(), v_key) THEN
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
                RETURNING 'SUPERSEDED'::text, o.id, o.seq, NULL::integer, o.operation, NULL::jsonb,
                          NULL::integer, NULL::integer, NULL::uuid, NULL::jsonb, NULL::integer,
                          NULL::text, NULL::integer, NULL::text, NULL::text, NULL::text,
                          NULL::double precision;
            END IF;

            IF cardinality(locked_ids) > 0 THEN
                claimed_ids := '{}';
                -- Mark the locked rows PROCESSING, supersede their sources'
                -- older waiting items, read their bindings and compute the ids
                -- of inserts: one statement.
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
                               SELECT 1 FROM calendar_sync_fences(m.workspace_id, m.calendar_id) f
                                WHERE f.seq > o.seq AND f.seq < m.seq)
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
                          -- One primary-key probe per row (LATERAL, LIMIT):
                          -- never a scan of every binding, whatever plan young
                          -- statistics suggest.
                          LEFT JOIN LATERAL (
                               SELECT b.google_event_id, b.generation, b.state, b.etag, b.content_hash
                                 FROM calendar_event_bindings b
                                WHERE m.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
                                  AND b.workspace_id = m.workspace_id AND b.calendar_id = m.calendar_id
                                  AND b.source_type = m.source_type AND b.source_id = m.source_id
                                LIMIT 1) b ON true
                    ),
                    fresh AS (
                        -- The digest as a plain value (OFFSET 0), so that the
                        -- base32hex expression is inlined around it.
                        SELECT x.id, x.next_generation, calendar_sync_base32hex20(h.digest) AS event_id
                          FROM bound x
                         CROSS JOIN LATERAL (
                               SELECT calendar_sync_event_digest(x.workspace_id, x.calendar_id,
                                          x.source_type, x.source_id, x.next_generation) AS digest
                               OFFSET 0) h
                         WHERE x.inserts
                    )
                    SELECT x.id, x.seq, calendar_sync_row_key(x.seq) AS lock_key, x.operation,
                           x.payload, x.attempts, x.rate_limited, x.claim_token, x.result,
                           x.workspace_id, x.calendar_id, x.source_type, x.source_id,
                           (SELECT count(*)::integer FROM stale s WHERE s.superseded_by = x.id) AS stale,
                           f.id IS NOT NULL AS reserves,
                           CASE WHEN f.id IS NULL THEN x.b_event_id ELSE f.event_id END AS event_id,
                           CASE WHEN f.id IS NULL THEN x.b_generation ELSE f.next_generation END AS gen,
                           CASE WHEN f.id IS NULL THEN x.b_state ELSE 'INSERTING' END AS state,
                           CASE WHEN f.id IS NULL THEN x.b_etag END AS etag,
                           CASE WHEN f.id IS NULL THEN x.b_hash END AS hash
                      FROM bound x LEFT JOIN fresh f ON f.id = x.id
                     ORDER BY x.seq
                LOOP
                    claimed_ids := array_append(claimed_ids, r.id);
                    IF r.reserves THEN
                        rsv_workspaces := array_append(rsv_workspaces, r.workspace_id);
                        rsv_calendars := array_append(rsv_calendars, r.calendar_id);
                        rsv_types := array_append(rsv_types, r.source_type);
                        rsv_sources := array_append(rsv_sources, r.source_id);
                        rsv_event_ids := array_append(rsv_event_ids, r.event_id);
                        rsv_generations := array_append(rsv_generations, r.gen);
                        rsv_event_types := array_append(rsv_event_types, r.payload ->> 'eventType');
                        rsv_ids := array_append(rsv_ids, r.id);
                    END IF;
                    outcome := 'CLAIMED'; id := r.id; seq := r.seq; lock_key := r.lock_key;
                    operation := r.operation; payload := r.payload; attempts := r.attempts;
                    rate_limited := r.rate_limited; claim_token := r.claim_token; result := r.result;
                    superseded_older := r.stale; google_event_id := r.event_id; generation := r.gen;
                    binding_state := r.state; etag := r.etag; content_hash := r.hash;
                    RETURN NEXT;
                END LOOP;
                outcome := NULL; id := NULL; seq := NULL; lock_key := NULL; operation := NULL;
                payload := NULL; attempts := NULL; rate_limited := NULL; claim_token := NULL;
                result := NULL; superseded_older := NULL; google_event_id := NULL;
                generation := NULL; binding_state := NULL; etag := NULL; content_hash := NULL;
                -- Rows changed since the page was read (dead-lettered with their
                -- connection) were not claimed: release their locks and tokens.
                IF cardinality(claimed_ids) < cardinality(locked_ids) THEN
                    FOR i IN 1 .. cardinality(locked_ids) LOOP
                        IF NOT (locked_ids[i] = ANY (claimed_ids)) THEN
                            PERFORM pg_advisory_unlock(calendar_sync_lock_namespace(), locked_keys[i]);
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

    IF cardinality(rsv_ids) > 0 THEN
        PERFORM calendar_sync_put_bindings(
            rsv_workspaces, rsv_calendars, rsv_types, rsv_sources, rsv_event_ids, rsv_generations,
            array_fill('INSERTING'::text, ARRAY[cardinality(rsv_ids)]), '{}', '{}', '{}',
            rsv_event_types, rsv_ids);
    END IF;
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

-- ---------------------------------------------------------------------------
-- Outcomes

-- Records successes, with their bindings, in one call (group commit):
-- COMPLETED where the claim still holds (id and claim token; see
-- sync_outbox_claim_token_held), and a binding only for those. Returns the ids
-- recorded; the others were taken over. A function rather than statements
-- sent by the worker for the same reason as the claim's settings: its plans
-- are kept for the session, and one made while the outbox was young matched
-- rows by a scan of the whole table. Rows are found by id (= ANY), so the
-- primary key is the only way in.
CREATE FUNCTION calendar_sync_complete(
    p_ids uuid[], p_tokens uuid[], p_results jsonb[], p_workspace_ids text[],
    p_calendar_ids text[], p_source_types text[], p_source_ids text[], p_event_ids text[],
    p_generations integer[], p_states text[], p_etags text[], p_hashes text[],
    p_contents jsonb[], p_event_types text[]
) RETURNS SETOF uuid
LANGUAGE plpgsql SET enable_seqscan = off SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    done uuid[];
BEGIN
    WITH d AS (
        UPDATE sync_outbox o
           SET status = 'COMPLETED', processed_at = now(), updated_at = now(),
               last_error = NULL, claim_token = NULL,
               result = p_results[array_position(p_ids, o.id)]
         WHERE o.id = ANY (p_ids)
           AND o.claim_token = p_tokens[array_position(p_ids, o.id)]
     RETURNING o.id
    )
    SELECT coalesce(array_agg(d.id), '{}') INTO done FROM d;
    -- The bindings of the rows recorded: the others' event ids are left out.
    PERFORM calendar_sync_put_bindings(
        p_workspace_ids, p_calendar_ids, p_source_types, p_source_ids,
        ARRAY(SELECT CASE WHEN x.id = ANY (done) THEN x.event_id END
                FROM unnest(p_ids, p_event_ids) WITH ORDINALITY AS x(id, event_id, n)
               ORDER BY x.n),
        p_generations, p_states, p_etags, p_hashes, p_contents, p_event_types, p_ids);
    RETURN QUERY SELECT unnest(done);
END;
$$;

-- ---------------------------------------------------------------------------
-- Calendar identity (calendar_aliases)
--
-- An item whose row is keyed by a name that is not the calendar's own id
-- learns the real id from Google before it writes anything, re-keys the
-- workspace's waiting rows of that name, carries the name's bindings over to
-- the real id, and steps back in line without using an attempt: its next
-- claim judges it in order with every other row of the calendar. Bindings
-- written under a name are carried over the first time it is resolved; a
-- REBUILD_ALL resolves every name its workspace's bindings use before it
-- decides what is an orphan.

-- Records that p_name resolves to p_resolved for the workspace, unless the
-- connection changed since (p_version is the version the answer came under;
-- NULL: no connection to check), and carries the bindings written under
-- p_name over to p_resolved. Where a source has a binding under both, the one
-- written last wins; the other's event, when it may still be live, is counted
-- in the result (the next REBUILD_ALL deletes it as an orphan).
-- Returns that count, or -1 when the connection changed (nothing recorded).
-- SECURITY DEFINER: the worker's role may not delete bindings or write
-- aliases itself (docs/least-privilege.sql).
CREATE FUNCTION calendar_sync_record_alias(
    p_workspace text, p_name text, p_resolved text, p_version bigint
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    m calendar_event_bindings;
    cur calendar_event_bindings;
    doubled integer := 0;
BEGIN
    IF p_version IS NOT NULL AND p_version IS DISTINCT FROM
        (SELECT c.connection_version FROM google_connections c WHERE c.workspace_id = p_workspace)
    THEN
        RETURN -1;
    END IF;
    INSERT INTO calendar_aliases AS a (workspace_id, calendar_id, resolved_id, connection_version)
    VALUES (p_workspace, p_name, p_resolved, coalesce(p_version, 0))
    ON CONFLICT (workspace_id, calendar_id) DO UPDATE
       SET resolved_id = excluded.resolved_id, connection_version = excluded.connection_version,
           resolved_at = now()
     WHERE (a.resolved_id, a.connection_version)
           IS DISTINCT FROM (excluded.resolved_id, excluded.connection_version);
    IF p_name = p_resolved THEN
        RETURN 0;
    END IF;
    FOR m IN
        DELETE FROM calendar_event_bindings b
         WHERE b.workspace_id = p_workspace AND b.calendar_id = p_name
        RETURNING b.*
    LOOP
        SELECT * INTO cur FROM calendar_event_bindings b
         WHERE b.workspace_id = p_workspace AND b.calendar_id = p_resolved
           AND b.source_type = m.source_type AND b.source_id = m.source_id
           FOR UPDATE;
        IF FOUND THEN
            IF cur.google_event_id <> m.google_event_id THEN
                -- Whichever loses, its event may be live in Google.
                IF (CASE WHEN m.updated_at > cur.updated_at THEN cur.state ELSE m.state END)
                   <> 'CANCELLED' THEN
                    doubled := doubled + 1;
                END IF;
            END IF;
            IF m.updated_at > cur.updated_at THEN
                UPDATE calendar_event_bindings b
                   SET google_event_id = m.google_event_id, generation = m.generation,
                       state = m.state, etag = m.etag, content_hash = m.content_hash,
                       content = m.content, event_type = m.event_type,
                       last_outbox_id = m.last_outbox_id, updated_at = m.updated_at
                 WHERE b.workspace_id = p_workspace AND b.calendar_id = p_resolved
                   AND b.source_type = m.source_type AND b.source_id = m.source_id
                   AND NOT EXISTS (SELECT 1 FROM calendar_event_bindings o
                                    WHERE o.calendar_id = p_resolved
                                      AND o.google_event_id = m.google_event_id);
            END IF;
        ELSIF NOT EXISTS (SELECT 1 FROM calendar_event_bindings o
                           WHERE o.calendar_id = p_resolved AND o.google_event_id = m.google_event_id)
        THEN
            m.calendar_id := p_resolved;
            INSERT INTO calendar_event_bindings VALUES (m.*);
        END IF;
    END LOOP;
    RETURN doubled;
END;
$$;

-- An item (p_id, held with p_token) whose payload names the calendar p_name
-- learnt that it is p_resolved. 'KEYED': its row is keyed by the real id
-- already, go on. 'REKEYED': it was not: the alias is recorded, the bindings
-- carried over, this row and the workspace's waiting rows keyed by that name
-- re-keyed, and this row is back in line without using an attempt (it wrote
-- nothing). A re-keyed row that a newer write of its source has overtaken
-- (one waiting or in flight under the real id, or the binding's last write)
-- is superseded, never applied after it. 'STALE': the connection changed
-- meanwhile; 'LOST': the claim is gone.
CREATE FUNCTION calendar_sync_resolve_item(
    p_id uuid, p_token uuid, p_workspace text, p_name text, p_resolved text, p_version bigint,
    OUT verdict text, OUT doubled integer
)
LANGUAGE plpgsql AS $$
DECLARE
    key text;
    moved uuid[];
BEGIN
    doubled := 0;
    SELECT o.calendar_id INTO key FROM sync_outbox o WHERE o.id = p_id AND o.claim_token = p_token;
    IF NOT FOUND THEN
        verdict := 'LOST';
        RETURN;
    END IF;
    IF key = p_resolved THEN
        verdict := 'KEYED';
        RETURN;
    END IF;
    -- Claims wait: they must not judge the workspace's rows half re-keyed.
    PERFORM pg_advisory_xact_lock_shared(calendar_sync_lock_namespace(), 0);
    doubled := calendar_sync_record_alias(p_workspace, p_name, p_resolved, p_version);
    IF doubled < 0 THEN
        doubled := 0;
        verdict := 'STALE';
        RETURN;
    END IF;
    UPDATE sync_outbox o
       SET status = 'PENDING', attempts = greatest(o.attempts - 1, 0), claim_token = NULL,
           calendar_key = p_resolved, next_attempt_at = now(), updated_at = now()
     WHERE o.id = p_id AND o.claim_token = p_token;
    -- Rows in flight elsewhere under the name step back the same way when
    -- their item gets here; rows keyed by an older answer (before a
    -- reconnect) do too.
    WITH m AS (
        UPDATE sync_outbox o SET calendar_key = p_resolved, updated_at = now()
         WHERE o.workspace_id = p_workspace AND o.calendar_id = p_name AND o.status = 'PENDING'
           AND o.payload ->> 'calendarId' = p_name
        RETURNING o.id
    )
    SELECT array_agg(m.id) || p_id INTO moved FROM m;
    UPDATE sync_outbox o
       SET status = 'SUPERSEDED', updated_at = now(), processed_at = now(),
           superseded_by = coalesce(
               (SELECT n.id FROM sync_outbox n
                 WHERE n.workspace_id = o.workspace_id AND n.calendar_id = o.calendar_id
                   AND n.source_type = o.source_type AND n.source_id = o.source_id
                   AND n.status IN ('PENDING', 'PROCESSING') AND n.seq > o.seq
                 ORDER BY n.seq DESC LIMIT 1),
               (SELECT b.last_outbox_id FROM calendar_event_bindings b
                 WHERE b.workspace_id = o.workspace_id AND b.calendar_id = o.calendar_id
                   AND b.source_type = o.source_type AND b.source_id = o.source_id))
     WHERE o.id = ANY (moved) AND o.status = 'PENDING'
       AND o.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
       AND (EXISTS (SELECT 1 FROM sync_outbox n
                     WHERE n.workspace_id = o.workspace_id AND n.calendar_id = o.calendar_id
                       AND n.source_type = o.source_type AND n.source_id = o.source_id
                       AND n.status IN ('PENDING', 'PROCESSING') AND n.seq > o.seq
                       AND n.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT'))
            OR EXISTS (SELECT 1 FROM calendar_event_bindings b
                         JOIN sync_outbox w ON w.id = b.last_outbox_id
                        WHERE b.workspace_id = o.workspace_id AND b.calendar_id = o.calendar_id
                          AND b.source_type = o.source_type AND b.source_id = o.source_id
                          AND w.seq > o.seq));
    verdict := 'REKEYED';
END;
$$;
