//! The authorization matrix: every route of the OpenAPI document (read from
//! `concord_relay::api::openapi()`, the same list the router is built from) is called by ten
//! callers, and each call must give the status of the route's row in [`ROWS`]. A route of the
//! document without a row fails the test, and so does a row naming a route the document does
//! not have. Every mismatch is collected and printed at once, as one table.
//!
//! The callers, in the order of a row's columns:
//!
//! | column       | who                                                                       |
//! |--------------|---------------------------------------------------------------------------|
//! | `owner`      | created the guild                                                         |
//! | `admin`      | member holding the "admins" role (ADMINISTRATOR)                          |
//! | `member`     | member holding the "viewers" role, allowed VIEW_CHANNEL on the private channel by a role overwrite |
//! | `no_view`    | plain member without roles: cannot see the private channel              |
//! | `non_member` | registered account that never joined                                      |
//! | `banned`     | joined, then banned by the owner                                          |
//! | `anonymous`  | no `Authorization` header                                                 |
//! | `expired`    | a correctly signed token of the member's session whose `exp` is past     |
//! | `revoked`    | the member logged in a second time, then logged that session out          |
//! | `forged`     | a token claiming to be the owner, signed with a key the relay never had   |
//!
//! Path parameters come from a fixture built through the API (see [`Fixture`]). A caller
//! expected to succeed with a mutating method (POST/PUT/PATCH/DELETE) gets a fixture of its
//! own, so its success cannot change what the next caller meets; callers expected to be
//! refused, and every caller of a GET, share one fixture per route. The accounts are
//! registered once and join each new fixture's guild.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use common::client::{Backend, Resp, TestRelay, TestUser, login, rand_suffix, random_key, send};
use concord_proto::signed::{self, DeviceCertificate};
use concord_proto::{Id, Permissions};
use concord_relay::auth::Caller;
use ed25519_dalek::SigningKey;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Owner,
    Admin,
    Member,
    NoView,
    NonMember,
    Banned,
    Anonymous,
    Expired,
    Revoked,
    Forged,
}

/// The column order of [`ROWS`].
const CALLERS: [Who; 10] = [
    Who::Owner,
    Who::Admin,
    Who::Member,
    Who::NoView,
    Who::NonMember,
    Who::Banned,
    Who::Anonymous,
    Who::Expired,
    Who::Revoked,
    Who::Forged,
];

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Owner => "owner",
            Who::Admin => "admin",
            Who::Member => "member",
            Who::NoView => "no_view",
            Who::NonMember => "non_member",
            Who::Banned => "banned",
            Who::Anonymous => "anonymous",
            Who::Expired => "expired",
            Who::Revoked => "revoked",
            Who::Forged => "forged",
        }
    }

    /// The error code a refused token must give (so a 401 is a 401 for the right reason).
    fn unauthorized_code(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => Some("unauthorized"),
            Who::Expired => Some("token_expired"),
            Who::Revoked => Some("session_revoked"),
            Who::Forged => Some("invalid_token"),
            _ => None,
        }
    }
}

/// (method, path template as in the OpenAPI document, expected status per caller).
type Row = (&'static str, &'static str, [u16; 10]);

