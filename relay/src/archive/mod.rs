//! Retention: months of messages older than the configured age move out of the database
//! into an object store (a local directory by default, S3-compatible storage by URL) as
//! gzip-compressed JSON lines, one object per month (`messages/YYYY-MM.jsonl.gz`), and can
//! be restored. Archived messages leave history and search; history responses say where the
//! archive begins (`api/messages.rs`). On PostgreSQL a month is one partition, dropped once
//! its rows are archived; the coming months' partitions are created ahead of time here too.
//!
//! Order makes a crash harmless: the object is written completely before any row is deleted,
//! and deleting a month is one transaction, so a month is either still in the database or in
//! the archive (or, after a crash between the two, in both: archiving again rewrites it).
//!
//! The object is streamed by multipart upload. On PostgreSQL, migration 0002 moved existing
//! rows into monthly partitions of `messages`; `(author_id, nonce)` uniqueness lives in
//! `message_nonces`, filled by a row trigger, because a unique key of a partitioned table
//! must contain the partition key. The channel event log keeps its entries (seq stays
//! gapless for catch-up): only history and search lose archived messages.
//!
//! `month.rs`: months as id ranges and partition names; `schedule.rs`: the retention task and
//! the job worker.

pub mod month;
pub mod schedule;

use std::io::{BufRead, Write};
use std::sync::Arc;

use concord_proto::Id;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

pub use month::Month;

