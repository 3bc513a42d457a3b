-- calendar-sync: least-privilege roles.
--
-- Run as the owner of the schema (the role that ran `calendar-sync-worker
-- migrate`), in the application's database, after the migrations:
--
--     psql "$OWNER_DATABASE_URL" -f docs/least-privilege.sql
--     psql "$OWNER_DATABASE_URL" -c "ALTER ROLE calendar_sync_worker PASSWORD '…'"
--
-- Rename `calendar_sync_worker` / `calendar_sync_producer` as you like (replace
-- every occurrence). The schema is assumed to be `public`, where the migrations
-- create it by default. Nothing else is granted: neither role owns anything,
-- can create objects, or can change the schema. Checked on PostgreSQL 15 by
-- tests/least_privilege.rs, which runs the drainer as `calendar_sync_worker`
-- (claims, advisory locks, LISTEN, orphan recovery from pg_locks, Google
-- outcomes, invalid connections, token rotation, status, requeue, cleanup,
-- connections) and enqueues as `calendar_sync_producer`.
--
-- What needs no grant (PostgreSQL 15 defaults): CONNECT on the database and
-- USAGE on schema public (granted to PUBLIC, unless you revoked them: then
-- grant them back to both roles); the advisory-lock functions
-- pg_try_advisory_lock / pg_advisory_unlock / pg_advisory_xact_lock and
-- gen_random_uuid (EXECUTE granted to PUBLIC); the claim, calendar_sync_claim,
-- the group commit of outcomes, calendar_sync_complete, the binding writes,
-- calendar_sync_put_bindings, and the other functions of
-- migrations/V2__functions.sql (EXECUTE granted to PUBLIC; all but three run
-- with the caller's rights, so the table grants below are what they need; the
-- three SECURITY DEFINER ones are named below); reading pg_locks and
-- pg_database (readable by PUBLIC); LISTEN and pg_notify (no privilege at all).
-- The identity sequence behind sync_outbox.seq needs no USAGE grant: an
-- identity column takes its value with the table's INSERT privilege.

-- The worker: `calendar-sync-worker run`, `drain --once`, `status`,
-- `requeue`, `cleanup`, `connections put|list`. NOLOGIN roles can be members
-- of it; give it a password or your own authentication.
CREATE ROLE calendar_sync_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;

-- sync_outbox: claims and outcomes (SELECT, UPDATE); `cleanup` (DELETE).
-- No INSERT: the worker never enqueues.
GRANT SELECT, UPDATE, DELETE ON sync_outbox TO calendar_sync_worker;
-- calendar_event_bindings: written as INSERT … ON CONFLICT DO UPDATE; never
-- deleted (a binding written under another name of its calendar moves to the
-- calendar's own id inside calendar_sync_record_alias, SECURITY DEFINER).
GRANT SELECT, INSERT, UPDATE ON calendar_event_bindings TO calendar_sync_worker;
-- calendar_aliases: what each calendar name resolves to; read by a
-- REBUILD_ALL, written only by SECURITY DEFINER functions
-- (calendar_sync_record_alias, and the trigger calendar_sync_forget_aliases).
GRANT SELECT ON calendar_aliases TO calendar_sync_worker;
-- google_connections: `connections put` (INSERT … ON CONFLICT DO UPDATE), a
-- rotated refresh token or an invalid grant, a circuit breaker opening or
-- closing (breaker_open_until), a minted access token (token_refreshed_at)
-- (UPDATE), the token refresher (SELECT).
GRANT SELECT, INSERT, UPDATE ON google_connections TO calendar_sync_worker;
-- The shared quota budget (the claim and calendar_sync_take_budget read it FOR
-- UPDATE, create a connection's bucket on first use and write it back) and the
-- claim's round-robin cursor (one row, updated by every claim).
GRANT SELECT, INSERT, UPDATE ON calendar_sync_budget TO calendar_sync_worker;
GRANT SELECT, UPDATE ON calendar_sync_claim_cursor TO calendar_sync_worker;
-- calendar_sync_minute_counts: the per-minute counts every worker adds to
-- (INSERT … ON CONFLICT DO UPDATE, read by the queue-depth sample) and
-- trims to two days (DELETE).
GRANT SELECT, INSERT, UPDATE, DELETE ON calendar_sync_minute_counts TO calendar_sync_worker;
-- `status` and /metrics read the views; /readyz and `status` count the applied migrations.
GRANT SELECT ON sync_outbox_status, sync_outbox_dead_letters, sync_outbox_oldest_pending
    TO calendar_sync_worker;
GRANT SELECT ON calendar_sync_migrations TO calendar_sync_worker;
-- calendar_sync_waiters: an idle worker registers itself for wake-ups (INSERT …
-- ON CONFLICT DO UPDATE) and leaves (DELETE), removing the rows of dead sessions.
GRANT SELECT, INSERT, UPDATE, DELETE ON calendar_sync_waiters TO calendar_sync_worker;
-- Drift checks (CALENDAR_SYNC_DRIFT_CHECK_INTERVAL_MS above 0): where each
-- calendar's listing stands (added, claimed and advanced), and the drift
-- found. Only under the `repair` policy does the worker enqueue: then also
--   GRANT INSERT ON sync_outbox TO calendar_sync_worker;
-- `cleanup` also deletes old drift and the check rows of calendars without
-- live events (DELETE).
GRANT SELECT, INSERT, UPDATE, DELETE ON calendar_sync_drift_checks TO calendar_sync_worker;
GRANT SELECT, INSERT, DELETE ON calendar_sync_drift TO calendar_sync_worker;
-- `requeue` and `cleanup` (they run with the caller's rights on sync_outbox).
GRANT EXECUTE ON FUNCTION requeue_dead_letter_items(uuid[], text), cleanup_old_outbox_items(integer)
    TO calendar_sync_worker;
-- If the application defines the desired-state view for REBUILD_ALL, also:
--   GRANT SELECT ON calendar_sync_desired_events TO calendar_sync_worker;
-- (a view reads its tables with its owner's rights, so this one grant is enough).

-- A producer: the application role that enqueues (INSERT … RETURNING id, as
-- calendar_sync::enqueue does). The wake-up trigger (calendar_sync_notify, run
-- at commit with the producer's rights) reads calendar_sync_waiters to see
-- whether a worker waits for a wake-up. Of sync_outbox a producer can read
-- id, for RETURNING: not the payloads of other rows, not last_error. The
-- trigger that keys a row naming "primary" by its calendar's own id
-- (calendar_sync_key_calendar, SECURITY DEFINER) reads calendar_aliases with
-- its owner's rights: no grant needed.
CREATE ROLE calendar_sync_producer NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT INSERT ON sync_outbox TO calendar_sync_producer;
GRANT SELECT (id) ON sync_outbox TO calendar_sync_producer;
GRANT SELECT ON calendar_sync_waiters TO calendar_sync_producer;
-- What the application reads of the outcomes (README "What your app can
-- read"): each source's event (id, state, etag, htmlLink, last write) and the
-- connections whose owner must reconnect. Views read their tables with their
-- owner's rights, so these grants show neither tokens nor payloads.
GRANT SELECT ON calendar_sync_events, calendar_sync_connections_needing_reconnect
    TO calendar_sync_producer;
-- Then: GRANT calendar_sync_producer TO your_application_role;
