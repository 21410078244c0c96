-- Instance administration: instance admins (separate from guild roles), suspended accounts,
-- and the instance audit log of admin actions.
ALTER TABLE accounts ADD COLUMN instance_admin BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN suspended_at BIGINT;

CREATE TABLE instance_audit (
    id         BIGINT PRIMARY KEY,
    -- NULL: done from the command line on the server.
    actor_id   BIGINT,
    action     TEXT    NOT NULL,
    target_id  BIGINT,
    detail     TEXT    NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);
CREATE INDEX instance_audit_time ON instance_audit(created_at);
