//! Keeping the cache bounded. Only confirmed messages are removed: the relay still has them
//! (catch-up never goes back below a cursor, so cursors stay where they are).

use concord_proto::Id;
use rusqlite::OptionalExtension;

use super::{Cache, Result};

const DAY_MS: i64 = 86_400_000;

impl Cache {
    /// Removes the oldest confirmed messages beyond `max_messages_per_channel` in each channel
    /// and those older than `max_age_days` (by the creation time in their ids). Unconfirmed
    /// messages and the outbox are never touched. Returns how many messages were removed.
    pub fn enforce_retention(&mut self, now: i64) -> Result<usize> {
        let limits = self.limits;
        let tx = self.conn.transaction()?;
        let mut removed = 0;
        if let Some(days) = limits.max_age_days {
            // Ids are time-ordered, so the id index finds old messages without a scan.
            let cutoff = Id::from_unix_ms(now.saturating_sub(i64::from(days) * DAY_MS));
            removed += tx.execute(
                "DELETE FROM messages WHERE id IS NOT NULL AND id < ?1",
                [cutoff.0],
            )?;
        }
        // Every channel with confirmed messages has a cursor.
        let channels: Vec<i64> = tx
            .prepare("SELECT channel_id FROM cursors")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let keep = i64::try_from(limits.max_messages_per_channel).unwrap_or(i64::MAX);
        for channel_id in channels {
            // The seq of the newest message that no longer fits.
            let first_dropped: Option<i64> = tx
                .prepare_cached(
                    "SELECT seq FROM messages WHERE channel_id = ?1 AND seq IS NOT NULL \
                     ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                )?
                .query_row([channel_id, keep], |r| r.get(0))
                .optional()?;
            if let Some(seq) = first_dropped {
                removed += tx
                    .prepare_cached("DELETE FROM messages WHERE channel_id = ?1 AND seq <= ?2")?
                    .execute([channel_id, seq])?;
            }
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Removes unconfirmed messages received before `received_before` that are not in this
    /// device's outbox: gossip the relay never confirmed (it refused them, or the sender gave
    /// up). Separate from retention, which never touches unconfirmed messages.
    pub fn expire_unconfirmed(&mut self, received_before: i64) -> Result<usize> {
        Ok(self.conn.execute(
            "DELETE FROM messages WHERE seq IS NULL AND received_at < ?1 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.nonce = messages.nonce AND o.device = messages.device)",
            [received_before],
        )?)
    }
}
