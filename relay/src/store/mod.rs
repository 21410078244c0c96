//! Persistence. The relay talks to storage only through these traits; `sql` implements them
//! for SQLite and PostgreSQL, and `relay/tests/store_conformance.rs` runs one suite against
//! both.
//!
//! `Store` is `ServerStore + AccountStore + GuildStore + MessageStore + ArchiveStore +
//! AdminStore + ModerationStore`. `consistency.rs` says which reads may use a replica,
//! `space.rs` keeps SQLite's free-space floor, `records.rs` holds the plain rows. What each
//! fault (disk full, database down, lost commit) looks like to clients:
//! `docs/protocols/faults.md`.

mod records;
pub mod space;
pub mod sql;

use async_trait::async_trait;
use concord_proto::Id;
use concord_proto::api::Report;
use concord_proto::model::{
    Ban, Channel, ChannelEvent, Guild, Invite, Member, Message, ReadState, Role, SearchHit,
};
use concord_proto::permissions::Overwrite;

pub use records::*;

pub mod consistency;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write; the string says which (e.g. `username_taken`).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// The database is down (its breaker is open, or the connection failed): nothing was
    /// written.
    #[error("database unavailable; retry shortly")]
    Unavailable,
    /// The disk is full, or its free space is under the floor (`space.rs`): nothing was
    /// written; reads go on.
    #[error("the server's storage is full; retry later")]
    StorageFull,
    /// The connection was lost while the write's transaction committed: it may or may not
    /// have been stored. Idempotent writes (a message's nonce) are safe to retry as they are.
    #[error("the write's outcome is unknown; retry it with the same nonce")]
    OutcomeUnknown,
}

impl From<sqlx::Error> for StoreError {
    /// Sorts a driver error: disk full (SQLite `SQLITE_FULL`, PostgreSQL `53100`), the
    /// database out of reach (I/O, pool timeout or closed, a crashed worker), or anything else.
    fn from(e: sqlx::Error) -> StoreError {
        if is_disk_full(&e) {
            return StoreError::StorageFull;
        }
        if is_connection_failure(&e) {
            return StoreError::Unavailable;
        }
        StoreError::Database(e)
    }
}

impl StoreError {
    /// An error from a transaction's COMMIT: a connection that failed then leaves the outcome
    /// unknown (the server may have committed before the answer was lost).
    pub fn from_commit(e: sqlx::Error) -> StoreError {
        match StoreError::from(e) {
            StoreError::Unavailable => StoreError::OutcomeUnknown,
            other => other,
        }
    }

    /// Errors that are the same for every write while they last (nothing message-specific):
    /// a batch that fails with one is not retried message by message.
    pub fn is_systemic(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable | StoreError::StorageFull | StoreError::OutcomeUnknown
        )
    }
}

/// SQLite's `SQLITE_FULL` (13) or PostgreSQL's `disk_full` (53100).
fn is_disk_full(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    // SQLite's codes are numbers, PostgreSQL's five-character SQLSTATEs.
    db.code()
        .is_some_and(|code| code == "13" || code == "53100")
}