use crate::store::{ArchivedMessage, ArchivedMonth, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive store: {0}")]
    Objects(#[from] object_store::Error),
    #[error("archive location {0:?}: {1}")]
    Location(String, String),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("archive object {0} is malformed: {1}")]
    Malformed(String, String),
    #[error("{0} is not archived")]
    NotArchived(Month),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Messages read from the database per page while writing an archive.
const EXPORT_PAGE: u32 = 2_000;
/// Messages written back per transaction while restoring.
const RESTORE_BATCH: usize = 1_000;
/// Months whose partitions exist ahead of the current one.
const MONTHS_AHEAD: usize = 3;
const DAY_MS: i64 = 86_400_000;

pub struct Archiver {
    store: Arc<dyn Store>,
    objects: Arc<dyn ObjectStore>,
    root: ObjectPath,
}

impl Archiver {
    /// `location`: a directory path, or a URL (`file:///…`, `s3://bucket/prefix`; S3
    /// credentials and endpoint from the usual `AWS_*` environment variables).
    pub fn open(store: Arc<dyn Store>, location: &str) -> Result<Archiver, ArchiveError> {
        let aws: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        Archiver::open_with(store, location, aws)
    }

    /// [`Archiver::open`] with object store options given rather than read from the
    /// environment (`aws_endpoint`, `aws_access_key_id`, `aws_allow_http`, …).
    pub fn open_with(
        store: Arc<dyn Store>,
        location: &str,
        options: Vec<(String, String)>,
    ) -> Result<Archiver, ArchiveError> {
        let bad = |e: String| ArchiveError::Location(location.to_owned(), e);
        let (objects, root): (Arc<dyn ObjectStore>, ObjectPath) = if location.contains("://") {
            let url = url::Url::parse(location).map_err(|e| bad(e.to_string()))?;
            let (objects, root) =
                object_store::parse_url_opts(&url, options).map_err(|e| bad(e.to_string()))?;
            (Arc::from(objects), root)
        } else {
            std::fs::create_dir_all(location).map_err(|e| bad(e.to_string()))?;
            let local = object_store::local::LocalFileSystem::new_with_prefix(location)
                .map_err(|e| bad(e.to_string()))?;
            (Arc::new(local), ObjectPath::default())
        };
        Ok(Archiver {
            store,
            objects,
            root,
        })
    }

    fn object(&self, month: Month) -> ObjectPath {
        self.root
            .clone()
            .join("messages")
            .join(format!("{month}.jsonl.gz"))
    }

    /// Creates this month's and the next months' partitions (PostgreSQL).
    pub async fn ensure_partitions(&self, now_ms: i64) -> Result<u32, ArchiveError> {
        let mut month = Month::of_unix_ms(now_ms);
        let mut months = Vec::new();
        for _ in 0..=MONTHS_AHEAD {
            let (lo, hi) = month.id_range();
            months.push((month.partition(), lo, hi));
            month = month.next();
        }
        Ok(self.store.ensure_partitions(&months).await?)
    }

    /// Archives every month that ended more than `keep_days` ago. Returns the months archived
    /// and their message counts.
    pub async fn archive_due(
        &self,
        now_ms: i64,
        keep_days: u32,
    ) -> Result<Vec<(Month, u64)>, ArchiveError> {
        let mut done = Vec::new();
        for month in self.due_months(now_ms, keep_days).await? {
            done.push((month, self.archive_month(month, now_ms).await?));
        }
        Ok(done)
    }

    /// Months with messages in the database that ended more than `keep_days` ago.
    pub async fn due_months(
        &self,
        now_ms: i64,
        keep_days: u32,
    ) -> Result<Vec<Month>, ArchiveError> {
        let cutoff = now_ms - i64::from(keep_days) * DAY_MS;
        let mut due = Vec::new();
        let Some(oldest) = self.store.oldest_message().await? else {
            return Ok(due);
        };
        let mut month = Month::of_id(oldest);
        while month.next().start_ms() <= cutoff {
            let (lo, hi) = month.id_range();
            if !self
                .store
                .export_messages(lo, hi, None, 1)
                .await?
                .is_empty()
            {
                due.push(month);
            }
            month = month.next();
        }
        Ok(due)
    }

    /// Writes one month's messages to the archive, then deletes them. Months without
    /// messages write nothing.
    #[tracing::instrument(skip(self), fields(month = %month))]
    pub async fn archive_month(&self, month: Month, now_ms: i64) -> Result<u64, ArchiveError> {
        let (lo, hi) = month.id_range();
        let first = self
            .store
            .export_messages(lo, hi, None, EXPORT_PAGE)
            .await?;
        if first.is_empty() {
            return Ok(0);
        }
        let location = self.object(month);
        let mut upload = WriteMultipart::new(self.objects.put_multipart(&location).await?);
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        let mut page = first;
        let mut written = 0u64;
        loop {
            for m in &page {
                serde_json::to_writer(&mut gz, m).expect("archived messages serialise");
                gz.write_all(b"\n")?;
            }
            written += page.len() as u64;
            // Hand compressed bytes to the upload as they come; at most a few parts in flight.
            upload.wait_for_capacity(4).await?;
            upload.write(&std::mem::take(gz.get_mut()));
            if page.len() < EXPORT_PAGE as usize {
                break;
            }
            let after = page.last().map(|m| m.id);
            page = self
                .store
                .export_messages(lo, hi, after, EXPORT_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
        }
        upload.write(&gz.finish()?);
        upload.finish().await?;
        let record = ArchivedMonth {
            month: month.to_string(),
            object: location.to_string(),
            messages: written as i64,
            archived_at: now_ms,
        };
        let deleted = self
            .store
            .drop_archived(&record, lo, hi, &month.partition())
            .await?;
        metrics::counter!("concord_archive_messages_total", "op" => "archive").increment(deleted);
        tracing::info!(%month, messages = deleted, object = %location, "month archived");
        Ok(deleted)
    }

    /// Puts an archived month back into the database.
    #[tracing::instrument(skip(self), fields(month = %month))]
    pub async fn restore_month(&self, month: Month) -> Result<u64, ArchiveError> {
        let archived = self.store.archived_months().await?;
        let Some(record) = archived.iter().find(|a| a.month == month.to_string()) else {
            return Err(ArchiveError::NotArchived(month));
        };
        let location = self.object(month);
        let bytes = self.objects.get(&location).await?.bytes().await?;
        let (lo, hi) = month.id_range();
        self.store
            .ensure_partitions(&[(month.partition(), lo, hi)])
            .await?;
        let malformed = |e: String| ArchiveError::Malformed(record.object.clone(), e);
        let mut restored = 0;
        let mut batch: Vec<ArchivedMessage> = Vec::with_capacity(RESTORE_BATCH);
        for line in std::io::BufReader::new(GzDecoder::new(&bytes[..])).lines() {
            let line = line.map_err(|e| malformed(e.to_string()))?;
            if line.is_empty() {
                continue;
            }
            let m: ArchivedMessage =
                serde_json::from_str(&line).map_err(|e| malformed(e.to_string()))?;
            if m.id < lo || m.id >= hi {
                return Err(malformed(format!("message {} is not from {month}", m.id)));
            }
            batch.push(m);
            if batch.len() == RESTORE_BATCH {
                restored += self.store.restore_messages(&batch).await?;
                batch.clear();
            }
        }
        restored += self.store.restore_messages(&batch).await?;
        self.store.unmark_archived(&month.to_string()).await?;
        metrics::counter!("concord_archive_messages_total", "op" => "restore").increment(restored);
        tracing::info!(%month, messages = restored, "month restored");
        Ok(restored)
    }

    pub async fn list(&self) -> Result<Vec<ArchivedMonth>, ArchiveError> {
        Ok(self.store.archived_months().await?)
    }
}

/// The first id still in the database when months are archived: older ids are archived.
pub fn archived_before(months: &[ArchivedMonth]) -> Option<Id> {
    months
        .iter()
        .filter_map(|m| m.month.parse::<Month>().ok())
        .max()
        .map(|m| m.id_range().1)
}
