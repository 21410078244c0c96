-- messages partitioned by month. Ids are time-ordered (milliseconds since 2024-01-01 UTC in
-- the bits above 22), so a month is a range of ids and the primary key (id) contains the
-- partition key. Retention then archives and drops whole months.
--
-- (author_id, nonce) cannot stay a unique key of a partitioned table without the partition
-- key in it, so message_nonces holds that uniqueness, filled by a row trigger in the same
-- transaction: a repeated nonce still fails the insert with a unique violation.
--
-- The relay creates the coming months' partitions itself (store/sql/partitions.rs); this
-- migration creates every month from the oldest message to three months ahead, so existing
-- rows land in their month and the default partition stays empty.

CREATE TABLE messages_by_month (
    id          BIGINT NOT NULL,
    channel_id  BIGINT NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    author_id   BIGINT NOT NULL REFERENCES accounts(id),
    device_key  TEXT   NOT NULL,
    nonce       TEXT   NOT NULL,
    content     TEXT   NOT NULL,
    search_text TEXT   NOT NULL DEFAULT '',
    reply_to    BIGINT,
    mentions    TEXT   NOT NULL DEFAULT '[]',
    seq         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    edited_at   BIGINT,
    deleted_at  BIGINT,
    content_tsv tsvector GENERATED ALWAYS AS (to_tsvector('simple', search_text)) STORED,
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);

CREATE TABLE messages_default PARTITION OF messages_by_month DEFAULT;

CREATE FUNCTION concord_month_start_ms(ms BIGINT) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM date_trunc('month', to_timestamp(ms / 1000.0) AT TIME ZONE 'UTC')
        AT TIME ZONE 'UTC') * 1000)::BIGINT
$$;

DO $$
DECLARE
    epoch CONSTANT BIGINT := 1704067200000;
    now_ms BIGINT := (extract(epoch FROM now()) * 1000)::BIGINT;
    month_ms BIGINT;
    next_ms BIGINT;
    stop_ms BIGINT;
BEGIN
    SELECT concord_month_start_ms(COALESCE(MIN((id >> 22) + epoch), now_ms)) INTO month_ms
        FROM messages;
    month_ms := GREATEST(month_ms, epoch);
    stop_ms := concord_month_start_ms(now_ms + 100::BIGINT * 86400000);
    WHILE month_ms <= stop_ms LOOP
        next_ms := concord_month_start_ms(month_ms + 40::BIGINT * 86400000);
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF messages_by_month FOR VALUES FROM (%s) TO (%s)',
            'messages_p' || to_char(to_timestamp(month_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYYMM'),
            (month_ms - epoch) << 22,
            (next_ms - epoch) << 22);
        month_ms := next_ms;
    END LOOP;
END $$;

INSERT INTO messages_by_month (id, channel_id, author_id, device_key, nonce, content,
        search_text, reply_to, mentions, seq, created_at, edited_at, deleted_at)
    SELECT id, channel_id, author_id, device_key, nonce, content, search_text, reply_to,
        mentions, seq, created_at, edited_at, deleted_at
    FROM messages;

CREATE TABLE message_nonces (
    author_id  BIGINT NOT NULL,
    nonce      TEXT   NOT NULL,
    message_id BIGINT NOT NULL,
    PRIMARY KEY (author_id, nonce)
);
CREATE INDEX message_nonces_message ON message_nonces(message_id);
INSERT INTO message_nonces (author_id, nonce, message_id)
    SELECT author_id, nonce, id FROM messages;

-- The old table goes, and with it the reactions' foreign key, added back below.
DROP TABLE messages CASCADE;
ALTER TABLE messages_by_month RENAME TO messages;
CREATE INDEX messages_channel ON messages(channel_id, id);
CREATE INDEX messages_author ON messages(author_id, id);
CREATE INDEX messages_author_nonce ON messages(author_id, nonce);
CREATE INDEX messages_content_tsv ON messages USING GIN (content_tsv);
ALTER TABLE reactions ADD CONSTRAINT reactions_message_id_fkey
    FOREIGN KEY (message_id) REFERENCES messages(id) ON DELETE CASCADE;

CREATE FUNCTION messages_claim_nonce() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO message_nonces (author_id, nonce, message_id)
        VALUES (NEW.author_id, NEW.nonce, NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER messages_nonce AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION messages_claim_nonce();

-- Months of messages moved to the archive store (see relay/src/archive).
CREATE TABLE archived_months (
    month       TEXT PRIMARY KEY,
    object      TEXT   NOT NULL,
    messages    BIGINT NOT NULL,
    archived_at BIGINT NOT NULL
);
