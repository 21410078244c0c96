//! A durable job queue for work whose only record would otherwise be one instance's memory:
//! a Redis Stream with one consumer group shared by every instance. A job is read by one
//! instance and stays pending until that instance acknowledges it; if the instance dies
//! first, another claims it once it has been idle long enough (XAUTOCLAIM) and runs it. Jobs
//! are idempotent (archiving a month twice rewrites the same object), so at-least-once is
//! enough. Pub/sub cannot do this: a message nobody is subscribed to is gone.
//!
//! The consumer group is `workers`; an offer is deduplicated by `SET NX`, so every
//! instance offering the same month makes one job; the archive's jobs are reclaimed after
//! 10 min idle (`archive::schedule::CLAIM_AFTER`).

use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};
use serde::{Deserialize, Serialize};

use super::link::{Conn, Redis};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum Job {
    /// Archive one month of messages (`YYYY-MM`).
    ArchiveMonth { month: String },
}

/// Entries kept in the stream at most (acknowledged ones are deleted at once).
const MAX_LEN: usize = 10_000;
const GROUP: &str = "workers";

pub struct JobQueue {
    redis: Redis,
    stream: String,
    prefix: String,
    consumer: String,
    /// How long a job may stay unacknowledged before another instance takes it over.
    claim_after: Duration,
    /// One connection for short commands, one for the blocking read (a blocked command
    /// would hold up everything queued behind it on a multiplexed connection).
    commands: tokio::sync::Mutex<Option<Conn>>,
    reader: tokio::sync::Mutex<Option<Conn>>,
}

/// The longest a read blocks: below the connection's response timeout (2 s).
pub const MAX_BLOCK: Duration = Duration::from_millis(1_000);

impl JobQueue {
    pub fn new(redis: Redis, prefix: &str, consumer: &str, claim_after: Duration) -> JobQueue {
        JobQueue {
            redis,
            // The hash tag keeps the stream and its dedupe keys in one Redis Cluster slot.
            stream: format!("{{{prefix}:jobs}}"),
            prefix: prefix.to_owned(),
            consumer: consumer.to_owned(),
            claim_after,
            commands: tokio::sync::Mutex::new(None),
            reader: tokio::sync::Mutex::new(None),
        }
    }

    /// A cached connection (made, and the group created, on first use or after an error).
    async fn conn(&self, slot: &tokio::sync::Mutex<Option<Conn>>) -> redis::RedisResult<Conn> {
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut conn = self.redis.connect().await?;
        // Creating the group twice answers BUSYGROUP: it exists, which is what we want.
        let created: redis::RedisResult<()> =
            conn.xgroup_create_mkstream(&self.stream, GROUP, "0").await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => {
                *slot = Some(conn.clone());
                Ok(conn)
            }
        }
    }

    /// Drops a connection that failed, so the next call makes a new one.
    async fn forget<T>(
        &self,
        slot: &tokio::sync::Mutex<Option<Conn>>,
        r: redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        if r.is_err() {
            *slot.lock().await = None;
        }
        r
    }

    /// Adds the job unless the same `key` was enqueued within `dedupe_for` (every instance's
    /// scheduler offers the same jobs; one copy is queued).
    pub async fn enqueue_once(
        &self,
        job: &Job,
        key: &str,
        dedupe_for: Duration,
    ) -> redis::RedisResult<bool> {
        let r = self.enqueue(job, key, dedupe_for).await;
        self.forget(&self.commands, r).await
    }

    async fn enqueue(
        &self,
        job: &Job,
        key: &str,
        dedupe_for: Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn(&self.commands).await?;
        let marker = format!("{{{}:jobs}}:once:{key}", self.prefix);
        let fresh: bool = redis::cmd("SET")
            .arg(&marker)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(dedupe_for.as_millis() as u64)
            .query_async::<Option<String>>(&mut conn)
            .await?
            .is_some();
        if !fresh {
            return Ok(false);
        }
        let body = serde_json::to_string(job).expect("jobs serialise");
        let _: String = redis::cmd("XADD")
            .arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_LEN)
            .arg("*")
            .arg("job")
            .arg(body)
            .query_async(&mut conn)
            .await?;
        metrics::counter!("concord_jobs_total", "event" => "enqueued").increment(1);
        Ok(true)
    }

    /// The next job for this instance: first one abandoned by a dead instance, else a new
    /// one (waiting up to `block`). Unreadable entries are acknowledged and skipped.
    pub async fn next(&self, block: Duration) -> redis::RedisResult<Option<(String, Job)>> {
        let r = self.read(block.min(MAX_BLOCK)).await;
        match self.forget(&self.reader, r).await? {
            Some((id, Some(job))) => Ok(Some((id, job))),
            Some((id, None)) => {
                tracing::warn!(%id, "unreadable job dropped");
                self.ack(&id).await?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The next entry, with its job unless it is unreadable.
    async fn read(&self, block: Duration) -> redis::RedisResult<Option<(String, Option<Job>)>> {
        let mut conn = self.conn(&self.reader).await?;
        let claimed: StreamAutoClaimReply = conn
            .xautoclaim_options(
                &self.stream,
                GROUP,
                &self.consumer,
                self.claim_after.as_millis() as u64,
                "0-0",
                StreamAutoClaimOptions::default().count(1),
            )
            .await?;
        let mut entries: Vec<(String, Option<String>)> = claimed
            .claimed
            .into_iter()
            .map(|e| (e.id.clone(), e.get::<String>("job")))
            .collect();
        if entries.is_empty() {
            let read: Option<StreamReadReply> = conn
                .xread_options(
                    &[&self.stream],
                    &[">"],
                    &StreamReadOptions::default()
                        .group(GROUP, &self.consumer)
                        .count(1)
                        .block(block.as_millis() as usize),
                )
                .await?;
            entries = read
                .unwrap_or_default()
                .keys
                .into_iter()
                .flat_map(|k| k.ids)
                .map(|e| (e.id.clone(), e.get::<String>("job")))
                .collect();
        } else {
            metrics::counter!("concord_jobs_total", "event" => "reclaimed").increment(1);
        }
        Ok(entries.into_iter().next().map(|(id, body)| {
            let job = body
                .as_deref()
                .and_then(|b| serde_json::from_str::<Job>(b).ok());
            (id, job)
        }))
    }

    /// Marks a job done: it leaves the stream.
    pub async fn ack(&self, id: &str) -> redis::RedisResult<()> {
        let r = async {
            let mut conn = self.conn(&self.commands).await?;
            let _: i64 = conn.xack(&self.stream, GROUP, &[id]).await?;
            let _: i64 = conn.xdel(&self.stream, &[id]).await?;
            Ok(())
        }
        .await;
        self.forget(&self.commands, r).await?;
        metrics::counter!("concord_jobs_total", "event" => "done").increment(1);
        Ok(())
    }

    /// Jobs read but not yet acknowledged, by any instance.
    pub async fn pending(&self) -> redis::RedisResult<usize> {
        let mut conn = self.conn(&self.commands).await?;
        let reply: redis::streams::StreamPendingReply = conn.xpending(&self.stream, GROUP).await?;
        Ok(reply.count())
    }
}
