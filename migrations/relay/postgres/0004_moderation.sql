-- Guild moderation: timeouts, slow mode, the guild audit log, the reports queue, and
-- deleted accounts (the row stays so that kept messages still have an author).
ALTER TABLE members ADD COLUMN timeout_until BIGINT;
ALTER TABLE channels ADD COLUMN slowmode_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN deleted_at BIGINT;

CREATE TABLE guild_audit (
    id         BIGINT PRIMARY KEY,
    guild_id   BIGINT NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    actor_id   BIGINT NOT NULL,
    action     TEXT    NOT NULL,
    target_id  BIGINT,
    detail     TEXT    NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX guild_audit_guild ON guild_audit(guild_id, id);
CREATE INDEX guild_audit_time ON guild_audit(created_at);

CREATE TABLE reports (
    id              BIGINT PRIMARY KEY,
    -- NULL: sent to the instance admins.
    guild_id        BIGINT REFERENCES guilds(id) ON DELETE CASCADE,
    reporter_id     BIGINT NOT NULL,
    user_id         BIGINT NOT NULL,
    channel_id      BIGINT,
    message_id      BIGINT,
    message_content TEXT,
    reason          TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'open',
    action          TEXT,
    handled_by      BIGINT,
    handled_at      BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX reports_queue ON reports(guild_id, status, id);
