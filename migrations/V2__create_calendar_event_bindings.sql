-- Which Google event stands for which application object. This table is the
-- source of truth that makes every operation idempotent.
CREATE TABLE calendar_event_bindings (
    workspace_id    text        NOT NULL,
    calendar_id     text        NOT NULL,
    source_type     text        NOT NULL,
    source_id       text        NOT NULL,
    -- Derived from the key and the generation; persisted before the insert call,
    -- so a retry after a lost reply finds its own event instead of creating a second.
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

CREATE UNIQUE INDEX calendar_event_bindings_event_idx
    ON calendar_event_bindings (calendar_id, google_event_id);
