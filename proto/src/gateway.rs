//! The gateway's frames: JSON `{"op", "d", "s"?, "t"?}` over a WebSocket. See
//! docs/protocols/gateway.md; the fixtures in proto/tests/fixtures/gateway are checked by tests.
//! Also the close codes, and the parser of client frames, which checks their size first.

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::model::{Channel, Guild, Role, User};

/// Largest text frame a client may send. Client frames are small; anything larger is abuse.
pub const MAX_CLIENT_FRAME_BYTES: usize = 4 * 1024;
/// The client's first frame must arrive within this time.
pub const IDENTIFY_TIMEOUT_MS: u64 = 10_000;

pub mod close {
    pub const AUTH_FAILED: u16 = 4001;
    pub const INVALID_SESSION: u16 = 4002;
    pub const DECODE_ERROR: u16 = 4003;
    pub const TOO_SLOW: u16 = 4008;
    pub const SESSION_REVOKED: u16 = 4009;
    pub const GOING_AWAY: u16 = 4010;
    pub const RATE_LIMITED: u16 = 4029;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PresenceStatus {
    Online,
    Idle,
    Offline,
}

impl PresenceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PresenceStatus::Online => "online",
            PresenceStatus::Idle => "idle",
            PresenceStatus::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identify {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    pub token: String,
    pub session_id: String,
    /// The last `s` the client received.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Typing {
    pub channel_id: Id,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPresence {
    pub status: PresenceStatus,
}

/// A frame from client to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Identify(Identify),
    Resume(Resume),
    Heartbeat,
    Typing(Typing),
    Presence(SetPresence),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame larger than {MAX_CLIENT_FRAME_BYTES} bytes")]
    TooLarge,
    #[error("frame is not a JSON object with a string \"op\": {0}")]
    Malformed(String),
    #[error("unknown op {0:?}")]
    UnknownOp(String),
    #[error("bad \"d\" for op {op}: {reason}")]
    BadData { op: &'static str, reason: String },
}

#[derive(Deserialize)]
struct RawFrame {
    op: String,
    #[serde(default)]
    d: serde_json::Value,
}

fn data<T: for<'de> Deserialize<'de>>(
    op: &'static str,
    d: serde_json::Value,
) -> Result<T, FrameError> {
    serde_json::from_value(d).map_err(|e| FrameError::BadData {
        op,
        reason: e.to_string(),
    })
}

impl ClientFrame {
    /// Size is checked before parsing, so a hostile client cannot make the server parse
    /// megabytes.
    pub fn parse(bytes: &[u8]) -> Result<ClientFrame, FrameError> {
        if bytes.len() > MAX_CLIENT_FRAME_BYTES {
            return Err(FrameError::TooLarge);
        }
        let raw: RawFrame =
            serde_json::from_slice(bytes).map_err(|e| FrameError::Malformed(e.to_string()))?;
        Ok(match raw.op.as_str() {
            "identify" => ClientFrame::Identify(data("identify", raw.d)?),
            "resume" => ClientFrame::Resume(data("resume", raw.d)?),
            "heartbeat" => ClientFrame::Heartbeat,
            "typing" => ClientFrame::Typing(data("typing", raw.d)?),
            "presence" => ClientFrame::Presence(data("presence", raw.d)?),
            _ => return Err(FrameError::UnknownOp(raw.op.chars().take(32).collect())),
        })
    }

    pub fn to_json(&self) -> String {
        let (op, d) = match self {
            ClientFrame::Identify(d) => ("identify", serde_json::to_value(d)),
            ClientFrame::Resume(d) => ("resume", serde_json::to_value(d)),
            ClientFrame::Heartbeat => ("heartbeat", Ok(serde_json::Value::Null)),
            ClientFrame::Typing(d) => ("typing", serde_json::to_value(d)),
            ClientFrame::Presence(d) => ("presence", serde_json::to_value(d)),
        };
        let d = d.expect("gateway frames always serialise");
        if d.is_null() {
            serde_json::json!({ "op": op }).to_string()
        } else {
            serde_json::json!({ "op": op, "d": d }).to_string()
        }
    }
}

/// A guild as the ready frame lists it: with the channels the user may view and the roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyGuild {
    #[serde(flatten)]
    pub guild: Guild,
    pub channels: Vec<Channel>,
    pub roles: Vec<Role>,
    /// The ids of the roles the user holds in this guild.
    pub my_roles: Vec<Id>,
    /// Who is in the guild's voice channels (those the user can see) on this relay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voice_states: Vec<crate::model::VoiceState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    pub session_id: String,
    pub user: User,
    pub guilds: Vec<ReadyGuild>,
    /// The user's direct-message channels.
    pub dms: Vec<Channel>,
    /// Who, among the users sharing a guild with this one, is online or idle right now
    /// (`presence_update` events carry changes from here on). Users who appear offline are
    /// absent.
    #[serde(default)]
    pub presences: Vec<PresenceUpdate>,
    pub heartbeat_interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resumed {
    /// How many events were replayed before this frame.
    pub replayed: u64,
}

/// `typing_start`: someone is typing in a channel (not stored, no channel seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingStart {
    pub channel_id: Id,
    pub guild_id: Option<Id>,
    pub user_id: Id,
    /// Unix milliseconds.
    pub timestamp: i64,
}

/// `presence_update`: a user sharing a guild came online, went idle or offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub user_id: Id,
    pub status: PresenceStatus,
}

