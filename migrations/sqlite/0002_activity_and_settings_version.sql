-- The audit trail: one entry per change of settings, users or sessions.
CREATE TABLE activity_stream (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    timestamp      BIGINT NOT NULL,
    actor_id       BIGINT REFERENCES users (id) ON DELETE SET NULL,
    -- Kept when the actor is deleted, so the entry still says who.
    actor_username TEXT,
    origin         TEXT   NOT NULL,
    operation      TEXT   NOT NULL,
    object         TEXT   NOT NULL,
    object_id      BIGINT,
    category       TEXT,
    changes        TEXT   NOT NULL
);

-- Bumped by every write to `settings`: every instance compares it with the version it has
-- loaded (and, on PostgreSQL, hears of it at once through NOTIFY).
CREATE TABLE settings_version (
    id      INTEGER PRIMARY KEY,
    version BIGINT  NOT NULL
);
INSERT INTO settings_version (id, version) VALUES (1, 0);
