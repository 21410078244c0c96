//! Confirmed channel events (applied exactly once, in seq order) and unconfirmed messages,
//! merged with their confirmed copy by (device, nonce).

use concord_proto::Id;
use concord_proto::limits::search_text;
use concord_proto::model::{EventKind, Message, MessageDeleted, ReactionEvent};
use concord_proto::signed::Envelope;
use rusqlite::{Connection, OptionalExtension, ToSql, params, params_from_iter};
use serde::Deserialize;
use serde_json::Value;

use super::{Applied, Cache, CacheError, Result, ids_json};

enum Event {
    Create(Message),
    Update(Message),
    Delete(MessageDeleted),
    Reaction { add: bool, event: ReactionEvent },
}

impl Event {
    fn parse(kind: EventKind, data: &Value) -> Result<Event> {
        fn de<'a, T: Deserialize<'a>>(kind: EventKind, data: &'a Value) -> Result<T> {
            T::deserialize(data).map_err(|e| CacheError::BadEvent {
                kind: kind.as_str(),
                reason: e.to_string(),
            })
        }
        let event = match kind {
            EventKind::MessageCreate => Event::Create(de(kind, data)?),
            EventKind::MessageUpdate => Event::Update(de(kind, data)?),
            EventKind::MessageDelete => Event::Delete(de(kind, data)?),
            EventKind::ReactionAdd => Event::Reaction {
                add: true,
                event: de(kind, data)?,
            },
            EventKind::ReactionRemove => Event::Reaction {
                add: false,
                event: de(kind, data)?,
            },
        };
        if event.position().1 < 1 {
            return Err(CacheError::BadEvent {
                kind: kind.as_str(),
                reason: "seq must be at least 1".into(),
            });
        }
        Ok(event)
    }

    /// (channel_id, seq)
    fn position(&self) -> (Id, i64) {
        match self {
            Event::Create(m) | Event::Update(m) => (m.channel_id, m.seq),
            Event::Delete(d) => (d.channel_id, d.seq),
            Event::Reaction { event, .. } => (event.channel_id, event.seq),
        }
    }
}

impl Cache {
    /// Highest applied seq of the channel, 0 if none.
    pub fn cursor(&self, channel_id: Id) -> Result<i64> {
        cursor(&self.conn, channel_id)
    }

