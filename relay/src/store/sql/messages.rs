use std::collections::HashMap;

use async_trait::async_trait;
use concord_proto::model::{
    ChannelEvent, EventKind, Message, MessageDeleted, ReactionCount, ReactionEvent, ReadState,
};
use concord_proto::{Id, limits};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use super::rows::{id, int, opt_id, opt_int, text};
use super::{SqlStore, is_unique_violation, placeholders};
use crate::store::{
    HistoryAnchor, InsertedMessage, MessageStore, NewMessage, SearchParams, StoreError, StoreResult,
};
use concord_proto::model::SearchHit;

pub(super) const MESSAGE_COLS: &str = "m.id, m.channel_id, c.guild_id, m.author_id, m.device_key, m.nonce, m.content, \
     m.reply_to, m.mentions, m.seq, m.created_at, m.edited_at, m.deleted_at";

/// Unread and mention counts stop at this number, so a huge backlog costs a bounded scan.
const UNREAD_CAP: i64 = 1_000;

pub(super) fn message_row(row: &AnyRow) -> StoreResult<Message> {
    let mentions: Vec<Id> = serde_json::from_str(&text(row, "mentions")?)
        .map_err(|e| StoreError::Corrupt(format!("mentions: {e}")))?;
    Ok(Message {
        id: id(row, "id")?,
        channel_id: id(row, "channel_id")?,
        guild_id: opt_id(row, "guild_id")?,
        author: id(row, "author_id")?,
        device: text(row, "device_key")?,
        nonce: text(row, "nonce")?,
        content: text(row, "content")?,
        created_at: int(row, "created_at")?,
        edited_at: opt_int(row, "edited_at")?,
        seq: int(row, "seq")?,
        reply_to: opt_id(row, "reply_to")?,
        mentions,
        reactions: Vec::new(),
        deleted: opt_int(row, "deleted_at")?.is_some(),
    })
}

/// Adds reaction counts, in the order each emoji was first used.
pub(super) async fn with_reactions(
    conn: &mut AnyConnection,
    mut messages: Vec<Message>,
) -> StoreResult<Vec<Message>> {
    if messages.is_empty() {
        return Ok(messages);
    }
    let sql = format!(
        "SELECT message_id, emoji, count(*) AS n, min(created_at) AS first FROM reactions WHERE message_id IN ({}) \
         GROUP BY message_id, emoji ORDER BY message_id, first, emoji",
        placeholders(1, messages.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for m in &messages {
        q = q.bind(m.id.0);
    }
    let mut by_message: HashMap<Id, Vec<ReactionCount>> = HashMap::new();
    for row in q.fetch_all(&mut *conn).await? {
        by_message
            .entry(id(&row, "message_id")?)
            .or_default()
            .push(ReactionCount {
                emoji: text(&row, "emoji")?,
                count: int(&row, "n")?,
                me: false,
            });
    }
    for m in &mut messages {
        m.reactions = by_message.remove(&m.id).unwrap_or_default();
    }
    Ok(messages)
}

async fn load_message(
    conn: &mut AnyConnection,
    channel_id: Id,
    message_id: Id,
) -> StoreResult<Option<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.id = $1 AND m.channel_id = $2"
    );
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(message_id.0)
        .bind(channel_id.0)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let message = message_row(&row)?;
    Ok(with_reactions(conn, vec![message]).await?.pop())
}

/// The next seq of a channel; the row lock (PostgreSQL) or the single writer (SQLite) keeps
/// seq gapless, and a rolled-back transaction gives its number back.
async fn next_seq(conn: &mut AnyConnection, channel_id: Id) -> StoreResult<i64> {
    let row =
        sqlx::query("UPDATE channels SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq")
            .bind(channel_id.0)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
    int(&row, "last_seq")
}

async fn append_event(
    conn: &mut AnyConnection,
    channel_id: Id,
    seq: i64,
    kind: EventKind,
    message_id: Id,
    data: serde_json::Value,
    now: i64,
) -> StoreResult<ChannelEvent> {
    sqlx::query("INSERT INTO channel_events (channel_id, seq, kind, message_id, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(channel_id.0)
        .bind(seq)
        .bind(kind.as_str())
        .bind(message_id.0)
        .bind(data.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(ChannelEvent {
        channel_id,
        seq,
        kind,
        message_id,
        data,
        created_at: now,
    })
}

pub(super) fn to_value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("wire types always serialise")
}

/// A live (not deleted) message, or NotFound.
async fn live_message(
    conn: &mut AnyConnection,
    channel_id: Id,
    message_id: Id,
) -> StoreResult<Message> {
    match load_message(conn, channel_id, message_id).await? {
        Some(m) if !m.deleted => Ok(m),
        _ => Err(StoreError::NotFound),
    }
}

async fn find_by_nonce(pool: &AnyPool, author: Id, nonce: &str) -> StoreResult<Option<Message>> {
    let mut conn = pool.acquire().await?;
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.author_id = $1 AND m.nonce = $2"
    );
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(author.0)
        .bind(nonce)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let message = message_row(&row)?;
    Ok(with_reactions(&mut conn, vec![message]).await?.pop())
}

