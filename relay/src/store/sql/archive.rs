//! Monthly partitions and archiving whole months (see `crate::archive`).

use std::collections::HashMap;

use async_trait::async_trait;
use concord_proto::{Id, limits};
use sqlx::AssertSqlSafe;
use sqlx::any::AnyRow;

use super::rows::{id, int, opt_id, opt_int, text};
use super::{SqlStore, placeholders};
use crate::store::{
    ArchiveStore, ArchivedMessage, ArchivedMonth, ArchivedReaction, Backend, StoreError,
    StoreResult,
};

/// The columns an archived (or exported) message is read from.
pub(super) const ARCHIVED_COLS: &str = "id, channel_id, author_id, device_key, nonce, content, \
     reply_to, mentions, seq, created_at, edited_at, deleted_at";

/// A message row as archives and exports hold it (reactions added by the caller).
pub(super) fn archived_message(row: &AnyRow) -> StoreResult<ArchivedMessage> {
    Ok(ArchivedMessage {
        id: id(row, "id")?,
        channel_id: id(row, "channel_id")?,
        author_id: id(row, "author_id")?,
        device_key: text(row, "device_key")?,
        nonce: text(row, "nonce")?,
        content: text(row, "content")?,
        reply_to: opt_id(row, "reply_to")?,
        mentions: text(row, "mentions")?,
        seq: int(row, "seq")?,
        created_at: int(row, "created_at")?,
        edited_at: opt_int(row, "edited_at")?,
        deleted_at: opt_int(row, "deleted_at")?,
        reactions: Vec::new(),
    })
}

/// A partition name is interpolated into DDL: only `messages_pYYYYMM` passes.
fn check_partition(name: &str) -> StoreResult<()> {
    let digits = name.strip_prefix("messages_p").unwrap_or("");
    if digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "not a partition name: {name:?}"
        )))
    }
}

