//! Members, their roles, kicks and bans.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{CreateBan, ErrorBody, MembersQuery};
use concord_proto::gateway::{GuildDeleted, MemberRemoved};
use concord_proto::limits;
use concord_proto::model::{Ban, Member};
use concord_proto::{Id, Permissions};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use super::moderation::audit_guild;
use crate::app::{App, now_ms};
use crate::auth::Caller;

/// Removes a membership and tells everyone concerned (leave, kick and ban share this).
pub async fn remove_member(app: &App, guild_id: Id, user_id: Id) -> ApiResult<()> {
    let member = app.store.member(guild_id, user_id).await?;
    app.store.remove_member(guild_id, user_id).await?;
    after_removal(app, guild_id, user_id, member);
    Ok(())
}

fn after_removal(app: &App, guild_id: Id, user_id: Id, member: Option<Member>) {
    app.perms.invalidate_member(guild_id, user_id);
    app.hub.leave_guild(user_id, guild_id);
    app.hub
        .to_users([user_id], "guild_delete", &GuildDeleted { id: guild_id });
    if let Some(member) = member {
        app.hub.to_guild(
            guild_id,
            "member_remove",
            &MemberRemoved {
                guild_id,
                user: member.user,
            },
        );
    }
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/members", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), MembersQuery),
    responses((status = 200, body = Vec<Member>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_members(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<MembersQuery>,
) -> ApiResult<Json<Vec<Member>>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    Ok(Json(
        app.store
            .members(guild_id, q.after, limits::page_limit(q.limit)?)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/members/{user_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)),
    responses((status = 200, body = Member), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_member(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
) -> ApiResult<Json<Member>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    Ok(Json(
        app.store
            .member(guild_id, user_id)
            .await?
            .ok_or(ApiError::NotFound("member"))?,
    ))
}

/// Moderation of `target` by `caller`: never the owner, never yourself.
pub fn check_target(owner: Id, caller: Id, target: Id) -> ApiResult<()> {
    if target == owner {
        return Err(ApiError::Forbidden(
            "target_is_owner",
            "the owner cannot be moderated",
        ));
    }
    if target == caller {
        return Err(ApiError::BadRequest(
            "target_is_self",
            "use DELETE /users/@me/guilds/{guild_id} to leave".into(),
        ));
    }
    Ok(())
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/members/{user_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn kick(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::KICK_MEMBERS)
        .await?;
    check_target(snapshot.guild.owner_id, caller.user_id, user_id)?;
    app.perms
        .require_outrank(&snapshot, caller.user_id, user_id)
        .await?;
    if app.store.member(guild_id, user_id).await?.is_none() {
        return Err(ApiError::NotFound("member"));
    }
    remove_member(&app, guild_id, user_id).await?;
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "member_kick",
        Some(user_id),
        String::new(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn change_role(
    app: &App,
    caller: &Caller,
    guild_id: Id,
    user_id: Id,
    role_id: Id,
    add: bool,
) -> ApiResult<()> {
    let (snapshot, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_ROLES)
        .await?;
    let role = snapshot
        .roles
        .iter()
        .find(|r| r.id == role_id)
        .ok_or(ApiError::NotFound("role"))?;
    if role_id == guild_id {
        return Err(ApiError::BadRequest(
            "everyone_role",
            "everyone holds @everyone".into(),
        ));
    }
    app.perms
        .require_above(&snapshot, caller.user_id, role.position)
        .await?;
    if !perms.contains(Permissions::ADMINISTRATOR) && !perms.contains(role.permissions) {
        return Err(ApiError::Forbidden(
            "permission_escalation",
            "you cannot hand out a role stronger than yours",
        ));
    }
    if app.store.member(guild_id, user_id).await?.is_none() {
        return Err(ApiError::NotFound("member"));
    }
    if add {
        app.store
            .add_member_role(guild_id, user_id, role_id)
            .await?;
    } else {
        app.store
            .remove_member_role(guild_id, user_id, role_id)
            .await?;
    }
    app.perms.invalidate_member(guild_id, user_id);
    if let Some(member) = app.store.member(guild_id, user_id).await? {
        app.hub.to_guild(guild_id, "member_update", &member);
    }
    let action = if add {
        "member_role_add"
    } else {
        "member_role_remove"
    };
    let detail = format!("role {} ({role_id})", role.name);
    audit_guild(app, guild_id, caller.user_id, action, Some(user_id), detail).await?;
    Ok(())
}

#[utoipa::path(put, path = "/api/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path), ("role_id" = Id, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn add_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id, role_id)): PathParams<(Id, Id, Id)>,
) -> ApiResult<StatusCode> {
    change_role(&app, &caller, guild_id, user_id, role_id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/members/{user_id}/roles/{role_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path), ("role_id" = Id, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id, role_id)): PathParams<(Id, Id, Id)>,
) -> ApiResult<StatusCode> {
    change_role(&app, &caller, guild_id, user_id, role_id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/bans", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 200, body = Vec<Ban>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_bans(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<Json<Vec<Ban>>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::BAN_MEMBERS)
        .await?;
    Ok(Json(app.store.bans(guild_id).await?))
}

#[utoipa::path(put, path = "/api/v1/guilds/{guild_id}/bans/{user_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)), request_body = CreateBan,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn ban(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<CreateBan>,
) -> ApiResult<StatusCode> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::BAN_MEMBERS)
        .await?;
    check_target(snapshot.guild.owner_id, caller.user_id, user_id)?;
    app.perms
        .require_outrank(&snapshot, caller.user_id, user_id)
        .await?;
    app.store
        .account(user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let member = app.store.member(guild_id, user_id).await?;
    app.store
        .ban(
            guild_id,
            user_id,
            body.reason.as_deref(),
            caller.user_id,
            now_ms(),
        )
        .await?;
    after_removal(&app, guild_id, user_id, member);
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "member_ban",
        Some(user_id),
        body.reason.unwrap_or_default(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/bans/{user_id}", tag = "members", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("user_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn unban(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, user_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::BAN_MEMBERS)
        .await?;
    if !app.store.unban(guild_id, user_id).await? {
        return Err(ApiError::NotFound("ban"));
    }
    audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "member_unban",
        Some(user_id),
        String::new(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
