//! Group commit for new messages. One task owns message inserts: while its transaction is
//! open, more sends queue up, and the next transaction writes all of them at once (one
//! duplicate check, one seq bump per channel, multi-row inserts). Each sender gets its answer
//! only after the transaction holding its message committed, so an ack still means
//! "persisted". A batch that fails as a whole is retried message by message, so one bad
//! message cannot fail the others.
//!
//! On SQLite this turns ~7 statement round trips through sqlx's worker thread per message into
//! a handful per batch; on PostgreSQL it turns one WAL flush per message into one per batch.

use std::collections::HashMap;

use concord_proto::model::{EventKind, Message};
use concord_proto::{Id, limits};
use sqlx::{AnyPool, AssertSqlSafe};
use tokio::sync::{mpsc, oneshot};

use super::DbBreaker;
use super::messages::{MESSAGE_COLS, insert_one, message_row, with_reactions};
use super::rows::{int, opt_id};
use crate::store::{Backend, InsertedMessage, NewMessage, StoreError, StoreResult};

/// Most messages in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Sends waiting for a transaction; a full queue makes senders wait (backpressure).
const QUEUE: usize = 4 * MAX_BATCH;
/// Rows per INSERT statement (11 parameters each, far below both backends' limits).
const ROWS_PER_INSERT: usize = 64;

struct Job {
    message: NewMessage,
    reply: oneshot::Sender<StoreResult<InsertedMessage>>,
}

pub(super) struct Batcher {
    jobs: mpsc::Sender<Job>,
}

impl Batcher {
    /// Starts the writer task; it ends when the store (the last sender) is dropped.
    pub(super) fn spawn(pool: AnyPool, backend: Backend, breaker: DbBreaker) -> Batcher {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, backend, breaker, rx));
        Batcher { jobs }
    }

    pub(super) async fn insert(&self, message: NewMessage) -> StoreResult<InsertedMessage> {
        let (reply, answer) = oneshot::channel();
        let closed = || StoreError::Unavailable;
        self.jobs
            .send(Job { message, reply })
            .await
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn run(pool: AnyPool, backend: Backend, breaker: DbBreaker, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // The database is known to be down: fail at once, like every other store call.
        if !breaker.is_closed() {
            metrics::counter!("concord_db_fast_failures_total").increment(jobs.len() as u64);
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Unavailable));
            }
            continue;
        }
        let messages: Vec<&NewMessage> = jobs.iter().map(|j| &j.message).collect();
        let outcome = write_batch(&pool, backend, &messages).await;
        if matches!(
            outcome,
            Err(StoreError::Unavailable | StoreError::OutcomeUnknown)
        ) {
            breaker.record(false);
            // The database is gone: the sends that queued up meanwhile were never tried; they
            // get their answer now instead of each waiting out an attempt of its own.
            while let Ok(job) = rx.try_recv() {
                let _ = job.reply.send(Err(StoreError::Unavailable));
            }
        } else {
            breaker.record(true);
        }
        let results = match outcome {
            Ok(results) => results,
            // The same for every message (the database is gone, the disk is full, the commit's
            // outcome is unknown): each sender gets it, and retries with its nonce.
            Err(e) if e.is_systemic() => {
                tracing::debug!(error = %e, size = jobs.len(), "batch failed");
                messages
                    .iter()
                    .map(|_| Some(Err(clone_systemic(&e))))
                    .collect()
            }
            Err(e) => {
                tracing::debug!(error = %e, size = jobs.len(), "batch failed; inserting one by one");
                let mut one_by_one = Vec::with_capacity(jobs.len());
                for m in &messages {
                    one_by_one.push(Some(insert_one(&pool, m).await));
                }
                one_by_one
            }
        };
        for (job, result) in jobs.into_iter().zip(results) {
            let result = match result {
                Some(r) => r,
                // A second send with a nonce already in this batch: it finds the first one.
                None => insert_one(&pool, &job.message).await,
            };
            let _ = job.reply.send(result);
        }
    }
}

fn clone_systemic(e: &StoreError) -> StoreError {
    match e {
        StoreError::StorageFull => StoreError::StorageFull,
        StoreError::OutcomeUnknown => StoreError::OutcomeUnknown,
        _ => StoreError::Unavailable,
    }
}

