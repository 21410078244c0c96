//! The outbox: envelopes this device sent that the relay has not acknowledged. Rows survive
//! restarts; the nonce makes every retry idempotent at the relay. Retries back off (0.5 s
//! doubling, jittered by the nonce).

use concord_proto::signed::Envelope;
use rusqlite::{OptionalExtension, params};

use super::{Cache, CacheError, OutboxItem, Result, corrupt};

/// At most this many unacknowledged envelopes; a send beyond it is refused.
pub const OUTBOX_MAX: usize = 10_000;

const FIRST_DELAY_MS: i64 = 500;
const MAX_DELAY_MS: i64 = 60_000;

/// Delay before retry number `attempts` (1 = the first retry): 0.5 s, 1 s, 2 s … capped at
/// 60 s, minus up to a quarter as jitter. The jitter is derived from the nonce, so retries
/// of different messages (and different nodes) spread out while a test can predict them.
pub fn retry_delay_ms(nonce: &str, attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(7);
    let base = (FIRST_DELAY_MS << doublings).min(MAX_DELAY_MS);
    // FNV-1a over the nonce and the attempt number.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in nonce.bytes().chain(attempts.to_le_bytes()) {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    base - (hash % (base as u64 / 4 + 1)) as i64
}

impl Cache {
    /// Queues an envelope, due at once. Idempotent on the nonce.
    pub fn outbox_push(&mut self, envelope: &Envelope, now: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let present: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM outbox WHERE nonce = ?1",
                [&envelope.nonce],
                |r| r.get(0),
            )
            .optional()?;
        if present.is_some() {
            return Ok(());
        }
        let len: i64 = tx.query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        if len as usize >= OUTBOX_MAX {
            return Err(CacheError::OutboxFull);
        }
        let json = serde_json::to_string(envelope).expect("envelopes serialise");
        tx.execute(
            "INSERT INTO outbox (nonce, device, envelope, pushed_at, next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![envelope.nonce, envelope.device_key, json, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Envelopes whose next attempt is due, oldest push first.
    pub fn outbox_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT envelope, attempts, next_attempt_at FROM outbox WHERE next_attempt_at <= ?1 \
             ORDER BY position LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit.min(OUTBOX_MAX) as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (json, attempts, next_attempt_at) = row?;
            out.push(OutboxItem {
                envelope: serde_json::from_str(&json).map_err(|e| corrupt("outbox envelope", e))?,
                attempts,
                next_attempt_at,
            });
        }
        Ok(out)
    }

    /// A send failed: count the attempt and schedule the next one with backoff.
    pub fn outbox_retry_later(&mut self, nonce: &str, now: i64) -> Result<()> {
        let tx = self.conn.transaction()?;
        let attempts: Option<u32> = tx
            .query_row(
                "SELECT attempts FROM outbox WHERE nonce = ?1",
                [nonce],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(attempts) = attempts {
            let attempts = attempts.saturating_add(1);
            tx.execute(
                "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3 WHERE nonce = ?1",
                params![nonce, attempts, now + retry_delay_ms(nonce, attempts)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The relay acknowledged the envelope (or refused it for good): drop it.
    pub fn outbox_ack(&mut self, nonce: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM outbox WHERE nonce = ?1", [nonce])?;
        Ok(())
    }

    pub fn outbox_len(&self) -> Result<usize> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(n as usize)
    }
}
