//! Guilds, their channels, roles, invites and search.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use concord_proto::api::{
    CreateChannel, CreateGuild, CreateInvite, CreateRole, ErrorBody, SearchQuery, SearchResults,
    UpdateGuild, UpdateRole,
};
use concord_proto::gateway::ReadyGuild;
use concord_proto::gateway::{GuildDeleted, RoleDeleted};
use concord_proto::limits::{self, MAX_CHANNELS_PER_GUILD, MAX_ROLES_PER_GUILD};
use concord_proto::model::{Channel, ChannelKind, Guild, Invite, Role};
use concord_proto::permissions::{Overwrite, OverwriteKind};
use concord_proto::{Id, Permissions};

use super::error::{ApiError, ApiResult};
use super::extract::{PathParams, Valid, ValidQuery};
use super::moderation;
use crate::app::{App, now_ms};
use crate::auth::Caller;
use crate::auth::tokens::random_token;
use crate::store::{GuildSnapshot, SearchParams, StoreError};

/// The guild as one member sees it: channels they may view, roles, their roles.
pub async fn guild_view(app: &App, snapshot: &GuildSnapshot, user_id: Id) -> ApiResult<ReadyGuild> {
    let my_roles = app
        .perms
        .member_roles(snapshot.guild.id, user_id)
        .await?
        .map(|m| m.roles.clone())
        .unwrap_or_default();
    let channels = app.perms.visible_channels(snapshot, user_id).await?;
    let mut voice_states: Vec<_> = app.voice.with(|r| {
        channels
            .iter()
            .filter(|c| c.kind == ChannelKind::Voice)
            .flat_map(|c| r.participants(c.id))
            .collect()
    });
    // In a cluster, rooms held by other instances come from the voice directory.
    if let Some(placement) = app.voice.placement.get() {
        match placement.guild_states(snapshot.guild.id).await {
            Ok(entries) => {
                for entry in entries {
                    let visible = channels.iter().any(|c| {
                        c.kind == ChannelKind::Voice && Some(c.id) == entry.state.channel_id
                    });
                    let known = voice_states
                        .iter()
                        .any(|s| s.user_id == entry.state.user_id);
                    if entry.instance != placement.instance && visible && !known {
                        voice_states.push(entry.state);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, guild = %snapshot.guild.id,
                "voice states of other instances unavailable; listing this instance's"),
        }
    }
    Ok(ReadyGuild {
        guild: snapshot.guild.clone(),
        channels,
        roles: snapshot.roles.clone(),
        my_roles,
        voice_states,
    })
}

fn new_channel(app: &App, guild_id: Id, name: &str, kind: ChannelKind, position: i64) -> Channel {
    Channel {
        id: app.next_id(),
        guild_id: Some(guild_id),
        kind,
        name: name.to_owned(),
        topic: None,
        position,
        private: false,
        slowmode_secs: 0,
        overwrites: Vec::new(),
        last_seq: 0,
        recipients: Vec::new(),
    }
}

#[utoipa::path(post, path = "/api/v1/guilds", tag = "guilds", security(("bearer" = [])),
    request_body = CreateGuild,
    responses((status = 201, body = ReadyGuild), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    Valid(body): Valid<CreateGuild>,
) -> ApiResult<(StatusCode, Json<ReadyGuild>)> {
    let id = app.next_id();
    let guild = Guild {
        id,
        name: body.name,
        owner_id: caller.user_id,
        created_at: now_ms(),
    };
    // The @everyone role shares the guild's id.
    let everyone = Role {
        id,
        guild_id: id,
        name: "@everyone".into(),
        permissions: Permissions::DEFAULT_EVERYONE,
        position: 0,
    };
    let channels = [
        new_channel(&app, id, "general", ChannelKind::Text, 0),
        new_channel(&app, id, "General", ChannelKind::Voice, 1),
    ];
    app.store.create_guild(&guild, &everyone, &channels).await?;
    app.hub.join_guild(caller.user_id, id);
    let snapshot = app
        .perms
        .snapshot(id)
        .await?
        .ok_or(ApiError::Internal("guild vanished".into()))?;
    let view = guild_view(&app, &snapshot, caller.user_id).await?;
    app.hub.to_users([caller.user_id], "guild_create", &view);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}", tag = "guilds", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 200, body = ReadyGuild), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<Json<ReadyGuild>> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    Ok(Json(guild_view(&app, &snapshot, caller.user_id).await?))
}

#[utoipa::path(patch, path = "/api/v1/guilds/{guild_id}", tag = "guilds", security(("bearer" = [])),
    params(("guild_id" = Id, Path)), request_body = UpdateGuild,
    responses((status = 200, body = Guild), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    Valid(body): Valid<UpdateGuild>,
) -> ApiResult<Json<Guild>> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_GUILD)
        .await?;
    let mut guild = snapshot.guild.clone();
    if let Some(new_owner) = body.owner_id {
        if guild.owner_id != caller.user_id {
            return Err(ApiError::Forbidden(
                "owner_only",
                "only the owner can hand the guild over",
            ));
        }
        guild = app
            .store
            .transfer_guild(guild_id, new_owner)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => ApiError::NotFound("member"),
                other => other.into(),
            })?;
        moderation::audit_guild(
            &app,
            guild_id,
            caller.user_id,
            "guild_transfer",
            Some(new_owner),
            String::new(),
        )
        .await?;
    }
    if let Some(name) = body.name {
        guild = app.store.rename_guild(guild_id, &name).await?;
        moderation::audit_guild(
            &app,
            guild_id,
            caller.user_id,
            "guild_update",
            None,
            format!("name: {name}"),
        )
        .await?;
    }
    app.perms.invalidate_guild(guild_id);
    app.hub.to_guild(guild_id, "guild_update", &guild);
    Ok(Json(guild))
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}", tag = "guilds", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_guild(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<StatusCode> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    if snapshot.guild.owner_id != caller.user_id {
        return Err(ApiError::Forbidden(
            "owner_only",
            "only the owner can delete a guild",
        ));
    }
    remove_guild(&app, guild_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a guild and tells its members (its owner, or an instance admin, decided).
pub async fn remove_guild(app: &App, guild_id: Id) -> ApiResult<()> {
    app.store
        .delete_guild(guild_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("guild"),
            other => other.into(),
        })?;
    app.hub
        .to_guild(guild_id, "guild_delete", &GuildDeleted { id: guild_id });
    app.hub.forget_guild(guild_id);
    app.perms.forget_guild(guild_id);
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/channels", tag = "channels", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 200, body = Vec<Channel>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_channels(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<Json<Vec<Channel>>> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    Ok(Json(
        app.perms
            .visible_channels(&snapshot, caller.user_id)
            .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/channels", tag = "channels", security(("bearer" = [])),
    params(("guild_id" = Id, Path)), request_body = CreateChannel,
    responses((status = 201, body = Channel), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_channel(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    Valid(body): Valid<CreateChannel>,
) -> ApiResult<(StatusCode, Json<Channel>)> {
    let (snapshot, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_CHANNELS)
        .await?;
    if snapshot.channels.len() >= MAX_CHANNELS_PER_GUILD {
        return Err(ApiError::Conflict(
            "too_many_channels",
            "this guild has the maximum number of channels",
        ));
    }
    let position = snapshot
        .channels
        .iter()
        .map(|c| c.position + 1)
        .max()
        .unwrap_or(0);
    let mut channel = new_channel(&app, guild_id, &body.name, body.kind, position);
    channel.topic = body.topic;
    if body.private {
        channel.private = true;
        channel.overwrites.push(Overwrite {
            target_id: guild_id,
            kind: OverwriteKind::Role,
            allow: Permissions::NONE,
            deny: Permissions::VIEW_CHANNEL,
        });
        // A creator who is not an administrator keeps sight of what they made.
        if !perms.contains(Permissions::ADMINISTRATOR) {
            channel.overwrites.push(Overwrite {
                target_id: caller.user_id,
                kind: OverwriteKind::Member,
                allow: Permissions::VIEW_CHANNEL,
                deny: Permissions::NONE,
            });
        }
    }
    app.store.create_channel(&channel).await?;
    moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "channel_create",
        Some(channel.id),
        format!("#{}", channel.name),
    )
    .await?;
    app.perms.invalidate_guild(guild_id);
    app.hub
        .to_channel_viewers(&app.perms, &channel, "channel_create", &channel)
        .await;
    Ok((StatusCode::CREATED, Json(channel)))
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/roles", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 200, body = Vec<Role>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_roles(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<Json<Vec<Role>>> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    Ok(Json(snapshot.roles.clone()))
}

const ROLE_SPACING: i64 = 16;

/// Without administrator, you cannot hand out permissions you do not hold yourself.
fn check_grant(actor: Permissions, granted: Permissions) -> ApiResult<()> {
    if !actor.contains(Permissions::ADMINISTRATOR) && !actor.contains(granted) {
        return Err(ApiError::Forbidden(
            "permission_escalation",
            "you cannot grant permissions you do not hold",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/roles", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = Id, Path)), request_body = CreateRole,
    responses((status = 201, body = Role), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    Valid(body): Valid<CreateRole>,
) -> ApiResult<(StatusCode, Json<Role>)> {
    let (snapshot, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_ROLES)
        .await?;
    check_grant(perms, body.permissions)?;
    if snapshot.roles.len() >= MAX_ROLES_PER_GUILD {
        return Err(ApiError::Conflict(
            "too_many_roles",
            "this guild has the maximum number of roles",
        ));
    }
    // The owner's new roles go on top; anyone else's just below their own highest role, so
    // they can still manage what they made. Positions are spaced so that "just below" is
    // usually free.
    let top = snapshot
        .roles
        .iter()
        .map(|r| r.position + ROLE_SPACING)
        .max()
        .unwrap_or(ROLE_SPACING);
    let position = match app.perms.rank(&snapshot, caller.user_id).await? {
        i64::MAX => top,
        rank => (rank - 1).max(1),
    };
    let role = Role {
        id: app.next_id(),
        guild_id,
        name: body.name,
        permissions: body.permissions,
        position,
    };
    app.store.create_role(&role).await?;
    moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "role_create",
        Some(role.id),
        format!("{} permissions {}", role.name, role.permissions.0),
    )
    .await?;
    app.perms.invalidate_guild(guild_id);
    app.hub.to_guild(guild_id, "role_create", &role);
    Ok((StatusCode::CREATED, Json(role)))
}

#[utoipa::path(patch, path = "/api/v1/guilds/{guild_id}/roles/{role_id}", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("role_id" = Id, Path)), request_body = UpdateRole,
    responses((status = 200, body = Role), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, role_id)): PathParams<(Id, Id)>,
    Valid(body): Valid<UpdateRole>,
) -> ApiResult<Json<Role>> {
    let (snapshot, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_ROLES)
        .await?;
    let mut role = snapshot
        .roles
        .iter()
        .find(|r| r.id == role_id)
        .cloned()
        .ok_or(ApiError::NotFound("role"))?;
    // Only roles below your own, and never to take away or give what you do not hold.
    if role.id != guild_id {
        app.perms
            .require_above(&snapshot, caller.user_id, role.position)
            .await?;
    }
    if let Some(p) = body.permissions {
        check_grant(perms, p | role.permissions)?;
        role.permissions = p;
    }
    if let Some(name) = body.name {
        if role.id == guild_id {
            return Err(ApiError::BadRequest(
                "everyone_role",
                "@everyone cannot be renamed".into(),
            ));
        }
        role.name = name;
    }
    if let Some(position) = body.position {
        app.perms
            .require_above(&snapshot, caller.user_id, position)
            .await?;
        if role.id == guild_id {
            return Err(ApiError::BadRequest(
                "everyone_role",
                "@everyone stays at position 0".into(),
            ));
        }
        role.position = position;
    }
    app.store.update_role(&role).await?;
    moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "role_update",
        Some(role.id),
        format!(
            "{} permissions {} position {}",
            role.name, role.permissions.0, role.position
        ),
    )
    .await?;
    app.perms.invalidate_guild(guild_id);
    app.hub.to_guild(guild_id, "role_update", &role);
    Ok(Json(role))
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/roles/{role_id}", tag = "roles", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("role_id" = Id, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_role(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, role_id)): PathParams<(Id, Id)>,
) -> ApiResult<StatusCode> {
    let (snapshot, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_ROLES)
        .await?;
    if role_id == guild_id {
        return Err(ApiError::BadRequest(
            "everyone_role",
            "@everyone cannot be deleted".into(),
        ));
    }
    let role = snapshot
        .roles
        .iter()
        .find(|r| r.id == role_id)
        .ok_or(ApiError::NotFound("role"))?;
    app.perms
        .require_above(&snapshot, caller.user_id, role.position)
        .await?;
    check_grant(perms, role.permissions)?;
    let detail = role.name.clone();
    app.store.delete_role(guild_id, role_id).await?;
    moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "role_delete",
        Some(role_id),
        detail,
    )
    .await?;
    app.perms.forget_guild(guild_id);
    app.hub
        .to_guild(guild_id, "role_delete", &RoleDeleted { guild_id, role_id });
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("guild_id" = Id, Path)),
    responses((status = 200, body = Vec<Invite>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_invites(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
) -> ApiResult<Json<Vec<Invite>>> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::MANAGE_GUILD)
        .await?;
    Ok(Json(app.store.invites(guild_id).await?))
}

