-- What the dashboard reads that the outbox itself does not keep: activity per
-- minute, each connection's breaker and last token refresh, and a way to find
-- any item, finished or not, by its source id.

-- Per-minute activity, shared by every worker process: each adds what it saw
-- (n = n + its count) every few seconds, so the dashboard's charts are the
-- same whichever process serves them and however many run. Rows older than
-- two days are deleted by the workers as they write.
--   metric 'completed' | 'retried' | 'dead_lettered' | 'superseded': items;
--   metric 'google_calls', label = the HTTP status ('200', '429', ...),
--     'timeout' or 'error' (no answer): calls to Google;
--   metric 'queue_depth': PENDING + PROCESSING items, sampled once a minute
--     by the first worker that gets to it (a gauge: never added to).
CREATE TABLE calendar_sync_minute_counts (
    minute timestamptz NOT NULL CHECK (minute = date_trunc('minute', minute)),
    metric text        NOT NULL,
    label  text        NOT NULL DEFAULT '',
    n      bigint      NOT NULL,
    PRIMARY KEY (minute, metric, label)
);

COMMENT ON TABLE calendar_sync_minute_counts IS
    'calendar-sync: items completed/retried/dead-lettered/superseded, Google calls by status and queue depth, per minute, for the last two days';

-- Until when a worker's circuit breaker keeps the connection's calls back
-- (written when a breaker opens; in the past once it has closed), and when a
-- worker last minted an access token from the refresh token.
ALTER TABLE google_connections
    ADD COLUMN breaker_open_until timestamptz,
    ADD COLUMN token_refreshed_at timestamptz;

-- Any item by its source id, whatever its status: "why is task 42 not in my
-- calendar?" must not read the whole history. (Status changes already update
-- the partial indexes, so this adds one index entry per row version.)
CREATE INDEX sync_outbox_source_id_idx ON sync_outbox (source_id);
