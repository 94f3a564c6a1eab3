-- Core schema. Timestamps are integer microseconds since the Unix epoch (UTC) on both
-- databases, so every query and every comparison is the same on SQLite and PostgreSQL.

CREATE TABLE users (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    username          TEXT    NOT NULL UNIQUE,
    password_hash     TEXT    NOT NULL,
    is_superuser      BOOLEAN NOT NULL DEFAULT FALSE,
    is_system_auditor BOOLEAN NOT NULL DEFAULT FALSE,
    is_active         BOOLEAN NOT NULL DEFAULT TRUE,
    created_at        BIGINT  NOT NULL,
    modified_at       BIGINT  NOT NULL,
    last_login_at     BIGINT
);

-- A session outlives its user: deleting a user keeps the ended sessions (reason
-- user_disabled) so their clients are still told why.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      BIGINT  REFERENCES users (id) ON DELETE SET NULL,
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   BIGINT  NOT NULL,
    last_used_at BIGINT  NOT NULL,
    ended_at     BIGINT,
    end_reason   TEXT,
    ended_by     BIGINT  REFERENCES users (id) ON DELETE SET NULL,
    ip_address   TEXT,
    user_agent   TEXT
);
-- A user's live sessions, oldest first (the limit) and the sweeper's two scans.
CREATE INDEX sessions_user_live ON sessions (user_id, created_at, id) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_last_used ON sessions (last_used_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_created ON sessions (created_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended ON sessions (ended_at) WHERE ended_at IS NOT NULL;
CREATE INDEX sessions_user ON sessions (user_id, id);

-- Values stored through the API or CLI, as JSON; a key absent here has its default.
CREATE TABLE settings (
    key        TEXT   PRIMARY KEY,
    value      TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by BIGINT REFERENCES users (id) ON DELETE SET NULL
);

-- Consecutive failed logins per username (existing or not), and the password checks in
-- flight for it, so that concurrent guesses cannot exceed the limit (see auth/lockout.rs).
CREATE TABLE login_failures (
    username        TEXT   PRIMARY KEY,
    failures        BIGINT NOT NULL,
    last_failure_at BIGINT,
    locked_until    BIGINT,
    pending         BIGINT NOT NULL,
    pending_until   BIGINT,
    grant_nonce     BIGINT,
    updated_at      BIGINT NOT NULL
);
