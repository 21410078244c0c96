-- Instance administration: instance admins (separate from guild roles), suspended accounts,
-- and the instance audit log of admin actions.
ALTER TABLE accounts ADD COLUMN instance_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN suspended_at INTEGER;

CREATE TABLE instance_audit (
    id         INTEGER PRIMARY KEY,
    -- NULL: done from the command line on the server.
    actor_id   INTEGER,
    action     TEXT    NOT NULL,
    target_id  INTEGER,
    detail     TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE INDEX instance_audit_time ON instance_audit(created_at);
