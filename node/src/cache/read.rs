//! Reading messages: history pages, and the row mapping search shares.

use concord_proto::Id;
use concord_proto::model::ReactionCount;
use rusqlite::{Connection, Params, Row};

use super::{Cache, CachedMessage, HistoryKey, MAX_PAGE, Result, opt_id, parse_ids};

pub(super) const COLS: &str = "m.id, m.channel_id, m.author, m.device, m.nonce, m.content, m.created_at, \
                    m.edited_at, m.seq, m.reply_to, m.mentions, m.received_at";

impl Cache {
    /// A page of a channel's history in ascending order: the `limit` messages just before
    /// `before` (the newest ones when `None`). Confirmed messages come by seq, unconfirmed
    /// ones after them by received time; deleted messages are left out.
    pub fn history(
        &self,
        channel_id: Id,
        before: Option<HistoryKey>,
        limit: usize,
    ) -> Result<Vec<CachedMessage>> {
        let limit = limit.min(MAX_PAGE);
        // Unconfirmed messages are the newest, so only a page that starts among them has any.
        let (mut page, seq_before) = match before {
            Some(HistoryKey::Seq(seq)) => (Vec::new(), seq),
            None => (self.unconfirmed_page(channel_id, None, limit)?, i64::MAX),
            Some(HistoryKey::Unconfirmed {
                received_at,
                device,
                nonce,
            }) => {
                let key = (received_at, device, nonce);
                (
                    self.unconfirmed_page(channel_id, Some(key), limit)?,
                    i64::MAX,
                )
            }
        };
        if page.len() < limit {
            let sql = format!(
                "SELECT {COLS} FROM messages m WHERE m.channel_id = ?1 AND m.seq < ?2 AND m.deleted = 0 \
                 ORDER BY m.seq DESC LIMIT ?3"
            );
            let rest = (limit - page.len()) as i64;
            page.extend(self.messages(&sql, rusqlite::params![channel_id.0, seq_before, rest])?);
        }
        page.reverse();
        Ok(page)
    }

    /// Newest first: the unconfirmed messages before `key` (all of them when `None`).
    fn unconfirmed_page(
        &self,
        channel_id: Id,
        key: Option<(i64, String, String)>,
        limit: usize,
    ) -> Result<Vec<CachedMessage>> {
        let sql = format!(
            "SELECT {COLS} FROM messages m WHERE m.channel_id = ?1 AND m.seq IS NULL AND m.deleted = 0 \
             AND (?2 OR (m.received_at, m.device, m.nonce) < (?3, ?4, ?5)) \
             ORDER BY m.received_at DESC, m.device DESC, m.nonce DESC LIMIT ?6"
        );
        let all = key.is_none();
        let (received_at, device, nonce) = key.unwrap_or_default();
        self.messages(
            &sql,
            rusqlite::params![channel_id.0, all, received_at, device, nonce, limit as i64],
        )
    }

    pub(super) fn messages(&self, sql: &str, params: impl Params) -> Result<Vec<CachedMessage>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(message_row(row)?);
        }
        drop(rows);
        for m in &mut out {
            if let Some(id) = m.id {
                m.reactions = reactions(&self.conn, id)?;
            }
        }
        Ok(out)
    }
}

fn reactions(conn: &Connection, id: Id) -> Result<Vec<ReactionCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT emoji, count(*) FROM reactions WHERE message_id = ?1 GROUP BY emoji ORDER BY emoji",
    )?;
    let rows = stmt.query_map([id.0], |r| {
        Ok(ReactionCount {
            emoji: r.get(0)?,
            count: r.get(1)?,
            me: false,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn message_row(r: &Row) -> Result<CachedMessage> {
    let seq: Option<i64> = r.get(8)?;
    let mentions: String = r.get(10)?;
    Ok(CachedMessage {
        id: opt_id(r.get(0)?),
        channel_id: Id(r.get(1)?),
        author: opt_id(r.get(2)?),
        device: r.get(3)?,
        nonce: r.get(4)?,
        content: r.get(5)?,
        created_at: r.get(6)?,
        edited_at: r.get(7)?,
        seq,
        confirmed: seq.is_some(),
        reply_to: opt_id(r.get(9)?),
        mentions: parse_ids(&mentions)?,
        received_at: r.get(11)?,
        reactions: Vec::new(),
    })
}
