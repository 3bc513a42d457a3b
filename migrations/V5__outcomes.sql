-- What applications may read about the outcome of their items, in plain SQL:
-- each binding keeps what Google returned last (etag, htmlLink) and when a
-- write call last succeeded; a view of the events, a view of the connections
-- that need the user to reconnect, and a NOTIFY when a connection becomes
-- invalid. README: "What your app can read".

ALTER TABLE calendar_event_bindings
    ADD COLUMN html_link text,
    ADD COLUMN last_written_at timestamptz;

COMMENT ON COLUMN calendar_event_bindings.html_link IS
    'calendar-sync: Google''s htmlLink of the event, from its last insert, update or read answer';
COMMENT ON COLUMN calendar_event_bindings.last_written_at IS
    'calendar-sync: when a write call to Google (insert, update, delete) last succeeded for the source; an unchanged upsert makes no call and leaves it';

-- When the connection became invalid (NULL while it is valid), kept by the
-- trigger below whoever writes is_valid.
ALTER TABLE google_connections ADD COLUMN invalid_since timestamptz;
UPDATE google_connections SET invalid_since = updated_at WHERE NOT is_valid;

-- ---------------------------------------------------------------------------
-- Binding writes with the link and the write time

-- As V2's, plus p_html_links (kept when NULL and the event id is unchanged)
-- and p_written (true: a write call succeeded, last_written_at = now()).
CREATE FUNCTION calendar_sync_put_bindings(
    p_workspace_ids text[], p_calendar_ids text[], p_source_types text[], p_source_ids text[],
    p_event_ids text[], p_generations integer[], p_states text[], p_etags text[],
    p_hashes text[], p_contents jsonb[], p_event_types text[], p_outbox_ids uuid[],
    p_html_links text[], p_written boolean[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO calendar_event_bindings AS b
           (workspace_id, calendar_id, source_type, source_id, google_event_id, generation,
            state, etag, content_hash, content, event_type, last_outbox_id, html_link,
            last_written_at)
    SELECT i.workspace_id, i.calendar_id, i.source_type, i.source_id, i.google_event_id,
           i.generation, i.state, i.etag, i.content_hash, i.content, i.event_type,
           i.last_outbox_id, i.html_link, CASE WHEN i.written THEN now() END
      FROM unnest(p_workspace_ids, p_calendar_ids, p_source_types, p_source_ids, p_event_ids,
                  p_generations, p_states, p_etags, p_hashes, p_contents, p_event_types,
                  p_outbox_ids, p_html_links, p_written)
        AS i(workspace_id, calendar_id, source_type, source_id, google_event_id, generation,
             state, etag, content_hash, content, event_type, last_outbox_id, html_link, written)
     WHERE i.google_event_id IS NOT NULL
    ON CONFLICT (workspace_id, calendar_id, source_type, source_id) DO UPDATE
       SET google_event_id = excluded.google_event_id, generation = excluded.generation,
           state = excluded.state, etag = excluded.etag, content_hash = excluded.content_hash,
           content = coalesce(excluded.content, b.content),
           event_type = coalesce(excluded.event_type, b.event_type),
           html_link = CASE WHEN excluded.google_event_id = b.google_event_id
                            THEN coalesce(excluded.html_link, b.html_link)
                            ELSE excluded.html_link END,
           last_written_at = coalesce(excluded.last_written_at, b.last_written_at),
           last_outbox_id = excluded.last_outbox_id, updated_at = now();
END;
$$;

-- V2's form (the claim's id reservations): no link, no write call.
CREATE OR REPLACE FUNCTION calendar_sync_put_bindings(
    p_workspace_ids text[], p_calendar_ids text[], p_source_types text[], p_source_ids text[],
    p_event_ids text[], p_generations integer[], p_states text[], p_etags text[],
    p_hashes text[], p_contents jsonb[], p_event_types text[], p_outbox_ids uuid[]
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM calendar_sync_put_bindings(
        p_workspace_ids, p_calendar_ids, p_source_types, p_source_ids, p_event_ids,
        p_generations, p_states, p_etags, p_hashes, p_contents, p_event_types, p_outbox_ids,
        NULL::text[], NULL::boolean[]);
END;
$$;

-- As V2's group commit, plus each binding's link and whether a write call
-- succeeded. (V2's form stays, for workers of the previous release during an
-- upgrade: their bindings get no link.)
CREATE FUNCTION calendar_sync_complete(
    p_ids uuid[], p_tokens uuid[], p_results jsonb[], p_workspace_ids text[],
    p_calendar_ids text[], p_source_types text[], p_source_ids text[], p_event_ids text[],
    p_generations integer[], p_states text[], p_etags text[], p_hashes text[],
    p_contents jsonb[], p_event_types text[], p_html_links text[], p_written boolean[]
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
        p_generations, p_states, p_etags, p_hashes, p_contents, p_event_types, p_ids,
        p_html_links, p_written);
    RETURN QUERY SELECT unnest(done);
END;
$$;

-- ---------------------------------------------------------------------------
-- Connections that became invalid

-- Keeps invalid_since, and notifies channel calendar_sync_connection_invalid
-- with the workspace id (nothing else: never a token) when a connection
-- becomes invalid. NOTIFY is delivered at commit, so a listener never hears of
-- an invalidation that was rolled back.
CREATE FUNCTION calendar_sync_connection_validity() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.is_valid AND NOT NEW.is_valid THEN
        NEW.invalid_since := now();
        PERFORM pg_notify('calendar_sync_connection_invalid', NEW.workspace_id);
    ELSIF NEW.is_valid THEN
        NEW.invalid_since := NULL;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER calendar_sync_connection_validity
    BEFORE UPDATE OF is_valid ON google_connections
    FOR EACH ROW EXECUTE FUNCTION calendar_sync_connection_validity();

-- ---------------------------------------------------------------------------
-- Views for applications (README: "What your app can read")

-- One row per source: the Google event it is bound to and what Google
-- returned last. state: INSERTING (id chosen, insert not confirmed), LIVE,
-- CANCELLED (deleted by us). calendar_id is the calendar's own id, whichever
-- name the payloads used.
CREATE VIEW calendar_sync_events AS
    SELECT workspace_id, calendar_id, source_type, source_id, google_event_id, state, etag,
           html_link, last_written_at, updated_at
      FROM calendar_event_bindings;

COMMENT ON VIEW calendar_sync_events IS
    'calendar-sync: each source''s Google event: id, state, etag, htmlLink, when a write call last succeeded';

-- Connections whose OAuth grant Google refused: the user must connect again
-- (`connections put`). items_waiting: the workspace's dead letters, which
-- `requeue --workspace` brings back once it is reconnected. Never the token.
CREATE VIEW calendar_sync_connections_needing_reconnect AS
    SELECT c.workspace_id, c.google_email, c.invalid_reason,
           coalesce(c.invalid_since, c.updated_at) AS since,
           (SELECT count(*) FROM sync_outbox o
             WHERE o.workspace_id = c.workspace_id AND o.status = 'DEAD_LETTER') AS items_waiting
      FROM google_connections c
     WHERE NOT c.is_valid;

COMMENT ON VIEW calendar_sync_connections_needing_reconnect IS
    'calendar-sync: connections whose grant is unusable, since when, and the dead letters waiting for a reconnect';
