-- Instance invites: on an invite-only relay, a new account's first login may carry one of
-- these (made by an instance admin) instead of a guild invite.
CREATE TABLE instance_invites (
    code       TEXT    PRIMARY KEY,
    created_by INTEGER NOT NULL,
    max_uses   INTEGER,
    uses       INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);