#[utoipa::path(post, path = "/api/v1/guilds/{guild_id}/invites", tag = "invites", security(("bearer" = [])),
    params(("guild_id" = Id, Path)), request_body = CreateInvite,
    responses((status = 201, body = Invite), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create_invite(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    Valid(body): Valid<CreateInvite>,
) -> ApiResult<(StatusCode, Json<Invite>)> {
    app.perms
        .require_guild(guild_id, caller.user_id, Permissions::CREATE_INVITES)
        .await?;
    let now = now_ms();
    for _ in 0..5 {
        let invite = Invite {
            code: random_token(6),
            guild_id,
            inviter_id: caller.user_id,
            max_uses: body.max_uses,
            uses: 0,
            expires_at: body.expires_in_secs.map(|s| now + s * 1000),
            revoked: false,
            created_at: now,
        };
        match app.store.create_invite(&invite).await {
            Err(StoreError::Conflict(_)) => continue,
            other => other?,
        }
        moderation::audit_guild(
            &app,
            guild_id,
            caller.user_id,
            "invite_create",
            None,
            invite.code.clone(),
        )
        .await?;
        return Ok((StatusCode::CREATED, Json(invite)));
    }
    Err(ApiError::Internal(
        "could not find a free invite code".into(),
    ))
}

#[utoipa::path(delete, path = "/api/v1/guilds/{guild_id}/invites/{code}", tag = "invites", security(("bearer" = [])),
    params(("guild_id" = Id, Path), ("code" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_invite(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams((guild_id, code)): PathParams<(Id, String)>,
) -> ApiResult<StatusCode> {
    let (_, perms) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    let invite = app
        .store
        .invite(&code)
        .await?
        .filter(|i| i.guild_id == guild_id)
        .ok_or(ApiError::NotFound("invite"))?;
    if invite.inviter_id != caller.user_id && !perms.contains(Permissions::MANAGE_GUILD) {
        return Err(ApiError::missing_permissions());
    }
    app.store.revoke_invite(guild_id, &code, now_ms()).await?;
    moderation::audit_guild(
        &app,
        guild_id,
        caller.user_id,
        "invite_revoke",
        Some(invite.inviter_id),
        code,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/guilds/{guild_id}/search", tag = "messages", security(("bearer" = [])),
    params(("guild_id" = Id, Path), SearchQuery),
    responses((status = 200, body = SearchResults), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn search(
    State(app): State<Arc<App>>,
    caller: Caller,
    PathParams(guild_id): PathParams<Id>,
    ValidQuery(q): ValidQuery<SearchQuery>,
) -> ApiResult<Json<SearchResults>> {
    let (snapshot, _) = app
        .perms
        .require_guild(guild_id, caller.user_id, Permissions::NONE)
        .await?;
    let terms = limits::search_terms(&q.q)?;
    let mut channel_ids = Vec::new();
    for channel in app
        .perms
        .visible_channels(&snapshot, caller.user_id)
        .await?
    {
        let access = app
            .perms
            .channel_permissions(channel.id, caller.user_id)
            .await?;
        if channel.kind == ChannelKind::Text
            && access.is_some_and(|a| a.perms.contains(Permissions::READ_HISTORY))
        {
            channel_ids.push(channel.id);
        }
    }
    if let Some(only) = q.channel {
        if !channel_ids.contains(&only) {
            return Err(ApiError::missing_access());
        }
        channel_ids = vec![only];
    }
    let params = SearchParams {
        channel_ids,
        terms: terms.clone(),
        author: q.author,
        before: q.before,
        after: q.after,
        limit: q.limit.unwrap_or(25).min(limits::MAX_PAGE_LIMIT),
    };
    Ok(Json(SearchResults {
        hits: app.store.search(&params).await?,
        terms,
    }))
}
