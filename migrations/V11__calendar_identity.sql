-- One calendar, one identity (issue 13 §5). "primary" and the owner's address
-- (or any other alias Google accepts) name the same calendar. Bindings,
-- per-source ordering, REBUILD_ALL fences and the REBUILD_ALL itself used to
-- key on the name as the producer wrote it, so a REBUILD_ALL of "primary"
-- deleted, as orphans, the events synced under the calendar's own id.
--
-- Now every key uses the id Google resolves the name to (calendars.get):
--
-- * calendar_aliases remembers, per workspace, what a name resolved to under
--   the workspace's current connection (a reconnect forgets them: "primary"
--   of another account is another calendar);
-- * sync_outbox.calendar_id is no longer generated from the payload: an insert
--   (or a change of the payload) sets it to the resolved id when the name is
--   known, else to the name as written. Every index, the claim, the fences and
--   the per-source ordering use it unchanged;
-- * an item whose row is still keyed by the name learns the real id from
--   Google before it writes anything, re-keys the workspace's waiting rows of
--   that name, carries the name's bindings over to the real id, and steps
--   back in line without using an attempt (calendar_sync_resolve_item): its
--   next claim judges it in order with every other row of the calendar.
--
-- Existing bindings are carried over the first time a name is resolved (a
-- migration cannot ask Google what "primary" means); a REBUILD_ALL resolves
-- every name its workspace's bindings use before it decides what is an orphan.
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

CREATE INDEX calendar_aliases_resolved_idx ON calendar_aliases (workspace_id, resolved_id);

COMMENT ON TABLE calendar_aliases IS
    'calendar-sync: what each calendar name of a workspace resolves to (calendars.get), under its current connection';

ALTER TABLE sync_outbox ALTER COLUMN calendar_id DROP EXPRESSION;

COMMENT ON COLUMN sync_outbox.calendar_id IS
    'The calendar''s resolved id (calendar_aliases) once known, else payload ->> ''calendarId''; set by a trigger';

-- SECURITY DEFINER: producers insert with their own rights, and an upgrade
-- must not make their inserts need a new grant (it would fail the
-- application's own transactions). It reads one alias, nothing else.
CREATE FUNCTION calendar_sync_key_calendar() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    NEW.calendar_id := coalesce(
        (SELECT a.resolved_id FROM calendar_aliases a
          WHERE a.workspace_id = NEW.payload ->> 'workspaceId'
            AND a.calendar_id = NEW.payload ->> 'calendarId'),
        NEW.payload ->> 'calendarId');
    RETURN NEW;
END;
$$;

CREATE TRIGGER sync_outbox_key_calendar
    BEFORE INSERT OR UPDATE OF payload ON sync_outbox
    FOR EACH ROW EXECUTE FUNCTION calendar_sync_key_calendar();

-- A reconnect (a new connection version) or a removed connection forgets what
-- the workspace's names meant.
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
-- carried over, the workspace's waiting rows of that name re-keyed, those a
-- newer write of their source already overtook superseded, and this row is
-- back in line without using an attempt (it wrote nothing). 'STALE': the
-- connection changed meanwhile; 'LOST': the claim is gone.
CREATE FUNCTION calendar_sync_resolve_item(
    p_id uuid, p_token uuid, p_workspace text, p_name text, p_resolved text, p_version bigint,
    OUT verdict text, OUT doubled integer
)
LANGUAGE plpgsql AS $$
DECLARE
    key text;
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
    PERFORM pg_advisory_xact_lock_shared(1668512110, 0);
    doubled := calendar_sync_record_alias(p_workspace, p_name, p_resolved, p_version);
    IF doubled < 0 THEN
        doubled := 0;
        verdict := 'STALE';
        RETURN;
    END IF;
    UPDATE sync_outbox o
       SET status = 'PENDING', attempts = greatest(o.attempts - 1, 0), claim_token = NULL,
           next_attempt_at = now(), updated_at = now()
     WHERE o.id = p_id AND o.claim_token = p_token;
    -- Rows in flight elsewhere under the old key step back the same way
    -- when their item gets here.
    UPDATE sync_outbox o SET calendar_id = p_resolved, updated_at = now()
     WHERE o.workspace_id = p_workspace AND o.status = 'PENDING'
       AND o.payload ->> 'calendarId' = p_name AND o.calendar_id IS DISTINCT FROM p_resolved;
    UPDATE sync_outbox o
       SET status = 'SUPERSEDED', superseded_by = b.last_outbox_id, updated_at = now(),
           processed_at = now()
      FROM calendar_event_bindings b, sync_outbox w
     WHERE o.workspace_id = p_workspace AND o.calendar_id = p_resolved AND o.status = 'PENDING'
       AND o.payload ->> 'calendarId' = p_name
       AND o.operation IN ('UPSERT_EVENT', 'CANCEL_EVENT')
       AND b.workspace_id = o.workspace_id AND b.calendar_id = o.calendar_id
       AND b.source_type = o.source_type AND b.source_id = o.source_id
       AND w.id = b.last_outbox_id AND w.seq > o.seq;
    verdict := 'REKEYED';
END;
$$;
