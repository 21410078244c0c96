//! The node's local cache: one SQLite file (WAL, foreign keys, FTS5) holding the relay's
//! state for this user (guilds, channels, roles, DMs), the channel messages with a per-channel
//! seq cursor, unconfirmed messages (own sends and P2P gossip, shown at once), the outbox of
//! unacknowledged envelopes and a few settings.
//!
//! The API is synchronous: the daemon keeps one [`Cache`] behind a mutex and calls it from
//! `spawn_blocking`. Every write is one transaction. Times are unix milliseconds, passed in.
//!
//! Confirmed channel events are applied exactly once and in order (see [`Cache::apply_event`]).
//! A message event for a channel the cache does not know yet is still applied: messages and
//! cursors carry a plain channel id, not a foreign key, because `message_create` can arrive
//! before `channel_create`. [`Cache::replace_state`] later drops whatever belongs to channels
//! the relay no longer lists.

mod events;
mod outbox;
mod read;
mod retention;
mod schema;
mod search;
mod state;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::path::Path;

use concord_proto::Id;
use concord_proto::model::ReactionCount;
use concord_proto::signed::Envelope;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

pub use outbox::{OUTBOX_MAX, retry_delay_ms};
pub use search::SEARCH_WINDOW;

pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// Largest page `history` and `search` return; bigger requests are clamped.
pub const MAX_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// The file or a stored value is damaged. The cache can be rebuilt from the relay: the
    /// daemon may move the file aside and start a fresh one.
    #[error("cache is corrupt: {0}")]
    Corrupt(String),
    #[error("cache file: {0}")]
    Io(#[from] std::io::Error),
    #[error("cache schema version {found} is newer than this build knows ({known})")]
    TooNew { found: i64, known: i64 },
    /// A channel event whose data does not have the shape its kind needs.
    #[error("malformed {kind} event: {reason}")]
    BadEvent { kind: &'static str, reason: String },
    #[error("search query: {0}")]
    BadQuery(#[from] concord_proto::limits::Invalid),
    #[error("channel names guild {0}, which the cache does not hold")]
    UnknownGuild(Id),
    #[error("the outbox holds {OUTBOX_MAX} envelopes already")]
    OutboxFull,
}

impl From<rusqlite::Error> for CacheError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(f.code, DatabaseCorrupt | NotADatabase) =>
            {
                CacheError::Corrupt(e.to_string())
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => CacheError::Corrupt(e.to_string()),
            _ => CacheError::Sqlite(e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLimits {
    /// Confirmed messages kept per channel; older ones are removed by `enforce_retention`.
    pub max_messages_per_channel: usize,
    /// Confirmed messages older than this are removed by `enforce_retention`.
    pub max_age_days: Option<u32>,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            max_messages_per_channel: 50_000,
            max_age_days: None,
        }
    }
}

/// What [`Cache::apply_event`] did with one confirmed channel event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// `seq <= cursor`: already applied, ignored.
    Duplicate,
    /// `seq > cursor + 1`: not applied; catch up from `have` first, then apply it again.
    Gap {
        have: i64,
        got: i64,
    },
}

/// A message as the cache shows it: confirmed by the relay (`id` and `seq` set) or not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedMessage {
    /// None while unconfirmed.
    pub id: Option<Id>,
    pub channel_id: Id,
    /// The author's account; None for gossip whose author the node could not map yet.
    pub author: Option<Id>,
    pub device: String,
    pub nonce: String,
    pub content: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    /// Seq of the message's `message_create`; None while unconfirmed.
    pub seq: Option<i64>,
    pub confirmed: bool,
    pub reply_to: Option<Id>,
    pub mentions: Vec<Id>,
    /// When this node stored it; orders unconfirmed messages.
    pub received_at: i64,
    pub reactions: Vec<ReactionCount>,
}

impl CachedMessage {
    /// The key that pages to the messages before this one.
    pub fn history_key(&self) -> HistoryKey {
        match self.seq {
            Some(seq) => HistoryKey::Seq(seq),
            None => HistoryKey::Unconfirmed {
                received_at: self.received_at,
                device: self.device.clone(),
                nonce: self.nonce.clone(),
            },
        }
    }
}

/// A position in a channel's history. The order is: confirmed messages by seq, then
/// unconfirmed ones by (received_at, device, nonce). A page "before" a key holds the messages
/// just before that position; get the key of the oldest message of a page with
/// [`CachedMessage::history_key`] to fetch the next older page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKey {
    /// Confirmed messages with a lower seq.
    Seq(i64),
    /// Unconfirmed messages before this one, then every confirmed message.
    Unconfirmed {
        received_at: i64,
        device: String,
        nonce: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub envelope: Envelope,
    /// Failed sends so far.
    pub attempts: u32,
    pub next_attempt_at: i64,
}

/// The local cache: one SQLite connection.
pub struct Cache {
    conn: Connection,
    limits: CacheLimits,
}

impl Cache {
    /// Opens (or creates, mode 0600) the cache file and brings its schema up to date.
    pub fn open(path: &Path, limits: CacheLimits) -> Result<Cache> {
        let conn = schema::open_file(path)?;
        Ok(Cache { conn, limits })
    }

    pub fn open_in_memory(limits: CacheLimits) -> Result<Cache> {
        let conn = schema::open_memory()?;
        Ok(Cache { conn, limits })
    }

    pub fn limits(&self) -> CacheLimits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: CacheLimits) {
        self.limits = limits;
    }

    /// Moves the WAL into the main file and truncates it (on shutdown, or before measuring
    /// the file).
    pub fn checkpoint(&mut self) -> Result<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }

    pub fn remove_setting(&mut self, key: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM settings WHERE key = ?1")?
            .execute([key])?;
        Ok(())
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> CacheError {
    CacheError::Corrupt(format!("{what}: {e}"))
}

fn ids_json(ids: &[Id]) -> String {
    serde_json::to_string(ids).expect("ids serialise")
}

fn parse_ids(text: &str) -> Result<Vec<Id>> {
    serde_json::from_str(text).map_err(|e| corrupt("id list", e))
}

fn opt_id(v: Option<i64>) -> Option<Id> {
    v.map(Id)
}
