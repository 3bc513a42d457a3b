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
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
