-- Instance invites: on an invite-only relay, a new account's first login may carry one of
-- these (made by an instance admin) instead of a guild invite.
CREATE TABLE instance_invites (
    code       TEXT    PRIMARY KEY,
    created_by BIGINT NOT NULL,
    max_uses   BIGINT,
    uses       BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
