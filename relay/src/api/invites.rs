//! Looking at and accepting invites.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use concord_proto::Id;
use concord_proto::api::ErrorBody;
use concord_proto::gateway::ReadyGuild;
use concord_proto::model::Invite;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::PathParams;
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::store::InviteRefusal;

#[derive(Serialize, utoipa::ToSchema)]
pub struct InvitePreview {
    pub code: String,
    pub guild_id: Id,
    pub guild_name: String,
    pub member_count: i64,
    pub expires_at: Option<i64>,
}

fn refusal(r: InviteRefusal) -> ApiError {
    match r {
        InviteRefusal::Unknown => ApiError::NotFound("invite"),
        InviteRefusal::Expired => ApiError::Gone("invite_expired", "this invite has expired"),
        InviteRefusal::UsedUp => {
            ApiError::Gone("invite_used_up", "this invite has reached its maximum uses")
        }
        InviteRefusal::Revoked => ApiError::Gone("invite_revoked", "this invite was revoked"),
        InviteRefusal::Banned => ApiError::Forbidden("banned", "you are banned from this guild"),
    }
}

fn usable(invite: &Invite, now: i64) -> Result<(), InviteRefusal> {
    InviteRefusal::check(
        invite.revoked,
        invite.expires_at,
        invite.max_uses,
        invite.uses,
        now,
    )
}

fn check_code(code: &str) -> ApiResult<()> {
    if code.is_empty()
        || code.len() > 32
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::BadRequest(
            "invalid_invite_code",
            "invite codes are up to 32 letters, digits, '-' and '_'".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/invites/{code}", tag = "invites", security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 200, body = InvitePreview), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn preview(
    State(app): State<Arc<App>>,
    _caller: Caller,
    PathParams(code): PathParams<String>,
) -> ApiResult<Json<InvitePreview>> {
    check_code(&code)?;
    let invite = app
        .store
        .invite(&code)
        .await?
        .ok_or(ApiError::NotFound("invite"))?;
    usable(&invite, now_ms()).map_err(refusal)?;
    let guild = app
        .store
        .guild(invite.guild_id)
        .await?
        .ok_or(ApiError::NotFound("invite"))?;
    Ok(Json(InvitePreview {
        code: invite.code,
        guild_id: guild.id,
        guild_name: guild.name,
        member_count: app.store.member_count(guild.id).await?,
        expires_at: invite.expires_at,
    }))
}

#[utoipa::path(post, path = "/api/v1/invites/{code}/accept", tag = "invites", security(("bearer" = [])),
    params(("code" = String, Path)),
    responses((status = 200, body = ReadyGuild), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn accept(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(code): PathParams<String>,
) -> ApiResult<Json<ReadyGuild>> {
    Ok(Json(join_with_invite(&app, &code, caller.user_id).await?))
}

/// Joins `user` to the invite's guild and tells everyone concerned (also used by a new
/// account's first login that carries an invite).
pub async fn join_with_invite(app: &App, code: &str, user: Id) -> ApiResult<ReadyGuild> {
    check_code(code)?;
    let accepted = app
        .store
        .accept_invite(code, user, now_ms())
        .await?
        .map_err(refusal)?;
    let guild_id = accepted.guild.id;
    if accepted.joined {
        app.perms.invalidate_member(guild_id, user);
        app.hub.join_guild(user, guild_id);
        if let Some(member) = app.store.member(guild_id, user).await? {
            app.hub.to_guild(guild_id, "member_add", &member);
        }
    }
    let snapshot = app
        .perms
        .snapshot(guild_id)
        .await?
        .ok_or(ApiError::NotFound("guild"))?;
    let view = super::guilds::guild_view(app, &snapshot, user).await?;
    if accepted.joined {
        app.hub.to_users([user], "guild_create", &view);
    }
    Ok(view)
}

/// What a new account's invite is: to a guild (the account joins it) or to the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignupInvite {
    Guild,
    Instance,
}

/// Whether a code names an invite (a guild's or the instance's) that would let a new account
/// in now.
pub async fn check_usable(app: &App, code: &str) -> ApiResult<SignupInvite> {
    check_code(code)?;
    if let Some(invite) = app.store.invite(code).await? {
        return usable(&invite, now_ms())
            .map(|()| SignupInvite::Guild)
            .map_err(refusal);
    }
    let invite = app
        .store
        .instance_invite(code)
        .await?
        .ok_or(ApiError::NotFound("invite"))?;
    InviteRefusal::check(
        invite.revoked,
        invite.expires_at,
        invite.max_uses,
        invite.uses,
        now_ms(),
    )
    .map(|()| SignupInvite::Instance)
    .map_err(refusal)
}

/// Takes one use of an instance invite for a new account.
pub async fn use_instance_invite(app: &App, code: &str) -> ApiResult<()> {
    app.store
        .use_instance_invite(code, now_ms())
        .await?
        .map_err(refusal)
}
