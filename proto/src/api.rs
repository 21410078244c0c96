//! HTTP request and response bodies. Every request body checks itself with `validate` before
//! anything acts on it; unknown fields are refused.

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::limits::{self, Invalid, invalid};
use crate::model::{ChannelKind, User};
use crate::permissions::{OverwriteKind, Permissions};
use crate::signed::{self, DeviceCertificate};

#[cfg(feature = "openapi")]
use utoipa::{IntoParams, ToSchema};

/// Implemented by every request body: shape checks that need no database.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

fn key(field: &'static str, text: &str) -> Result<(), Invalid> {
    signed::parse_public_key(text, field)
        .map(|_| ())
        .map_err(|e| invalid(field, e.to_string()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub device_key: String,
}

impl Validate for ChallengeRequest {
    fn validate(&self) -> Result<(), Invalid> {
        key("device_key", &self.device_key)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ChallengeResponse {
    pub challenge: String,
    /// The relay's public origin; the client checks it is the origin it connected to.
    pub audience: String,
    /// Unix milliseconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub device_key: String,
    pub challenge: String,
    /// Device key's signature over `concord-auth-v1\n` + audience + `\n` + challenge.
    pub signature: String,
    /// Needed when this device is not yet known to the relay.
    pub certificate: Option<DeviceCertificate>,
    /// Needed on the first login of an unknown account key.
    pub username: Option<String>,
    /// A guild invite code: on an invite-only relay a new account needs one; a new account
    /// joins that guild in any case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), Invalid> {
        key("device_key", &self.device_key)?;
        if self.challenge.is_empty() || self.challenge.len() > 128 {
            return Err(invalid("challenge", "1 to 128 characters"));
        }
        signed::parse_signature(&self.signature)
            .map_err(|e| invalid("signature", e.to_string()))?;
        if let Some(cert) = &self.certificate {
            cert.verify()
                .map_err(|e| invalid("certificate", e.to_string()))?;
            if cert.device_key != self.device_key {
                return Err(invalid("certificate", "certifies another device key"));
            }
        }
        if let Some(name) = &self.username {
            limits::username(name)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LoginResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub session_id: Id,
    pub user: User,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), Invalid> {
        if self.refresh_token.is_empty() || self.refresh_token.len() > 128 {
            return Err(invalid("refresh_token", "1 to 128 characters"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    pub certificate: DeviceCertificate,
}

impl Validate for AddDeviceRequest {
    fn validate(&self) -> Result<(), Invalid> {
        self.certificate
            .verify()
            .map_err(|e| invalid("certificate", e.to_string()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateGuild {
    pub name: String,
}

impl Validate for CreateGuild {
    fn validate(&self) -> Result<(), Invalid> {
        limits::name("name", &self.name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateGuild {
    pub name: Option<String>,
    /// Hands the guild to another member (only the owner may).
    pub owner_id: Option<Id>,
}

impl Validate for UpdateGuild {
    fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_none() && self.owner_id.is_none() {
            return Err(invalid("name", "nothing to update"));
        }
        match &self.name {
            Some(name) => limits::name("name", name),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    pub name: String,
    pub kind: ChannelKind,
    #[serde(default)]
    pub private: bool,
    pub topic: Option<String>,
}

impl Validate for CreateChannel {
    fn validate(&self) -> Result<(), Invalid> {
        limits::name("name", &self.name)?;
        if self.kind == ChannelKind::Dm {
            return Err(invalid(
                "kind",
                "text or voice; direct messages use /users/@me/dms",
            ));
        }
        if let Some(topic) = &self.topic {
            limits::topic(topic)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub position: Option<i64>,
    /// Slow mode in seconds, 0 (off) to 21600 (six hours).
    pub slowmode_secs: Option<u32>,
}

impl Validate for UpdateChannel {
    fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_none()
            && self.topic.is_none()
            && self.position.is_none()
            && self.slowmode_secs.is_none()
        {
            return Err(invalid("name", "nothing to update"));
        }
        if self
            .slowmode_secs
            .is_some_and(|s| s > limits::MAX_SLOWMODE_SECS)
        {
            return Err(invalid(
                "slowmode_secs",
                format!("between 0 and {}", limits::MAX_SLOWMODE_SECS),
            ));
        }
        if let Some(name) = &self.name {
            limits::name("name", name)?;
        }
        if let Some(topic) = &self.topic {
            limits::topic(topic)?;
        }
        if let Some(position) = self.position
            && !(0..=10_000).contains(&position)
        {
            return Err(invalid("position", "between 0 and 10000"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PutOverwrite {
    pub kind: OverwriteKind,
    #[serde(default)]
    pub allow: Permissions,
    #[serde(default)]
    pub deny: Permissions,
}

impl Validate for PutOverwrite {
    fn validate(&self) -> Result<(), Invalid> {
        if !self.allow.is_known() || !self.deny.is_known() {
            return Err(invalid("allow", "unknown permission bits"));
        }
        if self.allow.0 & self.deny.0 != 0 {
            return Err(invalid(
                "deny",
                "a permission cannot be both allowed and denied",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    pub name: String,
    #[serde(default)]
    pub permissions: Permissions,
}

impl Validate for CreateRole {
    fn validate(&self) -> Result<(), Invalid> {
        limits::name("name", &self.name)?;
        if !self.permissions.is_known() {
            return Err(invalid("permissions", "unknown permission bits"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    pub name: Option<String>,
    pub permissions: Option<Permissions>,
    pub position: Option<i64>,
}

impl Validate for UpdateRole {
    fn validate(&self) -> Result<(), Invalid> {
        if self.name.is_none() && self.permissions.is_none() && self.position.is_none() {
            return Err(invalid("name", "nothing to update"));
        }
        if let Some(name) = &self.name {
            limits::name("name", name)?;
        }
        if let Some(p) = self.permissions
            && !p.is_known()
        {
            return Err(invalid("permissions", "unknown permission bits"));
        }
        if let Some(position) = self.position
            && !(1..=1_000_000).contains(&position)
        {
            return Err(invalid(
                "position",
                "between 1 and 1000000 (0 is @everyone)",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateInvite {
    /// 1..=10000; absent means unlimited.
    pub max_uses: Option<i64>,
    /// 60..=2592000 (30 days); absent means no expiry.
    pub expires_in_secs: Option<i64>,
}

impl Validate for CreateInvite {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(n) = self.max_uses
            && !(1..=10_000).contains(&n)
        {
            return Err(invalid("max_uses", "between 1 and 10000"));
        }
        if let Some(s) = self.expires_in_secs
            && !(60..=2_592_000).contains(&s)
        {
            return Err(invalid("expires_in_secs", "between 60 and 2592000"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateBan {
    pub reason: Option<String>,
}

impl Validate for CreateBan {
    fn validate(&self) -> Result<(), Invalid> {
        match &self.reason {
            Some(r) if r.chars().count() > 512 => Err(invalid("reason", "at most 512 characters")),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateDm {
    pub recipient: Id,
}

impl Validate for CreateDm {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    pub content: String,
    /// Client idempotency key: the same (author, nonce) returns the first message.
    pub nonce: String,
    pub reply_to: Option<Id>,
}

impl Validate for SendMessage {
    fn validate(&self) -> Result<(), Invalid> {
        limits::content(&self.content)?;
        limits::nonce(&self.nonce)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    pub content: String,
}

impl Validate for EditMessage {
    fn validate(&self) -> Result<(), Invalid> {
        limits::content(&self.content)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// The last message the user has read in this channel.
    pub message_id: Id,
}

impl Validate for AckRequest {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// `?before=&after=&around=&limit=`: at most one of before/after/around.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub before: Option<Id>,
    pub after: Option<Id>,
    pub around: Option<Id>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for HistoryQuery {
    fn validate(&self) -> Result<(), Invalid> {
        let anchors = [self.before, self.after, self.around]
            .iter()
            .filter(|a| a.is_some())
            .count();
        if anchors > 1 {
            return Err(invalid(
                "before",
                "use at most one of before, after and around",
            ));
        }
        limits::page_limit(self.limit).map(|_| ())
    }
}

/// `?after_seq=&limit=`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Return events with seq greater than this (default 0: from the start).
    pub after_seq: Option<i64>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for EventsQuery {
    fn validate(&self) -> Result<(), Invalid> {
        if self.after_seq.is_some_and(|s| s < 0) {
            return Err(invalid("after_seq", "must be 0 or more"));
        }
        limits::page_limit(self.limit).map(|_| ())
    }
}

/// `?after=&limit=`: members by ascending user id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    pub after: Option<Id>,
    /// 1..=100, default 50.
    pub limit: Option<u32>,
}

impl Validate for MembersQuery {
    fn validate(&self) -> Result<(), Invalid> {
        limits::page_limit(self.limit).map(|_| ())
    }
}

/// `?q=&channel=&author=&before=&after=&limit=`; before/after are message ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(IntoParams))]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    pub q: String,
    pub channel: Option<Id>,
    pub author: Option<Id>,
    pub before: Option<Id>,
    pub after: Option<Id>,
    /// 1..=100, default 25.
    pub limit: Option<u32>,
}

impl Validate for SearchQuery {
    fn validate(&self) -> Result<(), Invalid> {
        limits::search_terms(&self.q)?;
        limits::page_limit(self.limit).map(|_| ())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct SearchResults {
    pub hits: Vec<crate::model::SearchHit>,
    pub terms: Vec<String>,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_failed`, `missing_access`.
    pub code: String,
    pub message: String,
}

/// Error codes after which the same request, sent again unchanged (a message with the same
/// nonce), may succeed: the relay or its database was busy or away (`busy`, `unavailable`,
/// `internal`), the sender was too fast (`rate_limited`), the commit's outcome is unknown
/// (`retry`: the retry returns the stored message or stores it once), the disk is full
/// (`storage_full`, 507), or the relay has not learnt the device yet (`unknown_device`).
/// Every other code is final. The node's outbox and the web client's follow this list.
pub const RETRYABLE_CODES: &[&str] = &[
    "busy",
    "internal",
    "rate_limited",
    "retry",
    "storage_full",
    "unavailable",
    "unknown_device",
];

/// Whether a refusal with this code is worth retrying unchanged ([`RETRYABLE_CODES`]).
pub fn is_retryable(code: &str) -> bool {
    RETRYABLE_CODES.contains(&code)
}

/// `GET /.well-known/concord`: how a node finds a relay on libp2p, and what else it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WellKnown {
    pub api_version: u32,
    /// The relay's public origin (the login audience).
    pub public_url: String,
    /// The relay's libp2p PeerId; absent when P2P is disabled.
    pub relay_peer_id: Option<String>,
    /// The relay's ed25519 public key (base64url): it signs every pushed event.
    pub relay_key: Option<String>,
    /// libp2p multiaddrs, each ending in /p2p/<relay_peer_id>.
    pub multiaddrs: Vec<String>,
    pub bootstrap_peers: Vec<String>,
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
}

/// `PUT /guilds/{guild_id}/members/{user_id}/timeout`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TimeoutMember {
    /// 1 second to 28 days.
    pub duration_secs: u32,
    pub reason: Option<String>,
}

impl Validate for TimeoutMember {
    fn validate(&self) -> Result<(), Invalid> {
        if !(1..=limits::MAX_TIMEOUT_SECS).contains(&self.duration_secs) {
            return Err(invalid(
                "duration_secs",
                format!("between 1 and {}", limits::MAX_TIMEOUT_SECS),
            ));
        }
        limits::reason(self.reason.as_deref())
    }
}

/// `POST /guilds/{guild_id}/members/{user_id}/messages/bulk-delete`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkDelete {
    /// Deletes the member's messages of the last this many seconds (at most 7 days).
    pub within_secs: u32,
    pub reason: Option<String>,
}

impl Validate for BulkDelete {
    fn validate(&self) -> Result<(), Invalid> {
        if !(1..=limits::MAX_BULK_DELETE_SECS).contains(&self.within_secs) {
            return Err(invalid(
                "within_secs",
                format!("between 1 and {}", limits::MAX_BULK_DELETE_SECS),
            ));
        }
        limits::reason(self.reason.as_deref())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct BulkDeleted {
    pub deleted: u64,
}

/// A report of a message or a user, to a guild's moderators
/// (`POST /guilds/{guild_id}/reports`) or to the instance admins (`POST /reports`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    /// The reported user; taken from the message when a message is reported.
    pub user_id: Option<Id>,
    /// The reported message, with its channel.
    pub channel_id: Option<Id>,
    pub message_id: Option<Id>,
    /// 1 to 1000 characters.
    pub reason: String,
}

impl Validate for CreateReport {
    fn validate(&self) -> Result<(), Invalid> {
        if self.channel_id.is_some() != self.message_id.is_some() {
            return Err(invalid(
                "message_id",
                "a reported message needs both channel_id and message_id",
            ));
        }
        if self.user_id.is_none() && self.message_id.is_none() {
            return Err(invalid("user_id", "report a user or a message"));
        }
        let n = self.reason.trim().chars().count();
        if n == 0 || self.reason.chars().count() > limits::MAX_REPORT_CHARS {
            return Err(invalid(
                "reason",
                format!("1 to {} characters", limits::MAX_REPORT_CHARS),
            ));
        }
        Ok(())
    }
}

/// `PATCH …/reports/{report_id}`: closes a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct HandleReport {
    /// `resolved` (something was done) or `dismissed`.
    pub status: String,
    /// What was done, e.g. "message deleted, member timed out for 1 h" (at most 512).
    #[serde(default)]
    pub action: String,
}

impl Validate for HandleReport {
    fn validate(&self) -> Result<(), Invalid> {
        if !matches!(self.status.as_str(), "resolved" | "dismissed") {
            return Err(invalid("status", "resolved or dismissed"));
        }
        limits::reason(Some(&self.action)).map_err(|_| invalid("action", "at most 512 characters"))
    }
}

/// A report as moderators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Report {
    pub id: Id,
    /// Absent: sent to the instance admins.
    pub guild_id: Option<Id>,
    pub reporter_id: Id,
    pub user_id: Id,
    pub channel_id: Option<Id>,
    pub message_id: Option<Id>,
    /// The message's content when it was reported (kept even if the message is deleted).
    pub message_content: Option<String>,
    pub reason: String,
    /// `open`, `resolved` or `dismissed`.
    pub status: String,
    pub action: Option<String>,
    pub handled_by: Option<Id>,
    pub handled_at: Option<i64>,
    pub created_at: i64,
}

/// `?status=open&before=&limit=`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct ReportsQuery {
    /// `open` (the default), `resolved`, `dismissed` or `all`.
    pub status: Option<String>,
    pub before: Option<Id>,
    pub limit: Option<u32>,
}

impl Validate for ReportsQuery {
    fn validate(&self) -> Result<(), Invalid> {
        if let Some(s) = &self.status
            && !matches!(s.as_str(), "open" | "resolved" | "dismissed" | "all")
        {
            return Err(invalid("status", "open, resolved, dismissed or all"));
        }
        limits::page_limit(self.limit).map(|_| ())
    }
}

/// `POST /admin/setup`: the one-time token printed by a relay that has no admin yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClaimSetup {
    pub token: String,
}

impl Validate for ClaimSetup {
    fn validate(&self) -> Result<(), Invalid> {
        if self.token.is_empty() || self.token.len() > 128 {
            return Err(invalid("token", "1 to 128 characters"));
        }
        Ok(())
    }
}

/// `POST /voice/channels/{channel_id}/join` (also renews: call again before the grant ends).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JoinVoice {
    #[serde(default)]
    pub self_mute: bool,
    #[serde(default)]
    pub self_deaf: bool,
    /// `node` (the default) or `browser`.
    pub client: Option<String>,
}

impl Validate for JoinVoice {
    fn validate(&self) -> Result<(), Invalid> {
        match self.client.as_deref() {
            None | Some("node" | "browser") => Ok(()),
            Some(_) => Err(invalid("client", "node or browser")),
        }
    }
}

/// `PATCH /voice/channels/{channel_id}/state`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateVoiceState {
    pub self_mute: Option<bool>,
    pub self_deaf: Option<bool>,
    /// Sharing a screen or camera (needs the speak permission and no server mute).
    #[serde(default)]
    pub self_video: Option<bool>,
}

impl Validate for UpdateVoiceState {
    fn validate(&self) -> Result<(), Invalid> {
        if self.self_mute.is_none() && self.self_deaf.is_none() && self.self_video.is_none() {
            return Err(invalid("self_mute", "nothing to update"));
        }
        Ok(())
    }
}

/// `POST /voice/channels/{channel_id}/sfu`: an empty body asks for audio only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SfuOfferRequest {
    /// Also offer a video upstream (screen share or camera) and a video slot for watching.
    #[serde(default)]
    pub video: bool,
}

impl Validate for SfuOfferRequest {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// `POST /voice/channels/{channel_id}/sfu/watch`: whose screen or camera to receive on the
/// caller's video slot (null: nobody).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WatchVideo {
    pub user_id: Option<Id>,
}

impl Validate for WatchVideo {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// `PATCH /guilds/{guild_id}/voice-states/{user_id}` (mute_members).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServerMute {
    pub server_mute: bool,
}

impl Validate for ServerMute {
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// The answer to a join: the signed grant, the caller's state, everyone in the channel, and
/// whether the channel runs as a mesh or through the SFU.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct VoiceJoined {
    pub grant: crate::signed::VoiceGrant,
    pub state: crate::model::VoiceState,
    pub participants: Vec<crate::model::VoiceState>,
    /// `mesh` or `sfu`.
    pub mode: String,
    pub mesh_size: u32,
}