impl SqlStore {
    async fn reaction_change(
        &self,
        channel_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: &str,
        now: i64,
        add: bool,
    ) -> StoreResult<Option<ChannelEvent>> {
        let mut tx = self.write.begin().await?;
        let message = live_message(&mut tx, channel_id, message_id).await?;
        let changed = if add {
            sqlx::query(
                "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (message_id, emoji, user_id) DO NOTHING",
            )
            .bind(message_id.0)
            .bind(emoji)
            .bind(user_id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query("DELETE FROM reactions WHERE message_id = $1 AND emoji = $2 AND user_id = $3")
                .bind(message_id.0)
                .bind(emoji)
                .bind(user_id.0)
                .execute(&mut *tx)
                .await?
        }
        .rows_affected()
            == 1;
        if !changed {
            return Ok(None);
        }
        let seq = next_seq(&mut tx, channel_id).await?;
        let data = ReactionEvent {
            channel_id,
            guild_id: message.guild_id,
            message_id,
            user_id,
            emoji: emoji.to_owned(),
            seq,
        };
        let kind = if add {
            EventKind::ReactionAdd
        } else {
            EventKind::ReactionRemove
        };
        let event = append_event(
            &mut tx,
            channel_id,
            seq,
            kind,
            message_id,
            to_value(&data),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(event))
    }
}

/// One message in its own transaction (the group commit's fallback).
pub(super) async fn insert_one(pool: &AnyPool, m: &NewMessage) -> StoreResult<InsertedMessage> {
    if let Some(existing) = find_by_nonce(pool, m.author, &m.nonce).await? {
        return Ok(InsertedMessage {
            message: existing,
            created: false,
        });
    }
    let mut tx = pool.begin().await?;
    let seq = next_seq(&mut tx, m.channel_id).await?;
    let guild_id = opt_id(
        &sqlx::query("SELECT guild_id FROM channels WHERE id = $1")
            .bind(m.channel_id.0)
            .fetch_one(&mut *tx)
            .await?,
        "guild_id",
    )?;
    let mentions = serde_json::to_string(&m.mentions).expect("ids serialise");
    let inserted = sqlx::query(
        "INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, search_text, reply_to, mentions, seq, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $11, $7, $8, $9, $10)",
    )
    .bind(m.id.0)
    .bind(m.channel_id.0)
    .bind(m.author.0)
    .bind(&m.device)
    .bind(&m.nonce)
    .bind(&m.content)
    .bind(m.reply_to.map(|r| r.0))
    .bind(mentions)
    .bind(seq)
    .bind(m.created_at)
    .bind(limits::search_text(&m.content))
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            // A concurrent retry with the same nonce won; this transaction (and its seq)
            // rolls back.
            drop(tx);
            let existing = find_by_nonce(pool, m.author, &m.nonce)
                .await?
                .ok_or(StoreError::NotFound)?;
            return Ok(InsertedMessage {
                message: existing,
                created: false,
            });
        }
        other => other?,
    };
    let message = Message {
        id: m.id,
        channel_id: m.channel_id,
        guild_id,
        author: m.author,
        device: m.device.clone(),
        nonce: m.nonce.clone(),
        content: m.content.clone(),
        created_at: m.created_at,
        edited_at: None,
        seq,
        reply_to: m.reply_to,
        mentions: m.mentions.clone(),
        reactions: Vec::new(),
        deleted: false,
    };
    append_event(
        &mut tx,
        m.channel_id,
        seq,
        EventKind::MessageCreate,
        m.id,
        to_value(&message),
        m.created_at,
    )
    .await?;
    tx.commit().await.map_err(StoreError::from_commit)?;
    Ok(InsertedMessage {
        message,
        created: true,
    })
}