/// The database could not be reached or the connection broke.
fn is_connection_failure(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        // PostgreSQL: connection exceptions (08…), shutting down / crash recovery (57P01–3).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03"),
        _ => false,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PoolStats {
    pub write_size: u32,
    pub write_idle: u32,
    pub read_size: u32,
    pub read_idle: u32,
}

/// Everything the relay persists.
pub trait Store:
    ServerStore + AccountStore + GuildStore + MessageStore + ArchiveStore + AdminStore + ModerationStore
{
}
impl<
    T: ServerStore
        + AccountStore
        + GuildStore
        + MessageStore
        + ArchiveStore
        + AdminStore
        + ModerationStore,
> Store for T
{
}

/// Guild moderation (timeouts, the guild audit log, reports), ownership transfer and account
/// deletion.
#[async_trait]
pub trait ModerationStore: Send + Sync + 'static {
    async fn add_guild_audit(&self, guild_id: Id, entry: &AuditEntry) -> StoreResult<()>;
    /// Newest first, before `before`, optionally only one action.
    async fn guild_audit(
        &self,
        guild_id: Id,
        action: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes guild and instance audit entries older than `before_ms`; returns how many.
    async fn purge_audit(&self, before_ms: i64) -> StoreResult<u64>;
    /// Sets or (with `None`) clears a member's timeout. False when not a member.
    async fn set_timeout(&self, guild_id: Id, user_id: Id, until: Option<i64>)
    -> StoreResult<bool>;
    /// The author's newest message in the channel with an id of at least `since`:
    /// `(nonce, created_at)`. Slow mode reads it.
    async fn latest_message_by(
        &self,
        channel_id: Id,
        author: Id,
        since: Id,
    ) -> StoreResult<Option<(String, i64)>>;
    /// The author's live (not deleted) messages with ids of at least `since`, newest first,
    /// in one guild's channels or (with `None`) anywhere: `(channel_id, message_id)`.
    async fn live_messages_by(
        &self,
        author: Id,
        guild_id: Option<Id>,
        since: Id,
        limit: u32,
    ) -> StoreResult<Vec<(Id, Id)>>;
    async fn create_report(&self, report: &Report) -> StoreResult<()>;
    async fn report(&self, id: Id) -> StoreResult<Option<Report>>;
    /// A guild's queue, or (with `None`) the instance admins' one; newest first.
    async fn reports(
        &self,
        guild_id: Option<Id>,
        status: Option<&str>,
        before: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Report>>;
    /// Closes an open report. `NotFound` when unknown, `Conflict` when already closed.
    async fn handle_report(
        &self,
        id: Id,
        status: &str,
        action: &str,
        by: Id,
        at: i64,
    ) -> StoreResult<Report>;
    async fn owned_guilds(&self, user_id: Id) -> StoreResult<Vec<Id>>;
    /// Makes `new_owner` (a member) the owner. `NotFound` when the guild or membership is not.
    async fn transfer_guild(&self, guild_id: Id, new_owner: Id) -> StoreResult<Guild>;
    /// Erases an account's personal data in one transaction: devices, sessions (their ids are
    /// returned, revoked), memberships, read states, reactions and DM read access stay with the
    /// other side; the username becomes `deleted-<id>` (never a valid username) and the
    /// account key is replaced, so nobody can log in as it again. Messages stay (the caller
    /// erases them per policy). `Conflict("owns_guilds")` while it owns a guild.
    async fn delete_account(&self, id: Id, now: i64) -> StoreResult<DeletedAccount>;
}

/// Instance administration: admins, suspensions, statistics, the instance audit log.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    async fn admin_account(&self, id: Id) -> StoreResult<Option<AdminAccount>>;
    async fn admin_account_by_username(&self, username: &str) -> StoreResult<Option<AdminAccount>>;
    /// Accounts whose username contains `query` (case-insensitive), by id after `after`.
    async fn search_accounts(
        &self,
        query: &str,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<AdminAccount>>;
    async fn instance_admins(&self) -> StoreResult<Vec<AdminAccount>>;
    /// False when the account does not exist.
    async fn set_instance_admin(&self, id: Id, admin: bool) -> StoreResult<bool>;
    /// Suspends the account and revokes every session it has (returned), or with `None`
    /// lifts the suspension. `NotFound` for an unknown account.
    async fn set_suspended(&self, id: Id, at: Option<i64>) -> StoreResult<Vec<Id>>;
    /// Revokes every live session of the account (returned).
    async fn revoke_account_sessions(&self, id: Id, now: i64) -> StoreResult<Vec<Id>>;
    async fn instance_stats(&self) -> StoreResult<InstanceStats>;
    async fn add_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Newest first, before `before`.
    async fn audit_log(&self, before: Option<Id>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
    async fn create_instance_invite(&self, invite: &InstanceInvite) -> StoreResult<()>;
    async fn instance_invite(&self, code: &str) -> StoreResult<Option<InstanceInvite>>;
    /// Newest first.
    async fn instance_invites(&self) -> StoreResult<Vec<InstanceInvite>>;
    /// False when unknown.
    async fn revoke_instance_invite(&self, code: &str, now: i64) -> StoreResult<bool>;
    /// Takes one use if the invite is usable now (atomically), or says why not.
    async fn use_instance_invite(
        &self,
        code: &str,
        now: i64,
    ) -> StoreResult<Result<(), InviteRefusal>>;
    /// Up to `limit` messages written by `author` after `after`, oldest first (data export).
    async fn messages_by_author(
        &self,
        author: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>>;
}

/// Monthly partitions (PostgreSQL) and moving whole months of messages out and back in.
/// A month is an id range `[lo, hi)` (ids are time-ordered).
#[async_trait]
pub trait ArchiveStore: Send + Sync + 'static {
    /// Creates the partitions of these months if missing (PostgreSQL; a no-op on SQLite).
    async fn ensure_partitions(&self, months: &[(String, Id, Id)]) -> StoreResult<u32>;
    /// The oldest message still in the database.
    async fn oldest_message(&self) -> StoreResult<Option<Id>>;
    /// Up to `limit` messages of `[lo, hi)` after `after`, oldest first, with reactions.
    async fn export_messages(
        &self,
        lo: Id,
        hi: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<ArchivedMessage>>;
    /// Deletes `[lo, hi)` (reactions, nonces, messages; the empty partition on PostgreSQL) and
    /// records the month as archived, in one transaction.
    async fn drop_archived(
        &self,
        month: &ArchivedMonth,
        lo: Id,
        hi: Id,
        partition: &str,
    ) -> StoreResult<u64>;
    /// Puts archived messages back (existing ids are left alone).
    async fn restore_messages(&self, messages: &[ArchivedMessage]) -> StoreResult<u64>;
    /// Forgets that a month is archived (after its messages were restored).
    async fn unmark_archived(&self, month: &str) -> StoreResult<()>;
    async fn archived_months(&self) -> StoreResult<Vec<ArchivedMonth>>;
}

#[async_trait]
pub trait ServerStore: Send + Sync + 'static {
    fn backend(&self) -> Backend;
    fn pool_stats(&self) -> PoolStats;
    async fn ping(&self) -> StoreResult<()>;
    async fn close(&self);

    /// Takes the lowest worker id whose lease is free or expired.
    async fn lease_worker_id(&self, holder: &str, now: i64, ttl_ms: i64) -> StoreResult<u16>;
    /// Extends a lease; false when another holder took it meanwhile.
    async fn renew_worker_id(
        &self,
        worker_id: u16,
        holder: &str,
        now: i64,
        ttl_ms: i64,
    ) -> StoreResult<bool>;
    async fn release_worker_id(&self, worker_id: u16, holder: &str) -> StoreResult<()>;

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> StoreResult<()>;
    /// Returns the stored secret `name`, storing `generated` first if there is none.
    async fn secret_or_insert(&self, name: &str, generated: &str) -> StoreResult<String>;
}

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates an account with its first device. `Conflict("username_taken")` or
    /// `Conflict("account_exists")`.
    async fn create_account(
        &self,
        account: &AccountRecord,
        device: &DeviceRecord,
    ) -> StoreResult<()>;
    async fn account(&self, id: Id) -> StoreResult<Option<AccountRecord>>;
    async fn account_by_key(&self, account_key: &str) -> StoreResult<Option<AccountRecord>>;
    async fn accounts(&self, ids: &[Id]) -> StoreResult<Vec<AccountRecord>>;
    async fn device(&self, device_key: &str) -> StoreResult<Option<DeviceRecord>>;
    /// `Conflict("device_exists")` when the key is already registered (to any account).
    async fn add_device(&self, device: &DeviceRecord) -> StoreResult<()>;
    async fn devices(&self, account_id: Id) -> StoreResult<Vec<DeviceRecord>>;
    /// Revokes the device and every session it holds; returns the revoked session ids.
    async fn revoke_device(
        &self,
        account_id: Id,
        device_key: &str,
        now: i64,
    ) -> StoreResult<Vec<Id>>;

    async fn put_challenge(&self, challenge: &ChallengeRecord) -> StoreResult<()>;
    /// Removes and returns the challenge if it exists and has not expired (one use).
    async fn take_challenge(
        &self,
        challenge: &str,
        now: i64,
    ) -> StoreResult<Option<ChallengeRecord>>;
    async fn purge_challenges(&self, now: i64) -> StoreResult<u64>;

    async fn create_session(&self, session: &SessionRecord, refresh_hash: &str) -> StoreResult<()>;
    async fn session(&self, id: Id) -> StoreResult<Option<SessionRecord>>;
    async fn session_by_refresh(&self, refresh_hash: &str) -> StoreResult<Option<SessionRecord>>;
    /// Refresh-token rotation with a grace window; see [`RefreshOutcome`]. A token older
    /// than `idle_ms` (unused that long) is `Invalid`.
    async fn rotate_refresh(
        &self,
        hash: &str,
        successor_hash: &str,
        now: i64,
        grace_ms: i64,
        idle_ms: i64,
    ) -> StoreResult<RefreshOutcome>;
    /// True when the session was live and is now revoked.
    async fn revoke_session(&self, id: Id, now: i64) -> StoreResult<bool>;
    async fn revoked_sessions_since(&self, since: i64) -> StoreResult<Vec<Id>>;
}

#[async_trait]
pub trait GuildStore: Send + Sync + 'static {
    /// Creates the guild, its @everyone role, the owner's membership and its first channels.
    async fn create_guild(
        &self,
        guild: &Guild,
        everyone: &Role,
        channels: &[Channel],
    ) -> StoreResult<()>;
    async fn guild(&self, id: Id) -> StoreResult<Option<Guild>>;
    async fn rename_guild(&self, id: Id, name: &str) -> StoreResult<Guild>;
    async fn delete_guild(&self, id: Id) -> StoreResult<()>;
    async fn guilds_of(&self, user_id: Id) -> StoreResult<Vec<Guild>>;
    /// Guild, roles and channels with overwrites: what permission checks need.
    async fn guild_snapshot(&self, id: Id) -> StoreResult<Option<GuildSnapshot>>;

    async fn create_channel(&self, channel: &Channel) -> StoreResult<()>;
    async fn channel(&self, id: Id) -> StoreResult<Option<Channel>>;
    /// The current `last_seq` of each channel (cached channel objects lag behind).
    async fn channel_seqs(&self, ids: &[Id]) -> StoreResult<Vec<(Id, i64)>>;
    async fn update_channel(&self, id: Id, update: &ChannelUpdate) -> StoreResult<Channel>;
    async fn delete_channel(&self, id: Id) -> StoreResult<()>;
    async fn put_overwrite(&self, channel_id: Id, overwrite: &Overwrite) -> StoreResult<()>;
    async fn delete_overwrite(&self, channel_id: Id, target_id: Id) -> StoreResult<bool>;

    async fn create_role(&self, role: &Role) -> StoreResult<()>;
    async fn update_role(&self, role: &Role) -> StoreResult<()>;
    async fn delete_role(&self, guild_id: Id, role_id: Id) -> StoreResult<bool>;

    async fn member(&self, guild_id: Id, user_id: Id) -> StoreResult<Option<Member>>;
    async fn members(
        &self,
        guild_id: Id,
        after: Option<Id>,
        limit: u32,
    ) -> StoreResult<Vec<Member>>;
    async fn member_count(&self, guild_id: Id) -> StoreResult<i64>;
    async fn add_member_role(&self, guild_id: Id, user_id: Id, role_id: Id) -> StoreResult<bool>;
    async fn remove_member_role(&self, guild_id: Id, user_id: Id, role_id: Id)
    -> StoreResult<bool>;
    async fn remove_member(&self, guild_id: Id, user_id: Id) -> StoreResult<bool>;
    /// Bans and removes the member in one transaction.
    async fn ban(
        &self,
        guild_id: Id,
        user_id: Id,
        reason: Option<&str>,
        by: Id,
        now: i64,
    ) -> StoreResult<()>;
    async fn unban(&self, guild_id: Id, user_id: Id) -> StoreResult<bool>;
    async fn is_banned(&self, guild_id: Id, user_id: Id) -> StoreResult<bool>;
    async fn bans(&self, guild_id: Id) -> StoreResult<Vec<Ban>>;

    async fn create_invite(&self, invite: &Invite) -> StoreResult<()>;
    async fn invite(&self, code: &str) -> StoreResult<Option<Invite>>;
    async fn invites(&self, guild_id: Id) -> StoreResult<Vec<Invite>>;
    async fn revoke_invite(&self, guild_id: Id, code: &str, now: i64) -> StoreResult<bool>;
    /// Checks and uses an invite atomically (bans, expiry, uses, revocation).
    async fn accept_invite(
        &self,
        code: &str,
        user_id: Id,
        now: i64,
    ) -> StoreResult<Result<AcceptedInvite, InviteRefusal>>;

    /// Returns the existing DM channel between two accounts or creates `new_channel`.
    async fn open_dm(&self, new_channel: &Channel, a: Id, b: Id) -> StoreResult<Channel>;
    async fn dm_channels(&self, user_id: Id) -> StoreResult<Vec<Channel>>;
}

#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Persists a message and its create event with the next seq, unless (author, nonce)
    /// already exists: then returns the first message and `created == false`.
    async fn insert_message(&self, message: &NewMessage) -> StoreResult<InsertedMessage>;
    async fn edit_message(
        &self,
        channel_id: Id,
        id: Id,
        content: &str,
        mentions: &[Id],
        now: i64,
    ) -> StoreResult<ChannelEvent>;
    /// Soft-deletes: content is cleared, earlier events of the message are redacted.
    async fn delete_message(&self, channel_id: Id, id: Id, now: i64) -> StoreResult<ChannelEvent>;
    /// `None` when the reaction was already there (no event).
    async fn add_reaction(
        &self,
        channel_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: &str,
        now: i64,
    ) -> StoreResult<Option<ChannelEvent>>;
    async fn remove_reaction(
        &self,
        channel_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: &str,
        now: i64,
    ) -> StoreResult<Option<ChannelEvent>>;
    async fn message(&self, channel_id: Id, id: Id) -> StoreResult<Option<Message>>;
    async fn history(
        &self,
        channel_id: Id,
        anchor: HistoryAnchor,
        limit: u32,
    ) -> StoreResult<Vec<Message>>;
    async fn events(
        &self,
        channel_id: Id,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<ChannelEvent>>;
    async fn ack(&self, user_id: Id, channel_id: Id, message_id: Id) -> StoreResult<()>;
    async fn read_states(&self, user_id: Id, channel_ids: &[Id]) -> StoreResult<Vec<ReadState>>;
    /// Which of these messages the user reacted to, and with what: `(message_id, emoji)`.
    async fn my_reactions(&self, user_id: Id, message_ids: &[Id])
    -> StoreResult<Vec<(Id, String)>>;
    async fn search(&self, query: &SearchParams) -> StoreResult<Vec<SearchHit>>;
}
