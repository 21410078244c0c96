-- The node's local cache: a copy of what the relay confirmed, plus what this device has not
-- had confirmed yet. Ids are the relay's 64-bit ids; timestamps are unix milliseconds.
-- Applied by node/src/cache/schema.rs, tracked with PRAGMA user_version.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The logged-in user: at most one row.
CREATE TABLE me (
    slot     INTEGER PRIMARY KEY CHECK (slot = 0),
    id       INTEGER NOT NULL,
    username TEXT    NOT NULL
);

CREATE TABLE guilds (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    owner_id   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    -- JSON array of the ids of the roles the user holds.
    my_roles   TEXT    NOT NULL DEFAULT '[]'
);

CREATE TABLE roles (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER NOT NULL REFERENCES guilds(id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    permissions INTEGER NOT NULL,
    position    INTEGER NOT NULL
);
CREATE INDEX roles_guild ON roles(guild_id);

-- Guild channels (guild_id set) and DM channels (guild_id NULL).
CREATE TABLE channels (
    id         INTEGER PRIMARY KEY,
    guild_id   INTEGER REFERENCES guilds(id) ON DELETE CASCADE,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    topic      TEXT,
    position   INTEGER NOT NULL,
    private    INTEGER NOT NULL,
    overwrites TEXT    NOT NULL DEFAULT '[]',
    last_seq   INTEGER NOT NULL,
    recipients TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX channels_guild ON channels(guild_id, position);

-- Highest applied seq per channel. No foreign key: confirmed events may arrive before the
-- channel row does (channel_create and message_create race on the wire).
CREATE TABLE cursors (
    channel_id INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL
);

-- Confirmed messages (id and seq set) and unconfirmed ones (id and seq NULL, shown at once).
-- local_id is the FTS rowid; (device, nonce) merges an unconfirmed row with its confirmation.
-- channel_id has no foreign key, for the same reason as cursors.
CREATE TABLE messages (
    local_id    INTEGER PRIMARY KEY,
    id          INTEGER UNIQUE,
    channel_id  INTEGER NOT NULL,
    author      INTEGER,
    device      TEXT    NOT NULL,
    nonce       TEXT    NOT NULL,
    content     TEXT    NOT NULL,
    -- concord_proto::limits::search_text(content): the same words the relay indexes.
    search_text TEXT    NOT NULL,
    reply_to    INTEGER,
    mentions    TEXT    NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL,
    edited_at   INTEGER,
    -- seq of the message_create event; NULL while unconfirmed.
    seq         INTEGER,
    received_at INTEGER NOT NULL,
    deleted     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device, nonce)
);
CREATE INDEX messages_history ON messages(channel_id, seq);
CREATE INDEX messages_unconfirmed ON messages(channel_id, received_at) WHERE seq IS NULL;

-- One row per (message, emoji, user), so adds and removes stay exact.
CREATE TABLE reactions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    emoji      TEXT    NOT NULL,
    user_id    INTEGER NOT NULL,
    PRIMARY KEY (message_id, emoji, user_id)
) WITHOUT ROWID;

-- Removing a channel (directly or through its guild) removes what the cache holds for it.
CREATE TRIGGER channels_cleanup AFTER DELETE ON channels BEGIN
    DELETE FROM messages WHERE channel_id = old.id;
    DELETE FROM cursors WHERE channel_id = old.id;
END;

-- Envelopes this device sent that the relay has not acknowledged yet.
CREATE TABLE outbox (
    position        INTEGER PRIMARY KEY,
    nonce           TEXT    NOT NULL UNIQUE,
    device          TEXT    NOT NULL,
    envelope        TEXT    NOT NULL,
    pushed_at       INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL
);

-- Full-text index over search_text (external content). Inserts are indexed by the code, in
-- the same transaction: with an insert trigger every INSERT would open a statement savepoint,
-- and FTS5 flushes its pending terms to disk at each savepoint, which makes bulk loads
-- (catch-up) more than twice as slow. Updates and deletes are rare or bulk, so triggers do.
-- Prefix indexes of 1-4 characters: the last query term is a prefix, and without an index
-- for its length FTS5 merges the posting lists of every word that starts with it (the "s"
-- of "it's", or "play" typed on the way to "playlist"): slow for short prefixes.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    search_text, content = 'messages', content_rowid = 'local_id',
    tokenize = 'unicode61 remove_diacritics 0', prefix = '1 2 3 4'
);
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, search_text) VALUES ('delete', old.local_id, old.search_text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF search_text ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, search_text) VALUES ('delete', old.local_id, old.search_text);
    INSERT INTO messages_fts(rowid, search_text) VALUES (new.local_id, new.search_text);
END;