/// The matrix. Columns: owner, admin, member, no_view, non_member, banned | anonymous,
/// expired, revoked, forged. Every authenticated route gives 401 to the last four; 403 means
/// "authenticated but not allowed" (not a member, banned, missing permission, not the
/// author/owner), as Discord answers 403 Missing Access / Missing Permissions.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    //                                                                  owner admin memb  nview nonm  bann  anon  exp   rev   forg
    // Operational routes ignore credentials, even broken ones.
    ("GET",    "/healthz",                                               [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",    "/readyz",                                                [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",    "/metrics",                                               [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",    "/api/v1/openapi.json",                                   [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("GET",    "/.well-known/concord",                                   [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    // The gateway authenticates in its first frame (identify/resume), not in the upgrade
    // request; a plain GET without `Upgrade: websocket` is a 400 `websocket_required` for all.
    ("GET",    "/api/v1/gateway",                                        [400,  400,  400,  400,  400,  400,  400,  400,  400,  400]),
    // Auth routes take no access token: each caller sends a valid request of its own (a
    // challenge for a known device, a signed login, a fresh session's refresh token) with
    // its Authorization header, which must neither help nor hurt.
    ("POST",   "/api/v1/auth/challenge",                                 [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("POST",   "/api/v1/auth/login",                                     [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("POST",   "/api/v1/auth/refresh",                                   [200,  200,  200,  200,  200,  200,  200,  200,  200,  200]),
    ("POST",   "/api/v1/auth/logout",                                    [204,  204,  204,  204,  204,  204,  204,  204,  204,  204]),
    // The caller's own account: any valid token.
    ("GET",    "/api/v1/users/@me",                                      [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // Any account may look up any user's public profile (as on Discord); user_id = target.
    ("GET",    "/api/v1/users/{user_id}",                                [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    ("GET",    "/api/v1/users/@me/devices",                              [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // A certificate signed by the caller's own account key (for the token-less callers: the
    // account their token names, the forged one naming the owner).
    ("POST",   "/api/v1/users/@me/devices",                              [201,  201,  201,  201,  201,  201,  401,  401,  401,  401]),
    // device_key = a second device registered for that same account just before the call
    // (never the device of the session in use, so no caller logs itself out).
    ("DELETE", "/api/v1/users/@me/devices/{device_key}",                 [204,  204,  204,  204,  204,  204,  401,  401,  401,  401]),
    ("GET",    "/api/v1/users/@me/guilds",                               [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // Leaving: the owner must delete the guild instead (400 owner_cannot_leave); strangers
    // and the banned are not members (403).
    ("DELETE", "/api/v1/users/@me/guilds/{guild_id}",                    [400,  204,  204,  204,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/users/@me/dms",                                  [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // A DM with the target needs a guild in common: the non-member and the banned have none.
    ("POST",   "/api/v1/users/@me/dms",                                  [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/users/@me/read-states",                          [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    ("GET",    "/api/v1/voice/ice-servers",                              [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // channel_id = the private TEXT channel: those who see it get 400 not_a_voice_channel,
    // the others 403 (tests/voice.rs covers joining a voice channel). Leaving or changing a
    // state needs being in the channel: 404 for everyone here.
    ("POST",   "/api/v1/voice/channels/{channel_id}/join",               [400,  400,  400,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/voice/channels/{channel_id}/leave",              [404,  404,  404,  404,  404,  404,  401,  401,  401,  401]),
    ("PATCH",  "/api/v1/voice/channels/{channel_id}/state",              [404,  404,  404,  404,  404,  404,  401,  401,  401,  401]),
    ("GET",    "/api/v1/voice/channels/{channel_id}",                    [400,  400,  400,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/voice/channels/{channel_id}/sfu/stats",          [400,  400,  400,  403,  403,  403,  401,  401,  401,  401]),
    // MUTE_MEMBERS; the target is in no voice channel (404 for those allowed to ask).
    ("PATCH",  "/api/v1/guilds/{guild_id}/voice-states/{user_id}",       [404,  404,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/voice/channels/{channel_id}/sfu",                [404,  404,  404,  404,  404,  404,  401,  401,  401,  401]),
    ("POST",   "/api/v1/voice/channels/{channel_id}/sfu/answer",         [404,  404,  404,  404,  404,  404,  401,  401,  401,  401]),
    ("POST",   "/api/v1/voice/channels/{channel_id}/sfu/watch",          [404,  404,  404,  404,  404,  404,  401,  401,  401,  401]),
    // Anyone with an account may create a guild.
    ("POST",   "/api/v1/guilds",                                         [201,  201,  201,  201,  201,  201,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}",                              [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    // MANAGE_GUILD.
    ("PATCH",  "/api/v1/guilds/{guild_id}",                              [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Only the owner deletes a guild, administrators included (as on Discord).
    ("DELETE", "/api/v1/guilds/{guild_id}",                              [204,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Anyone signed in exports their own data.
    ("GET",    "/api/v1/users/@me/export",                               [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    // Instance administration: none of these callers is an instance admin.
    ("GET",    "/api/v1/admin/stats",                                    [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/users",                                    [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/users/{user_id}",                          [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/admin/users/{user_id}/suspend",                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/admin/users/{user_id}/suspend",                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/admin/users/{user_id}/sessions/revoke",          [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/audit",                                    [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/admin/users/{user_id}",                          [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/users/{user_id}/devices",                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // device_key = a second device of the caller's own account, prepared as for the user route.
    ("DELETE", "/api/v1/admin/users/{user_id}/devices/{device_key}",     [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/invites",                                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/admin/invites",                                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/admin/invites/{code}",                           [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/admin/guilds/{guild_id}",                        [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/admin/reports",                                  [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // report_id = an open report to the instance admins, made just before the call.
    ("PATCH",  "/api/v1/admin/reports/{report_id}",                      [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // The relay has no admin yet, so the claim is checked, and the matrix's token is wrong.
    ("POST",   "/api/v1/admin/setup",                                    [403,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Anyone signed in reports a user to the instance admins.
    ("POST",   "/api/v1/reports",                                        [201,  201,  201,  201,  201,  201,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}/channels",                     [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    // MANAGE_CHANNELS.
    ("POST",   "/api/v1/guilds/{guild_id}/channels",                     [201,  201,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}/roles",                        [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    // MANAGE_ROLES; role_id = "extra", the lowest role, so even a role hierarchy would allow it.
    ("POST",   "/api/v1/guilds/{guild_id}/roles",                        [201,  201,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("PATCH",  "/api/v1/guilds/{guild_id}/roles/{role_id}",              [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/guilds/{guild_id}/roles/{role_id}",              [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Listing invites needs MANAGE_GUILD; creating them CREATE_INVITES (an @everyone default).
    ("GET",    "/api/v1/guilds/{guild_id}/invites",                      [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/guilds/{guild_id}/invites",                      [201,  201,  201,  201,  403,  403,  401,  401,  401,  401]),
    // code = the owner's invite: its inviter or MANAGE_GUILD may revoke it.
    ("DELETE", "/api/v1/guilds/{guild_id}/invites/{code}",               [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Any member may search (results are filtered to the channels they can read).
    ("GET",    "/api/v1/guilds/{guild_id}/search",                       [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}/members",                      [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}/members/{user_id}",            [200,  200,  200,  200,  403,  403,  401,  401,  401,  401]),
    // Kick the target: KICK_MEMBERS.
    ("DELETE", "/api/v1/guilds/{guild_id}/members/{user_id}",            [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Give / take the "extra" role (no permissions) to / from the target: MANAGE_ROLES.
    ("PUT",    "/api/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", [204, 204, 403, 403, 403, 403, 401, 401, 401, 401]),
    ("DELETE", "/api/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", [204, 204, 403, 403, 403, 403, 401, 401, 401, 401]),
    // BAN_MEMBERS. PUT bans the target; DELETE lifts the ban of a user banned by the fixture.
    ("GET",    "/api/v1/guilds/{guild_id}/bans",                         [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("PUT",    "/api/v1/guilds/{guild_id}/bans/{user_id}",               [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/guilds/{guild_id}/bans/{user_id}",               [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // VIEW_AUDIT_LOG.
    ("GET",    "/api/v1/guilds/{guild_id}/audit-log",                    [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    // MODERATE_MEMBERS: time the target out, or end it early.
    ("PUT",    "/api/v1/guilds/{guild_id}/members/{user_id}/timeout",    [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/guilds/{guild_id}/members/{user_id}/timeout",    [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // MANAGE_MESSAGES: the target's messages of the last hour.
    ("POST",   "/api/v1/guilds/{guild_id}/members/{user_id}/messages/bulk-delete", [200, 200, 403, 403, 403, 403, 401, 401, 401, 401]),
    // Any member reports the target to the guild's moderators; MODERATE_MEMBERS reads and
    // closes reports (report_id = an open report of the guild, made just before the call).
    ("POST",   "/api/v1/guilds/{guild_id}/reports",                      [201,  201,  201,  201,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/guilds/{guild_id}/reports",                      [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("PATCH",  "/api/v1/guilds/{guild_id}/reports/{report_id}",          [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    // An invite preview is for anyone with an account (the banned too, as on Discord);
    // accepting is refused to the banned only (members get their guild back, 200).
    ("GET",    "/api/v1/invites/{code}",                                 [200,  200,  200,  200,  200,  200,  401,  401,  401,  401]),
    ("POST",   "/api/v1/invites/{code}/accept",                          [200,  200,  200,  200,  200,  403,  401,  401,  401,  401]),
    // channel_id = the PRIVATE channel "staff": the owner and admin see everything, the member
    // through the "viewers" overwrite; no_view, non-members and the banned see nothing (403).
    ("GET",    "/api/v1/channels/{channel_id}",                          [200,  200,  200,  403,  403,  403,  401,  401,  401,  401]),
    // MANAGE_CHANNELS.
    ("PATCH",  "/api/v1/channels/{channel_id}",                          [200,  200,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/channels/{channel_id}",                          [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Overwrites need MANAGE_ROLES in the channel; target_id = the "viewers" role.
    ("PUT",    "/api/v1/channels/{channel_id}/permissions/{target_id}",  [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    ("DELETE", "/api/v1/channels/{channel_id}/permissions/{target_id}",  [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // SEND_MESSAGES / VIEW_CHANNEL / READ_HISTORY in the private channel.
    ("POST",   "/api/v1/channels/{channel_id}/typing",                   [204,  204,  204,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/channels/{channel_id}/ack",                      [204,  204,  204,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/channels/{channel_id}/events",                   [200,  200,  200,  403,  403,  403,  401,  401,  401,  401]),
    ("GET",    "/api/v1/channels/{channel_id}/messages",                 [200,  200,  200,  403,  403,  403,  401,  401,  401,  401]),
    ("POST",   "/api/v1/channels/{channel_id}/messages",                 [201,  201,  201,  403,  403,  403,  401,  401,  401,  401]),
    // message_id = a message of the owner in the private channel.
    ("GET",    "/api/v1/channels/{channel_id}/messages/{message_id}",    [200,  200,  200,  403,  403,  403,  401,  401,  401,  401]),
    // Only the author edits a message, administrators included (as on Discord).
    ("PATCH",  "/api/v1/channels/{channel_id}/messages/{message_id}",    [200,  403,  403,  403,  403,  403,  401,  401,  401,  401]),
    // The author, or MANAGE_MESSAGES.
    ("DELETE", "/api/v1/channels/{channel_id}/messages/{message_id}",    [204,  204,  403,  403,  403,  403,  401,  401,  401,  401]),
    // Adding needs ADD_REACTIONS + READ_HISTORY; removing one's own (added by the fixture for
    // the owner, admin and member) needs VIEW_CHANNEL.
    ("PUT",    "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", [204, 204, 204, 403, 403, 403, 401, 401, 401, 401]),
    ("DELETE", "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}", [204, 204, 204, 403, 403, 403, 401, 401, 401, 401]),
    // Deleting one's own account; last, because it does delete the callers' accounts. The
    // owner owns guilds and must hand them over first (409 owns_guilds).
    ("DELETE", "/api/v1/users/@me",                                      [409,  204,  204,  204,  204,  204,  401,  401,  401,  401]),
];

/// 👍, URL-encoded.
const EMOJI: &str = "%F0%9F%91%8D";

fn id(v: &Value) -> Id {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not an id: {v} ({e})"))
}

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn key_string(key: &SigningKey) -> String {
    signed::public_key_string(&key.verifying_key())
}

/// The accounts (registered once) and the tokens of the four token-level callers.
struct Accounts {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    no_view: TestUser,
    non_member: TestUser,
    banned: TestUser,
    /// A plain member of every fixture, none of the callers: kicked, banned, given roles,
    /// looked up and messaged.
    target: TestUser,
    /// Joins and is banned in every fixture: whom DELETE /bans/{user_id} unbans.
    ban_target: TestUser,
    /// Logs in afresh for the auth routes (never a member of anything).
    auth_user: TestUser,
    expired: String,
    revoked: String,
    forged: String,
}

impl Accounts {
    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Anonymous => None,
            Who::Expired => Some(&self.expired),
            Who::Revoked => Some(&self.revoked),
            Who::Forged => Some(&self.forged),
            _ => Some(&self.user(who).access),
        }
    }

    /// The account a caller's token names: the member for the expired and revoked tokens
    /// (and, arbitrarily, for anonymous), the owner for the forged one.
    fn user(&self, who: Who) -> &TestUser {
        match who {
            Who::Owner | Who::Forged => &self.owner,
            Who::Admin => &self.admin,
            Who::Member | Who::Anonymous | Who::Expired | Who::Revoked => &self.member,
            Who::NoView => &self.no_view,
            Who::NonMember => &self.non_member,
            Who::Banned => &self.banned,
        }
    }
}

async fn setup(relay: &TestRelay) -> Accounts {
    let tag = rand_suffix() % 1_000_000;
    let name = |n: &str| format!("{n}_{tag}");
    let owner = relay.register(&name("owner")).await;
    let admin = relay.register(&name("admin")).await;
    let member = relay.register(&name("member")).await;
    let no_view = relay.register(&name("no_view")).await;
    let non_member = relay.register(&name("non_member")).await;
    let banned = relay.register(&name("banned")).await;
    let target = relay.register(&name("target")).await;
    let ban_target = relay.register(&name("ban_target")).await;
    let auth_user = relay.register(&name("auth_user")).await;

    // Expired: the member's own session, correctly signed, an hour past `exp`.
    let now = unix_secs();
    let expired = relay.server().app().tokens.issue_access_with_expiry(
        &Caller {
            user_id: member.id,
            session_id: member.session_id,
            device_key: key_string(&member.device),
        },
        now - 7200,
        now - 3600,
    );

    // Revoked: a second session of the member, logged out.
    let (status, second) = login(&relay.http, &relay.url, &member.device, None, None).await;
    assert_eq!(status, 200, "second login of the member: {second}");
    let revoked = second["access_token"].as_str().unwrap().to_owned();
    let refresh = second["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        send(
            &relay.http,
            Method::GET,
            format!("{}/api/v1/users/@me", relay.url),
            Some(&revoked),
            None
        )
        .await
        .status,
        200,
        "the second session works before logout"
    );
    send(
        &relay.http,
        Method::POST,
        format!("{}/api/v1/auth/logout", relay.url),
        None,
        Some(json!({ "refresh_token": refresh })),
    )
    .await
    .ok(204);

    // Forged: the relay's key id and well-formed claims naming the owner, signed with a
    // secret the relay never had.
    let kid = jsonwebtoken::decode_header(&owner.access).unwrap().kid;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = kid;
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).unwrap();
    let forged = jsonwebtoken::encode(
        &header,
        &json!({
            "sub": owner.id.to_string(),
            "sid": owner.session_id.to_string(),
            "dev": key_string(&owner.device),
            "iat": now,
            "exp": now + 900,
        }),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();

    Accounts {
        owner,
        admin,
        member,
        no_view,
        non_member,
        banned,
        target,
        ban_target,
        auth_user,
        expired,
        revoked,
        forged,
    }
}

/// One guild built through the API, as every route's path parameters need it.
struct Fixture {
    guild: Id,
    /// The private text channel "staff": @everyone denied VIEW_CHANNEL, "viewers" allowed it.
    channel: Id,
    /// Written by the owner in `channel`.
    message: Id,
    /// Roles in creation (= position) order: "extra" (no permissions, lowest), "viewers",
    /// "admins" (ADMINISTRATOR).
    extra_role: Id,
    viewers_role: Id,
    /// Made by the owner, unlimited; everyone joined with it.
    invite: String,
}

async fn fixture(acc: &Accounts) -> Fixture {
    let owner = &acc.owner;
    let (guild, _) = owner.create_guild("matrix").await;
    let mut roles = Vec::new();
    for (name, perms) in [
        ("extra", Permissions::NONE),
        ("viewers", Permissions::NONE),
        ("admins", Permissions::ADMINISTRATOR),
    ] {
        let role = owner
            .post(
                &format!("/api/v1/guilds/{guild}/roles"),
                json!({ "name": name, "permissions": perms }),
            )
            .await
            .ok(201);
        roles.push(id(&role["id"]));
    }
    let (extra_role, viewers_role, admin_role) = (roles[0], roles[1], roles[2]);
    let channel = owner
        .post(
            &format!("/api/v1/guilds/{guild}/channels"),
            json!({ "name": "staff", "kind": "text", "private": true }),
        )
        .await
        .ok(201);
    let channel = id(&channel["id"]);
    owner
        .put(
            &format!("/api/v1/channels/{channel}/permissions/{viewers_role}"),
            Some(json!({ "kind": "role", "allow": Permissions::VIEW_CHANNEL, "deny": 0 })),
        )
        .await
        .ok(204);
    let invite = owner.invite(guild).await;
    for user in [
        &acc.admin,
        &acc.member,
        &acc.no_view,
        &acc.banned,
        &acc.target,
        &acc.ban_target,
    ] {
        user.join(&invite).await;
    }
    for (user, role) in [(&acc.admin, admin_role), (&acc.member, viewers_role)] {
        owner
            .put(
                &format!("/api/v1/guilds/{guild}/members/{}/roles/{role}", user.id),
                None,
            )
            .await
            .ok(204);
    }
    for user in [&acc.banned, &acc.ban_target] {
        owner
            .put(
                &format!("/api/v1/guilds/{guild}/bans/{}", user.id),
                Some(json!({ "reason": "matrix fixture" })),
            )
            .await
            .ok(204);
    }
    let message = id(&owner.say(channel, "the owner's words").await["id"]);
    Fixture {
        guild,
        channel,
        message,
        extra_role,
        viewers_role,
        invite,
    }
}

/// State a route needs beyond the common fixture, so that a success really does something.
async fn prepare_fixture(method: &str, template: &str, fx: &Fixture, acc: &Accounts) {
    match (method, template) {
        ("DELETE", "/api/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}") => {
            acc.owner
                .put(
                    &format!(
                        "/api/v1/guilds/{}/members/{}/roles/{}",
                        fx.guild, acc.target.id, fx.extra_role
                    ),
                    None,
                )
                .await
                .ok(204);
        }
        ("DELETE", "/api/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}") => {
            for user in [&acc.owner, &acc.admin, &acc.member] {
                user.put(
                    &format!(
                        "/api/v1/channels/{}/messages/{}/reactions/{EMOJI}",
                        fx.channel, fx.message
                    ),
                    None,
                )
                .await
                .ok(204);
            }
        }
        _ => {}
    }
}

/// Whether a route's request is built from a guild fixture.
fn uses_fixture(method: &str, template: &str) -> bool {
    (template.contains('{') && !template.contains("{device_key}"))
        || (method == "POST" && template == "/api/v1/users/@me/dms")
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

struct Request {
    path: String,
    body: Option<Value>,
}

/// A certificate for a new device of `user`'s account.
fn new_device(user: &TestUser) -> (SigningKey, DeviceCertificate) {
    let device = random_key();
    let cert = DeviceCertificate::sign(
        &user.account,
        &device.verifying_key(),
        "matrix device",
        1_700_000_000,
    );
    (device, cert)
}

/// A new session of the auth user: (access, refresh).
async fn fresh_session(relay: &TestRelay, acc: &Accounts) -> (String, String) {
    let (status, body) = login(&relay.http, &relay.url, &acc.auth_user.device, None, None).await;
    assert_eq!(status, 200, "auth user login: {body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// The value of a path parameter; `Err` names what the fixture cannot provide.
fn param(
    name: &str,
    method: &str,
    template: &str,
    fx: Option<&Fixture>,
    acc: &Accounts,
    device_key: Option<&str>,
) -> Result<String, String> {
    let fx = || fx.ok_or_else(|| format!("{{{name}}} needs a fixture (see uses_fixture)"));
    Ok(match name {
        "guild_id" => fx()?.guild.to_string(),
        "channel_id" => fx()?.channel.to_string(),
        "message_id" => fx()?.message.to_string(),
        "role_id" => fx()?.extra_role.to_string(),
        "target_id" => fx()?.viewers_role.to_string(),
        "code" => fx()?.invite.clone(),
        "user_id"
            if method == "DELETE" && template == "/api/v1/guilds/{guild_id}/bans/{user_id}" =>
        {
            acc.ban_target.id.to_string()
        }
        "user_id" => acc.target.id.to_string(),
        "emoji" => EMOJI.to_owned(),
        "device_key" | "report_id" => device_key
            .ok_or(format!("{{{name}}} was not prepared"))?
            .to_owned(),
        other => return Err(format!("no fixture value for path parameter {{{other}}}")),
    })
}

fn fill(
    method: &str,
    template: &str,
    fx: Option<&Fixture>,
    acc: &Accounts,
    device_key: Option<&str>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = start + rest[start..].find('}').ok_or("unclosed {")?;
        out.push_str(&rest[..start]);
        out.push_str(&param(
            &rest[start + 1..end],
            method,
            template,
            fx,
            acc,
            device_key,
        )?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The request `who` sends for a route: a valid one, so that the status reflects
/// authorization rather than validation. May make preparatory calls of its own.
async fn request(
    relay: &TestRelay,
    acc: &Accounts,
    fx: Option<&Fixture>,
    method: &str,
    template: &str,
    who: Who,
) -> Result<Request, String> {
    let mut device_key = None;
    let mut query = "";
    let body = match (method, template) {
        ("POST", "/api/v1/auth/challenge") => {
            Some(json!({ "device_key": key_string(&acc.auth_user.device) }))
        }
        ("POST", "/api/v1/auth/login") => {
            let device = &acc.auth_user.device;
            let challenge = send(
                &relay.http,
                Method::POST,
                format!("{}/api/v1/auth/challenge", relay.url),
                None,
                Some(json!({ "device_key": key_string(device) })),
            )
            .await
            .ok(200);
            let audience = challenge["audience"].as_str().unwrap();
            let challenge = challenge["challenge"].as_str().unwrap();
            Some(json!({
                "device_key": key_string(device),
                "challenge": challenge,
                "signature": signed::sign_auth(device, audience, challenge),
            }))
        }
        ("POST", "/api/v1/auth/refresh" | "/api/v1/auth/logout") => {
            let (_, refresh) = fresh_session(relay, acc).await;
            Some(json!({ "refresh_token": refresh }))
        }
        ("POST", "/api/v1/users/@me/devices") => {
            let (_, cert) = new_device(acc.user(who));
            Some(json!({ "certificate": cert }))
        }
        (
            "DELETE",
            "/api/v1/users/@me/devices/{device_key}"
            | "/api/v1/admin/users/{user_id}/devices/{device_key}",
        ) => {
            let owner_of_device = acc.user(who);
            let (device, cert) = new_device(owner_of_device);
            owner_of_device
                .post("/api/v1/users/@me/devices", json!({ "certificate": cert }))
                .await
                .ok(201);
            device_key = Some(key_string(&device));
            None
        }
        ("POST", "/api/v1/users/@me/dms") => Some(json!({ "recipient": acc.target.id })),
        ("POST", "/api/v1/reports" | "/api/v1/guilds/{guild_id}/reports") => {
            Some(json!({ "user_id": acc.target.id, "reason": "matrix report" }))
        }
        (
            "PATCH",
            "/api/v1/guilds/{guild_id}/reports/{report_id}" | "/api/v1/admin/reports/{report_id}",
        ) => {
            let path = match fx {
                Some(fx) if template.starts_with("/api/v1/guilds") => {
                    format!("/api/v1/guilds/{}/reports", fx.guild)
                }
                _ => "/api/v1/reports".to_owned(),
            };
            let report = acc
                .member
                .post(
                    &path,
                    json!({ "user_id": acc.target.id, "reason": "to close" }),
                )
                .await
                .ok(201);
            device_key = Some(id(&report["id"]).to_string());
            Some(json!({ "status": "dismissed", "action": "nothing to do" }))
        }
        ("POST", "/api/v1/admin/setup") => Some(json!({ "token": "not-the-token" })),
        ("POST", "/api/v1/voice/channels/{channel_id}/join") => Some(json!({})),
        ("POST", "/api/v1/voice/channels/{channel_id}/sfu/answer") => Some(json!({ "sdp": "v=0" })),
        ("POST", "/api/v1/voice/channels/{channel_id}/sfu/watch") => {
            Some(json!({ "user_id": null }))
        }
        ("PATCH", "/api/v1/voice/channels/{channel_id}/state") => {
            Some(json!({ "self_mute": true }))
        }
        ("PATCH", "/api/v1/guilds/{guild_id}/voice-states/{user_id}") => {
            Some(json!({ "server_mute": true }))
        }
        // Callers other than the owner give up the guilds they made (POST /guilds) first, so
        // the deletion itself is what is checked; the owner keeps its guilds (409).
        ("DELETE", "/api/v1/users/@me")
            if matches!(
                who,
                Who::Admin | Who::Member | Who::NoView | Who::NonMember | Who::Banned
            ) =>
        {
            let user = acc.user(who);
            for guild in user
                .get("/api/v1/users/@me/guilds")
                .await
                .ok(200)
                .as_array()
                .unwrap()
            {
                if id(&guild["owner_id"]) == user.id {
                    user.delete(&format!("/api/v1/guilds/{}", id(&guild["id"])))
                        .await
                        .ok(204);
                }
            }
            None
        }
        ("PUT", "/api/v1/guilds/{guild_id}/members/{user_id}/timeout") => {
            Some(json!({ "duration_secs": 60, "reason": "matrix" }))
        }
        ("POST", "/api/v1/guilds/{guild_id}/members/{user_id}/messages/bulk-delete") => {
            Some(json!({ "within_secs": 3600 }))
        }
        ("POST", "/api/v1/guilds") => Some(json!({ "name": "another guild" })),
        ("PATCH", "/api/v1/guilds/{guild_id}") => Some(json!({ "name": "renamed guild" })),
        ("POST", "/api/v1/guilds/{guild_id}/channels") => {
            Some(json!({ "name": "new-channel", "kind": "text" }))
        }
        ("POST", "/api/v1/guilds/{guild_id}/roles") => {
            Some(json!({ "name": "new role", "permissions": 0 }))
        }
        ("PATCH", "/api/v1/guilds/{guild_id}/roles/{role_id}") => {
            Some(json!({ "name": "renamed role" }))
        }
        ("POST", "/api/v1/guilds/{guild_id}/invites" | "/api/v1/admin/invites") => Some(json!({})),
        ("GET", "/api/v1/guilds/{guild_id}/search") => {
            query = "?q=words";
            None
        }
        ("PUT", "/api/v1/guilds/{guild_id}/bans/{user_id}") => Some(json!({ "reason": "matrix" })),
        ("PATCH", "/api/v1/channels/{channel_id}") => Some(json!({ "topic": "a new topic" })),
        ("PUT", "/api/v1/channels/{channel_id}/permissions/{target_id}") => Some(json!({
            "kind": "role",
            "allow": Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES,
            "deny": 0,
        })),
        ("POST", "/api/v1/channels/{channel_id}/ack") => {
            let fx = fx.ok_or("ack needs a fixture")?;
            Some(json!({ "message_id": fx.message }))
        }
        ("POST", "/api/v1/channels/{channel_id}/messages") => Some(json!({
            "content": "hello from the matrix",
            "nonce": format!("m{}", rand_suffix()),
        })),
        ("PATCH", "/api/v1/channels/{channel_id}/messages/{message_id}") => {
            Some(json!({ "content": "edited words" }))
        }
        _ => None,
    };
    let path = fill(method, template, fx, acc, device_key.as_deref())? + query;
    Ok(Request { path, body })
}

struct Outcome {
    status: u16,
    code: String,
}

fn outcome(resp: &Resp) -> Outcome {
    Outcome {
        status: resp.status,
        // Error bodies only (an invite's `code` is not an error code).
        code: if resp.status >= 400 {
            resp.body["code"].as_str().unwrap_or("").to_owned()
        } else {
            String::new()
        },
    }
}

/// Every (METHOD, path template) of the OpenAPI document.
fn spec_routes() -> BTreeSet<(String, String)> {
    let spec = serde_json::to_value(concord_relay::api::openapi()).expect("spec serialises");
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("spec has paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_against_every_caller() {
    let started = Instant::now();
    let mut problems: Vec<String> = Vec::new();

    let spec = spec_routes();
    let mut rows_seen = BTreeSet::new();
    for (method, template, _) in ROWS {
        let key = (method.to_string(), template.to_string());
        if !rows_seen.insert(key.clone()) {
            problems.push(format!("duplicate row: {method} {template}"));
        }
        if !spec.contains(&key) {
            problems.push(format!(
                "row for a route the OpenAPI document does not have: {method} {template}"
            ));
        }
    }
    for (method, template) in &spec {
        if !rows_seen.contains(&(method.clone(), template.clone())) {
            problems.push(format!("route without a row in ROWS: {method} {template}"));
        }
    }

    let relay = TestRelay::start(Backend::Sqlite).await;
    let acc = setup(&relay).await;

    let mut fixtures = 0;
    // (row, per-caller outcome) for the table.
    let mut results: Vec<(&Row, Vec<Outcome>)> = Vec::new();
    for row @ (method, template, expected) in ROWS {
        if !spec.contains(&(method.to_string(), template.to_string())) {
            continue;
        }
        let needs_fixture = uses_fixture(method, template);
        let mut shared: Option<Fixture> = None;
        let mut outcomes = Vec::new();
        for (i, who) in CALLERS.iter().copied().enumerate() {
            let fresh;
            let fx = if !needs_fixture {
                None
            } else if *method != "GET" && is_success(expected[i]) {
                fresh = fixture(&acc).await;
                prepare_fixture(method, template, &fresh, &acc).await;
                fixtures += 1;
                Some(&fresh)
            } else {
                if shared.is_none() {
                    let fx = fixture(&acc).await;
                    prepare_fixture(method, template, &fx, &acc).await;
                    fixtures += 1;
                    shared = Some(fx);
                }
                shared.as_ref()
            };
            let req = match request(&relay, &acc, fx, method, template, who).await {
                Ok(req) => req,
                Err(e) => {
                    problems.push(format!(
                        "{method} {template}: cannot build the request: {e}"
                    ));
                    outcomes.push(Outcome {
                        status: 0,
                        code: "no request".into(),
                    });
                    continue;
                }
            };
            let resp = send(
                &relay.http,
                method.parse::<Method>().unwrap(),
                format!("{}{}", relay.url, req.path),
                acc.token(who),
                req.body,
            )
            .await;
            outcomes.push(outcome(&resp));
        }
        results.push((row, outcomes));
    }

    // Mismatches: a different status, or a 401 for another reason than the caller's token.
    let mut mismatches = Vec::new();
    let mut table = String::new();
    for ((method, template, expected), outcomes) in &results {
        let mut line = format!("{method:<6} {template:<72}");
        let mut bad = false;
        for ((who, want), got) in CALLERS.iter().zip(expected).zip(outcomes) {
            let wrong_reason = got.status == 401
                && *want == 401
                && who.unauthorized_code().is_some_and(|code| code != got.code);
            if got.status != *want || wrong_reason {
                bad = true;
                mismatches.push(format!(
                    "{method} {template} as {}: expected {want}, got {} {}",
                    who.name(),
                    got.status,
                    got.code
                ));
                let _ = write!(line, " {:>10}", format!("{want}→{}!", got.status));
            } else {
                let _ = write!(line, " {:>10}", got.status);
            }
        }
        if bad {
            table.push_str(&line);
            table.push('\n');
        }
    }

    // CONCORD_MATRIX_VERBOSE=1 prints every cell with its error code.
    if std::env::var_os("CONCORD_MATRIX_VERBOSE").is_some() {
        for ((method, template, _), outcomes) in &results {
            let cells: Vec<String> = CALLERS
                .iter()
                .zip(outcomes)
                .map(|(who, got)| format!("{}={} {}", who.name(), got.status, got.code))
                .collect();
            eprintln!("{method:<6} {template}\n       {}", cells.join(", "));
        }
    }
    eprintln!(
        "authorization matrix: {} spec routes, {} rows, {} fixtures, {:?}",
        spec.len(),
        ROWS.len(),
        fixtures,
        started.elapsed()
    );
    relay.shutdown().await;

    if !mismatches.is_empty() {
        let mut header = format!("{:<6} {:<72}", "", "route");
        for who in CALLERS {
            let _ = write!(header, " {:>10}", who.name());
        }
        problems.push(format!(
            "{} mismatched calls (cells: expected→got!):\n{header}\n{table}\n{}",
            mismatches.len(),
            mismatches.join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "authorization matrix failed:\n{}",
        problems.join("\n")
    );
}