/// The `n`th (1-based) bind parameter of a statement whose parameters appear in bind order.
/// SQLite gets anonymous `?`: sqlx looks each parameter's name up with
/// `sqlite3_bind_parameter_name`, a linear scan of the statement's named parameters, so
/// `$N` costs O(n²) per statement (1.9 % of the relay's CPU under `--preset 10x`).
fn param(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

/// Writes a batch in one transaction. `None` marks a message whose (author, nonce) repeats
/// an earlier one of the same batch (resolved after the commit).
async fn write_batch(
    pool: &AnyPool,
    backend: Backend,
    batch: &[&NewMessage],
) -> StoreResult<Vec<Option<StoreResult<InsertedMessage>>>> {
    let mut results: Vec<Option<StoreResult<InsertedMessage>>> =
        batch.iter().map(|_| None).collect();
    let mut tx = pool.begin().await?;

    // Retries of messages stored earlier return the first message and take no seq.
    let existing = {
        let conds: Vec<String> = (0..batch.len())
            .map(|i| {
                format!(
                    "(m.author_id = {} AND m.nonce = {})",
                    param(backend, 2 * i + 1),
                    param(backend, 2 * i + 2)
                )
            })
            .collect();
        let sql = format!(
            "SELECT {MESSAGE_COLS} FROM messages m JOIN channels c ON c.id = m.channel_id WHERE {}",
            conds.join(" OR ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for m in batch {
            q = q.bind(m.author.0).bind(&m.nonce);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let found = rows
            .iter()
            .map(message_row)
            .collect::<StoreResult<Vec<_>>>()?;
        with_reactions(&mut tx, found).await?
    };
    let existing: HashMap<(Id, &str), &Message> = existing
        .iter()
        .map(|m| ((m.author, m.nonce.as_str()), m))
        .collect();

    // New messages by channel, in arrival order; repeats inside the batch wait.
    let mut first_of: HashMap<(Id, &str), usize> = HashMap::new();
    let mut by_channel: Vec<(Id, Vec<usize>)> = Vec::new();
    let mut channel_slot: HashMap<Id, usize> = HashMap::new();
    for (i, m) in batch.iter().enumerate() {
        let key = (m.author, m.nonce.as_str());
        if let Some(found) = existing.get(&key) {
            results[i] = Some(Ok(InsertedMessage {
                message: (*found).clone(),
                created: false,
            }));
            continue;
        }
        if first_of.insert(key, i).is_some() {
            continue;
        }
        let slot = *channel_slot.entry(m.channel_id).or_insert_with(|| {
            by_channel.push((m.channel_id, Vec::new()));
            by_channel.len() - 1
        });
        by_channel[slot].1.push(i);
    }

    // One seq bump per channel; the row lock (PostgreSQL) or the single writer (SQLite) keeps
    // seq gapless.
    let mut created: Vec<(usize, Message)> = Vec::new();
    for (channel_id, members) in &by_channel {
        let row = sqlx::query(
            "UPDATE channels SET last_seq = last_seq + $1 WHERE id = $2 RETURNING last_seq, guild_id",
        )
        .bind(members.len() as i64)
        .bind(channel_id.0)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            for i in members {
                results[*i] = Some(Err(StoreError::NotFound));
            }
            continue;
        };
        let last = int(&row, "last_seq")?;
        let guild_id = opt_id(&row, "guild_id")?;
        let first_seq = last - members.len() as i64 + 1;
        for (k, i) in members.iter().enumerate() {
            let m = batch[*i];
            created.push((
                *i,
                Message {
                    id: m.id,
                    channel_id: m.channel_id,
                    guild_id,
                    author: m.author,
                    device: m.device.clone(),
                    nonce: m.nonce.clone(),
                    content: m.content.clone(),
                    created_at: m.created_at,
                    edited_at: None,
                    seq: first_seq + k as i64,
                    reply_to: m.reply_to,
                    mentions: m.mentions.clone(),
                    reactions: Vec::new(),
                    deleted: false,
                },
            ));
        }
    }

    for chunk in created.chunks(ROWS_PER_INSERT) {
        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let p = |k: usize| param(backend, r * 11 + k);
                format!(
                    "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5),
                    p(6),
                    p(7),
                    p(8),
                    p(9),
                    p(10),
                    p(11)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO messages (id, channel_id, author_id, device_key, nonce, content, search_text, reply_to, mentions, seq, created_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, m) in chunk {
            q = q
                .bind(m.id.0)
                .bind(m.channel_id.0)
                .bind(m.author.0)
                .bind(m.device.clone())
                .bind(m.nonce.clone())
                .bind(m.content.clone())
                .bind(limits::search_text(&m.content))
                .bind(m.reply_to.map(|r| r.0))
                .bind(serde_json::to_string(&m.mentions).expect("ids serialise"))
                .bind(m.seq)
                .bind(m.created_at);
        }
        q.execute(&mut *tx).await?;

        let values: Vec<String> = (0..chunk.len())
            .map(|r| {
                let p = |k: usize| param(backend, r * 5 + k);
                format!(
                    "({}, {}, 'message_create', {}, {}, {})",
                    p(1),
                    p(2),
                    p(3),
                    p(4),
                    p(5)
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO channel_events (channel_id, seq, kind, message_id, payload, created_at) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (_, m) in chunk {
            q = q
                .bind(m.channel_id.0)
                .bind(m.seq)
                .bind(m.id.0)
                // The same payload text as single inserts write (a JSON value's sorted keys).
                .bind(super::messages::to_value(m).to_string())
                .bind(m.created_at);
        }
        q.execute(&mut *tx).await?;
    }
    debug_assert_eq!(EventKind::MessageCreate.as_str(), "message_create");
    tx.commit().await.map_err(StoreError::from_commit)?;

    for (i, message) in created {
        results[i] = Some(Ok(InsertedMessage {
            message,
            created: true,
        }));
    }
    Ok(results)
}
