-- Concord relay schema, PostgreSQL. Times are unix milliseconds unless named *_secs.
-- Keep in step with ../sqlite/0001_init.sql: the conformance suite runs against both.

CREATE TABLE accounts (
    id          BIGINT PRIMARY KEY,
    username    TEXT    NOT NULL UNIQUE,
    account_key TEXT    NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    device_key    TEXT    PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label         TEXT    NOT NULL,
    certificate   TEXT    NOT NULL,
    certified_at  BIGINT NOT NULL,
    added_at      BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX devices_account ON devices(account_id);

CREATE TABLE auth_challenges (
    challenge  TEXT    PRIMARY KEY,
    device_key TEXT    NOT NULL,
    audience   TEXT    NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX auth_challenges_expiry ON auth_challenges(expires_at);

CREATE TABLE signing_keys (
    kid        TEXT    PRIMARY KEY,
    secret     TEXT    NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id           BIGINT PRIMARY KEY,
    account_id   BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_key   TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    refreshed_at BIGINT NOT NULL,
    revoked_at   BIGINT
);
CREATE INDEX sessions_account ON sessions(account_id);
CREATE INDEX sessions_device ON sessions(device_key);
CREATE INDEX sessions_revoked ON sessions(revoked_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    session_id BIGINT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE guilds (
    id         BIGINT PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner_id   BIGINT NOT NULL REFERENCES accounts(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE roles (
    id          BIGINT PRIMARY KEY,
    guild_id    BIGINT NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    permissions BIGINT NOT NULL,
    position    BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX roles_guild ON roles(guild_id);

-- Direct-message channels have no guild.
CREATE TABLE channels (
    id         BIGINT PRIMARY KEY,
    guild_id   BIGINT REFERENCES guilds(id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    topic      TEXT,
    position   BIGINT NOT NULL DEFAULT 0,
    private    BIGINT  NOT NULL DEFAULT 0,
    last_seq   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX channels_guild ON channels(guild_id);

CREATE TABLE dm_channels (
    channel_id BIGINT PRIMARY KEY REFERENCES channels(id) ON DELETE CASCADE,
    user_low   BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_high  BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    UNIQUE (user_low, user_high)
);
CREATE INDEX dm_channels_high ON dm_channels(user_high);

CREATE TABLE overwrites (
    channel_id  BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    target_id   BIGINT NOT NULL,
    target_kind TEXT    NOT NULL,
    allow_bits  BIGINT NOT NULL,
    deny_bits   BIGINT NOT NULL,
    PRIMARY KEY (channel_id, target_id)
);

CREATE TABLE members (
    guild_id  BIGINT NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    user_id   BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
CREATE INDEX members_user ON members(user_id);

CREATE TABLE member_roles (
    guild_id BIGINT NOT NULL,
    user_id  BIGINT NOT NULL,
    role_id  BIGINT NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (guild_id, user_id, role_id),
    FOREIGN KEY (guild_id, user_id) REFERENCES members(guild_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_roles_role ON member_roles(role_id);

CREATE TABLE bans (
    guild_id   BIGINT NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    user_id    BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    reason     TEXT,
    banned_by  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE invites (
    code       TEXT    PRIMARY KEY,
    guild_id   BIGINT NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    inviter_id BIGINT NOT NULL,
    max_uses   BIGINT,
    uses       BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX invites_guild ON invites(guild_id);

CREATE TABLE messages (
    id         BIGINT PRIMARY KEY,
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    author_id  BIGINT NOT NULL REFERENCES accounts(id),
    device_key TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    -- The content's words, lowercased and space-separated (concord_proto::limits::search_text):
    -- what full-text search indexes, so both backends tokenise the same way.
    search_text TEXT   NOT NULL DEFAULT '',
    reply_to   BIGINT,
    mentions   TEXT    NOT NULL DEFAULT '[]',
    seq        BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    edited_at  BIGINT,
    deleted_at BIGINT,
    UNIQUE (author_id, nonce)
);
CREATE INDEX messages_channel ON messages(channel_id, id);
CREATE INDEX messages_author ON messages(author_id, id);

CREATE TABLE reactions (
    message_id BIGINT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    user_id    BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- The gapless per-channel event log that catch-up reads.
CREATE TABLE channel_events (
    channel_id BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT    NOT NULL,
    message_id BIGINT NOT NULL,
    payload    TEXT    NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX channel_events_message ON channel_events(message_id);

CREATE TABLE read_states (
    user_id      BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id   BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    last_read_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, channel_id)
);

CREATE TABLE worker_leases (
    worker_id  BIGINT PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Full-text search over search_text with the 'simple' configuration (no stemming) and a GIN
-- index; the words were split in Rust, so PostgreSQL's parser only sees plain words.
ALTER TABLE messages ADD COLUMN content_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED;
CREATE INDEX messages_content_tsv ON messages USING GIN (content_tsv);
