-- Concord relay schema, SQLite. Times are unix milliseconds unless named *_secs. Flags are
-- integers 0/1 (sqlx's Any driver cannot read SQLite BOOLEAN columns).
-- Keep in step with ../postgres/0001_init.sql: the conformance suite runs against both.

CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    username    TEXT    NOT NULL UNIQUE,
    account_key TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE devices (
    device_key    TEXT    PRIMARY KEY,
    account_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label         TEXT    NOT NULL,
    certificate   TEXT    NOT NULL,
    certified_at  INTEGER NOT NULL,
    added_at      INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX devices_account ON devices(account_id);

CREATE TABLE auth_challenges (
    challenge  TEXT    PRIMARY KEY,
    device_key TEXT    NOT NULL,
    audience   TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX auth_challenges_expiry ON auth_challenges(expires_at);

CREATE TABLE signing_keys (
    kid        TEXT    PRIMARY KEY,
    secret     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    device_key   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    refreshed_at INTEGER NOT NULL,
    revoked_at   INTEGER
);
CREATE INDEX sessions_account ON sessions(account_id);
CREATE INDEX sessions_device ON sessions(device_key);
CREATE INDEX sessions_revoked ON sessions(revoked_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT    PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE guilds (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner_id   INTEGER NOT NULL REFERENCES accounts(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    permissions INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX roles_guild ON roles(guild_id);

-- Direct-message channels have no guild.
CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER REFERENCES guilds(id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    topic      TEXT,
    position   INTEGER NOT NULL DEFAULT 0,
    private    INTEGER NOT NULL DEFAULT 0,
    last_seq   INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX channels_guild ON channels(guild_id);

CREATE TABLE dm_channels (
    channel_id INTEGER PRIMARY KEY REFERENCES channels(id) ON DELETE CASCADE,
    user_low   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_high  INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    UNIQUE (user_low, user_high)
);
CREATE INDEX dm_channels_high ON dm_channels(user_high);

CREATE TABLE overwrites (
    channel_id  INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    target_id   INTEGER NOT NULL,
    target_kind TEXT    NOT NULL,
    allow_bits  INTEGER NOT NULL,
    deny_bits   INTEGER NOT NULL,
    PRIMARY KEY (channel_id, target_id)
);

CREATE TABLE members (
    guild_id  INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    user_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);
CREATE INDEX members_user ON members(user_id);

CREATE TABLE member_roles (
    guild_id INTEGER NOT NULL,
    user_id  INTEGER NOT NULL,
    role_id  INTEGER NOT NULL REFERENCES roles(id) ON DELETE CASCADE,
    PRIMARY KEY (guild_id, user_id, role_id),
    FOREIGN KEY (guild_id, user_id) REFERENCES members(guild_id, user_id) ON DELETE CASCADE
);
CREATE INDEX member_roles_role ON member_roles(role_id);

CREATE TABLE bans (
    guild_id   INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    reason     TEXT,
    banned_by  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE invites (
    code       TEXT    PRIMARY KEY,
    guild_id   INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    inviter_id INTEGER NOT NULL,
    max_uses   INTEGER,
    uses       INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER,
    revoked_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX invites_guild ON invites(guild_id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES accounts(id),
    device_key TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    -- The content's words, lowercased and space-separated (concord_proto::limits::search_text):
    -- what full-text search indexes, so both backends tokenise the same way.
    search_text TEXT   NOT NULL DEFAULT '',
    reply_to   INTEGER,
    mentions   TEXT    NOT NULL DEFAULT '[]',
    seq        INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    edited_at  INTEGER,
    deleted_at INTEGER,
    UNIQUE (author_id, nonce)
);
CREATE INDEX messages_channel ON messages(channel_id, id);
CREATE INDEX messages_author ON messages(author_id, id);

CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    user_id    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
);

-- The gapless per-channel event log that catch-up reads.
CREATE TABLE channel_events (
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    message_id INTEGER NOT NULL,
    payload    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq)
);
CREATE INDEX channel_events_message ON channel_events(message_id);

CREATE TABLE read_states (
    user_id      INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    channel_id   INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    last_read_id INTEGER NOT NULL,
    PRIMARY KEY (user_id, channel_id)
);

CREATE TABLE worker_leases (
    worker_id  INTEGER PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Full-text search over the messages' search_text (external content table, kept by triggers).
CREATE VIRTUAL TABLE messages_fts USING fts5(
    search_text, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, search_text) VALUES (new.id, new.search_text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF search_text ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text);
    INSERT INTO messages_fts(rowid, search_text) VALUES (new.id, new.search_text);
END;