#[async_trait]
impl MessageStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "insert_message"))]
    async fn insert_message(&self, m: &NewMessage) -> StoreResult<InsertedMessage> {
        let _t = self.begin_write("insert_message")?;
        self.note_write_error(self.batcher.insert(m.clone()).await)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "edit_message"))]
    async fn edit_message(
        &self,
        channel_id: Id,
        message_id: Id,
        content: &str,
        mentions: &[Id],
        now: i64,
    ) -> StoreResult<ChannelEvent> {
        let _t = self.begin_write("edit_message")?;
        let mut tx = self.write.begin().await?;
        live_message(&mut tx, channel_id, message_id).await?;
        sqlx::query(
            "UPDATE messages SET content = $1, mentions = $2, edited_at = $3, search_text = $5 WHERE id = $4",
        )
        .bind(content)
        .bind(serde_json::to_string(mentions).expect("ids serialise"))
        .bind(now)
        .bind(message_id.0)
        .bind(limits::search_text(content))
        .execute(&mut *tx)
        .await?;
        let seq = next_seq(&mut tx, channel_id).await?;
        // In an update event, the message's seq is the update's own seq.
        let message = Message {
            seq,
            ..live_message(&mut tx, channel_id, message_id).await?
        };
        let event = append_event(
            &mut tx,
            channel_id,
            seq,
            EventKind::MessageUpdate,
            message_id,
            to_value(&message),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "delete_message"))]
    async fn delete_message(
        &self,
        channel_id: Id,
        message_id: Id,
        now: i64,
    ) -> StoreResult<ChannelEvent> {
        let _t = self.begin("delete_message")?;
        let mut tx = self.write.begin().await?;
        let message = live_message(&mut tx, channel_id, message_id).await?;
        sqlx::query(
            "UPDATE messages SET content = '', search_text = '', mentions = '[]', deleted_at = $1 WHERE id = $2",
        )
        .bind(now)
        .bind(message_id.0)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM reactions WHERE message_id = $1")
            .bind(message_id.0)
            .execute(&mut *tx)
            .await?;
        // Catch-up must not hand out content that was deleted: redact earlier events, each
        // keeping its own seq.
        let earlier = sqlx::query(
            "SELECT seq FROM channel_events WHERE channel_id = $1 AND message_id = $2 \
             AND kind IN ('message_create', 'message_update')",
        )
        .bind(channel_id.0)
        .bind(message_id.0)
        .fetch_all(&mut *tx)
        .await?;
        for row in earlier {
            let event_seq = int(&row, "seq")?;
            let redacted = Message {
                content: String::new(),
                mentions: Vec::new(),
                reactions: Vec::new(),
                deleted: true,
                seq: event_seq,
                ..message.clone()
            };
            sqlx::query(
                "UPDATE channel_events SET payload = $1 WHERE channel_id = $2 AND seq = $3",
            )
            .bind(to_value(&redacted).to_string())
            .bind(channel_id.0)
            .bind(event_seq)
            .execute(&mut *tx)
            .await?;
        }
        let seq = next_seq(&mut tx, channel_id).await?;
        let data = MessageDeleted {
            id: message_id,
            channel_id,
            guild_id: message.guild_id,
            seq,
        };
        let event = append_event(
            &mut tx,
            channel_id,
            seq,
            EventKind::MessageDelete,
            message_id,
            to_value(&data),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(event)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "add_reaction"))]
    async fn add_reaction(
        &self,
        channel_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: &str,
        now: i64,
    ) -> StoreResult<Option<ChannelEvent>> {
        let _t = self.begin_write("add_reaction")?;
        self.reaction_change(channel_id, message_id, user_id, emoji, now, true)
            .await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "remove_reaction"))]
    async fn remove_reaction(
        &self,
        channel_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: &str,
        now: i64,
    ) -> StoreResult<Option<ChannelEvent>> {
        let _t = self.begin("remove_reaction")?;
        self.reaction_change(channel_id, message_id, user_id, emoji, now, false)
            .await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "message"))]
    async fn message(&self, channel_id: Id, message_id: Id) -> StoreResult<Option<Message>> {
        let _t = self.begin("message")?;
        let mut conn = self.write.acquire().await?;
        Ok(load_message(&mut conn, channel_id, message_id)
            .await?
            .filter(|m| !m.deleted))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "history"))]
    async fn history(
        &self,
        channel_id: Id,
        anchor: HistoryAnchor,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let _t = self.begin("history")?;
        let mut conn = self.read.acquire().await?;
        let base = format!(
            "SELECT {MESSAGE_COLS} FROM messages m JOIN channels c ON c.id = m.channel_id WHERE m.channel_id = $1 AND m.deleted_at IS NULL"
        );
        let limit = i64::from(limit);
        let page = |cond: &str, order: &str, lim: i64, at: i64| {
            let sql = format!("{base} {cond} ORDER BY m.id {order} LIMIT $3");
            sqlx::query(AssertSqlSafe(sql))
                .bind(channel_id.0)
                .bind(at)
                .bind(lim)
        };
        let mut rows_ = match anchor {
            HistoryAnchor::Latest => {
                page("AND m.id < $2", "DESC", limit, i64::MAX)
                    .fetch_all(&mut *conn)
                    .await?
            }
            HistoryAnchor::Before(b) => {
                page("AND m.id < $2", "DESC", limit, b.0)
                    .fetch_all(&mut *conn)
                    .await?
            }
            HistoryAnchor::After(a) => {
                page("AND m.id > $2", "ASC", limit, a.0)
                    .fetch_all(&mut *conn)
                    .await?
            }
            HistoryAnchor::Around(x) => {
                let mut older = page("AND m.id < $2", "DESC", limit / 2, x.0)
                    .fetch_all(&mut *conn)
                    .await?;
                let newer = page("AND m.id >= $2", "ASC", limit - limit / 2, x.0)
                    .fetch_all(&mut *conn)
                    .await?;
                older.extend(newer);
                older
            }
        };
        let mut messages = rows_
            .drain(..)
            .map(|r| message_row(&r))
            .collect::<StoreResult<Vec<_>>>()?;
        messages.sort_by_key(|m| m.id);
        with_reactions(&mut conn, messages).await
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "events"))]
    async fn events(
        &self,
        channel_id: Id,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<ChannelEvent>> {
        let _t = self.begin("events")?;
        sqlx::query(
            "SELECT channel_id, seq, kind, message_id, payload, created_at FROM channel_events \
             WHERE channel_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(channel_id.0)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.read.acquire().await?)
        .await?
        .iter()
        .map(|r| {
            let kind = text(r, "kind")?;
            Ok(ChannelEvent {
                channel_id: id(r, "channel_id")?,
                seq: int(r, "seq")?,
                kind: EventKind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt(format!("event kind {kind:?}")))?,
                message_id: id(r, "message_id")?,
                data: serde_json::from_str(&text(r, "payload")?)
                    .map_err(|e| StoreError::Corrupt(format!("event payload: {e}")))?,
                created_at: int(r, "created_at")?,
            })
        })
        .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "ack"))]
    async fn ack(&self, user_id: Id, channel_id: Id, message_id: Id) -> StoreResult<()> {
        let _t = self.begin("ack")?;
        sqlx::query(
            "INSERT INTO read_states (user_id, channel_id, last_read_id) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, channel_id) DO UPDATE SET last_read_id = excluded.last_read_id",
        )
        .bind(user_id.0)
        .bind(channel_id.0)
        .bind(message_id.0)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "my_reactions"))]
    async fn my_reactions(
        &self,
        user_id: Id,
        message_ids: &[Id],
    ) -> StoreResult<Vec<(Id, String)>> {
        if message_ids.is_empty() {
            return Ok(Vec::new());
        }
        let _t = self.begin("my_reactions")?;
        let sql = format!(
            "SELECT message_id, emoji FROM reactions WHERE user_id = $1 AND message_id IN ({}) \
             ORDER BY message_id, emoji",
            placeholders(2, message_ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id.0);
        for m in message_ids {
            q = q.bind(m.0);
        }
        q.fetch_all(&mut *self.read.acquire().await?)
            .await?
            .iter()
            .map(|r| Ok((id(r, "message_id")?, text(r, "emoji")?)))
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "read_states"))]
    async fn read_states(&self, user_id: Id, channel_ids: &[Id]) -> StoreResult<Vec<ReadState>> {
        let _t = self.begin("read_states")?;
        if channel_ids.is_empty() {
            return Ok(Vec::new());
        }
        let unread = |extra: &str| {
            format!(
                "(SELECT count(*) FROM (SELECT 1 FROM messages m WHERE m.channel_id = c.id AND m.id > COALESCE(rs.last_read_id, 0) \
                 AND m.deleted_at IS NULL AND m.author_id <> $1 {extra} LIMIT {UNREAD_CAP}) capped)"
            )
        };
        let sql = format!(
            "SELECT c.id AS channel_id, rs.last_read_id, {} AS unread, {} AS mentions FROM channels c \
             LEFT JOIN read_states rs ON rs.channel_id = c.id AND rs.user_id = $1 WHERE c.id IN ({}) ORDER BY c.id",
            unread(""),
            unread("AND m.mentions LIKE $2"),
            placeholders(3, channel_ids.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(user_id.0)
            .bind(format!("%\"{}\"%", user_id.0));
        for c in channel_ids {
            q = q.bind(c.0);
        }
        q.fetch_all(&mut *self.read.acquire().await?)
            .await?
            .iter()
            .map(|r| {
                Ok(ReadState {
                    channel_id: id(r, "channel_id")?,
                    last_read_id: opt_id(r, "last_read_id")?,
                    unread_count: int(r, "unread")?,
                    mention_count: int(r, "mentions")?,
                })
            })
            .collect()
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "search"))]
    async fn search(&self, params: &SearchParams) -> StoreResult<Vec<SearchHit>> {
        let _t = self.begin("search")?;
        self.search_messages(params).await
    }
}