/// `member_remove`: a member left, was kicked or banned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub guild_id: Id,
    pub user: User,
}

/// `channel_delete`: a channel was deleted, or the recipient can no longer see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDeleted {
    pub id: Id,
    pub guild_id: Option<Id>,
}

/// `role_delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDeleted {
    pub guild_id: Id,
    pub role_id: Id,
}

/// `guild_delete`: the guild was deleted, or the recipient left or was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuildDeleted {
    pub id: Id,
}

/// A frame from server to client, as a client decodes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    pub op: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub d: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub t: Option<String>,
}

impl ServerFrame {
    pub fn parse(text: &str) -> Result<ServerFrame, FrameError> {
        serde_json::from_str(text).map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

pub fn ready_frame(ready: &Ready) -> String {
    serde_json::json!({ "op": "ready", "d": ready }).to_string()
}

pub fn resumed_frame(resumed: &Resumed) -> String {
    serde_json::json!({ "op": "resumed", "d": resumed }).to_string()
}

pub const HEARTBEAT_ACK: &str = r#"{"op":"heartbeat_ack"}"#;

/// Builds an event frame around an already-serialised `d`, so one event fanned out to many
/// sessions is serialised once.
pub fn event_frame(t: &str, s: u64, d_json: &str) -> String {
    let mut out = String::with_capacity(d_json.len() + t.len() + 48);
    out.push_str(r#"{"op":"event","t":""#);
    out.push_str(t);
    out.push_str(r#"","s":"#);
    out.push_str(&s.to_string());
    out.push_str(r#","d":"#);
    out.push_str(d_json);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ops() {
        assert_eq!(
            ClientFrame::parse(br#"{"op":"heartbeat"}"#),
            Ok(ClientFrame::Heartbeat)
        );
        assert_eq!(
            ClientFrame::parse(br#"{"op":"identify","d":{"token":"abc"}}"#),
            Ok(ClientFrame::Identify(Identify {
                token: "abc".into()
            }))
        );
        assert!(matches!(
            ClientFrame::parse(br#"{"op":"nope"}"#),
            Err(FrameError::UnknownOp(_))
        ));
        assert!(matches!(
            ClientFrame::parse(br#"{"op":"identify"}"#),
            Err(FrameError::BadData { .. })
        ));
        assert!(matches!(
            ClientFrame::parse(br#"[1]"#),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            ClientFrame::parse(&vec![b' '; MAX_CLIENT_FRAME_BYTES + 1]),
            Err(FrameError::TooLarge)
        );
        assert!(matches!(
            ClientFrame::parse(br#"{"op":"typing","d":{"channel_id":"1","x":1}}"#),
            Err(FrameError::BadData { .. })
        ));
    }

    #[test]
    fn event_frame_is_valid_json() {
        let f = event_frame("message_create", 7, r#"{"id":"1"}"#);
        let parsed = ServerFrame::parse(&f).unwrap();
        assert_eq!(parsed.s, Some(7));
        assert_eq!(parsed.t.as_deref(), Some("message_create"));
        assert_eq!(parsed.d["id"], "1");
    }
}
