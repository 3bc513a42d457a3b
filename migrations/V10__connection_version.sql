-- Bumped by every reconnect (a new envelope, account or validity stored by
-- put_connection). Each worker compares it, before each Google call, with the
-- version its cached access token was minted under (one shared read per process at a time), so a reconnect reaches
-- every process at once (issue 13 §3). Our own re-seals and Google's token
-- rotations keep the account and leave it alone.
ALTER TABLE google_connections ADD COLUMN connection_version bigint NOT NULL DEFAULT 1;
