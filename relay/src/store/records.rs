//! Plain rows and parameters that cross the store boundary.

use concord_proto::Id;
use concord_proto::model::{Channel, Guild, Message, Role};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: Id,
    pub username: String,
    pub account_key: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device_key: String,
    pub account_id: Id,
    pub label: String,
    /// The certificate JSON as presented.
    pub certificate: String,
    pub certified_at: i64,
    pub added_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    pub challenge: String,
    pub device_key: String,
    pub audience: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub secret: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: Id,
    pub account_id: Id,
    pub device_key: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// First use: the successor is stored.
    Rotated(SessionRecord),
    /// Used again within the grace window: the caller returns the same successor.
    Grace(SessionRecord),
    /// Used again after the grace window: the whole session (family) is now revoked.
    Reused(SessionRecord),
    /// Unknown token, or its session is revoked.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuildSnapshot {
    pub guild: Guild,
    pub roles: Vec<Role>,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelUpdate {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub position: Option<i64>,
    pub private: Option<bool>,
    pub slowmode_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedInvite {
    pub guild: Guild,
    /// False when the user was already a member (the invite was not used).
    pub joined: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    Unknown,
    Expired,
    UsedUp,
    Revoked,
    Banned,
}

impl InviteRefusal {
    /// The rule for guild and instance invites alike: not revoked, not expired, uses left.
    pub fn check(
        revoked: bool,
        expires_at: Option<i64>,
        max_uses: Option<i64>,
        uses: i64,
        now: i64,
    ) -> Result<(), InviteRefusal> {
        if revoked {
            Err(InviteRefusal::Revoked)
        } else if expires_at.is_some_and(|t| t <= now) {
            Err(InviteRefusal::Expired)
        } else if max_uses.is_some_and(|m| uses >= m) {
            Err(InviteRefusal::UsedUp)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub id: Id,
    pub channel_id: Id,
    pub author: Id,
    pub device: String,
    pub nonce: String,
    pub content: String,
    pub reply_to: Option<Id>,
    pub mentions: Vec<Id>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InsertedMessage {
    pub message: Message,
    /// False when (author, nonce) already existed and the first message was returned.
    pub created: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryAnchor {
    Latest,
    Before(Id),
    After(Id),
    Around(Id),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParams {
    /// Only these channels are searched: the ones the caller may view.
    pub channel_ids: Vec<Id>,
    /// Lowercase word terms (see `concord_proto::limits::search_terms`); the last one also
    /// matches as a prefix.
    pub terms: Vec<String>,
    pub author: Option<Id>,
    pub before: Option<Id>,
    pub after: Option<Id>,
    pub limit: u32,
}

/// One message as an archive holds it: every column but the derived search ones, with its
/// reactions (compressed JSON lines, one per message).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedMessage {
    pub id: Id,
    pub channel_id: Id,
    pub author_id: Id,
    pub device_key: String,
    pub nonce: String,
    pub content: String,
    pub reply_to: Option<Id>,
    /// The stored JSON list of mentioned user ids.
    pub mentions: String,
    pub seq: i64,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub reactions: Vec<ArchivedReaction>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedReaction {
    pub emoji: String,
    pub user_id: Id,
    pub created_at: i64,
}

/// A month moved out of the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedMonth {
    /// `YYYY-MM`
    pub month: String,
    /// Where the archive is, relative to the archive store's root.
    pub object: String,
    pub messages: i64,
    pub archived_at: i64,
}

/// What instance administration knows about an account.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AdminAccount {
    pub id: Id,
    pub username: String,
    pub created_at: i64,
    pub instance_admin: bool,
    /// Set while the account is suspended (it cannot log in).
    pub suspended_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceStats {
    pub accounts: i64,
    pub suspended_accounts: i64,
    pub guilds: i64,
    pub messages: i64,
    pub active_sessions: i64,
}

/// One instance admin action.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Id,
    /// None: done on the server's command line.
    pub actor_id: Option<Id>,
    pub action: String,
    pub target_id: Option<Id>,
    pub detail: String,
    pub created_at: i64,
}

/// What `delete_account` removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedAccount {
    /// Sessions that were live (now revoked).
    pub sessions: Vec<Id>,
    /// Guilds the account was a member of.
    pub guilds: Vec<Id>,
}

/// An invite to the instance itself (not to a guild): lets a new account sign up on an
/// invite-only relay.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceInvite {
    pub code: String,
    pub created_by: Id,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}
