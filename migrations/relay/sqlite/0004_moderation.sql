-- Guild moderation: timeouts, slow mode, the guild audit log, the reports queue, and
-- deleted accounts (the row stays so that kept messages still have an author).
ALTER TABLE members ADD COLUMN timeout_until INTEGER;
ALTER TABLE channels ADD COLUMN slowmode_secs INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN deleted_at INTEGER;

CREATE TABLE guild_audit (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    actor_id   INTEGER NOT NULL,
    action     TEXT    NOT NULL,
    target_id  INTEGER,
    detail     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE INDEX guild_audit_guild ON guild_audit(guild_id, id);
CREATE INDEX guild_audit_time ON guild_audit(created_at);

CREATE TABLE reports (
    id              INTEGER PRIMARY KEY,
    -- NULL: sent to the instance admins.
    guild_id        INTEGER REFERENCES guilds(id) ON DELETE CASCADE,
    reporter_id     INTEGER NOT NULL,
    user_id         INTEGER NOT NULL,
    channel_id      INTEGER,
    message_id      INTEGER,
    message_content TEXT,
    reason          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'open',
    action          TEXT,
    handled_by      INTEGER,
    handled_at      INTEGER,
    created_at      INTEGER NOT NULL
);
CREATE INDEX reports_queue ON reports(guild_id, status, id);