#[async_trait]
impl ArchiveStore for SqlStore {
    #[tracing::instrument(name = "db", skip_all, fields(op = "ensure_partitions"))]
    async fn ensure_partitions(&self, months: &[(String, Id, Id)]) -> StoreResult<u32> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        let _t = self.begin("ensure_partitions")?;
        let mut created = 0;
        for (name, lo, hi) in months {
            check_partition(name)?;
            let exists: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1")
                    .bind(name)
                    .fetch_one(&self.write)
                    .await?;
            if exists > 0 {
                continue;
            }
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF messages FOR VALUES FROM ({}) TO ({})",
                lo.0, hi.0
            );
            sqlx::query(AssertSqlSafe(ddl)).execute(&self.write).await?;
            created += 1;
        }
        Ok(created)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "oldest_message"))]
    async fn oldest_message(&self) -> StoreResult<Option<Id>> {
        let _t = self.begin("oldest_message")?;
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(id) FROM messages")
            .fetch_one(&self.write)
            .await?;
        Ok(oldest.map(Id))
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "export_messages"))]
    async fn export_messages(
        &self,
        lo: Id,
        hi: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>> {
        let _t = self.begin("export_messages")?;
        let from = after.map_or(lo.0, |a| (a.0 + 1).max(lo.0));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ARCHIVED_COLS} FROM messages WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3"
        )))
        .bind(from)
        .bind(hi.0)
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await?;
        let mut out = rows
            .iter()
            .map(archived_message)
            .collect::<StoreResult<Vec<_>>>()?;
        if let (Some(first), Some(last)) = (out.first(), out.last()) {
            let rows = sqlx::query(
                "SELECT message_id, emoji, user_id, created_at FROM reactions \
                 WHERE message_id >= $1 AND message_id <= $2 ORDER BY message_id, created_at",
            )
            .bind(first.id.0)
            .bind(last.id.0)
            .fetch_all(&self.write)
            .await?;
            let index: HashMap<Id, usize> =
                out.iter().enumerate().map(|(i, m)| (m.id, i)).collect();
            for row in &rows {
                if let Some(&i) = index.get(&id(row, "message_id")?) {
                    out[i].reactions.push(ArchivedReaction {
                        emoji: text(row, "emoji")?,
                        user_id: id(row, "user_id")?,
                        created_at: int(row, "created_at")?,
                    });
                }
            }
        }
        Ok(out)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "drop_archived"))]
    async fn drop_archived(
        &self,
        month: &ArchivedMonth,
        lo: Id,
        hi: Id,
        partition: &str,
    ) -> StoreResult<u64> {
        check_partition(partition)?;
        let _t = self.begin("drop_archived")?;
        let mut tx = self.write.begin().await?;
        for sql in [
            "DELETE FROM reactions WHERE message_id >= $1 AND message_id < $2",
            "DELETE FROM message_nonces WHERE message_id >= $1 AND message_id < $2",
        ] {
            if sql.contains("message_nonces") && self.backend != Backend::Postgres {
                continue;
            }
            sqlx::query(sql)
                .bind(lo.0)
                .bind(hi.0)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM messages WHERE id >= $1 AND id < $2")
            .bind(lo.0)
            .bind(hi.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if self.backend == Backend::Postgres {
            // The month's partition is empty now: detach it (the reactions' foreign key
            // refers to the parent table) and drop it; restoring recreates it.
            let exists: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = $1",
            )
            .bind(partition)
            .fetch_one(&mut *tx)
            .await?;
            if exists > 0 {
                sqlx::query(AssertSqlSafe(format!(
                    "ALTER TABLE messages DETACH PARTITION {partition}"
                )))
                .execute(&mut *tx)
                .await?;
                sqlx::query(AssertSqlSafe(format!("DROP TABLE {partition}")))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO archived_months (month, object, messages, archived_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (month) DO UPDATE SET object = excluded.object, \
             messages = archived_months.messages + excluded.messages, archived_at = excluded.archived_at",
        )
        .bind(&month.month)
        .bind(&month.object)
        .bind(deleted as i64)
        .bind(month.archived_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "restore_messages"))]
    async fn restore_messages(&self, messages: &[ArchivedMessage]) -> StoreResult<u64> {
        let _t = self.begin_write("restore_messages")?;
        let mut tx = self.write.begin().await?;
        let mut restored = 0;
        for chunk in messages.chunks(500) {
            let values: Vec<String> = (0..chunk.len())
                .map(|r| format!("({})", placeholders(r * 13 + 1, 13)))
                .collect();
            let sql = format!(
                "INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, \
                 search_text, reply_to, mentions, seq, created_at, edited_at, deleted_at) \
                 VALUES {} ON CONFLICT DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for m in chunk {
                let search = if m.deleted_at.is_some() {
                    String::new()
                } else {
                    limits::search_text(&m.content)
                };
                q = q
                    .bind(m.id.0)
                    .bind(m.channel_id.0)
                    .bind(m.author_id.0)
                    .bind(m.device_key.clone())
                    .bind(m.nonce.clone())
                    .bind(m.content.clone())
                    .bind(search)
                    .bind(m.reply_to.map(|r| r.0))
                    .bind(m.mentions.clone())
                    .bind(m.seq)
                    .bind(m.created_at)
                    .bind(m.edited_at)
                    .bind(m.deleted_at);
            }
            restored += q.execute(&mut *tx).await?.rows_affected();
            let reactions: Vec<(Id, &ArchivedReaction)> = chunk
                .iter()
                .flat_map(|m| m.reactions.iter().map(move |r| (m.id, r)))
                .collect();
            for part in reactions.chunks(500) {
                let values: Vec<String> = (0..part.len())
                    .map(|r| format!("({})", placeholders(r * 4 + 1, 4)))
                    .collect();
                let sql = format!(
                    "INSERT INTO reactions (message_id, emoji, user_id, created_at) VALUES {} \
                     ON CONFLICT DO NOTHING",
                    values.join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (message, r) in part {
                    q = q
                        .bind(message.0)
                        .bind(r.emoji.clone())
                        .bind(r.user_id.0)
                        .bind(r.created_at);
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(restored)
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "unmark_archived"))]
    async fn unmark_archived(&self, month: &str) -> StoreResult<()> {
        let _t = self.begin("unmark_archived")?;
        sqlx::query("DELETE FROM archived_months WHERE month = $1")
            .bind(month)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    #[tracing::instrument(name = "db", skip_all, fields(op = "archived_months"))]
    async fn archived_months(&self) -> StoreResult<Vec<ArchivedMonth>> {
        let _t = self.begin("archived_months")?;
        let rows = sqlx::query(
            "SELECT month, object, messages, archived_at FROM archived_months ORDER BY month",
        )
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ArchivedMonth {
                    month: text(row, "month")?,
                    object: text(row, "object")?,
                    messages: int(row, "messages")?,
                    archived_at: int(row, "archived_at")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partition_names_reach_ddl() {
        assert!(check_partition("messages_p202611").is_ok());
        for bad in [
            "messages",
            "messages_p2026",
            "messages_p202611; DROP TABLE x",
            "x_p202611",
        ] {
            assert!(check_partition(bad).is_err(), "{bad}");
        }
    }
}