    /// Starts a channel's cursor at `seq` when it has none (a channel the node starts fresh
    /// from `ready`'s `last_seq` instead of catching up from the start). Returns whether it
    /// was set.
    pub fn init_cursor(&mut self, channel_id: Id, seq: i64) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT INTO cursors (channel_id, seq) VALUES (?1, ?2) ON CONFLICT (channel_id) DO NOTHING",
            params![channel_id.0, seq.max(0)],
        )?;
        Ok(n == 1)
    }

    /// Applies one confirmed event (gateway `t`/`d`, or a catch-up `ChannelEvent`'s kind and
    /// data) if its seq is the channel's cursor + 1, and advances the cursor, in one
    /// transaction. A malformed event changes nothing.
    pub fn apply_event(&mut self, kind: EventKind, data: &Value) -> Result<Applied> {
        let tx = self.conn.transaction()?;
        let applied = apply(&tx, kind, data)?;
        tx.commit()?;
        Ok(applied)
    }

    /// [`Cache::apply_event`] for a batch (a catch-up page) in one transaction: each event
    /// gets the answer it would get alone, in order. A malformed event fails the whole batch.
    pub fn apply_events<'a>(
        &mut self,
        events: impl IntoIterator<Item = (EventKind, &'a Value)>,
    ) -> Result<Vec<Applied>> {
        let tx = self.conn.transaction()?;
        let mut out = Vec::new();
        for (kind, data) in events {
            out.push(apply(&tx, kind, data)?);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Stores a message that is not confirmed yet (own send, P2P gossip) so it shows at once.
    /// The caller has verified the envelope. Idempotent on (device, nonce): returns false when
    /// the message is already present, confirmed or not (also when it was deleted).
    pub fn insert_unconfirmed(
        &mut self,
        envelope: &Envelope,
        author: Option<Id>,
        received_at: i64,
    ) -> Result<bool> {
        let tx = self.conn.transaction()?;
        let text = search_text(&envelope.content);
        let n = tx
            .prepare_cached(
                "INSERT INTO messages (channel_id, author, device, nonce, content, search_text, \
                 reply_to, created_at, received_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT (device, nonce) DO NOTHING",
            )?
            .execute(params![
                envelope.channel_id.0,
                author.map(|a| a.0),
                envelope.device_key,
                envelope.nonce,
                envelope.content,
                text,
                envelope.reply_to.map(|r| r.0),
                envelope.created_at,
                received_at,
            ])?;
        if n == 1 {
            index(&tx, tx.last_insert_rowid(), &text)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }
}

/// Adds a newly inserted row to the full-text index (no trigger: see the migration).
fn index(conn: &Connection, local_id: i64, text: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO messages_fts (rowid, search_text) VALUES (?1, ?2)")?
        .execute(params![local_id, text])?;
    Ok(())
}

fn cursor(conn: &Connection, channel_id: Id) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM cursors WHERE channel_id = ?1")?
        .query_row([channel_id.0], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

fn apply(conn: &Connection, kind: EventKind, data: &Value) -> Result<Applied> {
    let event = Event::parse(kind, data)?;
    let (channel_id, seq) = event.position();
    let have = cursor(conn, channel_id)?;
    if seq <= have {
        return Ok(Applied::Duplicate);
    }
    if seq > have + 1 {
        return Ok(Applied::Gap { have, got: seq });
    }
    match &event {
        Event::Create(m) => create(conn, m)?,
        Event::Update(m) => update(conn, m)?,
        Event::Delete(d) => delete(conn, d)?,
        Event::Reaction { add, event } => reaction(conn, *add, event)?,
    }
    conn.prepare_cached(
        "INSERT INTO cursors (channel_id, seq) VALUES (?1, ?2) \
         ON CONFLICT (channel_id) DO UPDATE SET seq = excluded.seq",
    )?
    .execute([channel_id.0, seq])?;
    Ok(Applied::Applied)
}

/// Inserts the confirmed message, or confirms the row that already holds it: the same id,
/// or the unconfirmed copy with the same (device, nonce). A redacted create (`deleted`, from
/// a catch-up after the message was deleted) stores a tombstone, so a late gossip copy cannot
/// bring the content back.
fn create(conn: &Connection, m: &Message) -> Result<()> {
    let existing: Option<i64> = conn
        .prepare_cached("SELECT local_id FROM messages WHERE id = ?1")?
        .query_row([m.id.0], |r| r.get(0))
        .optional()?;
    let existing = match existing {
        Some(local) => Some(local),
        None => conn
            .prepare_cached("SELECT local_id FROM messages WHERE device = ?1 AND nonce = ?2")?
            .query_row([&m.device, &m.nonce], |r| r.get(0))
            .optional()?,
    };
    // A tombstone keeps no content, mentions or edit time, whichever way it came.
    let (content, text, mentions, edited_at) = if m.deleted {
        (String::new(), String::new(), "[]".to_owned(), None)
    } else {
        let text = search_text(&m.content);
        (m.content.clone(), text, ids_json(&m.mentions), m.edited_at)
    };
    let reply_to = m.reply_to.map(|r| r.0);
    let values: [&dyn ToSql; 13] = [
        &m.id.0,
        &m.channel_id.0,
        &m.author.0,
        &m.device,
        &m.nonce,
        &content,
        &text,
        &reply_to,
        &mentions,
        &m.created_at,
        &edited_at,
        &m.seq,
        &m.deleted,
    ];
    if let Some(local) = existing {
        // Found by id: a stray unconfirmed copy with the same (device, nonce) would collide.
        conn.prepare_cached(
            "DELETE FROM messages WHERE device = ?1 AND nonce = ?2 AND local_id != ?3",
        )?
        .execute(params![m.device, m.nonce, local])?;
        conn.prepare_cached(
            "UPDATE messages SET id = ?1, channel_id = ?2, author = ?3, device = ?4, nonce = ?5, \
             content = ?6, search_text = ?7, reply_to = ?8, mentions = ?9, created_at = ?10, \
             edited_at = ?11, seq = ?12, deleted = ?13 WHERE local_id = ?14",
        )?
        .execute(params_from_iter(
            values.into_iter().chain([&local as &dyn ToSql]),
        ))?;
    } else {
        // A confirmed message was "received" when the relay created it.
        conn.prepare_cached(
            "INSERT INTO messages (id, channel_id, author, device, nonce, content, search_text, \
             reply_to, mentions, created_at, edited_at, seq, deleted, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?10)",
        )?
        .execute(&values[..])?;
        index(conn, conn.last_insert_rowid(), &text)?;
    }
    Ok(())
}

/// An edit of a message the cache no longer holds (removed by retention) changes nothing.
fn update(conn: &Connection, m: &Message) -> Result<()> {
    if m.deleted {
        return Ok(());
    }
    conn.prepare_cached(
        "UPDATE messages SET content = ?3, search_text = ?4, mentions = ?5, edited_at = ?6 \
         WHERE id = ?1 AND channel_id = ?2 AND deleted = 0",
    )?
    .execute(params![
        m.id.0,
        m.channel_id.0,
        m.content,
        search_text(&m.content),
        ids_json(&m.mentions),
        m.edited_at,
    ])?;
    Ok(())
}

fn delete(conn: &Connection, d: &MessageDeleted) -> Result<()> {
    conn.prepare_cached(
        "UPDATE messages SET content = '', search_text = '', mentions = '[]', edited_at = NULL, \
         deleted = 1 \
         WHERE id = ?1 AND channel_id = ?2",
    )?
    .execute([d.id.0, d.channel_id.0])?;
    conn.prepare_cached("DELETE FROM reactions WHERE message_id = ?1")?
        .execute([d.id.0])?;
    Ok(())
}

/// Kept per user, so counts stay exact; a reaction on a message the cache does not hold
/// (or a deleted one) is dropped.
fn reaction(conn: &Connection, add: bool, e: &ReactionEvent) -> Result<()> {
    if add {
        conn.prepare_cached(
            "INSERT INTO reactions (message_id, emoji, user_id) SELECT ?1, ?2, ?3 \
             WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?1 AND channel_id = ?4 AND deleted = 0) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![e.message_id.0, e.emoji, e.user_id.0, e.channel_id.0])?;
    } else {
        conn.prepare_cached(
            "DELETE FROM reactions WHERE message_id = ?1 AND emoji = ?2 AND user_id = ?3",
        )?
        .execute(params![e.message_id.0, e.emoji, e.user_id.0])?;
    }
    Ok(())
}
