//! Objects the relay returns over HTTP and pushes over the gateway. Timestamps are unix
//! milliseconds, ids are decimal strings. User, Guild, Channel, Role, Member, Message,
//! ChannelEvent and their kin.

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::permissions::{Overwrite, Permissions};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct User {
    pub id: Id,
    pub username: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Device {
    pub device_key: String,
    pub label: String,
    /// From the certificate, unix seconds.
    pub certified_at: i64,
    pub added_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Guild {
    pub id: Id,
    pub name: String,
    pub owner_id: Id,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Text,
    Voice,
    Dm,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Text => "text",
            ChannelKind::Voice => "voice",
            ChannelKind::Dm => "dm",
        }
    }
    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "text" => Some(ChannelKind::Text),
            "voice" => Some(ChannelKind::Voice),
            "dm" => Some(ChannelKind::Dm),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Channel {
    pub id: Id,
    /// Absent for direct-message channels.
    pub guild_id: Option<Id>,
    pub kind: ChannelKind,
    pub name: String,
    pub topic: Option<String>,
    pub position: i64,
    /// Private channels deny @everyone the view permission; overwrites grant it back.
    pub private: bool,
    /// Slow mode: a member without manage_messages sends at most one message per this many
    /// seconds here (0: off).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slowmode_secs: u32,
    pub overwrites: Vec<Overwrite>,
    /// Seq of the channel's latest event (0 when it has none).
    pub last_seq: i64,
    /// The two participants of a direct-message channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<User>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Role {
    pub id: Id,
    pub guild_id: Id,
    pub name: String,
    pub permissions: Permissions,
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Member {
    pub guild_id: Id,
    pub user: User,
    pub roles: Vec<Id>,
    pub joined_at: i64,
    /// Timed out (cannot send, react or speak) until this time, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_until: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Ban {
    pub guild_id: Id,
    pub user: User,
    pub reason: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Invite {
    pub code: String,
    pub guild_id: Id,
    pub inviter_id: Id,
    pub max_uses: Option<i64>,
    pub uses: i64,
    pub expires_at: Option<i64>,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReactionCount {
    pub emoji: String,
    pub count: i64,
    /// The caller is one of the reactors (history and single-message reads only; events
    /// leave it out).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub me: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Message {
    pub id: Id,
    pub channel_id: Id,
    pub guild_id: Option<Id>,
    /// The author's account id.
    pub author: Id,
    /// The device key that sent it.
    pub device: String,
    /// The client's idempotency key.
    pub nonce: String,
    pub content: String,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    /// Seq of the event that created the message; in a `message_update` event, the seq of
    /// that update.
    pub seq: i64,
    pub reply_to: Option<Id>,
    pub mentions: Vec<Id>,
    pub reactions: Vec<ReactionCount>,
    /// Only in the event log: a message deleted later, its content removed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// The kinds of events that take a channel seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    MessageCreate,
    MessageUpdate,
    MessageDelete,
    ReactionAdd,
    ReactionRemove,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageCreate => "message_create",
            EventKind::MessageUpdate => "message_update",
            EventKind::MessageDelete => "message_delete",
            EventKind::ReactionAdd => "reaction_add",
            EventKind::ReactionRemove => "reaction_remove",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        [
            Self::MessageCreate,
            Self::MessageUpdate,
            Self::MessageDelete,
            Self::ReactionAdd,
            Self::ReactionRemove,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a channel's gapless event log. `data` is a [`Message`] for create and update,
/// a [`MessageDeleted`] for delete and a [`ReactionEvent`] for reactions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChannelEvent {
    pub channel_id: Id,
    pub seq: i64,
    pub kind: EventKind,
    pub message_id: Id,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct MessageDeleted {
    pub id: Id,
    pub channel_id: Id,
    pub guild_id: Option<Id>,
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReactionEvent {
    pub channel_id: Id,
    pub guild_id: Option<Id>,
    pub message_id: Id,
    pub user_id: Id,
    pub emoji: String,
    pub seq: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReadState {
    pub channel_id: Id,
    /// Id of the last message read (absent when nothing was read).
    pub last_read_id: Option<Id>,
    /// Unread messages by others, capped at 1,000.
    pub unread_count: i64,
    /// Unread messages that mention the caller, capped at 1,000.
    pub mention_count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SearchHit {
    pub message: Message,
    /// The content, HTML-escaped, with matching words wrapped in `<mark>`…`</mark>`.
    pub highlight: String,
    /// Higher is better; comparable within one response only.
    pub score: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Who is in a voice channel and how (`voice_state_update` on the gateway; `channel_id` is
/// absent when the user left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VoiceState {
    pub guild_id: Option<Id>,
    pub channel_id: Option<Id>,
    pub user_id: Id,
    /// The device in the call.
    pub device_key: String,
    pub self_mute: bool,
    pub self_deaf: bool,
    /// Muted by a moderator (mute_members): nobody hears them until it is lifted.
    pub server_mute: bool,
    /// The grant allows speaking: the speak permission and no server mute.
    pub speak: bool,
    /// `node` or `browser`: a browser in a channel moves it to the SFU.
    pub client: String,
    pub joined_at: i64,
    /// Sharing their screen or camera (others may watch it through the SFU).
    #[serde(default)]
    pub self_video: bool,
    /// In a cluster: the user talks to another instance than the one holding the room (their
    /// join was forwarded to it). Nodes on different instances cannot count on reaching each
    /// other, so such a channel runs on the owner's SFU, which everyone reaches.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_instance: bool,
}
